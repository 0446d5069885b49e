// Tests of the client on real TLS sockets: against the tlsrpc server, and against small hand-made
// TLS and TCP servers that misbehave in ways the real server never would.

import assert from "node:assert/strict";
import { connect, type ConnectOptions, type RpcClient } from "../client.ts";
import { ConnectionError, RpcError, TimeoutError } from "../errors.ts";
import {
  certs,
  connectTo,
  delay,
  fakeTlsServer,
  framed,
  type RawClient,
  startServer,
  within as settles,
} from "./_util.ts";
import * as AttrWrapper from "../attr_wrapper.ts";

// ---------------------------------------------------------------------------------------------
// Helpers

/** Asserts that `promise` rejects with a ConnectionError, without hanging, and returns it. */
async function rejectsWithConnectionError(
  promise: Promise<unknown>,
  what: string,
): Promise<ConnectionError> {
  const error = await settles(promise.then(() => undefined, (error: unknown) => error), what);
  assert.ok(error instanceof ConnectionError, `${what}: expected ConnectionError, got ${error}`);
  assert.equal(error.name, "ConnectionError");
  assert.match(error.message, /^Cannot /);
  return error;
}

/** Asserts that every one of `calls` rejects with a ConnectionError; handles all of them at once. */
function allRejectWithConnectionError(calls: Promise<unknown>[]): Promise<ConnectionError[]> {
  return Promise.all(
    calls.map((call, i) => rejectsWithConnectionError(call, `pending call ${i}`)),
  );
}

/** A port on 127.0.0.1 (or `hostname`) with nothing listening on it. */
function freePort(hostname = "127.0.0.1"): number {
  const listener = Deno.listen({ hostname, port: 0 });
  const { port } = listener.addr;
  listener.close();
  return port;
}

/** Reads frames until `count` requests have arrived, and returns them parsed. */
async function readRequests(
  peer: RawClient,
  count: number,
): Promise<{ id?: number; method: string; params?: unknown }[]> {
  const requests: { id?: number; method: string; params?: unknown }[] = [];
  while (requests.length < count) {
    const text = await peer.receiveText();
    if (text === null) break;
    requests.push(JSON.parse(text));
  }
  return requests;
}

/** Whether this host can listen on IPv6 loopback. */
const hasIpv6 = (() => {
  try {
    Deno.listen({ hostname: "::1", port: 0 }).close();
    return true;
  } catch {
    return false;
  }
})();

const handlers = {
  add: (a: number, b: number) => a + b,
  echo: (...params: unknown[]) => params,
  ping: () => "pong",
  nothing: () => {},
  greet: (params: { name: string; greeting?: string }) =>
    `${params.greeting ?? "hello"}, ${params.name}`,
  stats: {
    range: (...values: number[]) => ({ min: Math.min(...values), max: Math.max(...values) }),
    deep: { answer: () => 42 },
  },
};

// ---------------------------------------------------------------------------------------------
// Calls

Deno.test("RpcClient.call() sends by-position params and resolves with the result", async (t) => {
  await using server = await startServer(handlers);
  await using client = await connectTo(server.addr.port);
  const large = "é".repeat(60_000); // 120 KB of UTF-8 each way: larger than a TLS record
  const cases: [string, string, unknown[], unknown][] = [
    ["two numbers", "add", [2, 3], 5],
    ["no params", "ping", [], "pong"],
    ["JSON values of every kind", "echo", [null, true, 1.5, "ü😀", [1, [2]], { a: { b: null } }], [
      null,
      true,
      1.5,
      "ü😀",
      [1, [2]],
      { a: { b: null } },
    ]],
    ["a dotted method name", "stats.range", [3, 1, 2], { min: 1, max: 3 }],
    ["a handler that returns nothing", "nothing", [], null],
    ["params larger than a TLS record", "echo", [large], [large]],
  ];
  for (const [label, method, params, expected] of cases) {
    await t.step(label, async () => {
      assert.deepEqual(await client.call(method, ...params), expected);
    });
  }
});

