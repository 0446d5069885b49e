// Who on the client waits for what the server sends: calls in flight by id (their timers and
// abort signals, the calls that wait while the client reconnects, the one retry of an idempotent
// call whose connection dropped, the one resend of a call a shutting-down server refused), the
// connections that drain after rpc.goaway, and listeners of notifications by method.

import type { Link } from "./_link.ts";
import { ConnectionError, ErrorCode, RpcError, TimeoutError } from "./errors.ts";
import {
  setServer,
  settling,
  startClientSpan,
  traceparentOf,
  type TraceSpan,
  tracing,
} from "./_trace.ts";

/** How one call behaves. */
export interface StartOptions {
  /** Milliseconds before it rejects with a TimeoutError, waiting for a connection included; 0: none. */
  timeout: number;
  /** Rejects the call with its reason, and tells the server, when it aborts. */
  signal?: AbortSignal | undefined;
  /** Sent once more on the next connection if its own drops while it is in flight. */
  idempotent?: boolean | undefined;
}

/** A call, from the moment it is made until it settles. */
interface Call {
  readonly id: number;
  readonly method: string;
  readonly params: unknown[] | Record<string, unknown>;
  readonly idempotent: boolean;
  /** When the caller stops waiting (`Date.now()`), or `undefined`. */
  readonly deadline: number | undefined;
  readonly signal: AbortSignal | undefined;
  resolve(value: unknown): void;
  reject(error: unknown): void;
  timer: ReturnType<typeof setTimeout> | undefined;
  onAbort: (() => void) | undefined;
  /** The connection it went out on, or `undefined` while it waits for one. */
  link: Link | undefined;
  /** Sent once more after a reconnection already. */
  retried: boolean;
  /** Sent once more after a -32001 answer already. */
  resent: boolean;
  /** Its client span, when tracing: settling the call ends it. */
  span: TraceSpan | undefined;
}

/** Options for {@linkcode PendingCalls}. */
export interface PendingOptions {
  /** The server, quoted, for messages: `"host:port"`, or a list of them. */
  names: string;
  /** Applied to each result before the call resolves with it. */
  mapResult?: ((result: unknown) => unknown) | undefined;
  /**
   * A call answered -32001 (the server is shutting down: the call never ran) is sent once more,
   * on the connection in use then or on the next one, instead of rejecting. The owner retires
   * the connection that answered so before the answer is settled.
   */
  resend: boolean;
}

/** The table of a client's calls, and the connection they go out on. */
export class PendingCalls {
  /** The calls sent and not answered, by id; each knows the connection it went out on. */
  #inFlight = new Map<number, Call>();
  #waiting = new Set<Call>();
  #nextId = 1;
  #names: string;
  #mapResult: ((result: unknown) => unknown) | undefined;
  #resend: boolean;
  #link: Link | undefined;
  /**
   * Connections that take no new calls (rpc.goaway), and how many calls are in flight on each:
   * closed once the last settles. Only they are counted: a call costs no per-connection entry.
   */
  #retired = new Map<Link, number>();
  #closed = false;

  constructor(options: PendingOptions) {
    this.#names = options.names;
    this.#mapResult = options.mapResult;
    this.#resend = options.resend;
  }

  /** The connection calls go out on; `undefined` while connecting, reconnecting, or closed. */
  get link(): Link | undefined {
    return this.#link;
  }

  /** Whether {@linkcode PendingCalls.close} was called: calls then reject at once. */
  get isClosed(): boolean {
    return this.#closed;
  }

  /** Calls sent and not answered, and calls waiting for a connection. */
  get size(): number {
    return this.#inFlight.size + this.#waiting.size;
  }

