import assert from "node:assert/strict";
import { Metrics } from "../_metrics.ts";
import { METRICS_CONTENT_TYPE, serveMetrics } from "../_metrics_http.ts";
import { connectTo, delay, freePort, within, writeAll } from "./_util.ts";
import { startServe } from "./_cli.ts";
import { spawnCollected, tool } from "./_tools.ts";

/** A Prometheus started on loopback that scrapes `target` every second. */
interface Prometheus extends AsyncDisposable {
  /** Its HTTP API's base URL. */
  readonly url: string;
  /** What it has written to stderr so far, for failure messages. */
  log(): string;
}

async function startPrometheus(target: string): Promise<Prometheus> {
  const binary = Deno.env.get("PROMETHEUS") ?? tool("bin/prometheus");
  const dir = await Deno.makeTempDir({ prefix: "tlsrpc_prometheus_" });
  const config = `${dir}/prometheus.yml`;
  await Deno.writeTextFile(
    config,
    [
      "global:",
      "  scrape_interval: 1s",
      "  scrape_timeout: 1s",
      "scrape_configs:",
      "  - job_name: tlsrpc",
      "    static_configs:",
      `      - targets: ["${target}"]`,
      "",
    ].join("\n"),
  );
  const port = freePort();
  const process = spawnCollected(binary, [
    `--config.file=${config}`,
    `--storage.tsdb.path=${dir}/data`,
    `--web.listen-address=127.0.0.1:${port}`,
    "--log.level=warn",
  ], { cwd: dir });
  return {
    url: `http://127.0.0.1:${port}`,
    log: process.log,
    async [Symbol.asyncDispose]() {
      try {
        await process.stop("SIGTERM");
      } finally {
        await Deno.remove(dir, { recursive: true });
      }
    },
  };
}

interface Series {
  metric: Record<string, string>;
  value: [number, string];
}

/** The result of an instant query, or null while Prometheus cannot answer it yet. */
async function query(prometheus: Prometheus, promql: string): Promise<Series[] | null> {
  const url = `${prometheus.url}/api/v1/query?query=${encodeURIComponent(promql)}`;
  try {
    const response = await fetch(url, { signal: AbortSignal.timeout(5_000) });
    const body = await response.json();
    if (!response.ok || body.status !== "success") return null;
    return body.data.result as Series[];
  } catch {
    return null; // still starting
  }
}

/**
 * Polls `promql` until it returns `count` series, at most 120 times a quarter second apart: a
 * guard far above the few seconds that starting and one scrape take.
 */
async function waitForSeries(
  prometheus: Prometheus,
  promql: string,
  count: number,
): Promise<Series[]> {
  let last: Series[] | null = null;
  for (let turn = 0; turn < 120; turn++) {
    last = await query(prometheus, promql);
    if (last !== null && last.length >= count) return last;
    await delay(250);
  }
  assert.fail(
    `Gave up waiting for ${count} series of ${promql}, got ${JSON.stringify(last)}; ` +
      `prometheus said:\n${prometheus.log()}`,
  );
}

/** The values of `series`, by the given labels joined with "|". */
function byLabels(series: Series[], labels: string[]): Map<string, number> {
  return new Map(
    series.map((s) => [labels.map((l) => s.metric[l]).join("|"), Number(s.value[1])]),
  );
}

