// Tests of tracing (_trace.ts): the W3C traceparent on its own, then whole processes run with
// Deno's OpenTelemetry on (OTEL_DENO=true) or off, whose spans an OTLP receiver in this test
// collects, and whose requests a fake server records. OpenTelemetry is decided when a process
// starts, so every case that depends on it runs in a subprocess of its own.

import assert from "node:assert/strict";
import { parseTraceparent, traceparentOf, type TraceSpan } from "../_trace.ts";
import { fakeTlsServer, root, until, within } from "./_util.ts";

const decoder = new TextDecoder();
const fixture = "tests/fixtures/traced_calls.ts";

// --- the traceparent -----------------------------------------------------------------------------

Deno.test("parseTraceparent() takes version 00 exactly and ignores anything else", async (t) => {
  const trace = "0af7651916cd43dd8448eb211c80319c";
  const span = "b7ad6b7169203331";
  const cases: [string, unknown, boolean][] = [
    ["a sampled parent", `00-${trace}-${span}-01`, true],
    ["an unsampled parent", `00-${trace}-${span}-00`, true],
    ["uppercase hex", `00-${trace.toUpperCase()}-${span}-01`, false],
    ["an all-zero trace id", `00-${"0".repeat(32)}-${span}-01`, false],
    ["an all-zero span id", `00-${trace}-${"0".repeat(16)}-01`, false],
    ["another version", `01-${trace}-${span}-01`, false],
    ["version ff", `ff-${trace}-${span}-01`, false],
    ["a member too many", `00-${trace}-${span}-01-00`, false],
    ["a short trace id", `00-${trace.slice(1)}-${span}-01`, false],
    ["a trailing newline", `00-${trace}-${span}-01\n`, false],
    ["spaces around", ` 00-${trace}-${span}-01`, false],
    ["not hex", `00-${trace.replace("a", "g")}-${span}-01`, false],
    ["a number", 42, false],
    ["null", null, false],
    ["an object", { traceId: trace }, false],
    ["a long string", "0".repeat(1 << 20), false],
  ];
  for (const [name, value, valid] of cases) {
    await t.step(name, () => {
      const parent = parseTraceparent(value);
      if (!valid) return assert.equal(parent, undefined);
      assert.deepEqual(parent, {
        traceId: trace,
        spanId: span,
        traceFlags: parseInt((value as string).slice(-2), 16),
        isRemote: true,
      });
    });
  }
});

Deno.test("traceparentOf() writes a span's context as parseTraceparent() reads it", () => {
  const context = { traceId: "4bf92f3577b34da6a3ce929d0e0e4736", spanId: "00f067aa0ba902b7" };
  const span = { spanContext: () => ({ ...context, traceFlags: 1 }) } as unknown as TraceSpan;
  const value = traceparentOf(span);
  assert.equal(value, "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01");
  assert.deepEqual(parseTraceparent(value), { ...context, traceFlags: 1, isRemote: true });
});

// --- helpers for subprocesses -------------------------------------------------------------------

/** A span as an OTLP/JSON export carries it, its attributes flattened to values. */
interface Span {
  traceId: string;
  spanId: string;
  parentSpanId: string;
  name: string;
  /** OTLP's numbering: 2 server, 3 client. */
  kind: number;
  status: { code?: number; message?: string };
  attributes: Record<string, string | number | boolean>;
}

const SERVER = 2;
const CLIENT = 3;

type OtlpValue = { stringValue?: string; intValue?: string | number; boolValue?: boolean };

/** Deno's OTLP exporter's destination: collects the spans it posts, answers everything else. */
function otlpReceiver(): AsyncDisposable & { endpoint: string; spans: Span[] } {
  const spans: Span[] = [];
  const server = Deno.serve(
    { hostname: "127.0.0.1", port: 0, onListen() {} },
    async (request) => {
      const body = await request.text();
      if (new URL(request.url).pathname === "/v1/traces") {
        const { resourceSpans = [] } = JSON.parse(body);
        for (const resource of resourceSpans) {
          for (const scope of resource.scopeSpans ?? []) {
            for (const span of scope.spans ?? []) spans.push(flatten(span));
          }
        }
      }
      return Response.json({});
    },
  );
  return {
    endpoint: `http://127.0.0.1:${server.addr.port}`,
    spans,
    [Symbol.asyncDispose]: () => server.shutdown(),
  };
}

