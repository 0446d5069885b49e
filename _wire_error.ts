// What a thrown value becomes on the wire: the code, message and data of an error response
// (describeError), with a runtime error's message hidden unless the server exposes stacks, and the
// never-throwing readers of a thrown value's message and name that the dispatcher also uses.

import { ErrorCode, RpcError } from "./errors.ts";

/** The lowest and highest codes JSON-RPC 2.0 reserves for itself. */
const RESERVED_CODES = { min: -32768, max: -32000 } as const;

/** The message that replaces a runtime error's own on the wire (it may name paths or hosts). */
export const HIDDEN_MESSAGE = "Internal server error";

/**
 * Maps a thrown value to the error member of a response: an {@linkcode RpcError} keeps its code
 * and data; another error keeps an integer `code` of its own outside the reserved range, else
 * gets -32000, and its data is `{ name }`. An error of the runtime rather than of the handler's own
 * making (a failed file or network operation: `Deno.errors.*`, Node system errors) gets a generic
 * message unless `exposeStack` is on, as it may tell the client the server's paths. Never throws,
 * whatever was thrown.
 */
export function describeError(
  error: unknown,
  exposeStack: boolean,
): { code: number; message: string; data: unknown } {
  try {
    if (!(error instanceof Error)) {
      return {
        code: ErrorCode.ServerError,
        message: safeMessage(error),
        data: { name: "Error" },
      };
    }
    const stack = exposeStack && typeof error.stack === "string" ? { stack: error.stack } : {};
    if (error instanceof RpcError && Number.isInteger(error.code)) {
      const data = error.data === undefined ? { name: error.name, ...stack } : error.data;
      return { code: error.code, message: safeMessage(error), data };
    }
    const name = safeName(error);
    if (!exposeStack && isRuntimeError(error)) {
      return { code: ErrorCode.ServerError, message: HIDDEN_MESSAGE, data: { name } };
    }
    const own = (error as { code?: unknown }).code;
    const code = typeof own === "number" && Number.isInteger(own) &&
        (own < RESERVED_CODES.min || own > RESERVED_CODES.max)
      ? own
      : ErrorCode.ServerError;
    return { code, message: safeMessage(error), data: { name, ...stack } };
  } catch {
    return { code: ErrorCode.ServerError, message: HIDDEN_MESSAGE, data: undefined };
  }
}

/** Whether `error` comes from the runtime (a system call), not from the handler's own code. */
function isRuntimeError(error: Error): boolean {
  const errors = (globalThis as { Deno?: { errors?: Record<string, unknown> } }).Deno?.errors;
  if (errors !== undefined) {
    for (const name in errors) {
      const type = errors[name];
      if (typeof type === "function" && error instanceof type) return true;
    }
  }
  // Node's system errors (node:fs, node:net) carry the failed call and its errno.
  const fields = error as { syscall?: unknown; errno?: unknown };
  return typeof fields.syscall === "string" || typeof fields.errno === "number";
}

/** The message of `error` as text; never throws, whatever `error` is. */
export function safeMessage(error: unknown): string {
  try {
    if (error instanceof Error) return String(error.message);
    return String(error);
  } catch {
    return "a value that cannot be described was thrown";
  }
}

/** The name of `error` when it is an `Error` with a string name, else "Error"; never throws. */
export function safeName(error: unknown): string {
  try {
    return error instanceof Error && typeof error.name === "string" ? error.name : "Error";
  } catch {
    return "Error";
  }
}