Deno.test("RpcClient.callNamed() passes by-name params to the handler as one object", async (t) => {
  await using server = await startServer(handlers);
  await using client = await connectTo(server.addr.port);
  await t.step("with every member", async () => {
    assert.equal(await client.callNamed("greet", { name: "ada", greeting: "hi" }), "hi, ada");
  });
  await t.step("with an optional member left out", async () => {
    assert.equal(await client.callNamed("greet", { name: "ada" }), "hello, ada");
  });
  await t.step("to a rest-params handler, as one object", async () => {
    assert.deepEqual(await client.callNamed("echo", { x: 1 }), [{ x: 1 }]);
  });
});

Deno.test("RpcClient.proxy calls remote methods by property path and is not a thenable", async (t) => {
  await using server = await startServer(handlers);
  await using client = await connectTo(server.addr.port);
  await t.step("a top-level method", async () => {
    assert.equal(await client.proxy.add!(2, 3), 5);
  });
  await t.step("a nested method", async () => {
    assert.deepEqual(await client.proxy.stats!.range!(5, -1, 3), { min: -1, max: 5 });
    assert.equal(await client.proxy.stats!.deep!.answer!(), 42);
  });
  await t.step("then is undefined at every level", () => {
    assert.equal(typeof (client.proxy as Record<string, unknown>).then, "undefined");
    assert.equal(typeof (client.proxy.stats as Record<string, unknown>).then, "undefined");
  });
  await t.step("awaiting the proxy yields something that is not a thenable", async () => {
    const awaited: unknown = await settles(Promise.resolve(client.proxy), "await client.proxy");
    assert.equal(typeof (awaited as Record<string, unknown>).then, "undefined");
    const nested: unknown = await settles(
      Promise.resolve(client.proxy.stats),
      "await client.proxy.stats",
    );
    assert.equal(typeof (nested as Record<string, unknown>).then, "undefined");
  });
  await t.step("an unknown method rejects with RpcError", async () => {
    await assert.rejects(
      client.proxy.nope!(),
      (error) => error instanceof RpcError && error.code === -32601,
    );
  });
});

Deno.test("RpcClient.notify() sends a request without an id that the handler observes", async (t) => {
  await t.step("against the server", async () => {
    const seen = Promise.withResolvers<unknown[]>();
    await using server = await startServer({
      log: (...params: unknown[]) => seen.resolve(params),
      ping: () => "pong",
    });
    await using client = await connectTo(server.addr.port);
    assert.equal(client.notify("log", "started", 1), undefined);
    assert.deepEqual(await settles(seen.promise, "the notification"), ["started", 1]);
    // Nothing answers a notification; the next call gets its own response.
    assert.equal(await client.call("ping"), "pong");
  });
  await t.step("on the wire", async () => {
    const received = Promise.withResolvers<unknown[]>();
    await using server = fakeTlsServer(async (peer) => {
      received.resolve(await readRequests(peer, 1));
      await peer.receiveText();
    });
    await using client = await connectTo(server.port, { richValues: false });
    client.notify("log", "started");
    assert.deepEqual(await settles(received.promise, "the notification"), [
      { jsonrpc: "2.0", method: "log", params: ["started"] },
    ]);
  });
});

Deno.test("RpcClient.call() resolves 500 concurrent calls each with its own result, in any order", async () => {
  const order: number[] = [];
  await using server = await startServer({
    async slow(i: number, ms: number) {
      await delay(ms);
      order.push(i);
      return { i, square: i * i };
    },
  });
  await using client = await connectTo(server.addr.port);
  const calls = Array.from(
    { length: 500 },
    (_, i) => client.call("slow", i, Math.floor(Math.random() * 21)),
  );
  const results = await settles(Promise.all(calls), "500 calls", 10_000);
  for (const [i, result] of results.entries()) assert.deepEqual(result, { i, square: i * i });
  assert.notDeepEqual(order, [...order].sort((a, b) => a - b), "the server answered in order");
});

