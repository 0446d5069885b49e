// Opening the client's byte stream: TLS by default, or any dialer the application gives, always
// under the connect timeout and the caller's signal. What comes back is the client's side of the
// transport seam: a byte source and sink that can be closed.

import { closeQuietly, reason } from "./_util.ts";
import { ConnectionError, TimeoutError } from "./errors.ts";

/**
 * A connection the client can speak over: a byte stream in both directions, opened and ready (for
 * TLS, handshake done). The part of the transport seam's `Connection` (_transport.ts) a client
 * needs, so that a `Deno.TlsConn`, any transport's `Connection` and a bare tunnel stream all fit.
 */
export interface ClientConnection {
  /**
   * Reads into `buffer`, resolving with the number of bytes read, or `null` once the peer has
   * closed its side or `close()` was called. Rejects when the stream fails.
   */
  read(buffer: Uint8Array): Promise<number | null>;
  /**
   * Writes some of `bytes`, resolving with how many were written; the caller may reuse `bytes`
   * afterwards. Rejects when the stream fails or is closed. A peer that reads nothing may leave it
   * pending for ever: the client's `writeTimeout` covers that.
   */
  write(bytes: Uint8Array): Promise<number>;
  /** Closes the connection at once; never throws. Reads then end (`null` or a rejection). */
  close(): void;
}

/**
 * Opens a connection. The signal aborts when the client stops waiting (connect timeout, the
 * caller's signal, `close()`): the dialer should then give up and close whatever it opened. A
 * connection it resolves with after that is closed by the client.
 */
export type Dialer = (signal: AbortSignal) => Promise<ClientConnection>;

/** Where and how the default dialer connects. */
export interface TlsDialOptions {
  hostname: string;
  port: number;
  /** CA certificates (PEM) besides the system's root store. */
  caCerts?: string[] | undefined;
  /** A client certificate chain (PEM), with `key`, for mutual TLS. */
  cert?: string | undefined;
  key?: string | undefined;
}

/** The default dialer: TCP to `hostname:port`, then TLS verified against `caCerts`. */
export function tlsDialer(options: TlsDialOptions): Dialer {
  const { hostname, port, cert, key } = options;
  const caCerts = options.caCerts && { caCerts: options.caCerts };
  return async function dialTls(signal: AbortSignal): Promise<ClientConnection> {
    signal.throwIfAborted();
    if (cert !== undefined && key !== undefined) {
      // Deno.startTls takes no client certificate, so this path keeps Nagle's algorithm on.
      return await handshaken(
        await Deno.connectTls({ hostname, port, ...caCerts, cert, key }),
        signal,
      );
    }
    // TCP first, to turn Nagle's algorithm off (Deno.connectTls cannot): otherwise a small write
    // can wait for a delayed ACK, 40 ms on Linux, in the handshake and in every call.
    const tcp = await Deno.connect({ hostname, port });
    if (signal.aborted) {
      closeQuietly(tcp);
      throw signal.reason;
    }
    tcp.setNoDelay(true);
    return await handshaken(await Deno.startTls(tcp, { hostname, ...caCerts }), signal);
  };
}

/** `conn` once its handshake is done; closed if `signal` aborts first or the handshake fails. */
async function handshaken(conn: Deno.TlsConn, signal: AbortSignal): Promise<Deno.TlsConn> {
  // A connection that opens after the client gave up must not leak.
  const onAbort = () => closeQuietly(conn);
  if (signal.aborted) onAbort();
  signal.addEventListener("abort", onAbort, { once: true });
  try {
    await conn.handshake();
  } catch (error) {
    closeQuietly(conn);
    throw error;
  } finally {
    signal.removeEventListener("abort", onAbort);
  }
  if (signal.aborted) {
    closeQuietly(conn);
    throw signal.reason;
  }
  return conn;
}

/**
 * Runs `dialer` for at most `timeout` ms or until `signal` aborts, whichever comes first.
 *
 * @throws {TimeoutError} When the connection is not open within `timeout`.
 * @throws {ConnectionError} When the dialer fails, naming `target`, with its error as `cause`.
 * @throws The signal's reason when it aborts.
 */
export async function dial(
  dialer: Dialer,
  target: string,
  timeout: number,
  signal: AbortSignal | undefined,
): Promise<ClientConnection> {
  signal?.throwIfAborted();
  const controller = new AbortController();
  const stopped = Promise.withResolvers<never>();
  const stop = (why: unknown) => {
    controller.abort(why);
    stopped.reject(why);
  };
  // A timer of our own rather than AbortSignal.timeout: it is cleared the moment the dial ends,
  // so no timer outlives a connect (test sanitizers, short-lived scripts).
  const timer = setTimeout(
    () =>
      stop(new TimeoutError(`Cannot connect to "${target}": no connection within ${timeout} ms`)),
    timeout,
  );
  const onAbort = () => stop(signal?.reason);
  signal?.addEventListener("abort", onAbort, { once: true });
  let opening: Promise<ClientConnection> | undefined;
  try {
    opening = Promise.resolve().then(() => dialer(controller.signal));
    const conn = await Promise.race([opening, stopped.promise]);
    if (controller.signal.aborted) {
      closeQuietly(conn);
      throw controller.signal.reason;
    }
    return conn;
  } catch (error) {
    // A dialer that ignores its signal may still open a connection: close it when it does.
    opening?.then(closeQuietly, () => {});
    if (error instanceof TimeoutError || (signal?.aborted && error === signal.reason)) throw error;
    throw new ConnectionError(`Cannot connect to "${target}": ${reason(error)}`, { cause: error });
  } finally {
    clearTimeout(timer);
    signal?.removeEventListener("abort", onAbort);
    stopped.promise.catch(() => {});
  }
}
