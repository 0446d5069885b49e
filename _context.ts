// Where the current call's context lives. Private: handlers read it through context.ts.

import { AsyncLocalStorage } from "node:async_hooks";
import type { CallContext } from "./context.ts";

/** The context of `async` handlers, across every `await`. */
const storage = new AsyncLocalStorage<CallContext>();

/** The context of the plain (not `async`) handler running now, if any. */
let current: CallContext | undefined;

/** The context of the call being served, or `undefined` outside a handler. */
export function currentContext(): CallContext | undefined {
  return current ?? storage.getStore();
}

/**
 * Runs `fn` with `thisArg` and `args` as the call of `context`: through AsyncLocalStorage when
 * `keep` (an `async` handler, which awaits), else by setting the current context while it runs.
 * Used by the dispatcher.
 */
export function runInContext(
  context: CallContext,
  fn: (...args: unknown[]) => unknown,
  thisArg: unknown,
  args: unknown[],
  keep: boolean,
): unknown {
  if (keep) return storage.run(context, Reflect.apply, fn, thisArg, args);
  const previous = current;
  current = context;
  try {
    return Reflect.apply(fn, thisArg, args);
  } finally {
    current = previous;
  }
}
