import assert from "node:assert/strict";
import { runDeno } from "../_cli.ts";

Deno.test("deno task bench:metrics compares metrics off and on in two server processes in its smoke version", async () => {
  const { code, stdout, stderr } = await runDeno(["run", "-A", "bench/metrics_cost.ts", "--smoke"]);
  assert.equal(code, 0, stderr);
  const lines = stdout.split("\n");
  const row = (start: string) => {
    const found = lines.filter((l) => l.startsWith(start));
    assert.equal(found.length, 2, `not one row "${start}" in each table:\n${stdout}`);
    return found;
  };
  // Every row of both tables (calls a second, server CPU a call), each with its figures.
  for (
    const layout of [
      "| 64 on 1 connection, raw client |",
      "| 64 on 8 connections, raw client |",
      "| 64 on 1 connection, tlsrpc client |",
    ]
  ) {
    const [rate, cpu] = row(layout);
    assert.match(
      rate!,
      /^\| [^|]+ \| [\d,]+ \| [\d,]+ \| -?\d+\.\d % \| -?\d+\.\d to -?\d+\.\d % \| -?\d+\.\d to -?\d+\.\d % \|$/,
    );
    // The CPU figures come from /proc, which only Linux has.
    if (Deno.build.os === "linux") {
      assert.match(cpu!, /^\| [^|]+ \| \d+\.\d+ \| \d+\.\d+ \| -?\d+\.\d % \|/);
    }
  }
  // The scrape side: both sizes of method table, rendered with a time.
  assert.match(
    stdout,
    /^\| the bench server: 3 methods \+ 5 built-in \+ unknown \| [\d,]+ \| [\d,]+ \| [\d.]+ µs \|$/m,
  );
  assert.match(
    stdout,
    /^\| 100 methods \+ 5 built-in \+ unknown \| [\d,]+ \| [\d,]+ \| [\d.]+ µs \|$/m,
  );
  // The verdict: a cost, its interval and the target, whatever the figures.
  assert.match(
    stdout,
    /^cost: -?\d+\.\d % of calls\/s at 64 on 1 connection, raw client \(90 % interval -?\d+\.\d to -?\d+\.\d %; target: at most 5 %\): (met|not met|not shown either way)( \(a smoke run: too short to judge\))?$/m,
  );
  assert.match(stdout, /^server CPU a call: -?\d+\.\d % more with metrics/m);
  assert.match(stdout, /load average \(1 min\)/);
  assert.doesNotMatch(stdout, /NaN|Infinity/);
});
