// Tests of the transport seam on real sockets: what a Connection promises (read, write, close,
// closed) from both listeners, reusePort, what each listener refuses, why handshakes failed and
// which refusals are reported (the metrics' hooks), and what counts as a disconnect.

import assert from "node:assert/strict";
import {
  type Connection,
  type HandshakeFailure,
  listen,
  type Listener,
  type ListenOptions,
} from "../_transport.ts";
import { disconnectError, isDisconnect } from "../_util.ts";
import { type DevCertificates, generateDevCertificates } from "../dev_cert.ts";
import {
  certs,
  delay,
  PARTIAL_CLIENT_HELLO,
  settlesWithin,
  TcpClient,
  until,
  within,
} from "./_util.ts";

type Transport = "node" | "deno";

const TRANSPORTS: readonly Transport[] = ["node", "deno"];

/** A listener on a free port whose connections and log lines the test can await. */
class TestListener implements AsyncDisposable {
  readonly lines: string[] = [];
  readonly connections: Connection[] = [];
  /** What `onHandshakeFailure` and `onRefused` were called with. */
  readonly failures: HandshakeFailure[] = [];
  readonly refusals: string[] = [];
  listener!: Listener;
  #arrived: (() => void) | undefined;

  static async open(
    transport: Transport,
    extra: Partial<ListenOptions> = {},
  ): Promise<TestListener> {
    const test = new TestListener();
    test.listener = await listen(transport, {
      hostname: "127.0.0.1",
      port: 0,
      cert: certs.cert,
      key: certs.key,
      handshakeTimeout: 5000,
      maxConnections: 100,
      onConnection: (conn) => {
        test.connections.push(conn);
        test.#arrived?.();
      },
      onHandshakeFailure: (reason) => void test.failures.push(reason),
      onRefused: (limit) => void test.refusals.push(limit),
      log: (_error, line) => void test.lines.push(line),
      ...extra,
    });
    return test;
  }

  get port(): number {
    return this.listener.addr.port;
  }

