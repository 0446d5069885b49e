import assert from "node:assert/strict";
import { connect } from "../client.ts";
import { type CallContext, callContext } from "../context.ts";
import { CancelledError, ConnectionError, TimeoutError } from "../errors.ts";
import { serve } from "../server.ts";
import {
  certs,
  connectTo,
  delay,
  fakeTlsServer,
  RawClient,
  serverOptions,
  within,
} from "./_util.ts";

/** A handler that records its context and waits until its signal aborts, then reports why. */
function waiter() {
  const started = Promise.withResolvers<CallContext>();
  const aborted = Promise.withResolvers<unknown>();
  async function wait(): Promise<string> {
    const context = callContext()!;
    started.resolve(context);
    await new Promise<void>((resolve) => {
      context.signal.addEventListener("abort", () => resolve(), { once: true });
    });
    aborted.resolve(context.signal.reason);
    return "late";
  }
  return { wait, started: started.promise, aborted: aborted.promise };
}

Deno.test("callContext() gives a handler its peer, id, method and deadline, in plain and async handlers", async (t) => {
  const seen: Record<string, unknown> = {};
  function plain(): string {
    const context = callContext()!;
    seen.plain = { hostname: context.peer.hostname, id: context.id, method: context.method };
    return "ok";
  }
  async function later(): Promise<string> {
    await delay(5);
    const context = callContext()!;
    seen.later = {
      method: context.method,
      deadline: typeof context.deadline,
      port: context.peer.port,
    };
    return "ok";
  }
  await using server = await serve({ plain, ns: { later } }, serverOptions());
  await using client = await connectTo(server.addr.port);
  await t.step("plain function, inside the call", async () => {
    assert.equal(await client.call("plain"), "ok");
    assert.deepEqual(seen.plain, { hostname: "127.0.0.1", id: 1, method: "plain" });
  });
  await t.step("async function, after an await, with a deadline", async () => {
    assert.equal(await client.withOptions({ timeout: 5000 }).call("ns.later"), "ok");
    const later = seen.later as { method: string; deadline: string; port: number };
    assert.equal(later.method, "ns.later");
    assert.equal(later.deadline, "number");
    assert.ok(later.port > 0);
  });
  await t.step("outside a call there is none", () => {
    assert.equal(callContext(), undefined);
  });
});

Deno.test("aborting the caller's signal rejects at once with its reason and aborts the handler with CancelledError", async () => {
  const { wait, started, aborted } = waiter();
  await using server = await serve({ wait, ping: () => "pong" }, serverOptions());
  await using client = await connectTo(server.addr.port);
  const controller = new AbortController();
  const call = client.withOptions({ signal: controller.signal }).proxy.wait();
  await within(started, "the handler to start");
  const reason = new Error("user gave up");
  controller.abort(reason);
  await assert.rejects(call, (error) => error === reason);
  assert.ok((await within(aborted, "the handler's signal to abort")) instanceof CancelledError);
  // The connection is still good, and the late result of the cancelled call never arrives.
  assert.equal(await client.call("ping"), "pong");
});

Deno.test("an already aborted signal rejects without sending the call", async () => {
  let calls = 0;
  await using server = await serve({ count: () => ++calls }, serverOptions());
  await using client = await connectTo(server.addr.port);
  const reason = new Error("too late");
  await assert.rejects(
    client.withOptions({ signal: AbortSignal.abort(reason) }).call("count"),
    (error) => error === reason,
  );
  assert.equal(await client.call("count"), 1);
});

Deno.test("a call's timeout travels as its deadline: the handler's signal aborts with TimeoutError and the late result is dropped", async () => {
  const { wait, started, aborted } = waiter();
  await using server = await serve({ wait, ping: () => "pong" }, serverOptions());
  await using raw = await RawClient.connect(server.addr.port);
  await raw.send({ jsonrpc: "2.0", id: 1, method: "wait", timeout: 100 });
  const context = await within(started, "the handler to start");
  assert.equal(typeof context.deadline, "number");
  assert.ok((await within(aborted, "the deadline to abort the handler")) instanceof TimeoutError);
  // Nothing is sent for call 1: the next frame answers call 2.
  assert.deepEqual(await raw.exchange({ jsonrpc: "2.0", id: 2, method: "ping" }), {
    jsonrpc: "2.0",
    id: 2,
    result: "pong",
  });
});

Deno.test("the client rejects with TimeoutError when its per-call timeout passes, and other calls go on", async () => {
  const { wait, aborted } = waiter();
  await using server = await serve({ wait, ping: () => "pong" }, serverOptions());
  await using client = await connectTo(server.addr.port);
  const slow = client.withOptions({ timeout: 100 }).proxy.wait();
  const fast = client.proxy.ping();
  assert.equal(await fast, "pong");
  await assert.rejects(slow, TimeoutError);
  assert.ok((await within(aborted, "the server-side abort")) instanceof TimeoutError);
});

