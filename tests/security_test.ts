// Tests of who gets in: token authentication (rpc.auth, the `token` and `authenticate` server
// options, the client's `token`), mutual TLS (`clientCa`, the client's `cert` and `key`), and the
// CLI flags for both, on real sockets and real subprocesses.

import assert from "node:assert/strict";
import { connect, type ConnectOptions } from "../client.ts";
import { ConnectionError, ErrorCode, RpcError } from "../errors.ts";
import { type RpcServer, serve, type ServeOptions } from "../server.ts";
import { callContext } from "../context.ts";
import { MAX_AUTH_FAILURES } from "../_auth.ts";
import { type DevCertificates, generateDevCertificates } from "../dev_cert.ts";
import {
  connectTo,
  delay,
  RawClient,
  root,
  serverOptions,
  startServer,
  within as settles,
} from "./_util.ts";
import { type Output, runCli, startServe } from "./_cli.ts";

/** The token of these tests: distinctive, so that finding it in a log or a message means a leak. */
const TOKEN = "s3cr3t-token-value";

const path = (relative: string) => new URL(relative, root).pathname;

// ---------------------------------------------------------------------------------------------
// Helpers

/** The error `promise` rejects with, within the guard; fails if it resolves. */
async function rejection(promise: Promise<unknown>, what: string): Promise<unknown> {
  const result = await settles(
    promise.then((value) => ({ ok: true, value }), (error: unknown) => ({ ok: false, error })),
    what,
  );
  if (result.ok) assert.fail(`${what}: expected a rejection, got ${JSON.stringify(result)}`);
  return (result as { error: unknown }).error;
}

/**
 * Asserts that connecting with `options` rejects with a ConnectionError, and returns it. A client
 * that connects after all is closed before the assertion fails, so that nothing leaks.
 */
async function connectionRefused(
  port: number,
  options: ConnectOptions,
  what: string,
): Promise<ConnectionError> {
  const connecting = connectTo(port, options);
  const result = await settles(
    connecting.then((client) => ({ client }), (error: unknown) => ({ error })),
    what,
  );
  if ("client" in result) {
    await result.client.close();
    assert.fail(`${what}: connect() resolved; expected a ConnectionError`);
  }
  assert.ok(result.error instanceof ConnectionError, `${what}: got ${result.error}`);
  return result.error;
}

/** Every text an error carries: name, message, stack, and the same of its causes and data. */
function errorTexts(error: unknown, depth = 0): string[] {
  if (depth > 5) return [];
  if (!(error instanceof Error)) return [String(error)];
  const texts = [String(error), error.message, error.stack ?? ""];
  if (error instanceof RpcError) texts.push(JSON.stringify(error.data) ?? "");
  if (error.cause !== undefined) texts.push(...errorTexts(error.cause, depth + 1));
  return texts;
}

function assertNoToken(texts: string[], where: string, token = TOKEN): void {
  for (const text of texts) {
    assert.ok(!text.includes(token), `the token appears in ${where}: ${JSON.stringify(text)}`);
  }
}

/** The JSON-RPC error object of a response, failing when the response is not an error. */
function errorOf(response: unknown): { code: number; message: string } {
  const error = (response as { error?: { code: number; message: string } } | null)?.error;
  assert.ok(error, `expected an error response, got ${JSON.stringify(response)}`);
  return error;
}

// ---------------------------------------------------------------------------------------------
// Token authentication: the protocol

