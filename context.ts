/**
 * The context of the call a handler is serving: who called, which call it is, and an
 * `AbortSignal` that aborts when the caller cancels, the call's deadline passes or the connection
 * drops. Handlers stay plain functions: {@linkcode callContext} finds the context, in an `async`
 * handler across every `await` (through `AsyncLocalStorage`). A handler that is not an `async`
 * function gets it while it runs; if it returns a promise, it reads the context before returning
 * (`AsyncLocalStorage` costs about 0.4 µs a call, which plain functions are spared).
 *
 * @example Stop work the caller no longer wants
 * ```ts
 * import { callContext } from "./context.ts";
 *
 * export async function slowSum(values: number[]): Promise<number> {
 *   const signal = callContext()?.signal;
 *   let sum = 0;
 *   for (const value of values) {
 *     signal?.throwIfAborted(); // the caller cancelled, timed out or left
 *     sum += value;
 *     await new Promise((resolve) => setTimeout(resolve, 1));
 *   }
 *   return sum;
 * }
 * console.log(callContext()); // undefined: not inside a call
 * ```
 *
 * @module
 */

import { currentContext } from "./_context.ts";

/** What a handler can learn about the call it is serving. */
export interface CallContext {
  /** The address of the client that made the call. */
  readonly peer: { readonly hostname: string; readonly port: number };
  /** Who the client proved to be (token or certificate), or `undefined` when unauthenticated. */
  readonly identity: unknown;
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
 * The context of the call being served, or `undefined` outside a handler.
 *
 * @example Log who called
 * ```ts
 * import { callContext } from "./context.ts";
 *
 * function whoAmI(): string {
 *   const context = callContext();
 *   return context ? `${context.peer.hostname}:${context.peer.port}` : "not in a call";
 * }
 * console.log(whoAmI()); // "not in a call"
 * ```
 *
 * @returns The current call's context.
 */
export function callContext(): CallContext | undefined {
  return currentContext();
}
