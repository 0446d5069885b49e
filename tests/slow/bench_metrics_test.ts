import assert from "node:assert/strict";
import { runDeno } from "../_cli.ts";

Deno.test("deno task bench:metrics measures calls with metrics off and on in its smoke version", async () => {
  const { code, stdout, stderr } = await runDeno(["run", "-A", "bench/metrics_cost.ts", "--smoke"]);
  assert.equal(code, 0, stderr);
  for (const row of ["| off |", "| on |"]) {
    const line = stdout.split("\n").find((l) => l.startsWith(row));
    assert.ok(line, `the table has no "${row}" row:\n${stdout}`);
    assert.doesNotMatch(line, /NaN/);
  }
  assert.match(stdout, /^cost: -?\d+\.\d %/m);
});
