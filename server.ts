/**
 * The tlsrpc server: serves the functions of an object, class instance or module as JSON-RPC 2.0
 * methods over TLS, one length-prefixed frame per message.
 *
 * Every connection completes its TLS handshake in its own task under a deadline, so a client whose
 * handshake fails or stalls costs only its own connection; the accept loop never sees its error.
 *
 * @example Serve two functions
 * ```ts
 * import { serve } from "./server.ts";
 *
 * const server = await serve({
 *   add: (a: number, b: number) => a + b,
 *   math: { neg: (x: number) => -x },
 * }, {
 *   port: 0,
 *   cert: await Deno.readTextFile(new URL("./testdata/server.pem", import.meta.url)),
 *   key: await Deno.readTextFile(new URL("./testdata/server.key", import.meta.url)),
 *   onListen: () => {},
 * });
 * console.log(`listening on port ${server.addr.port}`);
 * await server.shutdown();
 * ```
 *
 * @module
 */

import { type Call, Dispatcher, type Session } from "./_dispatch.ts";
import { extendedJsonText } from "./_rich.ts";
import { DEFAULT_MAX_DEPTH, type Encoded, errorText, requestMessage } from "./_codec.ts";
import { fixedToken } from "./_auth.ts";
import { ConnectionError, ErrorCode, ProtocolError } from "./errors.ts";
import { FrameReader, FrameWriter } from "./framing.ts";
import { formatAddr, isDisconnect, reason } from "./_util.ts";
import { type Connection, listen, type Listener } from "./_transport.ts";
export type { CertificateIdentity } from "./_transport.ts";
import { DEFAULT_MAX_FRAME_BYTES } from "./framing.ts";

/**
 * The limits a server enforces unless told otherwise, each with the reason for its value. Every one
 * of them bounds what a single client can cost the server.
 */
export const DEFAULT_LIMITS = {
  /**
   * Milliseconds a client has to complete the TLS handshake: a handshake takes a few round trips,
   * and 10 s covers a slow network while a client that connects and says nothing holds its socket
   * only that long.
   */
  handshakeTimeout: 10_000,
  /**
   * Milliseconds a connection may stay without a frame while no call is in flight: 5 min keeps
   * pooled clients connected between bursts and still reclaims abandoned sockets. 0 disables.
   */
  idleTimeout: 300_000,
  /**
   * Milliseconds a frame may take from its first byte to its last: 30 s is ample for 16 MiB on a
   * slow link and stops a client that sends one byte a second (slowloris). 0 disables.
   */
  frameTimeout: 30_000,
  /**
   * Open connections, handshaking ones included: 10 000 stays well under common open-file limits
   * (and about 200 MiB of buffers) while serving any realistic number of service clients.
   */
  maxConnections: 10_000,
  /**
   * Calls in flight per connection before the server stops reading from it: 1 024 keeps a pipelining
   * client fast while bounding the memory one connection can pin. Backpressure, not errors.
   */
  maxInFlight: 1_024,
  /**
   * Bytes of replies queued for a client that does not read them before it is closed: 64 MiB is
   * four maximal frames, room for a burst, not for a client that never reads.
   */
  maxQueuedBytes: 64 * 1024 * 1024,
  /**
   * Milliseconds a write may make no progress before the connection is closed: 30 s outlasts a
   * congested link, not a peer that stopped reading.
   */
  writeTimeout: 30_000,
  /** Nesting of arrays and objects in a message, checked without recursion: 128. */
  maxDepth: DEFAULT_MAX_DEPTH,
  /** The largest frame accepted or sent: see {@linkcode DEFAULT_MAX_FRAME_BYTES}. */
  maxFrameBytes: DEFAULT_MAX_FRAME_BYTES,
  /** Milliseconds `shutdown()` lets calls in flight finish before it closes their connections. */
  shutdownTimeout: 10_000,
} as const;

/** The names of the limits in {@linkcode DEFAULT_LIMITS}. */
export type Limits = { -readonly [K in keyof typeof DEFAULT_LIMITS]: number };

