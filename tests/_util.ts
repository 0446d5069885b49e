/**
 * The helpers the tests share, each defined once: the test certificates and servers, frame
 * builders, timing guards and outcomes, raw TLS and TCP clients, a fake TLS server that a test
 * scripts, a TCP relay that can cut connections, and the repository's root. The runners of the
 * CLI are in `_cli.ts`, the tools of .ci/fetch_tools.sh in `_tools.ts`, and the data every runtime
 * can make (seeded numbers, byte patterns, extended payloads) in `portable/_data.ts`. bench/ uses
 * them too.
 *
 * @module
 */

import assert from "node:assert/strict";
import { connect, type ConnectOptions, type RpcClient } from "../client.ts";
import { FrameReader, FrameWriter } from "../framing.ts";
import { type RpcServer, serve, type ServeOptions } from "../server.ts";
import { concat } from "./portable/_data.ts";

const testdata = new URL("../testdata/", import.meta.url);
const encoder = new TextEncoder();
const decoder = new TextDecoder();

// --- certificates, servers and clients ---------------------------------------------------------

/** The test CA and the server certificate for localhost, 127.0.0.1 and ::1. */
export const certs: { ca: string; cert: string; key: string } = {
  ca: Deno.readTextFileSync(new URL("ca.pem", testdata)),
  cert: Deno.readTextFileSync(new URL("server.pem", testdata)),
  key: Deno.readTextFileSync(new URL("server.key", testdata)),
};

/** The paths of the files of {@linkcode certs}, for the CLI's --ca, --cert and --key. */
export const certFiles: { ca: string; cert: string; key: string } = {
  ca: new URL("ca.pem", testdata).pathname,
  cert: new URL("server.pem", testdata).pathname,
  key: new URL("server.key", testdata).pathname,
};

/** Options for a test server: port 0, the test certificate, and quiet logs collected in `logs`. */
export function serverOptions(logs: string[] = []): {
  port: number;
  cert: string;
  key: string;
  onListen: () => void;
  onError: (error: unknown, line: string) => void;
} {
  return {
    port: 0,
    cert: certs.cert,
    key: certs.key,
    onListen: () => {},
    onError: (_error, line) => void logs.push(line),
  };
}

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
  const { logs, ...rest } = options;
  return serve(handlers, { ...serverOptions(logs), ...rest });
}

/**
 * Serves `handlers` on `port` of 127.0.0.1 (0: any) with the test certificate and quiet logs. For
 * a port a previous server just left, the listen is retried a few times in case it is still
 * briefly busy.
 */
export async function serveOn(
  port: number,
  handlers: object,
  options: Partial<ServeOptions> = {},
): Promise<RpcServer> {
  for (let attempt = 1;; attempt++) {
    try {
      return await serve(handlers, { ...serverOptions(), ...options, port });
    } catch (error) {
      const busy = error instanceof Deno.errors.AddrInUse ||
        (error as { code?: unknown } | null)?.code === "EADDRINUSE";
      if (!busy || attempt >= 20) throw error;
      await delay(50);
    }
  }
}

/** Connects to `port` on 127.0.0.1 trusting the test CA. */
export function connectTo(port: number, options: ConnectOptions = {}): Promise<RpcClient> {
  return connect({ hostname: "127.0.0.1", port, caCerts: [certs.ca], ...options });
}

/** Server options whose `onError` lines are collected in `lines` and can be awaited. */
export interface WatchedOptions {
  options: ServeOptions;
  lines: string[];
  /** Resolves once `predicate` holds of the lines; fails if no new line comes within `ms`. */
  waitFor(predicate: (lines: string[]) => boolean, what: string, ms?: number): Promise<void>;
}

