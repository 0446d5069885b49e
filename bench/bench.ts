// `deno task bench`: tlsrpc side by side with the limit of this runtime (a bare length-prefixed TLS
// echo) and with what a Deno user would write instead (JSON over HTTPS with Deno.serve + fetch).
// Every server runs in a process of its own; this process is the client. Prints a Markdown table.
//
//   deno run -A bench/bench.ts [--seconds S] [--connections N] [--smoke]
//
// --smoke runs every measurement briefly (CI runs it so that the benchmark cannot rot).

import { parseArgs } from "node:util";
import { connect, type RpcClient } from "../client.ts";
import { FrameReader, FrameWriter } from "../framing.ts";
import { start as startHere, startProcess as start } from "./servers.ts";

const { values } = parseArgs({
  args: Deno.args,
  options: {
    seconds: { type: "string" },
    connections: { type: "string" },
    smoke: { type: "boolean" },
  },
});
const smoke = values.smoke ?? false;
const seconds = Number(values.seconds ?? (smoke ? 0.2 : 2));
const connections = Number(values.connections ?? (smoke ? 20 : 1000));
const ca = await Deno.readTextFile(new URL("../testdata/ca.pem", import.meta.url));
const MiB = 1024 * 1024;
const bulk = new Uint8Array(MiB).map((_, i) => i & 0xff);
const request = new TextEncoder().encode('{"jsonrpc":"2.0","id":1,"method":"add","params":[1,2]}');

/** Runs `step` over and over for `seconds`; resolves with how many times it ran a second. */
async function rate(step: () => Promise<unknown>, concurrency = 1): Promise<number> {
  for (let i = 0; i < 20; i++) await step(); // warm up: connections, JIT
  const end = performance.now() + seconds * 1000;
  let count = 0;
  const started = performance.now();
  await Promise.all(Array.from({ length: concurrency }, async () => {
    while (performance.now() < end) {
      await step();
      count++;
    }
  }));
  return count / ((performance.now() - started) / 1000);
}

/** A raw framed TLS client for the echo server. */
async function rawClient(port: number) {
  const tcp = await Deno.connect({ hostname: "127.0.0.1", port });
  tcp.setNoDelay(true); // as the tlsrpc client does
  const conn = await Deno.startTls(tcp, { hostname: "localhost", caCerts: [ca] });
  await conn.handshake();
  const reader = new FrameReader(conn, { maxFrameBytes: 64 * MiB });
  const writer = new FrameWriter(conn, { maxFrameBytes: 64 * MiB });
  return {
    async roundTrip(payload: Uint8Array): Promise<number> {
      writer.writeFrame(payload);
      const frames = await reader.read();
      return frames![0]!.length;
    },
    close: () => conn.close(),
  };
}

/**
 * A raw framed TLS client for the echo server that keeps many frames in flight, as the tlsrpc
 * client does: one read loop hands each echoed frame to the oldest waiting round trip.
 */
async function pipelinedClient(port: number) {
  const tcp = await Deno.connect({ hostname: "127.0.0.1", port });
  tcp.setNoDelay(true);
  const conn = await Deno.startTls(tcp, { hostname: "localhost", caCerts: [ca] });
  await conn.handshake();
  const reader = new FrameReader(conn, { maxFrameBytes: 64 * MiB });
  const writer = new FrameWriter(conn, { maxFrameBytes: 64 * MiB });
  const waiting: ((length: number) => void)[] = [];
  let head = 0;
  const reading = (async () => {
    for (let frames = await reader.read(); frames; frames = await reader.read()) {
      for (const frame of frames) waiting[head++]!(frame.length);
      if (head > 1024 && head * 2 > waiting.length) {
        waiting.splice(0, head); // the queue is a list read from `head` on: drop what was read
        head = 0;
      }
    }
  })().catch(() => {});
  return {
    roundTrip(payload: Uint8Array): Promise<number> {
      writer.writeFrame(payload);
      return new Promise((resolve) => waiting.push(resolve));
    },
    async close() {
      conn.close();
      await reading;
    },
  };
}

function connectTo(port: number): Promise<RpcClient> {
  return connect({ hostname: "localhost", port, caCerts: [ca] });
}

function percentile(sorted: number[], p: number): number {
  return sorted[Math.min(sorted.length - 1, Math.floor(sorted.length * p))] ?? NaN;
}

