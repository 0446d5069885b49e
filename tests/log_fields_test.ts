// The fields of the transports' log lines, as `onError` gets them and `--log-format json` writes
// them: each line of a failed handshake, a refused connection and a bad PROXY header names its
// event, its peer (the client's own port) and the event's own field, on both transports, on real
// sockets; the accept watchdog's and the dispatcher's lines name theirs; and `logLevel()` grades
// them. The text of each line is the one other tests match.

import assert from "node:assert/strict";
import { logLevel } from "../_cli_log.ts";
import type { TransportLogFields } from "../_transport.ts";
import { AcceptWatchdog } from "../_watchdog.ts";
import type { LogFields, RpcServer, ServeOptions } from "../server.ts";
import {
  connectTo,
  PARTIAL_CLIENT_HELLO,
  root,
  startServer,
  TcpClient,
  until,
  within,
} from "./_util.ts";
import { startServe } from "./_cli.ts";

type Transport = "node" | "deno";

const TRANSPORTS: readonly Transport[] = ["node", "deno"];

const encoder = new TextEncoder();

/** What a client sends that a terminal would act on, behind a plaintext request. */
const EVIL = "GET /\u001b]0;owned\u0007\u202e HTTP/1.1\r\n\r\n";

/** The keys a transport's fields may have: none of them holds what a client sent. */
const FIELD_KEYS: ReadonlySet<string> = new Set(["event", "peer", "reason", "limit"]);

/** One call of `onError`. */
interface Entry {
  error: unknown;
  line: string;
  fields: LogFields;
}

/** A server on 127.0.0.1, port 0, whose `onError` calls the test can await. */
class LoggedServer implements AsyncDisposable {
  readonly entries: Entry[] = [];
  server!: RpcServer;

  static async start(transport: Transport, extra: Partial<ServeOptions> = {}) {
    const logged = new LoggedServer();
    logged.server = await startServer({}, {
      transport,
      onError: (error, line, fields) => void logged.entries.push({ error, line, fields }),
      ...extra,
    });
    return logged;
  }

  get port(): number {
    return this.server.addr.port;
  }

  /** The first line with `event` about `peer`, waiting for it. */
  async entry(event: string, peer: string): Promise<Entry> {
    const find = () =>
      this.entries.find((entry) => entry.fields.event === event && entry.fields.peer === peer);
    try {
      await until(() => find() !== undefined, `a "${event}" line about ${peer}`);
    } catch (error) {
      throw new Error(`${error}; the lines: ${JSON.stringify(this.entries)}`);
    }
    const entry = find()!;
    assert.deepEqual(
      Object.keys(entry.fields).filter((key) => !FIELD_KEYS.has(key)),
      [],
      "no field but event, peer, reason and limit",
    );
    return entry;
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.server.shutdown();
  }
}

/** A TCP client of `port` on 127.0.0.1, and its own address as a log line names it. */
async function tcpClient(port: number): Promise<{ client: TcpClient; peer: string }> {
  const client = await TcpClient.connect(port);
  return { client, peer: `127.0.0.1:${client.conn.localAddr.port}` };
}