Deno.test("a server with a token refuses every call before rpc.auth with -32004, then serves the same connection once the token is accepted", async (t) => {
  let calls = 0;
  // Many wrong tokens from one address: the per-address throttle is not what this test is about.
  await using server = await startServer({ count: () => ++calls }, {
    token: TOKEN,
    maxAuthFailures: 1000,
  });
  await using raw = await RawClient.connect(server.addr.port);
  await t.step("a call", async () => {
    const error = errorOf(await raw.exchange({ jsonrpc: "2.0", id: 1, method: "count" }));
    assert.equal(error.code, ErrorCode.Unauthorized);
    assert.equal(error.code, -32004);
    assert.match(error.message, /rpc\.auth/);
  });
  await t.step("rpc.discover", async () => {
    const response = await raw.exchange({ jsonrpc: "2.0", id: 2, method: "rpc.discover" });
    assert.equal(errorOf(response).code, -32004);
  });
  await t.step("a batch: every request in it", async () => {
    const response = await raw.exchange([
      { jsonrpc: "2.0", id: 3, method: "count" },
      { jsonrpc: "2.0", id: 4, method: "count" },
    ]);
    assert.ok(Array.isArray(response), JSON.stringify(response));
    assert.deepEqual(response.map((item) => errorOf(item).code), [-32004, -32004]);
  });
  await t.step("a notification runs nothing", async () => {
    await raw.send({ jsonrpc: "2.0", method: "count" });
    // The next answer is the call's: the notification got none and ran no handler.
    const response = await raw.exchange({ jsonrpc: "2.0", id: 5, method: "count" });
    assert.equal((response as { id: number }).id, 5);
    assert.equal(errorOf(response).code, -32004);
  });
  assert.equal(calls, 0, "no handler may run before authentication");
  await t.step("the token sent late is accepted, and calls then work", async () => {
    assert.deepEqual(
      await raw.exchange({ jsonrpc: "2.0", id: 6, method: "rpc.auth", params: [TOKEN] }),
      { jsonrpc: "2.0", id: 6, result: true },
    );
    assert.deepEqual(await raw.exchange({ jsonrpc: "2.0", id: 7, method: "count" }), {
      jsonrpc: "2.0",
      id: 7,
      result: 1,
    });
  });
  await t.step("by-name params { token } are accepted too", async () => {
    await using other = await RawClient.connect(server.addr.port);
    assert.deepEqual(
      await other.exchange({ jsonrpc: "2.0", id: 1, method: "rpc.auth", params: { token: TOKEN } }),
      { jsonrpc: "2.0", id: 1, result: true },
    );
    assert.deepEqual(await other.exchange({ jsonrpc: "2.0", id: 2, method: "count" }), {
      jsonrpc: "2.0",
      id: 2,
      result: 2,
    });
  });
});

Deno.test("rpc.auth refuses every token but the right one with -32005: another length, empty, unicode, a prefix, an extension", async (t) => {
  let calls = 0;
  // Many wrong tokens from one address: the per-address throttle is not what this test is about.
  await using server = await startServer({ count: () => ++calls }, {
    token: TOKEN,
    maxAuthFailures: 1000,
  });
  const wrong: [string, string][] = [
    ["same length, one character off", TOKEN.slice(0, -1) + "X"],
    ["shorter", "short"],
    ["much longer", TOKEN.repeat(50)],
    ["empty", ""],
    ["a space", " "],
    ["unicode", "s3cr3t-tökén-välüé-😀"],
    ["unicode of the same UTF-16 length", "s3cr3t-token-valu\u00e9"],
    ["a prefix of the right token", TOKEN.slice(0, 12)],
    ["all but the last character", TOKEN.slice(0, -1)],
    ["the right token and more", TOKEN + "x"],
    ["the right token and a newline", TOKEN + "\n"],
    ["the right token with a NUL after it", TOKEN + "\u0000"],
    ["the right token in upper case", TOKEN.toUpperCase()],
  ];
  for (const [label, token] of wrong) {
    await t.step(label, async () => {
      await using raw = await RawClient.connect(server.addr.port);
      const response = await raw.exchange({
        jsonrpc: "2.0",
        id: 1,
        method: "rpc.auth",
        params: [token],
      });
      const error = errorOf(response);
      assert.equal(error.code, ErrorCode.AuthenticationFailed);
      assert.equal(error.code, -32005);
      assertNoToken([JSON.stringify(response)], "the error response");
      // Still refused after the failure.
      assert.equal(
        errorOf(await raw.exchange({ jsonrpc: "2.0", id: 2, method: "count" })).code,
        -32004,
      );
    });
  }
  await t.step("a token that is not a string is invalid params", async () => {
    await using raw = await RawClient.connect(server.addr.port);
    for (const params of [[42], [null], [], { token: 1 }]) {
      const response = await raw.exchange({ jsonrpc: "2.0", id: 1, method: "rpc.auth", params });
      assert.equal(errorOf(response).code, ErrorCode.InvalidParams, JSON.stringify(params));
    }
  });
  assert.equal(calls, 0);
});

