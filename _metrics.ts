// A server's metrics: plain counters that the server bumps as calls, connections and refusals
// happen, and the process figures, taken together as a snapshot when scraped. The label sets, the
// snapshot's shape and its rendering in the Prometheus text format are in _metrics_text.ts.
//
// Every label takes values from a fixed set known before the first connection: method names from
// the server's method table (anything else is "unknown"), handshake failure reasons and limit
// names from fixed lists (anything else is "other"), and at most MAX_ERROR_CODES error codes per
// method. A client cannot grow the output, whatever names it sends.

import process from "node:process";
import { readdirSync } from "node:fs";
import { deno, unrefTimer } from "./_runtime.ts";
import {
  BUILTIN_METHODS,
  DURATION_BUCKETS,
  HANDSHAKE_FAILURES,
  type HandshakeFailure,
  LIMIT_NAMES,
  type LimitName,
  MAX_ERROR_CODES,
  type MetricsSnapshot,
  renderMerged,
  UNKNOWN_METHOD,
} from "./_metrics_text.ts";

/** How often the event loop lag is sampled, in milliseconds: 500 ms, as Node's prom-client. */
export const DEFAULT_LAG_INTERVAL = 500;

/** Options of {@linkcode Metrics}. */
export interface MetricsOptions {
  /**
   * Milliseconds between event loop lag samples; 0 disables the sampler (the lag then reads 0).
   * The sampler's timer is unref'd: it does not keep a process alive.
   *
   * @default {500}
   */
  lagInterval?: number;
}

const HANDSHAKE_INDEX: ReadonlyMap<string, number> = new Map(
  HANDSHAKE_FAILURES.map((reason, i) => [reason, i]),
);
const LIMIT_INDEX: ReadonlyMap<string, number> = new Map(LIMIT_NAMES.map((name, i) => [name, i]));
const OTHER_REASON = HANDSHAKE_FAILURES.indexOf("other");
const OTHER_LIMIT = LIMIT_NAMES.indexOf("other");
const BUCKET_COUNT = DURATION_BUCKETS.length;

/**
 * The metrics of one server. The server calls the counting methods as things happen; each costs
 * a Map lookup or an increment and allocates nothing after a method's first error code.
 * `render()` writes them in the Prometheus text format.
 *
 * Holds a timer (the event loop lag sampler) until `close()`.
 */
export class Metrics {
  /** Method name to its index in the per-method arrays. */
  #methodIndex = new Map<string, number>();
  #methodNames: string[];
  #unknown: number;
  #ok: Float64Array;
  /** Per method: error code to count, made at the method's first error. */
  #errors: (Map<number, number> | undefined)[];
  /** Per method: errors whose code was not counted by its own (not an integer, or too many). */
  #otherErrors: Float64Array;
  /** Per method, BUCKET_COUNT + 1 bucket counts (not cumulative), the last one for +Inf. */
  #buckets: Float64Array;
  #sums: Float64Array;
  #callsInFlight = 0;
  #connections = 0;
  #connectionsTotal = 0;
  #handshakeFailures = new Float64Array(HANDSHAKE_FAILURES.length);
  #limitRefusals = new Float64Array(LIMIT_NAMES.length);
  #bytesReceived = 0;
  #bytesSent = 0;
  #lag = 0;
  #lagInterval: number;
  #lagLast = 0;
  #lagTimer: ReturnType<typeof setInterval> | undefined;

