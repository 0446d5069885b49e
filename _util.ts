// Small helpers shared by the server, the client and the CLI.

/** `host:port`, with brackets around an IPv6 host. */
export function formatAddr(addr: { hostname: string; port: number }): string {
  return addr.hostname.includes(":")
    ? `[${addr.hostname}]:${addr.port}`
    : `${addr.hostname}:${addr.port}`;
}

/** The message of an error, or the thrown value as text. */
export function reason(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}

/** Closes a connection or listener that may be closed already. */
export function closeQuietly(closer: { close(): void }): void {
  try {
    closer.close();
  } catch {
    // Already closed.
  }
}

/** The `code` of an error (node's, Deno's), when it has one that is text. */
export function errorCode(error: unknown): string | undefined {
  if (typeof error !== "object" || error === null) return undefined;
  const code = (error as { code?: unknown }).code;
  return typeof code === "string" ? code : undefined;
}

/**
 * The message of an error of a TLS stack, for a log line or a quote: OpenSSL's error queue (the
 * message of node:tls's errors on Node.js and Bun), whose file names and line numbers help no one
 * and which ends in a newline, gives way to the error's code; any other message stays.
 */
export function tlsReason(error: unknown): string {
  const message = reason(error).trim();
  const code = errorCode(error);
  return code !== undefined && /(^|:)error:[0-9A-Fa-f]+:/.test(message) ? code : message;
}

/**
 * Error codes that only say that the peer went away, or that this side closed the connection
 * first: node's socket errors (`ECANCELED` is a write cut short by this side's `destroy()`) and the
 * ones the transports give for a closed connection.
 */
const DISCONNECT_CODES: ReadonlySet<string> = new Set([
  "ECONNRESET",
  "EPIPE",
  "ECONNABORTED",
  "ECANCELED",
  "ENOTCONN",
  "ERR_STREAM_DESTROYED",
  "ERR_STREAM_WRITE_AFTER_END",
  "ERR_STREAM_PREMATURE_CLOSE",
  "ERR_SOCKET_CLOSED",
]);

/**
 * Whether a read or write error only says that the peer went away: by its `code` (node's errors,
 * {@linkcode disconnectError}), or by its class among Deno's errors where there is a `Deno`.
 */
export function isDisconnect(error: unknown): boolean {
  if (typeof error !== "object" || error === null) return false;
  const code = errorCode(error);
  if (code !== undefined && DISCONNECT_CODES.has(code)) return true;
  // Looked up, not referenced: this module also runs where there is no Deno.
  const errors = (globalThis as { Deno?: { errors?: typeof Deno.errors } }).Deno?.errors;
  return errors !== undefined && (
    error instanceof errors.ConnectionReset ||
    error instanceof errors.ConnectionAborted ||
    error instanceof errors.BrokenPipe ||
    error instanceof errors.NotConnected ||
    error instanceof errors.BadResource ||
    error instanceof errors.Interrupted ||
    error instanceof errors.UnexpectedEof
  );
}

/**
 * The error a connection's `write` rejects with once the peer is gone or this side closed it:
 * an `Error` with code `"EPIPE"`, which {@linkcode isDisconnect} recognises.
 */
export function disconnectError(message: string, cause?: unknown): Error & { code: string } {
  return Object.assign(
    new Error(message, cause === undefined ? undefined : { cause }),
    { code: "EPIPE" },
  );
}