/** Test server options with `extra`, whose log lines can be awaited. */
export function watchedOptions(extra: Partial<ServeOptions> = {}): WatchedOptions {
  const lines: string[] = [];
  let wake: (() => void) | undefined;
  const options: ServeOptions = {
    ...serverOptions(),
    ...extra,
    onError: (_error, line) => {
      lines.push(line);
      wake?.();
    },
  };
  async function waitFor(
    predicate: (lines: string[]) => boolean,
    what: string,
    ms = 5_000,
  ): Promise<void> {
    // Each turn waits for one more line; the lines a test causes (5 a second) bound the loop.
    for (let turns = 0; !predicate(lines); turns++) {
      if (turns > 200) throw new Error(`Gave up waiting: ${what}`);
      await within(new Promise<void>((resolve) => wake = resolve), what, ms);
    }
  }
  return { options, lines, waitFor };
}

/**
 * Runs `misbehave` while a good client, connected before it starts, calls the server on `port` in
 * a loop (`add` and `subtract`, which examples/calc.ts has too). Every good call must succeed,
 * during the misbehaviour and once more after it.
 */
export async function whileGoodClientCalls<T>(
  port: number,
  misbehave: () => Promise<T>,
): Promise<T> {
  await using client = await connectTo(port, { connectTimeout: 5_000 });
  let stopped = false;
  let calls = 0;
  const calling = (async () => {
    // The pause between calls leaves the server to the attack; the bound keeps a case finite.
    for (let i = 0; !stopped && i < 20_000; i++) {
      const results = await Promise.all([client.call("add", i, 1), client.call("subtract", i, 1)]);
      assert.deepEqual(results, [i + 1, i - 1]);
      calls++;
      await delay(5);
    }
  })();
  // Awaited below; this only keeps a failure from counting as unhandled until then.
  calling.catch(() => {});
  let outcome: { ok: true; value: T } | { ok: false; error: unknown };
  try {
    outcome = { ok: true, value: await misbehave() };
  } catch (error) {
    outcome = { ok: false, error };
  }
  stopped = true;
  // A failed good call is what the caller guards against: report it first.
  await calling;
  if (!outcome.ok) throw outcome.error;
  assert.equal(await client.call("add", calls, 1), calls + 1);
  return outcome.value;
}

// --- frames and records ------------------------------------------------------------------------

/** A frame's 4-byte length prefix. */
export function header(length: number): Uint8Array {
  const bytes = new Uint8Array(4);
  new DataView(bytes.buffer).setUint32(0, length);
  return bytes;
}

/** The bytes of one frame holding `payload`, a string as UTF-8. */
export function framed(payload: string | Uint8Array): Uint8Array {
  const body = typeof payload === "string" ? encoder.encode(payload) : payload;
  const bytes = new Uint8Array(4 + body.length);
  bytes.set(header(body.length));
  bytes.set(body, 4);
  return bytes;
}

/**
 * The frames of `messages`, one each (a string as it is, anything else as JSON), in one buffer to
 * be sent in one write.
 */
export function frames(messages: readonly unknown[]): Uint8Array {
  return concat(
    messages.map((message) =>
      framed(typeof message === "string" ? message : JSON.stringify(message))
    ),
  );
}

/** A JSON-RPC request object; without `params` it has no `params` member. */
export function request(id: unknown, method: string, params?: unknown): Record<string, unknown> {
  return { jsonrpc: "2.0", id, method, ...(params === undefined ? {} : { params }) };
}

/** A partial TLS ClientHello: the record header promises 512 bytes, and 11 arrive. */
export const PARTIAL_CLIENT_HELLO: Uint8Array = new Uint8Array([
  ...[0x16, 0x03, 0x01, 0x02, 0x00], // handshake record, TLS 1.0 record version, 512 bytes
  ...[0x01, 0x00, 0x01, 0xfc, 0x03, 0x03], // ClientHello of 508 bytes, client version TLS 1.2
]);

/**
 * A real ClientHello: the first TLS record `Deno.connectTls` sends, caught by a plain TCP
 * listener. Fault tests and the soak corrupt or cut it.
 */
