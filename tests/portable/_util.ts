/**
 * The helpers the portable tests share. These tests run unchanged on Deno (`deno test`), Node.js
 * (`node --test`) and Bun (`bun test`), so they use `node:test`, `node:assert/strict` and `node:`
 * built-ins only, never `Deno.*`: the test certificates, servers and clients, a time bound, and
 * the other runtimes' binaries, to run peers in (`_peer.ts`). The data they make is in `_data.ts`.
 *
 * @module
 */

import assert from "node:assert/strict";
import { Buffer } from "node:buffer";
import { type ChildProcess, spawn } from "node:child_process";
import { existsSync, readdirSync, readFileSync } from "node:fs";
import { delimiter, join } from "node:path";
import process from "node:process";
import { fileURLToPath } from "node:url";
import { connect, type ConnectOptions, type RpcClient } from "../../client.ts";
import { ErrorCode, RpcError } from "../../errors.ts";
import { type RpcServer, serve, type ServeOptions } from "../../server.ts";
import { pattern } from "./_data.ts";

const root = fileURLToPath(new URL("../../", import.meta.url));

/** A runtime the library runs on. */
export type Runtime = "deno" | "node" | "bun";

/** The runtime these tests run on. */
export const runtime: Runtime = "Deno" in globalThis
  ? "deno"
  : "Bun" in globalThis
  ? "bun"
  : "node";

/** The runtimes of the cross-runtime pairings. */
export const RUNTIMES: readonly Runtime[] = ["deno", "node", "bun"];

// --- certificates, servers and clients ----------------------------------------------------------

function testdata(name: string): string {
  return readFileSync(join(root, "testdata", name), "utf8");
}

/** The test CA and the server certificate for localhost, 127.0.0.1 and ::1. */
export const certs: { ca: string; cert: string; key: string } = {
  ca: testdata("ca.pem"),
  cert: testdata("server.pem"),
  key: testdata("server.key"),
};

/** Options of {@linkcode startServer}: any of `serve()`'s, and where its log lines go. */
export interface StartServerOptions extends Partial<ServeOptions> {
  /** Collects the server's log lines. @default a fresh array */
  logs?: string[];
}

/** Serves `handlers` on 127.0.0.1, port 0, with the test certificate and quiet logs. */
export function startServer(
  handlers: object,
  options: StartServerOptions = {},
): Promise<RpcServer> {
  const { logs = [], ...rest } = options;
  return serve(handlers, {
    hostname: "127.0.0.1",
    port: 0,
    cert: certs.cert,
    key: certs.key,
    onListen: () => {},
    onError: (_error, line) => void logs.push(line),
    ...rest,
  });
}

/** Connects to `port` on 127.0.0.1 trusting the test CA; calls time out after 10 s. */
export function connectTo(port: number, options: ConnectOptions = {}): Promise<RpcClient> {
  return connect({ hostname: "127.0.0.1", port, caCerts: [certs.ca], timeout: 10_000, ...options });
}

/** The handlers every peer serves, here and in `_peer.ts`. */
export const handlers = {
  echo: <T>(value: T): T => value,
  add: (a: number, b: number): number => a + b,
  /** Waits `ms` then answers `n`: calls that overlap. */
  later: async (n: number, ms: number): Promise<number> => {
    await new Promise((resolve) => setTimeout(resolve, ms));
    return n;
  },
  /** A value of `n` bytes, a pattern that a shifted or truncated copy does not match. */
  bytes: (n: number): Uint8Array => pattern(n),
  /** A text of `n` characters. */
  text: (n: number): string => "x".repeat(n),
  /** Throws an error with `code`, `message` and `data`, as an RpcError. */
  fail: (code: number, message: string, data?: unknown): never => {
    throw new RpcError(code, message, data === undefined ? {} : { data });
  },
  /** Fails in the runtime (a file that is not there): the client gets -32000 without the path. */
  crash: (): string => readFileSync("/nonexistent/secret-path", "utf8"),
  /** The runtime that serves. */
  runtime: (): Runtime => runtime,
};

const MiB = 1024 * 1024;