for (const transport of TRANSPORTS) {
  Deno.test(`the ${transport} transport's log lines carry their event, peer and reason or limit as fields`, async (t) => {
    await t.step("a plaintext client: handshake_failed, reason protocol", async () => {
      await using server = await LoggedServer.start(transport);
      const { client, peer } = await tcpClient(server.port);
      await using _client = client;
      await client.write(encoder.encode(EVIL));
      const entry = await server.entry("handshake_failed", peer);
      assert.deepEqual(entry.fields, { event: "handshake_failed", peer, reason: "protocol" });
      assert.ok(entry.line.startsWith(`TLS handshake with ${peer} failed: `), entry.line);
      await within(client.closed, "the server to close the connection");
    });

    await t.step("a client that leaves mid-handshake: handshake_failed, reason reset", async () => {
      await using server = await LoggedServer.start(transport);
      const { client, peer } = await tcpClient(server.port);
      await client.write(PARTIAL_CLIENT_HELLO);
      client.close();
      await within(client.closed, "the client to close");
      const entry = await server.entry("handshake_failed", peer);
      assert.deepEqual(entry.fields, { event: "handshake_failed", peer, reason: "reset" });
      assert.ok(entry.line.startsWith(`TLS handshake with ${peer} failed: `), entry.line);
    });

    await t.step("a connection past maxConnections: connection_refused, limit", async () => {
      await using server = await LoggedServer.start(transport, { maxConnections: 1 });
      // The first holds the one place: it stays in its handshake, saying nothing.
      const first = await tcpClient(server.port);
      await using _first = first.client;
      const { client, peer } = await tcpClient(server.port);
      await using _second = client;
      const entry = await server.entry("connection_refused", peer);
      assert.deepEqual(entry.fields, {
        event: "connection_refused",
        peer,
        limit: "max_connections",
      });
      assert.equal(entry.line, `refused ${peer}: 1 connections open, the limit is 1`);
      assert.equal(entry.error, undefined);
      assert.ok(
        !server.entries.some((entry) => entry.fields.peer === first.peer),
        "nothing about the first connection",
      );
    });

    if (transport === "deno") {
      await t.step("proxyProtocol: refused at startup (the node transport's alone)", async () => {
        await assert.rejects(
          LoggedServer.start(transport, { proxyProtocol: true }),
          (error: unknown) => error instanceof TypeError && /proxyProtocol/.test(error.message),
        );
      });
      return;
    }

    await t.step("a bad PROXY header: proxy_header_failed, reason protocol", async () => {
      await using server = await LoggedServer.start(transport, { proxyProtocol: true });
      const { client, peer } = await tcpClient(server.port);
      await using _client = client;
      await client.write(encoder.encode(EVIL));
      const entry = await server.entry("proxy_header_failed", peer);
      assert.deepEqual(entry.fields, { event: "proxy_header_failed", peer, reason: "protocol" });
      assert.ok(entry.line.startsWith(`PROXY header from ${peer} failed: `), entry.line);
      await within(client.closed, "the server to close the connection");
    });

    await t.step(
      "a failed handshake after a PROXY header: the header's client is the peer",
      async () => {
        await using server = await LoggedServer.start(transport, { proxyProtocol: true });
        const { client } = await tcpClient(server.port);
        await using _client = client;
        await client.write(
          encoder.encode(`PROXY TCP6 2001:db8::7 2001:db8::1 4711 443\r\n${EVIL}`),
        );
        const peer = "[2001:db8::7]:4711";
        const entry = await server.entry("handshake_failed", peer);
        assert.deepEqual(entry.fields, { event: "handshake_failed", peer, reason: "protocol" });
        assert.ok(entry.line.startsWith(`TLS handshake with ${peer} failed: `), entry.line);
        await within(client.closed, "the server to close the connection");
      },
    );
  });
}

Deno.test("AcceptWatchdog's lines carry their event: watchdog_restart, then watchdog_restart_failed", async () => {
  const logged: [unknown, string, TransportLogFields][] = [];
  let restarts = 0;
  const dog = new AcceptWatchdog({
    check: { check: () => Promise.resolve("stuck"), cancel: () => {} },
    restart: () => (restarts++, Promise.reject(new Error("Too many open files"))),
    log: (error, line, fields) => void logged.push([error, line, fields]),
    tickMs: 10,
  });
  try {
    await until(() => restarts >= 2, "two restarts");
  } finally {
    await dog.close();
  }
  assert.deepEqual(logged.slice(0, 2).map(([, line, fields]) => [line, fields]), [
    [
      "the listener stopped accepting (out of file descriptors?): listening again",
      { event: "watchdog_restart" },
    ],
    ["cannot listen again, will retry: Too many open files", { event: "watchdog_restart_failed" }],
  ]);
});

