// Tests of the client's logic over the in-memory transport: the "server" is the test itself,
// reading and writing frames on the far end of a memory pair, so every exchange is scripted and
// nothing waits on a socket. TLS behaviour is tested on real sockets in client_test.ts.

import assert from "node:assert/strict";
import { connect, type ConnectOptions, type Endpoint, type RpcClient } from "../client.ts";
import { ConnectionError, RpcError, TimeoutError } from "../errors.ts";
import { FrameReader, FrameWriter } from "../framing.ts";
import { type MemoryConnection, memoryPair, type MemoryPairOptions } from "../_transport_memory.ts";
import { delay, type Outcome, outcome, rejectsWith, within } from "./_util.ts";

const decoder = new TextDecoder();
const encoder = new TextEncoder();

// ---------------------------------------------------------------------------------------------
// Helpers

/** A message as the scripted server reads it. */
interface Message {
  jsonrpc?: string;
  id?: number;
  method?: string;
  params?: unknown;
  timeout?: number;
  result?: unknown;
  error?: unknown;
}

/** The far end of a memory pair, speaking frames: the server a test scripts. */
class Peer {
  readonly conn: MemoryConnection;
  #reader: FrameReader;
  #writer: FrameWriter;
  #queue: Uint8Array[] = [];

  constructor(conn: MemoryConnection) {
    this.conn = conn;
    this.#reader = new FrameReader(conn);
    this.#writer = new FrameWriter(conn, { onError: () => {} });
  }

  /** The next frame's bytes, or null once the client has closed the connection. */
  async receiveBytes(): Promise<Uint8Array | null> {
    while (this.#queue.length === 0) {
      let frames: Uint8Array[] | null;
      try {
        frames = await this.#reader.read();
      } catch {
        return null;
      }
      if (frames === null) return null;
      for (const frame of frames) this.#queue.push(frame.slice());
    }
    return this.#queue.shift()!;
  }

  /** The next frame parsed, or null once the client has closed the connection. */
  async receive(): Promise<Message | null> {
    const bytes = await this.receiveBytes();
    return bytes === null ? null : JSON.parse(decoder.decode(bytes));
  }

  /** The next frame, which must be a request for `method`. */
  async expect(method: string): Promise<Message> {
    const message = await within(this.receive(), `a "${method}" request`);
    assert.equal(message?.method, method, `expected "${method}", got ${JSON.stringify(message)}`);
    return message!;
  }

  /** Sends a frame: a string as it is, bytes as they are, anything else as JSON. */
  send(message: unknown): void {
    if (message instanceof Uint8Array) this.#writer.writeFrame(message);
    else this.#writer.writeText(typeof message === "string" ? message : JSON.stringify(message));
  }

  reply(request: Message, result: unknown): void {
    this.send({ jsonrpc: "2.0", id: request.id, result });
  }

  fail(request: Message, code: number, message: string): void {
    this.send({ jsonrpc: "2.0", id: request.id, error: { code, message } });
  }

  /** Says what a shutting-down tlsrpc server says on every connection. */
  goAway(): void {
    this.send({ jsonrpc: "2.0", method: "rpc.goaway", params: [] });
  }

  /** Answers as a shutting-down server answers a call it did not run. */
  refuse(request: Message): void {
    this.fail(request, -32001, "Server is shutting down");
  }

  /** Answers the client's rpc.hello, taking rich values unless told otherwise. */
  async hello(extensions: string[] = ["rich"]): Promise<void> {
    this.reply(await this.expect("rpc.hello"), { extensions });
  }

  /** Resolves once the client has closed the connection, ignoring what it sends before. */
  async closedByClient(): Promise<void> {
    while (await this.receiveBytes() !== null) { /* drain */ }
  }

  close(): void {
    this.conn.close();
  }
}

/** A dialer that hands out a new memory pair each time, and the scripted ends of them all. */
class Pairs {
  readonly peers: Peer[] = [];
  /** The endpoint of each dial, `host:port`, failed ones included. */
  readonly dialed: string[] = [];
  /** Endpoints (`host:port`) whose dials reject, as a closed port does. */
  readonly down = new Set<string>();
  #arrivals: ((peer: Peer) => void)[] = [];
  #options: MemoryPairOptions;

  constructor(options: MemoryPairOptions = {}) {
    this.#options = options;
  }

