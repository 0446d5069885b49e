// Tests of the client's calls over the in-memory transport, each answer scripted by the test on
// the far end of a memory pair (_client_memory.ts): answers matched to their calls in any order,
// deadlines and aborts (with rpc.cancel), RpcError and the codes it will not trust, the proxy;
// connecting over any dialer, with rpc.hello and the token; and the server's notifications
// reaching their listeners. Reconnects, limits and hostile servers are in the other
// client_memory_*_test.ts files; TLS behaviour is tested on real sockets in client_test.ts.

import assert from "node:assert/strict";
import { connect } from "../client.ts";
import { ConnectionError, RpcError, TimeoutError } from "../errors.ts";
import { type MemoryConnection, memoryPair } from "../_transport_memory.ts";
import { connectMemory, Pairs, waitFor } from "./_client_memory.ts";
import { outcome, rejectsWith, within } from "./_util.ts";

const decoder = new TextDecoder();

// ---------------------------------------------------------------------------------------------
// Calls

Deno.test("RpcClient resolves each call with its own answer when the server answers out of order", async () => {
  await using setup = await connectMemory();
  const { client, server } = setup;
  const calls = [client.call("a", 1), client.callNamed("b", { x: 2 }), client.proxy.c.d(3)];
  const requests = [await server.expect("a"), await server.expect("b"), await server.expect("c.d")];
  assert.deepEqual(requests.map((request) => request.params), [[1], { x: 2 }, [3]]);
  assert.deepEqual(requests.map((request) => request.id), [1, 2, 3]);
  for (const request of [...requests].reverse()) server.reply(request, `${request.method} done`);
  assert.deepEqual(await within(Promise.all(calls), "the calls"), ["a done", "b done", "c.d done"]);
});

Deno.test("RpcClient.call() sends its timeout as the deadline, rejects with TimeoutError, and ignores the late answer", async () => {
  await using setup = await connectMemory();
  const { client, server } = setup;
  const slow = client.withOptions({ timeout: 50 }).call("slow");
  const request = await server.expect("slow");
  assert.ok(request.timeout! > 0 && request.timeout! <= 50, `timeout ${request.timeout}`);
  const error = await rejectsWith(slow, TimeoutError, "the slow call");
  assert.equal(error.message, 'Cannot call "slow": no response within 50 ms');
  server.reply(request, "late");
  const next = client.call("next");
  server.reply(await server.expect("next"), "ok");
  assert.equal(await within(next, "the next call"), "ok");
  assert.equal(client.isClosed, false);
});

Deno.test("aborting a call's signal rejects it with the reason and sends rpc.cancel for its id", async (t) => {
  await using setup = await connectMemory();
  const { client, server } = setup;
  await t.step("aborted while the server works on it", async () => {
    const controller = new AbortController();
    const call = client.withOptions({ signal: controller.signal }).call("work");
    const request = await server.expect("work");
    const reason = new Error("no longer needed");
    controller.abort(reason);
    const result = await within(outcome(call), "the aborted call");
    assert.deepEqual(result, { ok: false, error: reason });
    const cancel = await server.expect("rpc.cancel");
    assert.deepEqual(cancel.params, [request.id]);
    assert.equal(cancel.id, undefined);
  });
  await t.step("aborted before the call: rejects at once, sends nothing", async () => {
    const reason = new Error("too late");
    const result = await outcome(
      client.withOptions({ signal: AbortSignal.abort(reason) }).call("x"),
    );
    assert.deepEqual(result, { ok: false, error: reason });
    const probe = client.call("probe");
    const next = await server.expect("probe"); // not "x"
    server.reply(next, 1);
    assert.equal(await probe, 1);
  });
});

Deno.test("RpcClient answers a request from the server with method not found and ignores answers to ids it never sent", async () => {
  await using setup = await connectMemory();
  const { client, server } = setup;
  server.send({ jsonrpc: "2.0", id: "s1", method: "clientMethod", params: [] });
  const answer = await within(server.receive(), "the answer to the server's request");
  assert.deepEqual(answer, {
    jsonrpc: "2.0",
    id: "s1",
    error: { code: -32601, message: 'Method not found: "clientMethod"' },
  });
  const call = client.call("real");
  const request = await server.expect("real");
  for (const id of [request.id! + 100, String(request.id), -5, 0.5, null]) {
    server.send({ jsonrpc: "2.0", id, result: "stray" });
  }
  server.reply(request, "real");
  assert.equal(await within(call, "the real call"), "real");
  assert.equal(client.isClosed, false);
});

