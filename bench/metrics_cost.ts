// `deno task bench:metrics`: what `metrics: true` costs a server, in calls a second with 64 calls
// of add(1, 2) in flight (the target: at most 5 %).
//
// Two servers run at once, each in a long-lived process of its own (`bench/servers.ts`), one
// without metrics and one with; this process is the client. With `taskset` both servers share one
// CPU and the client has the other, so that the two servers see the same core and neither competes
// with the client. After a warm-up, many short rounds run in pairs, one round on each server, the
// order alternating (off-on, on-off, ...) so that drift falls on both alike; each pair gives a
// ratio, and the cost is the median of the pairs' ratios, with its interquartile range and a
// bootstrap 90 % interval. The servers' CPU time a call (from /proc, every thread) is measured
// alongside: on a shared machine it moves less than the rate. Last, how long rendering /metrics
// takes with every method counted. Prints Markdown.
//
// The "raw" client writes ready-made request frames and counts the answers (checking one a
// round), so that the server's work is most of each round trip: a tlsrpc client spends about as
// much CPU a call as the server, and a cost the server adds while the client works shows in calls
// a second only in part. The "tlsrpc" rows use `connect()` and `client.call()`, as users do.
//
//   deno run -A bench/metrics_cost.ts [--pairs N] [--seconds S] [--rows raw:1,raw:8,tlsrpc:1]
//                                     [--transport node|deno] [--no-pin] [--smoke]

import { parseArgs } from "node:util";
import process from "node:process";
import { connect } from "../client.ts";
import { FrameReader, FrameWriter } from "../framing.ts";
import { Metrics } from "../_metrics.ts";
import { BUILTIN_METHODS, DURATION_BUCKETS, UNKNOWN_METHOD } from "../_metrics_text.ts";
import { type ServerProcess, startProcess } from "./servers.ts";
import { seededRandom } from "../tests/portable/_data.ts";

const { values } = parseArgs({
  args: Deno.args,
  options: {
    pairs: { type: "string" },
    seconds: { type: "string" },
    rows: { type: "string" },
    transport: { type: "string" },
    "no-pin": { type: "boolean" },
    smoke: { type: "boolean" },
  },
});
const IN_FLIGHT = 64;
const TARGET = 5;
const smoke = values.smoke ?? false;
const pairs = Number(values.pairs ?? (smoke ? 2 : 100));
// Short rounds, many pairs: a burst of another process's work then falls on both rounds of a pair
// more often, and 100 pairs of 0.2 s gave intervals a third as wide as 30 of 0.5 s on this machine.
const seconds = Number(values.seconds ?? (smoke ? 0.1 : 0.2));
const transport = values.transport ?? "node";
const rows = (values.rows ?? "raw:1,raw:8,tlsrpc:1").split(",").map((text) => {
  const [client, connections] = text.split(":");
  const row = { client: client as "raw" | "tlsrpc", connections: Number(connections ?? 1) };
  if (
    (row.client !== "raw" && row.client !== "tlsrpc") ||
    !(row.connections >= 1 && IN_FLIGHT % row.connections === 0)
  ) {
    throw new RangeError(
      `Cannot run: a row is raw or tlsrpc, ":", and a divisor of ${IN_FLIGHT}, got "${text}"`,
    );
  }
  return row;
});
if (!(pairs >= 1) || !(seconds > 0)) {
  throw new RangeError(`Cannot run: pairs must be >= 1 and seconds > 0`);
}
const ca = await Deno.readTextFile(new URL("../testdata/ca.pem", import.meta.url));

/** What a row measures: which client, on how many connections to each server. */
interface Row {
  client: "raw" | "tlsrpc";
  connections: number;
}

/** One of the two servers, in a process of its own. */
interface Server extends ServerProcess {
  label: string;
}

/** One connection's calls: keeps its share of the calls in flight until `end`. */
interface Caller {
  /** Calls until `end` (a `performance.now()` time), then waits for the answers; resolves with how many. */
  run(end: number): Promise<number>;
  close(): Promise<void>;
}

