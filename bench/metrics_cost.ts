// `deno task bench:metrics`: what metrics cost. One process, one TLS connection, 64 calls of
// add(1, 2) in flight, against a server without metrics and one with `metrics: true`, alternated
// over several rounds so that the machine's drift falls on both alike. Prints a Markdown table.
//
//   deno run -A bench/metrics_cost.ts [--seconds S] [--rounds N] [--smoke]

import { parseArgs } from "node:util";
import { serve } from "../server.ts";
import { connect } from "../client.ts";

const { values } = parseArgs({
  args: Deno.args,
  options: { seconds: { type: "string" }, rounds: { type: "string" }, smoke: { type: "boolean" } },
});
const smoke = values.smoke ?? false;
const seconds = Number(values.seconds ?? (smoke ? 0.2 : 2));
const rounds = Number(values.rounds ?? (smoke ? 1 : 4));
const read = (name: string) => Deno.readTextFile(new URL(`../testdata/${name}`, import.meta.url));
const [cert, key, ca] = await Promise.all([read("server.pem"), read("server.key"), read("ca.pem")]);

async function rate(metrics: boolean): Promise<number> {
  await using server = await serve({ add: (a: number, b: number) => a + b }, {
    port: 0,
    cert,
    key,
    metrics,
    onListen: () => {},
  });
  await using client = await connect({ port: server.addr.port, caCerts: [ca] });
  let calls = 0;
  const end = performance.now() + seconds * 1000;
  await Promise.all(Array.from({ length: 64 }, async () => {
    while (performance.now() < end) {
      await client.call("add", 1, 2);
      calls++;
    }
  }));
  return calls / seconds;
}

const off: number[] = [];
const on: number[] = [];
for (let round = 0; round < rounds; round++) {
  off.push(await rate(false));
  on.push(await rate(true));
}
const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
const format = (n: number) => Math.round(n).toLocaleString("en-US");
console.log(
  `\n64 calls in flight, one connection, one process, ${rounds} rounds of ${seconds} s\n`,
);
console.log("| metrics | calls/s (median) | runs |");
console.log("| --- | ---: | --- |");
console.log(`| off | ${format(median(off))} | ${off.map(format).join(", ")} |`);
console.log(`| on | ${format(median(on))} | ${on.map(format).join(", ")} |`);
console.log(`\ncost: ${((1 - median(on) / median(off)) * 100).toFixed(1)} % (target: at most 5 %)`);