/** What {@linkcode exercise} saw. */
export interface ExerciseReport {
  /** The runtime of the server, as it says. */
  server: Runtime;
  /** How many calls were answered. */
  calls: number;
}

/**
 * What a cross-runtime pairing must get right, asserted from the client's side of `client`
 * (connected to a server of {@linkcode handlers}): 200 concurrent calls, each answered with its
 * own result; errors with their codes, messages and data; a 3 MB value each way, bytes and text;
 * rich values.
 *
 * @throws {AssertionError} At the first thing that is not right.
 */
export async function exercise(client: RpcClient): Promise<ExerciseReport> {
  let calls = 0;
  const server = await client.call("runtime") as Runtime;
  calls++;

  const concurrent = Array.from(
    { length: 200 },
    (_, i) => i % 2 === 0 ? client.call("later", i, i % 7) : client.call("add", i, 1000),
  );
  const results = await Promise.all(concurrent);
  results.forEach((result, i) => assert.equal(result, i % 2 === 0 ? i : i + 1000, `call ${i}`));
  calls += results.length;

  await assert.rejects(
    client.call("fail", 4242, "Cannot frobnicate: it is late", { why: "late" }),
    (
      error,
    ) => {
      assert.ok(error instanceof RpcError, `expected RpcError, got ${error}`);
      assert.equal(error.code, 4242);
      assert.equal(error.message, "Cannot frobnicate: it is late");
      assert.deepEqual(error.data, { why: "late" });
      return true;
    },
  );
  await assert.rejects(client.call("crash"), (error) => {
    assert.ok(error instanceof RpcError, `expected RpcError, got ${error}`);
    assert.equal(error.code, ErrorCode.ServerError);
    assert.ok(!error.message.includes("secret-path"), error.message);
    return true;
  });
  await assert.rejects(client.call("nowhere"), (error) => {
    assert.ok(error instanceof RpcError, `expected RpcError, got ${error}`);
    assert.equal(error.code, ErrorCode.MethodNotFound);
    return true;
  });
  calls += 3;

  const big = pattern(3 * MiB, 7);
  const echoed = await client.call("echo", big);
  assert.ok(echoed instanceof Uint8Array, "3 MB of bytes come back as a Uint8Array");
  assert.equal(echoed.length, big.length);
  assert.ok(Buffer.from(echoed).equals(Buffer.from(big)), "3 MB of bytes come back intact");
  const made = await client.call("bytes", 3 * MiB) as Uint8Array;
  assert.ok(Buffer.from(made).equals(Buffer.from(pattern(3 * MiB))), "3 MB made by the server");
  const text = "é".repeat(1.5 * MiB); // 3 MB of UTF-8
  assert.equal(await client.call("echo", text), text);
  calls += 3;

  const rich = {
    date: new Date(1_700_000_000_000),
    map: new Map<unknown, unknown>([["a", 1], [2, [3n]]]),
    set: new Set(["x", "y"]),
    big: -(2n ** 80n),
    nothing: undefined,
    numbers: [NaN, Infinity, -Infinity, -0],
    floats: new Float64Array([1.5, -2.25]),
    $t: "a member named like the tag",
  };
  assert.deepEqual(await client.call("echo", rich), rich);
  calls++;
  return { server, calls };
}

// --- time -----------------------------------------------------------------------------------------

/**
 * `promise`, or a rejection naming `what` after `ms`: a bound, so that a hang fails its test
 * rather than the whole run, not a timing assertion.
 */
export async function within<T>(promise: Promise<T>, what: string, ms = 15_000): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  try {
    return await Promise.race([
      promise,
      new Promise<never>((_, reject) => {
        timer = setTimeout(() => reject(new Error(`${what} took longer than ${ms} ms`)), ms);
      }),
    ]);
  } finally {
    clearTimeout(timer);
  }
}

/** Resolves after `ms`. */
export function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

// --- other runtimes -------------------------------------------------------------------------------

/**
 * The binary of `name`: this process's own for the runtime that runs the tests; else
 * `TLSRPC_DENO`, `TLSRPC_NODE` or `TLSRPC_BUN` (the runner sets them), else the copy that
 * `.ci/runtimes.sh` (Node.js, Bun) or `.ci/deno` installs in `.ci/cache`, else `deno` on PATH.
 * A missing runtime fails the test that needs it: a pairing skipped is not a pass.
 */