export async function recordClientHello(): Promise<Uint8Array> {
  using listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const connecting = Deno.connectTls({
    hostname: "127.0.0.1",
    port: listener.addr.port,
    caCerts: [certs.ca],
  });
  using server = await listener.accept();
  using client = await connecting;
  const handshake = client.handshake().catch(() => {});
  const bytes = new Uint8Array(16 * 1024);
  let length = 0;
  const recordLength = () => length < 5 ? Infinity : 5 + ((bytes[3]! << 8) | bytes[4]!);
  for (let reads = 0; reads < 64 && length < recordLength(); reads++) {
    const count = await server.read(bytes.subarray(length));
    if (count === null) break;
    length += count;
  }
  client.close();
  await handshake;
  if (bytes[0] !== 0x16 || bytes[5] !== 0x01) {
    throw new Error("Cannot record a ClientHello: the first record is not one");
  }
  return bytes.slice(0, recordLength());
}

// --- timing guards -------------------------------------------------------------------------------

/** Resolves after `ms`. */
export function delay(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/**
 * Resolves as `promise` does, or rejects once `ms` have passed: a guard so that a broken behaviour
 * fails the test instead of hanging it. Not a timing assertion; the limit is far above any real wait.
 */
export async function within<T>(promise: Promise<T>, what: string, ms = 5_000): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  try {
    return await Promise.race([
      promise,
      new Promise<never>((_, reject) => {
        timer = setTimeout(() => reject(new Error(`Gave up waiting: ${what} (${ms} ms)`)), ms);
      }),
    ]);
  } finally {
    clearTimeout(timer);
  }
}

/** Whether `promise` settles within `ms`; never rejects, and ignores the outcome. */
export async function settlesWithin(promise: Promise<unknown>, ms: number): Promise<boolean> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  try {
    return await Promise.race([
      promise.then(() => true, () => true),
      new Promise<boolean>((resolve) => timer = setTimeout(() => resolve(false), ms)),
    ]);
  } finally {
    clearTimeout(timer);
  }
}

/** Polls `predicate` every 10 ms until it holds; throws once `ms` have passed. */
export async function until(
  predicate: () => boolean | Promise<boolean>,
  what: string,
  ms = 5_000,
): Promise<void> {
  const deadline = Date.now() + ms;
  // The deadline ends the loop; the count only guards against a clock that stands still.
  for (let turns = 0; !(await predicate()); turns++) {
    if (Date.now() > deadline || turns > ms) throw new Error(`Gave up waiting: ${what} (${ms} ms)`);
    await delay(10);
  }
}

/** The outcome of a promise, caught at once so that no rejection goes unhandled while we wait. */
export type Outcome = { ok: true; value: unknown } | { ok: false; error: unknown };

/** The outcome of `promise`: never rejects. */
export function outcome(promise: Promise<unknown>): Promise<Outcome> {
  return promise.then((value) => ({ ok: true, value }), (error) => ({ ok: false, error }));
}

/**
 * Asserts that `promise` rejects with an instance of `type` within the guard of
 * {@linkcode within}, and returns the error.
 */
export async function rejectsWith<E extends Error>(
  promise: Promise<unknown>,
  type: new (...args: never[]) => E,
  what: string,
): Promise<E> {
  const result = await within(outcome(promise), what);
  assert.ok(!result.ok, `${what}: expected ${type.name}, got the result ${JSON.stringify(result)}`);
  assert.ok(result.error instanceof type, `${what}: expected ${type.name}, got ${result.error}`);
  return result.error;
}

/** A promise handlers wait on until the test opens it, and how many have reached it. */
export interface Gate {
  /** What a handler awaits; each read counts one call reaching the gate. */
  readonly promise: Promise<void>;
  /** Lets every waiting handler go on. */
  open(): void;
  /** Resolves once the expected number of calls have reached the gate. */
  readonly entered: Promise<void>;
}

/** A gate whose `entered` resolves once `expected` calls have reached it. */
export function gate(expected = 1): Gate {
  const opened = Promise.withResolvers<void>();
  const entered = Promise.withResolvers<void>();
  let count = 0;
  return {
    get promise() {
      if (++count >= expected) entered.resolve();
      return opened.promise;
    },
    open: () => opened.resolve(),
    entered: entered.promise,
  };
}

