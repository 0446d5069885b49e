// The client's options and their defaults, and the shape of its calling half: the public types
// of client.ts, which re-exports them, kept here so that the client's logic reads on its own.

import { type Dialer, type Endpoint, EndpointRing, endpointsOf, tlsDialer } from "./_dial.ts";
import type { LinkOptions } from "./_link.ts";
import type { RemoteProxy } from "./_proxy.ts";
import type { ConnectionError } from "./errors.ts";

/** The defaults of {@linkcode connect}, each with the reason for its value. */
export const DEFAULT_CLIENT_OPTIONS = {
  /** Where a development server listens. */
  hostname: "localhost",
  /** The port a tlsrpc server listens on unless told otherwise. */
  port: 7443,
  /** TCP connect plus TLS handshake: 10 s covers a slow network and still fails in human time. */
  connectTimeout: 10_000,
  /** The first wait before reconnecting: long enough not to hammer a restarting server. */
  reconnectInitialDelay: 100,
  /** The longest wait between reconnection attempts: a recovered server is found within 10 s. */
  reconnectMaxDelay: 10_000,
  /** Attempts before giving up: with the delays above, about a minute of trying. */
  reconnectMaxAttempts: 10,
  /**
   * Quiet time after which a keepalive ping goes out: 30 s finds a dead peer well before TCP
   * does (minutes to hours), for one small frame a minute.
   */
  keepaliveInterval: 30_000,
  /** How long a ping may go unanswered before the connection counts as dead. */
  keepaliveTimeout: 10_000,
  /**
   * Bytes that may wait to be written before calls are refused: far above what a reading server
   * leaves queued (a few frames), and a bound on what one that stops reading costs.
   */
  maxQueuedBytes: 64 * 1024 * 1024,
  /**
   * How long one write may make no progress before the connection counts as dead: a reading
   * server takes bytes within milliseconds, and TCP retransmits for minutes before giving up.
   */
  writeTimeout: 30_000,
} as const;

/** Options for reconnecting, in {@linkcode ConnectOptions.reconnect}. */
export interface ReconnectOptions {
  /**
   * Milliseconds before the first attempt; each later wait doubles, with ±50 % jitter.
   *
   * @default {100}
   */
  initialDelay?: number;
  /**
   * The longest wait between attempts, in milliseconds.
   *
   * @default {10000}
   */
  maxDelay?: number;
  /**
   * Attempts before the client gives up and closes; each goes to the next endpoint.
   *
   * @default {10}
   */
  maxAttempts?: number;
}

/** Options for keepalive pings, in {@linkcode ConnectOptions.keepalive}. */
export interface KeepaliveOptions {
  /**
   * Milliseconds without a frame from the server after which the client pings it.
   *
   * @default {30000}
   */
  interval?: number;
  /**
   * Milliseconds the ping may go unanswered before the connection counts as dead.
   *
   * @default {10000}
   */
  timeout?: number;
}

