import assert from "node:assert/strict";
import { Metrics } from "../_metrics.ts";
import {
  BUILTIN_METHODS,
  DURATION_BUCKETS,
  escapeLabel,
  HANDSHAKE_FAILURES,
  type HandshakeFailure,
  LIMIT_NAMES,
  type LimitName,
  MAX_ERROR_CODES,
  type MetricsSnapshot,
  renderMerged,
  retireSnapshot,
} from "../_metrics_text.ts";
import { VERSION } from "../_version.ts";
import { delay, until } from "./_util.ts";
import { assertPromtoolAccepts } from "./_tools.ts";

/** The samples of `text`, by their series as written (`name{labels}`), with their values. */
function samples(text: string): Map<string, number> {
  const map = new Map<string, number>();
  for (const line of text.split("\n")) {
    if (line === "" || line.startsWith("#")) continue;
    const space = line.lastIndexOf(" ");
    const series = line.slice(0, space);
    assert.ok(!map.has(series), `series ${series} appears twice`);
    map.set(series, Number(line.slice(space + 1)));
  }
  return map;
}

/** The series of `text` whose name (before any label) is `name`. */
function family(text: string, name: string): Map<string, number> {
  const out = new Map<string, number>();
  for (const [series, value] of samples(text)) {
    if (series === name || series.startsWith(`${name}{`)) out.set(series, value);
  }
  return out;
}

/** Whether this process may list /proc/self/fd. */
function canReadFds(): boolean {
  try {
    Deno.readDirSync("/proc/self/fd");
    return true;
  } catch {
    return false;
  }
}

/** A Metrics with no lag sampler, over the methods `add` and `div`. */
function quietMetrics(methods: string[] = ["add", "div"]): Metrics {
  return new Metrics(methods, { lagInterval: 0 });
}

Deno.test("Metrics.render() counts calls by method and code, folding unknown methods", async () => {
  using metrics = quietMetrics();
  for (let i = 0; i < 5; i++) metrics.callFinished("add", 0, 0.001);
  metrics.callFinished("add", -32602, 0.001);
  metrics.callFinished("div", 0, 0.001);
  metrics.callFinished("div", -32000, 0.001);
  metrics.callFinished("div", -32000, 0.001);
  metrics.callFinished("div", 7, 0.001);
  metrics.callFinished("rpc.ping", 0, 0.0001);
  metrics.callFinished("nope", -32601, 0.0001);
  metrics.callFinished("__proto__", -32601, 0.0001);
  metrics.callFinished("constructor", -32601, 0.0001);
  metrics.callFinished("toString", 0, 0.0001); // a handler's result for a name it lacks: still unknown
  const text = metrics.render();
  assert.deepEqual(
    family(text, "tlsrpc_calls_total"),
    new Map([
      ['tlsrpc_calls_total{method="add",code="-32602"}', 1],
      ['tlsrpc_calls_total{method="add",code="0"}', 5],
      ['tlsrpc_calls_total{method="div",code="-32000"}', 2],
      ['tlsrpc_calls_total{method="div",code="0"}', 1],
      ['tlsrpc_calls_total{method="div",code="7"}', 1],
      ['tlsrpc_calls_total{method="rpc.ping",code="0"}', 1],
      ['tlsrpc_calls_total{method="unknown",code="-32601"}', 3],
      ['tlsrpc_calls_total{method="unknown",code="0"}', 1],
    ]),
  );
  await assertPromtoolAccepts(text);
});

Deno.test("Metrics counts every built-in method under its own name", async (t) => {
  for (const method of BUILTIN_METHODS) {
    await t.step(method, () => {
      using metrics = quietMetrics([]);
      metrics.callFinished(method, 0, 0.001);
      assert.deepEqual(
        family(metrics.render(), "tlsrpc_calls_total"),
        new Map([[`tlsrpc_calls_total{method="${method}",code="0"}`, 1]]),
      );
    });
  }
});

