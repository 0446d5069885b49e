/**
 * Attacks from one connection on a default server ("Reliability II"): each runs against a fresh
 * server subprocess serving tests/fixtures/attack_target.ts, while a good client (in a worker of its
 * own, so that the attacker's work cannot delay it) calls `add` every 100 ms on its connection and
 * opens a new connection every second. It measures the server's RSS (`/proc/PID/status`, before,
 * peak and after), the good client's worst waits, and what the attacker got back; and, on the
 * client side, what a server that stops reading costs this process.
 *
 * ```sh
 * deno run -A bench/attacks.ts [--only NAME[/TRANSPORT]] [--seconds 10] [--json]
 * ```
 *
 * Attacks last `--seconds` (those that send one frame end sooner). One attack on one transport runs
 * in this process; more run each in a subprocess of its own (`--only NAME/TRANSPORT --json`), so
 * that none meets another's garbage. Prints a Markdown table, or with `--json` a line of JSON a
 * row. Exits 0 when every attack meets every target (controls, rows named `*-control`, are the
 * same load from clients that behave, and do not count), 1 when one misses, 2 on a usage error.
 * tests/slow/attacks_test.ts runs the same attacks and asserts generous bounds.
 *
 * @module
 */

import { parseArgs } from "node:util";
import { connect, type RpcClient } from "../client.ts";
import { ConnectionError } from "../errors.ts";
import { certs, delay, fakeTlsServer, framed, RawClient, request } from "../tests/_util.ts";
import { spawnChild } from "../tests/_cli.ts";
import { concat, extendedPayload } from "../tests/portable/_data.ts";

const MIB = 1024 * 1024;
const decoder = new TextDecoder();

/** The targets of the issue: each attack must stay within them. */
export const TARGETS = {
  /** Other clients' worst wait for an answer, in ms. */
  worstWaitMs: 1000,
  /** Growth of the server's RSS, peak over before. */
  serverRssBytes: 250 * MIB,
  /** Growth of a client's RSS against a server that stops reading. */
  clientRssBytes: 100 * MIB,
  /**
   * What the 164 KB aliased-section frame may cost the server. "A few times its size" is below
   * what RSS resolves: any frame that size moves it by about 2 MiB (the aliased-control row, a
   * plain frame as large). 4 MiB allows that, and is 1/30 of what the frame cost before (131 MiB).
   */
  aliasedBytes: 4 * MIB,
} as const;

/** The most a good call may take before it counts as failed. */
const GOOD_CALL_TIMEOUT_MS = 15_000;

// --- the target: a server subprocess -------------------------------------------------------------

/** The transports a server can run on. */
export type Transport = "node" | "deno";

/** A server subprocess serving tests/fixtures/attack_target.ts with the default limits. */
export interface Target extends AsyncDisposable {
  readonly port: number;
  readonly pid: number;
  readonly transport: Transport;
  /** What it has written to stderr so far: its log lines. */
  readonly stderr: string;
}

const FIXTURE = "tests/fixtures/attack_target.ts";

/**
 * Starts a default server: `cli.ts serve` on the node transport; the fixture run as a script (a
 * library server, since the CLI cannot pick a transport) on the deno transport.
 */
