/**
 * The tlsrpc client: calls the methods of a tlsrpc server, or of one of several `endpoints` that
 * serve the same methods, over one TLS connection, many calls at a time. When asked, it reconnects
 * after the server goes away, and moves to a new connection without losing a call when a server
 * shuts down. It imports only files of this project and needs no permission beyond
 * `--allow-net`, so it can be imported straight from a URL.
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
  type CallOptions,
  type ConnectOptions,
  type ResolvedOptions,
  resolveOptions,
  type RpcCaller,
} from "./_client_options.ts";
import { dial, type Endpoint, noEndpointError, pause } from "./_dial.ts";
import { Link, type LinkEvents } from "./_link.ts";
import { Listeners, PendingCalls } from "./_pending.ts";
import { proxyFor, type RemoteProxy } from "./_proxy.ts";
import { closeQuietly, formatAddr, reason } from "./_util.ts";
import { ConnectionError, ErrorCode, RpcError } from "./errors.ts";
import { type Untyped, wrap } from "./attr_wrapper.ts";

export {
  CancelledError,
  ConnectionError,
  ProtocolError,
  RpcError,
  TimeoutError,
} from "./errors.ts";
export { DEFAULT_CLIENT_OPTIONS } from "./_client_options.ts";
export type {
  CallOptions,
  ConnectOptions,
  KeepaliveOptions,
  ReconnectOptions,
  RpcCaller,
} from "./_client_options.ts";
export type { ClientConnection, Dialer, Endpoint } from "./_dial.ts";
export type { ExposedKey, Remote, RemoteProxy } from "./_proxy.ts";

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
 * server refuses the token; with several `endpoints`, when that happens on each of them.
 * @throws {TimeoutError} When connecting takes longer than `connectTimeout` (with one endpoint).
 * @throws {TypeError} When both `endpoints` and `hostname` or `port` are given, or `endpoints` is
 * empty.
 */
export async function connect<T = unknown>(
  options: ConnectOptions & { wrap: true },
): Promise<RpcClient<T, Untyped>>;
/**
 * Connects to a tlsrpc server; see the overload above.
 *
 * @typeParam T The type of the server's handlers, for a typed {@linkcode RpcClient.proxy}.
 * @param options Where to connect, how to verify the server and how to behave.
 * @returns The connected client.
 */
export async function connect<T = unknown>(options?: ConnectOptions): Promise<RpcClient<T>>;
export async function connect<T = unknown>(options: ConnectOptions = {}): Promise<RpcClient<T>> {
  options.signal?.throwIfAborted();
  const client = new RpcClient<T>(options);
  await client[OPEN]();
  return client;
}

/** The method of RpcClient that only `connect()` calls. */
const OPEN = Symbol("open");

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
 * @typeParam R What `call` and `callNamed` resolve with: `unknown`, or an AttrWrapper view
 * (`Untyped`) for a client made with `wrap: true`.
 */
export class RpcClient<T = unknown, R = unknown> implements AsyncDisposable, RpcCaller<T, R> {
  #options: ConnectOptions;
  #resolved: ResolvedOptions;
  /** The endpoints quoted, for messages. */
  #names: string;
  #events: LinkEvents;
  #calls: PendingCalls;
  /** When (`Date.now()`) the latest immediate switch after rpc.goaway began. */
  #lastSwitch = -Infinity;
  #listeners: Listeners;
  /** The read loops of this client's connections that have not ended yet. */
  #reading = new Set<Promise<void>>();
  #closed = Promise.withResolvers<void>();
  /** Aborts a (re)connection attempt under way, or its wait, when the client closes. */
  #stopReconnect = new AbortController();
  #onAbort = () => void this.close();
  #proxy: object | undefined;