// --- sockets -------------------------------------------------------------------------------------

/** Closes `closer`, ignoring that it is closed already. */
export function closeQuietly(closer: { close(): void }): void {
  try {
    closer.close();
  } catch {
    // Already closed.
  }
}

/** Writes all of `bytes` to `conn`; rejects as `conn.write` does. */
export async function writeAll(conn: Deno.Conn, bytes: Uint8Array): Promise<void> {
  let offset = 0;
  while (offset < bytes.length) offset += await conn.write(bytes.subarray(offset));
}

/**
 * Hands each connection `listener` accepts to `handle`, until the listener is closed; resolves
 * then, and never rejects.
 */
export async function acceptEach<C extends Deno.Conn>(
  listener: Deno.Listener<C>,
  handle: (conn: C) => void,
): Promise<void> {
  for (;;) {
    let conn: C;
    try {
      conn = await listener.accept();
    } catch {
      return;
    }
    handle(conn);
  }
}

/** A port on 127.0.0.1 that was free a moment ago: nothing listens there (yet). */
export function freePort(): number {
  using listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  return listener.addr.port;
}

/** A TCP relay from {@linkcode tcpRelay}. */
export interface TcpRelay extends AsyncDisposable {
  /** The port it listens on, on 127.0.0.1. */
  readonly port: number;
  /**
   * What it does with each new connection: `"forward"` relays it to the target; `"refuse"` closes
   * it as soon as it is accepted, counting it in `refused`; `"stall"` keeps it open and says
   * nothing, so that a TLS handshake never completes, counting it in `stalled`.
   */
  mode: "forward" | "refuse" | "stall";
  /** Connections closed at once in mode `"refuse"`. */
  readonly refused: number;
  /** Connections held in mode `"stall"`. */
  readonly stalled: number;
  /**
   * Drops every connection through it at once: the client sees its connection die, the server
   * keeps running.
   */
  cut(): void;
  /** Stops listening and cuts: the endpoint is gone, as a server that died is. */
  kill(): void;
}

/**
 * A TCP relay on 127.0.0.1 to port `target` of 127.0.0.1, in mode `"forward"`, that a test can
 * switch to refusing or stalling new connections, cut, or kill. A connection whose target cannot
 * be reached is closed. Disposing stops listening, cuts, and waits for every relayed connection.
 */
export function tcpRelay(target: number): TcpRelay {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const conns = new Set<Deno.Conn>();
  const tasks = new Set<Promise<void>>();
  let refused = 0;
  let stalled = 0;
  function track(task: Promise<void>): void {
    tasks.add(task);
    void task.then(() => tasks.delete(task));
  }
  async function hold(conn: Deno.Conn): Promise<void> {
    conns.add(conn);
    const buffer = new Uint8Array(16 * 1024);
    try {
      while (await conn.read(buffer) !== null) { /* the ClientHello, unanswered */ }
    } catch {
      // Cut, or the client went away.
    } finally {
      closeQuietly(conn);
      conns.delete(conn);
    }
  }
  async function pipe(from: Deno.Conn, to: Deno.Conn): Promise<void> {
    const buffer = new Uint8Array(16 * 1024);
    try {
      for (let n = await from.read(buffer); n !== null; n = await from.read(buffer)) {
        for (let offset = 0; offset < n;) offset += await to.write(buffer.subarray(offset, n));
      }
    } catch {
      // One side went away: the other follows.
    } finally {
      closeQuietly(from);
      closeQuietly(to);
    }
  }
  async function forward(conn: Deno.Conn): Promise<void> {
    conns.add(conn);
    try {
      let upstream: Deno.Conn;
      try {
        upstream = await Deno.connect({ hostname: "127.0.0.1", port: target });
      } catch {
        // The target is gone: the client sees its connection close.
        return;
      }
      conns.add(upstream);
      await Promise.all([pipe(conn, upstream), pipe(upstream, conn)]);
      conns.delete(upstream);
    } finally {
      closeQuietly(conn);
      conns.delete(conn);
    }
  }
  const relay = {
    port: listener.addr.port,
    mode: "forward" as TcpRelay["mode"],
    get refused() {
      return refused;
    },
    get stalled() {
      return stalled;
    },
    cut() {
      for (const conn of conns) closeQuietly(conn);
    },
    kill() {
      closeQuietly(listener);
      relay.cut();
    },
    async [Symbol.asyncDispose]() {
      closeQuietly(listener);
      await accepting;
      relay.cut();
      await Promise.all(tasks);
    },
  };
  const accepting = acceptEach(listener, (conn) => {
    if (relay.mode === "refuse") {
      refused++;
      closeQuietly(conn);
    } else if (relay.mode === "stall") {
      stalled++;
      track(hold(conn));
    } else {
      track(forward(conn));
    }
  });
  return relay;
}

