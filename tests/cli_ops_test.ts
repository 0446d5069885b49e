// The CLI as an operator runs it in production: `serve --workers` (one port, every worker serving,
// a crashed worker back, a graceful drain), `--metrics` (exact counts, summed over the workers,
// checked by promtool), `--proxy-protocol`, `--log-format json`, and on the client side
// `--endpoint` failover and `call --verbose`. Each runs the CLI as a subprocess on real sockets.

import assert from "node:assert/strict";
import { connect } from "../client.ts";
import { FrameReader, FrameWriter } from "../framing.ts";
import { fromPem, readCertificate } from "../_x509_read.ts";
import { logLevel, makeLogger } from "../_cli_log.ts";
import { certs, connectTo, delay, freePort, root, startServer, until, writeAll } from "./_util.ts";
import { cliArgs, runCli, spawnChild } from "./_cli.ts";
import { assertPromtoolAccepts } from "./_tools.ts";
import * as workload from "./fixtures/workload.ts";

const path = (relative: string) => new URL(relative, root).pathname;
const fixture = path("tests/fixtures/workload.ts");
const ca = path("testdata/ca.pem");
const CERT_FLAGS = ["--cert", path("testdata/server.pem"), "--key", path("testdata/server.key")];
const encoder = new TextEncoder();

/** What a client may send that a terminal would act on: an OSC title, a bell, a bidi override. */
const EVIL = "\u001b]0;owned\u0007 and \u202edesrever";

/** The whole output of a `serve` that has exited, line by line. */
interface Exited {
  code: number;
  stdout: string[];
  stderr: string[];
}

/** A `cli.ts serve` subprocess whose stdout and stderr are read line by line as they come. */
class ServeChild implements AsyncDisposable {
  readonly stdout: string[] = [];
  readonly stderr: string[] = [];
  #child: Deno.ChildProcess;
  #reading: Promise<void>;
  #exited = false;
  #stopping: Promise<Exited> | undefined;
  port = 0;

  constructor(flags: string[]) {
    this.#child = spawnChild(cliArgs(["serve", fixture, "--port", "0", ...flags, ...CERT_FLAGS]));
    this.#reading = Promise.all([
      readLines(this.#child.stdout, this.stdout),
      readLines(this.#child.stderr, this.stderr),
    ]).then(() => {
      this.#exited = true;
    });
  }

  /**
   * Starts `serve` of the workload fixture on port 0 with the test certificate and `flags`, and
   * resolves once it prints its "listening on" line.
   */
  static async start(flags: string[]): Promise<ServeChild> {
    const child = new ServeChild(flags);
    try {
      await until(() => child.stdout.length > 0 || child.#exited, "the listening line", 30_000);
    } catch (error) {
      await child.stop();
      throw error;
    }
    const match = /^listening on 127\.0\.0\.1:(\d+)$/.exec(child.stdout[0] ?? "");
    if (match === null) {
      const exited = await child.stop();
      assert.fail(`serve did not start: ${JSON.stringify(exited)}`);
    }
    child.port = Number(match[1]);
    return child;
  }

  /** The first stderr line that matches `pattern`, waiting for it. */
  async line(pattern: RegExp, what: string, ms = 15_000): Promise<string> {
    await until(() => this.stderr.some((line) => pattern.test(line)) || this.#exited, what, ms);
    const found = this.stderr.find((line) => pattern.test(line));
    assert.ok(found !== undefined, `no ${what} in:\n${this.stderr.join("\n")}`);
    return found;
  }

  /** Sends SIGTERM once and resolves with the exit code and every line. */
  stop(): Promise<Exited> {
    this.#stopping ??= (async () => {
      try {
        this.#child.kill("SIGTERM");
      } catch {
        // Already exited.
      }
      const status = await this.#child.status;
      await this.#reading;
      return { code: status.code, stdout: this.stdout, stderr: this.stderr };
    })();
    return this.#stopping;
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.stop();
  }
}

