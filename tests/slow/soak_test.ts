// CI runs a short version of the soak test (soak.ts): a few seconds of good clients and chaos.

import assert from "node:assert/strict";
import { type Output, runDeno } from "../_cli.ts";

/** Runs `bench/soak.ts` with `args`. */
function runSoak(args: string[]): Promise<Output> {
  return runDeno(["run", "-A", "bench/soak.ts", ...args]);
}

/** The number printed after `label: ` on a line of its own, or NaN. */
function figure(stdout: string, label: string): number {
  return Number(new RegExp(`^${label}: (\\d+)`, "m").exec(stdout)?.[1]);
}

Deno.test("soak.ts --seconds 3 --clients 20 loses and mismatches no call and exits 0", async () => {
  const { code, stdout, stderr } = await runSoak(["--seconds", "3", "--clients", "20"]);
  const report = `${stdout}\n${stderr}`;
  assert.equal(code, 0, report);
  assert.ok(figure(stdout, "calls made") > 0, report);
  assert.equal(figure(stdout, "calls lost"), 0, report);
  assert.equal(figure(stdout, "responses mismatched"), 0, report);
  assert.ok(figure(stdout, "chaos runs") > 0, report);
  assert.match(stdout, /^server rss start: [\d.]+ MiB/m);
  assert.match(stdout, /^server rss end: [\d.]+ MiB/m);
  assert.match(stdout, /^result: ok$/m);
});

Deno.test("soak.ts exits 2 on a usage error", async (t) => {
  const cases: { name: string; args: string[] }[] = [
    { name: "seconds not a number", args: ["--seconds", "x"] },
    { name: "zero clients", args: ["--clients", "0"] },
    { name: "unknown flag", args: ["--minutes", "1"] },
  ];
  for (const { name, args } of cases) {
    await t.step(name, async () => {
      const { code, stderr } = await runSoak(args);
      assert.equal(code, 2, stderr);
      assert.match(stderr, /^error: .*\nUsage: deno run -A bench\/soak\.ts/);
    });
  }
});