function flatten(span: Span & { attributes: { key: string; value: OtlpValue }[] }): Span {
  const attributes: Span["attributes"] = {};
  for (const { key, value } of span.attributes) {
    attributes[key] = value.intValue !== undefined
      ? Number(value.intValue)
      : value.stringValue ?? value.boolValue ?? JSON.stringify(value);
  }
  return { ...span, attributes };
}

/**
 * Runs the fixture with this process's environment, minus every OTEL_ variable, plus `env`: so
 * that OpenTelemetry is on only when `env` says so, whatever the test runner has.
 */
async function runFixture(args: string[], env: Record<string, string>): Promise<string> {
  const inherited = Object.entries(Deno.env.toObject()).filter(([key]) => !/^OTEL_/.test(key));
  const child = new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", fixture, ...args],
    cwd: root.pathname,
    clearEnv: true,
    env: { ...Object.fromEntries(inherited), ...env },
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const output = await within(child.output(), `the fixture ${args.join(" ")}`, 60_000);
  const stderr = decoder.decode(output.stderr);
  assert.equal(output.code, 0, `the fixture failed:\n${stderr}`);
  return decoder.decode(output.stdout);
}

/** The environment that turns Deno's OpenTelemetry on, exporting OTLP/JSON to `endpoint`. */
function otel(endpoint: string): Record<string, string> {
  return {
    OTEL_DENO: "true",
    OTEL_EXPORTER_OTLP_ENDPOINT: endpoint,
    OTEL_EXPORTER_OTLP_PROTOCOL: "http/json",
    OTEL_SERVICE_NAME: "tlsrpc-trace-test",
  };
}

/** The one span that `predicate` picks. */
function only(spans: Span[], what: string, predicate: (span: Span) => boolean): Span {
  const found = spans.filter(predicate);
  assert.equal(found.length, 1, `expected one ${what}, found ${found.length}`);
  return found[0]!;
}

// --- with OpenTelemetry on, and off --------------------------------------------------------------