export async function startTarget(transport: Transport): Promise<Target> {
  const args = transport === "node"
    ? ["cli.ts", "serve", FIXTURE, "--cert", "testdata/server.pem", "--key", "testdata/server.key"]
      .concat(["--port", "0"])
    : [FIXTURE, "deno"];
  // Without this process's TLSRPC_TOKEN, which would make the server ask for it.
  const child = spawnChild(["run", "-A", ...args]);
  let stderr = "";
  const stderrDone = child.stderr.pipeThrough(new TextDecoderStream()).pipeTo(
    new WritableStream({ write: (chunk) => void (stderr = (stderr + chunk).slice(-MIB)) }),
  ).catch(() => {});
  const lines = child.stdout.pipeThrough(new TextDecoderStream()).getReader();
  let stdout = "";
  async function stop(): Promise<void> {
    try {
      child.kill("SIGKILL");
    } catch {
      // Already exited.
    }
    await child.status;
    await lines.cancel().catch(() => {});
    await stderrDone;
  }
  // A guard: a server that prints nothing for 30 s is killed, which ends its stdout.
  const timer = setTimeout(() => child.kill("SIGKILL"), 30_000);
  try {
    while (!stdout.includes("\n")) {
      const chunk = await lines.read();
      if (chunk.done) break;
      stdout += chunk.value;
    }
  } finally {
    clearTimeout(timer);
  }
  const port = Number(/^listening on 127\.0\.0\.1:(\d+)\n/.exec(stdout)?.[1]);
  if (!(port > 0)) {
    await stop();
    throw new Error(`Cannot start the target: it printed ${JSON.stringify(stdout + stderr)}`);
  }
  // Keep reading stdout, so that the server never blocks on a full pipe.
  void (async () => {
    for (let chunk = await lines.read(); !chunk.done; chunk = await lines.read()) { /* drop */ }
  })().catch(() => {});
  return {
    port,
    pid: child.pid,
    transport,
    get stderr() {
      return stderr;
    },
    [Symbol.asyncDispose]: stop,
  };
}

// --- memory --------------------------------------------------------------------------------------

/** The resident set of process `pid` in bytes (VmRSS), or NaN once it has gone. */
export async function rssOf(pid: number | "self"): Promise<number> {
  try {
    const status = await Deno.readTextFile(`/proc/${pid}/status`);
    return Number(/^VmRSS:\s+(\d+) kB$/m.exec(status)?.[1]) * 1024;
  } catch {
    return NaN;
  }
}

/** Samples a process's RSS every 50 ms and keeps the highest. */
class RssPeak {
  peak = 0;
  last = 0;
  #running = true;
  #done: Promise<void>;

  constructor(pid: number | "self", onSample: (rss: number) => void = () => {}) {
    this.#done = (async () => {
      // The sampler is stopped by stop(); the count bounds it at 10 minutes.
      for (let i = 0; this.#running && i < 12_000; i++) {
        const rss = await rssOf(pid);
        if (rss > 0) {
          this.last = rss;
          this.peak = Math.max(this.peak, rss);
          onSample(rss);
        }
        await delay(50);
      }
    })();
  }

  async stop(): Promise<void> {
    this.#running = false;
    await this.#done;
  }
}

// --- the good client -----------------------------------------------------------------------------

/** What the good client saw: its worst waits, and every call that failed. */
export interface GoodReport {
  /** `add` calls made on its own connection. */
  calls: number;
  /** New connections opened, each with one call. */
  connections: number;
  /** The longest an `add` call on its connection took, in ms. */
  worstCallMs: number;
  /** The longest a new connection took from connecting to its first answer, in ms. */
  worstFirstCallMs: number;
  /** What went wrong, at most 10. */
  failures: string[];
}

function goodConnect(port: number): Promise<RpcClient> {
  return connect({
    hostname: "127.0.0.1",
    port,
    caCerts: [certs.ca],
    timeout: GOOD_CALL_TIMEOUT_MS,
    connectTimeout: GOOD_CALL_TIMEOUT_MS,
  });
}

/**
 * Calls `add` every 100 ms on one connection, and every second opens another connection, calls it
 * once and closes it, until `signal` aborts.
 */
export async function goodClient(
  port: number,
  signal: AbortSignal,
  onReady: () => void = () => {},
): Promise<GoodReport> {
  const report: GoodReport = {
    calls: 0,
    connections: 0,
    worstCallMs: 0,
    worstFirstCallMs: 0,
    failures: [],
  };
  const fail = (what: string, error: unknown) => {
    if (report.failures.length < 10) {
      report.failures.push(`${what}: ${error instanceof Error ? error.message : String(error)}`);
    }
  };
  await using client = await goodConnect(port);
  const calling = (async () => {
    // The signal ends the loop; the count bounds it at an hour.
    for (let i = 0; !signal.aborted && i < 36_000; i++) {
      const started = performance.now();
      try {
        const sum = await client.call("add", i, 1);
        if (sum !== i + 1) fail("add", `answered ${JSON.stringify(sum)}`);
      } catch (error) {
        fail("add", error);
      }
      const took = performance.now() - started;
      if (report.calls++ === 0) onReady();
      report.worstCallMs = Math.max(report.worstCallMs, took);
      await delay(Math.max(0, 100 - took));
    }
  })();
  const connecting = (async () => {
    for (let i = 0; !signal.aborted && i < 3_600; i++) {
      const started = performance.now();
      try {
        await using fresh = await goodConnect(port);
        const sum = await fresh.call("add", i, 2);
        if (sum !== i + 2) fail("first call", `answered ${JSON.stringify(sum)}`);
      } catch (error) {
        fail("new connection", error);
      }
      const took = performance.now() - started;
      report.connections++;
      report.worstFirstCallMs = Math.max(report.worstFirstCallMs, took);
      await delay(Math.max(0, 1000 - took));
    }
  })();
  await Promise.all([calling, connecting]);
  return report;
}