Deno.test("cli serve --log-format json writes a plaintext client's failed handshake with its event, peer and reason", async () => {
  const path = (relative: string) => new URL(relative, root).pathname;
  await using server = await startServe([
    path("tests/fixtures/workload.ts"),
    "--port",
    "0",
    "--log-format",
    "json",
    "--cert",
    path("testdata/server.pem"),
    "--key",
    path("testdata/server.key"),
  ]);
  const { client, peer } = await tcpClient(server.port);
  await using _client = client;
  await client.write(encoder.encode(EVIL));
  // The server logs the line as it closes the connection.
  await within(client.closed, "the server to close the connection");
  const output = await server.stop();
  assert.equal(output.code, 0, output.stderr);
  const entries = output.stderr.trimEnd().split("\n").map((line) => {
    // deno-lint-ignore no-control-regex -- no raw control or bidi character may get out
    assert.doesNotMatch(line, /[\u0000-\u001f\u007f-\u009f\u202e]/, line);
    return JSON.parse(line) as Record<string, unknown>;
  });
  const handshake = entries.find((entry) => entry.event === "handshake_failed");
  assert.ok(handshake !== undefined, output.stderr);
  assert.equal(handshake.peer, peer);
  assert.equal(handshake.reason, "protocol");
  assert.equal(handshake.level, "warn");
  assert.match(String(handshake.message), new RegExp(`^TLS handshake with ${peer} failed: `));
});

Deno.test("logLevel() grades a failed handshake, a bad PROXY header or a bad frame as warn, though an error comes with it, unless its reason is other", () => {
  const error = new Error("received corrupt message of type InvalidContentType");
  for (const event of ["handshake_failed", "proxy_header_failed"]) {
    assert.equal(logLevel(error, { event, reason: "protocol" }), "warn", event);
    assert.equal(logLevel(error, { event, reason: "other" }), "error", event);
  }
  assert.equal(logLevel(undefined, { event: "connection_refused" }), "warn");
  // A bad frame is the client's doing too.
  assert.equal(logLevel(error, { event: "protocol_error", peer: "127.0.0.1:1" }), "warn");
  assert.equal(logLevel(error, { event: "read_failed", peer: "127.0.0.1:1" }), "error");
  assert.equal(logLevel(error, { event: "accept_failed" }), "error");
  assert.equal(logLevel(undefined, { event: "watchdog_restart" }), "warn");
});

Deno.test("the dispatcher's lines carry their event: auth_failed with the peer, handler_failed with its method and peer", async () => {
  const entries: Entry[] = [];
  await using server = await startServer({
    lost: () => {
      throw new Deno.errors.NotFound("no /etc/secret");
    },
  }, {
    token: "the right token",
    onError: (error, line, fields) => void entries.push({ error, line, fields }),
  });
  const peer = /^127\.0\.0\.1:\d+$/;
  await assert.rejects(connectTo(server.addr.port, { token: "a wrong token" }));
  await until(() => entries.some((e) => e.fields.event === "auth_failed"), "auth_failed");
  const refused = entries.find((e) => e.fields.event === "auth_failed")!;
  assert.match(refused.line, /^failed authentication from 127\.0\.0\.1:\d+$/);
  assert.deepEqual(Object.keys(refused.fields).sort(), ["event", "peer"]);
  assert.match(refused.fields.peer!, peer);
  assert.equal(refused.line, `failed authentication from ${refused.fields.peer}`);

  await using client = await connectTo(server.addr.port, { token: "the right token" });
  await assert.rejects(client.call("lost"), /Internal server error/);
  await until(() => entries.some((e) => e.fields.event === "handler_failed"), "handler_failed");
  const failed = entries.find((e) => e.fields.event === "handler_failed")!;
  assert.equal(failed.line, '"lost" failed: no /etc/secret');
  assert.ok(failed.error instanceof Deno.errors.NotFound);
  assert.deepEqual(Object.keys(failed.fields).sort(), ["event", "method", "peer"]);
  assert.equal(failed.fields.method, "lost");
  assert.match(failed.fields.peer!, peer);
  assert.equal(logLevel(failed.error, failed.fields), "error");
  assert.equal(logLevel(undefined, refused.fields), "warn");
});