Deno.test("rpc.auth forgives two wrong tokens, and answers the third with -32005 and closes the connection", async (t) => {
  assert.equal(MAX_AUTH_FAILURES, 3);
  const logs: string[] = [];
  await using server = await startServer({ ping: () => "pong" }, { token: TOKEN, logs });
  const auth = (id: number, token: string) => ({
    jsonrpc: "2.0",
    id,
    method: "rpc.auth",
    params: [token],
  });
  await t.step("two wrong tokens, then the right one: accepted", async () => {
    await using raw = await RawClient.connect(server.addr.port);
    assert.equal(errorOf(await raw.exchange(auth(1, "wrong-1"))).code, -32005);
    assert.equal(errorOf(await raw.exchange(auth(2, "wrong-2"))).code, -32005);
    assert.deepEqual(await raw.exchange(auth(3, TOKEN)), { jsonrpc: "2.0", id: 3, result: true });
    assert.deepEqual(await raw.exchange({ jsonrpc: "2.0", id: 4, method: "ping" }), {
      jsonrpc: "2.0",
      id: 4,
      result: "pong",
    });
  });
  await t.step(
    "three wrong tokens: the third is answered, then the connection closes",
    async () => {
      await using raw = await RawClient.connect(server.addr.port);
      assert.equal(errorOf(await raw.exchange(auth(1, "wrong-1"))).code, -32005);
      assert.equal(errorOf(await raw.exchange(auth(2, "wrong-2"))).code, -32005);
      const third = await raw.exchange(auth(3, "wrong-3"));
      await settles(raw.closedByServer(), "the server closing the connection");
      // The refusal goes out before the close, so that the client learns why it was closed.
      assert.deepEqual(third, {
        jsonrpc: "2.0",
        id: 3,
        error: { code: -32005, message: "Authentication failed" },
      });
    },
  );
  await t.step("the server keeps serving others", async () => {
    await using client = await connectTo(server.addr.port, { token: TOKEN });
    assert.equal(await client.call("ping"), "pong");
  });
  assertNoToken(logs, "the server's log");
  assertNoToken(logs, "the server's log", "wrong-");
});

Deno.test("a server without a token answers rpc.auth with true and serves calls without it", async () => {
  await using server = await startServer({ ping: () => "pong" }, {});
  await using raw = await RawClient.connect(server.addr.port);
  assert.deepEqual(await raw.exchange({ jsonrpc: "2.0", id: 1, method: "ping" }), {
    jsonrpc: "2.0",
    id: 1,
    result: "pong",
  });
  assert.deepEqual(
    await raw.exchange({ jsonrpc: "2.0", id: 2, method: "rpc.auth", params: ["anything"] }),
    { jsonrpc: "2.0", id: 2, result: true },
  );
  await using client = await connectTo(server.addr.port, { token: "anything" });
  assert.equal(await client.call("ping"), "pong");
});

Deno.test("serve() rejects an empty token, and token together with authenticate, with TypeError", async (t) => {
  const cases: [string, Partial<ServeOptions>][] = [
    ["an empty token", { token: "" }],
    ["token and authenticate", { token: TOKEN, authenticate: () => "someone" }],
  ];
  for (const [label, options] of cases) {
    await t.step(label, async () => {
      const error = await rejection(startServer({}, options), label);
      assert.ok(error instanceof TypeError, `expected TypeError, got ${error}`);
      assertNoToken(errorTexts(error), "the error");
    });
  }
});

// ---------------------------------------------------------------------------------------------
// Token authentication: the client

