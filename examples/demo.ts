/**
 * The demo behind `deno task demo`: starts `cli.ts serve examples/calc.ts` with no certificate
 * flags, so that it makes (or reuses) development certificates in the state folder, calls it
 * through the CLI and through the library, prints what came back, and stops the server.
 * `TLSRPC_HOME` moves the state folder.
 *
 * @module
 */

import { connect, RpcError } from "../mod.ts";
import { defaultDevCertDir, devCertPaths } from "../dev_cert.ts";
import type * as calc from "./calc.ts";

const root = new URL("../", import.meta.url);
const path = (relative: string) => new URL(relative, root).pathname;
const permissions = ["--allow-net", "--allow-read", "--allow-write", "--allow-env"];

const server = new Deno.Command(Deno.execPath(), {
  args: ["run", ...permissions, path("cli.ts"), "serve", path("examples/calc.ts"), "--port", "0"],
  stdout: "piped",
  stderr: "inherit",
}).spawn();

try {
  const port = await readPort(server.stdout);
  console.log(`server: listening on 127.0.0.1:${port}`);

  for (const args of [["add", "2", "3"], ["stats.range", "4", "-1", "9"], ["divide", "1", "0"]]) {
    const { code, stdout, stderr } = await new Deno.Command(Deno.execPath(), {
      args: ["run", ...permissions, path("cli.ts"), "call", "--port", port, ...args],
    }).output();
    const text = new TextDecoder().decode(code === 0 ? stdout : stderr).trim();
    console.log(`cli: call ${args.join(" ")} -> ${text} (exit ${code})`);
  }

  // The client knows the server's types from an `import type`: nothing of calc.ts loads here.
  const ca = await Deno.readTextFile(devCertPaths(defaultDevCertDir()).caCert);
  await using client = await connect<typeof calc>({ port: Number(port), caCerts: [ca] });
  console.log(`library: add(2, 3) -> ${await client.proxy.add(2, 3)}`);
  console.log(
    `library: stats.mean({ values: [1, 2, 6] }) -> ${await client.callNamed("stats.mean", {
      values: [1, 2, 6],
    })}`,
  );
  const order: string[] = [];
  await Promise.all([
    client.proxy.sleep(200).then((ms) => order.push(`sleep(200) -> ${ms}`)),
    client.proxy.add(40, 2).then((sum) => order.push(`add(40, 2) -> ${sum}`)),
  ]);
  console.log(`library: sleep and add sent together, answers in order: ${order.join(", ")}`);
  try {
    await client.proxy.divide(1, 0);
  } catch (error) {
    if (!(error instanceof RpcError)) throw error;
    console.log(`library: divide(1, 0) -> RpcError ${error.code}: ${error.message}`);
  }
} finally {
  server.kill("SIGTERM");
  const status = await server.status;
  console.log(`server: stopped (exit ${status.code})`);
}

/** Reads the server's stdout until its "listening on HOST:PORT" line and answers the port. */
async function readPort(stdout: ReadableStream<Uint8Array>): Promise<string> {
  let text = "";
  for await (const chunk of stdout.pipeThrough(new TextDecoderStream())) {
    text += chunk;
    const match = /^listening on .*:(\d+)$/m.exec(text);
    if (match?.[1]) return match[1];
  }
  throw new Error(
    `Cannot start the demo server: it exited before listening (output: ${JSON.stringify(text)})`,
  );
}