Deno.test("a call's client and server spans share a trace, the server's child of the client's", async () => {
  await using receiver = otlpReceiver();
  const printed = await runFixture(["spans"], otel(receiver.endpoint));
  const { front, fail, malformed, port } = JSON.parse(printed);
  assert.equal(front, "5");
  assert.equal(fail, 4001);
  assert.deepEqual(malformed, { jsonrpc: "2.0", id: "raw-1", result: 3 });
  const { spans } = receiver;
  // The process has exited, and Deno exports what is left when it exits; the wait is a guard.
  await until(() => spans.filter((span) => span.attributes["rpc.system"]).length >= 5, "spans");
  const rpc = spans.filter((span) => span.attributes["rpc.system"] === "jsonrpc");

  // A Deno.serve handler made the call: its span is the client span's parent.
  const client = only(
    rpc,
    "client span of math.add",
    (s) => s.kind === CLIENT && s.name === "math.add",
  );
  const httpServer = only(
    spans,
    "parent of the client span",
    (s) => s.spanId === client.parentSpanId,
  );
  assert.equal(httpServer.kind, SERVER);
  assert.equal(httpServer.attributes["url.path"], "/front");
  assert.equal(httpServer.traceId, client.traceId);
  assert.deepEqual(client.attributes, {
    "rpc.system": "jsonrpc",
    "rpc.method": "math.add",
    "rpc.jsonrpc.version": "2.0",
    "rpc.jsonrpc.request_id": client.attributes["rpc.jsonrpc.request_id"],
    "server.address": "127.0.0.1",
    "server.port": port,
  });
  assert.match(String(client.attributes["rpc.jsonrpc.request_id"]), /^[1-9]\d*$/);
  assert.equal(client.status.code ?? 0, 0);

  const server = only(rpc, "server span of math.add", (s) => s.parentSpanId === client.spanId);
  assert.equal(server.kind, SERVER);
  assert.equal(server.name, "math.add");
  assert.equal(server.traceId, client.traceId);
  assert.deepEqual(server.attributes, {
    "rpc.system": "jsonrpc",
    "rpc.method": "math.add",
    "rpc.jsonrpc.version": "2.0",
    "rpc.jsonrpc.request_id": client.attributes["rpc.jsonrpc.request_id"],
    "network.peer.address": "127.0.0.1",
    "network.peer.port": server.attributes["network.peer.port"],
  });
  assert.equal(typeof server.attributes["network.peer.port"], "number");
  assert.equal(server.status.code ?? 0, 0);

  // The handler's fetch is a child of the server span.
  const leaf = only(spans, "fetch made by the handler", (s) => s.parentSpanId === server.spanId);
  assert.equal(leaf.kind, CLIENT);
  assert.equal(leaf.attributes["url.path"], "/leaf");
  assert.equal(leaf.traceId, client.traceId);

  // An error response: both spans are errors, with its code and message.
  const failed = only(
    rpc,
    "client span of math.fail",
    (s) => s.kind === CLIENT && s.name === "math.fail",
  );
  const failedServer = only(
    rpc,
    "server span of math.fail",
    (s) => s.parentSpanId === failed.spanId,
  );
  for (const span of [failed, failedServer]) {
    assert.equal(span.traceId, failed.traceId);
    assert.equal(span.status.code, 2);
    assert.equal(span.status.message, "No luck");
    assert.equal(span.attributes["rpc.jsonrpc.error_code"], 4001);
    assert.equal(span.attributes["rpc.jsonrpc.error_message"], "No luck");
    assert.equal(span.attributes["error.type"], "4001");
  }
  assert.equal(failedServer.kind, SERVER);
  assert.equal(failed.parentSpanId, "", "a call made outside any span starts a trace");

  // A malformed traceparent is ignored: the call is answered, and its span starts a trace.
  const orphan = only(
    rpc,
    "server span of the raw request",
    (s) => s.attributes["rpc.jsonrpc.request_id"] === "raw-1",
  );
  assert.equal(orphan.parentSpanId, "");
  assert.notEqual(orphan.traceId, "0af7651916cd43dd8448eb211c80319c");
  assert.equal(orphan.status.code ?? 0, 0);
});

Deno.test("the client sends a traceparent only when OpenTelemetry is on", async (t) => {
  const frames: string[] = [];
  await using server = fakeTlsServer(async (peer) => {
    for (let text = await peer.receiveText(); text !== null; text = await peer.receiveText()) {
      const message = JSON.parse(text);
      if (message.method === "math.add") frames.push(text);
      if (message.id === undefined) continue;
      const result = message.method === "rpc.hello" ? { extensions: [] } : 5;
      await peer.send({ jsonrpc: "2.0", id: message.id, result });
    }
  });
  await t.step("off: the request has no member beyond JSON-RPC's", async () => {
    frames.length = 0;
    assert.equal(await runFixture(["call", String(server.port)], {}), "5\n");
    assert.equal(frames.length, 1);
    assert.deepEqual(Object.keys(JSON.parse(frames[0]!)), ["jsonrpc", "id", "method", "params"]);
    assert.doesNotMatch(frames[0]!, /traceparent/);
  });
  await t.step("on: the traceparent names the client span", async () => {
    frames.length = 0;
    await using receiver = otlpReceiver();
    const printed = await runFixture(["call", String(server.port)], otel(receiver.endpoint));
    assert.equal(printed, "5\n");
    assert.equal(frames.length, 1);
    const { traceparent } = JSON.parse(frames[0]!);
    assert.match(traceparent, /^00-[0-9a-f]{32}-[0-9a-f]{16}-01$/);
    const [, traceId, spanId] = traceparent.split("-");
    await until(() => receiver.spans.some((span) => span.spanId === spanId), "the client span");
    const span = receiver.spans.find((span) => span.spanId === spanId)!;
    assert.equal(span.traceId, traceId);
    assert.equal(span.kind, CLIENT);
    assert.equal(span.name, "math.add");
  });
});