/** The port a server listens on unless told otherwise: 443 is HTTPS's, 7443 its common alternate. */
export const DEFAULT_PORT = 7443;

/** At most this many connection errors are logged a second; the rest are counted in a summary. */
const LOG_LINES_PER_SECOND = 5;

/** An exposed method, as introspection found it. */
export interface MethodInfo {
  /** The name callers use, dotted for namespaces (`"math.add"`). */
  readonly name: string;
  /** The parameter names, read from the function's source; destructured ones are `argN`. */
  readonly params: readonly string[];
  /** Whether the last parameter is a rest parameter, so that any number of params fits. */
  readonly rest: boolean;
}

/** Options for {@linkcode serve}; each limit defaults to its value in {@linkcode DEFAULT_LIMITS}. */
export interface ServeOptions extends Partial<Limits> {
  /**
   * The address to listen on. The default accepts only local connections; use `"0.0.0.0"` or
   * `"::"` to accept remote ones.
   *
   * @default {"127.0.0.1"}
   */
  hostname?: string;
  /**
   * The port to listen on; 0 picks a free one (read it from {@linkcode RpcServer.addr}).
   *
   * @default {7443}
   */
  port?: number;
  /** The server's certificate chain, PEM. */
  cert: string;
  /** The server's private key, PEM. */
  key: string;
  /**
   * The TLS implementation. `"node"` (Deno's `node:tls`) closes the socket of a client whose
   * handshake fails or stalls at once. `"deno"` (`Deno.listenTls`) is a few percent faster, but
   * on Deno 2.9 a connection closed before its handshake completed keeps its socket until the peer
   * leaves, so a client that connects and says nothing holds a file descriptor as long as it likes.
   *
   * @default {"node"}
   */
  transport?: "node" | "deno";
  /**
   * A fixed token every client must present (`rpc.auth`, the client's `token` option) before
   * any call. Compared in constant time; never logged. Use `authenticate` for more than one.
   */
  token?: string;
  /**
   * Decides who a presented token belongs to: returns an identity (any value but `undefined`,
   * `null` and `false`), which handlers read as `callContext().identity`, or one of those three
   * to refuse it; may be async. Every call before a token is accepted gets -32004; three refusals
   * close the connection.
   */
  authenticate?: (token: string, peer: { hostname: string; port: number }) => unknown;
  /**
   * CA certificates (PEM) that client certificates must chain to (mutual TLS): a client without
   * such a certificate fails the handshake. The certificate's subject and names become the call
   * context's identity. Needs the `"node"` transport (denoland/deno#26825).
   */
  clientCa?: string;
  /**
   * Put handlers' error stacks in error responses. Stacks tell a caller about the server's code,
   * so keep this off unless every client is trusted.
   *
   * @default {false}
   */
  exposeStack?: boolean;
  /**
   * The `info` of the `rpc.discover` document.
   *
   * @default {{ title: "tlsrpc", version: "0.0.0" }}
   */
  info?: { title: string; version: string };
  /** Aborting it shuts the server down, as `shutdown()` does. */
  signal?: AbortSignal;
  /**
   * Called once the server listens. The default prints `listening on HOSTNAME:PORT` to stderr.
   */
  onListen?: (addr: Deno.NetAddr) => void;
  /**
   * Called with each error that cost a connection, or that the accept loop recovered from, and a
   * one-line description of it; at most 5 a second, then one summary line with the count. The
   * default prints the line to stderr.
   */
  onError?: (error: unknown, line: string) => void;
}

/** A running server, from {@linkcode serve}. */
export interface RpcServer extends AsyncDisposable {
  /** The address the server listens on, with the real port when `port` was 0. */
  readonly addr: Deno.NetAddr;
  /** The exposed methods, by name. */
  readonly methods: ReadonlyMap<string, MethodInfo>;
  /** Resolves when the server has stopped and every connection is closed. */
  readonly finished: Promise<void>;
  /**
   * Stops accepting connections, answers new calls with a "shutting down" error, waits for calls
   * in flight (up to `shutdownTimeout`), then closes every connection.
   *
   * @returns A promise that resolves with `finished`.
   */
  shutdown(): Promise<void>;
}

