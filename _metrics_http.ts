// A plain HTTP endpoint for Prometheus to scrape: GET /metrics, nothing else. It listens on
// loopback unless told otherwise, since metrics name the server's methods and its load. Deno.serve
// on Deno; node:http on Node.js and Bun, with the same answers.

import { deno } from "./_runtime.ts";

/** The content type of the Prometheus text exposition format 0.0.4. */
export const METRICS_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8";

/** Options of {@linkcode serveMetrics}. */
export interface ServeMetricsOptions {
  /**
   * The address to listen on. Metrics are not for everyone: listen on another address only where
   * the network in between is trusted.
   *
   * @default {"127.0.0.1"}
   */
  hostname?: string;
  /** The port to listen on; 0 picks a free one, read it from `addr`. */
  port: number;
  /** Stops the endpoint when aborted, as `shutdown()` does. @default no signal */
  signal?: AbortSignal;
  /** Called once listening, with the address. @default does nothing (Deno.serve's log line is not printed) */
  onListen?: (addr: Deno.NetAddr) => void;
}

/** A running metrics endpoint, from {@linkcode serveMetrics}. */
export interface MetricsServer extends AsyncDisposable {
  /** The address it listens on. */
  readonly addr: Deno.NetAddr;
  /** Stops listening and lets scrapes in progress finish; resolves once it has stopped. */
  shutdown(): Promise<void>;
  /** Resolves once the endpoint has stopped, by `shutdown()` or by the signal. */
  readonly finished: Promise<void>;
}

/**
 * Serves `source()` at `GET /metrics` (and `HEAD`) over plain HTTP, with the content type of the
 * Prometheus text format; every other path is 404, other methods on /metrics 405. `source` may
 * return a promise, to collect the snapshots of workers; when it throws, the scrape gets 500.
 *
 * @throws {unknown} `signal.reason` when the signal is already aborted.
 * @throws {Deno.errors.AddrInUse} When the port is taken.
 *
 * @example
 * ```ts ignore
 * using metrics = new Metrics(Object.keys(handlers));
 * await using endpoint = serveMetrics(() => metrics.render(), { port: 9464 });
 * ```
 */
export function serveMetrics(
  source: () => string | Promise<string>,
  options: ServeMetricsOptions,
): MetricsServer {
  const { hostname = "127.0.0.1", port, signal, onListen = () => {} } = options;
  signal?.throwIfAborted();
  const server = Deno.serve({
    hostname,
    port,
    ...(signal ? { signal } : {}),
    onListen: (addr) => onListen(addr as Deno.NetAddr),
    onError: (error) => failure(error),
  }, (request) => respond(source, request));
  const finished = server.finished;
  return {
    addr: server.addr as Deno.NetAddr,
    finished,
    async shutdown() {
      await server.shutdown();
    },
    async [Symbol.asyncDispose]() {
      await server.shutdown();
    },
  };
}

async function respond(
  source: () => string | Promise<string>,
  request: Request,
): Promise<Response> {
  const { pathname } = new URL(request.url);
  if (pathname !== "/metrics") return new Response("Not Found\n", { status: 404 });
  if (request.method !== "GET" && request.method !== "HEAD") {
    return new Response("Method Not Allowed\n", { status: 405, headers: { allow: "GET, HEAD" } });
  }
  try {
    const body = await source();
    return new Response(request.method === "HEAD" ? null : body, {
      headers: { "content-type": METRICS_CONTENT_TYPE, "cache-control": "no-store" },
    });
  } catch (error) {
    return failure(error);
  }
}

function failure(error: unknown): Response {
  const reason = error instanceof Error ? error.message : String(error);
  return new Response(`Cannot render metrics: ${reason}\n`, {
    status: 500,
    headers: { "content-type": "text/plain; charset=utf-8" },
  });
}

/**
 * {@linkcode serveMetrics} on any runtime: Deno.serve on Deno, node:http on Node.js and Bun, with
 * the same answers. Resolves once listening.
 *
 * @throws {unknown} `signal.reason` when the signal is already aborted.
 * @throws {Error} When the address cannot be bound (`EADDRINUSE` on Node.js and Bun).
 */
export async function listenMetrics(
  source: () => string | Promise<string>,
  options: ServeMetricsOptions,
): Promise<MetricsServer> {
  if (deno !== undefined) return serveMetrics(source, options);
  const { hostname = "127.0.0.1", port, signal, onListen = () => {} } = options;
  signal?.throwIfAborted();
  const http = await import("node:http");
  const server = http.createServer((request, response) => {
    const url = request.url ?? "/";
    const fake = new Request(new URL(url, "http://metrics"), { method: request.method ?? "GET" });
    void respond(source, fake).then(async (answer) => {
      response.writeHead(answer.status, Object.fromEntries(answer.headers));
      response.end(answer.body === null ? undefined : new Uint8Array(await answer.arrayBuffer()));
    }, () => {
      response.writeHead(500).end();
    });
  });
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(port, hostname, () => {
      server.off("error", reject);
      resolve();
    });
  });
  const bound = server.address() as { address: string; port: number };
  const addr: Deno.NetAddr = { transport: "tcp", hostname: bound.address, port: bound.port };
  const finished = new Promise<void>((resolve) => server.once("close", () => resolve()));
  let stopping: Promise<void> | undefined;
  const shutdown = () =>
    stopping ??= (() => {
      server.close();
      // Keep-alive connections with no scrape under way would hold close() up.
      server.closeIdleConnections?.();
      return finished;
    })();
  signal?.addEventListener("abort", () => void shutdown(), { once: true });
  onListen(addr);
  return {
    addr,
    finished,
    shutdown,
    [Symbol.asyncDispose]: shutdown,
  };
}
