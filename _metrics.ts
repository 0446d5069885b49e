// A server's metrics: plain counters that the server bumps as calls, connections and refusals
// happen, rendered in the Prometheus text exposition format (0.0.4) when scraped, and merged over
// workers from structured-cloneable snapshots.
//
// Every label takes values from a fixed set known before the first connection: method names from
// the server's method table (anything else is "unknown"), handshake failure reasons and limit
// names from the lists below (anything else is "other"), and at most MAX_ERROR_CODES error codes
// per method. A client cannot grow the output, whatever names it sends.

import process from "node:process";
import { readdirSync } from "node:fs";
import { deno, unrefTimer } from "./_runtime.ts";

/** The built-in methods a server answers besides its own, each counted under its own name. */
export const BUILTIN_METHODS: readonly string[] = [
  "rpc.ping",
  "rpc.hello",
  "rpc.auth",
  "rpc.discover",
  "rpc.cancel",
];

/** The `method` label of calls to a method the server does not have. */
export const UNKNOWN_METHOD = "unknown";

/**
 * Why a TLS handshake failed, the values of `tlsrpc_handshake_failures_total{reason}`:
 * - `timeout`: the handshake did not finish within `handshakeTimeout`;
 * - `protocol`: the peer did not speak TLS (plaintext, HTTP) or broke the protocol;
 * - `certificate`: the client's certificate was refused (mutual TLS);
 * - `reset`: the peer closed or reset the connection during the handshake;
 * - `other`: anything else, and any value not in this list.
 */
export const HANDSHAKE_FAILURES = [
  "timeout",
  "protocol",
  "certificate",
  "reset",
  "other",
] as const;

/** One of {@linkcode HANDSHAKE_FAILURES}. */
export type HandshakeFailure = typeof HANDSHAKE_FAILURES[number];

/**
 * The limits whose refusals are counted, the values of `tlsrpc_limit_refusals_total{limit}`: one
 * per limit of `DEFAULT_LIMITS` that refuses or closes something, in snake case, the three
 * authentication guards, and `other` for any value not in this list.
 */
export const LIMIT_NAMES = [
  "max_connections",
  "max_in_flight",
  "max_batch",
  "max_frame_bytes",
  "max_json_values",
  "max_decoded_bytes",
  "max_bigint_digits",
  "max_depth",
  "max_queued_bytes",
  "frame_timeout",
  "idle_timeout",
  "write_timeout",
  "auth_timeout",
  "auth_attempts",
  "auth_throttle",
  "other",
] as const;

/** One of {@linkcode LIMIT_NAMES}. */
export type LimitName = typeof LIMIT_NAMES[number];

/**
 * The upper bounds, in seconds, of the call duration histogram's buckets: from 0.5 ms (a call
 * answered from memory on loopback) to 10 s (the default handshake and auth timeouts), roughly
 * 1-2.5-5 per decade so that quantiles stay within a factor of 2.5.
 */
export const DURATION_BUCKETS: readonly number[] = [
  0.0005,
  0.001,
  0.0025,
  0.005,
  0.01,
  0.025,
  0.05,
  0.1,
  0.25,
  0.5,
  1,
  2.5,
  5,
  10,
];

/**
 * The most distinct error codes counted per method; further codes are counted under the code
 * label `other`. Codes come from the server's handlers, not from clients, and a handful per method
 * is usual: 32 is far beyond that and still bounds what a handler that echoes client input into
 * its error code could add.
 */
export const MAX_ERROR_CODES = 32;

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

/**
 * The state of one {@linkcode Metrics} at one moment, as plain data: it survives
 * `structuredClone` and `postMessage`, so workers can send theirs to the one that serves
 * `/metrics`, which renders them together with {@linkcode renderMerged}.
 */