/**
 * A TLS connection that speaks frames, for tests that send what the client never would: a raw
 * client from {@linkcode RawClient.connect}, or the server's side of a {@linkcode fakeTlsServer}.
 */
export class RawClient implements AsyncDisposable {
  readonly conn: Deno.TlsConn;
  #reader: FrameReader;
  #writer: FrameWriter;
  #queue: Uint8Array[] = [];

  constructor(conn: Deno.TlsConn) {
    this.conn = conn;
    this.#reader = new FrameReader(conn);
    this.#writer = new FrameWriter(conn);
  }

  /** Connects to `port` on 127.0.0.1 with the test CA and completes the handshake. */
  static async connect(port: number, hostname = "127.0.0.1"): Promise<RawClient> {
    const conn = await Deno.connectTls({ hostname, port, caCerts: [certs.ca] });
    await conn.handshake();
    return new RawClient(conn);
  }

  /** Sends one frame: a string as UTF-8, bytes as they are, anything else as JSON. */
  async send(message: unknown): Promise<void> {
    if (message instanceof Uint8Array) this.#writer.writeFrame(message);
    else this.#writer.writeText(typeof message === "string" ? message : JSON.stringify(message));
    await this.#writer.flushed();
  }

  /** Writes raw bytes, framing and all. */
  sendBytes(bytes: Uint8Array): Promise<void> {
    return writeAll(this.conn, bytes);
  }

  /** The next frame's payload, a copy of its own, or null when the peer closed the connection. */
  async receiveFrame(): Promise<Uint8Array | null> {
    while (this.#queue.length === 0) {
      const frames = await this.#reader.read();
      if (frames === null) return null;
      this.#queue.push(...frames.map((frame) => frame.slice()));
    }
    return this.#queue.shift()!;
  }

  /** The next frame's text, or null when the peer closed the connection. */
  async receiveText(): Promise<string | null> {
    const frame = await this.receiveFrame();
    return frame === null ? null : decoder.decode(frame);
  }

  /** The next frame parsed as JSON, or null when the peer closed the connection. */
  async receive(): Promise<unknown> {
    const text = await this.receiveText();
    return text === null ? null : JSON.parse(text);
  }

  /** Sends `message` and resolves with the next frame parsed. */
  async exchange(message: unknown): Promise<unknown> {
    await this.send(message);
    return await this.receive();
  }

  /** Resolves when the server has closed the connection, ignoring frames it sends before. */
  async closedByServer(): Promise<void> {
    try {
      while (await this.receiveText() !== null) { /* drain */ }
    } catch {
      // A reset counts as closed.
    }
  }

  /** Closes the connection, if it is not closed already. */
  close(): void {
    closeQuietly(this.conn);
  }

  [Symbol.asyncDispose](): Promise<void> {
    this.close();
    return Promise.resolve();
  }
}

/** A plain TCP connection to a TLS port, for clients that never finish a handshake. */
export class TcpClient implements AsyncDisposable {
  readonly conn: Deno.TcpConn;
  /**
   * Resolves once the server has closed or reset the connection (or this side closed it); rejects
   * if the server keeps sending instead.
   */
  readonly closed: Promise<void>;
  #closing = false;
  #closedByServer = false;