  /**
   * Makes a client that is not connected yet; use {@linkcode connect}, which also connects it.
   *
   * @param options Where to connect, how to verify the server and how to behave.
   */
  constructor(options: ConnectOptions = {}) {
    this.#options = options;
    this.#resolved = resolveOptions(options);
    const names = this.#names = this.#resolved.endpoints.names;
    this.#calls = new PendingCalls({
      names,
      mapResult: options.wrap ? wrap : undefined,
      resend: this.#resolved.reconnect !== undefined,
    });
    this.#listeners = new Listeners(options.onListenerError);
    this.#events = {
      response: (link, id, error, result) => {
        // A server that refuses calls is shutting down, said rpc.goaway or not: leave it first,
        // so that the refused call goes out on another connection.
        if (error instanceof RpcError && error.code === ErrorCode.ShuttingDown) this.#goAway(link);
        this.#calls.settle(link, id, error, result);
      },
      notification: (method, params) => this.#listeners.deliver(method, params),
      goaway: (link) => this.#goAway(link),
      lost: (link, error) => this.#lose(link, error),
    };
  }

  /** Connects the first time, to the first endpoint that answers; called once, by `connect()`. */
  async [OPEN](): Promise<void> {
    const { signal } = this.#options;
    const failures: { endpoint: Endpoint; error: unknown }[] = [];
    for (let tried = 0; tried < this.#resolved.endpoints.size; tried++) {
      const endpoint = this.#resolved.endpoints.take();
      try {
        this.#use(await this.#open(endpoint, signal));
        this.#calls.flush();
        signal?.addEventListener("abort", this.#onAbort, { once: true });
        return;
      } catch (error) {
        failures.push({ endpoint, error });
        if (signal?.aborted) break;
      }
    }
    const only = failures.length === 1 ? failures[0]!.error : undefined;
    const error = signal?.aborted ? signal.reason : only ?? noEndpointError(failures);
    this.#shut(new ConnectionError(`Cannot connect to ${this.#names}`, { cause: error }));
    throw error;
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
  call(method: string, ...params: unknown[]): Promise<R> {
    return this.#request(method, params, undefined) as Promise<R>;
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
  callNamed(method: string, params: Record<string, unknown>): Promise<R> {
    return this.#request(method, params, undefined) as Promise<R>;
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
  withOptions(options: CallOptions): RpcCaller<T, R> {
    const request = (method: string, params: unknown[] | Record<string, unknown>) =>
      this.#request(method, params, options) as Promise<R>;
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
        `Cannot send notification: connection to ${this.#names} is ${state}`,
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
    this.#shut(new ConnectionError(`Cannot complete call: client to ${this.#names} was closed`));
    return this.#closed.promise;
  }

  /** Closes the client, as {@linkcode RpcClient.close} does. */
  async [Symbol.asyncDispose](): Promise<void> {
    await this.close();
  }

  // --- connections: the first, losing one, leaving one after rpc.goaway, reconnecting -------

  /**
   * Opens a connection to `endpoint`: the byte stream, then the hello and the token, within
   * connectTimeout.
   */
  async #open(endpoint: Endpoint, signal: AbortSignal | undefined): Promise<Link> {
    const { dialer, link: options } = this.#resolved;
    const deadline = Date.now() + options.connectTimeout;
    const conn = await dial(dialer, endpoint, options.connectTimeout, signal);
    let link: Link;
    try {
      link = new Link(conn, { ...options, target: formatAddr(endpoint) }, this.#events);
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

  /**
   * Sends calls on `link` from now on.
   *
   * @throws {ConnectionError} When it was lost, or said rpc.goaway, since it opened (it is closed).
   */
  #use(link: Link): void {
    const why = link.goingAway ? "the server is shutting down" : "the connection was lost";
    if (link.goingAway || !this.#calls.use(link)) {
      const error = new ConnectionError(`Cannot connect to "${link.target}": ${why}`);
      link.close(error);
      throw error;
    }
  }

  /** A connection is gone: its calls fail or wait; then reconnect, or close. */
  #lose(link: Link, error: ConnectionError): void {
    // Not the connection in use: a retired one, a failed (re)connection attempt, or closed.
    if (!this.#calls.lose(link, error, this.#resolved.reconnect !== undefined)) return;
    this.#disconnected(error);
    if (this.#resolved.reconnect === undefined) this.#shut(error);
    else void this.#reconnectLoop(error, false);
  }

  /**
   * The server of `link` is shutting down. With reconnect, new calls leave it for a new
   * connection, opened at once; without, they keep going to it (it answers -32001) until it
   * closes.
   */
  #goAway(link: Link): void {
    if (this.#resolved.reconnect === undefined || !this.#calls.retire(link)) return;
    const error = new ConnectionError(
      `Cannot send calls to "${link.target}": it is shutting down (rpc.goaway)`,
    );
    // Servers that say goodbye as soon as they are used must not make the client spin: at most
    // one immediate switch per initialDelay, the pace of reconnections after drops.
    const now = Date.now();
    const immediate = now - this.#lastSwitch >= this.#resolved.reconnect.initialDelay;
    if (immediate) this.#lastSwitch = now;
    else this.#disconnected(error);
    void this.#reconnectLoop(error, immediate);
  }

  /** Tells the application that no connection takes new calls for now. */
  #disconnected(error: ConnectionError): void {
    try {
      this.#options.onDisconnect?.(error);
    } catch {
      // The application's callback must not stop the reconnection.
    }
  }

  /**
   * Exponential backoff with ±50 % jitter, `maxAttempts` times, each to the next endpoint, then
   * the client closes. `immediate`, after rpc.goaway: one attempt first, without waiting and not
   * counted, and `onDisconnect` only if it fails.
   */
  async #reconnectLoop(cause: ConnectionError, immediate: boolean): Promise<void> {
    const { initialDelay, maxDelay, maxAttempts } = this.#resolved.reconnect!;
    let delay = initialDelay;
    let last: unknown = cause;
    if (immediate) {
      try {
        return await this.#reopen();
      } catch (error) {
        if (this.isClosed) return;
        last = error;
        const why = reason(error).replace(/^Cannot /, "cannot ");
        this.#disconnected(new ConnectionError(`${cause.message}, and ${why}`, { cause: error }));
      }
    }
    for (let attempt = 1; attempt <= maxAttempts; attempt++) {
      await pause(delay * (0.5 + Math.random()), this.#stopReconnect.signal);
      if (this.isClosed) return;
      try {
        return await this.#reopen();
      } catch (error) {
        if (this.isClosed) return;
        last = error;
      }
      delay = Math.min(delay * 2, maxDelay);
    }
    this.#shut(
      new ConnectionError(
        `Cannot reconnect to ${this.#names} after ${maxAttempts} attempts: ${reason(last)}`,
        { cause: last },
      ),
    );
  }

  /** One reconnection attempt, to the next endpoint; the calls that waited then go out. */
  async #reopen(): Promise<void> {
    const link = await this.#open(this.#resolved.endpoints.take(), this.#stopReconnect.signal);
    if (this.isClosed) return link.close(new ConnectionError("closed while reconnecting"));
    this.#use(link);
    try {
      this.#options.onReconnect?.();
    } catch {
      // As in #disconnected.
    }
    this.#calls.flush();
  }

  #shut(error: ConnectionError): void {
    if (this.isClosed) return;
    this.#options.signal?.removeEventListener("abort", this.#onAbort);
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
