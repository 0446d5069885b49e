// The servers the benchmark measures, each in a process of its own (so that client and server do
// not share one thread): `deno run -A bench/servers.ts MODE`, MODE one of
//   echo           a bare length-prefixed TLS echo on Deno.listenTls (the runtime's limit)
//   tlsrpc-node    a tlsrpc server, default transport (node:tls), every limit on
//   tlsrpc-deno    a tlsrpc server on Deno.listenTls, every limit on
//   https          JSON over HTTPS with Deno.serve
// Each prints "listening on PORT" and serves until killed.

import { serve } from "../server.ts";
import { FrameReader, FrameWriter } from "../framing.ts";

const cert = await Deno.readTextFile(new URL("../testdata/server.pem", import.meta.url));
const key = await Deno.readTextFile(new URL("../testdata/server.key", import.meta.url));
const mode = Deno.args[0];

/** The methods the benchmark calls. */
const handlers = {
  add: (a: number, b: number) => a + b,
  echo: (value: unknown) => value,
  rss: () => Deno.memoryUsage().rss,
};

if (mode === "echo") {
  const listener = Deno.listenTls({ hostname: "127.0.0.1", port: 0, cert, key });
  console.log(`listening on ${listener.addr.port}`);
  for await (const conn of listener) void echo(conn);
} else if (mode === "tlsrpc-node" || mode === "tlsrpc-deno") {
  await serve(handlers, {
    hostname: "127.0.0.1",
    port: 0,
    cert,
    key,
    transport: mode === "tlsrpc-deno" ? "deno" : "node",
    onListen: (addr) => console.log(`listening on ${addr.port}`),
    onError: () => {},
  });
} else if (mode === "https") {
  const server = Deno.serve({
    hostname: "127.0.0.1",
    port: 0,
    cert,
    key,
    onListen: ({ port }) => console.log(`listening on ${port}`),
  }, async (request) => {
    const { method, params } = await request.json();
    const fn = method === "add" ? handlers.add : handlers.echo;
    return Response.json({ result: (fn as (...a: unknown[]) => unknown)(...params) });
  });
  await server.finished;
} else {
  console.error(`Cannot start: unknown mode "${mode}"`);
  Deno.exit(2);
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
