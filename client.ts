/**
 * The tlsrpc client: calls the methods of a tlsrpc server over one TLS connection, many calls at
 * a time, and, when asked, reconnects after the server goes away. It imports only files of this
 * project and needs no permission beyond `--allow-net`, so it can be imported straight from a URL.
 *
 * @example Call a server
 * ```ts
 * import { connect } from "./client.ts";
 * import { serve } from "./server.ts";
 *
 * const read = (name: string) => Deno.readTextFile(new URL(`./testdata/${name}`, import.meta.url));
 * await using server = await serve({ add: (a: number, b: number) => a + b, math: { neg: (x: number) => -x } }, {
 *   port: 0,
 *   cert: await read("server.pem"),
 *   key: await read("server.key"),
 *   onListen: () => {},
 * });
 * await using client = await connect({ port: server.addr.port, caCerts: [await read("ca.pem")] });
 * console.log(await client.call("add", 2, 3)); // 5
 * console.log(await client.proxy.math.neg(5)); // -5
 * ```
 *
 * @module
 */

import {
  decodeFrame,
  DEFAULT_MAX_DEPTH,
  type Encoded,
  errorText,
  isId,
  NotPlainError,
  requestMessage,
} from "./_codec.ts";
import { closeQuietly, formatAddr, isDisconnect, reason } from "./_util.ts";
import { ConnectionError, ErrorCode, ProtocolError, RpcError, TimeoutError } from "./errors.ts";
import { FrameReader, FrameWriter } from "./framing.ts";
import { wrap } from "./attr_wrapper.ts";

export {
  CancelledError,
  ConnectionError,
  ProtocolError,
  RpcError,
  TimeoutError,
} from "./errors.ts";

/** The defaults of {@linkcode connect}, each with the reason for its value. */
export const DEFAULT_CLIENT_OPTIONS = {
  /** Where a development server listens. */
  hostname: "localhost",
  /** The port a tlsrpc server listens on unless told otherwise. */
  port: 7443,
  /** TCP connect plus TLS handshake: 10 s covers a slow network and still fails in human time. */
  connectTimeout: 10_000,
  /** The first wait before reconnecting: long enough not to hammer a restarting server. */
  reconnectInitialDelay: 100,
  /** The longest wait between reconnection attempts: a recovered server is found within 10 s. */
  reconnectMaxDelay: 10_000,
  /** Attempts before giving up: with the delays above, about a minute of trying. */
  reconnectMaxAttempts: 10,
  /**
   * Quiet time after which a keepalive ping goes out: 30 s finds a dead peer well before TCP
   * does (minutes to hours), for one small frame a minute.
   */
  keepaliveInterval: 30_000,
  /** How long a ping may go unanswered before the connection counts as dead. */
  keepaliveTimeout: 10_000,
} as const;

/** Options for reconnecting, in {@linkcode ConnectOptions.reconnect}. */
export interface ReconnectOptions {
  /**
   * Milliseconds before the first attempt; each later wait doubles, with ±50 % jitter.
   *
   * @default {100}
   */
  initialDelay?: number;
  /**
   * The longest wait between attempts, in milliseconds.
   *
   * @default {10000}
   */
  maxDelay?: number;
  /**
   * Attempts before the client gives up and closes.
   *
   * @default {10}
   */
  maxAttempts?: number;
}

/** Options for keepalive pings, in {@linkcode ConnectOptions.keepalive}. */
export interface KeepaliveOptions {
  /**
   * Milliseconds without a frame from the server after which the client pings it.
   *
   * @default {30000}
   */
  interval?: number;
  /**
   * Milliseconds the ping may go unanswered before the connection counts as dead.
   *
   * @default {10000}
   */
  timeout?: number;
}

/** Options for {@linkcode connect}. */
export interface ConnectOptions {
  /**
   * The server's host name; the server's certificate must name it.
   *
   * @default {"localhost"}
   */
  hostname?: string;
  /**
   * The server's port.
   *
   * @default {7443}
   */
  port?: number;
  /**
   * The CA certificates, PEM, to verify the server's certificate with, besides the system's
   * root store.
   */
  caCerts?: string[];
  /** A client certificate chain, PEM, for servers that require mutual TLS; with `key`. */
  cert?: string;
  /** The private key of `cert`, PEM. */
  key?: string;
  /**
   * A token to present once per connection (`rpc.auth`) before any call, for servers that want
   * one. Never logged, never part of an error message.
   */
  token?: string;
  /**
   * Milliseconds each call may take before it rejects with a {@linkcode TimeoutError}; 0 waits
   * for ever. Calls may set their own with {@linkcode RpcClient.withOptions}.
   *
   * @default {0}
   */
  timeout?: number;
  /**
   * Milliseconds the TCP connection, TLS handshake and authentication may take.
   *
   * @default {10000}
   */
  connectTimeout?: number;
  /**
   * The largest frame sent or accepted, in bytes.
   *
   * @default {16777216}
   */
  maxFrameBytes?: number;
  /** Aborting it cancels the connection attempt, or closes the client once connected. */
  signal?: AbortSignal;
  /**
   * Resolve calls with read-only {@linkcode wrap | AttrWrapper} views of their results, so that
   * untyped results read as `result.items[-1].name`; `AttrWrapper.unwrap` gives the data back.
   *
   * @default {false}
   */
  wrap?: boolean;
  /**
   * Offer the server rich values (`rpc.hello` on connecting): `Uint8Array` and other binary data
   * sent raw, `Date`, `BigInt`, `Map`, `Set`, `undefined`, `NaN`, `±Infinity` and `-0`, exactly. A
   * server without the extension answers "method not found", and the client then sends plain
   * JSON only. `false` speaks plain JSON-RPC 2.0 only.
   *
   * @default {true}
   */
  richValues?: boolean;
  /**
   * Reconnect when the connection drops, with exponential backoff and jitter: `true` for the
   * defaults. Calls made while reconnecting wait (within their own timeout) and then go out.
   * Calls in flight when it dropped reject with {@linkcode ConnectionError}, as their outcome is
   * unknown; only calls marked `idempotent` are sent again, once. Without it, a dropped connection
   * closes the client.
   *
   * @default {false}
   */
  reconnect?: boolean | ReconnectOptions;
  /**
   * Ping the server after a quiet interval, and count the connection dead when the ping goes
   * unanswered (then `reconnect` applies): `true` for the defaults.
   *
   * @default {false}
   */
  keepalive?: boolean | KeepaliveOptions;
  /** Called when the connection drops, with the reason; `onReconnect` follows if it comes back. */
  onDisconnect?: (error: ConnectionError) => void;
  /** Called when the client has reconnected, before the calls that waited go out. */
  onReconnect?: () => void;
}