  /** Connects to `port` on 127.0.0.1. */
  static async connect(port: number): Promise<TcpClient> {
    return new TcpClient(await Deno.connect({ hostname: "127.0.0.1", port }));
  }

  constructor(conn: Deno.TcpConn) {
    this.conn = conn;
    this.closed = this.#watch();
    this.closed.catch(() => {});
  }

  /** Whether the server closed the connection, rather than this side. */
  get closedByServer(): boolean {
    return this.#closedByServer;
  }

  /** Writes all of `bytes`; false when the connection has failed. */
  async write(bytes: Uint8Array): Promise<boolean> {
    try {
      await writeAll(this.conn, bytes);
      return true;
    } catch {
      return false;
    }
  }

  /** Closes the connection from this side; `closed` resolves soon after. */
  close(): void {
    this.#closing = true;
    closeQuietly(this.conn);
  }

  async #watch(): Promise<void> {
    const buffer = new Uint8Array(16 * 1024);
    // A handshake's worth of records or an alert may come before the close: 256 reads is plenty.
    for (let i = 0; i < 256; i++) {
      try {
        if (await this.conn.read(buffer) === null) break;
      } catch {
        break;
      }
      if (i === 255) throw new Error("The server kept sending on a connection it should close");
    }
    if (!this.#closing) this.#closedByServer = true;
  }

  async [Symbol.asyncDispose](): Promise<void> {
    this.close();
    await this.closed.catch(() => {});
  }
}

/** A hand-made TLS server from {@linkcode fakeTlsServer}. */
export interface FakeTlsServer extends AsyncDisposable {
  /** The port it listens on, on 127.0.0.1. */
  readonly port: number;
  /** Connections whose TLS handshake completed. */
  readonly connections: number;
}

/**
 * A TLS server with the test certificate that does what `handle` scripts and nothing else, for
 * tests of a client against a server that misbehaves as the real one never would. Each connection
 * is handed to `handle` once its handshake completes, and closed once `handle` settles; a failure
 * in `handle` (the client went away) is ignored. Disposing closes the listener and every
 * connection and waits for the handlers.
 */
export function fakeTlsServer(handle: (peer: RawClient) => Promise<void>): FakeTlsServer {
  const listener = Deno.listenTls({
    hostname: "127.0.0.1",
    port: 0,
    cert: certs.cert,
    key: certs.key,
  });
  const conns = new Set<Deno.TlsConn>();
  const tasks = new Set<Promise<void>>();
  let connections = 0;
  async function serveConn(conn: Deno.TlsConn): Promise<void> {
    try {
      await conn.handshake();
      connections++;
      await handle(new RawClient(conn));
    } catch {
      // The client went away; the test checks what it needs on its side.
    } finally {
      closeQuietly(conn);
      conns.delete(conn);
    }
  }
  const accepting = acceptEach(listener, (conn) => {
    conns.add(conn);
    const task = serveConn(conn);
    tasks.add(task);
    void task.then(() => tasks.delete(task));
  });
  return {
    port: listener.addr.port,
    get connections() {
      return connections;
    },
    async [Symbol.asyncDispose]() {
      closeQuietly(listener);
      await accepting;
      for (const conn of conns) closeQuietly(conn);
      await Promise.all(tasks);
    },
  };
}

// --- subprocesses --------------------------------------------------------------------------------

/** The repository's root directory: subprocesses run there, so paths may be relative to it. */
export const root: URL = new URL("../", import.meta.url);

/** Whether `command` runs here (as `command --version`). */
export function has(command: string): boolean {
  try {
    return new Deno.Command(command, { args: ["--version"], stdout: "null", stderr: "null" })
      .outputSync().success;
  } catch {
    return false;
  }
}

/** A temporary folder, removed on disposal. */
export async function tempDir(): Promise<{ path: string } & AsyncDisposable> {
  const path = await Deno.makeTempDir({ prefix: "tlsrpc-test-" });
  return {
    path,
    async [Symbol.asyncDispose]() {
      await Deno.remove(path, { recursive: true });
    },
  };
}
