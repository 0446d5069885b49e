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

import { type CallContext, currentContext } from "./_context.ts";

export type { CallContext } from "./_context.ts";

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

/**
 * The context of the call being served, for code that only runs inside a handler: typed without
 * `undefined`, so no `!` or `?.` is needed.
 *
 * @example Read the caller's address
 * ```ts
 * import { requireCallContext } from "./context.ts";
 *
 * function whoCalled(): string {
 *   const { peer } = requireCallContext();
 *   return `${peer.hostname}:${peer.port}`;
 * }
 * try {
 *   whoCalled();
 * } catch (error) {
 *   console.log((error as Error).message); // Cannot read the call context: not inside a handler
 * }
 * ```
 *
 * @returns The current call's context.
 * @throws {TypeError} When called outside a handler (or after an `await` in a handler that is not
 * an `async` function).
 */
export function requireCallContext(): CallContext {
  const context = currentContext();
  if (context === undefined) {
    throw new TypeError("Cannot read the call context: not inside a handler");
  }
  return context;
}