Deno.test("connect() with the right token calls normally; with a wrong one it rejects with ConnectionError saying the server refused the token", async (t) => {
  const logs: string[] = [];
  let calls = 0;
  await using server = await startServer({ count: () => ++calls }, { token: TOKEN, logs });
  await t.step("the right token", async () => {
    await using client = await connectTo(server.addr.port, { token: TOKEN });
    assert.equal(await client.call("count"), 1);
  });
  const wrong: [string, string][] = [
    ["a wrong token of the same length", TOKEN.replace("s3cr3t", "public")],
    ["a token of another length", "s3cr3t"],
    ["an empty token", ""],
    ["a unicode token", "s3cr3t-tökén-välüé"],
    ["a prefix of the right token", TOKEN.slice(0, -3)],
  ];
  for (const [label, token] of wrong) {
    await t.step(label, async () => {
      const error = await connectionRefused(server.addr.port, { token }, label);
      assert.match(
        error.message,
        /^Cannot connect to "127\.0\.0\.1:\d+": the server refused the token$/,
      );
      assertNoToken(errorTexts(error), "the client's error");
      if (token.length >= 6) assertNoToken(errorTexts(error), "the client's error", token);
    });
  }
  await t.step("no token: the first call rejects with RpcError -32004", async () => {
    await using client = await connectTo(server.addr.port);
    const error = await rejection(client.call("count"), "a call without a token");
    assert.ok(error instanceof RpcError, `expected RpcError, got ${error}`);
    assert.equal(error.code, -32004);
  });
  assert.equal(calls, 1);
  assertNoToken(logs, "the server's log");
});

Deno.test("authenticate() decides who a token belongs to: handlers see its identity as callContext().identity", async (t) => {
  const seen: { token: string; peer: { hostname: string; port: number } }[] = [];
  const users = new Map([["token-ada", { user: "ada" }], ["token-bob", { user: "bob" }]]);
  const authenticators: [string, NonNullable<ServeOptions["authenticate"]>][] = [
    ["a plain function", (token, peer) => {
      seen.push({ token, peer });
      return users.get(token);
    }],
    ["an async function", async (token, peer) => {
      await delay(5);
      seen.push({ token, peer });
      return users.get(token);
    }],
  ];
  for (const [label, authenticate] of authenticators) {
    await t.step(label, async () => {
      seen.length = 0;
      await using server = await startServer({
        whoami: () => callContext()?.identity,
        later: async () => {
          await delay(5);
          return callContext()?.identity;
        },
      }, { authenticate });
      await using ada = await connectTo(server.addr.port, { token: "token-ada" });
      await using bob = await connectTo(server.addr.port, { token: "token-bob" });
      assert.deepEqual(await ada.call("whoami"), { user: "ada" });
      assert.deepEqual(await bob.call("whoami"), { user: "bob" });
      assert.deepEqual(await ada.call("later"), { user: "ada" });
      assert.deepEqual(seen.map((s) => s.token).sort(), ["token-ada", "token-bob"]);
      for (const { peer } of seen) {
        assert.equal(peer.hostname, "127.0.0.1");
        assert.ok(Number.isInteger(peer.port) && peer.port > 0, `peer port ${peer.port}`);
      }
      const error = await connectionRefused(server.addr.port, { token: "token-eve" }, "eve");
      assert.match(error.message, /the server refused the token/);
    });
  }
});