  readonly dial = (_signal: AbortSignal, endpoint: Endpoint): Promise<MemoryConnection> => {
    const name = `${endpoint.hostname}:${endpoint.port}`;
    this.dialed.push(name);
    if (this.down.has(name)) return Promise.reject(new Error("Connection refused"));
    const [near, far] = memoryPair(this.#options);
    const peer = new Peer(far);
    this.peers.push(peer);
    this.#arrivals.shift()?.(peer);
    return Promise.resolve(near);
  };

  /** The `n`th connection's far end (0-based), once the client has dialed it. */
  async peer(n: number): Promise<Peer> {
    while (this.peers.length <= n) {
      await within(new Promise<Peer>((resolve) => this.#arrivals.push(resolve)), `dial ${n}`);
    }
    return this.peers[n]!;
  }

  closeAll(): void {
    for (const peer of this.peers) peer.close();
  }
}

/** A client connected over a memory pair whose far end `server` has answered the hello. */
interface Connected extends AsyncDisposable {
  client: RpcClient;
  server: Peer;
}

/** Connects over a new memory pair; the server answers the hello unless `richValues` is false. */
async function connectMemory(
  options: ConnectOptions = {},
  pair: MemoryPairOptions = {},
): Promise<Connected> {
  const pairs = new Pairs(pair);
  const connecting = connect({ dial: pairs.dial, ...options });
  const server = await pairs.peer(0);
  if (options.richValues !== false) await server.hello();
  if (options.token !== undefined) server.reply(await server.expect("rpc.auth"), true);
  const client = await within(connecting, "connect()");
  return {
    client,
    server,
    async [Symbol.asyncDispose]() {
      server.close();
      await within(client.close(), "client.close()");
    },
  };
}

/** Polls `condition` every 5 ms, at most `ms` in all; fails naming `what` if it never holds. */
async function waitFor(condition: () => boolean, what: string, ms = 5_000): Promise<void> {
  for (let waited = 0; !condition(); waited += 5) {
    if (waited >= ms) assert.fail(`Gave up waiting for ${what} after ${ms} ms`);
    await delay(5);
  }
}

// ---------------------------------------------------------------------------------------------
// The memory transport

Deno.test("memoryPair() carries bytes both ways in order, cut into readChunkBytes pieces", async () => {
  const [a, b] = memoryPair({ readChunkBytes: 3 });
  assert.equal(await a.write(encoder.encode("hello")), 5);
  assert.equal(await b.write(encoder.encode("back")), 4);
  const buffer = new Uint8Array(16);
  assert.equal(await b.read(buffer), 3);
  assert.equal(decoder.decode(buffer.subarray(0, 3)), "hel");
  assert.equal(await b.read(buffer), 2);
  assert.equal(decoder.decode(buffer.subarray(0, 2)), "lo");
  assert.equal(await a.read(buffer), 3);
  assert.deepEqual([a.remoteAddr, b.remoteAddr], [
    { hostname: "memory", port: 2 },
    { hostname: "memory", port: 1 },
  ]);
  a.close();
  b.close();
});

Deno.test("memoryPair(): close ends the peer's reads with null once drained, and writes reject with EPIPE", async (t) => {
  await t.step("the peer reads what was written before the close, then null", async () => {
    const [a, b] = memoryPair();
    await a.write(encoder.encode("last"));
    a.close();
    const buffer = new Uint8Array(16);
    assert.equal(await b.read(buffer), 4);
    assert.equal(await b.read(buffer), null);
    assert.equal(await a.read(buffer), null);
    for (const side of [a, b]) {
      await assert.rejects(side.write(encoder.encode("x")), (error: Error & { code?: string }) => {
        assert.equal(error.code, "EPIPE");
        assert.match(error.message, /^Cannot write: /);
        return true;
      });
    }
  });
  await t.step("a read waiting when the peer closes resolves null", async () => {
    const [a, b] = memoryPair();
    const reading = b.read(new Uint8Array(4));
    a.close();
    assert.equal(await reading, null);
  });
  await t.step(
    "a write waiting for a peer that stopped reading rejects when it closes",
    async () => {
      const [a, b] = memoryPair();
      b.stopReading();
      const writing = a.write(encoder.encode("stuck"));
      await delay(5);
      assert.equal(b.bufferedBytes, 0);
      b.close();
      await assert.rejects(writing, (error: Error & { code?: string }) => error.code === "EPIPE");
    },
  );
  await t.step("a full buffer takes what fits; resumeReading lets the rest through", async () => {
    const [a, b] = memoryPair({ bufferBytes: 4 });
    assert.equal(await a.write(encoder.encode("abcdef")), 4);
    const writing = a.write(encoder.encode("ef"));
    const buffer = new Uint8Array(8);
    assert.equal(await b.read(buffer), 4);
    assert.equal(await writing, 2);
    b.stopReading();
    const stuck = a.write(encoder.encode("gh"));
    await delay(5);
    assert.equal(b.bufferedBytes, 2);
    b.resumeReading();
    assert.equal(await stuck, 2);
    a.close();
    b.close();
  });
});

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

// ---------------------------------------------------------------------------------------------
// Keepalive

Deno.test("keepalive pings a quiet server, keeps the connection while it answers, and loses it when it stops", async () => {
  const disconnects: ConnectionError[] = [];
  await using setup = await connectMemory({
    keepalive: { interval: 20, timeout: 60 },
    onDisconnect: (error) => void disconnects.push(error),
  });
  const { client, server } = setup;
  for (let i = 0; i < 3; i++) {
    const ping = await server.expect("rpc.ping");
    assert.equal(ping.params, undefined);
    server.reply(ping, null);
  }
  assert.equal(client.isClosed, false);
  const pending = client.call("never");
  await server.expect("never");
  await server.expect("rpc.ping"); // unanswered
  const error = await rejectsWith(pending, ConnectionError, "the pending call");
  assert.match(error.message, /did not answer a keepalive ping within 60 ms/);
  await within(client.closed, "client.closed");
  assert.equal(disconnects.length, 1);
});

Deno.test("keepalive goes on after an error answer to rpc.ping, and finds a draining server that then hangs", async () => {
  await using setup = await connectMemory({ keepalive: { interval: 20, timeout: 60 } });
  const { client, server } = setup;
  // A draining server answers every call, pings included, with -32001.
  server.fail(await server.expect("rpc.ping"), -32001, "Server is shutting down");
  server.fail(await server.expect("rpc.ping"), -32001, "Server is shutting down");
  const pending = client.call("never");
  await server.expect("never");
  await server.expect("rpc.ping"); // and then it hangs
  const error = await rejectsWith(pending, ConnectionError, "the pending call");
  assert.match(error.message, /keepalive/);
  await within(client.closed, "client.closed");
});

// ---------------------------------------------------------------------------------------------
// A server that stops reading

Deno.test("calls that time out before their bytes are written leave the queue: a server that stops reading does not make it grow", async () => {
  await using setup = await connectMemory({
    maxQueuedBytes: 1024 * 1024,
    writeTimeout: 0,
  }, { bufferBytes: 64 * 1024 });
  const { client, server } = setup;
  server.conn.stopReading();
  const big = "x".repeat(256 * 1024);
  // Twelve calls of 256 KiB, one after the other: 3 MiB in all, three times the limit.
  for (let i = 0; i < 12; i++) {
    const error = await rejectsWith(
      client.withOptions({ timeout: 20 }).call("big", i, big),
      TimeoutError,
      `big call ${i}`,
    );
    assert.match(error.message, /no response within 20 ms/);
  }
  assert.equal(client.isClosed, false);
  server.conn.resumeReading();
  const after = client.call("after");
  // The first call was under way when the server stopped; the others never went out.
  const first = await server.expect("big");
  assert.equal((first.params as unknown[])[0], 0);
  server.reply(await server.expect("after"), "after");
  assert.equal(await within(after, "the call after"), "after");
});

Deno.test("an aborted call that was never written is taken back: the server sees neither it nor rpc.cancel", async () => {
  await using setup = await connectMemory({ writeTimeout: 0 }, { bufferBytes: 1024 });
  const { client, server } = setup;
  server.conn.stopReading();
  const first = client.call("first", "y".repeat(4096));
  await delay(5); // the first call's write is under way, and stuck
  const controller = new AbortController();
  const second = client.withOptions({ signal: controller.signal }).call("second");
  controller.abort(new Error("changed my mind"));
  await rejectsWith(second, Error, "the aborted call");
  const third = client.call("third");
  server.conn.resumeReading();
  server.reply(await server.expect("first"), 1);
  server.reply(await server.expect("third"), 3);
  assert.deepEqual(await within(Promise.all([first, third]), "the calls"), [1, 3]);
});

Deno.test("a server that stops reading: messages past maxQueuedBytes are refused with ConnectionError", async () => {
  await using setup = await connectMemory({ maxQueuedBytes: 1024 * 1024, writeTimeout: 0 });
  const { client, server } = setup;
  server.conn.stopReading();
  const big = "z".repeat(256 * 1024);
  const calls = Array.from({ length: 6 }, (_, i) => outcome(client.call("big", i, big)));
  assert.throws(() => client.notify("note", big), (error: unknown) => {
    assert.ok(error instanceof ConnectionError);
    assert.match(error.message, /^Cannot notify "note": \d+ bytes already wait to be written/);
    assert.match(error.message, /maxQueuedBytes is 1048576/);
    return true;
  });
  const refused = await within(Promise.race([calls[4]!, calls[5]!]), "a refusal");
  assert.ok(!refused.ok && refused.error instanceof ConnectionError, String(refused));
  assert.match(refused.error.message, /^Cannot call "big": /);
  assert.equal(client.isClosed, false);
  await client.close();
  for (const call of calls) assert.equal((await within(call, "a call")).ok, false);
});

Deno.test("a server that stops reading is dropped after writeTimeout with ConnectionError, and the client reconnects", async () => {
  const pairs = new Pairs({ bufferBytes: 1024 });
  const disconnects: ConnectionError[] = [];
  const connecting = connect({
    dial: pairs.dial,
    writeTimeout: 100,
    reconnect: { initialDelay: 1, maxDelay: 1, maxAttempts: 5 },
    onDisconnect: (error) => void disconnects.push(error),
  });
  const first = await pairs.peer(0);
  await first.hello();
  const client = await within(connecting, "connect()");
  try {
    first.conn.stopReading();
    const stuck = client.call("stuck", "w".repeat(8192));
    const error = await rejectsWith(stuck, ConnectionError, "the stuck call");
    assert.equal(
      error.message,
      'Cannot complete call: "localhost:7443" read nothing for 100 ms (writeTimeout)',
    );
    assert.equal(disconnects.length, 1);
    assert.ok(first.conn.isClosed);
    const second = await pairs.peer(1);
    await second.hello();
    const call = client.call("works");
    second.reply(await second.expect("works"), "yes");
    assert.equal(await within(call, "a call on the new connection"), "yes");
  } finally {
    pairs.closeAll();
    await client.close();
  }
});

// ---------------------------------------------------------------------------------------------
// Losing the connection, reconnecting, closing

Deno.test("reconnect over new memory pairs: in-flight calls reject, an idempotent one is sent again once, waiting calls go out after onReconnect", async () => {
  const pairs = new Pairs();
  const events: string[] = [];
  const connecting = connect({
    dial: pairs.dial,
    token: "t",
    reconnect: { initialDelay: 1, maxDelay: 1, maxAttempts: 5 },
    onDisconnect: () => void events.push("disconnect"),
    onReconnect: () => void events.push("reconnect"),
  });
  const first = await pairs.peer(0);
  await first.hello();
  first.reply(await first.expect("rpc.auth"), true);
  const client = await within(connecting, "connect()");
  try {
    const plain = outcome(client.call("plain"));
    const idempotent = outcome(client.withOptions({ idempotent: true }).call("idem"));
    await first.expect("plain");
    await first.expect("idem");
    first.close();
    const lost = await within(plain, "the plain call");
    assert.ok(!lost.ok && lost.error instanceof ConnectionError, String(lost));
    assert.match(lost.error.message, /closed the connection/);
    const during = outcome(client.call("during"));
    const second = await pairs.peer(1);
    await second.hello();
    second.reply(await second.expect("rpc.auth"), true);
    const again = await second.expect("idem");
    const waited = await second.expect("during");
    assert.deepEqual(events, ["disconnect", "reconnect"]);
    second.reply(again, "idem on second");
    second.reply(waited, "during on second");
    assert.deepEqual(await within(idempotent, "the idempotent call"), {
      ok: true,
      value: "idem on second",
    });
    assert.deepEqual(await within(during, "the call made during"), {
      ok: true,
      value: "during on second",
    });
    // Sent again once only: its second connection dropping too rejects it.
    const once = outcome(client.withOptions({ idempotent: true }).call("once"));
    await second.expect("once");
    second.close();
    const third = await pairs.peer(2);
    await third.hello();
    third.reply(await third.expect("rpc.auth"), true);
    await third.expect("once");
    third.close();
    const result = await within(once, "the twice-dropped call");
    assert.ok(!result.ok && result.error instanceof ConnectionError, String(result));
  } finally {
    pairs.closeAll();
    await client.close();
  }
});

Deno.test("close() during a reconnection's rpc.hello resolves at once, not after connectTimeout", async () => {
  const pairs = new Pairs();
  const connecting = connect({
    dial: pairs.dial,
    connectTimeout: 10_000,
    reconnect: { initialDelay: 1, maxDelay: 1, maxAttempts: 5 },
  });
  const first = await pairs.peer(0);
  await first.hello();
  const client = await within(connecting, "connect()");
  const waiting = outcome(client.call("waits"));
  await first.expect("waits");
  first.close();
  const second = await pairs.peer(1);
  await second.expect("rpc.hello"); // never answered
  await within(client.close(), "close() during the hello", 1_000);
  assert.equal(client.isClosed, true);
  const result = await within(waiting, "the call");
  assert.ok(!result.ok && result.error instanceof ConnectionError, String(result));
  await within(second.closedByClient(), "the attempt's connection to close", 1_000);
  assert.equal(pairs.peers.length, 2, "no attempt after close()");
});

Deno.test("close() with calls in flight rejects them with ConnectionError and closes the connection", async () => {
  const { client, server } = await connectMemory();
  const calls = [outcome(client.call("a")), outcome(client.call("b"))];
  await server.expect("a");
  await server.expect("b");
  await within(client.close(), "client.close()");
  for (const result of await within(Promise.all(calls), "the calls")) {
    assert.ok(!result.ok && result.error instanceof ConnectionError, String(result));
    assert.match(
      result.error.message,
      /^Cannot complete call: client to "localhost:7443" was closed/,
    );
  }
  await within(server.closedByClient(), "the server to see the close");
  assert.throws(() => client.notify("late"), ConnectionError);
  await rejectsWith(client.call("late"), ConnectionError, "a call after close()");
});

Deno.test("the server refusing a message with id null, then closing, rejects calls with ConnectionError carrying its RpcError", async () => {
  const { client, server } = await connectMemory();
  const call = client.call("a");
  await server.expect("a");
  server.send({ jsonrpc: "2.0", id: null, error: { code: -32600, message: "Invalid Request: x" } });
  await delay(5);
  server.close();
  const error = await rejectsWith(call, ConnectionError, "the call");
  assert.match(error.message, /the server refused a message: Invalid Request: x/);
  assert.ok(error.cause instanceof RpcError && error.cause.code === -32600);
  await within(client.closed, "client.closed");
});

// ---------------------------------------------------------------------------------------------
// A server that shuts down: rpc.goaway and -32001

/** A client with reconnect over `pairs`, connected to its first peer; events are recorded. */
async function connectDraining(
  pairs: Pairs,
  options: ConnectOptions = {},
): Promise<{ client: RpcClient; events: string[] }> {
  const events: string[] = [];
  const connecting = connect({
    dial: pairs.dial,
    // A minute: a connection that comes within the test's guard came without backoff.
    reconnect: { initialDelay: 60_000, maxDelay: 60_000, maxAttempts: 3 },
    onDisconnect: (error) => void events.push(`disconnect: ${error.message}`),
    onReconnect: () => void events.push("reconnect"),
    ...options,
  });
  await (await pairs.peer(pairs.peers.length)).hello();
  return { client: await within(connecting, "connect()"), events };
}

Deno.test("rpc.goaway with reconnect: calls in flight finish on the old connection, new calls go at once to a new one, and the client closes the old one after its last answer", async () => {
  const pairs = new Pairs();
  const { client, events } = await connectDraining(pairs);
  try {
    const old = pairs.peers[0]!;
    const first = outcome(client.call("slow", 1));
    const second = outcome(client.call("slow", 2));
    const [one, two] = [await old.expect("slow"), await old.expect("slow")];
    old.goAway();
    const fresh = await pairs.peer(1);
    await fresh.hello();
    const later = outcome(client.call("later"));
    fresh.reply(await fresh.expect("later"), "later on the new connection");
    assert.deepEqual(await within(later, "the call made after rpc.goaway"), {
      ok: true,
      value: "later on the new connection",
    });
    // The old connection still carries its calls: the first answer does not close it.
    old.reply(one, "one on the old connection");
    assert.deepEqual(await within(first, "the first call in flight"), {
      ok: true,
      value: "one on the old connection",
    });
    await delay(5);
    assert.equal(old.conn.isClosed, false, "closed with a call still in flight");
    old.reply(two, "two on the old connection");
    assert.deepEqual(await within(second, "the second call in flight"), {
      ok: true,
      value: "two on the old connection",
    });
    // The last answer closes it, and the client sent nothing more on it.
    assert.equal(await within(old.receive(), "the client to close the old connection"), null);
    assert.equal(client.isClosed, false);
    assert.deepEqual(events, ["reconnect"]);
    assert.equal(pairs.peers.length, 2);
    assert.equal(await within(pingThrough(client, fresh), "a call after"), "pong");
  } finally {
    pairs.closeAll();
    await client.close();
  }
});

/** Makes a call and answers it on `peer`. */
async function pingThrough(client: RpcClient, peer: Peer): Promise<unknown> {
  const call = client.call("ping");
  peer.reply(await peer.expect("ping"), "pong");
  return await call;
}

Deno.test("rpc.goaway with no call in flight: the client closes the old connection at once", async () => {
  const pairs = new Pairs();
  const { client, events } = await connectDraining(pairs);
  try {
    pairs.peers[0]!.goAway();
    assert.equal(await within(pairs.peers[0]!.receive(), "the old connection to close"), null);
    await (await pairs.peer(1)).hello();
    assert.equal(await within(pingThrough(client, pairs.peers[1]!), "a call after"), "pong");
    assert.deepEqual(events, ["reconnect"]);
  } finally {
    pairs.closeAll();
    await client.close();
  }
});

Deno.test("a call answered -32001 never ran: with reconnect it is sent once more on a new connection, idempotent or not, and a second -32001 rejects it", async (t) => {
  await t.step("after rpc.goaway, a call that crossed it", async () => {
    const pairs = new Pairs();
    const { client, events } = await connectDraining(pairs);
    try {
      const old = pairs.peers[0]!;
      const crossed = outcome(client.call("crossed"));
      const request = await old.expect("crossed");
      old.goAway();
      old.refuse(request);
      const fresh = await pairs.peer(1);
      await fresh.hello();
      fresh.reply(await fresh.expect("crossed"), "ran once, on the new connection");
      assert.deepEqual(await within(crossed, "the refused call"), {
        ok: true,
        value: "ran once, on the new connection",
      });
      assert.equal(await within(old.receive(), "the old connection to close"), null);
      assert.deepEqual(events, ["reconnect"]);
    } finally {
      pairs.closeAll();
      await client.close();
    }
  });

  await t.step("without rpc.goaway: the -32001 alone moves the client on", async () => {
    const pairs = new Pairs();
    const { client } = await connectDraining(pairs);
    try {
      const old = pairs.peers[0]!;
      const call = outcome(client.call("work"));
      old.refuse(await old.expect("work"));
      const fresh = await pairs.peer(1);
      await fresh.hello();
      fresh.reply(await fresh.expect("work"), "done");
      assert.deepEqual(await within(call, "the refused call"), { ok: true, value: "done" });
    } finally {
      pairs.closeAll();
      await client.close();
    }
  });

  await t.step("refused twice: rejects with the RpcError", async () => {
    const pairs = new Pairs();
    const { client } = await connectDraining(pairs, {
      reconnect: { initialDelay: 1, maxDelay: 1, maxAttempts: 3 },
    });
    try {
      const call = outcome(client.call("work"));
      pairs.peers[0]!.refuse(await pairs.peers[0]!.expect("work"));
      const fresh = await pairs.peer(1);
      await fresh.hello();
      fresh.refuse(await fresh.expect("work"));
      const result = await within(call, "the twice-refused call");
      assert.ok(!result.ok && result.error instanceof RpcError, String(result));
      assert.equal(result.error.code, -32001);
    } finally {
      pairs.closeAll();
      await client.close();
    }
  });
});

Deno.test("rpc.goaway without reconnect: new calls keep going to the old connection and reject with its -32001; the client closes when the server does", async () => {
  const pairs = new Pairs();
  const disconnects: ConnectionError[] = [];
  const connecting = connect({ dial: pairs.dial, onDisconnect: (e) => void disconnects.push(e) });
  const server = await pairs.peer(0);
  await server.hello();
  const client = await within(connecting, "connect()");
  try {
    const running = outcome(client.call("running"));
    const request = await server.expect("running");
    server.goAway();
    const later = outcome(client.call("later"));
    server.refuse(await server.expect("later"));
    const refused = await within(later, "the call made after rpc.goaway");
    assert.ok(!refused.ok && refused.error instanceof RpcError, String(refused));
    assert.equal(refused.error.code, -32001);
    server.reply(request, "finished");
    assert.deepEqual(await within(running, "the call in flight"), { ok: true, value: "finished" });
    await delay(5);
    assert.equal(server.conn.isClosed, false, "the client closed the connection itself");
    assert.equal(pairs.peers.length, 1, "a new connection without reconnect");
    server.close();
    await within(client.closed, "client.closed");
    assert.equal(disconnects.length, 1);
  } finally {
    pairs.closeAll();
    await client.close();
  }
});

Deno.test("a connection that drops while draining: its plain calls reject with ConnectionError, an idempotent one is sent again on the new connection", async () => {
  const pairs = new Pairs();
  const { client, events } = await connectDraining(pairs);
  try {
    const old = pairs.peers[0]!;
    const plain = outcome(client.call("plain"));
    const idempotent = outcome(client.withOptions({ idempotent: true }).call("idem"));
    await old.expect("plain");
    await old.expect("idem");
    old.goAway();
    const fresh = await pairs.peer(1);
    await fresh.hello();
    old.close();
    const lost = await within(plain, "the plain call");
    assert.ok(!lost.ok && lost.error instanceof ConnectionError, String(lost));
    fresh.reply(await fresh.expect("idem"), "idem again");
    assert.deepEqual(await within(idempotent, "the idempotent call"), {
      ok: true,
      value: "idem again",
    });
    // Not the connection in use: no onDisconnect, no reconnection.
    assert.deepEqual(events, ["reconnect"]);
    assert.equal(pairs.peers.length, 2);
  } finally {
    pairs.closeAll();
    await client.close();
  }
});

Deno.test("rpc.goaway when no new connection opens at once: onDisconnect, then the usual backoff, while the old connection finishes its calls", async () => {
  const pairs = new Pairs();
  const { client, events } = await connectDraining(pairs, {
    endpoints: [{ hostname: "a", port: 1 }, { hostname: "b", port: 2 }],
    reconnect: { initialDelay: 1, maxDelay: 1, maxAttempts: 100 },
  });
  try {
    const old = pairs.peers[0]!;
    const [up, down] = pairs.dialed[0] === "a:1" ? ["a:1", "b:2"] : ["b:2", "a:1"];
    pairs.down.add(down);
    pairs.down.add(up);
    const running = outcome(client.call("running"));
    const request = await old.expect("running");
    old.goAway();
    await waitFor(() => events.length > 0, "onDisconnect");
    assert.match(
      events[0]!,
      new RegExp(
        `^disconnect: Cannot send calls to "${up}": it is shutting down \\(rpc\\.goaway\\), and cannot connect to "${down}"`,
      ),
    );
    const waiting = outcome(client.call("waiting"));
    old.reply(request, "finished");
    assert.deepEqual(await within(running, "the call in flight"), { ok: true, value: "finished" });
    pairs.down.clear();
    const fresh = await pairs.peer(1);
    await fresh.hello();
    fresh.reply(await fresh.expect("waiting"), "went out after the backoff");
    assert.deepEqual(await within(waiting, "the waiting call"), {
      ok: true,
      value: "went out after the backoff",
    });
    assert.equal(events.at(-1), "reconnect");
    assert.equal(events.length, 2);
  } finally {
    pairs.closeAll();
    await client.close();
  }
});

Deno.test("through goaways and -32001 answers no call runs twice, and every call resolves", async () => {
  const seed = Math.floor(Math.random() * 2 ** 32);
  const rng = random(seed);
  const pairs = new Pairs();
  const { client } = await connectDraining(pairs, {
    reconnect: { initialDelay: 0, maxDelay: 1, maxAttempts: 100 },
  });
  /** How often each call ran: a peer that answers with a result ran it. */
  const ran = new Map<string, number>();
  const goingAway = new Set<Peer>();
  let refused = 0;
  /** A peer's loop: runs each call, or, once it has said rpc.goaway, refuses half of them. */
  async function serveOn(peer: Peer): Promise<void> {
    for (let message = await peer.receive(); message; message = await peer.receive()) {
      if (message.method === "rpc.hello") peer.reply(message, { extensions: ["rich"] });
      if (message.method !== "work") continue;
      if (goingAway.has(peer) && rng() < 0.5) {
        refused++;
        peer.refuse(message);
        continue;
      }
      const key = String((message.params as unknown[])[0]);
      ran.set(key, (ran.get(key) ?? 0) + 1);
      const request = message;
      // A running call's answer comes at once or a little later, after the rpc.goaway maybe.
      if (rng() < 0.5) peer.reply(request, key);
      else setTimeout(() => peer.reply(request, key), Math.floor(rng() * 5));
    }
  }
  const loops: Promise<void>[] = [serveOn(pairs.peers[0]!)];
  try {
    for (let round = 0; round < 5; round++) {
      // Calls go out; the server starts shutting down while they arrive; a new one takes over.
      const calls: Promise<unknown>[] = [];
      for (let i = 0; i < 20; i++) {
        calls.push(client.call("work", `${round}-${i}`));
        if (i === 10) {
          const current = pairs.peers.at(-1)!;
          goingAway.add(current);
          current.goAway();
        }
        if (rng() < 0.3) await delay(1);
      }
      loops.push(serveOn(await pairs.peer(round + 1)));
      const results = await within(Promise.all(calls), `round ${round}; seed ${seed}`);
      for (const [i, key] of results.entries()) {
        assert.equal(key, `${round}-${i}`, `seed ${seed}`);
        assert.equal(ran.get(`${round}-${i}`), 1, `"${key}" ran more than once; seed ${seed}`);
      }
    }
    assert.ok(refused > 0, `no call was refused; seed ${seed}`);
    assert.equal(ran.size, 100);
  } finally {
    pairs.closeAll();
    await client.close();
    await within(Promise.all(loops), "the peers' loops");
  }
});

Deno.test("endpoints: both endpoints and hostname or port, or an empty list, is a TypeError", async (t) => {
  const cases: [string, ConnectOptions][] = [
    ["endpoints and hostname", { endpoints: [{ hostname: "a", port: 1 }], hostname: "b" }],
    ["endpoints and port", { endpoints: [{ hostname: "a", port: 1 }], port: 2 }],
    ["an empty list", { endpoints: [] }],
  ];
  for (const [name, options] of cases) {
    await t.step(name, async () => {
      const pairs = new Pairs();
      const error = await rejectsWith(connect({ dial: pairs.dial, ...options }), TypeError, name);
      assert.match(error.message, /^Cannot connect: /);
      assert.equal(pairs.dialed.length, 0);
    });
  }
});

Deno.test("endpoints: connect() tries each in turn and names every one when none answers", async () => {
  const endpoints = [
    { hostname: "a", port: 1 },
    { hostname: "b", port: 2 },
    { hostname: "::1", port: 3 },
  ];
  const pairs = new Pairs();
  for (const name of ["a:1", "b:2", "::1:3"]) pairs.down.add(name);
  const error = await rejectsWith(
    connect({ dial: pairs.dial, endpoints }),
    ConnectionError,
    "connect() to three closed endpoints",
  );
  assert.equal(pairs.dialed.length, 3);
  assert.deepEqual([...pairs.dialed].sort(), ["::1:3", "a:1", "b:2"]);
  const order = pairs.dialed.map((name) => name === "::1:3" ? "[::1]:3" : name);
  assert.equal(
    error.message,
    `Cannot connect to any of 3 endpoints: ${
      order.map((name) => `"${name}": Connection refused`).join(", ")
    }`,
  );
  assert.ok(error.cause instanceof AggregateError && error.cause.errors.length === 3);
});

Deno.test("endpoints: reconnections and switches after rpc.goaway go to the next endpoint in the order, round and round", async () => {
  const endpoints = [
    { hostname: "a", port: 1 },
    { hostname: "b", port: 2 },
    { hostname: "c", port: 3 },
  ];
  const pairs = new Pairs();
  const { client } = await connectDraining(pairs, {
    endpoints,
    reconnect: { initialDelay: 0, maxDelay: 1, maxAttempts: 10 },
  });
  try {
    for (let n = 1; n <= 6; n++) {
      // Drops and goaways, alternately.
      if (n % 2 === 0) pairs.peers[n - 1]!.close();
      else pairs.peers[n - 1]!.goAway();
      await (await pairs.peer(n)).hello();
      assert.equal(await within(pingThrough(client, pairs.peers[n]!), `call ${n}`), "pong");
    }
    const order = pairs.dialed.slice(0, 3);
    assert.deepEqual([...order].sort(), ["a:1", "b:2", "c:3"]);
    assert.deepEqual(pairs.dialed, [...order, ...order, order[0]]);
  } finally {
    pairs.closeAll();
    await client.close();
  }
});

// ---------------------------------------------------------------------------------------------
// A hostile server

/** mulberry32: a small seeded generator, so that a failing run can be replayed. */
function random(seed: number): () => number {
  let state = seed >>> 0;
  return () => {
    state = (state + 0x6d2b79f5) >>> 0;
    let t = state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

function pick<T>(rng: () => number, items: readonly T[]): T {
  return items[Math.floor(rng() * items.length)]!;
}

/** A JSON value of every kind, nested up to `depth`. */
function randomValue(rng: () => number, depth = 3): unknown {
  const kind = Math.floor(rng() * (depth > 0 ? 9 : 7));
  switch (kind) {
    case 0:
      return null;
    case 1:
      return rng() < 0.5;
    case 2:
      return pick(rng, [0, -1, 1.5, 2 ** 53, -(2 ** 60), 1e308, Math.floor(rng() * 1e6)]);
    case 3:
      return pick(rng, ["", "x", "é😀", "__proto__", "constructor", "\u0000"]);
    case 4:
      return pick(rng, [[], {}]);
    case 5:
      return { code: randomValue(rng, 0), message: randomValue(rng, 0) };
    case 6:
      return "s".repeat(Math.floor(rng() * 100));
    case 7:
      return Array.from({ length: Math.floor(rng() * 5) }, () => randomValue(rng, depth - 1));
    default: {
      const object: Record<string, unknown> = {};
      for (let i = Math.floor(rng() * 4); i > 0; i--) {
        object[pick(rng, ["a", "id", "code", "__proto__", "then", "method"])] = randomValue(
          rng,
          depth - 1,
        );
      }
      return object;
    }
  }
}

/** Error members of every type a server could send. */
const hostileErrors = [
  "null",
  "1",
  '"text"',
  "[]",
  "{}",
  "true",
  '{"code":1.5,"message":"x"}',
  '{"code":1e400,"message":"inf"}',
  '{"code":-1e400}',
  '{"code":"-32000","message":"text code"}',
  '{"code":-32000,"message":{"not":"text"}}',
  '{"code":9007199254740993,"message":"unsafe"}',
  '{"code":-32001,"message":"draining","data":[[[[["deep"]]]]]}',
  '{"__proto__":{"code":1},"message":"proto"}',
];

/** One adversarial frame that the client survives, knowing the ids the client has sent. */
function hostileFrame(rng: () => number, ids: number[]): Uint8Array | string {
  const id = ids.length > 0 && rng() < 0.7
    ? pick(rng, ids)
    : pick(rng, [0, -1, -2, 2 ** 53, 1.5, '"1"', "null", "{}", "[]", "true", "1e400"]);
  const method = pick(rng, [
    "news",
    "boom",
    "async",
    "unknown",
    "rpc.cancel",
    "rpc.goaway",
    "__proto__",
  ]);
  switch (Math.floor(rng() * 10)) {
    case 0: // a result of any kind
      return `{"jsonrpc":"2.0","id":${id},"result":${JSON.stringify(randomValue(rng))}}`;
    case 1: // an error of any kind
    case 2:
      return `{"jsonrpc":"2.0","id":${id},"error":${pick(rng, hostileErrors)}}`;
    case 3: // a notification with many params
      return `{"jsonrpc":"2.0","method":"${method}","params":[${"1,".repeat(50_000)}1]}`;
    case 4: // a notification with params of any kind
    case 5:
      return JSON.stringify({ jsonrpc: "2.0", method, params: randomValue(rng) });
    case 6: // a request to the client
      return `{"jsonrpc":"2.0","id":${id},"method":"${method}","params":[]}`;
    case 7: // a batch of anything
      return JSON.stringify(
        Array.from(
          { length: Math.floor(rng() * 5) },
          () =>
            rng() < 0.5
              ? { jsonrpc: "2.0", id: pick(rng, [...ids, 7, -3]), result: randomValue(rng) }
              : randomValue(rng),
        ),
      );
    case 8:
      return `{"__proto__":{"id":${id}},"id":${id},"result":{"__proto__":{"x":1}}}`;
    default: // a value that is not a message, or a hello answer of the wrong shape
      return rng() < 0.5
        ? JSON.stringify(randomValue(rng))
        : `{"jsonrpc":"2.0","id":0,"result":${JSON.stringify(randomValue(rng))}}`;
  }
}

/** One thing that ends the connection: the client must fail its calls cleanly. */
function fatalBytes(rng: () => number): Uint8Array | string {
  switch (Math.floor(rng() * 7)) {
    case 0: // random bytes as a frame
      return crypto.getRandomValues(new Uint8Array(1 + Math.floor(rng() * 64)));
    case 1: // deep nesting
      return `{"jsonrpc":"2.0","id":1,"result":${"[".repeat(500)}${"]".repeat(500)}}`;
    case 2: // an extended frame with garbage
      return new Uint8Array([0x00, ...crypto.getRandomValues(new Uint8Array(8))]);
    case 3: // a frame that is not JSON
      return `{"jsonrpc":"2.0","id":1,"result":`;
    case 4: // more values than a message may hold
      return `{"jsonrpc":"2.0","method":"news","params":[${"1,".repeat(200_000)}1]}`;
    case 5: // an id-null error: the server says it will close
      return `{"jsonrpc":"2.0","id":null,"error":${pick(rng, hostileErrors)}}`;
    default: // raw bytes outside the framing (a zero length, or noise)
      return "raw";
  }
}

/** What the fuzz saw, so that it can tell that it reached the code it means to test. */
interface FuzzStats {
  results: number;
  rpcErrors: number;
  connectionErrors: number;
  listenerErrors: number;
  refusedConnects: number;
}

/**
 * Plays a hostile server on `peer`: answers the hello (mostly properly), waits for `go`, then sends
 * `steps` adversarial frames, ending the stream now and then, and closes (or not).
 */
async function hostileServer(
  peer: Peer,
  rng: () => number,
  steps: number,
  go: Promise<void>,
): Promise<void> {
  const ids: number[] = [];
  const hello = Promise.withResolvers<void>();
  const reading = (async () => {
    for (let bytes = await peer.receiveBytes(); bytes; bytes = await peer.receiveBytes()) {
      let message: Message;
      try {
        message = JSON.parse(decoder.decode(bytes)) as Message;
      } catch {
        continue; // an extended frame: not for us to read
      }
      if (typeof message.id === "number" && message.id > 0) ids.push(message.id);
      if (message.method === "rpc.hello") {
        const roll = rng();
        if (roll < 0.85) peer.reply(message, { extensions: ["rich"] });
        else if (roll < 0.95) peer.reply(message, randomValue(rng));
        hello.resolve();
      }
    }
  })();
  await Promise.race([hello.promise, delay(20)]);
  await go;
  for (let step = 0; step < steps && !peer.conn.isClosed; step++) {
    if (rng() < 0.04) {
      const bytes = fatalBytes(rng);
      if (bytes !== "raw") peer.send(bytes);
      else {
        const raw = rng() < 0.5
          ? new Uint8Array(4)
          : crypto.getRandomValues(new Uint8Array(1 + Math.floor(rng() * 16)));
        await peer.conn.write(raw).catch(() => {});
      }
    } else {
      peer.send(hostileFrame(rng, ids));
    }
    if (rng() < 0.3) await delay(Math.floor(rng() * 4));
  }
  if (rng() < 0.7) peer.close();
  await Promise.race([reading, delay(50)]);
}

/** One round: a client with random options against hostile servers, every call tracked. */
async function fuzzRound(rng: () => number, stats: FuzzStats): Promise<void> {
  const pairs = new Pairs({ readChunkBytes: pick(rng, [Infinity, 7, 1000]) });
  const servers: Promise<void>[] = [];
  const go = Promise.withResolvers<void>();
  const useReconnect = rng() < 0.3;
  const connecting = outcome(connect({
    dial: async (signal, endpoint) => {
      const conn = await pairs.dial(signal, endpoint);
      servers.push(hostileServer(pairs.peers.at(-1)!, rng, 5 + Math.floor(rng() * 60), go.promise));
      return conn;
    },
    connectTimeout: 100,
    timeout: pick(rng, [0, 30, 200]),
    richValues: rng() < 0.8,
    maxFrameBytes: 4 * 1024 * 1024,
    wrap: rng() < 0.2,
    reconnect: useReconnect ? { initialDelay: 1, maxDelay: 5, maxAttempts: 3 } : false,
    keepalive: rng() < 0.3 ? { interval: 10, timeout: 30 } : false,
    onListenerError: () => void stats.listenerErrors++,
  }));
  const connected = await within(connecting, "connect()");
  if (!connected.ok) {
    // Refused or timed out by a hostile hello: a clean rejection is all we ask.
    assert.ok(connected.error instanceof Error, `connect() rejected with ${connected.error}`);
    stats.refusedConnects++;
    go.resolve();
  } else {
    const client = connected.value as RpcClient;
    client.on("news", () => {});
    client.on("boom", () => {
      throw new Error("listener bug");
    });
    client.on("async", () => Promise.reject(new Error("async listener bug")));
    client.on("__proto__", (...params) => void params.length);
    const calls: Promise<Outcome>[] = [];
    const call = () => {
      const controller = new AbortController();
      const caller = client.withOptions({
        signal: controller.signal,
        idempotent: rng() < 0.3,
        ...(rng() < 0.5 && { timeout: 50 }),
      });
      calls.push(outcome(caller.call(pick(rng, ["a", "b.c", "news"]), randomValue(rng))));
      if (rng() < 0.1) controller.abort(new Error("aborted"));
    };
    for (let i = 0; i < 10; i++) call();
    go.resolve();
    for (let i = 0; i < 20; i++) {
      call();
      if (rng() < 0.2) {
        try {
          client.notify("n", randomValue(rng));
        } catch (error) {
          assert.ok(error instanceof ConnectionError || error instanceof TypeError, String(error));
        }
      }
      if (rng() < 0.5) await delay(Math.floor(rng() * 5));
    }
    await within(Promise.all(servers.slice()), "the hostile servers", 10_000);
    await within(client.close(), "client.close()");
    for (const result of await within(Promise.all(calls), "every call to settle")) {
      if (result.ok) {
        stats.results++;
        continue;
      }
      const error = result.error;
      if (error instanceof RpcError) {
        stats.rpcErrors++;
        assert.ok(Number.isSafeInteger(error.code), `an RpcError with code ${error.code}`);
      } else if (error instanceof ConnectionError) {
        stats.connectionErrors++;
      } else {
        assert.ok(
          error instanceof TimeoutError || error instanceof TypeError ||
            error instanceof RangeError || (error instanceof Error && error.message === "aborted"),
          `a call rejected with ${error}`,
        );
      }
    }
    await within(client.closed, "client.closed");
  }
  pairs.closeAll();
  await within(Promise.all(servers), "the hostile servers", 10_000);
}

Deno.test("a hostile server's random and adversarial frames never kill the client, and every call settles", async () => {
  const seed = Number(Deno.env.get("FUZZ_SEED") ?? Math.floor(Math.random() * 2 ** 32));
  const uncaught: unknown[] = [];
  const onRejection = (event: PromiseRejectionEvent) => {
    event.preventDefault();
    uncaught.push(event.reason);
  };
  const onError = (event: ErrorEvent) => {
    event.preventDefault();
    uncaught.push(event.error);
  };
  globalThis.addEventListener("unhandledrejection", onRejection);
  globalThis.addEventListener("error", onError);
  const rng = random(seed);
  const stats: FuzzStats = {
    results: 0,
    rpcErrors: 0,
    connectionErrors: 0,
    listenerErrors: 0,
    refusedConnects: 0,
  };
  try {
    for (let round = 0; round < 40; round++) {
      try {
        await fuzzRound(rng, stats);
      } catch (error) {
        throw new Error(`Fuzz round ${round} failed; replay with FUZZ_SEED=${seed}`, {
          cause: error,
        });
      }
    }
    await delay(10); // a rethrow from a microtask or a late rejection shows by now
    assert.deepEqual(uncaught, [], `uncaught errors; replay with FUZZ_SEED=${seed}`);
    // The hostile frames reached the code they aim at: answers, errors, listeners, lost links.
    for (const [name, count] of Object.entries(stats)) {
      if (name !== "refusedConnects") {
        assert.ok(
          count > 0,
          `no ${name} in 40 rounds (${JSON.stringify(stats)}); FUZZ_SEED=${seed}`,
        );
      }
    }
  } finally {
    globalThis.removeEventListener("unhandledrejection", onRejection);
    globalThis.removeEventListener("error", onError);
  }
});