export function runtimeBinary(name: Runtime): string {
  if (name === runtime) return process.execPath;
  const fromEnv = process.env[`TLSRPC_${name.toUpperCase()}`];
  if (fromEnv) return fromEnv;
  const cache = join(root, ".ci", "cache");
  const inside: Record<Runtime, string[]> = {
    node: ["node_modules/node/bin/node"],
    bun: ["node_modules/bun/bin/bun.exe", "node_modules/bun/bin/bun"],
    deno: ["node_modules/deno/deno"],
  };
  const folders = existsSync(cache)
    ? readdirSync(cache).filter((folder) => folder.startsWith(`${name}-`)).sort().reverse()
    : [];
  for (const folder of folders) {
    for (const path of inside[name]) {
      if (existsSync(join(cache, folder, path))) return join(cache, folder, path);
    }
  }
  if (name === "deno") {
    for (const dir of (process.env.PATH ?? "").split(delimiter)) {
      if (dir !== "" && existsSync(join(dir, "deno"))) return join(dir, "deno");
    }
  }
  assert.fail(
    `Cannot find ${name}: set TLSRPC_${name.toUpperCase()}, or run .ci/runtimes.sh (Node.js, ` +
      "Bun) or .ci/deno (Deno) to install it into .ci/cache",
  );
}

/** A peer process: another runtime running `_peer.ts`. */
export interface Peer extends AsyncDisposable {
  readonly child: ChildProcess;
  /** The lines it printed to stdout, each parsed as JSON, in order. */
  readonly messages: AsyncIterator<unknown>;
  /** What it printed to stderr, for failure messages. */
  stderr(): string;
  /** Resolves with its exit code once it has exited. */
  readonly exited: Promise<number | null>;
}

/**
 * Starts `_peer.ts` on `name` with `args`. Deno gets every permission; Node.js runs TypeScript
 * by type stripping, Bun natively.
 */
export function startPeer(name: Runtime, args: string[]): Peer {
  const script = fileURLToPath(new URL("./_peer.ts", import.meta.url));
  const argv = name === "deno" ? ["run", "-A", "--quiet", script, ...args] : [script, ...args];
  const child = spawn(runtimeBinary(name), argv, {
    cwd: root,
    stdio: ["ignore", "pipe", "pipe"],
    env: { ...process.env, NO_COLOR: "1" },
  });
  let errors = "";
  child.stderr!.setEncoding("utf8");
  child.stderr!.on("data", (chunk: string) => errors += chunk);
  const exited = new Promise<number | null>((resolve) => {
    child.once("exit", (code) => resolve(code));
    child.once("error", (error) => {
      errors += String(error);
      resolve(null);
    });
  });
  return {
    child,
    messages: lines(child),
    stderr: () => errors,
    exited,
    async [Symbol.asyncDispose]() {
      if (child.exitCode === null && child.signalCode === null) child.kill("SIGTERM");
      await exited;
    },
  };
}

/** The JSON lines a child prints to stdout. */
async function* lines(child: ChildProcess): AsyncGenerator<unknown> {
  let buffered = "";
  child.stdout!.setEncoding("utf8");
  for await (const chunk of child.stdout! as AsyncIterable<string>) {
    buffered += chunk;
    for (let end = buffered.indexOf("\n"); end >= 0; end = buffered.indexOf("\n")) {
      const line = buffered.slice(0, end).trim();
      buffered = buffered.slice(end + 1);
      if (line !== "") yield JSON.parse(line);
    }
  }
}

/** The next message of `peer`, failing with its stderr when it exits first. */
export async function nextMessage(peer: Peer, what: string, ms = 30_000): Promise<unknown> {
  const next = await within(peer.messages.next(), what, ms).catch((error) => {
    throw new Error(`${error.message}; the peer's stderr: ${peer.stderr()}`);
  });
  if (next.done) {
    assert.fail(
      `${what}: the peer exited (${await peer.exited}) first; its stderr: ${peer.stderr()}`,
    );
  }
  return next.value;
}