Deno.test("Metrics counts handshake failures by reason, any other reason as other", async (t) => {
  const cases: [string, HandshakeFailure][] = [
    ["timeout", "timeout"],
    ["protocol", "protocol"],
    ["certificate", "certificate"],
    ["reset", "reset"],
    ["other", "other"],
    ["tls-alert-42", "other"],
    ["__proto__", "other"],
    ["", "other"],
  ];
  for (const [reason, label] of cases) {
    await t.step(JSON.stringify(reason), () => {
      using metrics = quietMetrics();
      metrics.handshakeFailed(reason as HandshakeFailure);
      metrics.handshakeFailed(reason as HandshakeFailure);
      const expected = new Map(
        HANDSHAKE_FAILURES.map((r) => [
          `tlsrpc_handshake_failures_total{reason="${r}"}`,
          r === label ? 2 : 0,
        ]),
      );
      assert.deepEqual(family(metrics.render(), "tlsrpc_handshake_failures_total"), expected);
    });
  }
});

Deno.test("Metrics counts limit refusals by limit, any other name as other", async (t) => {
  const cases: [string, LimitName][] = [
    ...LIMIT_NAMES.map((name): [string, LimitName] => [name, name]),
    ["maxConnections", "other"],
    ["max_cpu", "other"],
    ["hasOwnProperty", "other"],
  ];
  for (const [limit, label] of cases) {
    await t.step(limit, () => {
      using metrics = quietMetrics();
      metrics.limitRefused(limit as LimitName);
      const expected = new Map(
        LIMIT_NAMES.map((l) => [`tlsrpc_limit_refusals_total{limit="${l}"}`, l === label ? 1 : 0]),
      );
      assert.deepEqual(family(metrics.render(), "tlsrpc_limit_refusals_total"), expected);
    });
  }
});

Deno.test("Metrics tracks the gauges and byte counters", async () => {
  using metrics = quietMetrics();
  for (let i = 0; i < 3; i++) metrics.connectionOpened();
  metrics.connectionClosed();
  for (let i = 0; i < 4; i++) metrics.callStarted();
  metrics.callEnded();
  metrics.bytesReceived(1000);
  metrics.bytesReceived(24);
  metrics.bytesSent(2 ** 40);
  const text = metrics.render();
  const all = samples(text);
  assert.equal(all.get("tlsrpc_connections"), 2);
  assert.equal(all.get("tlsrpc_connections_total"), 3);
  assert.equal(all.get("tlsrpc_calls_in_flight"), 3);
  assert.equal(all.get("tlsrpc_bytes_received_total"), 1024);
  assert.equal(all.get("tlsrpc_bytes_sent_total"), 2 ** 40);
  assert.ok(all.get("process_resident_memory_bytes")! > 1024 * 1024);
  // Deno lets only a process with every permission read /proc/self/fd; without, the figure is left out.
  const fds = canReadFds();
  if (fds) {
    assert.ok(all.get("process_open_fds")! > 2); // stdin, stdout, stderr at least
  } else {
    assert.ok(!text.includes("process_open_fds"));
  }
  assert.equal(all.get("tlsrpc_event_loop_lag_seconds"), 0);
  for (
    const [name, type] of [
      ["tlsrpc_calls_total", "counter"],
      ["tlsrpc_call_duration_seconds", "histogram"],
      ["tlsrpc_calls_in_flight", "gauge"],
      ["tlsrpc_connections", "gauge"],
      ["tlsrpc_connections_total", "counter"],
      ["tlsrpc_handshake_failures_total", "counter"],
      ["tlsrpc_limit_refusals_total", "counter"],
      ["tlsrpc_bytes_received_total", "counter"],
      ["tlsrpc_bytes_sent_total", "counter"],
      ["tlsrpc_event_loop_lag_seconds", "gauge"],
      ["process_resident_memory_bytes", "gauge"],
      ...(fds ? [["process_open_fds", "gauge"]] : []),
    ]
  ) {
    assert.match(text, new RegExp(`^# HELP ${name} \\S.*\n# TYPE ${name} ${type}$`, "m"));
  }
  await assertPromtoolAccepts(text);
});