export interface MetricsSnapshot {
  /** The process the snapshot was taken in: process figures are counted once per process. */
  pid: number;
  /** The histogram's bucket bounds ({@linkcode DURATION_BUCKETS}). */
  buckets: number[];
  /** Calls answered, one entry per method and code seen; `code` is "0" for a result. */
  calls: { method: string; code: string; count: number }[];
  /**
   * Call durations per method seen: `counts[i]` calls took at most `buckets[i]` seconds and more
   * than the bound before (not cumulative); the last entry counts calls above every bound.
   */
  durations: { method: string; counts: number[]; sum: number }[];
  /** Calls dispatched and not yet settled. */
  callsInFlight: number;
  /** Open connections. */
  connections: number;
  /** Connections accepted since the start. */
  connectionsTotal: number;
  /** Failed handshakes by reason, every reason of {@linkcode HANDSHAKE_FAILURES} present. */
  handshakeFailures: Record<string, number>;
  /** Refusals by limit, every name of {@linkcode LIMIT_NAMES} present. */
  limitRefusals: Record<string, number>;
  /** Bytes read from clients. */
  bytesReceived: number;
  /** Bytes written to clients. */
  bytesSent: number;
  /** The process's resident set size in bytes. */
  residentMemoryBytes: number;
  /**
   * Open file descriptors of the process; null where unknown: not Linux, or not allowed to read
   * /proc/self/fd (Deno 2 allows that only with every permission, `-A`).
   */
  openFds: number | null;
  /** The latest event loop lag sample, in seconds. */
  eventLoopLagSeconds: number;
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
 * Renders the snapshots of several workers as one server's metrics, in the Prometheus text
 * exposition format 0.0.4. Counters, histograms and the in-flight and connection gauges are
 * summed. Process figures are counted once per process (snapshots with the same `pid` are
 * threads of one process and report the same figures) and summed over processes;
 * `tlsrpc_event_loop_lag_seconds` is the largest lag of any worker, since each has its own event
 * loop and the slowest one is what callers notice.
 *
 * @throws {RangeError} When the snapshots' histogram buckets differ.
 */
export function renderMerged(snapshots: readonly MetricsSnapshot[]): string {
  const calls = new Map<string, Map<string, number>>();
  const durations = new Map<string, { counts: number[]; sum: number }>();
  const handshakes = new Map<string, number>(HANDSHAKE_FAILURES.map((r) => [r, 0]));
  const limits = new Map<string, number>(LIMIT_NAMES.map((l) => [l, 0]));
  const processes = new Map<number, { rss: number; fds: number | null }>();
  let inFlight = 0, connections = 0, connectionsTotal = 0, received = 0, sent = 0, lag = 0;
  for (const s of snapshots) {
    if (
      s.buckets.length !== BUCKET_COUNT || s.buckets.some((b, i) => b !== DURATION_BUCKETS[i])
    ) {
      throw new RangeError(
        `Cannot merge metrics: snapshot buckets [${s.buckets}] differ from [${DURATION_BUCKETS}]`,
      );
    }
    for (const { method, code, count } of s.calls) {
      let codes = calls.get(method);
      if (codes === undefined) calls.set(method, codes = new Map());
      codes.set(code, (codes.get(code) ?? 0) + count);
    }
    for (const { method, counts, sum } of s.durations) {
      const d = durations.get(method);
      if (d === undefined) {
        durations.set(method, { counts: [...counts], sum });
      } else {
        for (let i = 0; i < d.counts.length; i++) d.counts[i]! += counts[i] ?? 0;
        d.sum += sum;
      }
    }
    addCounts(handshakes, s.handshakeFailures);
    addCounts(limits, s.limitRefusals);
    inFlight += s.callsInFlight;
    connections += s.connections;
    connectionsTotal += s.connectionsTotal;
    received += s.bytesReceived;
    sent += s.bytesSent;
    lag = Math.max(lag, s.eventLoopLagSeconds);
    const p = processes.get(s.pid);
    processes.set(s.pid, {
      rss: Math.max(p?.rss ?? 0, s.residentMemoryBytes),
      fds: s.openFds === null ? p?.fds ?? null : Math.max(p?.fds ?? 0, s.openFds),
    });
  }

  const out: string[] = [];
  header(
    out,
    "tlsrpc_calls_total",
    "counter",
    "Calls answered, by method and code (0 for a result, else the JSON-RPC error code).",
  );
  for (const method of [...calls.keys()].sort()) {
    const codes = calls.get(method)!;
    const label = `method="${escapeLabel(method)}",code="`;
    for (const code of [...codes.keys()].sort(compareCodes)) {
      out.push(
        `tlsrpc_calls_total{${label}${escapeLabel(code)}"} ${formatValue(codes.get(code)!)}`,
      );
    }
  }
  header(
    out,
    "tlsrpc_call_duration_seconds",
    "histogram",
    "Time from dispatch to answer of calls, by method.",
  );
  for (const method of [...durations.keys()].sort()) {
    const { counts, sum } = durations.get(method)!;
    const label = `method="${escapeLabel(method)}"`;
    let cumulative = 0;
    for (let i = 0; i <= BUCKET_COUNT; i++) {
      cumulative += counts[i] ?? 0;
      const le = i < BUCKET_COUNT ? formatValue(DURATION_BUCKETS[i]!) : "+Inf";
      out.push(
        `tlsrpc_call_duration_seconds_bucket{${label},le="${le}"} ${formatValue(cumulative)}`,
      );
    }
    out.push(`tlsrpc_call_duration_seconds_sum{${label}} ${formatValue(sum)}`);
    out.push(`tlsrpc_call_duration_seconds_count{${label}} ${formatValue(cumulative)}`);
  }
  sample(out, "tlsrpc_calls_in_flight", "gauge", "Calls dispatched and not yet settled.", inFlight);
  sample(out, "tlsrpc_connections", "gauge", "Open connections.", connections);
  sample(out, "tlsrpc_connections_total", "counter", "Connections accepted.", connectionsTotal);
  header(out, "tlsrpc_handshake_failures_total", "counter", "Failed TLS handshakes, by reason.");
  for (const [reason, count] of handshakes) {
    out.push(`tlsrpc_handshake_failures_total{reason="${reason}"} ${formatValue(count)}`);
  }
  header(
    out,
    "tlsrpc_limit_refusals_total",
    "counter",
    "Connections, frames and calls refused or closed by a limit, by limit.",
  );
  for (const [limit, count] of limits) {
    out.push(`tlsrpc_limit_refusals_total{limit="${limit}"} ${formatValue(count)}`);
  }
  sample(out, "tlsrpc_bytes_received_total", "counter", "Bytes read from clients.", received);
  sample(out, "tlsrpc_bytes_sent_total", "counter", "Bytes written to clients.", sent);
  sample(
    out,
    "tlsrpc_event_loop_lag_seconds",
    "gauge",
    "Latest event loop lag: how late a timer fired, the largest over workers.",
    lag,
  );
  if (processes.size > 0) {
    let rss = 0, fds = 0, fdsKnown = false;
    for (const p of processes.values()) {
      rss += p.rss;
      if (p.fds !== null) {
        fds += p.fds;
        fdsKnown = true;
      }
    }
    sample(out, "process_resident_memory_bytes", "gauge", "Resident memory size in bytes.", rss);
    if (fdsKnown) sample(out, "process_open_fds", "gauge", "Number of open file descriptors.", fds);
  }
  return out.join("\n") + "\n";
}

function addCounts(into: Map<string, number>, from: Record<string, number>): void {
  for (const [key, count] of Object.entries(from)) {
    // A key outside the fixed list (a snapshot from another version) must not add a label value.
    const k = into.has(key) ? key : "other";
    into.set(k, into.get(k)! + count);
  }
}

function header(out: string[], name: string, type: string, help: string): void {
  out.push(`# HELP ${name} ${help}`, `# TYPE ${name} ${type}`);
}

function sample(out: string[], name: string, type: string, help: string, value: number): void {
  header(out, name, type, help);
  out.push(`${name} ${formatValue(value)}`);
}

/** Codes in numeric order, "other" last. */
function compareCodes(a: string, b: string): number {
  const x = Number(a), y = Number(b);
  if (Number.isNaN(x) || Number.isNaN(y)) return Number.isNaN(x) ? (Number.isNaN(y) ? 0 : 1) : -1;
  return x - y;
}

/** A label value escaped as the text format wants: backslash, double quote and line feed. */
export function escapeLabel(value: string): string {
  return /[\\"\n]/.test(value)
    ? value.replaceAll("\\", "\\\\").replaceAll('"', '\\"').replaceAll("\n", "\\n")
    : value;
}

function formatValue(value: number): string {
  if (Number.isNaN(value)) return "NaN";
  if (value === Infinity) return "+Inf";
  if (value === -Infinity) return "-Inf";
  return String(value);
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
