// The server's metrics end to end: a known load on real sockets, then the /metrics endpoint's
// counts, checked exactly, and its text checked by promtool.

import assert from "node:assert/strict";
import { serve } from "../server.ts";
import { connect } from "../client.ts";
import { ErrorCode, RpcError } from "../errors.ts";
import { FrameReader } from "../framing.ts";
import { certs, framed, RawClient, request, serverOptions, until, writeAll } from "./_util.ts";
import { assertPromtoolAccepts } from "./_tools.ts";
import { concat } from "./portable/_data.ts";

/** The value of the series `name{labels}` in Prometheus text, or undefined when absent. */
function sample(text: string, name: string, labels = ""): number | undefined {
  const series = labels === "" ? name : `${name}{${labels}}`;
  for (const line of text.split("\n")) {
    if (line.startsWith(`${series} `)) return Number(line.slice(series.length + 1));
  }
  return undefined;
}

async function scrape(addr: { hostname: string; port: number }): Promise<string> {
  const response = await fetch(`http://${addr.hostname}:${addr.port}/metrics`);
  assert.equal(response.status, 200);
  assert.match(response.headers.get("content-type") ?? "", /^text\/plain; version=0\.0\.4/);
  return await response.text();
}

Deno.test("serve({ metrics }) counts a known load exactly and serves it at /metrics", async () => {
  await using server = await serve({
    add: (a: number, b: number) => a + b,
    fail: () => {
      throw new RpcError(4001, "no");
    },
    slow: () => new Promise((resolve) => setTimeout(resolve, 20, "done")),
  }, { ...serverOptions(), metrics: { port: 0 } });
  const addr = server.metricsAddr;
  assert.ok(addr, "a metrics address");
  assert.equal(addr.hostname, "127.0.0.1");
  {
    await using client = await connect({ port: server.addr.port, caCerts: [certs.ca] });
    for (let i = 0; i < 5; i++) assert.equal(await client.call("add", i, 1), i + 1);
    for (let i = 0; i < 2; i++) await assert.rejects(client.call("fail"), RpcError);
    assert.equal(await client.call("slow"), "done");
    // Unknown names, however many, share one label value.
    for (const name of ["nope", "gone", "x".repeat(300)]) {
      await assert.rejects(
        client.call(name),
        (error) => error instanceof RpcError && error.code === ErrorCode.MethodNotFound,
      );
    }
    await assert.rejects(client.call("add", 1, 2, 3), RpcError); // -32602
  }
  {
    // A batch over the limit is a limit refusal.
    await using raw = await RawClient.connect(server.addr.port);
    const batch = Array.from(
      { length: 1025 },
      (_, i) => ({ jsonrpc: "2.0", id: i, method: "add", params: [1, 1] }),
    );
    const answer = await raw.exchange(batch) as { error?: { code: number } };
    assert.equal(answer.error?.code, ErrorCode.InvalidRequest);
  }
  const text = await scrape(addr);
  assert.equal(sample(text, "tlsrpc_calls_total", 'method="add",code="0"'), 5);
  assert.equal(sample(text, "tlsrpc_calls_total", 'method="add",code="-32602"'), 1);
  assert.equal(sample(text, "tlsrpc_calls_total", 'method="fail",code="4001"'), 2);
  assert.equal(sample(text, "tlsrpc_calls_total", 'method="slow",code="0"'), 1);
  // A call that returns a promise is timed until it settles: its 20 ms timer is in its duration.
  assert.ok(
    (sample(text, "tlsrpc_call_duration_seconds_sum", 'method="slow"') ?? 0) >= 0.015,
    "the slow call's time",
  );
  assert.equal(
    sample(text, "tlsrpc_call_duration_seconds_bucket", 'method="slow",le="0.01"'),
    0,
    "not counted as answered at once",
  );
  assert.equal(sample(text, "tlsrpc_calls_total", 'method="unknown",code="-32601"'), 3);
  assert.equal(sample(text, "tlsrpc_call_duration_seconds_count", 'method="add"'), 6);
  assert.equal(sample(text, "tlsrpc_limit_refusals_total", 'limit="max_batch"'), 1);
  assert.ok(!text.includes("nope") && !text.includes("xxxx"), "no unknown name in the labels");
  // The clients (including rpc.hello's connection) have gone.
  assert.equal(sample(text, "tlsrpc_connections_total"), 2);
  assert.ok((sample(text, "tlsrpc_bytes_received_total") ?? 0) > 0);
  assert.ok((sample(text, "tlsrpc_bytes_sent_total") ?? 0) > 0);
  assert.equal(sample(text, "tlsrpc_calls_in_flight"), 0);
  await assertPromtoolAccepts(text);
});

Deno.test("serve() without metrics counts nothing and serves no endpoint", async () => {
  await using server = await serve({ add: (a: number, b: number) => a + b }, serverOptions());
  assert.equal(server.metrics, undefined);
  assert.equal(server.metricsAddr, undefined);
});

Deno.test("serve({ metrics: true }) counts without an endpoint", async () => {
  await using server = await serve({ add: (a: number, b: number) => a + b }, {
    ...serverOptions(),
    metrics: true,
  });
  assert.equal(server.metricsAddr, undefined);
  {
    await using client = await connect({ port: server.addr.port, caCerts: [certs.ca] });
    await client.call("add", 1, 2);
  }
  assert.equal(sample(server.metrics!.render(), "tlsrpc_calls_total", 'method="add",code="0"'), 1);
});

Deno.test("serve({ metrics: true }) counts the bytes each way exactly, and times a call from the read that brought it", async () => {
  await using server = await serve({
    add: (a: number, b: number) => a + b,
    spin: (ms: number) => {
      const end = performance.now() + ms;
      while (performance.now() < end) {
        // Synchronous work: the calls after it in the same read wait for it.
      }
      return ms;
    },
  }, { ...serverOptions(), metrics: true });
  const frames = [
    framed(JSON.stringify(request(1, "add", [1, 2]))),
    framed(JSON.stringify(request(2, "spin", [30]))),
    framed(JSON.stringify(request(3, "add", [2, 3]))),
  ];
  const sent = frames.reduce((total, frame) => total + frame.length, 0);
  let received = 0;
  {
    using conn = await Deno.connectTls({
      hostname: "127.0.0.1",
      port: server.addr.port,
      caCerts: [certs.ca],
    });
    await writeAll(conn, concat(frames));
    // Three answers: read frame by frame, counting every byte.
    const reader = new FrameReader(conn, { onRead: (count) => received += count });
    const answers: { id: number }[] = [];
    while (answers.length < 3) {
      const read = await reader.read();
      assert.ok(read !== null, "the server closed early");
      for (const frame of read) answers.push(JSON.parse(new TextDecoder().decode(frame)));
    }
    assert.deepEqual(answers.map((a) => a.id).sort(), [1, 2, 3]);
  }
  const metrics = server.metrics!;
  await until(() => metrics.snapshot().connections === 0, "the server to see the close");
  const snapshot = metrics.snapshot();
  assert.equal(snapshot.bytesReceived, sent);
  assert.equal(snapshot.bytesSent, received);
  const spin = snapshot.durations.find((d) => d.method === "spin");
  assert.ok(spin !== undefined && spin.sum >= 0.03, `spin took ${spin?.sum} s`);
  const add = snapshot.durations.find((d) => d.method === "add");
  assert.equal(add?.counts.reduce((a, b) => a + b, 0), 2);
});