/** What one round measured. */
interface Round {
  rate: number;
  /** The server's CPU time a call in µs, every thread; NaN where /proc cannot tell. */
  cpuPerCall: number;
  /** The server's CPU time over the round's wall time (1 is one core, all the time). */
  busy: number;
  /** This process's CPU time over the round's wall time. */
  clientBusy: number;
}

/** One row's rounds: `off[i]` and `on[i]` ran next to each other. */
interface Pairs {
  off: Round[];
  on: Round[];
}

const loadAtStart = loadAverage();
const pin = await pinning(values["no-pin"] ?? false);
console.error(`pinning: ${pin.note}`);
const serverOff = await start(`tlsrpc-${transport}`, "off", pin.server);
const serverOn = await start(`tlsrpc-${transport}-metrics`, "on", pin.server).catch(
  async (error) => {
    await serverOff.stop();
    throw error;
  },
);
const results: [Row, Pairs][] = [];
try {
  for (const row of rows) results.push([row, await measure(row)]);
} finally {
  await Promise.all([serverOff.stop(), serverOn.stop()]);
}
const loadAtEnd = loadAverage();
const scrape = scrapes();

console.log(
  `\n${IN_FLIGHT} calls of add(1, 2) in flight, ${transport} transport, ${pairs} pairs of ` +
    `${seconds} s rounds (alternating off-on, on-off), servers in two long-lived processes; ` +
    `${pin.note}; load average (1 min) ${loadAtStart} at the start, ${loadAtEnd} at the end\n`,
);
console.log(
  "| calls in flight | metrics off: calls/s | metrics on: calls/s | cost (median of pairs) " +
    "| interquartile range of pairs | 90 % interval of the median |",
);
console.log("| --- | ---: | ---: | ---: | ---: | ---: |");
for (const [row, { off, on }] of results) {
  const cost = costs(off.map((r) => r.rate), on.map((r) => r.rate), true);
  console.log(
    `| ${label(row)} | ${count(median(off.map((r) => r.rate)))} | ` +
      `${count(median(on.map((r) => r.rate)))} | ${percent(cost.median)} | ` +
      `${range(cost.quartiles)} | ${range(cost.interval)} |`,
  );
}
console.log(
  "\n| calls in flight | metrics off: server CPU µs/call | metrics on: server CPU µs/call " +
    "| cost (median of pairs) | interquartile range of pairs | 90 % interval of the median " +
    "| CPU busy: server off, on; client |",
);
console.log("| --- | ---: | ---: | ---: | ---: | ---: | ---: |");
for (const [row, { off, on }] of results) {
  const cost = costs(off.map((r) => r.cpuPerCall), on.map((r) => r.cpuPerCall), false);
  const busy = (rounds: Round[], key: "busy" | "clientBusy") =>
    percent(median(rounds.map((r) => r[key])) * 100);
  console.log(
    `| ${label(row)} | ${micros(median(off.map((r) => r.cpuPerCall)))} | ` +
      `${micros(median(on.map((r) => r.cpuPerCall)))} | ${percent(cost.median)} | ` +
      `${range(cost.quartiles)} | ${range(cost.interval)} | ` +
      `${busy(off, "busy")}, ${busy(on, "busy")}; ${busy([...off, ...on], "clientBusy")} |`,
  );
}
console.log("\n| /metrics with every method counted | lines | bytes | render (median) |");
console.log("| --- | ---: | ---: | ---: |");
for (const s of scrape) {
  console.log(`| ${s.label} | ${count(s.lines)} | ${count(s.bytes)} | ${micros(s.micros)} µs |`);
}
const [first, firstPairs] = results[0]!;
const rate = costs(firstPairs.off.map((r) => r.rate), firstPairs.on.map((r) => r.rate), true);
const cpu = costs(
  firstPairs.off.map((r) => r.cpuPerCall),
  firstPairs.on.map((r) => r.cpuPerCall),
  false,
);
console.log(
  `\ncost: ${percent(rate.median)} of calls/s at ${label(first)} (90 % interval ` +
    `${range(rate.interval)}; target: at most ${TARGET} %): ${verdict(rate.interval)}`,
);
console.log(
  `server CPU a call: ${percent(cpu.median)} more with metrics (90 % interval ` +
    `${range(cpu.interval)}): ${verdict(cpu.interval)}`,
);

