// Opening the client's byte stream to one endpoint: TLS by default, or any dialer the application
// gives, always under the connect timeout and the caller's signal. What comes back is the client's
// side of the transport seam: a byte source and sink that can be closed. Also the endpoints
// themselves: their order, and the names messages give them.

import { closeQuietly, formatAddr, reason } from "./_util.ts";
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

/** Where a server listens: one of {@linkcode ConnectOptions.endpoints}. */
export interface Endpoint {
  /**
   * The server's host name or IP address. It is also the TLS server name: the server's
   * certificate must name it.
   */
  readonly hostname: string;
  /** The server's port. */
  readonly port: number;
}

/**
 * Opens a connection to `endpoint`. The signal aborts when the client stops waiting (connect
 * timeout, the caller's signal, `close()`): the dialer should then give up and close whatever it
 * opened. A connection it resolves with after that is closed by the client.
 */
export type Dialer = (signal: AbortSignal, endpoint: Endpoint) => Promise<ClientConnection>;

/** How the default dialer verifies servers and presents itself; the same for every endpoint. */
export interface TlsDialOptions {
  /** CA certificates (PEM) besides the system's root store. */
  caCerts?: string[] | undefined;
  /** A client certificate chain (PEM), with `key`, for mutual TLS. */
  cert?: string | undefined;
  key?: string | undefined;
}

/**
 * The default dialer: TCP to the endpoint, then TLS verified against `caCerts`, with the
 * endpoint's hostname as the server name.
 */
export function tlsDialer(options: TlsDialOptions): Dialer {
  const { cert, key } = options;
  const caCerts = options.caCerts && { caCerts: options.caCerts };
  return async function dialTls(
    signal: AbortSignal,
    endpoint: Endpoint,
  ): Promise<ClientConnection> {
    signal.throwIfAborted();
    const { hostname, port } = endpoint;
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
 * Runs `dialer` on `endpoint` for at most `timeout` ms or until `signal` aborts, whichever comes
 * first.
 *
 * @throws {TimeoutError} When the connection is not open within `timeout`.
 * @throws {ConnectionError} When the dialer fails, naming the endpoint, with its error as `cause`.
 * @throws The signal's reason when it aborts.
 */
export async function dial(
  dialer: Dialer,
  endpoint: Endpoint,
  timeout: number,
  signal: AbortSignal | undefined,
): Promise<ClientConnection> {
  signal?.throwIfAborted();
  const target = formatAddr(endpoint);
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
    opening = Promise.resolve().then(() => dialer(controller.signal, endpoint));
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

/**
 * The endpoints of `options`: `endpoints`, or the one of `hostname` and `port` (each defaulted),
 * copied, so that the caller's list can change afterwards.
 *
 * @throws {TypeError} When both are given, or `endpoints` is empty or not an array.
 */
export function endpointsOf(options: {
  readonly endpoints?: readonly Endpoint[] | undefined;
  readonly hostname?: string | undefined;
  readonly port?: number | undefined;
}, defaults: Endpoint): Endpoint[] {
  const { endpoints, hostname, port } = options;
  if (endpoints === undefined) {
    return [{ hostname: hostname ?? defaults.hostname, port: port ?? defaults.port }];
  }
  if (hostname !== undefined || port !== undefined) {
    throw new TypeError("Cannot connect: give either endpoints or hostname and port, not both");
  }
  if (!Array.isArray(endpoints) || endpoints.length === 0) {
    throw new TypeError("Cannot connect: endpoints must be a list of one or more endpoints");
  }
  return endpoints.map(({ hostname, port }) => ({ hostname, port }));
}

/**
 * A client's endpoints in the order it uses them: shuffled once (Fisher–Yates with
 * `Math.random`), so that clients spread out, then each in turn, round and round.
 */
export class EndpointRing {
  /** The endpoints as messages name them: `"a:1"`, or `"a:1", "b:2"`. */
  readonly names: string;
  /** How many there are. */
  readonly size: number;
  #order: Endpoint[];
  #next = 0;

  constructor(endpoints: readonly Endpoint[]) {
    this.names = endpoints.map((endpoint) => `"${formatAddr(endpoint)}"`).join(", ");
    this.size = endpoints.length;
    const order = this.#order = [...endpoints];
    for (let i = order.length - 1; i > 0; i--) {
      const j = Math.floor(Math.random() * (i + 1));
      [order[i], order[j]] = [order[j]!, order[i]!];
    }
  }

  /** The endpoint of the next connection attempt. */
  take(): Endpoint {
    return this.#order[this.#next++ % this.#order.length]!;
  }
}

/** Resolves after `ms`, or at once when `signal` aborts: the wait between reconnection attempts. */
export function pause(ms: number, signal: AbortSignal): Promise<void> {
  if (signal.aborted) return Promise.resolve();
  return new Promise((resolve) => {
    const timer = setTimeout(done, ms);
    signal.addEventListener("abort", done, { once: true });
    function done() {
      clearTimeout(timer);
      signal.removeEventListener("abort", done);
      resolve();
    }
  });
}

/**
 * The error of a first connection that failed on every one of several endpoints, naming each
 * with what went wrong there; `cause` is an `AggregateError` of the endpoints' errors.
 */
export function noEndpointError(
  failures: readonly { endpoint: Endpoint; error: unknown }[],
): ConnectionError {
  const parts = failures.map(({ endpoint, error }) => {
    const target = formatAddr(endpoint);
    // "Cannot connect to "a:1": refused" reads as "a:1": refused in the list.
    const prefix = `Cannot connect to "${target}": `;
    const text = reason(error);
    return `"${target}": ${text.startsWith(prefix) ? text.slice(prefix.length) : text}`;
  });
  return new ConnectionError(
    `Cannot connect to any of ${failures.length} endpoints: ${parts.join(", ")}`,
    { cause: new AggregateError(failures.map(({ error }) => error)) },
  );
}