/** The good client in a worker: `stop()` ends it and resolves with its report. */
function goodClientInWorker(port: number): { ready: Promise<void>; stop(): Promise<GoodReport> } {
  const worker = new Worker(import.meta.url, { type: "module", name: "good client" });
  const ready = Promise.withResolvers<void>();
  const done = Promise.withResolvers<GoodReport>();
  worker.onmessage = (event) => {
    if (event.data === "ready") ready.resolve();
    else done.resolve(event.data as GoodReport);
  };
  worker.onerror = (event) => {
    event.preventDefault();
    const error = new Error(`The good client failed: ${event.message}`);
    ready.reject(error);
    done.reject(error);
  };
  worker.postMessage({ port });
  return {
    ready: ready.promise,
    async stop() {
      worker.postMessage("stop");
      try {
        return await done.promise;
      } finally {
        worker.terminate();
      }
    },
  };
}

/** The worker's side of goodClientInWorker. */
function serveGoodClient(scope: {
  onmessage: ((event: MessageEvent) => void) | null;
  postMessage(message: unknown): void;
}): void {
  const controller = new AbortController();
  scope.onmessage = (event) => {
    if (event.data === "stop") return controller.abort();
    const { port } = event.data as { port: number };
    // Ready once its first call is answered: the measurements start from a working client.
    void goodClient(port, controller.signal, () => scope.postMessage("ready"))
      .then((report) => scope.postMessage(report));
  };
}

// --- frames --------------------------------------------------------------------------------------

/** The 15 MiB frame: a batch of `{}`s, the first with a key holding an escaped backslash. */
export function jsonValuesFrame(bytes = 15 * MIB): Uint8Array {
  const head = '[{"a\\\\":0}';
  return framed(`${head}${",{}".repeat(Math.floor((bytes - head.length - 1) / 3))}]`);
}

/** The 7.6 MiB rich frame: `add` of an 8 000 000-digit BigInt and 1n. */
export function bigIntFrame(digits = 8_000_000): Uint8Array {
  const big = { $t: "bigint", v: "9".repeat(digits) };
  return framed(
    extendedPayload(JSON.stringify(request(1, "add", [big, { $t: "bigint", v: "1" }]))),
  );
}

/** The 164 KB rich frame: 2 000 ArrayBuffers, each on the one 64 KiB section. */
export function aliasedFrame(id: number, tags = 2000): Uint8Array {
  const tag = { $t: "bytes", o: 0, n: 64 * 1024, k: "ArrayBuffer" };
  const json = JSON.stringify(request(id, "add", [Array.from({ length: tags }, () => tag), 0]));
  return framed(extendedPayload(json, new Uint8Array(64 * 1024)));
}

// --- the attacks ---------------------------------------------------------------------------------

/** One attack: `run` misbehaves until `signal` aborts (or it is done), and says what it got. */
export interface Attack {
  readonly name: string;
  readonly description: string;
  /** The transports it is run on: all where the transport's reading or writing matters. */
  readonly transports: readonly Transport[];
  run(port: number, signal: AbortSignal): Promise<string>;
}