  /**
   * Starts a call: sends it on the current connection, or, without one, keeps it until
   * {@linkcode PendingCalls.use} gives one.
   *
   * @returns The call's outcome: the result; an RpcError; a TimeoutError; the signal's reason; a
   * ConnectionError when its connection drops or the table is closed; a TypeError or RangeError
   * when it cannot be sent.
   */
  start(
    method: string,
    params: unknown[] | Record<string, unknown>,
    options: StartOptions,
  ): Promise<unknown> {
    if (this.#closed) {
      return Promise.reject(
        new ConnectionError(`Cannot call "${method}": connection to ${this.#names} is closed`),
      );
    }
    const { timeout, signal } = options;
    if (signal?.aborted) return Promise.reject(signal.reason);
    if (!(timeout >= 0)) {
      return Promise.reject(new RangeError(`Cannot call "${method}": timeout must be 0 or more`));
    }
    return new Promise((resolve, reject) => {
      const call: Call = {
        id: this.#nextId++,
        method,
        params,
        idempotent: options.idempotent ?? false,
        deadline: timeout > 0 ? Date.now() + timeout : undefined,
        signal,
        resolve,
        reject,
        timer: undefined,
        onAbort: undefined,
        link: undefined,
        retried: false,
        resent: false,
        span: undefined,
      };
      if (tracing) traceCall(call);
      if (timeout > 0) call.timer = setTimeout(() => this.#expire(call, timeout), timeout);
      if (signal) {
        call.onAbort = () => this.#abort(call);
        signal.addEventListener("abort", call.onAbort, { once: true });
      }
      this.#dispatch(call);
    });
  }

  /**
   * Sends calls on `link` from now on; {@linkcode PendingCalls.flush} sends those that waited.
   *
   * @returns `false`, and nothing changes, when `link` is lost already or the table is closed.
   */
  use(link: Link): boolean {
    if (this.#closed || link.lost) return false;
    this.#link = link;
    return true;
  }

  /** Sends the calls that waited for a connection on the one in use. */
  flush(): void {
    const link = this.#link;
    if (link === undefined) return;
    for (const call of [...this.#waiting]) {
      this.#waiting.delete(call);
      this.#transmit(call, link);
    }
  }

  /**
   * Stops sending calls on `link`, the connection in use, after rpc.goaway: new calls wait for
   * {@linkcode PendingCalls.use}; those in flight on it stay there, and it is closed once the last
   * of them settles (at once if there is none).
   *
   * @returns Whether `link` was the connection in use (else nothing happens).
   */
  retire(link: Link): boolean {
    if (this.#link !== link || this.#closed) return false;
    this.#link = undefined;
    const left = this.#callsOn(link).length;
    if (left === 0) this.#closeRetired(link);
    else this.#retired.set(link, left);
    return true;
  }

  /**
   * The answer to call `id`, which counts only if it came on the link the call went out on. With
   * `resend`, a -32001 answer sends the call once more instead.
   */
  settle(link: Link, id: number, error: unknown, result: unknown): void {
    const call = this.#inFlight.get(id);
    if (call === undefined || call.link !== link) return;
    if (
      this.#resend && !call.resent && error instanceof RpcError &&
      error.code === ErrorCode.ShuttingDown
    ) {
      call.resent = true;
      this.#unlink(call);
      return this.#dispatch(call);
    }
    this.#drop(call);
    if (error !== undefined) return call.reject(error);
    try {
      call.resolve(this.#mapResult ? this.#mapResult(result) : result);
    } catch (mapError) {
      call.reject(mapError);
    }
  }

  /**
   * `link` is gone: its calls reject with `error`, as their outcome is unknown, except, when
   * `retry`, idempotent calls not retried yet, which go out on the connection in use, or wait for
   * the next one.
   *
   * @returns Whether `link` was the connection in use: the caller reconnects or closes. (A
   * retired connection, or one never used, is not.)
   */
  lose(link: Link, error: unknown, retry: boolean): boolean {
    if (this.#closed) return false;
    const current = this.#link === link;
    if (current) this.#link = undefined;
    this.#retired.delete(link);
    for (const call of this.#callsOn(link)) {
      this.#inFlight.delete(call.id);
      call.link = undefined;
      if (retry && call.idempotent && !call.retried) {
        call.retried = true;
        this.#dispatch(call);
      } else {
        this.#drop(call);
        call.reject(error);
      }
    }
    return current;
  }

  /** Closes every connection and rejects every call, now and later, with `error`. */
  close(error: ConnectionError): void {
    if (this.#closed) return;
    this.#closed = true;
    const links = [this.#link, ...this.#retired.keys()];
    this.#link = undefined;
    this.#retired.clear();
    const calls = [...this.#inFlight.values(), ...this.#waiting];
    this.#inFlight.clear();
    this.#waiting.clear();
    for (const link of links) link?.close(error);
    for (const call of calls) {
      this.#drop(call);
      call.reject(error);
    }
  }

  /** Sends `call` on the connection in use, or keeps it until there is one. */
  #dispatch(call: Call): void {
    if (this.#link) this.#transmit(call, this.#link);
    else this.#waiting.add(call);
  }

  #transmit(call: Call, link: Link): void {
    const left = call.deadline === undefined ? undefined : Math.max(1, call.deadline - Date.now());
    let traceparent: string | undefined;
    if (call.span !== undefined) {
      setServer(call.span, link.target);
      traceparent = traceparentOf(call.span);
    }
    try {
      link.call(call.id, call.method, call.params, left, traceparent);
    } catch (error) {
      // Params that cannot be encoded, a frame over the limit, a jammed or closed connection.
      this.#drop(call);
      call.reject(error);
      return;
    }
    call.link = link;
    this.#inFlight.set(call.id, call);
  }

  /** The server knows the deadline too: it aborts the handler and sends nothing. */
  #expire(call: Call, timeout: number): void {
    const link = call.link;
    this.#drop(call);
    // Not written yet: it never will be (a jammed connection must not keep what nobody awaits).
    link?.withdraw(call.id);
    call.reject(new TimeoutError(`Cannot call "${call.method}": no response within ${timeout} ms`));
  }

  #abort(call: Call): void {
    const link = call.link;
    this.#drop(call);
    call.reject(call.signal!.reason);
    if (link && !link.lost) link.cancel(call.id);
  }

  /** Forgets a call: its timer, its abort listener, its entries. */
  #drop(call: Call): void {
    // Only a call without a connection can be waiting for one.
    if (call.link === undefined) this.#waiting.delete(call);
    else this.#unlink(call);
    if (call.timer !== undefined) clearTimeout(call.timer);
    if (call.onAbort) call.signal?.removeEventListener("abort", call.onAbort);
  }

  /** Takes a call off the connection it went out on (closing a retired one it leaves empty). */
  #unlink(call: Call): void {
    const link = call.link;
    this.#inFlight.delete(call.id);
    if (link === undefined) return;
    call.link = undefined;
    if (this.#retired.size === 0) return;
    const left = this.#retired.get(link);
    if (left === undefined) return;
    if (left > 1) this.#retired.set(link, left - 1);
    else this.#closeRetired(link);
  }

  /** The calls in flight on `link`, in the order they went out. */
  #callsOn(link: Link): Call[] {
    const calls: Call[] = [];
    for (const call of this.#inFlight.values()) if (call.link === link) calls.push(call);
    return calls;
  }

  /** Closes a retired connection: no call waits for an answer on it any more. */
  #closeRetired(link: Link): void {
    this.#retired.delete(link);
    link.close(
      new ConnectionError(
        `Cannot complete call: connection to "${link.target}" was closed after rpc.goaway`,
      ),
    );
  }
}

/** Gives `call` its client span, a child of the caller's context, ended when the call settles. */
function traceCall(call: Call): void {
  call.span = startClientSpan(call.method, call.id);
  const { resolve, reject } = settling(call.span, call.resolve, call.reject);
  call.resolve = resolve;
  call.reject = reject;
}

/** A listener of notifications. */
export type Listener = (...params: unknown[]) => void;

/**
 * The most by-position params a notification may have to reach listeners: far more than any
 * listener's parameter list, far fewer than the ~100 000 arguments that overflow V8's stack when
 * spread into a call. A hostile server's longer list goes to the error report instead.
 */
export const MAX_NOTIFICATION_PARAMS = 1024;

/** The listeners of a client, by notification method. */
export class Listeners {
  #byMethod = new Map<string, Set<Listener>>();
  #onError: (error: unknown, method: string) => void;

  /**
   * @param onError Gets what a listener threw, and notifications no listener can take; by
   * default they are logged with `console.error`.
   */
  constructor(onError: ((error: unknown, method: string) => void) | undefined) {
    this.#onError = onError ?? logListenerError;
  }

  /** Adds `listener` for `method`; returns a function that removes it. */
  on(method: string, listener: Listener): () => void {
    let set = this.#byMethod.get(method);
    if (set === undefined) this.#byMethod.set(method, set = new Set());
    const listeners = set;
    listeners.add(listener);
    return () => {
      listeners.delete(listener);
      if (listeners.size === 0 && this.#byMethod.get(method) === listeners) {
        this.#byMethod.delete(method);
      }
    };
  }

  /**
   * Calls the listeners of `method` with `params` as received (an array is spread, anything else
   * is one param). Never throws: errors go to `onError`, never to a microtask that would rethrow.
   */
  deliver(method: string, params: unknown): void {
    const listeners = this.#byMethod.get(method);
    if (listeners === undefined) return;
    let args: unknown[];
    if (Array.isArray(params)) {
      if (params.length > MAX_NOTIFICATION_PARAMS) {
        return this.#report(
          new RangeError(
            `Cannot deliver notification "${method}": ${params.length} params exceed the limit of ${MAX_NOTIFICATION_PARAMS}`,
          ),
          method,
        );
      }
      args = params;
    } else {
      args = params === undefined ? [] : [params];
    }
    for (const listener of [...listeners]) {
      try {
        const returned: unknown = listener(...args);
        if (returned instanceof Promise) {
          returned.catch((error: unknown) => this.#report(error, method));
        }
      } catch (error) {
        // A listener's bug must not break the connection, nor the process.
        this.#report(error, method);
      }
    }
  }

  #report(error: unknown, method: string): void {
    try {
      this.#onError(error, method);
    } catch {
      // The report's own failure has nowhere else to go.
    }
  }
}

/** Where listener errors go without `onListenerError`. */
function logListenerError(error: unknown, method: string): void {
  console.error(`A listener of notification "${method}" threw:`, error);
}
