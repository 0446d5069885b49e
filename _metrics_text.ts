// What a server's metrics look like from outside: the fixed label sets (a client cannot grow the
// output, whatever names it sends), the snapshot a worker sends its pool, and the Prometheus text
// exposition format (0.0.4) the snapshots render to, summed over workers. _metrics.ts counts.

import { VERSION } from "./_version.ts";

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

const BUCKET_COUNT = DURATION_BUCKETS.length;

/**
 * The most distinct error codes counted per method; further codes are counted under the code
 * label `other`. Codes come from the server's handlers, not from clients, and a handful per method
 * is usual: 32 is far beyond that and still bounds what a handler that echoes client input into
 * its error code could add.
 */
export const MAX_ERROR_CODES = 32;

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
  /** CPU time the process has used, user and system, in seconds. */
  cpuSeconds: number;
  /** When the process started, in seconds since the Unix epoch. */
  startTimeSeconds: number;
  /** The latest event loop lag sample, in seconds. */
  eventLoopLagSeconds: number;
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
  const processes = new Map<
    number,
    { rss: number; fds: number | null; cpu: number; start: number }
  >();
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
      // A snapshot from before these figures existed reads 0: it neither adds nor starts.
      cpu: Math.max(p?.cpu ?? 0, s.cpuSeconds ?? 0),
      start: Math.min(p?.start ?? Infinity, s.startTimeSeconds || Infinity),
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
    "Time from the read that brought a call to its answer, by method.",
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
    let rss = 0, fds = 0, fdsKnown = false, cpu = 0, start = Infinity;
    for (const p of processes.values()) {
      rss += p.rss;
      cpu += p.cpu;
      start = Math.min(start, p.start);
      if (p.fds !== null) {
        fds += p.fds;
        fdsKnown = true;
      }
    }
    sample(
      out,
      "process_cpu_seconds_total",
      "counter",
      "Total user and system CPU time spent in seconds.",
      cpu,
    );
    sample(out, "process_resident_memory_bytes", "gauge", "Resident memory size in bytes.", rss);
    if (fdsKnown) sample(out, "process_open_fds", "gauge", "Number of open file descriptors.", fds);
    if (start !== Infinity) {
      sample(
        out,
        "process_start_time_seconds",
        "gauge",
        "Start time of the process since unix epoch in seconds.",
        start,
      );
    }
  }
  header(out, "tlsrpc_build_info", "gauge", "The tlsrpc version serving, always 1.");
  out.push(`tlsrpc_build_info{version="${escapeLabel(VERSION)}"} 1`);
  return out.join("\n") + "\n";
}

/**
 * The counters of `last`, the final (or latest) snapshot of a worker that stopped, added to
 * `retired`, the counters of the workers that stopped before: what a pool adds to its live
 * workers' snapshots so that counters never go down when a worker is replaced (Prometheus would
 * read that as a reset, and count every call since the start again). Gauges and process figures
 * of a stopped worker read zero.
 */
export function retireSnapshot(
  retired: MetricsSnapshot | undefined,
  last: MetricsSnapshot,
): MetricsSnapshot {
  const calls = new Map<string, { method: string; code: string; count: number }>();
  const durations = new Map<string, { method: string; counts: number[]; sum: number }>();
  const handshakeFailures: Record<string, number> = { ...retired?.handshakeFailures };
  const limitRefusals: Record<string, number> = { ...retired?.limitRefusals };
  for (const s of retired === undefined ? [last] : [retired, last]) {
    for (const { method, code, count } of s.calls) {
      const key = `${method}\n${code}`;
      const c = calls.get(key);
      if (c === undefined) calls.set(key, { method, code, count });
      else c.count += count;
    }
    for (const { method, counts, sum } of s.durations) {
      const d = durations.get(method);
      if (d === undefined) durations.set(method, { method, counts: [...counts], sum });
      else {
        for (let i = 0; i < d.counts.length; i++) d.counts[i]! += counts[i] ?? 0;
        d.sum += sum;
      }
    }
  }
  for (const [reason, count] of Object.entries(last.handshakeFailures)) {
    handshakeFailures[reason] = (handshakeFailures[reason] ?? 0) + count;
  }
  for (const [limit, count] of Object.entries(last.limitRefusals)) {
    limitRefusals[limit] = (limitRefusals[limit] ?? 0) + count;
  }
  return {
    pid: last.pid,
    buckets: [...last.buckets],
    calls: [...calls.values()],
    durations: [...durations.values()],
    callsInFlight: 0,
    connections: 0,
    connectionsTotal: (retired?.connectionsTotal ?? 0) + last.connectionsTotal,
    handshakeFailures,
    limitRefusals,
    bytesReceived: (retired?.bytesReceived ?? 0) + last.bytesReceived,
    bytesSent: (retired?.bytesSent ?? 0) + last.bytesSent,
    residentMemoryBytes: 0,
    openFds: null,
    cpuSeconds: 0,
    startTimeSeconds: 0,
    eventLoopLagSeconds: 0,
  };
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