/** Options for one call, or for every call made through {@linkcode RpcClient.withOptions}. */
export interface CallOptions {
  /**
   * Milliseconds the call may take, waiting for a reconnection included; it then rejects with a
   * {@linkcode TimeoutError}. The deadline travels with the request, so the handler's signal
   * aborts too and its late result is dropped. 0 waits for ever.
   *
   * @default {the client's `timeout`}
   */
  timeout?: number;
  /**
   * Aborting it rejects the call at once with the signal's reason and tells the server, whose
   * handler's signal then aborts.
   */
  signal?: AbortSignal;
  /**
   * The call may safely run twice: if the connection drops while it is in flight and the client
   * reconnects, it is sent once more instead of rejecting.
   *
   * @default {false}
   */
  idempotent?: boolean;
}

/**
 * The calling half of a client: what {@linkcode RpcClient} offers, and what
 * {@linkcode RpcClient.withOptions} returns with per-call options bound.
 *
 * @typeParam T The type of the server's handlers, or `unknown`.
 */
export interface RpcCaller<T = unknown> {
  /** Calls `method` with by-position params. */
  call(method: string, ...params: unknown[]): Promise<unknown>;
  /** Calls `method` with by-name params, passed to the handler as one object. */
  callNamed(method: string, params: Record<string, unknown>): Promise<unknown>;
  /** The remote methods as functions. */
  readonly proxy: RemoteProxy<T>;
}

/**
 * The remote view of a handler type `T`, as the server exposes it: each method returns a promise
 * of its awaited result, nested plain objects are namespaces, and names the server never exposes
 * (starting with `_`, `constructor`) are absent.
 *
 * @typeParam T The type of the server's handlers: `typeof handlers`, or an interface.
 */
export type Remote<T> = {
  readonly [K in keyof T as ExposedKey<K, T[K]>]: T[K] extends (...args: infer A) => infer R
    ? (...params: A) => Promise<Awaited<R>>
    : Remote<T[K]>;
};

/**
 * `K` when the server would expose a member named `K` holding `V` (a function, or a namespace
 * object), else `never`: the key filter of {@linkcode Remote}.
 *
 * @typeParam K The member's name.
 * @typeParam V The member's type.
 */
export type ExposedKey<K, V> = K extends `_${string}` | "constructor" ? never
  : K extends string ? V extends (...args: never[]) => unknown ? K
    : V extends readonly unknown[] ? never
    : V extends object ? K
    : never
  : never;

/**
 * The type of {@linkcode RpcClient.proxy}: {@linkcode Remote} of the handler type, or, for a
 * client made without one, a proxy on which any property path can be called (typed `any`, as
 * nothing is known of the server's methods).
 *
 * @typeParam T The type of the server's handlers, or `unknown` when not given.
 */
// deno-lint-ignore no-explicit-any
export type RemoteProxy<T> = unknown extends T ? any : Remote<T>;

/** A call, from the moment it is made until it settles. */
interface Pending {
  readonly id: number;
  readonly method: string;
  readonly params: unknown[] | Record<string, unknown>;
  readonly idempotent: boolean;
  /** When the caller stops waiting (`Date.now()`), or `undefined`. */
  readonly deadline: number | undefined;
  resolve(value: unknown): void;
  reject(error: unknown): void;
  timer: ReturnType<typeof setTimeout> | undefined;
  signal: AbortSignal | undefined;
  onAbort: (() => void) | undefined;
  /** The connection it went out on, or `undefined` while it waits for one. */
  link: Link | undefined;
  /** Sent once more after a reconnection already. */
  retried: boolean;
  /** Resolved, rejected, timed out or aborted. */
  settled: boolean;
}

/**
 * Connects to a tlsrpc server and completes the TLS handshake (and, with a `token`, the
 * authentication) before it resolves.
 *
 * @example Connect with the test CA
 * ```ts
 * import { connect } from "./client.ts";
 * import { serve } from "./server.ts";
 *
 * const read = (name: string) => Deno.readTextFile(new URL(`./testdata/${name}`, import.meta.url));
 * await using server = await serve({ add: (a: number, b: number) => a + b }, {
 *   port: 0,
 *   cert: await read("server.pem"),
 *   key: await read("server.key"),
 *   onListen: () => {},
 * });
 * await using client = await connect({ port: server.addr.port, caCerts: [await read("ca.pem")] });
 * console.log(await client.proxy.add(1, 2)); // 3
 * ```
 *
 * @typeParam T The type of the server's handlers (`typeof handlers`, from an `import type`), for
 * a typed {@linkcode RpcClient.proxy}.
 * @param options Where to connect, how to verify the server and how to behave.
 * @returns The connected client.
 * @throws {ConnectionError} When the server cannot be reached, the TLS handshake fails or the
 * server refuses the token.
 * @throws {TimeoutError} When connecting takes longer than `connectTimeout`.
 */
