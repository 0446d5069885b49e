// Opening the client's byte stream to one endpoint: TLS by default, or any dialer the application
// gives, always under the connect timeout and the caller's signal. What comes back is the client's
// side of the transport seam: a byte source and sink that can be closed. Also the endpoints
// themselves: their order, and the names messages give them.

import { once } from "./_once.ts";
import { deno } from "./_runtime.ts";
import {
  closeQuietly,
  disconnectError,
  errorCode,
  formatAddr,
  isDisconnect,
  reason,
  tlsReason,
} from "./_util.ts";
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
  /**
   * Called after each handshake with what it settled (`call --verbose`). Given, the dialer uses
   * node:tls on Deno too: Deno.TlsConn tells a client neither the server's certificate nor the
   * TLS version.
   */
  onHandshake?: ((handshake: TlsHandshake) => void) | undefined;
}

/** What a TLS handshake of the default dialer settled, for {@linkcode TlsDialOptions.onHandshake}. */
export interface TlsHandshake {
  /** Milliseconds from the dial to the TCP connection. */
  readonly tcp: number;
  /** Milliseconds from the TCP connection to the end of the TLS handshake. */
  readonly tls: number;
  /** `TLSv1.3`, or null when unknown. */
  readonly protocol: string | null;
  /** The server's certificate, as node:tls gives it (`raw` is its DER). */
  readonly certificate: import("node:tls").PeerCertificate;
}

/**
 * The default dialer: TCP to the endpoint, then TLS verified against the system's roots and
 * `caCerts`, with the endpoint's hostname as the server name (and the name the certificate must
 * have), Nagle's algorithm off. Deno.connect and Deno.startTls on Deno; node:tls on Node.js and
 * Bun, with the same semantics. Errors of the TLS stack are worded by tlsrpc, the same on every
 * runtime (see {@linkcode describeDialError}), the stack's own text in parentheses and in `cause`.
 */
export function tlsDialer(options: TlsDialOptions): Dialer {
  const withCert = options.cert !== undefined && options.key !== undefined;
  const open = deno !== undefined && options.onHandshake === undefined
    ? denoTls(deno, options)
    : nodeTls(options);
  return async function dialTls(
    signal: AbortSignal,
    endpoint: Endpoint,
  ): Promise<ClientConnection> {
    signal.throwIfAborted();
    let conn: ClientConnection;
    try {
      conn = await open(signal, endpoint);
    } catch (error) {
      throw tlsError(error, endpoint, withCert);
    }
    return new TlsClientConnection(conn, endpoint, withCert);
  };
}

