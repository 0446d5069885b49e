// Which runtime the library runs on. The library runs on Deno, Node.js (23 and later: type
// stripping) and Bun with web standards and `node:` built-ins; `Deno.*` is used only through
// `deno` below, behind a check, for the few things Deno does better or alone (the "deno"
// transport, its dialer, its permission queries). Looked up, never referenced: a bare `Deno` is a
// ReferenceError elsewhere, at import time when it sits at the top level of a module.

/** Deno's namespace on Deno; `undefined` on Node.js and Bun. */
export const deno: typeof Deno | undefined = (globalThis as { Deno?: typeof Deno }).Deno;

/** The runtime's name, for messages. */
export const runtimeName: "Deno" | "Bun" | "Node.js" = deno !== undefined
  ? "Deno"
  : "Bun" in globalThis
  ? "Bun"
  : "Node.js";

/**
 * Deno's namespace, for a feature that needs it.
 *
 * @param action What cannot be done elsewhere, for the message: `"serve"`.
 * @param feature The option or API that needs Deno: `'the "deno" transport'`.
 * @throws {TypeError} On Node.js and Bun: `Cannot serve: the "deno" transport needs Deno (this is Node.js)`.
 */
export function requireDeno(action: string, feature: string): typeof Deno {
  if (deno === undefined) {
    throw new TypeError(`Cannot ${action}: ${feature} needs Deno (this is ${runtimeName})`);
  }
  return deno;
}

/**
 * Lets the process exit while `timer` is pending: `Deno.unrefTimer` on Deno, the timer's own
 * `unref()` on Node.js and Bun, whose timers are objects.
 */
export function unrefTimer(timer: ReturnType<typeof setTimeout>): void {
  if (deno !== undefined) {
    deno.unrefTimer(timer as unknown as number);
    return;
  }
  (timer as unknown as { unref?: () => void }).unref?.();
}