Deno.test("RpcClient.call() rejects with RpcError; a code that is not a safe integer becomes -32603 with the error as received in data", async (t) => {
  await using setup = await connectMemory();
  const { client, server } = setup;
  const cases: [string, string, number, string, unknown][] = [
    ["an integer code", '{"code":1001,"message":"funds","data":{"b":5}}', 1001, "funds", { b: 5 }],
    ["a fractional code", '{"code":1.5,"message":"half"}', -32603, "half", {
      code: 1.5,
      message: "half",
    }],
    ["1e400, parsed as Infinity", '{"code":1e400,"message":"huge"}', -32603, "huge", {
      code: Infinity,
      message: "huge",
    }],
    ["an unsafe integer", '{"code":9007199254740993,"message":"big"}', -32603, "big", {
      code: 9007199254740992,
      message: "big",
    }],
    ["a text code", '{"code":"E1","message":"text"}', -32603, "text", {
      code: "E1",
      message: "text",
    }],
    ["no code, a message that is not text", '{"message":5}', -32603, "Invalid error response", {
      message: 5,
    }],
    [
      "an error that is not an object",
      '"just text"',
      -32603,
      "Invalid error response",
      "just text",
    ],
    ["an array", "[1,2]", -32603, "Invalid error response", [1, 2]],
  ];
  for (const [label, errorJson, code, message, data] of cases) {
    await t.step(label, async () => {
      const call = client.call("fails");
      const request = await server.expect("fails");
      server.send(`{"jsonrpc":"2.0","id":${request.id},"error":${errorJson}}`);
      const error = await rejectsWith(call, RpcError, label);
      assert.equal(error.code, code);
      assert.ok(Number.isSafeInteger(error.code));
      assert.equal(error.message, message);
      assert.deepEqual(error.data, data);
    });
  }
});

Deno.test("RpcClient.proxy calls by property path and hands out the same proxy for the same path", async () => {
  await using setup = await connectMemory();
  const { client, server } = setup;
  assert.equal(client.proxy, client.proxy);
  assert.equal(client.proxy.math.add, client.proxy.math.add);
  assert.notEqual(client.proxy.math, client.proxy.math.add);
  assert.equal(client.proxy.then, undefined);
  const caller = client.withOptions({ timeout: 1_000 });
  assert.equal(caller.proxy.math, caller.proxy.math);
  const call = caller.proxy.math.add(2, 3);
  const request = await server.expect("math.add");
  assert.deepEqual(request.params, [2, 3]);
  server.reply(request, 5);
  assert.equal(await call, 5);
});

// ---------------------------------------------------------------------------------------------
// Connecting: dial, hello, token

Deno.test("connect() runs over any dialer: failures reject with ConnectionError naming the target, a hang with TimeoutError", async (t) => {
  await t.step("a dialer that rejects", async () => {
    const cause = new Error("no route");
    const error = await rejectsWith(
      connect({ hostname: "example", port: 1, dial: () => Promise.reject(cause) }),
      ConnectionError,
      "connect()",
    );
    assert.equal(error.message, 'Cannot connect to "example:1": no route');
    assert.equal(error.cause, cause);
  });
  await t.step("a dialer that throws", async () => {
    await rejectsWith(
      connect({
        dial: () => {
          throw new Error("sync");
        },
      }),
      ConnectionError,
      "connect()",
    );
  });
  await t.step("a dialer that never resolves gets an aborted signal at the timeout", async () => {
    let seen: AbortSignal | undefined;
    const error = await rejectsWith(
      connect({
        connectTimeout: 30,
        dial: (signal) => {
          seen = signal;
          return new Promise(() => {});
        },
      }),
      TimeoutError,
      "connect()",
    );
    assert.match(error.message, /^Cannot connect to "localhost:7443": no connection within 30 ms/);
    assert.equal(seen?.aborted, true);
  });
  await t.step("a connection that comes after the timeout is closed", async () => {
    const [near, far] = memoryPair();
    const late = Promise.withResolvers<MemoryConnection>();
    await rejectsWith(
      connect({ connectTimeout: 10, dial: () => late.promise }),
      TimeoutError,
      "connect()",
    );
    late.resolve(near);
    await waitFor(() => far.isClosed, "the late connection to be closed");
  });
});

