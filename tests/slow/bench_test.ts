import assert from "node:assert/strict";
import { runDeno } from "../_cli.ts";

Deno.test("deno task bench runs every measurement in its smoke version and prints the table", async () => {
  const { code, stdout: out, stderr } = await runDeno([
    "run",
    "--allow-net",
    "--allow-read",
    "--allow-run",
    "--allow-sys",
    "bench/bench.ts",
    "--smoke",
  ]);
  assert.equal(code, 0, stderr);
  for (
    const row of [
      "bare echo: sequential round trips",
      "tlsrpc (node): sequential calls",
      "tlsrpc (node): 64 calls in flight",
      "tlsrpc (node): 1 MiB Uint8Array echo",
      "tlsrpc (node): connect + first call",
      "p99 latency",
      "HTTPS JSON: 64 calls in flight",
      "| sequential calls / bare echo round trips, one process |",
      "plain TCP echo, no TLS",
    ]
  ) {
    assert.ok(out.includes(row), `the table has no "${row}" row:\n${out}`);
  }
  // Every figure is a number: a measurement that broke would print NaN.
  assert.doesNotMatch(out, /NaN|Infinity/);
});