Deno.test("RpcClient.call() rejects with RpcError carrying the server's code, message and data", async (t) => {
  await using server = await startServer({
    coded() {
      throw new RpcError(1001, "Insufficient funds", { data: { balance: 5 } });
    },
    plain() {
      throw new RangeError("Cannot withdraw: amount is negative");
    },
    async rejects() {
      await Promise.resolve();
      throw new TypeError("bad type");
    },
    ownCode() {
      throw Object.assign(new Error("teapot"), { code: 418 });
    },
    one: (a: number) => a,
  });
  await using client = await connectTo(server.addr.port);
  const cases: [string, () => Promise<unknown>, number, string | RegExp, unknown][] = [
    [
      "an RpcError thrown by the handler",
      () => client.call("coded"),
      1001,
      "Insufficient funds",
      { balance: 5 },
    ],
    [
      "a built-in error thrown by the handler",
      () => client.call("plain"),
      -32000,
      "Cannot withdraw: amount is negative",
      { name: "RangeError" },
    ],
    ["a rejection of an async handler", () => client.call("rejects"), -32000, "bad type", {
      name: "TypeError",
    }],
    ["an error with a code of its own", () => client.call("ownCode"), 418, "teapot", {
      name: "Error",
    }],
    ["an unknown method", () => client.call("missing"), -32601, /missing/, undefined],
    ["too many params", () => client.call("one", 1, 2), -32602, /at most 1/, undefined],
  ];
  for (const [label, call, code, message, data] of cases) {
    await t.step(label, async () => {
      const error = await call().then(() => undefined, (error: unknown) => error);
      assert.ok(error instanceof RpcError, `expected RpcError, got ${error}`);
      assert.equal(error.name, "RpcError");
      assert.equal(error.code, code);
      if (typeof message === "string") assert.equal(error.message, message);
      else assert.match(error.message, message);
      if (data !== undefined) assert.deepEqual(error.data, data);
    });
  }
  await t.step("the connection stays usable", async () => {
    assert.equal(await client.call("one", 7), 7);
  });
});

Deno.test("RpcClient.call() rejects with TimeoutError after the client's timeout while other calls succeed", async () => {
  const gate = Promise.withResolvers<string>();
  await using server = await startServer({ hang: () => gate.promise, fast: () => "fast" });
  await using client = await connectTo(server.addr.port, { timeout: 100 });
  const hanging = client.call("hang");
  const fast = client.call("fast");
  const error = await settles(hanging.then(() => undefined, (error: unknown) => error), "hang");
  assert.ok(error instanceof TimeoutError, `expected TimeoutError, got ${error}`);
  assert.equal(error.name, "TimeoutError");
  assert.match(error.message, /^Cannot call "hang"/);
  assert.equal(await fast, "fast");
  // The late response to the timed-out call is ignored, and the connection stays usable.
  gate.resolve("late");
  assert.equal(await client.call("fast"), "fast");
  assert.equal(client.isClosed, false);
});

// ---------------------------------------------------------------------------------------------
// The connection going away

Deno.test("RpcClient rejects every pending call with ConnectionError when the server goes away", async (t) => {
  await t.step("server.shutdown() with calls that never finish", async () => {
    let started = 0;
    const allStarted = Promise.withResolvers<void>();
    await using server = await startServer({
      hang: () => {
        if (++started === 3) allStarted.resolve();
        return new Promise(() => {});
      },
    }, { shutdownTimeout: 50 });
    await using client = await connectTo(server.addr.port);
    const pending = [client.call("hang"), client.call("hang"), client.call("hang")];
    await settles(allStarted.promise, "the three calls reaching the server");
    const stopping = server.shutdown();
    await allRejectWithConnectionError(pending);
    await settles(stopping, "server.shutdown()");
    await settles(client.closed, "client.closed");
    assert.equal(client.isClosed, true);
    const later = await rejectsWithConnectionError(client.call("hang"), "a later call");
    assert.match(later.message, /^Cannot call "hang"/);
    await rejectsWithConnectionError(client.callNamed("hang", {}), "a later callNamed");
    assert.throws(() => client.notify("hang"), ConnectionError);
  });

  await t.step("a TLS server that closes the connection after reading the calls", async () => {
    await using server = fakeTlsServer(async (peer) => {
      await readRequests(peer, 3);
    });
    await using client = await connectTo(server.port, { timeout: 10_000, richValues: false });
    const pending = [client.call("a"), client.proxy.b!(), client.callNamed("c", {})];
    await allRejectWithConnectionError(pending);
    await settles(client.closed, "client.closed");
    assert.equal(client.isClosed, true);
    await rejectsWithConnectionError(client.call("a"), "a later call");
  });
});

