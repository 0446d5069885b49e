/**
 * The tlsrpc client: calls the methods of a tlsrpc server over one TLS connection, many calls at
 * a time. It imports only files of this project and needs no permission beyond `--allow-net`, so
 * it can be imported straight from a URL.
 *
 * @example Call a server
 * ```ts ignore
 * import { connect } from "./client.ts";
 *
 * await using client = await connect({
 *   hostname: "localhost",
 *   port: 7443,
 *   caCerts: [await Deno.readTextFile("ca.pem")],
 * });
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
} as const;

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
   * The CA certificates, PEM, to verify the server's certificate with, instead of the system's
   * root store.
   */
  caCerts?: string[];
  /**
   * Milliseconds each call may take before it rejects with a {@linkcode TimeoutError}; 0 waits
   * for ever.
   *
   * @default {0}
   */
  timeout?: number;
  /**
   * Milliseconds the TCP connection and TLS handshake may take.
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
   * JSON only. `false` skips the round trip and speaks plain JSON-RPC 2.0.
   *
   * @default {true}
   */
  richValues?: boolean;
}

/** Says hello to the server: a method of the client only `connect()` calls. */
const HELLO = Symbol("hello");

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

interface Pending {
  resolve(value: unknown): void;
  reject(error: unknown): void;
  timer: ReturnType<typeof setTimeout> | undefined;
  signal: AbortSignal | undefined;
  onAbort: (() => void) | undefined;
}