/** Resolves when `signal` aborts; `dispose` removes its listener. */
function abortedPromise(signal: AbortSignal): Promise<void> & Disposable {
  const { promise, resolve } = Promise.withResolvers<void>();
  const onAbort = () => resolve();
  signal.addEventListener("abort", onAbort, { once: true });
  if (signal.aborted) resolve();
  return Object.assign(promise, {
    [Symbol.dispose]: () => signal.removeEventListener("abort", onAbort),
  });
}

/** Writes `bytes` in 64 KiB pieces until done or `signal` aborts; resolves with the bytes written. */
async function writeUntil(raw: RawClient, bytes: Uint8Array, signal: AbortSignal): Promise<number> {
  using aborted = abortedPromise(signal);
  let at = 0;
  while (at < bytes.length && !signal.aborted) {
    const write = raw.conn.write(bytes.subarray(at, at + 64 * 1024));
    const written = await Promise.race([write, aborted]).catch(() => null);
    if (typeof written !== "number") break; // aborted, or the server closed the connection
    at += written;
  }
  return at;
}

/** What a reply says: its error code, "answered", or "closed" for the end of the connection. */
function verdict(reply: unknown): string {
  if (reply === null) return "closed";
  const error = (reply as { error?: { code: number; message: string } }).error;
  if (error) return `refused ${error.code} "${error.message.slice(0, 60)}…"`;
  return "answered";
}

const SLEEP_NOTIFICATION = '{"jsonrpc":"2.0","method":"sleep","params":[10000]}';

/**
 * Sends `count` frames of `frame(i)` until the signal; for ever when `count` is Infinity (1 024
 * frames, all of one length, over and over). Counts what the server sent back.
 */
async function flood(
  port: number,
  signal: AbortSignal,
  count: number,
  frame: (i: number) => Uint8Array,
  unit: string,
): Promise<string> {
  await using raw = await RawClient.connect(port);
  const started = performance.now();
  let replies = 0;
  let closedAfter: number | undefined;
  const reading = (async () => {
    try {
      while (await raw.receiveFrame() !== null) replies++;
    } catch {
      // A reset: the server closed it.
    }
    if (!signal.aborted) closedAfter = performance.now() - started;
  })();
  const frames: Uint8Array[] = [];
  for (let i = 0; i < (count === Infinity ? 1024 : count); i++) frames.push(frame(i));
  const bytes = concat(frames);
  let sentBytes = 0;
  // Once, or over and over: the signal ends the loop, and the count bounds it at 100 GiB.
  for (let turn = 0; turn === 0 || (count === Infinity && turn < 10_000); turn++) {
    if (signal.aborted || closedAfter !== undefined) break;
    const written = await writeUntil(raw, bytes, signal);
    sentBytes += written;
    if (written < bytes.length) break;
  }
  let sent = 0;
  if (count === Infinity) sent = Math.floor(sentBytes / frames[0]!.length);
  else {for (let at = frames[0]!.length; at <= sentBytes && sent < count; sent++) {
      at += frames[sent + 1]?.length ?? 0;
    }}
  using aborted = abortedPromise(signal);
  await Promise.race([aborted, reading]);
  raw.close();
  await reading;
  const closed = closedAfter === undefined
    ? "open until the end"
    : `closed by the server after ${(closedAfter / 1000).toFixed(1)} s`;
  const total = count === Infinity ? "" : ` of ${count}`;
  return `${sent}${total} ${unit} sent (${
    (sentBytes / MIB).toFixed(0)
  } MiB), ${replies} replies, ` +
    closed;
}

/** Sends one frame (after `rpc.hello` when `rich`), and says what came back and how soon. */
async function oneFrame(port: number, frame: Uint8Array, rich: boolean): Promise<string> {
  await using raw = await RawClient.connect(port);
  if (rich) await raw.exchange(request(0, "rpc.hello", { extensions: ["rich"] }));
  const started = performance.now();
  await raw.sendBytes(frame);
  const reply = await raw.receive().catch(() => null);
  return `${verdict(reply)} in ${Math.round(performance.now() - started)} ms`;
}

/**
 * Six clients ask for 1 MiB replies, as fast as they go, until their writes fail or the signal:
 * clients that never read one, or (`read`) clients that read them all, a control for the garbage
 * that handling 1 MiB messages makes anyway.
 */