Deno.test("Prometheus scrapes serveMetrics() and reports the counts the server made", async () => {
  const weird = 'say "hi"\\now';
  using metrics = new Metrics(["add", "div", weird], { lagInterval: 0 });
  for (let i = 0; i < 7; i++) metrics.callFinished("add", 0, 0.002);
  metrics.callFinished("add", -32602, 0.002);
  for (let i = 0; i < 3; i++) metrics.callFinished("div", -32000, 0.3);
  metrics.callFinished("no.such", -32601, 0.0001);
  metrics.callFinished("also.missing", -32601, 0.0001);
  metrics.callFinished(weird, 0, 12);
  metrics.handshakeFailed("timeout");
  metrics.handshakeFailed("certificate");
  metrics.handshakeFailed("certificate");
  metrics.limitRefused("max_frame_bytes");
  await using endpoint = serveMetrics(() => metrics.render(), { port: 0 });
  await using prometheus = await startPrometheus(`127.0.0.1:${endpoint.addr.port}`);

  const calls = await waitForSeries(prometheus, "tlsrpc_calls_total", 5);
  assert.deepEqual(
    byLabels(calls, ["method", "code"]),
    new Map([
      ["add|0", 7],
      ["add|-32602", 1],
      ["div|-32000", 3],
      ["unknown|-32601", 2],
      [`${weird}|0`, 1],
    ]),
  );
  assert.ok(calls.every((s) => s.metric.job === "tlsrpc"));

  const counts = await waitForSeries(prometheus, "tlsrpc_call_duration_seconds_count", 4);
  assert.deepEqual(
    byLabels(counts, ["method"]),
    new Map([["add", 8], ["div", 3], ["unknown", 2], [weird, 1]]),
  );
  const buckets = await waitForSeries(
    prometheus,
    'tlsrpc_call_duration_seconds_bucket{method="div"}',
    15,
  );
  const div = byLabels(buckets, ["le"]);
  assert.equal(div.get("0.25"), 0);
  assert.equal(div.get("0.5"), 3);
  assert.equal(div.get("+Inf"), 3);

  const handshakes = await waitForSeries(prometheus, "tlsrpc_handshake_failures_total > 0", 2);
  assert.deepEqual(
    byLabels(handshakes, ["reason"]),
    new Map([["timeout", 1], ["certificate", 2]]),
  );
  const refusals = await waitForSeries(prometheus, "tlsrpc_limit_refusals_total > 0", 1);
  assert.deepEqual(byLabels(refusals, ["limit"]), new Map([["max_frame_bytes", 1]]));
  const up = await waitForSeries(prometheus, 'up{job="tlsrpc"}', 1);
  assert.equal(up[0]!.value[1], "1");
});

Deno.test("serveMetrics() serves GET /metrics as text format 0.0.4, and nothing else", async (t) => {
  let scrapes = 0;
  let listened: Deno.NetAddr | undefined;
  await using endpoint = serveMetrics(() => `# scrape ${++scrapes}\n`, {
    port: 0,
    onListen: (addr) => listened = addr,
  });
  assert.equal(endpoint.addr.hostname, "127.0.0.1");
  assert.deepEqual(listened, endpoint.addr);
  const base = `http://127.0.0.1:${endpoint.addr.port}`;
  const cases: [method: string, path: string, status: number, body: string | null][] = [
    ["GET", "/metrics", 200, "# scrape 1\n"],
    ["GET", "/metrics?x=1", 200, "# scrape 2\n"],
    ["HEAD", "/metrics", 200, ""],
    ["GET", "/", 404, "Not Found\n"],
    ["GET", "/metrics/", 404, "Not Found\n"],
    ["GET", "/api/v1/metrics", 404, "Not Found\n"],
    ["POST", "/metrics", 405, "Method Not Allowed\n"],
    ["DELETE", "/metrics", 405, "Method Not Allowed\n"],
  ];
  for (const [method, path, status, body] of cases) {
    await t.step(`${method} ${path} is ${status}`, async () => {
      const response = await fetch(base + path, { method });
      assert.equal(response.status, status);
      assert.equal(await response.text(), body);
      if (status === 200) {
        assert.equal(response.headers.get("content-type"), METRICS_CONTENT_TYPE);
      }
      if (status === 405) assert.equal(response.headers.get("allow"), "GET, HEAD");
    });
  }
});

Deno.test("serveMetrics() answers 500 when the source throws, and keeps serving", async () => {
  let fail = true;
  await using endpoint = serveMetrics(
    () => {
      if (fail) throw new Error("worker 2 did not answer");
      return "ok\n";
    },
    { port: 0 },
  );
  const url = `http://127.0.0.1:${endpoint.addr.port}/metrics`;
  const failed = await fetch(url);
  assert.equal(failed.status, 500);
  assert.equal(await failed.text(), "Cannot render metrics: worker 2 did not answer\n");
  fail = false;
  const served = await fetch(url);
  assert.equal(served.status, 200);
  assert.equal(await served.text(), "ok\n");
});

Deno.test("serveMetrics() takes an async source", async () => {
  await using endpoint = serveMetrics(async () => {
    await delay(1);
    return "merged\n";
  }, { port: 0 });
  const response = await fetch(`http://127.0.0.1:${endpoint.addr.port}/metrics`);
  assert.equal(await response.text(), "merged\n");
});

