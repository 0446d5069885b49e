/**
 * The errors that tlsrpc's client and server raise, one class per condition a caller may catch,
 * and the JSON-RPC 2.0 error codes.
 *
 * @example Tell a remote error from a lost connection
 * ```ts
 * import { ConnectionError, RpcError } from "./errors.ts";
 *
 * function describe(error: unknown): string {
 *   if (error instanceof RpcError) return `the server said ${error.code}: ${error.message}`;
 *   if (error instanceof ConnectionError) return "the connection is gone";
 *   return "something else";
 * }
 * console.log(describe(new RpcError(-32601, "Method not found")));
 * ```
 *
 * @module
 */

/** The error codes of JSON-RPC 2.0 and the server-defined ones tlsrpc uses. */
export const ErrorCode = {
  /** The frame held invalid UTF-8 or invalid JSON. */
  ParseError: -32700,
  /** The message is not a valid JSON-RPC 2.0 request, or the frame is malformed. */
  InvalidRequest: -32600,
  /** No method of that name is exposed. */
  MethodNotFound: -32601,
  /** The params do not fit the method. */
  InvalidParams: -32602,
  /** The server failed to produce a response (for example, a result JSON cannot represent). */
  InternalError: -32603,
  /** A handler threw an error without a code of its own. */
  ServerError: -32000,
  /** The server is shutting down and takes no new calls. */
  ShuttingDown: -32001,
  /** The server requires authentication (`rpc.auth`) before any call. */
  Unauthorized: -32004,
  /** The token presented with `rpc.auth` was refused. */
  AuthenticationFailed: -32005,
} as const;

/** Options for {@linkcode RpcError}. */
export interface RpcErrorOptions {
  /** Structured data about the error, sent as the JSON-RPC `data` member. */
  data?: unknown;
  /** The underlying error. */
  cause?: unknown;
}

/**
 * An error response of a JSON-RPC call. The client rejects with it when the server answers a call
 * with an error; a handler may throw it to choose the code and data of its error response.
 *
 * @example Throw a coded error from a handler
 * ```ts
 * import { RpcError } from "./errors.ts";
 *
 * function withdraw(balance: number, amount: number): number {
 *   if (amount > balance) throw new RpcError(1001, "Insufficient funds", { data: { balance } });
 *   return balance - amount;
 * }
 * ```
 */
export class RpcError extends Error {
  /** The JSON-RPC error code. */
  readonly code: number;
  /** The JSON-RPC error data, or `undefined` when the response had none. */
  readonly data: unknown;

  /**
   * Makes an error with the given JSON-RPC code and message.
   *
   * @param code The JSON-RPC error code, an integer.
   * @param message The error message.
   * @param options The error's data and cause.
   */
  constructor(code: number, message: string, options?: RpcErrorOptions) {
    super(message, options?.cause === undefined ? undefined : { cause: options.cause });
    this.name = "RpcError";
    this.code = code;
    this.data = options?.data;
  }
}

/**
 * The connection to the peer failed, closed, or could not be made; the call's outcome is unknown.
 *
 * @example Catch a lost connection
 * ```ts
 * import { ConnectionError } from "./errors.ts";
 *
 * const error = new ConnectionError('Cannot send request: connection to "localhost:7443" is closed');
 * console.log(error instanceof ConnectionError); // true
 * ```
 */
export class ConnectionError extends Error {
  /**
   * Makes a connection error.
   *
   * @param message What failed.
   * @param options The underlying error, as `cause`.
   */
  constructor(message: string, options?: ErrorOptions) {
    super(message, options);
    this.name = "ConnectionError";
  }
}

/**
 * A call or a connection attempt did not finish within its time limit.
 *
 * @example Catch a timeout
 * ```ts
 * import { TimeoutError } from "./errors.ts";
 *
 * const error = new TimeoutError('Cannot call "slow": no response within 100 ms');
 * console.log(error.name); // "TimeoutError"
 * ```
 */
export class TimeoutError extends Error {
  /**
   * Makes a timeout error.
   *
   * @param message What timed out.
   * @param options The underlying error, as `cause`.
   */
  constructor(message: string, options?: ErrorOptions) {
    super(message, options);
    this.name = "TimeoutError";
  }
}

/**
 * The caller cancelled the call: the reason a handler's `callContext().signal` aborts with when the
 * client sent `rpc.cancel` for it.
 *
 * @example Tell cancellation from a deadline in a handler
 * ```ts
 * import { CancelledError, TimeoutError } from "./errors.ts";
 *
 * function why(reason: unknown): string {
 *   if (reason instanceof CancelledError) return "the caller cancelled";
 *   if (reason instanceof TimeoutError) return "the deadline passed";
 *   return "the connection dropped";
 * }
 * console.log(why(new CancelledError("Cannot finish \"x\": the caller cancelled it")));
 * ```
 */
export class CancelledError extends Error {
  /**
   * Makes a cancellation error.
   *
   * @param message What was cancelled.
   * @param options The underlying error, as `cause`.
   */
  constructor(message: string, options?: ErrorOptions) {
    super(message, options);
    this.name = "CancelledError";
  }
}

/**
 * The peer broke the framing or the protocol: an empty or oversized frame, or a frame cut short.
 * The connection it came on cannot be used any more.
 *
 * @example Catch a protocol error from a frame reader
 * ```ts
 * import { ProtocolError } from "./errors.ts";
 *
 * const error = new ProtocolError("Cannot read frame: length 0 is not allowed");
 * console.log(error instanceof ProtocolError); // true
 * ```
 */
export class ProtocolError extends Error {
  /**
   * Makes a protocol error.
   *
   * @param message What the peer did wrong.
   * @param options The underlying error, as `cause`.
   */
  constructor(message: string, options?: ErrorOptions) {
    super(message, options);
    this.name = "ProtocolError";
  }
}