async function largeReplies(port: number, signal: AbortSignal, read: boolean): Promise<string> {
  const half = "x".repeat(512 * 1024);
  const frame = framed(JSON.stringify(request(1, "add", [half, half])));
  const started = performance.now();
  let replies = 0;
  const results = await Promise.all(Array.from({ length: 6 }, async () => {
    await using raw = await RawClient.connect(port);
    const reading = read
      ? (async () => {
        while (await raw.receiveFrame().catch(() => null) !== null) replies++;
      })()
      : undefined;
    // Each request asks for another reply; a failed write ends the loop, as does the signal, and
    // the count bounds it at 1 GiB sent.
    let sent = 0;
    for (; sent < 1024 && !signal.aborted; sent++) {
      if (await writeUntil(raw, frame, signal) < frame.length) break;
    }
    raw.close();
    await reading;
    return { sent, after: performance.now() - started, failed: !signal.aborted };
  }));
  const failed = results.filter((result) => result.failed);
  const sent = results.reduce((sum, result) => sum + result.sent, 0);
  const after = Math.max(...failed.map((result) => result.after)) / 1000;
  return `${sent} requests of 1 MiB sent${read ? `, ${replies} replies read` : ""}; ` +
    `${failed.length} of 6 saw their writes fail` +
    (failed.length > 0 ? ` (the last after ${after.toFixed(1)} s)` : "");
}

/** The attacks on a server. */
export const ATTACKS: readonly Attack[] = [
  {
    name: "notifications",
    description: "200 000 notifications of `sleep(10000)`",
    transports: ["node", "deno"],
    run: (port, signal) =>
      flood(port, signal, 200_000, () => framed(SLEEP_NOTIFICATION), "notifications"),
  },
  {
    name: "notifications-sustained",
    description: "notifications of `sleep(10000)`, as fast as they go, for the whole attack",
    transports: ["node", "deno"],
    run: (port, signal) =>
      flood(port, signal, Infinity, () => framed(SLEEP_NOTIFICATION), "notifications"),
  },
  {
    name: "batches",
    description: "150 batches of 1 024 `sleep(10000)` calls",
    transports: ["node", "deno"],
    run: (port, signal) =>
      flood(port, signal, 150, (b) =>
        framed(JSON.stringify(
          Array.from({ length: 1024 }, (_, i) => request(b * 1024 + i, "sleep", [10_000])),
        )), "batches"),
  },
  {
    name: "json-values",
    description: "one 15 MiB frame of `[{},{},…]` with a key holding an escaped backslash",
    transports: ["node"],
    run: (port) => oneFrame(port, jsonValuesFrame(), false),
  },
  {
    name: "bigint",
    description: "one 7.6 MiB rich frame: `add` of an 8 000 000-digit BigInt and 1n",
    transports: ["node"],
    run: (port) => oneFrame(port, bigIntFrame(), true),
  },
  {
    name: "aliased",
    description: "one 164 KB rich frame of 2 000 ArrayBuffer tags on one 64 KiB section",
    transports: ["node"],
    run: (port) => oneFrame(port, aliasedFrame(1), true),
  },
  {
    name: "aliased-control",
    description: "control: one plain frame as large as the aliased one (`add` of a string)",
    transports: ["node"],
    run: (port) => oneFrame(port, plainFrameLike(aliasedFrame(1).length), true),
  },
  {
    name: "never-read",
    description: "six clients that request 1 MiB replies and never read",
    transports: ["deno", "node"],
    run: (port, signal) => largeReplies(port, signal, false),
  },
  {
    name: "never-read-control",
    description:
      "control: six clients that request 1 MiB replies as fast as they go, and read them",
    transports: ["deno", "node"],
    run: (port, signal) => largeReplies(port, signal, true),
  },
];

/** A plain frame of `bytes` bytes: `add` of a string and 0, answered with as large a reply. */
function plainFrameLike(bytes: number): Uint8Array {
  const shell = JSON.stringify(request(1, "add", ["", 0]));
  return framed(JSON.stringify(request(1, "add", ["x".repeat(bytes - 4 - shell.length), 0])));
}