/** Opens a TLS connection with Deno's own API. */
function denoTls(deno: typeof Deno, options: TlsDialOptions): Dialer {
  const { cert, key } = options;
  const caCerts = options.caCerts && { caCerts: options.caCerts };
  return async (signal, { hostname, port }) => {
    if (cert !== undefined && key !== undefined) {
      // Deno.startTls takes no client certificate, so this path keeps Nagle's algorithm on.
      return await handshaken(
        await deno.connectTls({ hostname, port, ...caCerts, cert, key }),
        signal,
      );
    }
    // TCP first, to turn Nagle's algorithm off (Deno.connectTls cannot): otherwise a small write
    // can wait for a delayed ACK, 40 ms on Linux, in the handshake and in every call.
    const tcp = await deno.connect({ hostname, port });
    if (signal.aborted) {
      closeQuietly(tcp);
      throw signal.reason;
    }
    tcp.setNoDelay(true);
    return await handshaken(await deno.startTls(tcp, { hostname, ...caCerts }), signal);
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
 * Opens a TLS connection with node:tls, as Deno's does: node:tls's `ca` replaces the default roots
 * where Deno's `caCerts` adds to them, so they are passed together, in a secure context made once
 * for every connection of the client; an IP address is no server name (node refuses one, RFC
 * 6066) but is still checked against the certificate's IP addresses. The modules are loaded at the
 * first dial: a client on Deno never loads them.
 */
function nodeTls(options: TlsDialOptions): Dialer {
  let loaded: Promise<NodeTls> | undefined;
  return async (signal, endpoint) => {
    const { tls, isIP, NodeConnection, context } = await (loaded ??= loadNodeTls(options));
    signal.throwIfAborted();
    const { hostname, port } = endpoint;
    const start = performance.now();
    let connected = start;
    const socket = tls.connect({
      host: hostname,
      port,
      ...(isIP(hostname) === 0 && { servername: hostname }),
      ...context,
    });
    // Before the handshake, applied once the socket exists: its small writes must not wait for
    // delayed ACKs (40 ms on Linux), nor must small calls later.
    socket.setNoDelay(true);
    socket.once("connect", () => {
      connected = performance.now();
      socket.setNoDelay(true);
    });
    try {
      await once(socket, "secureConnect", {
        signal,
        failures: {
          close: () => disconnectError("the server closed the connection during the handshake"),
        },
        // The "error" listener stays: an error before NodeConnection listens must not go
        // unhandled (it would end the process), and settling twice does nothing.
        keepErrorListener: true,
      });
    } catch (error) {
      socket.destroy();
      throw error;
    }
    options.onHandshake?.({
      tcp: connected - start,
      tls: performance.now() - connected,
      protocol: socket.getProtocol() ?? null,
      certificate: socket.getPeerCertificate(),
    });
    return new NodeConnection(socket, { hostname, port }, undefined);
  };
}

/** What {@linkcode nodeTls} needs, loaded at its first dial. */
interface NodeTls {
  tls: typeof import("node:tls");
  isIP: (input: string) => number;
  NodeConnection: typeof import("./_transport_node.ts").NodeConnection;
  /** The options every connection gets: a secure context, or nothing for node's defaults. */
  context: { secureContext?: import("node:tls").SecureContext };
}

async function loadNodeTls(options: TlsDialOptions): Promise<NodeTls> {
  const [tls, net, { NodeConnection }] = await Promise.all([
    import("node:tls"),
    import("node:net"),
    import("./_transport_node.ts"),
  ]);
  const { caCerts, cert, key } = options;
  const withCert = cert !== undefined && key !== undefined;
  if (caCerts === undefined && !withCert) {
    return { tls, isIP: net.isIP, NodeConnection, context: {} };
  }
  // The roots node would use (its bundle, NODE_EXTRA_CA_CERTS, the system's with
  // --use-system-ca), or its bundle where it cannot say (Bun).
  const roots = tls.getCACertificates?.("default") ?? tls.rootCertificates;
  const secureContext = tls.createSecureContext({
    ...(caCerts !== undefined && { ca: [...roots, ...caCerts] }),
    ...(withCert && { cert, key }),
  });
  return { tls, isIP: net.isIP, NodeConnection, context: { secureContext } };
}

/**
 * How soon after the handshake a connection with a client certificate that ends before any answer
 * is said to have been refused, in ms: a server refuses one as soon as it has the client's
 * handshake, whereas a connection that ends later (an idle timeout, say) ended for another reason.
 */
const REFUSAL_WINDOW_MS = 2000;

/**
 * The dialer's connection: reads as the transport's once a first read has succeeded; until then a
 * TLS alert is worded as tlsrpc words it. With TLS 1.3 the client's handshake ends before the
 * server has checked the client certificate, so a refusal comes as the first read's error: an
 * alert, or (rustls and OpenSSL servers alike send none for a certificate they cannot verify) the
 * connection closed at once.
 */
class TlsClientConnection implements ClientConnection {
  #conn: ClientConnection;
  #endpoint: Endpoint;
  #withCert: boolean;
  #first = true;
  #closed = false;
  #opened = performance.now();

  constructor(conn: ClientConnection, endpoint: Endpoint, withCert: boolean) {
    this.#conn = conn;
    this.#endpoint = endpoint;
    this.#withCert = withCert;
  }

  read(buffer: Uint8Array): Promise<number | null> {
    return this.#first ? this.#readFirst(buffer) : this.#conn.read(buffer);
  }

  async #readFirst(buffer: Uint8Array): Promise<number | null> {
    let count: number | null;
    try {
      count = await this.#conn.read(buffer);
    } catch (error) {
      if (this.#closed) throw error;
      if (isDisconnect(error) && this.#refusedMaybe()) throw closedAtOnce(error);
      throw tlsError(error, this.#endpoint, this.#withCert);
    }
    if (count === null && !this.#closed && this.#refusedMaybe()) throw closedAtOnce(undefined);
    this.#first = false;
    return count;
  }

  /** Whether a connection that ended now may have been refused for its client certificate. */
  #refusedMaybe(): boolean {
    return this.#withCert && performance.now() - this.#opened < REFUSAL_WINDOW_MS;
  }

  write(bytes: Uint8Array): Promise<number> {
    return this.#conn.write(bytes);
  }

  close(): void {
    this.#closed = true;
    this.#conn.close();
  }
}

/** The first read of a connection with a client certificate found it closed. */
function closedAtOnce(cause: unknown): Error {
  const raw = cause === undefined ? "" : ` (${rawText(cause)})`;
  return disconnectError(
    "the server closed the connection before it answered: it may have refused the client " +
      `certificate${raw}`,
    cause,
  );
}

/**
 * `error` worded by tlsrpc when it is the TLS stack's and {@linkcode describeDialError} knows it:
 * an `Error` whose message says what went wrong, then the stack's own text in parentheses, with
 * `error` as its `cause` and its `code`; any other error as it is.
 */
function tlsError(error: unknown, endpoint: Endpoint, withCert: boolean): unknown {
  const what = describeDialError(error, endpoint.hostname, withCert);
  if (what === undefined) return error;
  const code = errorCode(error);
  return Object.assign(
    new Error(`${what} (${rawText(error)})`, { cause: error }),
    code === undefined ? {} : { code },
  );
}

/** The TLS stack's own words for `error`, to quote: its code, and its message (see tlsReason). */
function rawText(error: unknown): string {
  const code = errorCode(error);
  const text = tlsReason(error);
  return code === undefined || text.includes(code) ? text : `${code}: ${text}`;
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

// --- the dial's errors in tlsrpc's words --------------------------------------------------------

/** node:tls's codes (OpenSSL's, and BoringSSL's on Bun) for a server certificate that no trusted CA signed. */
const UNTRUSTED_CODES: ReadonlySet<string> = new Set([
  "UNABLE_TO_VERIFY_LEAF_SIGNATURE",
  "UNABLE_TO_GET_ISSUER_CERT",
  "UNABLE_TO_GET_ISSUER_CERT_LOCALLY",
  "SELF_SIGNED_CERT_IN_CHAIN",
  "DEPTH_ZERO_SELF_SIGNED_CERT",
  "CERT_UNTRUSTED",
]);

/** node:tls's codes for bytes from the server that are not TLS records (a plain TCP or HTTP port). */
const NOT_TLS_CODES: ReadonlySet<string> = new Set([
  "ERR_SSL_WRONG_VERSION_NUMBER",
  "ERR_SSL_PACKET_LENGTH_TOO_LONG",
  "ERR_SSL_UNKNOWN_PROTOCOL",
  "ERR_SSL_HTTP_REQUEST",
  "ERR_SSL_RECORD_LAYER_FAILURE",
]);

/**
 * The alerts a server sends when it refuses or misses the client certificate, names lowercased
 * without underscores: rustls says `CertificateRequired`, OpenSSL `CERTIFICATE_REQUIRED`.
 */
const CLIENT_CERT_ALERTS: ReadonlySet<string> = new Set([
  "certificaterequired",
  "badcertificate",
  "unsupportedcertificate",
  "certificaterevoked",
  "certificateexpired",
  "certificateunknown",
  "unknownca",
  "accessdenied",
]);

/**
 * What an error of the client's dial means, in tlsrpc's words and the same on every runtime,
 * whatever the TLS stack (rustls on Deno, OpenSSL on Node.js, BoringSSL on Bun): an untrusted,
 * misnamed, expired or not yet valid server certificate, a server that does not speak TLS, a
 * client certificate refused or missing, a refused connection, a name that cannot be resolved;
 * `undefined` for any other error.
 *
 * @param hostname The name the server's certificate was checked against.
 * @param withCert Whether the client presented a certificate, which tells a refused one from a
 *   missing one.
 */
export function describeDialError(
  error: unknown,
  hostname: string,
  withCert: boolean,
): string | undefined {
  if (!(error instanceof Error)) return undefined;
  const code = errorCode(error) ?? "";
  const text = error.message;
  if (UNTRUSTED_CODES.has(code) || /\bUnknownIssuer\b/.test(text)) {
    return "the server's certificate is not signed by a trusted CA";
  }
  if (
    code === "ERR_TLS_CERT_ALTNAME_INVALID" ||
    /certificate not valid for name|NotValidForName/.test(text)
  ) {
    return `the server's certificate is not valid for "${hostname}"`;
  }
  if (
    code === "CERT_HAS_EXPIRED" || /invalid peer certificate: (certificate )?expired/i.test(text)
  ) {
    return "the server's certificate has expired";
  }
  if (
    code === "CERT_NOT_YET_VALID" ||
    /invalid peer certificate: (certificate not valid yet|NotValidYet)/.test(text)
  ) {
    return "the server's certificate is not valid yet";
  }
  if (NOT_TLS_CODES.has(code) || /InvalidContentType|corrupt message/.test(text)) {
    return "the server does not speak TLS";
  }
  if (code === "ECONNREFUSED" || /Connection refused/.test(text)) {
    return "nothing listens there, the connection was refused";
  }
  if (/^(ENOTFOUND|EAI_AGAIN|EAI_NONAME)$/.test(code) || /failed to lookup address/.test(text)) {
    return `the host name "${hostname}" cannot be resolved`;
  }
  const alert = /^ERR_SSL_(?:SSLV3|TLSV1|TLSV13)_ALERT_(\w+)$/.exec(code)?.[1] ??
    /received fatal alert: (\w+)/.exec(text)?.[1];
  if (alert !== undefined && CLIENT_CERT_ALERTS.has(alert.replaceAll("_", "").toLowerCase())) {
    return withCert
      ? "the server refused the client certificate"
      : "the server requires a client certificate for mutual TLS";
  }
  return undefined;
}