Deno.test("authenticate() refuses a token when it returns nothing, throws or rejects; the server keeps serving and says nothing of the token or the throw", async (t) => {
  const refusals: [string, (token: string) => unknown][] = [
    ["returns undefined", () => undefined],
    ["returns null", () => null],
    ["returns false", () => false],
    ["resolves undefined", () => Promise.resolve(undefined)],
    ["throws", (token) => {
      throw new Error(`authenticator exploded on ${token}`);
    }],
    ["rejects", (token) => Promise.reject(new Error(`authenticator exploded on ${token}`))],
    ["throws a string", (token) => {
      throw `exploded: ${token}`;
    }],
  ];
  for (const [label, decide] of refusals) {
    await t.step(label, async () => {
      const logs: string[] = [];
      const logged: unknown[] = [];
      await using server = await serve({ ping: () => "pong" }, {
        ...serverOptions(),
        onError: (error, line) => {
          logs.push(line);
          logged.push(error);
        },
        authenticate: (token) => token === "good-token" ? { user: "ok" } : decide(token),
      });
      const error = await connectionRefused(server.addr.port, { token: TOKEN }, label);
      assert.match(error.message, /the server refused the token/);
      const texts = [...errorTexts(error), ...logs, ...logged.flatMap((e) => errorTexts(e))];
      assertNoToken(texts, "the client's error or the server's log");
      assertNoToken(texts, "the client's error or the server's log", "exploded");
      // The server is still up and serves a client it accepts.
      await using client = await connectTo(server.addr.port, { token: "good-token" });
      assert.equal(await client.call("ping"), "pong");
      // And the same refused client, on the wire, gets -32005 without the throw's message.
      await using raw = await RawClient.connect(server.addr.port);
      const response = await raw.exchange({
        jsonrpc: "2.0",
        id: 1,
        method: "rpc.auth",
        params: [TOKEN],
      });
      assert.equal(errorOf(response).code, -32005);
      assertNoToken([JSON.stringify(response)], "the error response");
      assertNoToken([JSON.stringify(response)], "the error response", "exploded");
    });
  }
});

Deno.test("the token never appears in the server's log lines or the client's error messages", async () => {
  const lines: string[] = [];
  const logged: unknown[] = [];
  const clientErrors: unknown[] = [];
  const disconnects: unknown[] = [];
  await using server = await serve({
    fail: () => {
      throw new Error("handler failed");
    },
    ping: () => "pong",
  }, {
    ...serverOptions(),
    token: TOKEN,
    onError: (error, line) => {
      lines.push(line);
      logged.push(error);
    },
  });
  const port = server.addr.port;
  // A good client whose calls fail, a client refused, and a raw client that exhausts its tries.
  {
    await using client = await connectTo(port, {
      token: TOKEN,
      onDisconnect: (error) => void disconnects.push(error),
    });
    clientErrors.push(await rejection(client.call("fail"), "a failing call"));
    clientErrors.push(await rejection(client.call("missing"), "a missing method"));
  }
  clientErrors.push(await connectionRefused(port, { token: TOKEN + "-wrong" }, "wrong token"));
  {
    await using raw = await RawClient.connect(port);
    for (let id = 1; id <= MAX_AUTH_FAILURES; id++) {
      const response = await raw.exchange({
        jsonrpc: "2.0",
        id,
        method: "rpc.auth",
        params: [TOKEN + "-" + id],
      });
      assertNoToken([JSON.stringify(response)], "an error response");
    }
    await settles(raw.closedByServer(), "the server closing after the failures");
  }
  // A client whose connection the server ends: shutdown with it connected.
  const client = await connectTo(port, {
    token: TOKEN,
    onDisconnect: (error) => void disconnects.push(error),
  });
  await server.shutdown();
  await settles(client.closed, "the client closing after the shutdown");
  clientErrors.push(await rejection(client.call("ping"), "a call after the shutdown"));
  assert.ok(lines.length > 0, "the refused attempts should have been logged");
  assertNoToken(lines, "a log line");
  assertNoToken(logged.flatMap((error) => errorTexts(error)), "a logged error");
  assertNoToken(clientErrors.flatMap((error) => errorTexts(error)), "a client error");
  assertNoToken(disconnects.flatMap((error) => errorTexts(error)), "an onDisconnect error");
});

// ---------------------------------------------------------------------------------------------
// Mutual TLS

/** Two development CAs with a server certificate each and client certificates of both. */
let pki: Promise<{ good: DevCertificates; other: DevCertificates }> | undefined;
function devPki(): Promise<{ good: DevCertificates; other: DevCertificates }> {
  pki ??= Promise.all([
    generateDevCertificates({ clientName: "worker-1" }),
    generateDevCertificates({ clientName: "intruder" }),
  ]).then(([good, other]) => ({ good, other }));
  return pki;
}

function mtlsServer(good: DevCertificates, logs: string[] = []): Promise<RpcServer> {
  return serve({
    whoami: () => callContext()?.identity,
    ping: () => "pong",
  }, {
    ...serverOptions(logs),
    cert: good.cert,
    key: good.key,
    clientCa: good.caCert,
  });
}

