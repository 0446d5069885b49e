/**
 * The other side of a cross-runtime pairing, run by the tests on another runtime:
 *
 * - `serve`: serves the test handlers on 127.0.0.1, port 0, and prints `{"port":N}`; runs until
 *   it is killed.
 * - `call PORT`: connects to a test server on PORT, runs {@linkcode exercise}, and prints
 *   `{"ok":true,"report":{...}}` or `{"ok":false,"error":"..."}`; exits 0 either way once printed.
 *
 * One JSON line per message on stdout; the test reads them.
 *
 * @module
 */

import process from "node:process";
import { connectTo, exercise, handlers, runtime, startServer } from "./_util.ts";

const [command, port] = process.argv.slice(2);

if (command === "serve") {
  const logs: string[] = [];
  const server = await startServer(handlers, { logs });
  console.log(JSON.stringify({ port: server.addr.port, runtime }));
  process.once("SIGTERM", () => void server.shutdown().then(() => process.exit(0)));
} else if (command === "call" && port !== undefined) {
  try {
    await using client = await connectTo(Number(port));
    const report = await exercise(client);
    console.log(JSON.stringify({ ok: true, report: { ...report, client: runtime } }));
  } catch (error) {
    const text = error instanceof Error ? `${error.name}: ${error.message}` : String(error);
    console.log(JSON.stringify({ ok: false, error: text, client: runtime }));
  }
} else {
  console.error("usage: _peer.ts serve | call PORT");
  process.exit(2);
}