Deno.test("Metrics puts each duration in its bucket, cumulative, with _count equal to the calls", async (t) => {
  const cases: [seconds: number, le: string][] = [
    [0, "0.0005"],
    [0.0005, "0.0005"], // a bound is inclusive
    [0.0005001, "0.001"],
    [0.003, "0.005"],
    [0.2, "0.25"],
    [1, "1"],
    [9.99, "10"],
    [10.01, "+Inf"],
    [3600, "+Inf"],
    [-1, "0.0005"], // a clock step back counts as 0
    [NaN, "0.0005"],
  ];
  const les = [...DURATION_BUCKETS.map(String), "+Inf"];
  for (const [seconds, le] of cases) {
    await t.step(`${seconds} s falls in le="${le}"`, () => {
      using metrics = quietMetrics();
      metrics.callFinished("add", 0, seconds);
      const all = samples(metrics.render());
      for (const bound of les) {
        const expected = les.indexOf(bound) >= les.indexOf(le) ? 1 : 0;
        assert.equal(
          all.get(`tlsrpc_call_duration_seconds_bucket{method="add",le="${bound}"}`),
          expected,
          `le="${bound}"`,
        );
      }
      assert.equal(all.get('tlsrpc_call_duration_seconds_count{method="add"}'), 1);
      assert.equal(
        all.get('tlsrpc_call_duration_seconds_sum{method="add"}'),
        seconds >= 0 ? seconds : 0,
      );
    });
  }

  await t.step("over many calls", async () => {
    using metrics = quietMetrics();
    const durations = Array.from({ length: 200 }, (_, i) => (i % 20) * 0.003);
    for (const [i, d] of durations.entries()) metrics.callFinished("div", i % 3 === 0 ? -1 : 0, d);
    const text = metrics.render();
    const all = samples(text);
    let previous = 0;
    for (const bound of les) {
      const count = all.get(`tlsrpc_call_duration_seconds_bucket{method="div",le="${bound}"}`)!;
      const limit = bound === "+Inf" ? Infinity : Number(bound);
      assert.equal(count, durations.filter((d) => d <= limit).length, `le="${bound}"`);
      assert.ok(count >= previous, "buckets are cumulative");
      previous = count;
    }
    assert.equal(all.get('tlsrpc_call_duration_seconds_count{method="div"}'), durations.length);
    const calls = [...family(text, "tlsrpc_calls_total").values()].reduce((a, b) => a + b);
    assert.equal(calls, durations.length);
    const sum = all.get('tlsrpc_call_duration_seconds_sum{method="div"}')!;
    assert.ok(Math.abs(sum - durations.reduce((a, b) => a + b)) < 1e-9);
    await assertPromtoolAccepts(text);
  });
});

Deno.test("Metrics escapes label values as the text format wants", async (t) => {
  const cases: [name: string, escaped: string][] = [
    ["plain.name", "plain.name"],
    ['say "hi"', 'say \\"hi\\"'],
    ["back\\slash", "back\\\\slash"],
    ["line\nfeed", "line\\nfeed"],
    ['all\\"\n', 'all\\\\\\"\\n'],
    ["\\n", "\\\\n"], // a backslash then n, not a line feed
    ["tab\tand ünïcødé {}=,", "tab\tand ünïcødé {}=,"],
  ];
  for (const [name, escaped] of cases) {
    await t.step(JSON.stringify(name), async () => {
      assert.equal(escapeLabel(name), escaped);
      using metrics = quietMetrics([name]);
      metrics.callFinished(name, 0, 0.001);
      const text = metrics.render();
      assert.ok(text.includes(`tlsrpc_calls_total{method="${escaped}",code="0"} 1\n`), text);
      await assertPromtoolAccepts(text);
    });
  }
});