/** Options for {@linkcode connect}. */
export interface ConnectOptions {
  /**
   * The server's host name; the server's certificate must name it.
   *
   * @default {"localhost"}
   */
  hostname?: string;
  /**
   * The server's port.
   *
   * @default {7443}
   */
  port?: number;
  /**
   * Several servers that serve the same methods, instead of `hostname` and `port` (giving both
   * is a `TypeError`, as is an empty list). The client shuffles them once, so that clients spread
   * out, and connects to the first that answers in that order; each reconnection, and each switch
   * after `rpc.goaway`, goes to the next one in the order, round and round. `caCerts`, `cert` and
   * `key` apply to each, and each endpoint's `hostname` is its TLS server name. Each attempt has
   * its own `connectTimeout`. When none answers the first time, {@linkcode connect} rejects with
   * a {@linkcode ConnectionError} naming each endpoint and what went wrong there.
   *
   * @default {one endpoint: hostname and port}
   */
  endpoints?: readonly Endpoint[];
  /**
   * The CA certificates, PEM, to verify the server's certificate with, besides the system's
   * root store.
   */
  caCerts?: string[];
  /** A client certificate chain, PEM, for servers that require mutual TLS; with `key`. */
  cert?: string;
  /** The private key of `cert`, PEM. */
  key?: string;
  /**
   * A token to present once per connection (`rpc.auth`) before any call, for servers that want
   * one. Never logged, never part of an error message.
   */
  token?: string;
  /**
   * Milliseconds each call may take before it rejects with a {@linkcode TimeoutError}; 0 waits
   * for ever. Calls may set their own with {@linkcode RpcClient.withOptions}.
   *
   * @default {0}
   */
  timeout?: number;
  /**
   * Milliseconds the TCP connection, TLS handshake and authentication may take.
   *
   * @default {10000}
   */
  connectTimeout?: number;
  /**
   * The largest frame sent or accepted, in bytes.
   *
   * @default {16777216}
   */
  maxFrameBytes?: number;
  /**
   * Bytes that may wait to be written to a server that reads slowly or not at all; a call or
   * notification that would pass the limit is refused with a {@linkcode ConnectionError}. (A
   * message alone is always taken, up to `maxFrameBytes`.)
   *
   * @default {67108864}
   */
  maxQueuedBytes?: number;
  /**
   * Milliseconds one write to the server may make no progress (a server that stops reading)
   * before the connection counts as dead: calls in flight reject with a
   * {@linkcode ConnectionError}, and `reconnect` applies. 0 waits for ever.
   *
   * @default {30000}
   */
  writeTimeout?: number;
  /** Aborting it cancels the connection attempt, or closes the client once connected. */
  signal?: AbortSignal;
  /**
   * Resolve calls with read-only `AttrWrapper` views (attr_wrapper.ts) of their results, so that
   * untyped results read as `result.items[-1].name`; `AttrWrapper.unwrap` gives the data back.
   *
   * @default {false}
   */
  wrap?: boolean;
  /**
   * Offer the server rich values (`rpc.hello` on connecting): `Uint8Array` and other binary data
   * sent raw, `Date`, `BigInt`, `Map`, `Set`, `undefined`, `NaN`, `±Infinity` and `-0`, exactly. A
   * server without the extension answers "method not found", and the client then sends plain
   * JSON only. `false` speaks plain JSON-RPC 2.0 only.
   *
   * @default {true}
   */
  richValues?: boolean;
  /**
   * Reconnect when the connection drops, with exponential backoff and jitter: `true` for the
   * defaults. Calls made while reconnecting wait (within their own timeout) and then go out.
   * Calls in flight when it dropped reject with {@linkcode ConnectionError}, as their outcome is
   * unknown; only calls marked `idempotent` are sent again, once. Without it, a dropped connection
   * closes the client.
   *
   * It also makes a server's shutdown lose no call. When the server says `rpc.goaway`, new calls
   * stop going to that connection: the client opens a new one at once (without waiting, at most
   * once per `initialDelay`, and not counted as an attempt), to the next endpoint, and sends new
   * calls there, while the calls in flight on the old one finish there; the client closes the old
   * one when its last call has settled. If the new one cannot be opened, the usual backoff
   * follows. A call the server answers with error -32001 ("Server is shutting down") never ran,
   * so it is sent once more on the new connection, idempotent or not. Without `reconnect`, calls
   * keep going to the old connection (and are answered -32001) until the server closes it.
   *
   * @default {false}
   */
  reconnect?: boolean | ReconnectOptions;
  /**
   * Ping the server after a quiet interval, and count the connection dead when the ping goes
   * unanswered (then `reconnect` applies): `true` for the defaults.
   *
   * @default {false}
   */
  keepalive?: boolean | KeepaliveOptions;
  /**
   * Called when the client is left without a connection for new calls, with the reason: the
   * connection dropped, or the server said `rpc.goaway` and no new connection could be opened at
   * once. `onReconnect` follows if one comes back.
   */
  onDisconnect?: (error: ConnectionError) => void;
  /**
   * Called when a new connection takes over, after a drop or after `rpc.goaway`, before the calls
   * that waited go out.
   */
  onReconnect?: () => void;
  /**
   * Called when a notification cannot reach a listener: a listener of `method` threw (or its
   * promise rejected), or the notification has more than 1 024 by-position params, more than a
   * listener's parameter list sensibly takes (and far fewer than overflow the stack when spread).
   * The client and its connection carry on.
   *
   * @default {console.error}
   */
  onListenerError?: (error: unknown, method: string) => void;
  /**
   * Opens the byte stream to an endpoint: by default TLS to its `hostname:port`, verified with
   * `caCerts`, with `cert` and `key` for mutual TLS. Given, the client runs over whatever it
   * returns (a tunnel, an in-memory pair in tests) and ignores `caCerts`, `cert` and `key`; the
   * endpoint (`hostname` and `port`, or one of `endpoints`) is its second argument and names the
   * server in messages. It is called for every connection, reconnections included, under
   * `connectTimeout`; it should give up when its signal aborts.
   *
   * @default {TLS to the endpoint}
   */
  dial?: Dialer;
}