/**
 * Serves `handlers` over TLS. Functions become methods; nested plain objects become dotted
 * namespaces (`math.add`); a class instance also exposes its prototype's methods. Names starting
 * with `_`, `constructor` and anything of `Object.prototype` are never exposed.
 *
 * @example Serve a class instance
 * ```ts
 * import { serve } from "./server.ts";
 *
 * class Greeter {
 *   greet(name: string): string {
 *     return `hello, ${name}`;
 *   }
 * }
 * await using server = await serve(new Greeter(), {
 *   port: 0,
 *   cert: await Deno.readTextFile(new URL("./testdata/server.pem", import.meta.url)),
 *   key: await Deno.readTextFile(new URL("./testdata/server.key", import.meta.url)),
 *   onListen: () => {},
 * });
 * console.log([...server.methods.keys()]); // ["greet"]
 * ```
 *
 * @param handlers The object, class instance or module namespace whose functions to serve.
 * @param options The address, certificate and limits.
 * @returns The running server.
 * @throws {TypeError} When `handlers` is not an object or exposes a reserved `rpc.` name.
 */
export async function serve(handlers: object, options: ServeOptions): Promise<RpcServer> {
  const server = new Server(handlers, options);
  await server.listen();
  return server;
}

class Server implements RpcServer {
  #addr: Deno.NetAddr | undefined;
  #dispatcher: Dispatcher;
  #listener: Listener | undefined;
  #options: ServeOptions;
  #limits: Limits;
  #log: RateLimitedLog;
  #connections = new Set<ServerConnection>();
  #closing = false;
  #shutdown: Promise<void> | undefined;
  #sweeper: ReturnType<typeof setInterval> | undefined;
  #finished = Promise.withResolvers<void>();
  #onAbort = () => void this.shutdown();