Deno.test("mutual TLS: a client certificate signed by clientCa gets in, and its subject becomes callContext().identity", async () => {
  const { good } = await devPki();
  await using server = await mtlsServer(good);
  await using client = await connect({
    hostname: "localhost",
    port: server.addr.port,
    caCerts: [good.caCert],
    cert: good.clientCert!,
    key: good.clientKey!,
  });
  assert.equal(await client.call("ping"), "pong");
  const identity = await client.call("whoami") as {
    subject: Record<string, string[]>;
    altNames: { type: string; value: string }[];
    fingerprint: string;
  };
  // Every attribute is a list of its values, never joined (security: two CNs stay two).
  assert.deepEqual(identity.subject.CN, ["worker-1"]);
  assert.ok(Array.isArray(identity.altNames), JSON.stringify(identity));
  assert.match(identity.fingerprint, /^[0-9A-F]{2}(:[0-9A-F]{2}){31}$/i);
  // The fingerprint is the certificate's own: the same client certificate, the same identity.
  await using again = await connect({
    hostname: "127.0.0.1",
    port: server.addr.port,
    caCerts: [good.caCert],
    cert: good.clientCert!,
    key: good.clientKey!,
  });
  assert.deepEqual(await again.call("whoami"), identity);
});

Deno.test("mutual TLS: connect() without a client certificate, or with one from another CA, rejects with ConnectionError and the server keeps serving", async (t) => {
  const { good, other } = await devPki();
  const logs: string[] = [];
  await using server = await mtlsServer(good, logs);
  const port = server.addr.port;
  const base = { caCerts: [good.caCert] };
  await using member = await connectTo(port, {
    ...base,
    cert: good.clientCert!,
    key: good.clientKey!,
  });
  assert.equal(await member.call("ping"), "pong");
  const cases: [string, ConnectOptions][] = [
    ["no client certificate", base],
    ["a certificate from another CA", {
      ...base,
      cert: other.clientCert!,
      key: other.clientKey!,
    }],
    ["the server's own certificate from another CA", {
      ...base,
      cert: other.cert,
      key: other.key,
    }],
  ];
  for (const [label, options] of cases) {
    await t.step(label, async () => {
      const error = await connectionRefused(port, options, label);
      assert.match(error.message, /^Cannot /);
      assert.equal(await member.call("ping"), "pong");
    });
  }
  await t.step("a client with a good certificate still gets in", async () => {
    await using client = await connectTo(port, {
      ...base,
      cert: good.clientCert!,
      key: good.clientKey!,
    });
    assert.deepEqual(
      (await client.call("whoami") as { subject: { CN: string[] } }).subject.CN,
      ["worker-1"],
    );
  });
});

Deno.test('serve() rejects clientCa with transport "deno" with TypeError', async () => {
  const { good } = await devPki();
  const serving = serve({ ping: () => "pong" }, {
    ...serverOptions(),
    cert: good.cert,
    key: good.key,
    clientCa: good.caCert,
    transport: "deno",
  });
  const result = await settles(
    serving.then((server) => ({ server }), (error: unknown) => ({ error })),
    "serve()",
  );
  if ("server" in result) {
    await result.server.shutdown();
    assert.fail('serve() with clientCa and transport "deno" resolved; expected a TypeError');
  }
  assert.ok(result.error instanceof TypeError, `expected TypeError, got ${result.error}`);
  assert.match(result.error.message, /^Cannot serve: /);
});

// ---------------------------------------------------------------------------------------------
// The CLI

/** Asserts a CLI failure: `code`, nothing on stdout, and one line on stderr without the token. */
function assertFailure(output: Output, code: number, pattern: RegExp, tokens: string[]): void {
  assert.equal(output.code, code, JSON.stringify(output));
  assert.equal(output.stdout, "");
  const lines = output.stderr.trimEnd().split("\n");
  assert.equal(lines.length, 1, `expected one line on stderr: ${JSON.stringify(output.stderr)}`);
  assert.match(lines[0]!, pattern);
  for (const token of tokens) assertNoToken([output.stderr], "the CLI's stderr", token);
}