Deno.test("connect() offers rich values in rpc.hello and sends extended frames only to a server that takes them", async (t) => {
  await t.step("the server takes them", async () => {
    await using setup = await connectMemory();
    const { client, server } = setup;
    const call = client.call("echo", new Map([[1, 2]]));
    const bytes = await within(server.receiveBytes(), "the call");
    assert.equal(bytes![0], 0x00, "an extended frame starts with its marker");
    assert.match(decoder.decode(bytes!), /"id":1,"method":"echo"/);
    server.send({ jsonrpc: "2.0", id: 1, result: "ok" });
    assert.equal(await within(call, "the call"), "ok");
  });
  await t.step("a plain server answers method not found: plain JSON only", async () => {
    const pairs = new Pairs();
    const connecting = connect({ dial: pairs.dial });
    const server = await pairs.peer(0);
    const hello = await server.expect("rpc.hello");
    assert.deepEqual(hello.params, { extensions: ["rich"] });
    assert.equal(hello.id, 0);
    server.fail(hello, -32601, "Method not found");
    const client = await within(connecting, "connect()");
    await assert.rejects(client.call("echo", new Map()), TypeError);
    assert.throws(() => client.notify("echo", 1n), TypeError);
    server.close();
    await client.close();
  });
  await t.step("richValues: false sends no hello: the first frame is the call", async () => {
    await using setup = await connectMemory({ richValues: false });
    const { client, server } = setup;
    const call = client.call("first");
    server.reply(await server.expect("first"), 1);
    assert.equal(await call, 1);
  });
});

Deno.test("connect() presents the token with rpc.auth after the hello and fails when the server refuses it", async (t) => {
  await t.step("accepted", async () => {
    const pairs = new Pairs();
    const connecting = connect({ dial: pairs.dial, token: "s3cret" });
    const server = await pairs.peer(0);
    await server.hello();
    const auth = await server.expect("rpc.auth");
    assert.deepEqual(auth.params, ["s3cret"]);
    assert.equal(auth.id, -1);
    server.reply(auth, true);
    const client = await within(connecting, "connect()");
    server.close();
    await client.close();
  });
  await t.step("refused", async () => {
    const pairs = new Pairs();
    const connecting = outcome(connect({ dial: pairs.dial, token: "wrong" }));
    const server = await pairs.peer(0);
    await server.hello();
    server.fail(await server.expect("rpc.auth"), -32005, "Authentication failed");
    const result = await within(connecting, "connect()");
    assert.ok(!result.ok && result.error instanceof ConnectionError, JSON.stringify(result));
    assert.equal(
      result.error.message,
      'Cannot connect to "localhost:7443": the server refused the token',
    );
    assert.doesNotMatch(result.error.message, /wrong/);
    await within(server.closedByClient(), "the connection to close");
  });
});

Deno.test("connect() rejects with TimeoutError when the hello goes unanswered, and with the signal's reason when aborted during it", async (t) => {
  await t.step("unanswered", async () => {
    const pairs = new Pairs();
    const connecting = outcome(connect({ dial: pairs.dial, connectTimeout: 50 }));
    const server = await pairs.peer(0);
    await server.expect("rpc.hello");
    const result = await within(connecting, "connect()");
    assert.ok(!result.ok && result.error instanceof TimeoutError, String(result));
    assert.match(result.error.message, /no answer within 50 ms/);
    await within(server.closedByClient(), "the connection to close");
  });
  await t.step("aborted", async () => {
    const pairs = new Pairs();
    const controller = new AbortController();
    const connecting = outcome(
      connect({ dial: pairs.dial, connectTimeout: 60_000, signal: controller.signal }),
    );
    const server = await pairs.peer(0);
    await server.expect("rpc.hello");
    const reason = new Error("changed my mind");
    controller.abort(reason);
    assert.deepEqual(await within(connecting, "connect()", 1_000), { ok: false, error: reason });
    await within(server.closedByClient(), "the connection to close");
  });
});