  constructor(handlers: object, options: ServeOptions) {
    const limits = { ...DEFAULT_LIMITS } as Limits;
    for (const name of Object.keys(DEFAULT_LIMITS) as (keyof Limits)[]) {
      const value = options[name];
      if (value === undefined) continue;
      if (!Number.isInteger(value) || value < 0) {
        throw new RangeError(`Cannot serve: ${name} must be a whole number, got ${value}`);
      }
      limits[name] = value;
    }
    this.#limits = limits;
    this.#options = options;
    if (options.token !== undefined && options.authenticate !== undefined) {
      throw new TypeError("Cannot serve: give token or authenticate, not both");
    }
    const authenticate = options.authenticate ??
      (options.token === undefined ? undefined : fixedToken(options.token));
    this.#dispatcher = new Dispatcher(handlers, {
      ...(authenticate && { authenticate }),
      exposeStack: options.exposeStack ?? false,
      maxDepth: limits.maxDepth,
      maxBatch: limits.maxInFlight,
      ...(options.info && { info: options.info }),
    });
    // Checked here so that a bad value fails at startup, not at the first connection.
    new FrameReader({ read: () => Promise.resolve(null) }, { maxFrameBytes: limits.maxFrameBytes });
    const onError = options.onError ?? ((_: unknown, line: string) => console.error(line));
    this.#log = new RateLimitedLog(onError, LOG_LINES_PER_SECOND);
  }

  async listen(): Promise<void> {
    const options = this.#options;
    if (
      options.transport !== undefined && options.transport !== "node" &&
      options.transport !== "deno"
    ) {
      throw new TypeError(`Cannot serve: unknown transport "${options.transport}"`);
    }
    this.#listener = await listen(options.transport ?? "node", {
      hostname: options.hostname ?? "127.0.0.1",
      port: options.port ?? DEFAULT_PORT,
      cert: options.cert,
      key: options.key,
      handshakeTimeout: this.#limits.handshakeTimeout,
      maxConnections: this.#limits.maxConnections,
      clientCa: options.clientCa,
      onConnection: (conn) => this.#accept(conn),
      log: (error, line) => this.#log.report(error, line),
    });
    this.#addr = this.#listener.addr;
    const sweepEvery = sweepInterval(this.#limits);
    if (sweepEvery > 0) this.#sweeper = setInterval(() => this.#sweep(), sweepEvery);
    (options.onListen ?? ((addr) => console.error(`listening on ${formatAddr(addr)}`)))(this.addr);
    if (options.signal?.aborted) void this.shutdown();
    else options.signal?.addEventListener("abort", this.#onAbort, { once: true });
  }

  get addr(): Deno.NetAddr {
    return this.#addr!;
  }

  get finished(): Promise<void> {
    return this.#finished.promise;
  }

  get methods(): ReadonlyMap<string, MethodInfo> {
    return this.#dispatcher.methods;
  }

  shutdown(): Promise<void> {
    this.#shutdown ??= this.#stop();
    return this.#shutdown;
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.shutdown();
  }

  async #stop(): Promise<void> {
    this.#closing = true;
    this.#options.signal?.removeEventListener("abort", this.#onAbort);
    this.#listener?.close();
    const drained = Promise.all([...this.#connections].map((connection) => connection.drain()));
    let timer: ReturnType<typeof setTimeout> | undefined;
    const timeout = new Promise<void>((resolve) => {
      timer = setTimeout(resolve, this.#limits.shutdownTimeout);
    });
    await Promise.race([drained, timeout]);
    clearTimeout(timer);
    const running = [...this.#connections].map((connection) => connection.finished);
    for (const connection of this.#connections) connection.close();
    await Promise.all([this.#listener?.closed, ...running]);
    clearInterval(this.#sweeper);
    this.#log.flush(true);
    this.#finished.resolve();
  }

  /** Serves one connection whose handshake completed, in a task of its own. */
  #accept(conn: Connection): void {
    const peer = formatAddr(conn.remoteAddr);
    if (this.#closing) return conn.close();
    const connection = new ServerConnection(conn, peer, this.#dispatcher, this.#limits, this.#log);
    connection.authenticated = !this.#dispatcher.requiresToken;
    this.#connections.add(connection);
    connection.run(() => !this.#closing).finally(() => this.#connections.delete(connection));
  }

  #sweep(): void {
    const now = Date.now();
    for (const connection of this.#connections) connection.checkDeadlines(now);
    this.#log.flush(false);
  }
}

/** How often deadlines are checked: a quarter of the shortest, between 10 ms and 1 s. */
function sweepInterval(limits: Limits): number {
  const enabled = [limits.idleTimeout, limits.frameTimeout, limits.writeTimeout].filter((t) =>
    t > 0
  );
  if (enabled.length === 0) return 0;
  return Math.min(Math.max(Math.min(...enabled) / 4, 10), 1000);
}

/** One accepted connection after its handshake: reads frames, dispatches, writes replies. */
class ServerConnection implements Session {
  readonly peer: { readonly hostname: string; readonly port: number };
  identity: unknown;
  authenticated = true;
  authFailures = 0;
  readonly calls: Map<string, Call> = new Map();
  rich = false;
  #accepting: () => boolean = () => true;
  #conn: Connection;
  #peer: string;
  #dispatcher: Dispatcher;
  #limits: Limits;
  #log: RateLimitedLog;
  #reader: FrameReader;
  #writer: FrameWriter;
  #inFlight = 0;
  #waiters: (() => void)[] = [];
  #lastActive = Date.now();
  #closed = false;
  #closeAfterReply = false;
  #finished: Promise<void> | undefined;

  constructor(
    conn: Connection,
    peer: string,
    dispatcher: Dispatcher,
    limits: Limits,
    log: RateLimitedLog,
  ) {
    this.#conn = conn;
    this.#peer = peer;
    this.peer = conn.remoteAddr;
    this.identity = conn.peerCertificate;
    this.#dispatcher = dispatcher;
    this.#limits = limits;
    this.#log = log;
    this.#reader = new FrameReader(conn, { maxFrameBytes: limits.maxFrameBytes });
    this.#writer = new FrameWriter(conn, {
      maxFrameBytes: limits.maxFrameBytes,
      onError: (error) => {
        if (!isDisconnect(error)) {
          this.#log.report(error, `write to ${this.#peer} failed: ${reason(error)}`);
        }
        this.close();
      },
    });
  }

  /** Resolves once `run` has ended. */
  get finished(): Promise<void> {
    return this.#finished ?? Promise.resolve();
  }

  /** Serves frames until the peer leaves or the connection breaks; never rejects. */
  run(accepting: () => boolean): Promise<void> {
    this.#accepting = accepting;
    this.#finished = this.#run();
    return this.#finished;
  }

  /** False while the server shuts down. */
  get accepting(): boolean {
    return this.#accepting();
  }

  notify(method: string, params: unknown[]): void {
    if (this.#closed) return;
    let message;
    try {
      message = requestMessage(
        undefined,
        method,
        params,
        undefined,
        this.rich,
        this.#limits.maxDepth,
      );
    } catch (error) {
      throw new TypeError(`Cannot notify "${method}": ${reason(error)}`, { cause: error });
    }
    this.#send(message);
  }

  async #run(): Promise<void> {
    try {
      for (let frames = await this.#reader.read(); frames; frames = await this.#reader.read()) {
        this.#lastActive = Date.now();
        for (const frame of frames) {
          // Backpressure: at the limit, dispatch and read no more until calls finish; the peer's
          // sends queue up in TCP. The frames stay valid: the read buffer is not touched before
          // the next read.
          while (this.#inFlight >= this.#limits.maxInFlight && !this.#closed) await this.#wait();
          if (this.#closed) return;
          this.#dispatch(frame);
        }
      }
      // The end of the stream is a disconnect, as in Go's net/http: the calls in flight are
      // aborted and their results dropped. What is already queued still goes out.
      this.#abortCalls(`client ${this.#peer} closed the connection`);
      await this.#writer.flushed();
    } catch (error) {
      if (this.#closed) return;
      if (error instanceof ProtocolError) {
        this.#log.report(error, `protocol error from ${this.#peer}: ${error.message}`);
        this.#send(
          errorText("null", ErrorCode.InvalidRequest, `Invalid Request: ${error.message}`),
        );
        await this.#writer.flushed();
      } else if (!isDisconnect(error)) {
        this.#log.report(error, `read from ${this.#peer} failed: ${reason(error)}`);
      }
    } finally {
      this.close();
    }
  }

  /** Resolves when no call is in flight and every reply is written, or the connection closed. */
  async drain(): Promise<void> {
    while (this.#inFlight > 0 && !this.#closed) await this.#wait();
    await this.#writer.flushed();
  }

  /** Closes the connection when a deadline has passed. */
  checkDeadlines(now: number): void {
    const { frameTimeout, idleTimeout, writeTimeout } = this.#limits;
    const frameStarted = this.#reader.frameStartedAt;
    const writeStarted = this.#writer.writeStartedAt;
    if (frameTimeout > 0 && frameStarted !== undefined && now - frameStarted > frameTimeout) {
      this.#abandon(`a frame took more than ${frameTimeout} ms to arrive`);
    } else if (
      writeTimeout > 0 && writeStarted !== undefined && now - writeStarted > writeTimeout
    ) {
      this.#abandon(`it read none of our replies for ${writeTimeout} ms`);
    } else if (
      idleTimeout > 0 && this.#inFlight === 0 && frameStarted === undefined &&
      writeStarted === undefined && now - this.#lastActive > idleTimeout
    ) {
      this.#abandon(`idle for ${idleTimeout} ms`);
    }
  }

  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#conn.close();
    this.#wake();
    this.#abortCalls(`client ${this.#peer} disconnected`);
  }

  closeSoon(why: string): void {
    this.#log.report(undefined, `closing ${this.#peer}: ${why}`);
    this.#closeAfterReply = true;
  }

  /** After a reply is queued (or dropped): closes once it is written, when closeSoon() asked. */
  #closeIfAsked(): void {
    if (this.#closeAfterReply) void this.#writer.flushed().then(() => this.close());
  }

  #abortCalls(why: string): void {
    if (this.calls.size === 0) return;
    const gone = new ConnectionError(`Cannot finish call: ${why}`);
    for (const call of this.calls.values()) call.abort(gone);
  }

  #abandon(why: string): void {
    if (this.#closed) return;
    this.#log.report(undefined, `closed ${this.#peer}: ${why}`);
    this.close();
  }

  #wait(): Promise<void> {
    return new Promise((resolve) => this.#waiters.push(resolve));
  }

  #wake(): void {
    const waiters = this.#waiters;
    this.#waiters = [];
    for (const resolve of waiters) resolve();
  }

  #dispatch(frame: Uint8Array): void {
    let reply;
    try {
      reply = this.#dispatcher.handleFrame(frame, this);
    } catch (error) {
      this.#log.report(error, `cannot answer ${this.#peer}: ${reason(error)}`);
      return;
    }
    if (!(reply instanceof Promise)) {
      if (reply !== undefined) this.#send(reply);
      this.#closeIfAsked();
    } else {
      this.#inFlight++;
      reply.then(
        (text) => this.#finish(text),
        (error) => {
          this.#log.report(error, `cannot answer ${this.#peer}: ${reason(error)}`);
          this.#finish(undefined);
        },
      );
    }
  }

  #finish(text: Encoded | undefined): void {
    this.#inFlight--;
    this.#lastActive = Date.now();
    if (text !== undefined && !this.#closed) this.#send(text);
    this.#closeIfAsked();
    if (this.#waiters.length > 0) this.#wake();
  }

  #send(message: Encoded): void {
    try {
      if (typeof message === "string") this.#writer.writeText(message);
      else this.#writer.writeParts(message);
    } catch (error) {
      // The reply is over the frame limit: the caller still gets an answer if one fits.
      const id = replyId(typeof message === "string" ? message : extendedJsonText(message[0]!));
      try {
        this.#writer.writeText(
          errorText(id, ErrorCode.InternalError, `Cannot send reply: ${reason(error)}`),
        );
      } catch {
        this.#abandon(`not even an error reply fits in ${this.#limits.maxFrameBytes} bytes`);
        return;
      }
    }
    if (this.#writer.queuedBytes > this.#limits.maxQueuedBytes) {
      this.#abandon(
        `it left more than ${this.#limits.maxQueuedBytes} bytes of replies unread`,
      );
    }
  }
}

/** The id of a reply this server wrote, as JSON text: it always comes second. */
function replyId(text: string): string {
  return /^\{"jsonrpc":"2.0","id":((?:"(?:[^"\\]|\\.)*"|[^,]*)),/.exec(text)?.[1] ?? "null";
}

/**
 * Passes on at most `perSecond` lines a second and counts the rest, so that an attack cannot turn
 * the log into a second attack; `flush` writes the count as one summary line.
 */
class RateLimitedLog {
  #emit: (error: unknown, line: string) => void;
  #perSecond: number;
  #windowStart = 0;
  #lines = 0;
  #suppressed = 0;

  constructor(emit: (error: unknown, line: string) => void, perSecond: number) {
    this.#emit = emit;
    this.#perSecond = perSecond;
  }

  report(error: unknown, line: string): void {
    const now = Date.now();
    if (now - this.#windowStart >= 1000) this.#roll(now);
    if (this.#lines < this.#perSecond) {
      this.#lines++;
      this.#write(error, line);
    } else {
      this.#suppressed++;
    }
  }

  /** Writes the summary of suppressed lines once their second is over, or now when `force`. */
  flush(force: boolean): void {
    const now = Date.now();
    if (force || now - this.#windowStart >= 1000) this.#roll(now);
  }

  #roll(now: number): void {
    if (this.#suppressed > 0) {
      const seconds = Math.max(1, Math.round((now - this.#windowStart) / 1000));
      this.#write(
        undefined,
        `${this.#suppressed} more connection errors in the last ${seconds} s ` +
          `(at most ${this.#perSecond} are logged a second)`,
      );
    }
    this.#windowStart = now;
    this.#lines = 0;
    this.#suppressed = 0;
  }

  #write(error: unknown, line: string): void {
    try {
      this.#emit(error, line);
    } catch {
      // A failing log hook must not take a connection task down with it.
    }
  }
}