  /** The next connection handed out: the `index`th. */
  async connection(index: number): Promise<Connection> {
    while (this.connections.length <= index) {
      await within(new Promise<void>((resolve) => this.#arrived = resolve), "a connection");
    }
    return this.connections[index]!;
  }

  async [Symbol.asyncDispose](): Promise<void> {
    for (const conn of this.connections) conn.close();
    this.listener.close();
    await within(this.listener.closed, "the listener to close");
    await Promise.all(this.connections.map((conn) => within(conn.closed!, "a socket to go")));
  }
}

/** A TLS client of the test CA whose handshake is done. */
async function client(port: number): Promise<Deno.TlsConn> {
  const conn = await Deno.connectTls({ hostname: "127.0.0.1", port, caCerts: [certs.ca] });
  await conn.handshake();
  return conn;
}

function closeQuietly(conn: { close(): void }): void {
  try {
    conn.close();
  } catch {
    // Already closed.
  }
}

/** Writes through `conn` until a write has not resolved for 300 ms: the peer reads nothing. */
async function fillUntilBlocked(conn: Connection): Promise<{ blocked: Promise<number> }> {
  const chunk = new Uint8Array(64 * 1024);
  for (let i = 0; i < 10_000; i++) {
    const write = conn.write(chunk);
    if (!(await settlesWithin(write, 300))) return { blocked: write };
    await write;
  }
  throw new Error("The peer took 640 MiB without reading");
}

Deno.test("Connection: read resolves with the peer's bytes, then null once the peer ends the stream", async (t) => {
  for (const transport of TRANSPORTS) {
    await t.step(transport, async () => {
      await using server = await TestListener.open(transport);
      const peer = await client(server.port);
      const conn = await server.connection(0);
      await peer.write(new TextEncoder().encode("hello"));
      const buffer = new Uint8Array(16);
      const count = await within(conn.read(buffer), "the bytes");
      assert.equal(new TextDecoder().decode(buffer.subarray(0, count!)), "hello");
      await peer.closeWrite();
      assert.equal(await within(conn.read(buffer), "the end"), null);
      closeQuietly(peer);
    });
  }
});

Deno.test("Connection.close(): a read under way resolves null and a blocked write rejects with a disconnect error, at once", async (t) => {
  for (const transport of TRANSPORTS) {
    await t.step(transport, async () => {
      await using server = await TestListener.open(transport);
      const peer = await client(server.port);
      const conn = await server.connection(0);
      const reading = conn.read(new Uint8Array(1024));
      const { blocked } = await fillUntilBlocked(conn);
      conn.close();
      conn.close(); // idempotent
      assert.equal(await within(reading, "the read to end", 100), null);
      const error = await within(
        blocked.then(() => undefined, (e: unknown) => e),
        "the write",
        100,
      );
      assert.ok(isDisconnect(error), `not a disconnect: ${error}`);
      const later = await conn.write(new Uint8Array(1)).then(() => undefined, (e) => e);
      assert.ok(isDisconnect(later), `not a disconnect: ${later}`);
      assert.equal(await conn.read(new Uint8Array(1)), null);
      closeQuietly(peer);
      await within(conn.closed!, "the socket to go");
    });
  }
});

Deno.test("Connection.write rejects with a disconnect error once the peer is gone", async (t) => {
  for (const transport of TRANSPORTS) {
    await t.step(transport, async () => {
      await using server = await TestListener.open(transport);
      const peer = await client(server.port);
      const conn = await server.connection(0);
      peer.close();
      const error = await within(
        (async () => {
          // The first writes may land in buffers before the reset is known.
          for (let i = 0; i < 1000; i++) await conn.write(new Uint8Array(16 * 1024));
        })().then(() => undefined, (e) => e),
        "a write to fail",
      );
      assert.ok(error !== undefined, "1000 writes to a closed peer succeeded");
      assert.ok(isDisconnect(error), `not a disconnect: ${error}`);
      conn.close();
    });
  }
});

Deno.test("Connection.closed resolves only once the socket is gone, and until then the connection counts against maxConnections", async (t) => {
  for (const transport of TRANSPORTS) {
    await t.step(transport, async () => {
      await using server = await TestListener.open(transport, { maxConnections: 1 });
      const peer = await client(server.port);
      const conn = await server.connection(0);
      await fillUntilBlocked(conn);
      conn.close();
      if (transport === "deno") {
        // Deno's close() would leave the socket open, unseen, as long as the peer reads nothing:
        // the connection waits for the peer, and still counts.
        assert.equal(await settlesWithin(conn.closed!, 1500), false);
        const refused = await Deno.connectTls({
          hostname: "127.0.0.1",
          port: server.port,
          caCerts: [certs.ca],
        });
        await until(() => server.lines.some((line) => line.startsWith("refused ")), "a refusal");
        closeQuietly(refused);
        closeQuietly(peer);
        await within(conn.closed!, "the socket to go once the peer left");
      } else {
        // node destroys the socket after a grace period, whatever the peer does.
        await within(conn.closed!, "the socket to go", 3000);
        closeQuietly(peer);
      }
      const next = await client(server.port);
      const served = await server.connection(1);
      await next.write(new Uint8Array([1]));
      assert.equal(await within(served.read(new Uint8Array(1)), "a byte"), 1);
      closeQuietly(next);
    });
  }
});

Deno.test("deno transport: a timed-out handshake counts against maxConnections until its peer leaves", async () => {
  await using server = await TestListener.open("deno", {
    maxConnections: 1,
    handshakeTimeout: 200,
  });
  const silent = await Deno.connect({ hostname: "127.0.0.1", port: server.port });
  await until(
    () => server.lines.some((line) => line.includes("no handshake within 200 ms")),
    "the timeout",
  );
  // Deno would keep its socket open anyway: it still holds the only place.
  const refused = await Deno.connect({ hostname: "127.0.0.1", port: server.port });
  await until(() => server.lines.some((line) => line.startsWith("refused ")), "a refusal");
  closeQuietly(refused);
  silent.close();
  // A refused client may still complete its handshake (Deno finishes it in the background before
  // the close): served means handed out.
  await until(async () => {
    const next = await client(server.port).catch(() => undefined);
    await delay(200);
    if (next !== undefined) closeQuietly(next);
    return server.connections.length > 0;
  }, "a client handed out once the silent one left");
});

Deno.test("deno transport: closing the listener stops waiting for peers that read nothing", async () => {
  await using server = await TestListener.open("deno");
  const peer = await client(server.port);
  const conn = await server.connection(0);
  await fillUntilBlocked(conn);
  conn.close();
  assert.equal(await settlesWithin(conn.closed!, 300), false);
  server.listener.close();
  await within(server.listener.closed, "the listener to close");
  await within(conn.closed!, "the connection to let go");
  closeQuietly(peer);
});

Deno.test("listen() with reusePort: two node listeners on one port stay quiet for 3 s idle, and both keep serving", async () => {
  await using first = await TestListener.open("node", { reusePort: true });
  await using second = await TestListener.open("node", { reusePort: true, port: first.port });
  assert.equal(second.port, first.port);
  // Long enough for the watchdog to look a few times (after 1 s, then 2 s).
  await delay(3000);
  assert.deepEqual([...first.lines, ...second.lines], []);
  // The kernel spreads connections by their ports: a few dozen reach both.
  const peers: Deno.TlsConn[] = [];
  try {
    for (
      let i = 0;
      i < 64 && (first.connections.length === 0 || second.connections.length === 0);
      i++
    ) {
      peers.push(await client(first.port));
    }
    assert.ok(first.connections.length > 0 && second.connections.length > 0);
    await until(
      () => first.connections.length + second.connections.length === peers.length,
      "every connection handed out",
    );
  } finally {
    for (const peer of peers) closeQuietly(peer);
  }
  assert.deepEqual([...first.lines, ...second.lines], []);
});

Deno.test("listen() with reusePort: a closed listener leaves its sibling all the connections", async () => {
  // The watchdog names the socket through a duplicate descriptor: left open, it would keep the
  // closed listener's socket in the port's group, and connections would wait there for no one.
  await using first = await TestListener.open("node", { reusePort: true });
  await using second = await TestListener.open("node", { reusePort: true, port: first.port });
  first.listener.close();
  await within(first.listener.closed, "the first listener to close");
  const peers: Deno.TlsConn[] = [];
  try {
    for (let i = 0; i < 16; i++) {
      peers.push(await within(client(first.port), `connection ${i}`, 2000));
    }
    await until(() => second.connections.length === 16, "every connection at the second");
  } finally {
    for (const peer of peers) closeQuietly(peer);
  }
});

Deno.test("listen() with a certificate the TLS stack refuses logs nothing while idle, and one line per client", async () => {
  // A key that is not the certificate's: every handshake fails at once.
  const { privateKey } = await crypto.subtle.generateKey(
    { name: "ECDSA", namedCurve: "P-256" },
    true,
    ["sign", "verify"],
  );
  const pkcs8 = new Uint8Array(await crypto.subtle.exportKey("pkcs8", privateKey));
  const key = `-----BEGIN PRIVATE KEY-----\n${
    btoa(String.fromCharCode(...pkcs8)).match(/.{1,64}/g)!.join("\n")
  }\n-----END PRIVATE KEY-----\n`;
  await using server = await TestListener.open("node", { key });
  // Long enough for the watchdog's probe to run twice; its handshakes fail too, uncounted.
  await delay(3000);
  assert.deepEqual(server.lines, []);
  assert.deepEqual(server.failures, []);
  await assert.rejects(client(server.port));
  await until(() => server.lines.length > 0, "the failed handshake in the log");
  assert.equal(server.lines.length, 1);
  assert.match(server.lines[0]!, /^TLS handshake with 127\.0\.0\.1:\d+ failed: /);
  assert.deepEqual(server.failures, ["other"]);
});

Deno.test("listen() refuses what the deno transport cannot do with a TypeError", async (t) => {
  const cases: [string, Partial<ListenOptions>, RegExp][] = [
    ["clientCa", { clientCa: certs.ca }, /^Cannot serve: clientCa needs the "node" transport/],
    ["reusePort", { reusePort: true }, /^Cannot serve: reusePort needs the "node" transport/],
    [
      "proxyProtocol",
      { proxyProtocol: true },
      /^Cannot serve: proxyProtocol needs the "node" transport/,
    ],
  ];
  for (const [name, extra, message] of cases) {
    await t.step(name, async () => {
      await assert.rejects(TestListener.open("deno", extra), (error: unknown) => {
        assert.ok(error instanceof TypeError);
        assert.match(error.message, message);
        return true;
      });
    });
  }
});

/** Two development CAs, each with a server certificate and a client certificate. */
let pki: Promise<[DevCertificates, DevCertificates]> | undefined;
function devPki(): Promise<[DevCertificates, DevCertificates]> {
  pki ??= Promise.all([
    generateDevCertificates({ clientName: "member" }),
    generateDevCertificates({ clientName: "stranger" }),
  ]);
  return pki;
}

/** Writes `bytes` on a plain TCP connection and waits for the server to close it. */
async function sendAndWait(port: number, bytes: Uint8Array): Promise<void> {
  await using conn = await TcpClient.connect(port);
  await conn.write(bytes);
  await within(conn.closed, "the server to close the connection");
}

/** A TLS client with `options`, whose handshake or first read the server refuses. */
async function refusedClient(
  port: number,
  options: Partial<Deno.ConnectTlsOptions> & { cert?: string; key?: string },
): Promise<void> {
  let conn: Deno.TlsConn | undefined;
  try {
    conn = await Deno.connectTls({ hostname: "127.0.0.1", port, ...options });
    await conn.handshake();
    // TLS 1.3: the client is done before the server has looked at its certificate.
    assert.equal(await within(conn.read(new Uint8Array(16)), "the refusal"), null);
  } catch {
    // Refused.
  } finally {
    if (conn !== undefined) closeQuietly(conn);
  }
}

Deno.test("onHandshakeFailure is called once for each failed handshake, with why it failed", async (t) => {
  const [pki, strangers] = await devPki();
  for (const transport of TRANSPORTS) {
    await t.step(transport, async (t) => {
      const node = transport === "node";
      await using server = await TestListener.open(transport, {
        cert: pki.cert,
        key: pki.key,
        handshakeTimeout: 300,
        ...(node && { clientCa: pki.caCert }),
      });
      const port = server.port;
      let reported = () => Promise.resolve();
      const cases: [string, () => Promise<void>, HandshakeFailure, RegExp][] = [
        [
          "plaintext",
          () => sendAndWait(port, new TextEncoder().encode("hello there\n")),
          "protocol",
          /received corrupt message/,
        ],
        [
          "an HTTP request",
          () => sendAndWait(port, new TextEncoder().encode("GET / HTTP/1.1\r\nHost: x\r\n\r\n")),
          "protocol",
          /received corrupt message/,
        ],
        [
          "a client that stalls past the handshake timeout",
          async () => {
            // Not waiting for the close: the "deno" transport keeps the socket until we leave.
            await using conn = await TcpClient.connect(port);
            await conn.write(PARTIAL_CLIENT_HELLO);
            await reported();
          },
          "timeout",
          /TLS handshake timeout|no handshake within 300 ms/,
        ],
        [
          "a client that leaves mid-handshake",
          async () => {
            const conn = await Deno.connect({ hostname: "127.0.0.1", port });
            await conn.write(PARTIAL_CLIENT_HELLO);
            await delay(50);
            conn.close();
          },
          "reset",
          /socket hang up|unexpected end of file/,
        ],
        ...(node
          ? [
            [
              "no client certificate",
              () => refusedClient(port, { caCerts: [pki.caCert] }),
              "certificate",
              /peer sent no certificates/,
            ],
            [
              "a client certificate clientCa did not sign",
              () =>
                refusedClient(port, {
                  caCerts: [pki.caCert],
                  cert: strangers.clientCert!,
                  key: strangers.clientKey!,
                }),
              "certificate",
              /the client's certificate was refused \(UNABLE_TO_VERIFY_LEAF_SIGNATURE\)/,
            ],
          ] satisfies [string, () => Promise<void>, HandshakeFailure, RegExp][]
          : []),
      ];
      for (const [name, run, expected, line] of cases) {
        await t.step(name, async () => {
          const before = server.failures.length;
          const lines = server.lines.length;
          reported = () => until(() => server.failures.length > before, "the failure reported");
          await run();
          await reported();
          // Long enough for a second report of the same connection to come.
          await delay(200);
          assert.deepEqual(server.failures.slice(before), [expected]);
          const logged = server.lines.slice(lines);
          assert.equal(logged.length, 1, logged.join("\n"));
          assert.match(logged[0]!, /^TLS handshake with 127\.0\.0\.1:\d+ failed: /);
          assert.match(logged[0]!, line);
        });
      }
      await t.step("a good client is no failure", async () => {
        const conn = await Deno.connectTls({
          hostname: "127.0.0.1",
          port,
          caCerts: [pki.caCert],
          ...(node && { cert: pki.clientCert!, key: pki.clientKey! }),
        });
        await conn.handshake();
        await server.connection(0);
        closeQuietly(conn);
        assert.equal(server.failures.length, cases.length);
      });
    });
  }
});

Deno.test("onRefused is called once for a connection over maxConnections, which is no handshake failure", async (t) => {
  for (const transport of TRANSPORTS) {
    await t.step(transport, async () => {
      await using server = await TestListener.open(transport, { maxConnections: 1 });
      const first = await client(server.port);
      await server.connection(0);
      // Not waiting for the close: the "deno" transport's socket lives on until we leave.
      await using _second = await TcpClient.connect(server.port);
      await until(() => server.refusals.length > 0, "the refusal reported");
      await delay(100);
      assert.deepEqual(server.refusals, ["max_connections"]);
      assert.deepEqual(server.failures, []);
      assert.equal(server.lines.filter((line) => line.startsWith("refused ")).length, 1);
      closeQuietly(first);
    });
  }
});

Deno.test("node transport: closing the listener reports no failure for the handshakes it cuts short", async (t) => {
  for (const proxyProtocol of [false, true]) {
    await t.step(proxyProtocol ? "with proxyProtocol" : "without proxyProtocol", async () => {
      await using server = await TestListener.open("node", { proxyProtocol });
      await using stalled = await TcpClient.connect(server.port);
      await stalled.write(PARTIAL_CLIENT_HELLO.subarray(0, proxyProtocol ? 0 : 5));
      await delay(100);
      server.listener.close();
      await within(stalled.closed, "the handshaking connection to close");
      await delay(100);
      assert.deepEqual(server.failures, []);
      assert.deepEqual(server.lines, []);
    });
  }
});

Deno.test("isDisconnect() knows a disconnect by its code or its Deno class, and nothing else", async (t) => {
  const withCode = (code: string) => Object.assign(new Error("x"), { code });
  const cases: [string, unknown, boolean][] = [
    ["ECONNRESET", withCode("ECONNRESET"), true],
    ["EPIPE", withCode("EPIPE"), true],
    ["ECONNABORTED", withCode("ECONNABORTED"), true],
    ["ECANCELED (a write cut short by destroy)", withCode("ECANCELED"), true],
    ["ERR_STREAM_DESTROYED", withCode("ERR_STREAM_DESTROYED"), true],
    ["ERR_STREAM_WRITE_AFTER_END", withCode("ERR_STREAM_WRITE_AFTER_END"), true],
    ["disconnectError()", disconnectError("Cannot write: the connection is closed"), true],
    ["Deno.errors.BrokenPipe", new Deno.errors.BrokenPipe("x"), true],
    ["Deno.errors.ConnectionReset", new Deno.errors.ConnectionReset("x"), true],
    ["Deno.errors.UnexpectedEof", new Deno.errors.UnexpectedEof("x"), true],
    ["EMFILE", withCode("EMFILE"), false],
    ["an Error without a code", new Error("x"), false],
    ["Deno.errors.PermissionDenied", new Deno.errors.PermissionDenied("x"), false],
    ["a string", "ECONNRESET", false],
    ["null", null, false],
    ["a numeric code", Object.assign(new Error("x"), { code: 32 }), false],
  ];
  for (const [name, error, expected] of cases) {
    await t.step(name, () => assert.equal(isDisconnect(error), expected));
  }
});