const rows: [string, number, string][] = [];
const results: Record<string, number> = {};
function record(key: string, label: string, value: number, unit: string): void {
  results[key] = value;
  rows.push([label, value, unit]);
  console.error(`  ${label}: ${format(value)} ${unit}`);
}

function format(value: number): string {
  return value >= 100 ? Math.round(value).toLocaleString("en-US") : value.toFixed(2);
}

// (0) The floor of this machine: a plain TCP echo between two processes.
console.error("plain TCP echo, two processes");
{
  const server = await start("tcp");
  const tcp = await Deno.connect({ hostname: "127.0.0.1", port: server.port });
  tcp.setNoDelay(true);
  const buffer = new Uint8Array(256);
  record(
    "tcpSeq",
    "plain TCP echo, no TLS: sequential round trips",
    await rate(async () => {
      await tcp.write(request);
      await tcp.read(buffer);
    }),
    "/s",
  );
  tcp.close();
  await server.stop();
}

// (1) The bare echo: the limit for this runtime.
console.error("bare TLS echo (Deno.listenTls)");
{
  const here = await startHere("echo");
  const client = await rawClient(here.port);
  record(
    "bareSeqHere",
    "bare echo, one process: sequential round trips",
    await rate(() => client.roundTrip(request)),
    "/s",
  );
  client.close();
  const pipelined = await pipelinedClient(here.port);
  record(
    "bareFlightHere",
    "bare echo, one process: 64 round trips in flight",
    await rate(() => pipelined.roundTrip(request), 64),
    "/s",
  );
  await pipelined.close();
  await here.close();
}
{
  const server = await start("echo");
  const client = await rawClient(server.port);
  record(
    "bareSeq",
    "bare echo: sequential round trips",
    await rate(() => client.roundTrip(request)),
    "/s",
  );
  const perSecond = await rate(() => client.roundTrip(bulk));
  record("bareBulk", "bare echo: 1 MiB each way", perSecond, "MiB/s");
  client.close();
  const pipelined = await pipelinedClient(server.port);
  record(
    "bareFlight",
    "bare echo: 64 round trips in flight",
    await rate(() => pipelined.roundTrip(request), 64),
    "/s",
  );
  await pipelined.close();
  record(
    "bareConnect",
    "bare echo: TLS connect + 1 echo",
    await rate(async () => {
      const c = await rawClient(server.port);
      await c.roundTrip(request);
      c.close();
    }),
    "/s",
  );
  await server.stop();
}

// (2) tlsrpc, on each transport.
for (const transport of ["node", "deno"]) {
  console.error(`tlsrpc, ${transport} transport`);
  const server = await start(`tlsrpc-${transport}`);
  const client = await connectTo(server.port);
  const t = transport;
  record(
    `${t}Seq`,
    `tlsrpc (${t}): sequential calls`,
    await rate(() => client.call("add", 1, 2)),
    "/s",
  );
  record(
    `${t}Flight`,
    `tlsrpc (${t}): 64 calls in flight`,
    await rate(() => client.call("add", 1, 2), 64),
    "/s",
  );
  record(
    `${t}Bulk`,
    `tlsrpc (${t}): 1 MiB Uint8Array echo`,
    await rate(() => client.call("echo", bulk)),
    "MiB/s",
  );
  record(
    `${t}Connect`,
    `tlsrpc (${t}): connect + first call`,
    await rate(async () => {
      const c = await connectTo(server.port);
      await c.call("add", 1, 2);
      await c.close();
    }),
    "/s",
  );
  {
    const here = await startHere(`tlsrpc-${transport}`);
    const local = await connectTo(here.port);
    record(
      `${t}SeqHere`,
      `tlsrpc (${t}), one process: sequential calls`,
      await rate(() => local.call("add", 1, 2)),
      "/s",
    );
    record(
      `${t}FlightHere`,
      `tlsrpc (${t}), one process: 64 calls in flight`,
      await rate(() => local.call("add", 1, 2), 64),
      "/s",
    );
    await local.close();
    await here.close();
  }
  if (t === "node" || !smoke) {
    const before = await client.call("rss") as number;
    const clients = await Promise.all(
      Array.from({ length: connections }, () => connectTo(server.port)),
    );
    const idle = await client.call("rss") as number;
    record(
      `${t}Rss`,
      `tlsrpc (${t}): server RSS with ${connections} idle connections`,
      idle / MiB,
      "MiB",
    );
    record(
      `${t}RssPer`,
      `tlsrpc (${t}): server RSS per connection`,
      (idle - before) / connections / 1024,
      "KiB",
    );
    const latencies: number[] = [];
    const end = performance.now() + seconds * 1000;
    const started = performance.now();
    await Promise.all(clients.map(async (c) => {
      while (performance.now() < end) {
        const t0 = performance.now();
        await c.call("add", 1, 2);
        latencies.push(performance.now() - t0);
      }
    }));
    const elapsed = (performance.now() - started) / 1000;
    latencies.sort((a, b) => a - b);
    record(
      `${t}ManyRate`,
      `tlsrpc (${t}): ${connections} connections, calls`,
      latencies.length / elapsed,
      "/s",
    );
    record(
      `${t}ManyP50`,
      `tlsrpc (${t}): ${connections} connections, p50 latency`,
      percentile(latencies, 0.5),
      "ms",
    );
    record(
      `${t}ManyP99`,
      `tlsrpc (${t}): ${connections} connections, p99 latency`,
      percentile(latencies, 0.99),
      "ms",
    );
    await Promise.all(clients.map((c) => c.close()));
  }
  await client.close();
  await server.stop();
}