Deno.test("cli serve --token-file or $TLSRPC_TOKEN requires the token; call and list present it from --token-file or $TLSRPC_TOKEN, and a wrong one exits 3 without printing it", async (t) => {
  const dir = await Deno.makeTempDir({ prefix: "tlsrpc_security_test_" });
  try {
    const tokenFile = `${dir}/token`;
    const wrongFile = `${dir}/wrong`;
    const emptyFile = `${dir}/empty`;
    const WRONG = "wr0ng-token-value";
    await Deno.writeTextFile(tokenFile, `${TOKEN}\n`);
    await Deno.writeTextFile(wrongFile, `${WRONG}\n`);
    await Deno.writeTextFile(emptyFile, "");
    const ca = path("testdata/ca.pem");
    const serverFiles = [
      "--cert",
      path("testdata/server.pem"),
      "--key",
      path("testdata/server.key"),
    ];
    const calc = path("examples/calc.ts");
    const tokens = [TOKEN, WRONG];

    for (
      const [how, serveArgs, serveEnv] of [
        ["--token-file", ["--token-file", tokenFile], {}],
        ["$TLSRPC_TOKEN", [], { TLSRPC_TOKEN: TOKEN }],
      ] as [string, string[], Record<string, string>][]
    ) {
      await t.step(`serve with the token from ${how}`, async (t) => {
        const server = await startServe(
          [calc, "--port", "0", ...serverFiles, ...serveArgs],
          { env: serveEnv },
        );
        let stopped = false;
        try {
          const target = ["--port", String(server.port), "--ca", ca];
          const call = ["call", ...target];
          const list = ["list", ...target];
          // Independent subprocesses, run together to keep the test short; checked one by one.
          const [
            callFile,
            callEnv,
            fileBeatsEnv,
            callWrongFile,
            callWrongEnv,
            callNone,
            callEmptyFile,
            listFile,
            listEnv,
            listWrong,
          ] = await Promise.all([
            runCli([...call, "--token-file", tokenFile, "add", "1", "2"]),
            runCli([...call, "add", "1", "2"], { env: { TLSRPC_TOKEN: TOKEN } }),
            runCli([...call, "--token-file", tokenFile, "add", "1", "2"], {
              env: { TLSRPC_TOKEN: WRONG },
            }),
            runCli([...call, "--token-file", wrongFile, "add", "1", "2"]),
            runCli([...call, "add", "1", "2"], { env: { TLSRPC_TOKEN: WRONG } }),
            runCli([...call, "add", "1", "2"]),
            runCli([...call, "--token-file", emptyFile, "add", "1", "2"]),
            runCli([...list, "--token-file", tokenFile]),
            runCli(list, { env: { TLSRPC_TOKEN: TOKEN } }),
            runCli([...list, "--token-file", wrongFile]),
          ]);
          await t.step("call --token-file", () => {
            assert.equal(callFile.code, 0, callFile.stderr);
            assert.equal(callFile.stdout, "3\n");
          });
          await t.step("call with $TLSRPC_TOKEN", () => {
            assert.equal(callEnv.code, 0, callEnv.stderr);
            assert.equal(callEnv.stdout, "3\n");
          });
          await t.step("call --token-file wins over $TLSRPC_TOKEN", () => {
            assert.equal(fileBeatsEnv.code, 0, fileBeatsEnv.stderr);
            assert.equal(fileBeatsEnv.stdout, "3\n");
          });
          await t.step("call with a wrong --token-file exits 3", () => {
            assertFailure(callWrongFile, 3, /^error: .*refused the token/, tokens);
          });
          await t.step("call with a wrong $TLSRPC_TOKEN exits 3", () => {
            assertFailure(callWrongEnv, 3, /^error: .*refused the token/, tokens);
          });
          await t.step("call without a token exits 3 with -32004 and says how to give one", () => {
            assertFailure(callNone, 3, /^error: -32004 .*--token-file.*TLSRPC_TOKEN/, tokens);
          });
          await t.step("call with an empty --token-file exits 2", () => {
            assertFailure(callEmptyFile, 2, /^error: .*--token-file.*empty/, tokens);
          });
          await t.step("list --token-file", () => {
            assert.equal(listFile.code, 0, listFile.stderr);
            assert.match(listFile.stdout, /^add\(a, b\)$/m);
          });
          await t.step("list with $TLSRPC_TOKEN", () => {
            assert.equal(listEnv.code, 0, listEnv.stderr);
            assert.equal(listEnv.stdout, listFile.stdout);
          });
          await t.step("list with a wrong --token-file exits 3", () => {
            assertFailure(listWrong, 3, /^error: .*refused the token/, tokens);
          });
          const done = await server.stop();
          stopped = true;
          assert.equal(done.code, 0, done.stderr);
          assertNoToken([done.stdout, done.stderr], "serve's output");
        } finally {
          if (!stopped) await server.stop();
        }
      });
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("cli serve --client-ca and call/list --cert --key: mutual TLS end to end", async (t) => {
  const { good, other } = await devPki();
  const dir = await Deno.makeTempDir({ prefix: "tlsrpc_security_test_" });
  try {
    const files = {
      ca: `${dir}/ca.pem`,
      cert: `${dir}/server.pem`,
      key: `${dir}/server.key`,
      clientCert: `${dir}/client.pem`,
      clientKey: `${dir}/client.key`,
      otherCert: `${dir}/intruder.pem`,
      otherKey: `${dir}/intruder.key`,
      module: `${dir}/whoami.ts`,
    };
    await Promise.all([
      Deno.writeTextFile(files.ca, good.caCert),
      Deno.writeTextFile(files.cert, good.cert),
      Deno.writeTextFile(files.key, good.key),
      Deno.writeTextFile(files.clientCert, good.clientCert!),
      Deno.writeTextFile(files.clientKey, good.clientKey!),
      Deno.writeTextFile(files.otherCert, other.clientCert!),
      Deno.writeTextFile(files.otherKey, other.clientKey!),
      Deno.writeTextFile(
        files.module,
        `import { callContext } from ${JSON.stringify(new URL("./context.ts", root).href)};\n` +
          "export function whoami() { return callContext()?.identity; }\n",
      ),
    ]);
    const server = await startServe([
      files.module,
      "--port",
      "0",
      "--cert",
      files.cert,
      "--key",
      files.key,
      "--client-ca",
      files.ca,
    ]);
    let stopped = false;
    try {
      const target = ["--port", String(server.port), "--ca", files.ca];
      const withCert = ["--cert", files.clientCert, "--key", files.clientKey];
      const [whoami, list, noCert, intruder, certOnly] = await Promise.all([
        runCli(["call", ...target, ...withCert, "whoami"]),
        runCli(["list", ...target, ...withCert]),
        runCli(["call", ...target, "whoami"]),
        runCli(["call", ...target, "--cert", files.otherCert, "--key", files.otherKey, "whoami"]),
        runCli(["call", ...target, "--cert", files.clientCert, "whoami"]),
      ]);
      await t.step("call with the client certificate: its subject is the identity", () => {
        assert.equal(whoami.code, 0, whoami.stderr);
        const identity = JSON.parse(whoami.stdout);
        assert.deepEqual(identity.subject.CN, ["worker-1"]);
        assert.match(identity.fingerprint, /^[0-9A-F]{2}(:[0-9A-F]{2}){31}$/i);
      });
      await t.step("list with the client certificate", () => {
        assert.equal(list.code, 0, list.stderr);
        assert.equal(list.stdout, "whoami()\n");
      });
      await t.step("call without a client certificate exits 3", () => {
        assertFailure(noCert, 3, /^error: Cannot /, []);
      });
      await t.step("call with a certificate from another CA exits 3", () => {
        assertFailure(intruder, 3, /^error: Cannot /, []);
      });
      await t.step("call with --cert but no --key exits 2", () => {
        assertFailure(certOnly, 2, /^error: .*--key/, []);
      });
      const done = await server.stop();
      stopped = true;
      assert.equal(done.code, 0, done.stderr);
    } finally {
      if (!stopped) await server.stop();
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
