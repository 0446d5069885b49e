// The body of one worker of `serve --workers N` (a Web Worker): serves the module on the shared
// port (reusePort) and answers its pool's messages. An entry point started by _workers.ts, not part
// of the API (it is not in deno.json's exports).

/// <reference lib="deno.worker" />

import { serve } from "./server.ts";
import type { RpcServer, ServeOptions } from "./server.ts";
import type { FromWorker, ToWorker } from "./_workers.ts";
import { loadHandlers } from "./_cli_module.ts";
import { errorName, type LogEventFields, logLevel } from "./_cli_log.ts";

let server: RpcServer | undefined;

function post(message: FromWorker): void {
  self.postMessage(message);
}

// An error nothing caught ends this worker, not the process: the pool hears of it and starts a new
// one. (Left to propagate, it can take the whole process down.)
self.addEventListener("error", (event) => {
  event.preventDefault();
  crashed(event.message);
});
self.addEventListener("unhandledrejection", (event) => {
  event.preventDefault();
  crashed(
    `unhandled rejection: ${event.reason instanceof Error ? event.reason.message : event.reason}`,
  );
});

function crashed(why: string): void {
  // Its counters go with it, for the pool to keep: the sum over workers must never go down.
  let snapshot;
  try {
    snapshot = server?.metrics?.snapshot();
  } catch {
    // Counted as far as the latest scrape.
  }
  post({ type: "crashed", message: why, snapshot });
  self.close();
}

/** Passes a line of the server's log to the pool, with what a structured log wants of it. */
function log(error: unknown, line: string, fields: LogEventFields): void {
  const name = errorName(error);
  const message: FromWorker = {
    type: "log",
    line,
    level: logLevel(error, fields),
    fields: { ...fields },
    ...(name !== undefined && { errorName: name }),
  };
  try {
    post(message);
  } catch {
    // A field that cannot cross to the pool (a function): the line goes with its plain fields.
    const plain = Object.entries(fields).filter(([, value]) =>
      typeof value === "string" || typeof value === "number" || typeof value === "boolean"
    );
    post({ ...message, fields: Object.fromEntries(plain) });
  }
}

self.onmessage = async (event: MessageEvent<ToWorker>) => {
  const message = event.data;
  if (message.type === "start") {
    try {
      const handlers = await loadHandlers(message.module);
      const options: ServeOptions = {
        ...message.options,
        reusePort: true,
        metrics: message.options.metrics ? true : false,
        onListen: (addr) => post({ type: "listening", port: addr.port }),
        onError: (error, line, fields) => log(error, line, fields),
      };
      server = await serve(handlers, options);
    } catch (error) {
      post({ type: "failed", message: error instanceof Error ? error.message : String(error) });
    }
  } else if (message.type === "metrics") {
    post({ type: "metrics", id: message.id, snapshot: server?.metrics?.snapshot() });
  } else if (message.type === "shutdown") {
    await server?.shutdown();
    post({ type: "stopped" });
  }
};