Deno.test("RpcClient rejects pending calls with the server's reason when it answers with id null and closes", async (t) => {
  await t.step("a hand-made server", async () => {
    await using server = fakeTlsServer(async (peer) => {
      await readRequests(peer, 2);
      await peer.send(
        '{"jsonrpc":"2.0","id":null,"error":{"code":-32600,"message":"Invalid Request: x"}}',
      );
    });
    await using client = await connectTo(server.port, { richValues: false });
    const pending = [client.call("a"), client.call("b")];
    for (const error of await allRejectWithConnectionError(pending)) {
      assert.match(error.message, /Invalid Request: x/);
      assert.ok(error.cause instanceof RpcError, `the cause is ${error.cause}`);
      assert.equal(error.cause.code, -32600);
      assert.equal(error.cause.message, "Invalid Request: x");
    }
    assert.equal(client.isClosed, true);
  });

  await t.step("the server, refusing a frame over its limit", async () => {
    const logs: string[] = [];
    await using server = await startServer(handlers, { maxFrameBytes: 1024, logs });
    await using client = await connectTo(server.addr.port);
    const error = await rejectsWithConnectionError(
      client.call("echo", "x".repeat(2000)),
      "an oversized call",
    );
    assert.match(error.message, /exceeds the limit of 1024 bytes/);
    assert.ok(error.cause instanceof RpcError, `the cause is ${error.cause}`);
    assert.equal(error.cause.code, -32600);
  });
});

Deno.test("RpcClient rejects pending calls with ConnectionError when the server breaks the protocol", async (t) => {
  const cases: [string, Uint8Array | string, ConnectOptions][] = [
    ["a frame that is not JSON", "{not json", {}],
    ["a frame that is not UTF-8", new Uint8Array([0, 0, 0, 2, 0xff, 0xfe]), {}],
    ["a zero length prefix", new Uint8Array([0, 0, 0, 0]), {}],
    ["a frame over the client's limit", JSON.stringify({ id: 1, result: "x".repeat(200) }), {
      maxFrameBytes: 100,
    }],
    ["a frame cut short by the end of the stream", new Uint8Array([0, 0, 0, 50, 123, 34]), {}],
  ];
  for (const [label, reply, options] of cases) {
    await t.step(label, async () => {
      await using server = fakeTlsServer(async (peer) => {
        await readRequests(peer, 2);
        if (typeof reply === "string") await peer.send(reply);
        else await peer.sendBytes(reply);
      });
      await using client = await connectTo(server.port, { ...options, richValues: false });
      const errors = await allRejectWithConnectionError([client.call("a"), client.call("b")]);
      for (const error of errors) assert.ok(error.cause !== undefined, "the error has no cause");
      await settles(client.closed, "client.closed");
      assert.equal(client.isClosed, true);
    });
  }
});

Deno.test("RpcClient.call() rejects a request over the frame limit with RangeError and stays usable", async () => {
  await using server = await startServer(handlers);
  await using client = await connectTo(server.addr.port, { maxFrameBytes: 100 });
  await assert.rejects(client.call("echo", "x".repeat(200)), RangeError);
  assert.throws(() => client.notify("echo", "x".repeat(200)), RangeError);
  assert.equal(await client.call("add", 1, 2), 3);
});

Deno.test("RpcClient ignores a response with an id it never sent", async () => {
  await using server = fakeTlsServer(async (peer) => {
    const [request] = await readRequests(peer, 1);
    const id = request!.id!;
    // Three strays in one write, then the real answer.
    await peer.sendBytes(
      new Uint8Array([
        ...framed(JSON.stringify({ jsonrpc: "2.0", id: id + 1000, result: "stray" })),
        ...framed(JSON.stringify({ jsonrpc: "2.0", id: String(id), result: "string id" })),
        ...framed(
          JSON.stringify({ jsonrpc: "2.0", id: id + 1, error: { code: 1, message: "x" } }),
        ),
      ]),
    );
    await peer.send({ jsonrpc: "2.0", id, result: "real" });
    const [second] = await readRequests(peer, 1);
    await peer.send({ jsonrpc: "2.0", id: second!.id, result: "second" });
    await peer.receiveText();
  });
  await using client = await connectTo(server.port, { richValues: false });
  assert.equal(await settles(client.call("first"), "the first call"), "real");
  assert.equal(client.isClosed, false);
  assert.equal(await settles(client.call("second"), "the second call"), "second");
});

