// One call being served (its context, deadline and abort) and the connection it came on, as the
// dispatcher sees them.

import type { CallContext, ContextSource } from "./_context.ts";
import { Codec, type Id } from "./_codec.ts";
import { TimeoutError } from "./errors.ts";
import type { CertificateIdentity } from "./_x509_identity.ts";

/** The connection a message came on, as the dispatcher sees it. */
export interface Session {
  /** False while the server shuts down: requests are answered with ShuttingDown. */
  readonly accepting: boolean;
  /** The peer's address. */
  readonly peer: { readonly hostname: string; readonly port: number };
  /** The verified client certificate's identity (mutual TLS), if any. */
  readonly certificate: CertificateIdentity | undefined;
  /** What an accepted token stands for, if any. */
  tokenIdentity: unknown;
  /** Whether the peer may call methods: true from the start unless the server wants a token. */
  authenticated: boolean;
  /** `rpc.auth` requests checked so far: every guess counts, right or wrong. */
  authAttempts: number;
  /** Set by `closeSoon`: nothing more is dispatched. */
  readonly closing: boolean;
  /** Closes the connection once the reply to the current message has been written. */
  closeSoon(why: string): void;
  /** The connection's codec; `rpc.hello` turns its rich values on. */
  readonly codec: Codec;
  /** The calls in flight on this connection, by the JSON text of their id, for `rpc.cancel`. */
  readonly calls: Map<string, Call>;
  /** Handler calls (notifications included) and checks that have not settled yet. */
  readonly inFlight: number;
  /** A call (or an asynchronous check) began: it counts in `inFlight` until `settled()`. */
  began(): void;
  /** A call that counted in `inFlight` settled. */
  settled(): void;
  /** A limit refused something of this connection's (for metrics). */
  refused(limit: string): void;
  /**
   * With metrics, when the frames being dispatched were read (`performance.now()`): the start of
   * every call they hold, so that the clock is read once a read rather than once a call. Absent
   * where there is no such read (each call then reads the clock).
   */
  readonly receivedAt?: number | undefined;
  /**
   * With metrics, counts a call answered at once (its handler returned no promise), to be timed
   * with the others of its read when the connection has dispatched them: one clock read for them
   * all. Absent where there is no such read (the call is then timed alone).
   */
  answeredAtOnce?(method: string, code: number): void;
  /** Sends a notification to the peer. */
  notify(method: string, params: unknown[]): void;
}

/** A session for messages that come on no connection (tests, other transports). */
export function detachedSession(accepting = true): Session {
  return {
    accepting,
    peer: { hostname: "", port: 0 },
    certificate: undefined,
    tokenIdentity: undefined,
    authenticated: true,
    authAttempts: 0,
    closing: false,
    closeSoon() {},
    codec: new Codec(),
    calls: new Map(),
    inFlight: 0,
    began() {},
    settled() {},
    refused() {},
    notify() {},
  };
}

/** The longest deadline honoured, in ms: what setTimeout can wait (about 24.8 days). */
export const MAX_TIMEOUT = 2 ** 31 - 1;

/**
 * A call of a plain handler whose {@linkcode Call} is made only when needed: when the handler reads
 * its context, or returns a promise (then the call runs on: it can be cancelled, and pass its
 * deadline). A handler that returns at once without asking costs no Call. One is reused for every
 * call of a dispatcher: plain handlers run one at a time.
 */
export class LazyCall implements ContextSource {
  /** The connection of the call, set while it runs. */
  session: Session | undefined;
  id: Id | undefined;
  method = "";
  deadline: number | undefined;
  /** The call, once made. */
  call: Call | undefined;

  /** Makes the call on first use. */
  get context(): Call {
    return this.call ??= new Call(this.session!, this.id, this.method, this.deadline);
  }
}

/** One call being served: its context, and the abort that cancellation, deadline or close fire. */
export class Call implements CallContext, ContextSource {
  readonly peer: { readonly hostname: string; readonly port: number };
  readonly identity: unknown;
  readonly certificate: CertificateIdentity | undefined;
  readonly id: string | number | null | undefined;
  readonly method: string;
  readonly deadline: number | undefined;
  #session: Session;
  #controller: AbortController | undefined;
  #reason: unknown;
  #timer: ReturnType<typeof setTimeout> | undefined;

  /** `deadline`: when the caller stops waiting (`Date.now()` milliseconds), if it said. */
  constructor(session: Session, id: Id | undefined, method: string, deadline: number | undefined) {
    this.#session = session;
    this.peer = session.peer;
    this.identity = session.tokenIdentity ?? session.certificate;
    this.certificate = session.certificate;
    this.id = id;
    this.method = method;
    this.deadline = deadline;
  }

  /** The call is its own context. */
  get context(): CallContext {
    return this;
  }

  /** Created on first use: most handlers never look, and an AbortController is not free. */
  get signal(): AbortSignal {
    if (this.#controller === undefined) {
      this.#controller = new AbortController();
      if (this.#reason !== undefined) this.#controller.abort(this.#reason);
    }
    return this.#controller.signal;
  }

  /** Whether the call was aborted, so that its result is to be dropped. */
  get aborted(): boolean {
    return this.#reason !== undefined;
  }

  notify(method: string, ...params: unknown[]): void {
    this.#session.notify(method, params);
  }

  /** Aborts the handler's signal with `reason`; the first reason wins. */
  abort(reason: unknown): void {
    if (this.#reason !== undefined) return;
    this.#reason = reason;
    this.#controller?.abort(reason);
    clearTimeout(this.#timer);
  }

  /** Aborts the call with a TimeoutError once its deadline passes. */
  startDeadline(timeout: number): void {
    this.#timer = setTimeout(() => {
      this.abort(
        new TimeoutError(`Cannot finish "${this.method}": its deadline of ${timeout} ms passed`),
      );
    }, timeout);
  }

  /** The handler settled: no timer may outlive it. */
  settle(): void {
    clearTimeout(this.#timer);
  }
}