Deno.test("Metrics keeps its output bounded whatever method names clients send", async () => {
  using metrics = quietMetrics();
  metrics.callFinished("first-unknown", -32601, 0.001);
  const one = metrics.render().length;
  for (let i = 0; i < 10_000; i++) {
    metrics.callFinished(`unknown-${i}-${crypto.randomUUID()}`, -32601, 0.001);
  }
  const text = metrics.render();
  // Only digits of the counts may grow: 1 becomes 10001 in a few places.
  assert.ok(text.length - one < 100, `output grew from ${one} to ${text.length} characters`);
  assert.equal(samples(text).get('tlsrpc_calls_total{method="unknown",code="-32601"}'), 10_001);
  assert.ok(!text.includes("unknown-"));
  await assertPromtoolAccepts(text);
});

Deno.test("Metrics counts at most MAX_ERROR_CODES codes per method, the rest as other", async () => {
  using metrics = quietMetrics();
  for (let code = 1; code <= MAX_ERROR_CODES + 8; code++) metrics.callFinished("add", -code, 0.001);
  metrics.callFinished("add", -1, 0.001); // a code already seen still counts by itself
  metrics.callFinished("add", 1.5, 0.001); // not an integer
  const text = metrics.render();
  const calls = family(text, "tlsrpc_calls_total");
  assert.equal(calls.size, MAX_ERROR_CODES + 1);
  assert.equal(calls.get('tlsrpc_calls_total{method="add",code="-1"}'), 2);
  assert.equal(calls.get('tlsrpc_calls_total{method="add",code="other"}'), 9);
  await assertPromtoolAccepts(text);
});

Deno.test("renderMerged() sums the snapshots of two workers", async () => {
  using a = quietMetrics(["add", "div"]);
  using b = quietMetrics(["add", "mul"]); // a worker of another version: labels are unioned
  a.callFinished("add", 0, 0.001);
  a.callFinished("add", 0, 0.3);
  a.callFinished("div", -32000, 0.02);
  b.callFinished("add", 0, 0.001);
  b.callFinished("add", -32602, 20);
  b.callFinished("mul", 0, 0.004);
  b.callFinished("nope", -32601, 0.0001);
  a.connectionOpened();
  b.connectionOpened();
  b.connectionOpened();
  b.connectionClosed();
  a.callStarted();
  b.callStarted();
  a.handshakeFailed("timeout");
  b.handshakeFailed("timeout");
  b.handshakeFailed("certificate");
  a.limitRefused("max_batch");
  b.limitRefused("max_batch");
  a.bytesReceived(10);
  b.bytesReceived(5);
  a.bytesSent(7);
  b.bytesSent(1);

  // Snapshots travel by postMessage: they must survive structured cloning.
  const snapshots: MetricsSnapshot[] = structuredClone([a.snapshot(), b.snapshot()]);
  const text = renderMerged(snapshots);
  const all = samples(text);
  assert.deepEqual(
    family(text, "tlsrpc_calls_total"),
    new Map([
      ['tlsrpc_calls_total{method="add",code="-32602"}', 1],
      ['tlsrpc_calls_total{method="add",code="0"}', 3],
      ['tlsrpc_calls_total{method="div",code="-32000"}', 1],
      ['tlsrpc_calls_total{method="mul",code="0"}', 1],
      ['tlsrpc_calls_total{method="unknown",code="-32601"}', 1],
    ]),
  );
  const bucket = (method: string, le: string) =>
    all.get(`tlsrpc_call_duration_seconds_bucket{method="${method}",le="${le}"}`);
  assert.equal(bucket("add", "0.001"), 2);
  assert.equal(bucket("add", "0.5"), 3);
  assert.equal(bucket("add", "10"), 3);
  assert.equal(bucket("add", "+Inf"), 4);
  assert.equal(all.get('tlsrpc_call_duration_seconds_count{method="add"}'), 4);
  assert.ok(Math.abs(all.get('tlsrpc_call_duration_seconds_sum{method="add"}')! - 20.302) < 1e-9);
  assert.equal(all.get("tlsrpc_connections"), 2);
  assert.equal(all.get("tlsrpc_connections_total"), 3);
  assert.equal(all.get("tlsrpc_calls_in_flight"), 2);
  assert.equal(all.get('tlsrpc_handshake_failures_total{reason="timeout"}'), 2);
  assert.equal(all.get('tlsrpc_handshake_failures_total{reason="certificate"}'), 1);
  assert.equal(all.get('tlsrpc_limit_refusals_total{limit="max_batch"}'), 2);
  assert.equal(all.get("tlsrpc_bytes_received_total"), 15);
  assert.equal(all.get("tlsrpc_bytes_sent_total"), 8);
  await assertPromtoolAccepts(text);
});

