// One-process loops of tlsrpc calls for profiling, and a reader of the profiles they write.
//
//   deno run -A bench/profile.ts [seq|flight|bulk] [node|deno] [--seconds S]
//   deno run -A --cpu-prof --cpu-prof-dir=prof bench/profile.ts flight node
//   deno run -A bench/profile.ts --top prof/*.cpuprofile
//
// The loop prints calls a second and the process's CPU time a call (user + system, every thread):
// on a shared machine the CPU time moves less than the rate. --top prints the functions with the
// most self time, and how the time splits between tlsrpc's code, the runtime's JavaScript (node
// compatibility, Deno's extensions), native code (ops, TLS), the garbage collector and idle.

import { parseArgs } from "node:util";
import process from "node:process";
import { connect } from "../client.ts";
import { start } from "./servers.ts";

const { values, positionals } = parseArgs({
  args: Deno.args,
  allowPositionals: true,
  options: { seconds: { type: "string" }, top: { type: "boolean" }, count: { type: "string" } },
});

if (values.top) {
  for (const path of positionals) printTop(path, Number(values.count ?? 25));
} else {
  await loop(positionals[0] ?? "seq", positionals[1] ?? "node", Number(values.seconds ?? 3));
}

/** Calls `add(1, 2)` (or echoes 1 MiB) on one connection to a server in this process. */
async function loop(mode: string, transport: string, seconds: number): Promise<void> {
  const server = await start(`tlsrpc-${transport}`);
  const ca = await Deno.readTextFile(new URL("../testdata/ca.pem", import.meta.url));
  const client = await connect({ hostname: "localhost", port: server.port, caCerts: [ca] });
  const bulk = new Uint8Array(1024 * 1024).map((_, i) => i & 0xff);
  const step = mode === "bulk" ? () => client.call("echo", bulk) : () => client.call("add", 1, 2);
  const concurrency = mode === "flight" ? 64 : 1;
  for (let i = 0; i < (mode === "bulk" ? 20 : 2000); i++) await step(); // warm up
  const end = performance.now() + seconds * 1000;
  let count = 0;
  const started = performance.now();
  const cpu = process.cpuUsage();
  await Promise.all(Array.from({ length: concurrency }, async () => {
    while (performance.now() < end) {
      await step();
      count++;
    }
  }));
  const used = process.cpuUsage(cpu);
  const rate = count / ((performance.now() - started) / 1000);
  const perCall = (used.user + used.system) / count;
  const figure = mode === "bulk"
    ? `${rate.toFixed(1)} MiB/s`
    : `${Math.round(rate).toLocaleString("en-US")} calls/s`;
  console.log(`${mode} (${transport}): ${figure}, ${perCall.toFixed(2)} µs of CPU a call`);
  await client.close();
  await server.close();
}

interface ProfileNode {
  id: number;
  callFrame: { functionName: string; url: string; lineNumber: number };
}

/** The functions of a .cpuprofile with the most self time, and the split by kind of code. */
function printTop(path: string, count: number): void {
  const profile = JSON.parse(Deno.readTextFileSync(path)) as {
    nodes: ProfileNode[];
    samples: number[];
    timeDeltas: number[];
  };
  const nodes = new Map(profile.nodes.map((node) => [node.id, node]));
  const byNode = new Map<number, number>();
  profile.samples.forEach((id, i) => {
    byNode.set(id, (byNode.get(id) ?? 0) + (profile.timeDeltas[i] ?? 0));
  });
  const self = new Map<string, number>();
  const kinds = new Map<string, number>();
  let total = 0;
  for (const [id, time] of byNode) {
    const { functionName, url, lineNumber } = nodes.get(id)!.callFrame;
    const file = url.split("/").pop() ?? "";
    const name = `${functionName || "(anonymous)"} ${file}${file ? `:${lineNumber + 1}` : ""}`;
    self.set(name, (self.get(name) ?? 0) + time);
    const kind = file === ""
      ? (/^\((idle|program|garbage collector)\)$/.test(functionName) ? functionName : "native")
      : url.startsWith("file:") && !url.includes("/bench/")
      ? "tlsrpc"
      : url.startsWith("file:")
      ? "benchmark"
      : "runtime JavaScript";
    kinds.set(kind, (kinds.get(kind) ?? 0) + time);
    total += time;
  }
  const percent = (time: number) => `${(100 * time / total).toFixed(1).padStart(5)} %`;
  console.log(`${path}: ${(total / 1e6).toFixed(2)} s sampled`);
  for (const [kind, time] of [...kinds].sort((a, b) => b[1] - a[1])) {
    console.log(`${percent(time)}  ${kind}`);
  }
  console.log("");
  for (const [name, time] of [...self].sort((a, b) => b[1] - a[1]).slice(0, count)) {
    console.log(`${percent(time)}  ${name}`);
  }
}