Deno.test("RpcClient.call() rejects params that cannot be JSON with TypeError and stays usable", async (t) => {
  await using server = await startServer(handlers);
  // Without rich values a BigInt cannot be sent (with them it can: see rich_test.ts).
  await using client = await connectTo(server.addr.port, { richValues: false });
  const cases: [string, () => unknown][] = [
    ["a BigInt param", () => client.call("echo", 1n)],
    ["a nested BigInt", () => client.call("echo", { n: [2n] })],
    ["a BigInt by name", () => client.callNamed("greet", { name: 3n })],
    ["a notification with a BigInt", () => client.notify("echo", 4n)],
  ];
  for (const [label, send] of cases) {
    await t.step(label, async () => {
      await assert.rejects(async () => await send(), TypeError);
      assert.equal(await client.call("add", 1, 2), 3);
    });
  }
  const cyclic: Record<string, unknown> = {};
  cyclic.self = cyclic;
  await t.step("a cyclic object", async () => {
    await assert.rejects(client.call("echo", cyclic), TypeError);
    assert.equal(await client.call("add", 1, 2), 3);
  });
});

// ---------------------------------------------------------------------------------------------
// Closing

Deno.test("RpcClient.close() rejects pending calls with ConnectionError and closes", async () => {
  const gate = Promise.withResolvers<string>();
  await using server = await startServer({ hang: () => gate.promise });
  const client = await connectTo(server.addr.port, { timeout: 10_000 });
  assert.equal(client.isClosed, false);
  const pending = allRejectWithConnectionError([client.call("hang"), client.call("hang")]);
  await settles(client.close(), "client.close()");
  await pending;
  assert.equal(client.isClosed, true);
  await settles(client.closed, "client.closed");
  await rejectsWithConnectionError(client.call("hang"), "a call after close()");
  assert.throws(() => client.notify("hang"), ConnectionError);
  await settles(client.close(), "a second close()");
  gate.resolve("done");
});

Deno.test("RpcClient closes when disposed by await using", async () => {
  await using server = await startServer(handlers);
  let outer: RpcClient | undefined;
  {
    await using client = await connectTo(server.addr.port);
    outer = client;
    assert.equal(await client.call("ping"), "pong");
    assert.equal(client.isClosed, false);
  }
  assert.equal(outer.isClosed, true);
  await settles(outer.closed, "client.closed");
  await rejectsWithConnectionError(outer.call("ping"), "a call after disposal");
});

Deno.test("RpcClient.closed resolves when the server closes the connection", async () => {
  await using server = fakeTlsServer(async () => {});
  await using client = await connectTo(server.port, { richValues: false });
  await settles(client.closed, "client.closed");
  assert.equal(client.isClosed, true);
  await rejectsWithConnectionError(client.call("ping"), "a call after the server closed");
});

Deno.test("aborting the connect signal after connecting closes the client", async () => {
  const gate = Promise.withResolvers<string>();
  await using server = await startServer({ hang: () => gate.promise, ping: () => "pong" });
  const controller = new AbortController();
  await using client = await connectTo(server.addr.port, { signal: controller.signal });
  assert.equal(await client.call("ping"), "pong");
  const pending = client.call("hang");
  controller.abort(new Error("user gave up"));
  await rejectsWithConnectionError(pending, "the pending call");
  await settles(client.closed, "client.closed");
  assert.equal(client.isClosed, true);
  gate.resolve("done");
});

Deno.test("aborting the connect signal after close() does nothing", async () => {
  await using server = await startServer(handlers);
  const controller = new AbortController();
  const client = await connectTo(server.addr.port, { signal: controller.signal });
  await client.close();
  controller.abort();
  assert.equal(client.isClosed, true);
  await rejectsWithConnectionError(client.call("ping"), "a call after close()");
});

// ---------------------------------------------------------------------------------------------
// Connecting

Deno.test("connect() rejects with ConnectionError naming the address when nothing listens", async (t) => {
  await t.step("IPv4", async () => {
    const port = freePort();
    const error = await rejectsWithConnectionError(
      connect({ hostname: "127.0.0.1", port, caCerts: [certs.ca] }),
      "connect()",
    );
    assert.ok(error.message.includes(`"127.0.0.1:${port}"`), error.message);
    assert.ok(error.cause !== undefined);
  });
  await t.step({
    name: "IPv6",
    ignore: !hasIpv6,
    fn: async () => {
      const port = freePort("::1");
      const error = await rejectsWithConnectionError(
        connect({ hostname: "::1", port, caCerts: [certs.ca] }),
        "connect()",
      );
      assert.ok(error.message.includes(`"[::1]:${port}"`), error.message);
    },
  });
});

