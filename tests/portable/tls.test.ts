// A client against a server over real TLS on loopback, both on the runtime that runs the tests:
// names and addresses verified, mutual TLS, the same words for TLS failures on every runtime,
// timeouts and signals, metrics, and what only Deno can do.

import assert from "node:assert/strict";
import net from "node:net";
import tls from "node:tls";
import process from "node:process";
import { describe, test } from "node:test";
import { callContext, ConnectionError, TimeoutError } from "../../mod.ts";
import { generateDevCertificates } from "../../dev_cert.ts";
import { certs, connectTo, handlers, runtime, sleep, startServer, within } from "./_util.ts";

/** A port that refuses connections: bound, then closed. */
async function closedPort(): Promise<number> {
  const server = net.createServer();
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const { port } = server.address() as net.AddressInfo;
  await new Promise<void>((resolve) => server.close(() => resolve()));
  return port;
}

/** A plain TCP server on 127.0.0.1 that does what `handle` says with each socket. */
async function tcpServer(
  handle: (socket: net.Socket) => void,
): Promise<net.Server & AsyncDisposable> {
  const sockets = new Set<net.Socket>();
  const server = net.createServer((socket) => {
    sockets.add(socket);
    socket.on("error", () => {});
    socket.on("close", () => sockets.delete(socket));
    handle(socket);
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  return Object.assign(server, {
    async [Symbol.asyncDispose]() {
      for (const socket of sockets) socket.destroy();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  });
}

/** How connect() failed: its error, which must be a ConnectionError or TimeoutError. */
async function connectFailure(promise: Promise<{ close(): Promise<void> }>): Promise<Error> {
  const outcome = await within(
    promise.then(async (client) => {
      await client.close();
      return undefined;
    }, (error: unknown) => error),
    "connect()",
  );
  assert.ok(outcome instanceof Error, "connect() should have failed");
  return outcome;
}

describe("connect() over TLS", () => {
  test("calls a server by name, by IPv4 and by IPv6 address, each verified against the certificate", async (t) => {
    for (const hostname of ["localhost", "127.0.0.1", "::1"]) {
      await t.test(hostname, async () => {
        const listen = hostname === "localhost" ? "127.0.0.1" : hostname;
        await using server = await startServer(handlers, { hostname: listen });
        await using client = await connectTo(server.addr.port, { hostname });
        assert.equal(await client.call("add", 2, 3), 5);
        assert.equal(await client.call("runtime"), runtime);
      });
    }
  });

  test("presents a client certificate, which the server's handlers see (mutual TLS)", async () => {
    await using server = await startServer({
      whoami: () => callContext()?.certificate?.subject.CN,
    }, { clientCa: certs.ca });
    await using client = await connectTo(server.addr.port, { cert: certs.cert, key: certs.key });
    assert.deepEqual(await client.call("whoami"), ["localhost"]);
  });

  test("rejects with TimeoutError when the handshake never completes, leaking nothing", async () => {
    await using silent = await tcpServer(() => {});
    const { port } = silent.address() as net.AddressInfo;
    const error = await connectFailure(connectTo(port, { connectTimeout: 200 }));
    assert.ok(error instanceof TimeoutError, `expected TimeoutError, got ${error}`);
    assert.match(
      error.message,
      /^Cannot connect to "127\.0\.0\.1:\d+": no connection within 200 ms/,
    );
  });

  test("rejects with the signal's reason when it is aborted", async () => {
    await using silent = await tcpServer(() => {});
    const { port } = silent.address() as net.AddressInfo;
    const controller = new AbortController();
    const reason = new Error("changed my mind");
    setTimeout(() => controller.abort(reason), 50);
    const error = await connectFailure(connectTo(port, { signal: controller.signal }));
    assert.equal(error, reason);
  });
});

describe("connect() words TLS failures the same on every runtime", () => {
  const untrusted = /the server's certificate is not signed by a trusted CA \(.+\)$/;

  test("a server certificate no trusted CA signed", async () => {
    await using server = await startServer(handlers);
    const other = await generateDevCertificates();
    for (const caCerts of [[], [other.caCert]]) {
      const error = await connectFailure(
        connectTo(server.addr.port, { hostname: "localhost", caCerts }),
      );
      assert.ok(error instanceof ConnectionError, `expected ConnectionError, got ${error}`);
      assert.match(error.message, /^Cannot connect to "localhost:\d+": /);
      assert.match(error.message, untrusted);
      assert.ok(error.cause instanceof Error, "the TLS stack's error is the cause");
    }
  });

  test("a server certificate for other names", async () => {
    await using server = await startServer(handlers, { hostname: "127.0.0.2" });
    const error = await connectFailure(connectTo(server.addr.port, { hostname: "127.0.0.2" }));
    assert.match(
      error.message,
      /^Cannot connect to "127\.0\.0\.2:\d+": the server's certificate is not valid for "127\.0\.0\.2" \(.+\)$/,
    );
  });

  test("an expired server certificate", async () => {
    const old = await generateDevCertificates({ now: new Date(Date.now() - 3 * 365 * 86_400_000) });
    await using server = await startServer(handlers, { cert: old.cert, key: old.key });
    const error = await connectFailure(
      connectTo(server.addr.port, { hostname: "localhost", caCerts: [old.caCert] }),
    );
    assert.match(error.message, /: the server's certificate has expired \(.+\)$/);
  });

  test("no client certificate for a server that requires one", async () => {
    await using server = await startServer(handlers, { clientCa: certs.ca });
    const error = await connectFailure(connectTo(server.addr.port));
    assert.ok(error instanceof ConnectionError, `expected ConnectionError, got ${error}`);
    assert.match(
      error.message,
      /^Cannot connect to "127\.0\.0\.1:\d+": the server requires a client certificate for mutual TLS \(.+\)$/,
    );
  });

  test("a client certificate the server does not trust", async () => {
    await using server = await startServer(handlers, { clientCa: certs.ca });
    const other = await generateDevCertificates({ clientName: "stranger" });
    const error = await connectFailure(
      connectTo(server.addr.port, { cert: other.clientCert!, key: other.clientKey! }),
    );
    assert.match(
      error.message,
      /^Cannot connect to "127\.0\.0\.1:\d+": the server closed the connection before it answered: it may have refused the client certificate/,
    );
  });

  test("a server that does not speak TLS", async () => {
    await using http = await tcpServer((socket) =>
      socket.once("data", () => socket.end("HTTP/1.1 400 Bad Request\r\n\r\n"))
    );
    const { port } = http.address() as net.AddressInfo;
    const error = await connectFailure(connectTo(port));
    assert.match(
      error.message,
      /^Cannot connect to "127\.0\.0\.1:\d+": the server does not speak TLS \(.+\)$/,
    );
  });

  test("a port where nothing listens", async () => {
    const error = await connectFailure(connectTo(await closedPort()));
    assert.match(
      error.message,
      /^Cannot connect to "127\.0\.0\.1:\d+": nothing listens there, the connection was refused \(.+\)$/,
    );
  });
});

describe("serve()", () => {
  test("gives its address as { transport, hostname, port }", async () => {
    let announced: unknown;
    await using server = await startServer(handlers, { onListen: (addr) => announced = addr });
    assert.deepEqual({ ...server.addr }, {
      transport: "tcp",
      hostname: "127.0.0.1",
      port: server.addr.port,
    });
    assert.deepEqual(announced, server.addr);
  });

  test("counts calls with metrics: true, with this process's id and memory", async () => {
    await using server = await startServer(handlers, { metrics: true });
    await using client = await connectTo(server.addr.port);
    await client.call("add", 1, 2);
    const snapshot = server.metrics!.snapshot();
    assert.equal(snapshot.pid, process.pid);
    assert.ok(snapshot.residentMemoryBytes > 0);
    assert.ok(snapshot.calls.some(({ method, count }) => method === "add" && count === 1));
    assert.match(server.metrics!.render(), /tlsrpc_calls_total\{method="add",code="0"\} 1/);
  });

  test("shutdown() answers the calls in flight before it closes their connections", async () => {
    const server = await startServer(handlers);
    await using client = await connectTo(server.addr.port);
    const calls = [client.call("later", 1, 300), client.call("later", 2, 200)];
    await sleep(50);
    const stopped = server.shutdown();
    assert.deepEqual(await within(Promise.all(calls), "the calls in flight"), [1, 2]);
    await within(stopped, "shutdown()");
  });

  test("takes the peer from a PROXY protocol header with proxyProtocol: true", async () => {
    await using server = await startServer({ peer: () => callContext()?.peer }, {
      proxyProtocol: true,
    });
    const raw = net.connect({ host: "127.0.0.1", port: server.addr.port });
    await new Promise((resolve) => raw.once("connect", resolve));
    // An address of the documentation range, named in the header only: nothing is sent there.
    raw.write("PROXY TCP4 203.0.113.7 127.0.0.1 5555 443\r\n");
    const socket = tls.connect({ socket: raw, servername: "localhost", ca: [certs.ca] });
    try {
      await within(
        new Promise((resolve, reject) => {
          socket.once("secureConnect", resolve);
          socket.once("error", reject);
        }),
        "the handshake after the header",
      );
      const body = new TextEncoder().encode('{"jsonrpc":"2.0","method":"peer","id":1}');
      const frame = new Uint8Array(4 + body.length);
      new DataView(frame.buffer).setUint32(0, body.length);
      frame.set(body, 4);
      socket.write(frame);
      const answer = await within(
        new Promise<Uint8Array>((resolve) => socket.once("data", resolve)),
        "the answer",
      );
      assert.deepEqual(JSON.parse(new TextDecoder().decode(answer.subarray(4))), {
        jsonrpc: "2.0",
        id: 1,
        result: { hostname: "203.0.113.7", port: 5555 },
      });
    } finally {
      socket.destroy();
    }
  });

  test("shares its port with another server with reusePort: true", async () => {
    await using a = await startServer({ who: () => "a" }, { reusePort: true });
    await using b = await startServer({ who: () => "b" }, { reusePort: true, port: a.addr.port });
    const seen = new Set<unknown>();
    // The kernel spreads connections by a hash of their addresses: 40 reach both, all but surely.
    for (let i = 0; i < 40 && seen.size < 2; i++) {
      await using client = await connectTo(b.addr.port);
      seen.add(await client.call("who"));
    }
    assert.deepEqual([...seen].sort(), ["a", "b"]);
  });

  test("serves metrics over HTTP: GET /metrics in the text format, 404 elsewhere, 405 for POST", async () => {
    const server = await startServer(handlers, { metrics: { port: 0 } });
    const addr = server.metricsAddr!;
    assert.equal(addr.hostname, "127.0.0.1");
    {
      await using client = await connectTo(server.addr.port);
      assert.equal(await client.call("add", 1, 1), 2);
    }
    const base = `http://127.0.0.1:${addr.port}`;
    const response = await fetch(`${base}/metrics`);
    assert.equal(response.status, 200);
    assert.equal(response.headers.get("content-type"), "text/plain; version=0.0.4; charset=utf-8");
    assert.match(await response.text(), /tlsrpc_calls_total\{method="add",code="0"\} 1/);
    const missing = await fetch(`${base}/other`);
    assert.equal(missing.status, 404);
    await missing.body?.cancel();
    const post = await fetch(`${base}/metrics`, { method: "POST" });
    assert.equal(post.status, 405);
    assert.equal(post.headers.get("allow"), "GET, HEAD");
    await post.body?.cancel();
    await within(server.shutdown(), "the server and its metrics endpoint to stop");
    await assert.rejects(fetch(`${base}/metrics`), "the endpoint stopped with the server");
  });

  const denoOnly = runtime === "deno"
    ? "serves with the deno transport on Deno"
    : "refuses the deno transport with a TypeError, before it listens";
  test(denoOnly, async () => {
    if (runtime === "deno") {
      await using server = await startServer(handlers, { transport: "deno" });
      await using client = await connectTo(server.addr.port);
      assert.equal(await client.call("add", 1, 1), 2);
      return;
    }
    const name = runtime === "bun" ? "Bun" : "Node.js";
    await assert.rejects(startServer(handlers, { transport: "deno" }), {
      name: "TypeError",
      message: `Cannot serve: the "deno" transport needs Deno (this is ${name})`,
    });
  });
});