// (3) JSON over HTTPS: what a Deno user would write instead.
console.error("JSON over HTTPS (Deno.serve + fetch)");
{
  const server = await start("https");
  const http = Deno.createHttpClient({ caCerts: [ca] });
  const url = `https://localhost:${server.port}/`;
  const body = JSON.stringify({ method: "add", params: [1, 2] });
  const call = async () => {
    const response = await fetch(url, { method: "POST", body, client: http });
    return (await response.json()).result;
  };
  record("httpsSeq", "HTTPS JSON: sequential calls", await rate(call), "/s");
  record("httpsFlight", "HTTPS JSON: 64 calls in flight", await rate(call, 64), "/s");
  http.close();
  await server.stop();
}

const ratio = (a: string, b: string) => (results[a]! / results[b]!).toFixed(2);
/** Apache Thrift's framed binary TLS server with 64 calls in flight, as the issue measured it. */
const THRIFT_FLIGHT = 22_000;
const cpu = (await Deno.readTextFile("/proc/cpuinfo").catch(() => ""))
  .match(/model name\s*:\s*(.*)/)?.[1] ?? "CPU model not readable";
console.log(
  `\nMachine: ${navigator.hardwareConcurrency} cores, ${cpu}, Deno ${Deno.version.deno}, ${
    new Date().toISOString().slice(0, 10)
  }; ${seconds} s a measurement, one TLS connection on loopback unless said otherwise.\n`,
);
console.log("| measurement | value | unit |");
console.log("| --- | ---: | --- |");
for (const [label, value, unit] of rows) console.log(`| ${label} | ${format(value)} | ${unit} |`);
console.log("\n| ratio | node transport | deno transport | target |");
console.log("| --- | ---: | ---: | --- |");
const ratioRows: [string, string, string, string][] = [
  ["sequential calls / bare echo round trips, two processes", "Seq", "bareSeq", "≥ 0.9"],
  ["sequential calls / bare echo round trips, one process", "SeqHere", "bareSeqHere", "≥ 0.9"],
  ["64 in flight / bare echo 64 in flight, two processes", "Flight", "bareFlight", "near 1"],
  ["64 in flight / bare echo 64 in flight, one process", "FlightHere", "bareFlightHere", "near 1"],
  ["1 MiB echo / bare bulk", "Bulk", "bareBulk", "≥ 0.8"],
  ["connect + first call / bare connect + echo", "Connect", "bareConnect", "as before"],
  ["64 in flight / HTTPS JSON 64 in flight", "Flight", "httpsFlight", ""],
  ["sequential calls / HTTPS JSON sequential", "Seq", "httpsSeq", ""],
];
for (const [label, ours, theirs, target] of ratioRows) {
  console.log(
    `| ${label} | ${ratio(`node${ours}`, theirs)} | ${ratio(`deno${ours}`, theirs)} | ${target} |`,
  );
}
console.log(
  `| 64 in flight / Apache Thrift's ${format(THRIFT_FLIGHT)} (the issue's figure) | ${
    (results.nodeFlight! / THRIFT_FLIGHT).toFixed(2)
  } | ${(results.denoFlight! / THRIFT_FLIGHT).toFixed(2)} | ≥ 10 |`,
);