export async function connect<T = unknown>(options: ConnectOptions = {}): Promise<RpcClient<T>> {
  options.signal?.throwIfAborted();
  const client = new RpcClient<T>(options);
  await client[OPEN]();
  return client;
}

/** The method of RpcClient that only `connect()` calls. */
const OPEN = Symbol("open");

/** One TLS connection of a client: its reader, its writer, and what the server said in hello. */
class Link {
  readonly conn: Deno.TlsConn;
  readonly writer: FrameWriter;
  rich = false;
  lastHeard = Date.now();
  lost = false;
  /** The server's error for a message it could not read (id null), just before it closes. */
  serverError: RpcError | undefined;
  keepalive: ReturnType<typeof setInterval> | undefined;
  pinging = false;

  constructor(
    conn: Deno.TlsConn,
    maxFrameBytes: number | undefined,
    onWriteError: (error: unknown) => void,
  ) {
    this.conn = conn;
    this.writer = new FrameWriter(
      conn,
      maxFrameBytes === undefined
        ? { onError: onWriteError }
        : { maxFrameBytes, onError: onWriteError },
    );
  }

  send(message: Encoded): void {
    if (typeof message === "string") this.writer.writeText(message);
    else this.writer.writeParts(message);
  }

  close(): void {
    this.lost = true;
    clearInterval(this.keepalive);
    closeQuietly(this.conn);
  }
}

/** Opens a TLS connection, handshake done, within `timeout` ms or until `signal` aborts. */
async function openTls(
  options: ConnectOptions,
  hostname: string,
  port: number,
  target: string,
  timeout: number,
  signal: AbortSignal | undefined,
): Promise<Deno.TlsConn> {
  signal?.throwIfAborted();
  let conn: Deno.TlsConn | undefined;
  let abandoned = false;
  let timer: ReturnType<typeof setTimeout> | undefined;
  let onAbort: (() => void) | undefined;
  const stop = new Promise<never>((_, reject) => {
    timer = setTimeout(
      () =>
        reject(
          new TimeoutError(`Cannot connect to "${target}": no connection within ${timeout} ms`),
        ),
      timeout,
    );
    onAbort = () => reject(signal?.reason);
    signal?.addEventListener("abort", onAbort, { once: true });
  });
  const keep = (opened: Deno.TlsConn) => {
    // A connection that opens after we gave up must not leak.
    if (abandoned) closeQuietly(opened);
    conn = opened;
    return opened.handshake();
  };
  try {
    const caCerts = options.caCerts && { caCerts: options.caCerts };
    const opening = options.cert !== undefined && options.key !== undefined
      // Deno.startTls takes no client certificate, so this path keeps Nagle's algorithm on.
      ? Deno.connectTls({ hostname, port, ...caCerts, cert: options.cert, key: options.key }).then(
        keep,
      )
      // TCP first, to turn Nagle's algorithm off (Deno.connectTls cannot): otherwise a small
      // write can wait for a delayed ACK, 40 ms on Linux, in the handshake and in every call.
      : Deno.connect({ hostname, port }).then((tcp) => {
        if (abandoned) {
          closeQuietly(tcp);
          throw new Error("abandoned");
        }
        tcp.setNoDelay(true);
        return Deno.startTls(tcp, { hostname, ...caCerts }).then(keep);
      });
    await Promise.race([opening, stop]);
    return conn!;
  } catch (error) {
    abandoned = true;
    if (conn) closeQuietly(conn);
    if (error instanceof TimeoutError || (signal?.aborted && error === signal.reason)) throw error;
    throw new ConnectionError(`Cannot connect to "${target}": ${reason(error)}`, { cause: error });
  } finally {
    clearTimeout(timer);
    if (onAbort) signal?.removeEventListener("abort", onAbort);
  }
}

/**
 * A client of a tlsrpc server, from {@linkcode connect}. Calls are multiplexed on one connection
 * by id; each resolves as soon as its response arrives, in any order.
 *
 * @example Many calls at once on one connection
 * ```ts
 * import { connect } from "./client.ts";
 * import { serve } from "./server.ts";
 *
 * const read = (name: string) => Deno.readTextFile(new URL(`./testdata/${name}`, import.meta.url));
 * const handlers = {
 *   slow: (ms: number) => new Promise<string>((done) => setTimeout(done, ms, `slept ${ms}`)),
 *   fast: () => "fast",
 * };
 * await using server = await serve(handlers, {
 *   port: 0,
 *   cert: await read("server.pem"),
 *   key: await read("server.key"),
 *   onListen: () => {},
 * });
 * await using client = await connect<typeof handlers>({
 *   port: server.addr.port,
 *   caCerts: [await read("ca.pem")],
 * });
 * const order: string[] = [];
 * await Promise.all([
 *   client.proxy.slow(50).then((text) => order.push(text)),
 *   client.proxy.fast().then((text) => order.push(text)),
 * ]);
 * console.log(order); // ["fast", "slept 50"]: each answer comes as soon as it is ready
 * ```
 *
 * @typeParam T The type of the server's handlers, for a typed {@linkcode RpcClient.proxy}.
 */
