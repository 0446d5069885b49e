// The servers the benchmark measures, each in a process of its own (so that client and server do
// not share one thread): `deno run -A bench/servers.ts MODE`, MODE one of
//   echo           a bare length-prefixed TLS echo on Deno.listenTls (the runtime's limit)
//   tlsrpc-node    a tlsrpc server, default transport (node:tls), every limit on
//   tlsrpc-deno    a tlsrpc server on Deno.listenTls, every limit on
//   tlsrpc-node-metrics, tlsrpc-deno-metrics
//                  the same with `metrics: true` (counted, not served over HTTP)
//   https          JSON over HTTPS with Deno.serve
//   tcp            a plain TCP echo, no TLS: the operating system's floor
// Each prints "listening on PORT" and serves until killed (`startProcess` runs one so); bench.ts can
// also start them in its own process, to measure the cost of the code alone, without the wakeups
// of two processes.

import { serve } from "../server.ts";
import { FrameReader, FrameWriter } from "../framing.ts";

const cert = await Deno.readTextFile(new URL("../testdata/server.pem", import.meta.url));
const key = await Deno.readTextFile(new URL("../testdata/server.key", import.meta.url));

/** The methods the benchmark calls. */
const handlers = {
  add: (a: number, b: number) => a + b,
  echo: (value: unknown) => value,
  rss: () => Deno.memoryUsage().rss,
};

/** A server the benchmark runs, here or in a process of its own. */
export interface BenchServer {
  port: number;
  close(): Promise<void>;
}

/** Starts the server of `mode` in this process. */
export async function start(mode: string): Promise<BenchServer> {
  if (mode === "echo") {
    const listener = Deno.listenTls({ hostname: "127.0.0.1", port: 0, cert, key });
    const conns = new Set<Deno.TlsConn>();
    const loop = (async () => {
      for await (const conn of listener) {
        conns.add(conn);
        void echo(conn).finally(() => conns.delete(conn));
      }
    })().catch(() => {});
    return {
      port: listener.addr.port,
      async close() {
        listener.close();
        for (const conn of conns) {
          try {
            conn.close();
          } catch { /* closed */ }
        }
        await loop;
      },
    };
  }
  if (mode === "tcp") {
    const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
    void (async () => {
      for await (const conn of listener) {
        conn.setNoDelay(true);
        void (async () => {
          const buffer = new Uint8Array(65536);
          try {
            for (let n = await conn.read(buffer); n !== null; n = await conn.read(buffer)) {
              await conn.write(buffer.subarray(0, n));
            }
          } catch { /* left */ }
        })();
      }
    })().catch(() => {});
    return { port: listener.addr.port, close: () => Promise.resolve(listener.close()) };
  }
  const tlsrpc = /^tlsrpc-(node|deno)(-metrics)?$/.exec(mode);
  if (tlsrpc) {
    const server = await serve(handlers, {
      hostname: "127.0.0.1",
      port: 0,
      cert,
      key,
      transport: tlsrpc[1] === "deno" ? "deno" : "node",
      metrics: tlsrpc[2] !== undefined,
      onListen: () => {},
      onError: () => {},
    });
    return { port: server.addr.port, close: () => server.shutdown() };
  }
  if (mode === "https") {
    const server = Deno.serve(
      { hostname: "127.0.0.1", port: 0, cert, key, onListen: () => {} },
      async (request) => {
        const { method, params } = await request.json();
        const fn = method === "add" ? handlers.add : handlers.echo;
        return Response.json({ result: (fn as (...a: unknown[]) => unknown)(...params) });
      },
    );
    return { port: server.addr.port, close: () => server.shutdown() };
  }
  throw new TypeError(`Cannot start: unknown mode "${mode}"`);
}

/** A server of {@linkcode start} in a process of its own, from {@linkcode startProcess}. */
export interface ServerProcess {
  port: number;
  /** Its process id: the server's own, as `taskset` execs it. */
  pid: number;
  /** Kills it and waits for its exit. */
  stop(): Promise<void>;
}

/**
 * Runs `deno run -A bench/servers.ts MODE`, after `prefix` (`taskset -c 1`, say), its stderr
 * shown, and resolves once it says its port.
 */
export async function startProcess(
  mode: string,
  prefix: readonly string[] = [],
): Promise<ServerProcess> {
  const script = new URL(import.meta.url).pathname;
  const [command, ...args] = [...prefix, Deno.execPath(), "run", "-A", script, mode];
  const child = new Deno.Command(command!, { args, stdout: "piped", stderr: "inherit" }).spawn();
  const reader = child.stdout.pipeThrough(new TextDecoderStream()).getReader();
  let text = "";
  while (!/listening on \d+/.test(text)) {
    const { value, done } = await reader.read();
    if (done) throw new Error(`Cannot start the ${mode} server: it exited`);
    text += value;
  }
  return {
    port: Number(/listening on (\d+)/.exec(text)![1]),
    pid: child.pid,
    async stop() {
      child.kill("SIGKILL");
      await child.status;
      await reader.cancel();
    },
  };
}

if (import.meta.main) {
  const server = await start(Deno.args[0] ?? "");
  console.log(`listening on ${server.port}`);
}

/** Echoes every frame back, whole: the least work a framed TLS server can do. */
async function echo(conn: Deno.TlsConn): Promise<void> {
  const reader = new FrameReader(conn, { maxFrameBytes: 64 * 1024 * 1024 });
  const writer = new FrameWriter(conn, { maxFrameBytes: 64 * 1024 * 1024 });
  try {
    for (let frames = await reader.read(); frames; frames = await reader.read()) {
      for (const frame of frames) writer.writeFrame(frame);
    }
    await writer.flushed();
  } catch {
    // The client left.
  } finally {
    try {
      conn.close();
    } catch { /* closed */ }
  }
}