  /**
   * Counts calls to `methods` (the server's method table) and to {@linkcode BUILTIN_METHODS} by
   * name, and every other call under {@linkcode UNKNOWN_METHOD}. A method of the table named
   * "unknown" shares that label.
   *
   * @throws {RangeError} When `lagInterval` is negative or not finite.
   */
  constructor(methods: Iterable<string>, options: MetricsOptions = {}) {
    const lagInterval = options.lagInterval ?? DEFAULT_LAG_INTERVAL;
    if (!(lagInterval >= 0) || !Number.isFinite(lagInterval)) {
      throw new RangeError(
        `Cannot create metrics: lagInterval must be a finite number of milliseconds >= 0, got ${lagInterval}`,
      );
    }
    for (const name of [...BUILTIN_METHODS, ...methods, UNKNOWN_METHOD]) {
      if (!this.#methodIndex.has(name)) this.#methodIndex.set(name, this.#methodIndex.size);
    }
    this.#methodNames = [...this.#methodIndex.keys()];
    this.#unknown = this.#methodIndex.get(UNKNOWN_METHOD)!;
    const n = this.#methodNames.length;
    this.#ok = new Float64Array(n);
    this.#errors = new Array(n).fill(undefined);
    this.#otherErrors = new Float64Array(n);
    this.#buckets = new Float64Array(n * (BUCKET_COUNT + 1));
    this.#sums = new Float64Array(n);
    this.#lagInterval = lagInterval;
    if (lagInterval > 0) {
      this.#lagLast = performance.now();
      const timer = setInterval(() => this.#sampleLag(), lagInterval);
      unrefTimer(timer);
      this.#lagTimer = timer;
    }
  }

  /**
   * Counts a call to `method` answered with `code` (0 for a result, else the JSON-RPC error code)
   * after `seconds`. Notifications count too, with code 0 unless their handler threw.
   */
  callFinished(method: string, code: number, seconds: number): void {
    const m = this.#methodIndex.get(method) ?? this.#unknown;
    if (code === 0) {
      this.#ok[m]!++;
    } else {
      this.#countError(m, code);
    }
    if (!(seconds >= 0)) seconds = 0; // NaN or a clock step back must not poison the sum
    let b = 0;
    while (b < BUCKET_COUNT && seconds > DURATION_BUCKETS[b]!) b++;
    this.#buckets[m * (BUCKET_COUNT + 1) + b]!++;
    this.#sums[m]! += seconds;
  }

  /** Counts a call dispatched to its handler (`tlsrpc_calls_in_flight`). */
  callStarted(): void {
    this.#callsInFlight++;
  }

  /** Counts a call settled, after {@linkcode Metrics.callStarted}. */
  callEnded(): void {
    this.#callsInFlight--;
  }

  /** Counts a connection accepted (`tlsrpc_connections`, `tlsrpc_connections_total`). */
  connectionOpened(): void {
    this.#connections++;
    this.#connectionsTotal++;
  }

  /** Counts a connection closed, after {@linkcode Metrics.connectionOpened}. */
  connectionClosed(): void {
    this.#connections--;
  }

  /** Counts a failed TLS handshake; a reason not in {@linkcode HANDSHAKE_FAILURES} counts as "other". */
  handshakeFailed(reason: HandshakeFailure): void {
    this.#handshakeFailures[HANDSHAKE_INDEX.get(reason) ?? OTHER_REASON]!++;
  }

  /** Counts a refusal by a limit; a name not in {@linkcode LIMIT_NAMES} counts as "other". */
  limitRefused(limit: LimitName): void {
    this.#limitRefusals[LIMIT_INDEX.get(limit) ?? OTHER_LIMIT]!++;
  }

  /** Counts `n` bytes read from a client. */
  bytesReceived(n: number): void {
    this.#bytesReceived += n;
  }

  /** Counts `n` bytes written to a client. */
  bytesSent(n: number): void {
    this.#bytesSent += n;
  }

  /** The metrics now, as plain data to send to the worker that serves them. */
  snapshot(): MetricsSnapshot {
    const calls: MetricsSnapshot["calls"] = [];
    const durations: MetricsSnapshot["durations"] = [];
    const width = BUCKET_COUNT + 1;
    for (let m = 0; m < this.#methodNames.length; m++) {
      const method = this.#methodNames[m]!;
      const counts = Array.from(this.#buckets.subarray(m * width, (m + 1) * width));
      if (counts.every((c) => c === 0) && this.#errors[m] === undefined && this.#ok[m] === 0) {
        continue;
      }
      durations.push({ method, counts, sum: this.#sums[m]! });
      if (this.#ok[m]! > 0) calls.push({ method, code: "0", count: this.#ok[m]! });
      for (const [code, count] of this.#errors[m] ?? []) {
        calls.push({ method, code: String(code), count });
      }
      if (this.#otherErrors[m]! > 0) {
        calls.push({ method, code: "other", count: this.#otherErrors[m]! });
      }
    }
    return {
      pid: process.pid,
      buckets: [...DURATION_BUCKETS],
      calls,
      durations,
      callsInFlight: this.#callsInFlight,
      connections: this.#connections,
      connectionsTotal: this.#connectionsTotal,
      handshakeFailures: Object.fromEntries(
        HANDSHAKE_FAILURES.map((reason, i) => [reason, this.#handshakeFailures[i]!]),
      ),
      limitRefusals: Object.fromEntries(
        LIMIT_NAMES.map((name, i) => [name, this.#limitRefusals[i]!]),
      ),
      bytesReceived: this.#bytesReceived,
      bytesSent: this.#bytesSent,
      residentMemoryBytes: process.memoryUsage().rss,
      openFds: openFds(),
      cpuSeconds: cpuSeconds(),
      startTimeSeconds: START_TIME_SECONDS,
      eventLoopLagSeconds: this.#lag,
    };
  }

  /** The metrics in the Prometheus text exposition format 0.0.4, with HELP and TYPE lines. */
  render(): string {
    return renderMerged([this.snapshot()]);
  }

  /** Stops the event loop lag sampler. Counting and rendering still work. */
  close(): void {
    if (this.#lagTimer !== undefined) clearInterval(this.#lagTimer);
    this.#lagTimer = undefined;
  }

  /** Same as {@linkcode Metrics.close}. */
  [Symbol.dispose](): void {
    this.close();
  }

  #countError(m: number, code: number): void {
    let codes = this.#errors[m];
    if (codes === undefined) this.#errors[m] = codes = new Map();
    const count = codes.get(code);
    if (count !== undefined) {
      codes.set(code, count + 1);
    } else if (Number.isSafeInteger(code) && codes.size < MAX_ERROR_CODES) {
      codes.set(code, 1);
    } else {
      this.#otherErrors[m]!++;
    }
  }

  #sampleLag(): void {
    const now = performance.now();
    this.#lag = Math.max(0, now - this.#lagLast - this.#lagInterval) / 1000;
    this.#lagLast = now;
  }
}

/**
 * When this process started, in seconds since the epoch, read once (reading it at each scrape
 * would make it wobble by the clocks' rounding). The same in a worker: its uptime is the process's.
 */
const START_TIME_SECONDS = Math.round(Date.now() - process.uptime() * 1000) / 1000;

/** User and system CPU time of the whole process (every worker), in seconds. */
function cpuSeconds(): number {
  const { user, system } = process.cpuUsage();
  return (user + system) / 1e6;
}

/** Whether /proc/self/fd cannot be read here: set at the first failure, to stop trying. */
let fdsUnreadable = process.platform !== "linux";

/**
 * Entries of /proc/self/fd, or null where there is none or reading it is not allowed: Deno 2 lets
 * only a process with every permission (`-A`) read /proc/self.
 */
function openFds(): number | null {
  if (fdsUnreadable) return null;
  // Query first: reading without the permission would prompt on a terminal.
  const path = "/proc/self/fd";
  if (
    deno !== undefined && deno.permissions.querySync({ name: "read", path }).state !== "granted"
  ) {
    return null;
  }
  try {
    // One entry more than there were: the descriptor that reads the directory.
    return readdirSync(path).length - 1;
  } catch {
    fdsUnreadable = true;
    return null;
  }
}