export class RpcClient<T = unknown> implements AsyncDisposable, RpcCaller<T> {
  #options: ConnectOptions;
  #hostname: string;
  #port: number;
  #target: string;
  #timeout: number;
  #connectTimeout: number;
  #wrap: boolean;
  #reconnect: Required<ReconnectOptions> | undefined;
  #keepalive: Required<KeepaliveOptions> | undefined;
  #link: Link | undefined;
  #linkDone: Promise<void> = Promise.resolve();
  #state: "connecting" | "open" | "reconnecting" | "closed" = "connecting";
  #pending = new Map<number, Pending>();
  #waiting = new Set<Pending>();
  #internal = new Map<
    number,
    { link: Link; resolve(value: unknown): void; reject(error: unknown): void }
  >();
  #nextId = 1;
  #nextInternalId = 0;
  #closed = Promise.withResolvers<void>();
  #wakeReconnect: (() => void) | undefined;
  /** Aborts a reconnection attempt under way when the client closes. */
  #stopReconnect = new AbortController();
  #onAbort = () => void this.close();
  #proxies = new Map<string, object>();
  #listeners = new Map<string, Set<(...params: unknown[]) => void>>();

  /**
   * Makes a client that is not connected yet; use {@linkcode connect}, which also connects it.
   *
   * @param options Where to connect, how to verify the server and how to behave.
   */
  constructor(options: ConnectOptions = {}) {
    this.#options = options;
    this.#hostname = options.hostname ?? DEFAULT_CLIENT_OPTIONS.hostname;
    this.#port = options.port ?? DEFAULT_CLIENT_OPTIONS.port;
    this.#target = formatAddr({ hostname: this.#hostname, port: this.#port });
    this.#timeout = options.timeout ?? 0;
    this.#connectTimeout = options.connectTimeout ?? DEFAULT_CLIENT_OPTIONS.connectTimeout;
    this.#wrap = options.wrap ?? false;
    const reconnect = options.reconnect === true ? {} : options.reconnect || undefined;
    this.#reconnect = reconnect && {
      initialDelay: reconnect.initialDelay ?? DEFAULT_CLIENT_OPTIONS.reconnectInitialDelay,
      maxDelay: reconnect.maxDelay ?? DEFAULT_CLIENT_OPTIONS.reconnectMaxDelay,
      maxAttempts: reconnect.maxAttempts ?? DEFAULT_CLIENT_OPTIONS.reconnectMaxAttempts,
    };
    const keepalive = options.keepalive === true ? {} : options.keepalive || undefined;
    this.#keepalive = keepalive && {
      interval: keepalive.interval ?? DEFAULT_CLIENT_OPTIONS.keepaliveInterval,
      timeout: keepalive.timeout ?? DEFAULT_CLIENT_OPTIONS.keepaliveTimeout,
    };
  }

  /** Connects the first time; called once, by `connect()`. */
  async [OPEN](): Promise<void> {
    try {
      this.#use(await this.#openLink(this.#options.signal));
    } catch (error) {
      this.#state = "closed";
      this.#closed.resolve();
      throw error;
    }
    this.#options.signal?.addEventListener("abort", this.#onAbort, { once: true });
  }

  /** Whether the client is closed for good; calls then reject at once. */
  get isClosed(): boolean {
    return this.#state === "closed";
  }

  /** Resolves when the client has closed for good (not when a connection drops and comes back). */
  get closed(): Promise<void> {
    return this.#closed.promise;
  }

  /**
   * Calls `method` with by-position params and resolves with its result.
   *
   * @example Call a method
   * ```ts
   * import { connect } from "./client.ts";
   * import { serve } from "./server.ts";
   *
   * const read = (name: string) => Deno.readTextFile(new URL(`./testdata/${name}`, import.meta.url));
   * await using server = await serve({ add: (a: number, b: number) => a + b }, {
   *   port: 0,
   *   cert: await read("server.pem"),
   *   key: await read("server.key"),
   *   onListen: () => {},
   * });
   * await using client = await connect({ port: server.addr.port, caCerts: [await read("ca.pem")] });
   * console.log(await client.call("add", 2, 3)); // 5
   * ```
   *
   * @param method The method's name, dotted for namespaces (`"math.add"`).
   * @param params The params.
   * @returns The result.
   * @throws {RpcError} When the server answers with an error.
   * @throws {ConnectionError} When the client is closed or the connection drops before the response.
   * @throws {TimeoutError} When no response came within the timeout.
   * @throws {TypeError} When the params cannot be sent.
   */
  call(method: string, ...params: unknown[]): Promise<unknown> {
    return this.#request(method, params, undefined);
  }

  /**
   * Calls `method` with by-name params, passed to the handler as one object.
   *
   * @example Call with named params
   * ```ts
   * import { connect } from "./client.ts";
   * import { serve } from "./server.ts";
   *
   * const read = (name: string) => Deno.readTextFile(new URL(`./testdata/${name}`, import.meta.url));
   * await using server = await serve({ users: { find: ({ name }: { name: string }) => ({ name, id: 1 }) } }, {
   *   port: 0,
   *   cert: await read("server.pem"),
   *   key: await read("server.key"),
   *   onListen: () => {},
   * });
   * await using client = await connect({ port: server.addr.port, caCerts: [await read("ca.pem")] });
   * console.log(await client.callNamed("users.find", { name: "ada" })); // { name: "ada", id: 1 }
   * ```
   *
   * @param method The method's name.
   * @param params The params object.
   * @returns The result.
   * @throws {RpcError} When the server answers with an error.
   * @throws {ConnectionError} When the client is closed or the connection drops before the response.
   * @throws {TimeoutError} When no response came within the timeout.
   */
  callNamed(method: string, params: Record<string, unknown>): Promise<unknown> {
    return this.#request(method, params, undefined);
  }

  /**
   * The client's calls with per-call options: a timeout that travels to the server as the call's
   * deadline, an `AbortSignal` that cancels the call on both sides, and `idempotent`.
   *
   * @example Cancel a call, or give it a deadline
   * ```ts
   * import { connect } from "./client.ts";
   * import { serve } from "./server.ts";
   *
   * const read = (name: string) => Deno.readTextFile(new URL(`./testdata/${name}`, import.meta.url));
   * await using server = await serve({ wait: (ms: number) => new Promise((done) => setTimeout(done, ms, ms)) }, {
   *   port: 0,
   *   cert: await read("server.pem"),
   *   key: await read("server.key"),
   *   onListen: () => {},
   * });
   * await using client = await connect({ port: server.addr.port, caCerts: [await read("ca.pem")] });
   * const controller = new AbortController();
   * const waiting = client.withOptions({ signal: controller.signal }).proxy.wait(50);
   * controller.abort(new Error("no longer needed")); // rejects now; the server is told
   * await waiting.catch((error: Error) => console.log(error.message)); // "no longer needed"
   * console.log(await client.withOptions({ timeout: 1000 }).call("wait", 10)); // 10
   * ```
   *
   * @param options The timeout, signal and idempotence of every call made through the result.
   * @returns `call`, `callNamed` and `proxy` with those options.
   */
  withOptions(options: CallOptions): RpcCaller<T> {
    const request = (method: string, params: unknown[] | Record<string, unknown>) =>
      this.#request(method, params, options);
    const proxies = new Map<string, object>();
    return {
      call: (method, ...params) => request(method, params),
      callNamed: (method, params) => request(method, params),
      get proxy() {
        return proxyFor("", proxies, request) as RemoteProxy<T>;
      },
    };
  }

  /**
   * Sends a notification: a call that gets no response, so its outcome is never known.
   *
   * @example Notify
   * ```ts
   * import { connect } from "./client.ts";
   * import { serve } from "./server.ts";
   *
   * const read = (name: string) => Deno.readTextFile(new URL(`./testdata/${name}`, import.meta.url));
   * await using server = await serve({ log: (line: string) => console.log(`server log: ${line}`), ping: () => "pong" }, {
   *   port: 0,
   *   cert: await read("server.pem"),
   *   key: await read("server.key"),
   *   onListen: () => {},
   * });
   * await using client = await connect({ port: server.addr.port, caCerts: [await read("ca.pem")] });
   * client.notify("log", "started");
   * await client.call("ping"); // frames are in order: the notification has been handled
   * ```
   *
   * @param method The method's name.
   * @param params The params.
   * @throws {ConnectionError} When the client has no open connection.
   * @throws {TypeError} When the params cannot be sent.
   * @throws {RangeError} When the message is larger than the frame limit.
   */
  notify(method: string, ...params: unknown[]): void {
    const link = this.#link;
    if (this.#state !== "open" || link === undefined) {
      throw this.#closedError(
        "send notification",
        this.#state === "closed" ? "closed" : "not open",
      );
    }
    link.send(this.#encode(link, undefined, method, params, undefined));
  }

  /**
   * Subscribes to the notifications the server sends on this connection under `method` (a
   * handler's `callContext().notify(method, ...params)`).
   *
   * @example Follow the progress of a call
   * ```ts
   * import { callContext } from "./context.ts";
   * import { connect } from "./client.ts";
   * import { serve } from "./server.ts";
   *
   * const read = (name: string) => Deno.readTextFile(new URL(`./testdata/${name}`, import.meta.url));
   * await using server = await serve({
   *   import(rows: number): number {
   *     for (let done = 1; done <= rows; done++) callContext()?.notify("progress", done, rows);
   *     return rows;
   *   },
   * }, {
   *   port: 0,
   *   cert: await read("server.pem"),
   *   key: await read("server.key"),
   *   onListen: () => {},
   * });
   * await using client = await connect({ port: server.addr.port, caCerts: [await read("ca.pem")] });
   * const stop = client.on("progress", (done, total) => console.log(`${done}/${total}`));
   * await client.call("import", 3); // prints 1/3, 2/3, 3/3
   * stop();
   * ```
   *
   * @param method The notification's method name.
   * @param listener Called with the notification's params (by-name params as one object).
   * @returns A function that unsubscribes.
   */
  on(method: string, listener: (...params: unknown[]) => void): () => void {
    let set = this.#listeners.get(method);
    if (set === undefined) this.#listeners.set(method, set = new Set());
    const listeners = set;
    listeners.add(listener);
    return () => {
      listeners.delete(listener);
      if (listeners.size === 0 && this.#listeners.get(method) === listeners) {
        this.#listeners.delete(method);
      }
    };
  }

  /**
   * The remote methods as functions: `await client.proxy.math.add(2, 3)` calls `math.add`, typed
   * when the client was made with the handlers' type. A method named `then` cannot be reached
   * this way (the proxy is not a promise); use `call`.
   */
  get proxy(): RemoteProxy<T> {
    const request = (method: string, params: unknown[]) => this.#request(method, params, undefined);
    return proxyFor("", this.#proxies, request) as RemoteProxy<T>;
  }

  /**
   * Closes the client for good. Calls still waiting reject with a {@linkcode ConnectionError}.
   *
   * @returns A promise that resolves once the connection is closed.
   */
  close(): Promise<void> {
    this.#shut(new ConnectionError(`Cannot complete call: client to "${this.#target}" was closed`));
    return this.#closed.promise;
  }

  /** Closes the client, as {@linkcode RpcClient.close} does. */
  async [Symbol.asyncDispose](): Promise<void> {
    await this.close();
  }

  // --- connections ------------------------------------------------------------------------------

  /** Opens a connection: TLS, then hello (not awaited) and the token (awaited), then keepalive. */
  async #openLink(signal: AbortSignal | undefined): Promise<Link> {
    const started = Date.now();
    const conn = await openTls(
      this.#options,
      this.#hostname,
      this.#port,
      this.#target,
      this.#connectTimeout,
      signal,
    );
    const link: Link = new Link(
      conn,
      this.#options.maxFrameBytes,
      (error) => this.#lose(link, this.#lostError(link, error)),
    );
    const reader = this.#options.maxFrameBytes === undefined
      ? new FrameReader(conn)
      : new FrameReader(conn, { maxFrameBytes: this.#options.maxFrameBytes });
    const done = this.#readLoop(link, reader);
    this.#linkDone = Promise.all([this.#linkDone, done]).then(() => {});
    // The hello is one round trip before the connection counts as open: with TLS 1.3 the client's
    // handshake ends before the server has checked the client certificate, so a refusal shows
    // here. (With richValues: false there is none: a refusal shows on the first call.)
    const left = () => Math.max(1, this.#connectTimeout - (Date.now() - started));
    if (this.#options.richValues !== false) {
      try {
        const answer = await this.#internalCall(
          link,
          "rpc.hello",
          { extensions: ["rich"] },
          left(),
        );
        const extensions = (answer as { extensions?: unknown } | null)?.extensions;
        link.rich = Array.isArray(extensions) && extensions.includes("rich");
      } catch (error) {
        // A plain JSON-RPC server answers rpc.hello with "method not found": it gets plain JSON.
        if (!(error instanceof RpcError)) {
          this.#lose(link, new ConnectionError("closed while connecting"));
          throw error instanceof TimeoutError
            ? new TimeoutError(
              `Cannot connect to "${this.#target}": no answer within ${this.#connectTimeout} ms`,
            )
            : new ConnectionError(
              `Cannot connect to "${this.#target}": ${reason(underlying(error))}`,
              { cause: error },
            );
        }
      }
    }
    if (this.#options.token !== undefined) {
      try {
        await this.#internalCall(link, "rpc.auth", [this.#options.token], left());
      } catch (error) {
        this.#lose(link, new ConnectionError("closed during authentication"));
        const why = error instanceof RpcError && error.code === ErrorCode.AuthenticationFailed
          ? "the server refused the token"
          : reason(error);
        throw error instanceof TimeoutError
          ? new TimeoutError(
            `Cannot connect to "${this.#target}": no answer to the token within ${this.#connectTimeout} ms`,
          )
          : new ConnectionError(`Cannot connect to "${this.#target}": ${why}`, { cause: error });
      }
    }
    if (this.#keepalive) {
      const { interval } = this.#keepalive;
      link.keepalive = setInterval(() => this.#checkKeepalive(link), Math.max(10, interval / 4));
    }
    return link;
  }

  #use(link: Link): void {
    this.#link = link;
    this.#state = "open";
  }

  #checkKeepalive(link: Link): void {
    const { interval, timeout } = this.#keepalive!;
    if (link.lost || link.pinging || Date.now() - link.lastHeard < interval) return;
    link.pinging = true;
    this.#internalCall(link, "rpc.ping", undefined, timeout).then(() => {
      link.pinging = false;
    }, (error) => {
      if (error instanceof TimeoutError) {
        this.#lose(
          link,
          new ConnectionError(
            `Cannot complete call: "${this.#target}" did not answer a keepalive ping within ${timeout} ms`,
          ),
        );
      }
    });
  }

  async #readLoop(link: Link, reader: FrameReader): Promise<void> {
    try {
      for (let frames = await reader.read(); frames; frames = await reader.read()) {
        link.lastHeard = Date.now();
        for (const frame of frames) this.#receive(decodeFrame(frame, DEFAULT_MAX_DEPTH), link);
      }
      this.#lose(
        link,
        link.serverError ? this.#lostError(link, undefined) : new ConnectionError(
          `Cannot complete call: server "${this.#target}" closed the connection`,
        ),
      );
    } catch (error) {
      this.#lose(link, this.#lostError(link, error));
    }
  }

  /** A connection is gone: fail or keep its calls, then reconnect or close. */
  #lose(link: Link, error: ConnectionError): void {
    if (link.lost && this.#link !== link) return;
    link.close();
    for (const [id, entry] of this.#internal) {
      if (entry.link !== link) continue;
      this.#internal.delete(id);
      entry.reject(error);
    }
    if (this.#link !== link) return; // never in use: a failed (re)connection attempt
    this.#link = undefined;
    if (this.#state === "closed") return;
    const retry = this.#reconnect !== undefined;
    for (const call of [...this.#pending.values()]) {
      if (call.link !== link) continue;
      this.#pending.delete(call.id);
      call.link = undefined;
      if (retry && call.idempotent && !call.retried) {
        call.retried = true;
        this.#waiting.add(call);
      } else {
        this.#drop(call);
        call.reject(error);
      }
    }
    try {
      this.#options.onDisconnect?.(error);
    } catch {
      // The application's callback must not stop the reconnection.
    }
    if (!retry) return this.#shut(error);
    this.#state = "reconnecting";
    void this.#reconnectLoop(error);
  }

  async #reconnectLoop(cause: unknown): Promise<void> {
    const { initialDelay, maxDelay, maxAttempts } = this.#reconnect!;
    let delay = initialDelay;
    let last = cause;
    for (let attempt = 1; attempt <= maxAttempts; attempt++) {
      await this.#sleep(delay * (0.5 + Math.random()));
      if (this.isClosed) return;
      try {
        const link = await this.#openLink(this.#stopReconnect.signal);
        if (this.isClosed) {
          link.close();
          return;
        }
        this.#use(link);
        try {
          this.#options.onReconnect?.();
        } catch {
          // As above.
        }
        for (const call of [...this.#waiting]) {
          this.#waiting.delete(call);
          this.#transmit(call, link);
        }
        return;
      } catch (error) {
        if (this.isClosed) return;
        last = error;
      }
      delay = Math.min(delay * 2, maxDelay);
    }
    this.#shut(
      new ConnectionError(
        `Cannot reconnect to "${this.#target}" after ${maxAttempts} attempts: ${reason(last)}`,
        { cause: last },
      ),
    );
  }

  #sleep(ms: number): Promise<void> {
    return new Promise((resolve) => {
      const timer = setTimeout(done, ms);
      function done() {
        clearTimeout(timer);
        resolve();
      }
      this.#wakeReconnect = done;
    });
  }

  #shut(error: ConnectionError): void {
    if (this.#state === "closed") return;
    this.#state = "closed";
    this.#options.signal?.removeEventListener("abort", this.#onAbort);
    this.#wakeReconnect?.();
    this.#stopReconnect.abort(error);
    const link = this.#link;
    this.#link = undefined;
    if (link) {
      link.close();
      for (const [id, entry] of this.#internal) {
        this.#internal.delete(id);
        entry.reject(error);
      }
    }
    const calls = [...this.#pending.values(), ...this.#waiting];
    this.#pending.clear();
    this.#waiting.clear();
    for (const call of calls) {
      this.#drop(call);
      call.reject(error);
    }
    void this.#linkDone.then(() => this.#closed.resolve());
  }

  // --- calls ------------------------------------------------------------------------------------

  #request(
    method: string,
    params: unknown[] | Record<string, unknown>,
    options: CallOptions | undefined,
  ): Promise<unknown> {
    if (this.#state === "closed") {
      return Promise.reject(this.#closedError(`call "${method}"`, "closed"));
    }
    const signal = options?.signal;
    if (signal?.aborted) return Promise.reject(signal.reason);
    const timeout = options?.timeout ?? this.#timeout;
    if (!(timeout >= 0)) {
      return Promise.reject(new RangeError(`Cannot call "${method}": timeout must be 0 or more`));
    }
    return new Promise((resolve, reject) => {
      const call: Pending = {
        id: this.#nextId++,
        method,
        params,
        idempotent: options?.idempotent ?? false,
        deadline: timeout > 0 ? Date.now() + timeout : undefined,
        resolve,
        reject,
        timer: undefined,
        signal,
        onAbort: undefined,
        link: undefined,
        retried: false,
        settled: false,
      };
      if (timeout > 0) {
        call.timer = setTimeout(() => {
          // The server knows the deadline too: it aborts the handler and sends nothing.
          this.#drop(call);
          reject(new TimeoutError(`Cannot call "${method}": no response within ${timeout} ms`));
        }, timeout);
      }
      if (signal) {
        call.onAbort = () => {
          const link = call.link;
          this.#drop(call);
          reject(signal.reason);
          if (link && !link.lost) this.#cancel(link, call.id);
        };
        signal.addEventListener("abort", call.onAbort, { once: true });
      }
      if (this.#state === "open" && this.#link) this.#transmit(call, this.#link);
      else this.#waiting.add(call);
    });
  }

  /** Sends a call on `link`. */
  #transmit(call: Pending, link: Link): void {
    const id = call.id;
    const left = call.deadline === undefined ? undefined : Math.max(1, call.deadline - Date.now());
    let message: Encoded;
    try {
      message = this.#encode(link, id, call.method, call.params, left);
    } catch (error) {
      this.#drop(call);
      call.reject(error);
      return;
    }
    try {
      link.send(message);
    } catch (error) {
      this.#drop(call);
      call.reject(error); // over the frame limit
      return;
    }
    call.link = link;
    this.#pending.set(id, call);
  }

  /** Forgets a call: its timer, its abort listener, its entries. */
  #drop(call: Pending): void {
    this.#pending.delete(call.id);
    this.#waiting.delete(call);
    clearTimeout(call.timer);
    call.settled = true;
    if (call.onAbort) call.signal?.removeEventListener("abort", call.onAbort);
  }

  /** Tells the server that nobody waits for call `id` any more. */
  #cancel(link: Link, id: number): void {
    try {
      link.send(`{"jsonrpc":"2.0","method":"rpc.cancel","params":[${id}]}`);
    } catch {
      // The connection is failing; the server aborts the call when it notices.
    }
  }

  /** A call of the protocol's own (`rpc.hello`, `rpc.auth`, `rpc.ping`), ids 0, -1, -2, ... */
  #internalCall(link: Link, method: string, params: unknown, timeout: number): Promise<unknown> {
    const id = this.#nextInternalId--;
    const paramsText = params === undefined ? "" : `,"params":${JSON.stringify(params)}`;
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.#internal.delete(id);
        reject(new TimeoutError(`Cannot call "${method}": no response within ${timeout} ms`));
      }, timeout);
      this.#internal.set(id, {
        link,
        resolve: (value) => {
          clearTimeout(timer);
          resolve(value);
        },
        reject: (error) => {
          clearTimeout(timer);
          reject(error);
        },
      });
      try {
        link.send(`{"jsonrpc":"2.0","id":${id},"method":"${method}"${paramsText}}`);
      } catch (error) {
        this.#internal.get(id)?.reject(error);
        this.#internal.delete(id);
      }
    });
  }

  /** A request or notification, rich when the server took rich values and the params need it. */
  #encode(
    link: Link,
    id: number | undefined,
    method: string,
    params: unknown,
    timeout: number | undefined,
  ): Encoded {
    try {
      return requestMessage(id, method, params, timeout, link.rich, DEFAULT_MAX_DEPTH);
    } catch (error) {
      const what = id === undefined ? "notify" : "call";
      const why = error instanceof NotPlainError
        ? `${error.message}, and the server has no rich values`
        : reason(error);
      // A cycle and too deep a value are one error, like JSON.stringify's TypeError for a cycle.
      throw new TypeError(`Cannot ${what} "${method}": ${why}`, { cause: error });
    }
  }

  // --- receiving --------------------------------------------------------------------------------

  #receive(message: unknown, link: Link): void {
    if (Array.isArray(message)) {
      for (const item of message) this.#receive(item, link);
      return;
    }
    if (message === null || typeof message !== "object") return;
    const response = message as {
      id?: unknown;
      result?: unknown;
      error?: unknown;
      method?: unknown;
      params?: unknown;
    };
    if (typeof response.method === "string") return this.#receiveRequest(response, link);
    const id = response.id;
    if (typeof id !== "number") {
      // id null: the server could not read something we sent and is about to close.
      if (id === null && response.error) link.serverError = toRpcError(response.error);
      return;
    }
    const internal = this.#internal.get(id);
    if (internal !== undefined) {
      this.#internal.delete(id);
      if (Object.hasOwn(response, "error")) internal.reject(toRpcError(response.error));
      else internal.resolve(response.result);
      return;
    }
    const call = this.#pending.get(id);
    if (call === undefined || call.link !== link) return;
    this.#drop(call);
    if (Object.hasOwn(response, "error")) call.reject(toRpcError(response.error));
    else call.resolve(this.#wrap ? wrap(response.result) : response.result);
  }

  /** A notification from the server goes to its listeners; a request gets "method not found". */
  #receiveRequest(
    request: { id?: unknown; method?: unknown; params?: unknown },
    link: Link,
  ): void {
    const method = request.method as string;
    if (Object.hasOwn(request, "id")) {
      const idText = JSON.stringify(isId(request.id) ? request.id : null);
      link.send(
        errorText(idText, ErrorCode.MethodNotFound, `Method not found: ${JSON.stringify(method)}`),
      );
      return;
    }
    const listeners = this.#listeners.get(method);
    if (listeners === undefined) return;
    const params = Array.isArray(request.params)
      ? request.params
      : request.params === undefined
      ? []
      : [request.params];
    for (const listener of [...listeners]) {
      try {
        listener(...params);
      } catch (error) {
        // A listener's bug must not break the connection: rethrow it where it will be seen.
        queueMicrotask(() => {
          throw error;
        });
      }
    }
  }

  #lostError(link: Link, error: unknown): ConnectionError {
    const detail = link.serverError
      ? `the server refused a message: ${link.serverError.message}`
      : error instanceof ProtocolError || (error !== undefined && !isDisconnect(error))
      ? reason(error)
      : "the connection was lost";
    return new ConnectionError(`Cannot complete call: ${detail} ("${this.#target}")`, {
      cause: link.serverError ?? error,
    });
  }

  #closedError(action: string, state: string): ConnectionError {
    return new ConnectionError(`Cannot ${action}: connection to "${this.#target}" is ${state}`);
  }
}

/** The proxy for `path`, made once per path and cache: property access nests, a call calls. */
function proxyFor(
  path: string,
  cache: Map<string, object>,
  request: (method: string, params: unknown[]) => Promise<unknown>,
): object {
  let proxy = cache.get(path);
  if (proxy) return proxy;
  proxy = new Proxy((...params: unknown[]) => request(path, params), {
    get: (_, key) => {
      // Not a promise: `await client.proxy` must not look for a method named "then".
      if (typeof key !== "string" || key === "then") return undefined;
      return proxyFor(path === "" ? key : `${path}.${key}`, cache, request);
    },
  });
  cache.set(path, proxy);
  return proxy;
}

/** The error under a ConnectionError of ours, for a message that says what really failed. */
function underlying(error: unknown): unknown {
  return error instanceof ConnectionError && error.cause !== undefined ? error.cause : error;
}

function toRpcError(error: unknown): RpcError {
  if (error === null || typeof error !== "object") {
    return new RpcError(-32603, "Invalid error response", { data: error });
  }
  const { code, message, data } = error as { code?: unknown; message?: unknown; data?: unknown };
  return new RpcError(
    typeof code === "number" ? code : -32603,
    typeof message === "string" ? message : "Invalid error response",
    { data },
  );
}
