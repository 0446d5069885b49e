// serve --workers N, the pool: every worker serves the shared port, a worker that dies comes back,
// metrics are summed over the workers, shutdown drains them all, a worker that cannot start fails
// the start, and log lines come with their worker, level and fields.

import assert from "node:assert/strict";
import { startWorkers, type WorkerLogEntry, type WorkerPool } from "../_workers.ts";
import { connect } from "../client.ts";
import { certs, until, within } from "./_util.ts";

const module = new URL("./fixtures/workload.ts", import.meta.url).href;

async function pool(count: number, logs: string[], metrics = false): Promise<WorkerPool> {
  return await startWorkers({
    count,
    module,
    options: { hostname: "127.0.0.1", port: 0, cert: certs.cert, key: certs.key, metrics },
    log: (line) => void logs.push(line),
  });
}

/** Which workers answer `whoami` over `connections` fresh connections. */
async function servedBy(port: number, connections: number): Promise<Set<string>> {
  const seen = new Set<string>();
  for (let i = 0; i < connections; i++) {
    await using client = await connect({ port, hostname: "127.0.0.1", caCerts: [certs.ca] });
    seen.add(await client.call("whoami") as string);
  }
  return seen;
}

Deno.test("startWorkers() serves one port from every worker, and shutdown() drains them all", async () => {
  const logs: string[] = [];
  const workers = await pool(2, logs);
  try {
    assert.ok(workers.port > 0);
    // The kernel spreads connections over the listeners: over 40 connections both serve.
    const seen = await servedBy(workers.port, 40);
    assert.deepEqual([...seen].sort(), ["worker 1", "worker 2"]);
  } finally {
    await within(workers.shutdown(), "the workers to drain");
  }
  await assert.rejects(
    connect({
      port: workers.port,
      hostname: "127.0.0.1",
      caCerts: [certs.ca],
      connectTimeout: 2000,
    }),
  );
  assert.deepEqual(
    logs.filter((line) => !/^\[worker \d\] /.test(line)),
    [],
    "log lines name their worker",
  );
});