/** Reads `stream` into `lines`, one entry a line, until it ends. */
async function readLines(stream: ReadableStream<Uint8Array>, lines: string[]): Promise<void> {
  let rest = "";
  for await (const chunk of stream.pipeThrough(new TextDecoderStream())) {
    const parts = (rest + chunk).split("\n");
    rest = parts.pop()!;
    lines.push(...parts);
  }
  if (rest !== "") lines.push(rest);
}

/** The workers that answer `whoami`, over fresh connections until both have (at most 100). */
async function servedBy(port: number, token?: string): Promise<string[]> {
  const seen = new Set<string>();
  for (let i = 0; i < 100 && seen.size < 2; i++) {
    await using client = await connectTo(port, token === undefined ? {} : { token });
    seen.add(await client.call("whoami") as string);
  }
  return [...seen].sort();
}

/** The value of the sample `series` (`name{labels}` as written) in `text`. */
function sample(text: string, series: string): number | undefined {
  const line = text.split("\n").find((line) => line.startsWith(`${series} `));
  return line === undefined ? undefined : Number(line.slice(series.length + 1));
}

// --- serve --workers -----------------------------------------------------------------------------

Deno.test("cli serve --workers 2 prints one listening line, serves from both workers, brings a crashed one back, and drains on SIGTERM with exit 0", async () => {
  await using server = await ServeChild.start(["--workers", "2"]);
  assert.deepEqual(server.stdout, [`listening on 127.0.0.1:${server.port}`]);
  assert.deepEqual(await servedBy(server.port), ["worker 1", "worker 2"]);

  let victim: string;
  {
    await using client = await connectTo(server.port);
    victim = await client.call("crash") as string;
  }
  await server.line(new RegExp(`^\\[${victim}\\] died \\(.*crashed on purpose`), "death line");
  await server.line(new RegExp(`^\\[${victim}\\] started again$`), "restart line");
  assert.deepEqual(await servedBy(server.port), ["worker 1", "worker 2"], "both serve again");

  // A call in flight when SIGTERM comes is answered before serve exits.
  const client = await connectTo(server.port);
  const waiting = client.call("wait", 700);
  await delay(150);
  const stopping = server.stop();
  assert.equal(await waiting, 700);
  await client.close();
  const exited = await stopping;
  assert.equal(exited.code, 0, exited.stderr.join("\n"));
  assert.deepEqual(exited.stdout, [`listening on 127.0.0.1:${server.port}`]);
  assert.deepEqual(
    exited.stderr.filter((line) => !/^\[worker [12]\] /.test(line)),
    [],
    "every log line names its worker",
  );
});

