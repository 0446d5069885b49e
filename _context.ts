// Where the current call's context lives. Private: handlers read it through context.ts.

import { AsyncLocalStorage } from "node:async_hooks";
import type { CertificateIdentity } from "./_x509_identity.ts";

/** What a handler can learn about the call it is serving. */
export interface CallContext {
  /** The address of the client that made the call. */
  readonly peer: { readonly hostname: string; readonly port: number };
  /**
   * Who the client proved to be: what its token stands for when it presented one, else its
   * certificate's identity (mutual TLS), else `undefined`.
   */
  readonly identity: unknown;
  /**
   * The verified client certificate's identity (mutual TLS), whether or not a token was also
   * presented; `undefined` without one.
   */
  readonly certificate: CertificateIdentity | undefined;
  /** The request's id; `undefined` for a notification, which gets no response. */
  readonly id: string | number | null | undefined;
  /** The method's name as called, dotted for namespaces. */
  readonly method: string;
  /**
   * Aborts when the caller cancels the call, its deadline passes, the connection drops or the
   * server stops waiting for it; its `reason` says which. A result produced after that is dropped.
   */
  readonly signal: AbortSignal;
  /** When the caller stops waiting, in `Date.now()` milliseconds, or `undefined` for no deadline. */
  readonly deadline: number | undefined;
  /**
   * Sends a notification to the client that made this call, on its connection: progress reports
   * or events. Does nothing once that connection has closed.
   *
   * @param method The notification's method name, which the client subscribes to.
   * @param params The params.
   */
  notify(method: string, ...params: unknown[]): void;
}

/**
 * Where the context of a call comes from: the call itself, or (for a plain handler, which most
 * often never asks) something that makes it the first time it is read.
 */
export interface ContextSource {
  /** The context; made on first use, then the same object every time. */
  readonly context: CallContext;
}

/** The context of `async` handlers, across every `await`. */
const storage = new AsyncLocalStorage<CallContext>();

/** Where the context of the plain (not `async`) handler running now comes from, if any. */
let current: ContextSource | undefined;

/** The context of the call being served, or `undefined` outside a handler. */
export function currentContext(): CallContext | undefined {
  return current !== undefined ? current.context : storage.getStore();
}

/**
 * Runs `fn` with `thisArg` and `args` as the call of `source`: through AsyncLocalStorage when
 * `keep` (an `async` handler, which awaits; the context is made at once), else by setting the
 * current source while it runs, so that the context is made only if the handler asks for it.
 * Used by the dispatcher.
 */
export function runInContext(
  source: ContextSource,
  fn: (...args: unknown[]) => unknown,
  thisArg: unknown,
  args: unknown[],
  keep: boolean,
): unknown {
  if (keep) return storage.run(source.context, Reflect.apply, fn, thisArg, args);
  const previous = current;
  current = source;
  try {
    return Reflect.apply(fn, thisArg, args);
  } finally {
    current = previous;
  }
}