Deno.test("startWorkers() starts a worker that died again, and logs it", async () => {
  const logs: string[] = [];
  const workers = await pool(2, logs);
  try {
    await using client = await connect({
      port: workers.port,
      hostname: "127.0.0.1",
      caCerts: [certs.ca],
    });
    const victim = await client.call("crash") as string;
    // Bounded: the restart takes about a second.
    for (let i = 0; i < 100 && !logs.some((line) => line.includes("died")); i++) {
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
    assert.ok(logs.some((line) => line.startsWith(`[${victim}] died`)), logs.join("\n"));
    let seen = new Set<string>();
    for (let i = 0; i < 20 && seen.size < 2; i++) {
      await new Promise((resolve) => setTimeout(resolve, 200));
      seen = await servedBy(workers.port, 10);
    }
    assert.deepEqual([...seen].sort(), ["worker 1", "worker 2"], "both serve again");
  } finally {
    await within(workers.shutdown(), "the workers to drain");
  }
});

Deno.test("startWorkers() sums the metrics of every worker", async () => {
  const logs: string[] = [];
  const workers = await pool(2, logs, true);
  try {
    for (let i = 0; i < 10; i++) {
      await using client = await connect({
        port: workers.port,
        hostname: "127.0.0.1",
        caCerts: [certs.ca],
      });
      await client.call("burn", 1);
    }
    const text = await workers.metrics();
    const line = text.split("\n").find((l) =>
      l.startsWith('tlsrpc_calls_total{method="burn",code="0"}')
    );
    assert.equal(line?.split(" ")[1], "10", text);
    const connections = text.split("\n").find((l) => l.startsWith("tlsrpc_connections_total "));
    assert.equal(connections?.split(" ")[1], "10");
  } finally {
    await within(workers.shutdown(), "the workers to drain");
  }
});

/** The value of the sample `name` (with its labels) in Prometheus text, or undefined. */
function sampleOf(text: string, name: string): number | undefined {
  const line = text.split("\n").find((l) => l.startsWith(`${name} `));
  return line === undefined ? undefined : Number(line.slice(name.length + 1));
}

Deno.test("startWorkers() keeps the counts of a worker that died: its counters never go down", async () => {
  const logs: string[] = [];
  const workers = await pool(2, logs, true);
  const burns = 'tlsrpc_calls_total{method="burn",code="0"}';
  const crashes = 'tlsrpc_calls_total{method="crash",code="0"}';
  const total = "tlsrpc_connections_total";
  try {
    // Calls on fresh connections, so that both workers count some.
    for (let i = 0; i < 12; i++) {
      await using client = await connect({
        port: workers.port,
        hostname: "127.0.0.1",
        caCerts: [certs.ca],
      });
      await client.call("burn", 1);
    }
    const before = await workers.metrics();
    assert.equal(sampleOf(before, burns), 12, before);
    {
      await using client = await connect({
        port: workers.port,
        hostname: "127.0.0.1",
        caCerts: [certs.ca],
      });
      const victim = await client.call("crash") as string;
      await until(() => logs.some((line) => line.startsWith(`[${victim}] died`)), "the death");
    }
    // Scraped while the dead worker waits for its restart, and after: nothing is lost.
    const during = await workers.metrics();
    assert.equal(sampleOf(during, burns), 12, during);
    assert.equal(sampleOf(during, crashes), 1, during);
    assert.equal(sampleOf(during, total), 13, during);
    // A dead worker's gauges read zero (the live one's connections close as their clients did).
    await until(
      async () => sampleOf(await workers.metrics(), "tlsrpc_connections") === 0,
      "no open connection",
    );
    await until(() => logs.some((line) => line.endsWith("started again")), "the restart");
    for (let i = 0; i < 6; i++) {
      await using client = await connect({
        port: workers.port,
        hostname: "127.0.0.1",
        caCerts: [certs.ca],
      });
      await client.call("burn", 1);
    }
    const after = await workers.metrics();
    assert.equal(sampleOf(after, burns), 18, after);
    assert.equal(sampleOf(after, crashes), 1, after);
    assert.equal(sampleOf(after, total), 19, after);
    assert.equal(
      sampleOf(after, 'tlsrpc_call_duration_seconds_count{method="burn"}'),
      18,
      "the histogram keeps the dead worker's calls too",
    );
  } finally {
    await within(workers.shutdown(), "the workers to drain");
  }
});

Deno.test("startWorkers() rejects when a worker cannot start, and leaves no worker or timer behind", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const broken = `${dir}/broken.ts`;
    await Deno.writeTextFile(broken, 'throw new Error("cannot load");\n');
    const logs: string[] = [];
    await assert.rejects(
      startWorkers({
        count: 2,
        module: new URL(`file://${broken}`).href,
        options: { hostname: "127.0.0.1", port: 0, cert: certs.cert, key: certs.key },
        log: (line) => void logs.push(line),
      }),
      /cannot load/,
    );
    assert.deepEqual(logs, [], "a worker that never started is not restarted");
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("startWorkers() passes each log line with its worker, level and fields", async () => {
  const entries: WorkerLogEntry[] = [];
  const workers = await startWorkers({
    count: 1,
    module,
    options: { hostname: "127.0.0.1", port: 0, cert: certs.cert, key: certs.key },
    log: (line, entry) => {
      assert.equal(line, `[worker ${entry.worker}] ${entry.message}`);
      entries.push(entry);
    },
  });
  try {
    await using client = await connect({
      port: workers.port,
      hostname: "127.0.0.1",
      caCerts: [certs.ca],
    });
    // A runtime error is hidden from the client and logged with the Error behind it.
    await assert.rejects(client.call("fail", "no such thing"));
    await until(() => entries.length > 0, "the log line");
    const [entry] = entries;
    assert.equal(entry?.worker, 1);
    assert.equal(entry?.level, "error");
    assert.equal(entry?.errorName, "NotFound");
    assert.equal(entry?.message, '"fail" failed: no such thing');
    assert.equal(typeof entry?.fields, "object");
  } finally {
    await within(workers.shutdown(), "the workers to drain");
  }
});