Deno.test("cli serve checks its flags and the module once, before any worker starts: exit 2 in one line", async (t) => {
  const dir = await Deno.makeTempDir();
  try {
    const empty = `${dir}/empty.ts`;
    await Deno.writeTextFile(empty, "export const notAMethod = 1;\n");
    const cases: [string, string[], RegExp][] = [
      ["--workers that is not a number", [fixture, "--workers", "many"], /--workers "many"/],
      ["--metrics without a port", [fixture, "--metrics", "9464"], /--metrics "9464".*HOST:PORT/],
      ["--metrics with a bare IPv6 address", [fixture, "--metrics", "::1:9464"], /brackets/],
      ["--log-format xml", [fixture, "--log-format", "xml"], /--log-format "xml".*text or json/],
      ["a module with no method, with --workers", [empty, "--workers", "2"], /exposes no method/],
    ];
    for (const [name, args, message] of cases) {
      await t.step(name, async () => {
        const out = await runCli(["serve", "--port", "0", ...args, ...CERT_FLAGS]);
        assert.equal(out.code, 2, out.stderr);
        assert.equal(out.stdout, "");
        const lines = out.stderr.trimEnd().split("\n");
        assert.equal(lines.length, 1, out.stderr);
        assert.match(lines[0]!, /^error: Cannot /);
        assert.match(lines[0]!, message);
      });
    }
    await t.step("with --log-format json, the failure is a JSON line", async () => {
      const out = await runCli([
        "serve",
        empty,
        "--port",
        "0",
        "--workers",
        "2",
        "--log-format",
        "json",
        ...CERT_FLAGS,
      ]);
      assert.equal(out.code, 2, out.stderr);
      const entry = JSON.parse(out.stderr);
      assert.equal(entry.level, "error");
      assert.equal(entry.event, "serve_failed");
      assert.equal(entry.exitCode, 2);
      assert.match(entry.message, /exposes no method/);
    });
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

// --- serve --metrics -----------------------------------------------------------------------------

Deno.test("cli serve --metrics HOST:0 says where it serves, counts exactly, sums over --workers, and promtool accepts it", async (t) => {
  for (const workers of [[], ["--workers", "2"]]) {
    await t.step(workers.length === 0 ? "one server" : "--workers 2", async () => {
      await using server = await ServeChild.start(["--metrics", "127.0.0.1:0", ...workers]);
      const line = await server.line(/^metrics on /, "metrics line");
      const url = /^metrics on (http:\/\/127\.0\.0\.1:\d+\/metrics)$/.exec(line)?.[1];
      assert.ok(url !== undefined, line);
      assert.ok(!url.endsWith(":0/metrics"), "the real port, not 0");
      // A known load: per connection, whoami, two burns and a failure. With workers, as many
      // connections as it takes for both to have served (the sum must count both).
      const seen = new Set<string>();
      let connections = 0;
      while (connections < 8 || (workers.length > 0 && seen.size < 2 && connections < 100)) {
        await using client = await connectTo(server.port);
        connections++;
        seen.add(await client.call("whoami") as string);
        await client.call("burn", 1);
        await client.call("burn", 1);
        await assert.rejects(client.call("fail", "on purpose"));
      }
      if (workers.length > 0) assert.equal(seen.size, 2, "both workers served");
      const response = await fetch(url);
      assert.equal(response.status, 200);
      assert.match(response.headers.get("content-type") ?? "", /^text\/plain; version=0\.0\.4/);
      const text = await response.text();
      assert.equal(sample(text, 'tlsrpc_calls_total{method="whoami",code="0"}'), connections);
      assert.equal(sample(text, 'tlsrpc_calls_total{method="burn",code="0"}'), 2 * connections);
      assert.equal(
        sample(text, 'tlsrpc_calls_total{method="fail",code="-32000"}'),
        connections,
        text,
      );
      assert.equal(sample(text, "tlsrpc_connections_total"), connections, text);
      await assertPromtoolAccepts(text);
      const exited = await server.stop();
      assert.equal(exited.code, 0, exited.stderr.join("\n"));
      assert.deepEqual(exited.stdout, [`listening on 127.0.0.1:${server.port}`]);
    });
  }
});

// --- serve --proxy-protocol ----------------------------------------------------------------------

Deno.test("cli serve --proxy-protocol: handlers see the client address of the PROXY header; a connection without one is closed and logged", async () => {
  await using server = await ServeChild.start(["--proxy-protocol"]);
  {
    // A balancer's connection: the header, then the client's TLS.
    await using client = await connect({
      hostname: "127.0.0.1",
      port: server.port,
      dial: async (_signal, { hostname, port }) => {
        const tcp = await Deno.connect({ hostname, port });
        await writeAll(tcp, encoder.encode("PROXY TCP4 203.0.113.7 127.0.0.1 4711 443\r\n"));
        return Deno.startTls(tcp, { hostname, caCerts: [certs.ca] });
      },
    });
    assert.deepEqual(await client.call("peer"), { hostname: "203.0.113.7", port: 4711 });
  }
  await assert.rejects(
    connect({
      hostname: "127.0.0.1",
      port: server.port,
      caCerts: [certs.ca],
      connectTimeout: 5000,
    }),
  );
  await server.line(/PROXY/, "log line of the connection without a header");
  const exited = await server.stop();
  assert.equal(exited.code, 0, exited.stderr.join("\n"));
});

// --- serve --log-format ----------------------------------------------------------------------------

Deno.test("cli serve --log-format json writes every stderr line as one JSON object with time, level, message and the server's fields", async (t) => {
  const dir = await Deno.makeTempDir();
  const tokenFile = `${dir}/token`;
  await Deno.writeTextFile(tokenFile, "s3cret\n");
  try {
    for (const workers of [[], ["--workers", "2"]]) {
      await t.step(workers.length === 0 ? "one server" : "--workers 2", async () => {
        await using server = await ServeChild.start([
          "--log-format",
          "json",
          "--token-file",
          tokenFile,
          ...workers,
        ]);
        assert.deepEqual(server.stdout, [`listening on 127.0.0.1:${server.port}`], "plain text");
        // The token reaches every worker: without it no call goes through.
        await assert.rejects(async () => {
          await using client = await connectTo(server.port);
          await client.call("whoami");
        });
        if (workers.length > 0) {
          assert.deepEqual(await servedBy(server.port, "s3cret"), ["worker 1", "worker 2"]);
        }
        {
          await using client = await connectTo(server.port, { token: "s3cret" });
          await assert.rejects(client.call("fail", EVIL));
        }
        // Not TLS at all: a failed handshake, logged with the peer.
        const conn = await Deno.connect({ hostname: "127.0.0.1", port: server.port });
        await writeAll(conn, encoder.encode("GET / HTTP/1.1\r\n\r\n"));
        await conn.read(new Uint8Array(64)).catch(() => null);
        conn.close();
        await server.line(/"fail\\" failed/, "the handler's failure");
        const exited = await server.stop();
        assert.equal(exited.code, 0, exited.stderr.join("\n"));

        const entries = exited.stderr.map((line) => {
          // deno-lint-ignore no-control-regex -- no raw control or bidi character may get out
          assert.doesNotMatch(line, /[\u0000-\u001f\u007f-\u009f\u202e]/, line);
          return JSON.parse(line) as Record<string, unknown>;
        });
        for (const entry of entries) {
          assert.equal(typeof entry.time, "string");
          assert.equal(new Date(entry.time as string).toISOString(), entry.time);
          assert.ok(["info", "warn", "error"].includes(entry.level as string), String(entry.level));
          assert.equal(typeof entry.message, "string");
          for (const key of ["event", "peer", "error"]) {
            if (key in entry) assert.equal(typeof entry[key], "string", `${key} in ${entry}`);
          }
        }
        const token = entries.find((entry) => entry.event === "token_authentication");
        assert.equal(token?.level, "info");
        assert.doesNotMatch(JSON.stringify(entries), /s3cret/, "the token is never logged");
        const server_ = entries.filter((entry) => entry.event !== "token_authentication");
        const failed = server_.find((entry) => String(entry.message).startsWith('"fail" failed'));
        assert.ok(failed !== undefined, JSON.stringify(entries));
        assert.equal(failed.message, `"fail" failed: ${EVIL}`);
        assert.equal(failed.level, "error");
        assert.equal(failed.error, "NotFound");
        const handshake = server_.find((entry) => /handshake|TLS/i.test(String(entry.message)));
        assert.ok(handshake !== undefined, JSON.stringify(entries));
        assert.match(String(handshake.message), /127\.0\.0\.1:\d+/);
        if (workers.length > 0) {
          for (const entry of server_) assert.ok(entry.worker === 1 || entry.worker === 2);
        } else {
          for (const entry of entries) assert.equal(entry.worker, undefined);
        }
      });
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("cli serve --log-format text (the default) escapes what a client sent and names the worker", async () => {
  await using server = await ServeChild.start(["--workers", "1"]);
  {
    await using client = await connectTo(server.port);
    await assert.rejects(client.call("fail", EVIL));
  }
  const line = await server.line(/"fail" failed/, "the handler's failure");
  assert.equal(line, '[worker 1] "fail" failed: \\x1b]0;owned\\x07 and \\u{202e}desrever');
  assert.equal((await server.stop()).code, 0);
});

Deno.test("makeLogger() writes text as the server's line escaped, JSON as one object a line with the fields; logLevel() grades them", async (t) => {
  const now = () => new Date(Date.UTC(2030, 0, 2, 3, 4, 5));
  await t.step("text", () => {
    const lines: string[] = [];
    const log = makeLogger("text", (line) => void lines.push(line), now);
    log({ level: "warn", message: `closed 1.2.3.4:5: ${EVIL}`, fields: { event: "closed" } });
    log({ level: "info", message: "started again", worker: 3, fields: {} });
    assert.deepEqual(lines, [
      "closed 1.2.3.4:5: \\x1b]0;owned\\x07 and \\u{202e}desrever",
      "[worker 3] started again",
    ]);
  });
  await t.step("json", () => {
    const lines: string[] = [];
    const log = makeLogger("json", (line) => void lines.push(line), now);
    const fields = { event: "closed", peer: "1.2.3.4:5", bytes: 12, level: "spoofed" };
    log({ level: "error", message: EVIL, fields, worker: 2, errorName: "ConnectionError" });
    assert.equal(lines.length, 1);
    // deno-lint-ignore no-control-regex -- no raw control or bidi character may get out
    assert.doesNotMatch(lines[0]!, /[\u001b\u0007\u202e]/);
    assert.deepEqual(JSON.parse(lines[0]!), {
      time: "2030-01-02T03:04:05.000Z",
      level: "error",
      message: EVIL,
      event: "closed",
      peer: "1.2.3.4:5",
      worker: 2,
      error: "ConnectionError",
      bytes: 12,
    });
  });
  await t.step("levels", () => {
    assert.equal(logLevel(new Error("x"), {}), "error");
    assert.equal(logLevel("a string", {}), "warn");
    assert.equal(logLevel(undefined, { event: "suppressed" }), "warn");
    assert.equal(logLevel(undefined, { event: "closed" }), "info");
    assert.equal(logLevel(undefined, {}), "warn", "the hook is called for what cost a connection");
  });
});

// --- call and list --endpoint ----------------------------------------------------------------------

Deno.test("cli call and list --endpoint fail over from dead endpoints to the live one", async (t) => {
  await using server = await startServer(workload);
  const live = `127.0.0.1:${server.addr.port}`;
  // Three dead endpoints (one IPv6, in brackets) and the live one: the client shuffles them, so
  // a run that tried a dead one first is what shows failover; one comes within a few runs.
  const endpoints = [`127.0.0.1:${freePort()}`, `[::1]:${freePort()}`, `127.0.0.1:${freePort()}`];
  const flags = [...endpoints, live].flatMap((endpoint) => ["--endpoint", endpoint]);
  await t.step("call", async () => {
    let failedOver = false;
    for (let run = 0; run < 10 && !failedOver; run++) {
      const out = await runCli(["call", "--verbose", ...flags, "--ca", ca, "burn", "0"]);
      assert.equal(out.code, 0, out.stderr);
      assert.match(out.stdout, /^\d+\n$/);
      const attempts = out.stderr.split("\n").filter((line) => line.startsWith("* connecting to "));
      assert.equal(attempts.at(-1), `* connecting to ${live}`, out.stderr);
      failedOver = attempts.length > 1;
    }
    assert.ok(failedOver, "in ten runs, the client never tried a dead endpoint first");
  });
  await t.step("list", async () => {
    const out = await runCli(["list", ...flags, "--ca", ca]);
    assert.equal(out.code, 0, out.stderr);
    assert.match(out.stdout, /^whoami\(\)$/m);
  });
  await t.step("every endpoint dead: exit 3 naming each", async () => {
    const dead = endpoints.flatMap((endpoint) => ["--endpoint", endpoint]);
    const out = await runCli(["call", ...dead, "--ca", ca, "whoami"]);
    assert.equal(out.code, 3, out.stderr);
    const [first, ...each] = out.stderr.trimEnd().split("\n");
    assert.equal(
      first,
      "error: Cannot connect to any of 3 endpoints (what went wrong at each follows; check --endpoint)",
    );
    assert.deepEqual(
      each.map((line) => /^ {2}"([^"]+)": /.exec(line)?.[1]).sort(),
      [...endpoints].sort(),
      out.stderr,
    );
  });
  await t.step("usage errors: exit 2", async () => {
    const cases: [string[], RegExp][] = [
      [["--endpoint", "::1:7443"], /brackets/],
      [["--endpoint", "localhost"], /HOST:PORT/],
      [["--endpoint", "127.0.0.1:0"], /from 1 to 65535/],
      [["--endpoint", live, "--port", "7443"], /--endpoint, or --hostname and --port/],
    ];
    for (const [args, message] of cases) {
      const out = await runCli(["call", ...args, "--ca", ca, "whoami"]);
      assert.equal(out.code, 2, out.stderr);
      assert.match(out.stderr, message);
    }
  });
});

// --- call --verbose ------------------------------------------------------------------------------

Deno.test("cli call --verbose prints timings, the server certificate and the extensions of its one connection on stderr, and the result alone on stdout", async () => {
  await using server = await startServer(workload, { metrics: true });
  const target = `127.0.0.1:${server.addr.port}`;
  const out = await runCli([
    "call",
    "--verbose",
    "--port",
    String(server.addr.port),
    "--hostname",
    "127.0.0.1",
    "--ca",
    ca,
    "wait",
    "5",
  ]);
  assert.equal(out.code, 0, out.stderr);
  assert.equal(out.stdout, "5\n");
  const notAfter = readCertificate(fromPem(certs.cert, "CERTIFICATE", "certificate")).notAfter;
  const ms = String.raw`\d+\.\d ms`;
  const expected = [
    new RegExp(`^\\* connecting to ${target}$`),
    new RegExp(`^\\* ${target}: TCP connect ${ms}, TLS handshake ${ms} \\(TLSv1\\.[23]\\)$`),
    new RegExp(
      "^\\* server certificate: subject CN=localhost; issuer CN=tlsrpc test CA; names " +
        "DNS:localhost, IP:127\\.0\\.0\\.1, IP:::1; expires " +
        `${notAfter.toISOString().replaceAll(".", "\\.")} \\(in \\d+ days\\)$`,
    ),
    new RegExp(
      `^\\* connected in ${ms} \\(connect\\(\\) as a whole: TCP, TLS, rpc.hello, token\\)$`,
    ),
    /^\* extensions: rich \(the client offers rich; the server speaks rich\)$/,
    new RegExp(`^\\* call "wait" took ${ms}$`),
  ];
  const lines = out.stderr.trimEnd().split("\n");
  assert.equal(lines.length, expected.length, out.stderr);
  expected.forEach((pattern, i) => assert.match(lines[i]!, pattern));
  // All of it learnt on the one connection the call went over (behind a balancer, a second one
  // could reach another server).
  assert.equal(server.metrics?.snapshot().connectionsTotal, 1);
});

Deno.test("cli call --verbose says what a plain JSON-RPC server agreed to: no extensions", async () => {
  // A plain JSON-RPC 2.0 server on the same framing: rpc.hello is "method not found" to it.
  const listener = Deno.listenTls({
    hostname: "127.0.0.1",
    port: 0,
    cert: certs.cert,
    key: certs.key,
  });
  const serving = (async () => {
    const conn = await listener.accept();
    const reader = new FrameReader(conn);
    const writer = new FrameWriter(conn);
    try {
      for (let frames = await reader.read(); frames !== null; frames = await reader.read()) {
        for (const frame of frames) {
          const { id, method, params } = JSON.parse(new TextDecoder().decode(frame));
          writer.writeText(JSON.stringify(
            method === "wait"
              ? { jsonrpc: "2.0", id, result: params[0] }
              : { jsonrpc: "2.0", id, error: { code: -32601, message: "Method not found" } },
          ));
        }
      }
    } catch {
      // The CLI closed the connection: the test is over.
    } finally {
      conn.close();
    }
  })();
  const out = await runCli([
    "call",
    "--verbose",
    "--port",
    String((listener.addr as Deno.NetAddr).port),
    "--hostname",
    "127.0.0.1",
    "--ca",
    ca,
    "wait",
    "1",
  ]);
  listener.close();
  await serving;
  assert.equal(out.code, 0, out.stderr);
  assert.equal(out.stdout, "1\n");
  assert.match(
    out.stderr,
    /^\* extensions: none: the server answered rpc\.hello with -32601 Method not found \(a plain JSON-RPC server: calls go as plain JSON\)$/m,
  );
});