// ---------------------------------------------------------------------------------------------
// Notifications

Deno.test("RpcClient.on() listeners get the server's notifications until they unsubscribe", async () => {
  await using setup = await connectMemory();
  const { client, server } = setup;
  const seen: unknown[][] = [];
  const stop = client.on("progress", (...params) => void seen.push(params));
  client.on("other", () => assert.fail("another method's listener ran"));
  server.send({ jsonrpc: "2.0", method: "progress", params: [1, 3] });
  server.send({ jsonrpc: "2.0", method: "progress", params: { done: 2 } });
  server.send({ jsonrpc: "2.0", method: "progress" });
  server.send({ jsonrpc: "2.0", method: "unheard", params: [1] });
  await waitFor(() => seen.length === 3, "three notifications");
  assert.deepEqual(seen, [[1, 3], [{ done: 2 }], []]);
  stop();
  server.send({ jsonrpc: "2.0", method: "progress", params: [3, 3] });
  const call = client.call("sync");
  server.reply(await server.expect("sync"), null);
  await call;
  assert.equal(seen.length, 3);
});

Deno.test("a listener that throws or rejects goes to onListenerError; the other listeners and the connection carry on", async () => {
  const reported: [unknown, string][] = [];
  await using setup = await connectMemory({
    onListenerError: (error, method) => void reported.push([error, method]),
  });
  const { client, server } = setup;
  const thrown = new Error("listener bug");
  const rejected = new Error("async listener bug");
  const seen: unknown[] = [];
  client.on("news", () => {
    throw thrown;
  });
  client.on("news", async () => {
    await Promise.resolve();
    throw rejected;
  });
  client.on("news", (item) => void seen.push(item));
  server.send({ jsonrpc: "2.0", method: "news", params: ["a"] });
  await waitFor(() => reported.length === 2, "both errors reported");
  assert.deepEqual(seen, ["a"]);
  assert.deepEqual(reported, [[thrown, "news"], [rejected, "news"]]);
  const call = client.call("still");
  server.reply(await server.expect("still"), "fine");
  assert.equal(await call, "fine");
});

Deno.test("a notification with more than 1 024 params reaches no listener and is reported, instead of being spread into a call", async (t) => {
  await t.step("to onListenerError", async () => {
    const reported: [unknown, string][] = [];
    await using setup = await connectMemory({
      onListenerError: (error, method) => void reported.push([error, method]),
    });
    const { client, server } = setup;
    let calls = 0;
    client.on("flood", () => void calls++);
    // 90 000: under the codec's cap on values a message holds, far over the listeners' limit.
    server.send(`{"jsonrpc":"2.0","method":"flood","params":[${"0,".repeat(89_999)}0]}`);
    server.send({ jsonrpc: "2.0", method: "flood", params: Array(1024).fill(0) });
    await waitFor(() => reported.length === 1 && calls === 1, "the report and the 1 024 one");
    const [error, method] = reported[0]!;
    assert.equal(method, "flood");
    assert.ok(error instanceof RangeError);
    assert.equal(
      error.message,
      'Cannot deliver notification "flood": 90000 params exceed the limit of 1024',
    );
    assert.equal(client.isClosed, false);
  });
  await t.step("to console.error by default, never rethrown", async () => {
    const logged: unknown[][] = [];
    const original = console.error;
    console.error = (...args: unknown[]) => void logged.push(args);
    try {
      await using setup = await connectMemory();
      const { client, server } = setup;
      client.on("boom", () => {
        throw new Error("bug");
      });
      server.send({ jsonrpc: "2.0", method: "boom", params: [] });
      await waitFor(() => logged.length === 1, "the log line");
      assert.match(String(logged[0]![0]), /A listener of notification "boom" threw/);
    } finally {
      console.error = original;
    }
  });
});