Deno.test("a timeout that is not a positive number is an invalid request", async (t) => {
  await using server = await serve({ ping: () => "pong" }, serverOptions());
  await using raw = await RawClient.connect(server.addr.port);
  for (const timeout of [0, -5, "100", null]) {
    await t.step(`timeout ${JSON.stringify(timeout)}`, async () => {
      const reply = await raw.exchange({ jsonrpc: "2.0", id: 1, method: "ping", timeout }) as {
        error: { code: number };
      };
      assert.equal(reply.error.code, -32600);
    });
  }
});

Deno.test("a client that disconnects aborts the signals of its calls in flight", async () => {
  const { wait, started, aborted } = waiter();
  await using server = await serve({ wait }, serverOptions());
  const client = await connectTo(server.addr.port);
  const call = assert.rejects(client.call("wait"), ConnectionError);
  await within(started, "the handler to start");
  await client.close();
  await call;
  assert.ok(
    (await within(aborted, "the disconnect to abort the handler")) instanceof ConnectionError,
  );
});

Deno.test("rpc.cancel answers whether it found the call, and ignores unknown ids", async () => {
  const { wait, started, aborted } = waiter();
  await using server = await serve({ wait }, serverOptions());
  await using raw = await RawClient.connect(server.addr.port);
  await raw.send({ jsonrpc: "2.0", id: "job", method: "wait" });
  await within(started, "the handler to start");
  assert.deepEqual(
    await raw.exchange({ jsonrpc: "2.0", id: 2, method: "rpc.cancel", params: ["nope"] }),
    {
      jsonrpc: "2.0",
      id: 2,
      result: false,
    },
  );
  assert.deepEqual(
    await raw.exchange({ jsonrpc: "2.0", id: 3, method: "rpc.cancel", params: { id: "job" } }),
    { jsonrpc: "2.0", id: 3, result: true },
  );
  assert.ok((await within(aborted, "the cancel to abort the handler")) instanceof CancelledError);
  const bad = await raw.exchange({ jsonrpc: "2.0", id: 4, method: "rpc.cancel", params: [{}] }) as {
    error: { code: number };
  };
  assert.equal(bad.error.code, -32602);
});

Deno.test("a handler's callContext().notify() reaches the client's listeners on the same connection", async () => {
  function importRows(rows: number): number {
    const context = callContext()!;
    for (let done = 1; done <= rows; done++) context.notify("progress", done, rows);
    context.notify("note", { text: "by name" });
    return rows;
  }
  await using server = await serve({ importRows }, serverOptions());
  await using client = await connectTo(server.addr.port);
  await using other = await connectTo(server.addr.port);
  const progress: unknown[][] = [];
  const notes: unknown[] = [];
  const stop = client.on("progress", (...params) => progress.push(params));
  client.on("note", (note) => notes.push(note));
  const elsewhere: unknown[] = [];
  other.on("progress", (...params) => elsewhere.push(params));
  assert.equal(await client.call("importRows", 3), 3);
  assert.deepEqual(progress, [[1, 3], [2, 3], [3, 3]]);
  assert.deepEqual(notes, [{ text: "by name" }]);
  assert.deepEqual(elsewhere, [], "another connection hears nothing");
  stop();
  assert.equal(await client.call("importRows", 1), 1);
  assert.equal(progress.length, 3, "no more after unsubscribing");
});

Deno.test("the client answers a request from the server with method not found", async () => {
  // A hand-made server: it calls the client, reads what comes back, and waits for it to leave.
  const replied = Promise.withResolvers<unknown>();
  await using server = fakeTlsServer(async (peer) => {
    replied.resolve(await peer.exchange({ jsonrpc: "2.0", id: 9, method: "whoAreYou" }));
    while (await peer.receiveText() !== null) { /* until the client leaves */ }
  });
  await using client = await connect({
    hostname: "127.0.0.1",
    port: server.port,
    caCerts: [certs.ca],
    richValues: false, // this hand-made server answers no rpc.hello
  });
  const reply = await within(replied.promise, "the client's reply") as {
    id: number;
    error: { code: number };
  };
  assert.equal(reply.id, 9);
  assert.equal(reply.error.code, -32601);
  assert.equal(client.isClosed, false);
});

Deno.test("notifications from the client reach the server's handlers", async () => {
  const got = Promise.withResolvers<string>();
  await using server = await serve({ log: (line: string) => got.resolve(line) }, serverOptions());
  await using client = await connectTo(server.addr.port);
  client.notify("log", "hello");
  assert.equal(await within(got.promise, "the notification"), "hello");
});

Deno.test("requireCallContext() gives the context inside a handler and throws TypeError outside one", async () => {
  const { requireCallContext } = await import("../context.ts");
  assert.throws(() => requireCallContext(), TypeError);
  await using server = await serve({
    peerPort: () => requireCallContext().peer.port,
    later: async () => {
      await new Promise((resolve) => setTimeout(resolve, 1));
      return requireCallContext().method;
    },
  }, serverOptions());
  await using client = await connect({ port: server.addr.port, caCerts: [certs.ca] });
  assert.ok((await client.call("peerPort") as number) > 0);
  assert.equal(await client.call("later"), "later");
});
