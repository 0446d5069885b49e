// `deno task bench:workers`: what `serve --workers N` buys. The same loads against `cli.ts serve`
// with 1 worker and with N (default: one per core): a CPU-bound handler (burn(ms) spins the CPU)
// called from many connections, and cheap calls from many connections. Prints a Markdown table.
//
//   deno run -A bench/workers.ts [--seconds S] [--connections N] [--workers N] [--smoke]

import { parseArgs } from "node:util";
import { connect, type RpcClient } from "../client.ts";

const { values } = parseArgs({
  args: Deno.args,
  options: {
    seconds: { type: "string" },
    connections: { type: "string" },
    workers: { type: "string" },
    smoke: { type: "boolean" },
  },
});
const smoke = values.smoke ?? false;
const seconds = Number(values.seconds ?? (smoke ? 0.5 : 5));
const connections = Number(values.connections ?? (smoke ? 8 : 64));
const workers = Number(values.workers ?? navigator.hardwareConcurrency);
const root = new URL("../", import.meta.url);
const ca = await Deno.readTextFile(new URL("testdata/ca.pem", root));
const module = new URL("tests/fixtures/workload.ts", root).pathname;

interface Server {
  port: number;
  stop(): Promise<void>;
}

async function start(count: number): Promise<Server> {
  const child = new Deno.Command(Deno.execPath(), {
    args: [
      ...["run", "-A", new URL("cli.ts", root).pathname, "serve", module, "--port", "0"],
      ...["--cert", new URL("testdata/server.pem", root).pathname],
      ...["--key", new URL("testdata/server.key", root).pathname],
      ...(count > 1 ? ["--workers", String(count)] : []),
    ],
    stdout: "piped",
    stderr: "null",
  }).spawn();
  const reader = child.stdout.pipeThrough(new TextDecoderStream()).getReader();
  let text = "";
  while (!/listening on .*:\d+/.test(text)) {
    const { value, done } = await reader.read();
    if (done) throw new Error("Cannot start the server: it exited");
    text += value;
  }
  const port = Number(/listening on .*:(\d+)/.exec(text)![1]);
  return {
    port,
    async stop() {
      child.kill("SIGTERM");
      await child.status;
      await reader.cancel();
    },
  };
}

/** Calls `method(...params)` from every connection in a loop for `seconds`; calls a second. */
async function load(port: number, method: string, params: unknown[]): Promise<number> {
  const clients: RpcClient[] = [];
  for (let i = 0; i < connections; i++) {
    clients.push(await connect({ hostname: "127.0.0.1", port, caCerts: [ca] }));
  }
  let calls = 0;
  const end = performance.now() + seconds * 1000;
  await Promise.all(clients.map(async (client) => {
    while (performance.now() < end) {
      await client.call(method, ...params);
      calls++;
    }
  }));
  await Promise.all(clients.map((client) => client.close()));
  return calls / seconds;
}

const rows: [string, number, number][] = [];
for (
  const [name, method, params] of [
    ["CPU-bound calls (burn 2 ms)", "burn", [2]],
    ["cheap calls (whoami)", "whoami", []],
  ] as const
) {
  const results: number[] = [];
  for (const count of [1, workers]) {
    const server = await start(count);
    try {
      results.push(await load(server.port, method, [...params]));
    } finally {
      await server.stop();
    }
  }
  rows.push([name, results[0]!, results[1]!]);
}

const format = (n: number) => Math.round(n).toLocaleString("en-US");
console.log(`\n${connections} connections, ${seconds} s each\n`);
console.log(`| load | 1 worker | ${workers} workers | speed-up |`);
console.log("| --- | ---: | ---: | ---: |");
for (const [name, one, many] of rows) {
  console.log(
    `| ${name} | ${format(one)} /s | ${format(many)} /s | ${(many / one).toFixed(2)} × |`,
  );
}
