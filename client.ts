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

import { dial, type Dialer, tlsDialer } from "./_dial.ts";
import { Link, type LinkEvents, type LinkOptions } from "./_link.ts";
import { Listeners, PendingCalls } from "./_pending.ts";
import { proxyFor, type RemoteProxy } from "./_proxy.ts";
import { closeQuietly, formatAddr, reason } from "./_util.ts";
import { ConnectionError } from "./errors.ts";
import { wrap } from "./attr_wrapper.ts";

export {
  CancelledError,
  ConnectionError,
  ProtocolError,
  RpcError,
  TimeoutError,
} from "./errors.ts";
export type { ClientConnection, Dialer } from "./_dial.ts";
export type { ExposedKey, Remote, RemoteProxy } from "./_proxy.ts";

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
  /**
   * Bytes that may wait to be written before calls are refused: far above what a reading server
   * leaves queued (a few frames), and a bound on what one that stops reading costs.
   */
  maxQueuedBytes: 64 * 1024 * 1024,
  /**
   * How long one write may make no progress before the connection counts as dead: a reading
   * server takes bytes within milliseconds, and TCP retransmits for minutes before giving up.
   */
  writeTimeout: 30_000,
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
  /**
   * Bytes that may wait to be written to a server that reads slowly or not at all; a call or
   * notification that would pass the limit is refused with a {@linkcode ConnectionError}. (A
   * message alone is always taken, up to `maxFrameBytes`.)
   *
   * @default {67108864}
   */
  maxQueuedBytes?: number;
  /**
   * Milliseconds one write to the server may make no progress (a server that stops reading)
   * before the connection counts as dead: calls in flight reject with a
   * {@linkcode ConnectionError}, and `reconnect` applies. 0 waits for ever.
   *
   * @default {30000}
   */
  writeTimeout?: number;
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
  /**
   * Called when a notification cannot reach a listener: a listener of `method` threw (or its
   * promise rejected), or the notification has more than 1 024 by-position params, more than a
   * listener's parameter list sensibly takes (and far fewer than overflow the stack when spread).
   * The client and its connection carry on.
   *
   * @default {console.error}
   */
  onListenerError?: (error: unknown, method: string) => void;
  /**
   * Opens the byte stream to the server: by default TLS to `hostname:port`, verified with
   * `caCerts`, with `cert` and `key` for mutual TLS. Given, the client runs over whatever it
   * returns (a tunnel, an in-memory pair in tests), and `hostname`, `port`, `caCerts`, `cert` and
   * `key` only name the server in messages. It is called for every connection, reconnections
   * included, under `connectTimeout`; it should give up when its signal aborts.
   *
   * @default {TLS to hostname:port}
   */
  dial?: Dialer;
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

