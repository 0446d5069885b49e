// The server under connection resets, on the runtime that runs the tests: peers that reset the
// TCP connection before, during and after the TLS handshake, in the middle of a frame, and while
// the server writes to them. The server must log a line for what cost a connection, throw nothing
// (an uncaught error would end the test process), let every connection go, and keep serving.

import assert from "node:assert/strict";
import net from "node:net";
import { test } from "node:test";
import tls from "node:tls";
import { certs, connectTo, handlers, sleep, startServer, within } from "./_util.ts";

/** A raw TCP connection to `port`, once connected. */
function tcp(port: number): Promise<net.Socket> {
  return new Promise((resolve, reject) => {
    const socket = net.connect({ host: "127.0.0.1", port }, () => {
      socket.off("error", reject);
      socket.on("error", () => {});
      resolve(socket);
    });
    socket.once("error", reject);
  });
}

/** TLS over `raw`, once the handshake is done. */
function tlsOver(raw: net.Socket): Promise<tls.TLSSocket> {
  return new Promise((resolve, reject) => {
    const socket = tls.connect({ socket: raw, servername: "localhost", ca: [certs.ca] }, () => {
      socket.off("error", reject);
      socket.on("error", () => {});
      resolve(socket);
    });
    socket.once("error", reject);
  });
}

/** A frame of JSON text. */
function frame(text: string): Uint8Array {
  const body = new TextEncoder().encode(text);
  const bytes = new Uint8Array(4 + body.length);
  new DataView(bytes.buffer).setUint32(0, body.length);
  bytes.set(body, 4);
  return bytes;
}

/** Each way a peer resets its connection: resolves once the reset is sent. */
const resets: [string, (port: number) => Promise<void>][] = [
  ["before the handshake", async (port) => {
    (await tcp(port)).resetAndDestroy();
  }],
  ["during the handshake", async (port) => {
    const raw = await tcp(port);
    // A ClientHello's first bytes: the server waits for the rest.
    raw.write(new Uint8Array([0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc, 0x03, 0x03]));
    await sleep(20);
    raw.resetAndDestroy();
  }],
  ["after the handshake", async (port) => {
    const raw = await tcp(port);
    await tlsOver(raw);
    raw.resetAndDestroy();
  }],
  ["in the middle of a frame", async (port) => {
    const raw = await tcp(port);
    const socket = await tlsOver(raw);
    const whole = frame('{"jsonrpc":"2.0","method":"add","params":[1,2],"id":1}');
    socket.write(whole.subarray(0, 20));
    await sleep(20);
    raw.resetAndDestroy();
  }],
  ["while the server writes a large answer", async (port) => {
    const raw = await tcp(port);
    const socket = await tlsOver(raw);
    socket.write(frame('{"jsonrpc":"2.0","method":"text","params":[4000000],"id":1}'));
    await sleep(50);
    raw.resetAndDestroy();
  }],
  ["with calls in flight", async (port) => {
    const raw = await tcp(port);
    const socket = await tlsOver(raw);
    for (let id = 1; id <= 20; id++) {
      socket.write(frame(`{"jsonrpc":"2.0","method":"later","params":[${id},30],"id":${id}}`));
    }
    await sleep(10);
    raw.resetAndDestroy();
  }],
];

test("the server survives peers that reset their connection at any point, and keeps serving", async (t) => {
  const logs: string[] = [];
  await using server = await startServer(handlers, { logs, maxConnections: 8, metrics: true });
  const port = server.addr.port;
  for (const [name, reset] of resets) {
    await t.test(name, async () => {
      // More resets than maxConnections: a connection that was not let go would refuse the rest.
      for (let i = 0; i < 10; i++) await within(reset(port), `reset ${i}`);
      await using client = await within(connectTo(port), "a connection after the resets");
      assert.equal(await client.call("add", 2, 2), 4);
    });
  }
  // Every connection is let go: the reset ones and the checks'.
  for (let i = 0; i < 100 && server.metrics!.snapshot().connections > 0; i++) await sleep(20);
  assert.equal(server.metrics!.snapshot().connections, 0, "connections still open");
  for (const line of logs) {
    assert.equal(typeof line, "string");
    assert.doesNotMatch(line, /is not defined|ReferenceError|TypeError/, line);
  }
  // Eight clients at once: the limit holds no connection that is gone.
  const clients = await within(
    Promise.all(Array.from({ length: 8 }, () => connectTo(port))),
    "eight clients",
  );
  try {
    assert.deepEqual(await Promise.all(clients.map((c) => c.call("add", 1, 1))), Array(8).fill(2));
  } finally {
    await Promise.all(clients.map((client) => client.close()));
  }
  await within(server.shutdown(), "shutdown");
});
