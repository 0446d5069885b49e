/**
 * A typed client without codegen: the client imports only the server's *type*, so the compiler
 * checks method names and argument types, and nothing of the server's code is loaded here.
 *
 *     deno run -A cli.ts serve examples/calc.ts &
 *     deno run --allow-net --allow-read --allow-env examples/typed_client.ts
 *
 * Environment: TLSRPC_PORT (default 7443) and TLSRPC_CA (a CA file; default: the development CA).
 *
 * @module
 */

import { connect, RpcError } from "../mod.ts";
import { defaultDevCertDir, devCertPaths } from "../dev_cert.ts";
import type * as calc from "./calc.ts";

const port = Number(Deno.env.get("TLSRPC_PORT") ?? 7443);
const caFile = Deno.env.get("TLSRPC_CA") ?? devCertPaths(defaultDevCertDir()).caCert;

await using client = await connect<typeof calc>({
  port,
  caCerts: [await Deno.readTextFile(caFile)],
});

const sum: number = await client.proxy.add(2, 3); // typed: Promise<number>
const range = await client.proxy.stats.range(4, -1, 9); // { min: number; max: number }
console.log(`add(2, 3) = ${sum}; stats.range(4, -1, 9) = ${range.min}..${range.max}`);

// A deadline travels with the call: the server aborts the handler when it passes.
try {
  await client.withOptions({ timeout: 100 }).proxy.sleep(5_000);
} catch (error) {
  console.log(`sleep(5000) with a 100 ms deadline: ${(error as Error).name}`);
}

try {
  await client.proxy.divide(1, 0);
} catch (error) {
  if (error instanceof RpcError) console.log(`divide(1, 0): error ${error.code}: ${error.message}`);
}

// These would not compile:
// client.proxy.add("2", 3);   // wrong argument type
// client.proxy.multiply(2, 3); // no such method