/** Every attack on every transport it runs on: `NAME/TRANSPORT`. */
export const ATTACK_IDS: readonly string[] = ATTACKS.flatMap((attack) =>
  attack.transports.map((transport) => `${attack.name}/${transport}`)
);

/** What one attack did to the server and to the good client. */
export interface AttackReport extends GoodReport {
  name: string;
  description: string;
  transport: Transport;
  /** What the attacker got back. */
  outcome: string;
  rssBefore: number;
  rssPeak: number;
  rssAfter: number;
  /** Distinct server log lines (addresses taken out) with their counts, at most 5. */
  log: string[];
}

/** Options of {@linkcode underAttack}. */
export interface UnderAttackOptions {
  /** How long the attack may go on, in ms. @default 10_000 */
  ms?: number;
  /** How long to watch the server after the attack, in ms. @default 2_000 */
  settleMs?: number;
  /**
   * A safety valve: the attack is stopped once the server's RSS has grown this much, so that a
   * server without a bound does not take the machine's memory. @default 1 GiB
   */
  stopAtGrowth?: number;
}

/** Runs `attack` on a fresh server on `transport` while the good client calls it. */
export async function underAttack(
  attack: Attack,
  transport: Transport,
  options: UnderAttackOptions = {},
): Promise<AttackReport> {
  const { ms = 10_000, settleMs = 2_000, stopAtGrowth = 1024 * MIB } = options;
  await using target = await startTarget(transport);
  const good = goodClientInWorker(target.port);
  let report: GoodReport | undefined;
  try {
    await good.ready;
    await delay(700);
    const rssBefore = await rssOf(target.pid);
    const valve = new AbortController();
    const peak = new RssPeak(target.pid, (rss) => {
      if (rss - rssBefore > stopAtGrowth) valve.abort();
    });
    const signal = AbortSignal.any([AbortSignal.timeout(ms), valve.signal]);
    let outcome = await attack.run(target.port, signal).catch((error) => `failed: ${error}`);
    if (valve.signal.aborted) outcome += `; stopped: server RSS grew over ${mib(stopAtGrowth)}`;
    await delay(settleMs);
    await peak.stop();
    report = await good.stop();
    return {
      name: attack.name,
      description: attack.description,
      transport,
      outcome,
      rssBefore,
      rssPeak: peak.peak,
      rssAfter: peak.last,
      log: summarize(target.stderr),
      ...report,
    };
  } finally {
    if (report === undefined) await good.stop().catch(() => {});
  }
}

/** Distinct log lines with addresses taken out, most frequent first. */
function summarize(log: string): string[] {
  const counts = new Map<string, number>();
  for (const line of log.split("\n")) {
    if (line.trim() === "") continue;
    const key = line.replace(/127\.0\.0\.1:\d+/g, "PEER").slice(0, 160);
    counts.set(key, (counts.get(key) ?? 0) + 1);
  }
  return [...counts].sort((a, b) => b[1] - a[1]).slice(0, 5).map(([line, n]) => `${n}× ${line}`);
}

// --- the client side -----------------------------------------------------------------------------

/** What a server that stops reading cost the client. */
export interface ClientReport {
  rssBefore: number;
  /** The highest RSS within the measured time. */
  rssPeak: number;
  /** How the connection ended: the error's name and message, or "still open". */
  ending: string;
  /** When it ended, in ms from the first call. */
  endedAfterMs: number | undefined;
  calls: number;
}

/** Options of {@linkcode clientAgainstStalledServer}. */
export interface StalledServerOptions {
  /** How long the calls go on and the RSS is measured, in ms. @default 10_000 */
  ms?: number;
  /** How long to wait after that for the connection to end. @default 30_000 */
  endWithinMs?: number;
  /** The client's writeTimeout. @default the client's default */
  writeTimeout?: number;
}

/**
 * The client library against a server that completes TLS, answers `rpc.hello` and then stops
 * reading: 16 callers each call `add` with 128 KiB of text and a 200 ms timeout, again and again.
 * Measures this process's RSS.
 */