Deno.test("renderMerged() counts process figures once per process and takes the largest lag", () => {
  const base: MetricsSnapshot = structuredClone(
    (() => {
      using m = quietMetrics();
      return m.snapshot();
    })(),
  );
  const worker = (pid: number, rss: number, fds: number | null, lag: number): MetricsSnapshot => ({
    ...base,
    pid,
    residentMemoryBytes: rss,
    openFds: fds,
    eventLoopLagSeconds: lag,
  });
  const cases: [string, MetricsSnapshot[], number, number | undefined, number][] = [
    ["threads of one process", [worker(1, 100, 10, 0.5), worker(1, 100, 10, 0.1)], 100, 10, 0.5],
    ["two processes", [worker(1, 100, 10, 0), worker(2, 50, 5, 0.25)], 150, 15, 0.25],
    ["no descriptor count", [worker(1, 100, null, 0)], 100, undefined, 0],
  ];
  for (const [what, snapshots, rss, fds, lag] of cases) {
    const all = samples(renderMerged(snapshots));
    assert.equal(all.get("process_resident_memory_bytes"), rss, what);
    assert.equal(all.get("process_open_fds"), fds, what);
    assert.equal(all.get("tlsrpc_event_loop_lag_seconds"), lag, what);
  }
  assert.throws(
    () => renderMerged([{ ...base, buckets: [1, 2, 3] }]),
    (error) => error instanceof RangeError && /^Cannot merge metrics: /.test(error.message),
  );
  // A reason or limit outside the fixed lists adds no label value.
  const stray = renderMerged([{
    ...base,
    handshakeFailures: { ...base.handshakeFailures, weird: 2 },
    limitRefusals: { ...base.limitRefusals, max_cpu: 3 },
  }]);
  assert.equal(samples(stray).get('tlsrpc_handshake_failures_total{reason="other"}'), 2);
  assert.equal(samples(stray).get('tlsrpc_limit_refusals_total{limit="other"}'), 3);
  assert.ok(!stray.includes("weird") && !stray.includes("max_cpu"));
});

Deno.test("renderMerged() reports the process's CPU time, its start and the version", async () => {
  using metrics = quietMetrics();
  let spin = 0;
  for (let i = 0; i < 1e6; i++) spin += i; // some CPU time of its own
  assert.ok(spin > 0);
  const text = metrics.render();
  const all = samples(text);
  assert.ok(all.get("process_cpu_seconds_total")! > 0, text);
  const start = all.get("process_start_time_seconds")!;
  const uptime = performance.now() / 1000;
  assert.ok(Math.abs(Date.now() / 1000 - uptime - start) < 5, `start ${start}`);
  assert.equal(samples(metrics.render()).get("process_start_time_seconds"), start, "steady");
  assert.equal(all.get(`tlsrpc_build_info{version="${VERSION}"}`), 1);
  await assertPromtoolAccepts(text);
  // Two threads of one process count its CPU time once; two processes add theirs.
  const base = metrics.snapshot();
  const twice = samples(renderMerged([
    { ...base, cpuSeconds: 2 },
    { ...base, cpuSeconds: 3 },
    { ...base, pid: base.pid + 1, cpuSeconds: 4, startTimeSeconds: start - 10 },
  ]));
  assert.equal(twice.get("process_cpu_seconds_total"), 7);
  assert.equal(twice.get("process_start_time_seconds"), start - 10, "the earliest start");
});