/** Where listener errors go without `onListenerError`. */
function logListenerError(error: unknown, method: string): void {
  console.error(`A listener of notification "${method}" threw:`, error);
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
  #target: string;
  #dialer: Dialer;
  #linkOptions: LinkOptions;
  #events: LinkEvents;
  #reconnect: Required<ReconnectOptions> | undefined;
  #calls: PendingCalls;
  #listeners: Listeners;
  /** The read loops of this client's connections that have not ended yet. */
  #reading = new Set<Promise<void>>();
  #closed = Promise.withResolvers<void>();
  #wakeReconnect: (() => void) | undefined;
  /** Aborts a (re)connection attempt under way, dial or hello, when the client closes. */
  #stopReconnect = new AbortController();
  #onAbort = () => void this.close();
  #proxy: object | undefined;

  /**
   * Makes a client that is not connected yet; use {@linkcode connect}, which also connects it.
   *
   * @param options Where to connect, how to verify the server and how to behave.
   */
  constructor(options: ConnectOptions = {}) {
    const defaults = DEFAULT_CLIENT_OPTIONS;
    const { hostname = defaults.hostname, port = defaults.port, caCerts, cert, key } = options;
    const target = this.#target = formatAddr({ hostname, port });
    this.#options = options;
    this.#dialer = options.dial ?? tlsDialer({ hostname, port, caCerts, cert, key });
    const reconnect = options.reconnect === true ? {} : options.reconnect || undefined;
    this.#reconnect = reconnect && {
      initialDelay: reconnect.initialDelay ?? defaults.reconnectInitialDelay,
      maxDelay: reconnect.maxDelay ?? defaults.reconnectMaxDelay,
      maxAttempts: reconnect.maxAttempts ?? defaults.reconnectMaxAttempts,
    };
    const keepalive = options.keepalive === true ? {} : options.keepalive || undefined;
    const { maxQueuedBytes = defaults.maxQueuedBytes, writeTimeout = defaults.writeTimeout } =
      options;
    if (!(maxQueuedBytes >= 1) || !(writeTimeout >= 0)) {
      throw new RangeError(
        `Cannot connect to "${target}": maxQueuedBytes must be 1 or more, writeTimeout 0 or more`,
      );
    }
    this.#linkOptions = {
      target,
      maxFrameBytes: options.maxFrameBytes,
      maxQueuedBytes,
      writeTimeout,
      keepalive: keepalive && {
        interval: keepalive.interval ?? defaults.keepaliveInterval,
        timeout: keepalive.timeout ?? defaults.keepaliveTimeout,
      },
      richValues: options.richValues !== false,
      token: options.token,
      connectTimeout: options.connectTimeout ?? defaults.connectTimeout,
    };
    this.#calls = new PendingCalls({ target, mapResult: options.wrap ? wrap : undefined });
    this.#listeners = new Listeners(options.onListenerError ?? logListenerError);
    this.#events = {
      response: (link, id, error, result) => this.#calls.settle(link, id, error, result),
      notification: (method, params) => this.#listeners.deliver(method, params),
      lost: (link, error) => this.#lose(link, error),
    };
  }

  /** Connects the first time; called once, by `connect()`. */
  async [OPEN](): Promise<void> {
    try {
      const link = await this.#open(this.#options.signal);
      if (!this.#calls.use(link)) throw this.#lostWhileConnecting();
      this.#calls.flush();
    } catch (error) {
      this.#shut(new ConnectionError(`Cannot connect to "${this.#target}"`, { cause: error }));
      throw error;
    }
    this.#options.signal?.addEventListener("abort", this.#onAbort, { once: true });
  }

  /** Whether the client is closed for good; calls then reject at once. */
  get isClosed(): boolean {
    return this.#calls.isClosed;
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
    let proxy: object | undefined;
    return {
      call: (method, ...params) => request(method, params),
      callNamed: (method, params) => request(method, params),
      get proxy() {
        return (proxy ??= proxyFor(request)) as RemoteProxy<T>;
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
   * @throws {ConnectionError} When the client has no open connection, or too many bytes wait to
   * be written (`maxQueuedBytes`).
   * @throws {TypeError} When the params cannot be sent.
   * @throws {RangeError} When the message is larger than the frame limit.
   */
  notify(method: string, ...params: unknown[]): void {
    const link = this.#calls.link;
    if (link === undefined) {
      const state = this.isClosed ? "closed" : "not open";
      throw new ConnectionError(
        `Cannot send notification: connection to "${this.#target}" is ${state}`,
      );
    }
    link.notify(method, params);
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
   * A listener that throws does not stop the others nor the connection: its error goes to
   * {@linkcode ConnectOptions.onListenerError}, as does a notification with more than 1 024
   * by-position params, which reaches no listener.
   *
   * @param method The notification's method name.
   * @param listener Called with the notification's params (by-name params as one object).
   * @returns A function that unsubscribes.
   */
  on(method: string, listener: (...params: unknown[]) => void): () => void {
    return this.#listeners.on(method, listener);
  }

  /**
   * The remote methods as functions: `await client.proxy.math.add(2, 3)` calls `math.add`, typed
   * when the client was made with the handlers' type. A method named `then` cannot be reached
   * this way (the proxy is not a promise); use `call`.
   */
  get proxy(): RemoteProxy<T> {
    this.#proxy ??= proxyFor((method, params) => this.#request(method, params, undefined));
    return this.#proxy as RemoteProxy<T>;
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

  // --- connections: the first, losing one, reconnecting ---------------------------------------

  /** Opens a connection: the byte stream, then the hello and the token, within connectTimeout. */
  async #open(signal: AbortSignal | undefined): Promise<Link> {
    const { connectTimeout } = this.#linkOptions;
    const deadline = Date.now() + connectTimeout;
    const conn = await dial(this.#dialer, this.#target, connectTimeout, signal);
    let link: Link;
    try {
      link = new Link(conn, this.#linkOptions, this.#events);
    } catch (error) {
      closeQuietly(conn); // a bad maxFrameBytes
      throw error;
    }
    const done = link.done;
    this.#reading.add(done);
    void done.then(() => this.#reading.delete(done));
    await link.start(deadline, signal);
    return link;
  }

  /** A connection is gone: its calls fail or wait; then reconnect, or close. */
  #lose(link: Link, error: ConnectionError): void {
    // Not the connection in use: a failed (re)connection attempt, or the client closed.
    if (!this.#calls.lose(link, error, this.#reconnect !== undefined)) return;
    try {
      this.#options.onDisconnect?.(error);
    } catch {
      // The application's callback must not stop the reconnection.
    }
    if (this.#reconnect === undefined) this.#shut(error);
    else void this.#reconnectLoop(error);
  }

  /** Exponential backoff with ±50 % jitter, `maxAttempts` times, then the client closes. */
  async #reconnectLoop(cause: unknown): Promise<void> {
    const { initialDelay, maxDelay, maxAttempts } = this.#reconnect!;
    let delay = initialDelay;
    let last = cause;
    for (let attempt = 1; attempt <= maxAttempts; attempt++) {
      await this.#sleep(delay * (0.5 + Math.random()));
      if (this.isClosed) return;
      try {
        const link = await this.#open(this.#stopReconnect.signal);
        if (this.isClosed) return link.close(new ConnectionError("closed while reconnecting"));
        if (!this.#calls.use(link)) throw this.#lostWhileConnecting();
        try {
          this.#options.onReconnect?.();
        } catch {
          // As above.
        }
        return this.#calls.flush(); // the calls that waited go out
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

  /** For a connection that dropped between its hello and its first use. */
  #lostWhileConnecting(): ConnectionError {
    return new ConnectionError(`Cannot connect to "${this.#target}": the connection was lost`);
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
    if (this.isClosed) return;
    this.#options.signal?.removeEventListener("abort", this.#onAbort);
    this.#wakeReconnect?.();
    this.#stopReconnect.abort(error);
    this.#calls.close(error);
    void Promise.all(this.#reading).then(() => this.#closed.resolve());
  }

  #request(
    method: string,
    params: unknown[] | Record<string, unknown>,
    options: CallOptions | undefined,
  ): Promise<unknown> {
    const { timeout = this.#options.timeout ?? 0, signal, idempotent } = options ?? {};
    return this.#calls.start(method, params, { timeout, signal, idempotent });
  }
}