export async function clientAgainstStalledServer(
  options: StalledServerOptions = {},
): Promise<ClientReport> {
  const { ms = 10_000, endWithinMs = 30_000, writeTimeout } = options;
  const release = Promise.withResolvers<void>();
  await using server = fakeTlsServer(async (peer) => {
    const hello = await peer.receive() as { id: unknown };
    await peer.send({ jsonrpc: "2.0", id: hello.id, result: { extensions: ["rich"] } });
    await release.promise; // and never reads again
  });
  try {
    await using client = await connect({
      hostname: "127.0.0.1",
      port: server.port,
      caCerts: [certs.ca],
      timeout: 200,
      ...(writeTimeout === undefined ? {} : { writeTimeout }),
    });
    const rssBefore = await rssOf("self");
    const peak = new RssPeak("self");
    const started = performance.now();
    let ending: string | undefined;
    let endedAfterMs: number | undefined;
    let calls = 0;
    const text = "y".repeat(128 * 1024);
    const stopAt = started + ms + endWithinMs;
    const measured = delay(ms).then(() => peak.stop());
    await Promise.all(Array.from({ length: 16 }, async () => {
      // Until the connection ends, or the time is up; the count bounds it.
      for (let i = 0; ending === undefined && performance.now() < stopAt && i < 100_000; i++) {
        calls++;
        try {
          await client.call("add", text, i);
        } catch (error) {
          if (error instanceof ConnectionError && client.isClosed) {
            ending ??= `${error.name}: ${error.message}`;
            endedAfterMs ??= performance.now() - started;
          } else if (!(error instanceof Error && error.name === "TimeoutError")) {
            await delay(20); // refused: maxQueuedBytes
          }
        }
      }
    }));
    await measured;
    return { rssBefore, rssPeak: peak.peak, ending: ending ?? "still open", endedAfterMs, calls };
  } finally {
    release.resolve();
  }
}

// --- the script ----------------------------------------------------------------------------------

/** One row of the table: a server attack's report, or the client side's. */
export type Row = { kind: "server"; report: AttackReport } | {
  kind: "client";
  report: ClientReport;
};

/** The client-side attack's name. */
export const CLIENT_ATTACK = "client-stops-reading";

function mib(bytes: number): string {
  return `${bytes >= 0 ? "+" : ""}${(bytes / MIB).toFixed(bytes < 10 * MIB ? 1 : 0)} MiB`;
}

/** The targets `row` misses, in words; empty when it meets them all. */
export function missed(row: Row): string[] {
  const misses: string[] = [];
  if (row.kind === "client") {
    const growth = row.report.rssPeak - row.report.rssBefore;
    if (growth > TARGETS.clientRssBytes) misses.push(`client RSS ${mib(growth)}`);
    if (!row.report.ending.startsWith("ConnectionError")) misses.push("no ConnectionError");
    return misses;
  }
  const report = row.report;
  const growth = report.rssPeak - report.rssBefore;
  const wait = Math.max(report.worstCallMs, report.worstFirstCallMs);
  if (wait > TARGETS.worstWaitMs) misses.push(`worst wait ${Math.round(wait)} ms`);
  if (growth > TARGETS.serverRssBytes) misses.push(`server RSS ${mib(growth)}`);
  if (report.failures.length > 0) misses.push(`good calls failed: ${report.failures[0]}`);
  if (report.name === "aliased" && growth > TARGETS.aliasedBytes) {
    const size = aliasedFrame(1).length;
    misses.push(`the aliased frame cost ${(growth / size).toFixed(0)}× its size`);
  }
  return misses;
}

/** Whether `row` is a control: no attack, what the same load costs from clients that behave. */
function isControl(row: Row): boolean {
  return row.kind === "server" && row.report.name.endsWith("-control");
}

