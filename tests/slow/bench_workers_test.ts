import assert from "node:assert/strict";
import { runDeno } from "../_cli.ts";

Deno.test("deno task bench:workers measures 1 and N workers in its smoke version", async () => {
  const { code, stdout, stderr } = await runDeno([
    "run",
    "-A",
    "bench/workers.ts",
    "--smoke",
    "--workers",
    "2",
  ]);
  assert.equal(code, 0, stderr);
  for (const row of ["CPU-bound calls (burn 2 ms)", "cheap calls (whoami)"]) {
    const line = stdout.split("\n").find((l) => l.startsWith(`| ${row} |`));
    assert.ok(line, `the table has no "${row}" row:\n${stdout}`);
    // Every figure is a number: a measurement that broke would print NaN.
    assert.doesNotMatch(line, /NaN/);
  }
});
