// Tests of the client against a server that stops reading or answering, over the in-memory
// transport with the server scripted by the test (_client_memory.ts): keepalive pings, calls that
// time out or are aborted before their bytes are written, maxQueuedBytes and writeTimeout. First,
// the memory pair's own flow control (bufferBytes, stopReading, close) that these tests rely on.

import assert from "node:assert/strict";
import { connect } from "../client.ts";
import { ConnectionError, TimeoutError } from "../errors.ts";
import { memoryPair } from "../_transport_memory.ts";
import { connectMemory, Pairs } from "./_client_memory.ts";
import { delay, outcome, rejectsWith, within } from "./_util.ts";

const decoder = new TextDecoder();
const encoder = new TextEncoder();

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