Deno.test("retireSnapshot() keeps a stopped worker's counters and zeroes its gauges", async () => {
  using a = quietMetrics(["add"]);
  using b = quietMetrics(["add", "mul"]);
  a.callFinished("add", 0, 0.001);
  a.callFinished("add", -32000, 0.02);
  a.connectionOpened();
  a.callStarted();
  a.handshakeFailed("protocol");
  a.limitRefused("max_batch");
  a.bytesReceived(10);
  a.bytesSent(7);
  b.callFinished("add", 0, 0.3);
  b.callFinished("mul", 0, 0.004);
  b.connectionOpened();
  b.connectionClosed();
  b.handshakeFailed("protocol");
  b.bytesSent(1);
  const retired = retireSnapshot(retireSnapshot(undefined, a.snapshot()), b.snapshot());
  const all = samples(renderMerged([retired]));
  assert.deepEqual(
    family(renderMerged([retired]), "tlsrpc_calls_total"),
    new Map([
      ['tlsrpc_calls_total{method="add",code="-32000"}', 1],
      ['tlsrpc_calls_total{method="add",code="0"}', 2],
      ['tlsrpc_calls_total{method="mul",code="0"}', 1],
    ]),
  );
  assert.equal(all.get('tlsrpc_call_duration_seconds_count{method="add"}'), 3);
  assert.equal(all.get('tlsrpc_call_duration_seconds_bucket{method="add",le="0.001"}'), 1);
  assert.equal(all.get("tlsrpc_connections_total"), 2);
  assert.equal(all.get('tlsrpc_handshake_failures_total{reason="protocol"}'), 2);
  assert.equal(all.get('tlsrpc_limit_refusals_total{limit="max_batch"}'), 1);
  assert.equal(all.get("tlsrpc_bytes_received_total"), 10);
  assert.equal(all.get("tlsrpc_bytes_sent_total"), 8);
  assert.equal(all.get("tlsrpc_connections"), 0, "a stopped worker holds no connection");
  assert.equal(all.get("tlsrpc_calls_in_flight"), 0, "nor calls");
  // Beside a live worker, the process figures are the live one's.
  using live = quietMetrics(["add"]);
  live.callFinished("add", 0, 0.001);
  const merged = samples(renderMerged([retired, live.snapshot()]));
  assert.equal(merged.get('tlsrpc_calls_total{method="add",code="0"}'), 3);
  assert.ok(merged.get("process_resident_memory_bytes")! > 0);
  assert.ok(merged.get("process_cpu_seconds_total")! > 0);
  await assertPromtoolAccepts(renderMerged([retired, live.snapshot()]));
});

Deno.test("Metrics samples event loop lag until closed", async () => {
  using metrics = new Metrics([], { lagInterval: 20 });
  await delay(50);
  const blockedUntil = performance.now() + 300;
  while (performance.now() < blockedUntil) {
    // Block the event loop: the next sample comes at least 300 ms after the one before.
  }
  let lag = 0;
  await until(() => {
    lag = samples(metrics.render()).get("tlsrpc_event_loop_lag_seconds")!;
    return lag > 0.2;
  }, "a lag sample after the event loop was blocked");
  metrics.close();
  metrics.close(); // closing twice is harmless
  assert.ok(metrics.render().includes("tlsrpc_event_loop_lag_seconds "));
});

Deno.test("Metrics rejects a bad lagInterval with RangeError", async (t) => {
  for (const lagInterval of [-1, NaN, Infinity]) {
    await t.step(String(lagInterval), () => {
      assert.throws(
        () => new Metrics([], { lagInterval }),
        (error) =>
          error instanceof RangeError && /^Cannot create metrics: lagInterval/.test(error.message),
      );
    });
  }
});

Deno.test("Metrics gives a method of the table named unknown the unknown label, once", async () => {
  using metrics = quietMetrics(["unknown", "add", "add"]);
  metrics.callFinished("unknown", 0, 0.001);
  metrics.callFinished("missing", 0, 0.001);
  metrics.callFinished("add", 0, 0.001);
  const text = metrics.render();
  assert.deepEqual(
    family(text, "tlsrpc_calls_total"),
    new Map([
      ['tlsrpc_calls_total{method="add",code="0"}', 1],
      ['tlsrpc_calls_total{method="unknown",code="0"}', 2],
    ]),
  );
  await assertPromtoolAccepts(text);
});