Deno.test("connect() rejects with ConnectionError when the server's certificate is not trusted", async () => {
  const logs: string[] = [];
  await using server = await startServer(handlers, { logs });
  const error = await rejectsWithConnectionError(
    connect({ hostname: "127.0.0.1", port: server.addr.port }),
    "connect() without the test CA",
  );
  assert.ok(error.message.includes(`"127.0.0.1:${server.addr.port}"`), error.message);
  assert.match(error.message, /UnknownIssuer/);
  // The server survives the failed handshake.
  await using client = await connectTo(server.addr.port);
  assert.equal(await client.call("ping"), "pong");
});

Deno.test("connect() rejects with TimeoutError when the handshake never completes, leaking nothing", async () => {
  using listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const accepted = listener.accept();
  const error = await settles(
    connectTo(listener.addr.port, { connectTimeout: 200 }).then(
      (client) => client.close(),
      (error: unknown) => error,
    ),
    "connect()",
  );
  assert.ok(error instanceof TimeoutError, `expected TimeoutError, got ${error}`);
  assert.equal(error.name, "TimeoutError");
  assert.match(error.message, /^Cannot connect to "127\.0\.0\.1:\d+"/);
  (await accepted).close();
});

Deno.test("connect() rejects with the signal's reason when it is aborted", async (t) => {
  await t.step("before connect() is called", async () => {
    await using server = await startServer(handlers);
    const reason = new Error("not today");
    await assert.rejects(
      connectTo(server.addr.port, { signal: AbortSignal.abort(reason) }),
      (error) => error === reason,
    );
  });
  await t.step("while the handshake is under way", async () => {
    using listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
    const accepted = listener.accept();
    const controller = new AbortController();
    const reason = new Error("changed my mind");
    const connecting = connectTo(listener.addr.port, { signal: controller.signal });
    const conn = await accepted;
    controller.abort(reason);
    const error = await settles(
      connecting.then((client) => client.close(), (error: unknown) => error),
      "connect()",
    );
    assert.equal(error, reason);
    conn.close();
  });
});

Deno.test("connect() rejects with the signal's reason when aborted in the same turn, leaking nothing", async () => {
  await using server = await startServer(handlers);
  const controller = new AbortController();
  const reason = new Error("never mind");
  const connecting = connectTo(server.addr.port, { signal: controller.signal });
  controller.abort(reason);
  const error = await settles(
    connecting.then((client) => client.close(), (error: unknown) => error),
    "connect()",
  );
  assert.equal(error, reason);
});

Deno.test({
  name: "connect() reaches a server on IPv6 loopback",
  ignore: !hasIpv6,
  fn: async () => {
    await using server = await startServer(handlers, { hostname: "::1" });
    await using client = await connect({
      hostname: "::1",
      port: server.addr.port,
      caCerts: [certs.ca],
    });
    assert.equal(await client.call("add", 2, 3), 5);
    assert.equal(await client.proxy.stats!.deep!.answer!(), 42);
  },
});

Deno.test("connect({ wrap: true }) resolves calls with AttrWrapper views of the results", async () => {
  await using server = await startServer({
    nested: () => ({ items: [{ name: "a" }, { name: "b" }] }),
  });
  await using client = await connect({
    hostname: "127.0.0.1",
    port: server.addr.port,
    caCerts: [certs.ca],
    wrap: true,
  });
  const result = await client.proxy.nested();
  assert.equal(AttrWrapper.isWrapped(result), true);
  assert.equal(result.items[-1].name, "b");
  assert.equal(result.missing, undefined);
  assert.throws(() => result.items[2], RangeError);
  assert.deepEqual(AttrWrapper.unwrap(result), { items: [{ name: "a" }, { name: "b" }] });
  await using plain = await connect({
    hostname: "127.0.0.1",
    port: server.addr.port,
    caCerts: [certs.ca],
  });
  assert.equal(AttrWrapper.isWrapped(await plain.call("nested")), false);
});