/** Whether an interval of costs shows the target met, missed, or neither. */
function verdict([low, high]: [number, number]): string {
  const judged = high <= TARGET ? "met" : low > TARGET ? "not met" : "not shown either way";
  return smoke ? `${judged} (a smoke run: too short to judge)` : judged;
}

/**
 * Where to run: the servers on one CPU and this process on another, with `taskset`, when there
 * are two CPUs to choose from; else (no taskset, one CPU, --no-pin) wherever the scheduler likes.
 */
async function pinning(disabled: boolean): Promise<{ server: string[]; note: string }> {
  const none = (why: string) => ({ server: [], note: `not pinned (${why})` });
  if (disabled) return none("--no-pin");
  if (Deno.build.os !== "linux") return none(`taskset is Linux only, this is ${Deno.build.os}`);
  let cpus: number[];
  try {
    const { code, stdout } = await new Deno.Command("taskset", {
      args: ["-c", "-p", String(Deno.pid)],
      stdout: "piped",
      stderr: "null",
    }).output();
    if (code !== 0) return none("taskset -p failed");
    cpus = cpuList(new TextDecoder().decode(stdout).split(":").pop()!.trim());
  } catch (error) {
    if (error instanceof Deno.errors.NotFound) return none("taskset not found");
    throw error;
  }
  if (cpus.length < 2) return none(`one CPU available: ${cpus.join(",")}`);
  const [server, client] = cpus as [number, number];
  // -a: every thread of this process (V8's and Deno's too), not only the main one.
  const { code } = await new Deno.Command("taskset", {
    args: ["-a", "-c", "-p", String(client), String(Deno.pid)],
    stdout: "null",
    stderr: "null",
  }).output();
  if (code !== 0) return none("taskset could not pin this process");
  return {
    server: ["taskset", "-c", String(server)],
    note: `servers pinned to CPU ${server}, client to CPU ${client}`,
  };
}

/** "0-2,5" as [0, 1, 2, 5]. */
function cpuList(text: string): number[] {
  return text.split(",").flatMap((part) => {
    const [low, high = low] = part.split("-").map(Number) as [number, number?];
    return Array.from({ length: high! - low + 1 }, (_, i) => low + i);
  });
}

/** Starts `bench/servers.ts MODE` (under `prefix`, taskset) and waits for its port. */
async function start(mode: string, label: string, prefix: string[]): Promise<Server> {
  return { label, ...await startProcess(mode, prefix) };
}

/** Warms both servers up on the row's connections, then runs the pairs of rounds. */
async function measure(row: Row): Promise<Pairs> {
  console.error(`${label(row)}: warming up`);
  const window = IN_FLIGHT / row.connections;
  const callers = new Map<Server, Caller[]>();
  try {
    for (const server of [serverOff, serverOn]) {
      callers.set(
        server,
        await Promise.all(
          Array.from(
            { length: row.connections },
            () => (row.client === "raw" ? rawCaller : tlsrpcCaller)(server.port, window),
          ),
        ),
      );
    }
    // Long enough for V8 to optimise the hot paths of both servers and of this client.
    const warmUp = smoke ? 0.05 : 1;
    for (let i = 0; i < 3; i++) {
      for (const server of [serverOff, serverOn]) await round(server, callers.get(server)!, warmUp);
    }
    const result: Pairs = { off: [], on: [] };
    for (let pair = 0; pair < pairs; pair++) {
      const order = pair % 2 === 0 ? [serverOff, serverOn] : [serverOn, serverOff];
      for (const server of order) {
        const r = await round(server, callers.get(server)!, seconds);
        (server === serverOff ? result.off : result.on).push(r);
      }
      if ((pair + 1) % 10 === 0 || pair + 1 === pairs) {
        const cost = costs(result.off.map((r) => r.rate), result.on.map((r) => r.rate), true);
        console.error(
          `  ${pair + 1}/${pairs} pairs: off ${count(median(result.off.map((r) => r.rate)))}, ` +
            `on ${count(median(result.on.map((r) => r.rate)))} calls/s, ` +
            `cost ${percent(cost.median)} so far`,
        );
      }
    }
    return result;
  } finally {
    for (const list of callers.values()) await Promise.all(list.map((c) => c.close()));
  }
}