Deno.test("serveMetrics() stops when its signal aborts, and throws the reason when aborted before", async () => {
  const controller = new AbortController();
  const endpoint = serveMetrics(() => "", { port: 0, signal: controller.signal });
  controller.abort();
  await within(endpoint.finished, "the endpoint to stop");
  await assert.rejects(
    fetch(`http://127.0.0.1:${endpoint.addr.port}/metrics`),
    TypeError,
  );

  const reason = new Error("stopped before it started");
  assert.throws(
    () => serveMetrics(() => "", { port: 0, signal: AbortSignal.abort(reason) }),
    (error) => error === reason,
  );
});

Deno.test("serveMetrics() shutdown() stops listening", async () => {
  const endpoint = serveMetrics(() => "", { port: 0 });
  const url = `http://127.0.0.1:${endpoint.addr.port}/metrics`;
  await (await fetch(url)).body?.cancel();
  await endpoint.shutdown();
  await within(endpoint.finished, "the endpoint to stop");
  await assert.rejects(fetch(url), TypeError);
});

/**
 * Polls `promql` until its one series has the value `expected`, as waitForSeries does; resolves
 * with it.
 */
async function waitForValue(
  prometheus: Prometheus,
  promql: string,
  expected: number,
): Promise<void> {
  let last: Series[] | null = null;
  for (let turn = 0; turn < 120; turn++) {
    last = await query(prometheus, promql);
    if (last?.length === 1 && Number(last[0]!.value[1]) === expected) return;
    await delay(250);
  }
  assert.fail(
    `Gave up waiting for ${promql} to be ${expected}, got ${JSON.stringify(last)}; ` +
      `prometheus said:\n${prometheus.log()}`,
  );
}

Deno.test("Prometheus scrapes `serve --workers 2 --metrics`: the counts of a known load, and no counter resets when a worker dies", async () => {
  const metricsPort = freePort();
  await using server = await startServe([
    "tests/fixtures/workload.ts",
    "--port",
    "0",
    "--workers",
    "2",
    "--metrics",
    `127.0.0.1:${metricsPort}`,
    "--cert",
    "testdata/server.pem",
    "--key",
    "testdata/server.key",
  ]);
  await using prometheus = await startPrometheus(`127.0.0.1:${metricsPort}`);
  // A known load on fresh connections, so that both workers count some: per connection a result,
  // a handler's failure and a method that does not exist; and two clients that speak no TLS.
  const connections = 10;
  for (let i = 0; i < connections; i++) {
    await using client = await connectTo(server.port);
    await client.call("burn", 0);
    await assert.rejects(client.call("fail", "on purpose"));
    await assert.rejects(client.call(`no.such.method.${i}`));
  }
  for (let i = 0; i < 2; i++) {
    using plain = await Deno.connect({ hostname: "127.0.0.1", port: server.port });
    await writeAll(plain, new TextEncoder().encode("GET / HTTP/1.1\r\nhost: x\r\n\r\n"));
    await plain.read(new Uint8Array(1024)).catch(() => null); // until the server closes it
  }
  const value = (promql: string, expected: number) => waitForValue(prometheus, promql, expected);
  await value('sum(tlsrpc_calls_total{method="burn",code="0"})', connections);
  await value('sum(tlsrpc_calls_total{method="fail",code="-32000"})', connections);
  // Ten distinct names, one label value.
  await value('count(tlsrpc_calls_total{method="unknown"})', 1);
  await value('sum(tlsrpc_calls_total{method="unknown",code="-32601"})', connections);
  await value('sum(tlsrpc_handshake_failures_total{reason="protocol"})', 2);
  await value("sum(tlsrpc_connections_total)", connections);

  // A worker dies and is replaced; the load goes on. Its counts stay in the sum, so Prometheus
  // sees no counter go down (a reset, which rate() would read as a restart from zero).
  {
    await using client = await connectTo(server.port);
    await client.call("crash");
  }
  await value('sum(tlsrpc_calls_total{method="crash"})', 1);
  await delay(2_500); // a scrape or two while the dead worker waits to start again
  for (let i = 0; i < connections; i++) {
    await using client = await connectTo(server.port);
    await client.call("burn", 0);
  }
  await value('sum(tlsrpc_calls_total{method="burn",code="0"})', 2 * connections);
  await value(
    "sum(resets(tlsrpc_calls_total[5m])) + sum(resets(tlsrpc_connections_total[5m])) + " +
      "sum(resets(tlsrpc_call_duration_seconds_count[5m]))",
    0,
  );
  const stopped = await server.stop();
  assert.equal(stopped.code, 0, stopped.stderr);
  assert.match(stopped.stderr, /\[worker \d\] died/);
});