/** Options for one call, or for every call made through {@linkcode RpcClient.withOptions}. */
export interface CallOptions {
  /**
   * Milliseconds the call may take; it then rejects with a {@linkcode TimeoutError}. The deadline
   * travels with the request, so the handler's signal aborts too and its late result is dropped.
   * 0 waits for ever.
   *
   * @default {the client's `timeout`}
   */
  timeout?: number;
  /**
   * Aborting it rejects the call at once with the signal's reason and tells the server, whose
   * handler's signal then aborts.
   */
  signal?: AbortSignal;
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
 * Connects to a tlsrpc server, completing the TLS handshake before it resolves.
 *
 * @example Connect with the test CA
 * ```ts ignore
 * import { connect } from "./client.ts";
 *
 * const client = await connect({ port: 7443, caCerts: [await Deno.readTextFile("ca.pem")] });
 * await client.close();
 * ```
 *
 * @param options Where to connect and how to verify the server.
 * @returns The connected client.
 * @throws {ConnectionError} When the server cannot be reached or the TLS handshake fails.
 * @throws {TimeoutError} When connecting takes longer than `connectTimeout`.
 */
export async function connect<T = unknown>(options: ConnectOptions = {}): Promise<RpcClient<T>> {
  const hostname = options.hostname ?? DEFAULT_CLIENT_OPTIONS.hostname;
  const port = options.port ?? DEFAULT_CLIENT_OPTIONS.port;
  const target = formatAddr({ hostname, port });
  const signal = options.signal;
  signal?.throwIfAborted();
  const timeout = options.connectTimeout ?? DEFAULT_CLIENT_OPTIONS.connectTimeout;
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
  try {
    // TCP first, to turn Nagle's algorithm off (Deno.connectTls cannot): otherwise a small write
    // can wait for a delayed ACK, 40 ms on Linux, in the handshake and in every call.
    const opening = Deno.connect({ hostname, port }).then((tcp) => {
      // A connection that opens after we gave up must not leak.
      if (abandoned) {
        closeQuietly(tcp);
        throw new Error("abandoned");
      }
      tcp.setNoDelay(true);
      const tls = Deno.startTls(tcp, {
        hostname,
        ...(options.caCerts && { caCerts: options.caCerts }),
      });
      return tls.then((opened) => {
        if (abandoned) closeQuietly(opened);
        conn = opened;
        return opened.handshake();
      });
    });
    await Promise.race([opening, stop]);
    const client = new RpcClient<T>(conn!, target, options);
    if (options.richValues !== false) client[HELLO]();
    return client;
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
 * A connection to a tlsrpc server, from {@linkcode connect}. Calls are multiplexed on the one
 * connection by id; each resolves as soon as its response arrives, in any order.
 */
export class RpcClient<T = unknown> implements AsyncDisposable {
  #conn: Deno.TlsConn;
  #target: string;
  #writer: FrameWriter;
  #pending = new Map<number, Pending>();
  #nextId = 1;
  #timeout: number;
  #wrap: boolean;
  #rich = false;
  /** Settles when the server has answered rpc.hello; `undefined` when no hello was sent. */
  #hello: Promise<void> | undefined;
  #closeReason: Error | undefined;
  #signal: AbortSignal | undefined;
  #onAbort = () => this.close();
  #proxies = new Map<string, object>();
  #listeners = new Map<string, Set<(...params: unknown[]) => void>>();
  #serverError: RpcError | undefined;
  /** Resolves when the connection has closed, for whatever reason. */
  readonly closed: Promise<void>;

  /**
   * Wraps a connected TLS connection; use {@linkcode connect} instead.
   *
   * @param conn A TLS connection whose handshake has completed.
   * @param target The `host:port` the connection goes to, for error messages.
   * @param options The call timeout and frame limit.
   */
  constructor(conn: Deno.TlsConn, target: string, options: ConnectOptions = {}) {
    this.#conn = conn;
    this.#target = target;
    this.#timeout = options.timeout ?? 0;
    this.#wrap = options.wrap ?? false;
    const frameOptions = options.maxFrameBytes === undefined
      ? {}
      : { maxFrameBytes: options.maxFrameBytes };
    this.#writer = new FrameWriter(conn, {
      ...frameOptions,
      onError: (error) => this.#shut(this.#lost(error)),
    });
    this.closed = this.#readLoop(new FrameReader(conn, frameOptions));
    this.#signal = options.signal;
    this.#signal?.addEventListener("abort", this.#onAbort, { once: true });
  }

  /** Whether the connection is closed; calls then reject at once. */
  get isClosed(): boolean {
    return this.#closeReason !== undefined;
  }

  /**
   * Calls `method` with by-position params and resolves with its result.
   *
   * @example Call a method
   * ```ts ignore
   * const sum = await client.call("add", 2, 3);
   * ```
   *
   * @param method The method's name, dotted for namespaces (`"math.add"`).
   * @param params The params, each a JSON value.
   * @returns The result.
   * @throws {RpcError} When the server answers with an error.
   * @throws {ConnectionError} When the connection is closed or drops before the response.
   * @throws {TimeoutError} When no response came within the client's `timeout`.
   * @throws {TypeError} When the params cannot be sent as JSON.
   */
  call(method: string, ...params: unknown[]): Promise<unknown> {
    return this.#request(method, params, undefined);
  }

  /**
   * Calls `method` with by-name params, passed to the handler as one object.
   *
   * @example Call with named params
   * ```ts ignore
   * const user = await client.callNamed("users.find", { name: "ada" });
   * ```
   *
   * @param method The method's name.
   * @param params The params object.
   * @returns The result.
   * @throws {RpcError} When the server answers with an error.
   * @throws {ConnectionError} When the connection is closed or drops before the response.
   * @throws {TimeoutError} When no response came within the client's `timeout`.
   */
  callNamed(method: string, params: Record<string, unknown>): Promise<unknown> {
    return this.#request(method, params, undefined);
  }

  /**
   * The client's calls with per-call options: a timeout that travels to the server as the call's
   * deadline, and an `AbortSignal` that cancels the call on both sides.
   *
   * @example Cancel a call, or give it a deadline
   * ```ts ignore
   * const controller = new AbortController();
   * const report = client.withOptions({ signal: controller.signal }).proxy.buildReport();
   * controller.abort(); // report rejects now; the handler's callContext().signal aborts
   * await client.withOptions({ timeout: 500 }).call("search", "tls");
   * ```
   *
   * @param options The timeout and signal for every call made through the result.
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
   * Subscribes to the notifications the server sends on this connection under `method` (a
   * handler's `callContext().notify(method, ...params)`).
   *
   * @example Follow the progress of a call
   * ```ts ignore
   * const stop = client.on("progress", (done, total) => console.log(`${done}/${total}`));
   * await client.call("import", "data.csv");
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
   * Sends a notification: a call that gets no response, so its outcome is never known.
   *
   * @example Notify
   * ```ts ignore
   * client.notify("log", "started");
   * ```
   *
   * @param method The method's name.
   * @param params The params.
   * @throws {ConnectionError} When the connection is closed.
   * @throws {TypeError} When the params cannot be sent as JSON.
   * @throws {RangeError} When the message is larger than the frame limit.
   */
  notify(method: string, ...params: unknown[]): void {
    if (this.#closeReason) throw this.#closedError("send notification");
    this.#send(this.#encode(undefined, method, params, undefined));
  }

  /**
   * The remote methods as functions: `await client.proxy.math.add(2, 3)` calls `math.add`. A
   * method named `then` cannot be reached this way (the proxy is not a promise); use `call`.
   */
  get proxy(): RemoteProxy<T> {
    const request = (method: string, params: unknown[]) => this.#request(method, params, undefined);
    return proxyFor("", this.#proxies, request) as RemoteProxy<T>;
  }

  /**
   * Closes the connection. Calls still waiting reject with a {@linkcode ConnectionError}.
   *
   * @returns A promise that resolves once the connection is closed.
   */
  close(): Promise<void> {
    this.#shut(new ConnectionError(`Cannot complete call: client to "${this.#target}" was closed`));
    return this.closed;
  }

  /** Closes the connection, as {@linkcode RpcClient.close} does. */
  async [Symbol.asyncDispose](): Promise<void> {
    await this.close();
  }

  #request(
    method: string,
    params: unknown[] | Record<string, unknown>,
    options: CallOptions | undefined,
  ): Promise<unknown> {
    if (this.#closeReason) return Promise.reject(this.#closedError(`call "${method}"`));
    const signal = options?.signal;
    if (signal?.aborted) return Promise.reject(signal.reason);
    const timeout = options?.timeout ?? this.#timeout;
    if (!(timeout >= 0)) {
      return Promise.reject(new RangeError(`Cannot call "${method}": timeout must be 0 or more`));
    }
    const id = this.#nextId++;
    let message: Encoded;
    try {
      message = this.#encode(id, method, params, timeout > 0 ? timeout : undefined);
    } catch (error) {
      // Params that need rich values wait for the server's answer to rpc.hello, then try again.
      const hello = this.#hello;
      if (
        hello === undefined || !(error instanceof TypeError && error.cause instanceof NotPlainError)
      ) {
        return Promise.reject(error);
      }
      return hello.then(() => this.#request(method, params, options));
    }
    try {
      this.#send(message);
    } catch (error) {
      return Promise.reject(error); // over the frame limit
    }
    return new Promise((resolve, reject) => {
      const pending: Pending = { resolve, reject, timer: undefined, signal, onAbort: undefined };
      if (timeout > 0) {
        pending.timer = setTimeout(() => {
          // The server knows the deadline too: it aborts the handler and sends nothing.
          this.#settle(id, pending);
          reject(new TimeoutError(`Cannot call "${method}": no response within ${timeout} ms`));
        }, timeout);
      }
      if (signal) {
        pending.onAbort = () => {
          this.#settle(id, pending);
          reject(signal.reason);
          this.#cancel(id);
        };
        signal.addEventListener("abort", pending.onAbort, { once: true });
      }
      this.#pending.set(id, pending);
    });
  }

  /**
   * Offers rich values; called once by `connect()`, which does not wait for the answer: calls go
   * out behind the hello, and only a call whose params need rich values waits for it.
   */
  [HELLO](): void {
    const id = 0; // calls count from 1
    this.#send(
      `{"jsonrpc":"2.0","id":${id},"method":"rpc.hello","params":{"extensions":["rich"]}}`,
    );
    this.#hello = new Promise<unknown>((resolve, reject) => {
      this.#pending.set(id, {
        resolve,
        reject,
        timer: undefined,
        signal: undefined,
        onAbort: undefined,
      });
    }).then((answer) => {
      const extensions = (answer as { extensions?: unknown } | null)?.extensions;
      this.#rich = Array.isArray(extensions) && extensions.includes("rich");
    }, () => {
      // A plain JSON-RPC server does not know rpc.hello, or the connection failed: plain JSON.
    }).finally(() => {
      this.#hello = undefined; // answered: params that still need rich values are refused
    });
  }

  /** A request or notification, rich when the server took rich values and the params need it. */
  #encode(
    id: number | undefined,
    method: string,
    params: unknown,
    timeout: number | undefined,
  ): Encoded {
    try {
      return requestMessage(id, method, params, timeout, this.#rich, DEFAULT_MAX_DEPTH);
    } catch (error) {
      const what = id === undefined ? "notify" : "call";
      const why = error instanceof NotPlainError
        ? `${error.message}, and the server has no rich values`
        : reason(error);
      // A cycle and too deep a value are one error, like JSON.stringify's TypeError for a cycle.
      throw new TypeError(`Cannot ${what} "${method}": ${why}`, { cause: error });
    }
  }

  /** Queues a message. */
  #send(message: Encoded): void {
    if (typeof message === "string") this.#writer.writeText(message);
    else this.#writer.writeParts(message);
  }

  /** Forgets a pending call: its timer, its abort listener, its entry. */
  #settle(id: number, pending: Pending): void {
    this.#pending.delete(id);
    clearTimeout(pending.timer);
    if (pending.onAbort) pending.signal?.removeEventListener("abort", pending.onAbort);
  }

  /** Tells the server that nobody waits for call `id` any more. */
  #cancel(id: number): void {
    if (this.#closeReason) return;
    try {
      this.#writer.writeText(`{"jsonrpc":"2.0","method":"rpc.cancel","params":[${id}]}`);
    } catch {
      // The connection is failing; the server aborts the call when it notices.
    }
  }

  async #readLoop(reader: FrameReader): Promise<void> {
    try {
      for (let frames = await reader.read(); frames; frames = await reader.read()) {
        for (const frame of frames) this.#receive(decodeFrame(frame, DEFAULT_MAX_DEPTH));
      }
      this.#shut(
        this.#serverError ? this.#lost(undefined) : new ConnectionError(
          `Cannot complete call: server "${this.#target}" closed the connection`,
        ),
      );
    } catch (error) {
      this.#shut(this.#lost(error));
    } finally {
      closeQuietly(this.#conn);
    }
  }

  #receive(message: unknown): void {
    if (Array.isArray(message)) {
      for (const item of message) this.#receive(item);
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
    if (typeof response.method === "string") return this.#receiveRequest(response);
    const pending = typeof response.id === "number" ? this.#pending.get(response.id) : undefined;
    if (pending === undefined) {
      // id null: the server could not read something we sent and is about to close.
      if (response.id === null && response.error) this.#serverError = toRpcError(response.error);
      return;
    }
    this.#settle(response.id as number, pending);
    if (Object.hasOwn(response, "error")) pending.reject(toRpcError(response.error));
    else pending.resolve(this.#wrap ? wrap(response.result) : response.result);
  }

  /** A notification from the server goes to its listeners; a request gets "method not found". */
  #receiveRequest(request: { id?: unknown; method?: unknown; params?: unknown }): void {
    const method = request.method as string;
    if (Object.hasOwn(request, "id")) {
      const idText = JSON.stringify(isId(request.id) ? request.id : null);
      this.#writer.writeText(
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

  #lost(error: unknown): ConnectionError {
    if (this.#closeReason) return this.#closeReason as ConnectionError;
    const detail = this.#serverError
      ? `the server refused a message: ${this.#serverError.message}`
      : error instanceof ProtocolError || !isDisconnect(error)
      ? reason(error)
      : "the connection was lost";
    return new ConnectionError(`Cannot complete call: ${detail} ("${this.#target}")`, {
      cause: this.#serverError ?? error,
    });
  }

  #closedError(action: string): ConnectionError {
    return new ConnectionError(
      `Cannot ${action}: connection to "${this.#target}" is closed`,
      { cause: this.#closeReason },
    );
  }

  #shut(error: Error): void {
    if (this.#closeReason) return;
    this.#closeReason = error;
    this.#signal?.removeEventListener("abort", this.#onAbort);
    closeQuietly(this.#conn);
    const pending = [...this.#pending.values()];
    this.#pending.clear();
    for (const call of pending) {
      clearTimeout(call.timer);
      if (call.onAbort) call.signal?.removeEventListener("abort", call.onAbort);
      call.reject(error);
    }
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