/** Keeps IN_FLIGHT calls in flight on `callers` for `duration` seconds. */
async function round(server: Server, callers: Caller[], duration: number): Promise<Round> {
  const cpuBefore = await cpuNanos(server.pid);
  const clientBefore = process.cpuUsage();
  const started = performance.now();
  const calls = (await Promise.all(callers.map((c) => c.run(started + duration * 1000))))
    .reduce((a, b) => a + b, 0);
  const elapsed = performance.now() - started;
  const client = process.cpuUsage(clientBefore);
  const cpu = (await cpuNanos(server.pid)) - cpuBefore;
  return {
    rate: calls / (elapsed / 1000),
    cpuPerCall: cpu / 1000 / calls,
    busy: cpu / 1e6 / elapsed,
    clientBusy: (client.user + client.system) / 1000 / elapsed,
  };
}

/**
 * One TLS connection that keeps `window` calls in flight with ready-made frames (ids 0 to
 * window - 1, reused: add answers in order, so no two calls in flight share an id) and counts the
 * answers without decoding them, but the first of each run, which it checks.
 */
async function rawCaller(port: number, window: number): Promise<Caller> {
  const tcp = await Deno.connect({ hostname: "127.0.0.1", port });
  tcp.setNoDelay(true); // as the tlsrpc client does
  const conn = await Deno.startTls(tcp, { hostname: "localhost", caCerts: [ca] });
  await conn.handshake();
  const reader = new FrameReader(conn);
  const writer = new FrameWriter(conn);
  const encoder = new TextEncoder();
  const requests = Array.from(
    { length: window },
    (_, id) => encoder.encode(`{"jsonrpc":"2.0","id":${id},"method":"add","params":[1,2]}`),
  );
  return {
    async run(end) {
      let sent = 0, answered = 0;
      while (sent < window) writer.writeFrame(requests[sent++ % window]!);
      while (answered < sent) {
        const frames = await reader.read();
        if (frames === null) throw new Error("Cannot call add: the server closed the connection");
        if (answered === 0) {
          const answer = JSON.parse(new TextDecoder().decode(frames[0]));
          if (answer.result !== 3) {
            throw new Error(`Cannot call add: the answer is ${JSON.stringify(answer)}`);
          }
        }
        answered += frames.length;
        if (performance.now() < end) {
          for (let i = 0; i < frames.length; i++) writer.writeFrame(requests[sent++ % window]!);
        }
      }
      return answered;
    },
    close() {
      conn.close(); // no read is pending: run() reads until every call is answered
      return Promise.resolve();
    },
  };
}

/** One tlsrpc client with `window` loops of `client.call("add", 1, 2)`. */
async function tlsrpcCaller(port: number, window: number): Promise<Caller> {
  const client = await connect({ hostname: "localhost", port, caCerts: [ca] });
  return {
    async run(end) {
      let calls = 0;
      await Promise.all(Array.from({ length: window }, async () => {
        while (performance.now() < end) {
          await client.call("add", 1, 2);
          calls++;
        }
      }));
      return calls;
    },
    close: () => client[Symbol.asyncDispose](),
  };
}

/**
 * The CPU time of process `pid`'s threads so far in ns, from /proc/PID/task/TID/schedstat (the
 * clock ticks of /proc/PID/stat, 10 ms, are too coarse for rounds of 0.2 s); NaN where there is
 * no such file. A thread that ended takes its time with it: the servers' threads live as long as
 * they do.
 */
async function cpuNanos(pid: number): Promise<number> {
  let total = 0;
  try {
    for await (const task of Deno.readDir(`/proc/${pid}/task`)) {
      try {
        const text = await Deno.readTextFile(`/proc/${pid}/task/${task.name}/schedstat`);
        total += Number(text.split(" ")[0]);
      } catch {
        // The thread ended in between.
      }
    }
  } catch {
    return NaN;
  }
  return total;
}