/** Options for one call, or for every call made through {@linkcode RpcClient.withOptions}. */
export interface CallOptions {
  /**
   * Milliseconds the call may take, waiting for a reconnection included; it then rejects with a
   * {@linkcode TimeoutError}. The deadline travels with the request, so the handler's signal
   * aborts too and its late result is dropped. 0 waits for ever.
   *
   * @default {the client's `timeout`}
   */
  timeout?: number;
  /**
   * Aborting it rejects the call at once with the signal's reason and tells the server, whose
   * handler's signal then aborts.
   */
  signal?: AbortSignal;
  /**
   * The call may safely run twice: if the connection drops while it is in flight and the client
   * reconnects, it is sent once more instead of rejecting. (A call answered -32001, "Server is
   * shutting down", never ran: with `reconnect` it is sent once more whether idempotent or not.)
   *
   * @default {false}
   */
  idempotent?: boolean;
}

/**
 * The calling half of a client: what {@linkcode RpcClient} offers, and what
 * {@linkcode RpcClient.withOptions} returns with per-call options bound.
 *
 * @typeParam T The type of the server's handlers, or `unknown`.
 * @typeParam R The type `call` and `callNamed` resolve with: `unknown`, or with `wrap: true` an
 * AttrWrapper view typed so that any path reads (`result.items[-1].name`).
 */
export interface RpcCaller<T = unknown, R = unknown> {
  /** Calls `method` with by-position params. */
  call(method: string, ...params: unknown[]): Promise<R>;
  /** Calls `method` with by-name params, matched to the handler's parameter names. */
  callNamed(method: string, params: Record<string, unknown>): Promise<R>;
  /** The remote methods as functions. */
  readonly proxy: RemoteProxy<T>;
}

/** A client's options with their defaults applied: what the client and its links work from. */
export interface ResolvedOptions {
  readonly endpoints: EndpointRing;
  readonly dialer: Dialer;
  readonly reconnect: Required<ReconnectOptions> | undefined;
  /** How each link behaves; its `target` is its endpoint's. */
  readonly link: Omit<LinkOptions, "target">;
}

/**
 * Applies the defaults to `options` and checks them.
 *
 * @throws {TypeError} When both `endpoints` and `hostname` or `port` are given, or `endpoints` is
 * empty.
 * @throws {RangeError} When `maxQueuedBytes` or `writeTimeout` is out of range.
 */
export function resolveOptions(options: ConnectOptions): ResolvedOptions {
  const defaults = DEFAULT_CLIENT_OPTIONS;
  const endpoints = new EndpointRing(endpointsOf(options, defaults));
  const { caCerts, cert, key } = options;
  const reconnect = options.reconnect === true ? {} : options.reconnect || undefined;
  const keepalive = options.keepalive === true ? {} : options.keepalive || undefined;
  const { maxQueuedBytes = defaults.maxQueuedBytes, writeTimeout = defaults.writeTimeout } =
    options;
  if (!(maxQueuedBytes >= 1) || !(writeTimeout >= 0)) {
    throw new RangeError(
      `Cannot connect to ${endpoints.names}: maxQueuedBytes must be 1 or more, writeTimeout 0 or more`,
    );
  }
  return {
    endpoints,
    dialer: options.dial ?? tlsDialer({ caCerts, cert, key }),
    reconnect: reconnect && {
      initialDelay: reconnect.initialDelay ?? defaults.reconnectInitialDelay,
      maxDelay: reconnect.maxDelay ?? defaults.reconnectMaxDelay,
      maxAttempts: reconnect.maxAttempts ?? defaults.reconnectMaxAttempts,
    },
    link: {
      maxFrameBytes: options.maxFrameBytes,
      maxQueuedBytes,
      writeTimeout,
      keepalive: keepalive && {
        interval: keepalive.interval ?? defaults.keepaliveInterval,
        timeout: keepalive.timeout ?? defaults.keepaliveTimeout,
      },
      richValues: options.richValues !== false,
      token: options.token,
      connectTimeout: options.connectTimeout ?? defaults.connectTimeout,
    },
  };
}