function tableRow(row: Row): string {
  const misses = missed(row);
  const met = isControl(row)
    ? `(control${misses.length === 0 ? "" : `: ${misses.join("; ")}`})`
    : misses.length === 0
    ? "yes"
    : `**no**: ${misses.join("; ")}`;
  if (row.kind === "client") {
    const r = row.report;
    const ended = r.endedAfterMs === undefined
      ? ""
      : ` after ${(r.endedAfterMs / 1000).toFixed(1)} s`;
    return `| ${CLIENT_ATTACK} | (client) | client ${mib(r.rssPeak - r.rssBefore)} | – | ` +
      `${r.calls} calls; ${r.ending.slice(0, 110)}${ended} | ${met} |`;
  }
  const r = row.report;
  const rss = `${mib(r.rssPeak - r.rssBefore)} (after ${mib(r.rssAfter - r.rssBefore)})`;
  const waits = `${Math.round(r.worstCallMs)} / ${Math.round(r.worstFirstCallMs)} ms`;
  return `| ${r.name} | ${r.transport} | ${rss} | ${waits} | ${r.outcome} | ${met} |`;
}

const USAGE =
  "Usage: deno run -A bench/attacks.ts [--only NAME[/TRANSPORT]] [--seconds N] [--json]";

function usage(message: string): never {
  console.error(`error: ${message}\n${USAGE}`);
  Deno.exit(2);
}

/** Runs the attack `id` (`NAME/TRANSPORT`, or the client side) in this process. */
async function runHere(id: string, seconds: number): Promise<Row> {
  if (id === CLIENT_ATTACK) {
    return { kind: "client", report: await clientAgainstStalledServer({ ms: seconds * 1000 }) };
  }
  const [name, transport] = id.split("/") as [string, Transport];
  const attack = ATTACKS.find((attack) => attack.name === name)!;
  return { kind: "server", report: await underAttack(attack, transport, { ms: seconds * 1000 }) };
}

/** Runs the attack `id` in a subprocess of its own, so that no attack meets another's garbage. */
async function runChild(id: string, seconds: number): Promise<Row> {
  const output = await new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", import.meta.filename!, "--only", id, "--seconds", `${seconds}`, "--json"],
    stdin: "null",
  }).output();
  const stdout = decoder.decode(output.stdout);
  const line = stdout.split("\n").find((line) => line.startsWith("{"));
  if (line === undefined) {
    throw new Error(`Cannot run ${id}: ${stdout}${decoder.decode(output.stderr)}`);
  }
  return JSON.parse(line) as Row;
}

async function main(): Promise<void> {
  let parsed;
  try {
    parsed = parseArgs({
      args: Deno.args,
      options: { only: { type: "string" }, seconds: { type: "string" }, json: { type: "boolean" } },
      strict: true,
    });
  } catch (error) {
    usage(error instanceof Error ? error.message : String(error));
  }
  const seconds = Number(parsed.values.seconds ?? 10);
  if (!Number.isInteger(seconds) || seconds < 1) {
    usage(`--seconds must be a whole number of at least 1, got "${parsed.values.seconds}"`);
  }
  const ids = [...ATTACK_IDS, CLIENT_ATTACK];
  const only = parsed.values.only;
  const chosen = only === undefined
    ? ids
    : ids.filter((id) => id === only || id.startsWith(`${only}/`));
  if (chosen.length === 0) usage(`unknown attack "${only}"; one of ${ids.join(", ")}`);
  const rows: Row[] = [];
  for (const id of chosen) {
    rows.push(chosen.length === 1 ? await runHere(id, seconds) : await runChild(id, seconds));
  }
  if (parsed.values.json) {
    for (const row of rows) console.log(JSON.stringify(row));
  } else {
    console.log(
      "| attack | transport | server RSS growth, peak (after) | worst wait: add / new connection " +
        "| what the attacker got | targets met |",
    );
    console.log("|---|---|---|---|---|---|");
    for (const row of rows) console.log(tableRow(row));
    for (const row of rows) {
      if (row.kind === "server" && (row.report.log.length > 0 || row.report.failures.length > 0)) {
        const lines = [...row.report.failures, ...row.report.log];
        console.log(`\n${row.report.name}/${row.report.transport}:\n  ${lines.join("\n  ")}`);
      }
    }
  }
  Deno.exit(rows.some((row) => !isControl(row) && missed(row).length > 0) ? 1 : 0);
}

if ("WorkerGlobalScope" in globalThis) {
  serveGoodClient(globalThis as unknown as Parameters<typeof serveGoodClient>[0]);
} else if (import.meta.main) {
  await main();
}