/** The 1-minute load average, or "unknown". */
function loadAverage(): string {
  try {
    return Deno.readTextFileSync("/proc/loadavg").split(" ")[0]!;
  } catch {
    return "unknown";
  }
}

/**
 * The cost of `on` against `off`, pair by pair, in percent: for a rate 1 - on/off (fewer calls a
 * second is a cost), for a CPU time a call on/off - 1. Its median, interquartile range and a
 * bootstrap 90 % interval of the median.
 */
function costs(
  off: number[],
  on: number[],
  higherIsBetter: boolean,
): { median: number; quartiles: [number, number]; interval: [number, number] } {
  const each = off.map((o, i) => (higherIsBetter ? 1 - on[i]! / o : on[i]! / o - 1) * 100);
  return {
    median: median(each),
    quartiles: [quantile(each, 0.25), quantile(each, 0.75)],
    interval: bootstrap(each),
  };
}

/** A 90 % percentile bootstrap interval of the median of `xs`, from a fixed seed. */
function bootstrap(xs: number[]): [number, number] {
  // A fixed seed, so that the same rounds give the same interval.
  const random = seededRandom(0x9e3779b9);
  const medians = Array.from(
    { length: 2000 },
    () => median(Array.from(xs, () => xs[Math.floor(random() * xs.length)]!)),
  );
  return [quantile(medians, 0.05), quantile(medians, 0.95)];
}

function median(xs: number[]): number {
  return quantile(xs, 0.5);
}

/** The `p` quantile of `xs`, interpolated between the two nearest values. */
function quantile(xs: number[], p: number): number {
  const sorted = [...xs].sort((a, b) => a - b);
  const at = (sorted.length - 1) * p;
  const low = Math.floor(at);
  const high = Math.min(low + 1, sorted.length - 1);
  return sorted[low]! + (sorted[high]! - sorted[low]!) * (at - low);
}

/** How long rendering /metrics takes with every method counted, for two sizes of method table. */
function scrapes(): { label: string; lines: number; bytes: number; micros: number }[] {
  const tables: [string, string[]][] = [
    ["the bench server: 3 methods + 5 built-in + unknown", ["add", "echo", "rss"]],
    ["100 methods + 5 built-in + unknown", Array.from({ length: 100 }, (_, i) => `method${i}`)],
  ];
  return tables.map(([label, methods]) => {
    using metrics = new Metrics(methods, { lagInterval: 0 });
    // Every method: results in every duration bucket and three error codes.
    for (const method of [...BUILTIN_METHODS, ...methods, UNKNOWN_METHOD]) {
      for (const bound of [...DURATION_BUCKETS, 60]) metrics.callFinished(method, 0, bound);
      for (const code of [-32602, -32603, 1001]) metrics.callFinished(method, code, 0.001);
    }
    const text = metrics.render();
    const runs = smoke ? 5 : 200;
    const times: number[] = [];
    for (let i = 0; i < runs + 20; i++) {
      const begun = performance.now();
      metrics.render();
      if (i >= 20) times.push((performance.now() - begun) * 1000); // the first 20 warm up
    }
    return {
      label,
      lines: text.split("\n").length - 1,
      bytes: new TextEncoder().encode(text).length,
      micros: median(times),
    };
  });
}

function label({ client, connections }: Row): string {
  const plural = connections === 1 ? "" : "s";
  return `${IN_FLIGHT} on ${connections} connection${plural}, ${client} client`;
}

function count(n: number): string {
  return Math.round(n).toLocaleString("en-US");
}

function micros(n: number): string {
  return Number.isNaN(n) ? "n/a" : n.toFixed(n >= 100 ? 0 : 2);
}

function percent(n: number): string {
  return Number.isNaN(n) ? "n/a" : `${n.toFixed(1)} %`;
}

function range([low, high]: [number, number]): string {
  return Number.isNaN(low) ? "n/a" : `${low.toFixed(1)} to ${high.toFixed(1)} %`;
}
