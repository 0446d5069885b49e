/**
 * The tlsrpc server: serves the functions of an object, class instance or module as JSON-RPC 2.0
 * methods over TLS, one length-prefixed frame per message.
 *
 * Every connection completes its TLS handshake in its own task under a deadline, so a client whose
 * handshake fails or stalls costs only its own connection; the accept loop never sees its error.
 *
 * @example Serve two functions
 * ```ts
 * import { serve } from "./server.ts";
 *
 * const server = await serve({
 *   add: (a: number, b: number) => a + b,
 *   math: { neg: (x: number) => -x },
 * }, {
 *   port: 0,
 *   cert: await Deno.readTextFile(new URL("./testdata/server.pem", import.meta.url)),
 *   key: await Deno.readTextFile(new URL("./testdata/server.key", import.meta.url)),
 *   onListen: () => {},
 * });
 * console.log(`listening on port ${server.addr.port}`);
 * await server.shutdown();
 * ```
 *
 * @module
 */

import { Dispatcher, type Interceptor } from "./_dispatch.ts";
import { AuthThrottle, fixedToken } from "./_auth.ts";
import { type Limits, resolveLimits, sweepInterval } from "./_limits.ts";
import { type LogFields, RateLimitedLog } from "./_log.ts";
import { Metrics } from "./_metrics.ts";
import type { MetricsSnapshot } from "./_metrics_text.ts";
import { listenMetrics, type MetricsServer } from "./_metrics_http.ts";
import { ServerConnection } from "./_server_connection.ts";
import { FrameReader } from "./framing.ts";
import { formatAddr } from "./_util.ts";
import { requireDeno } from "./_runtime.ts";
import { type Connection, listen, type Listener } from "./_transport.ts";
import type { MethodInfo } from "./_introspect.ts";

export type { AltName, CertificateIdentity } from "./_x509_identity.ts";
export type { MethodInfo } from "./_introspect.ts";
export type { InterceptedCall, Interceptor } from "./_dispatch.ts";
export type { CallContext } from "./_context.ts";
export type { MetricsSnapshot } from "./_metrics_text.ts";
export type { LogFields } from "./_log.ts";

/**
 * Where a server listens, from {@linkcode RpcServer.addr}: the shape of Deno's `Deno.NetAddr`, so
 * that it goes where one is expected, without Deno's types (the library runs on Node.js and Bun
 * too).
 */
export interface ServerAddr {
  /** Always `"tcp"`. */
  readonly transport: "tcp";
  /** The address the server is bound to: `"127.0.0.1"`, `"0.0.0.0"`, `"::"`... */
  readonly hostname: string;
  /** The port, the real one when 0 was asked for. */
  readonly port: number;
}

/** A server's counts, from {@linkcode RpcServer.metrics}. */
export interface ServerMetrics {
  /** The counts in the Prometheus text exposition format. */
  render(): string;
  /** The counts as a structured-cloneable object, to sum over workers. */
  snapshot(): MetricsSnapshot;
}
export { DEFAULT_LIMITS } from "./_limits.ts";
export type { Limits } from "./_limits.ts";

/** The port a server listens on unless told otherwise: 443 is HTTPS's, 7443 its common alternate. */
export const DEFAULT_PORT = 7443;

/**
 * Milliseconds a shutting-down server waits, once a connection's calls are done, for its client to
 * close it after `rpc.goaway`: a call that was on its way when the server said goodbye still gets
 * its "shutting down" answer (which a tlsrpc client sends again elsewhere), not a cut connection.
 */
const GOAWAY_GRACE_MS = 1000;

/** At most this many connection errors are logged a second; the rest are counted in a summary. */
const LOG_LINES_PER_SECOND = 5;

/** Options for {@linkcode serve}; each limit defaults to its value in {@linkcode DEFAULT_LIMITS}. */
export interface ServeOptions extends Partial<Limits> {
  /**
   * The address to listen on. The default accepts only local connections; use `"0.0.0.0"` or
   * `"::"` to accept remote ones.
   *
   * @default {"127.0.0.1"}
   */
  hostname?: string;
  /**
   * The port to listen on; 0 picks a free one (read it from {@linkcode RpcServer.addr}).
   *
   * @default {7443}
   */
  port?: number;
  /** The server's certificate chain, PEM. */
  cert: string;
  /** The server's private key, PEM. */
  key: string;
  /**
   * The TLS implementation. `"node"` (`node:tls`, on every runtime) closes the socket of a client
   * whose handshake fails or stalls at once. `"deno"` (`Deno.listenTls`, on Deno only) is a few
   * percent faster, but on Deno 2.9 a connection closed before its handshake completed keeps its
   * socket until the peer leaves, so a client that connects and says nothing holds a file
   * descriptor as long as it likes.
   *
   * @default {"node"}
   */
  transport?: "node" | "deno";
  /**
   * Share the port with other listeners (`SO_REUSEPORT`): several processes or workers serving the
   * same port, the kernel spreading connections over them. Needs the `"node"` transport.
   *
   * @default {false}
   */
  reusePort?: boolean;
  /**
   * Read a PROXY protocol header (v1 or v2) at the start of every connection, as a balancer sends
   * it (HAProxy `send-proxy` or `send-proxy-v2`, nginx `proxy_protocol on`): the client's address
   * in it becomes the connection's peer (`callContext().peer`, log lines) instead of the
   * balancer's. Every connection must then begin with a header, read under `handshakeTimeout`; one
   * without is closed and logged, so enable it only behind a balancer that sends one, and keep the
   * port out of others' reach, for anyone who can connect can claim any address. Needs the `"node"`
   * transport.
   *
   * @default {false}
   */
  proxyProtocol?: boolean;
  /**
   * A fixed token every client must present (`rpc.auth`, the client's `token` option) before
   * any call. Compared in constant time; never logged. Use `authenticate` for more than one.
   */
  token?: string;
  /**
   * Decides who a presented token belongs to: returns an identity (any value but `undefined`,
   * `null` and `false`), which handlers read as `callContext().identity`, or one of those three
   * to refuse it; may be async. Every call before a token is accepted gets -32004; three refusals
   * close the connection.
   */
  authenticate?: (token: string, peer: { hostname: string; port: number }) => unknown;
  /**
   * CA certificates (PEM) that client certificates must chain to (mutual TLS): a client without
   * such a certificate fails the handshake. The certificate's subject and names become the call
   * context's identity. Needs the `"node"` transport (denoland/deno#26825).
   */
  clientCa?: string;
  /**
   * Put handlers' error stacks in error responses. Stacks tell a caller about the server's code,
   * so keep this off unless every client is trusted.
   *
   * @default {false}
   */
  exposeStack?: boolean;
  /**
   * The `info` of the `rpc.discover` document.
   *
   * @default {{ title: "tlsrpc", version: VERSION }} (the version in deno.json)
   */
  info?: { title: string; version: string };
  /**
   * Count calls, errors, latency, connections, refusals and bytes (see the README's Observability
   * section), and serve them in the Prometheus text format at `http://HOSTNAME:PORT/metrics` over
   * plain HTTP: `hostname` defaults to `"127.0.0.1"`, keep it on loopback or a private network.
   * `true` counts without serving; read them from {@linkcode RpcServer.metrics}. Served with
   * `Deno.serve` on Deno, `node:http` on Node.js and Bun.
   *
   * @default {false}
   */
  metrics?: boolean | { hostname?: string; port: number };
  /**
   * Wrap every call to a handler, outermost first: each gets the call (method, params, context
   * with peer, identity and signal) and `next`, which runs the rest of the chain and the handler.
   * One may measure the call, log it, or refuse it by throwing (an `RpcError` keeps its code).
   *
   * @example Time every call
   * ```ts
   * import { serve } from "./server.ts";
   *
   * const server = await serve({ add: (a: number, b: number) => a + b }, {
   *   port: 0,
   *   cert: await Deno.readTextFile(new URL("./testdata/server.pem", import.meta.url)),
   *   key: await Deno.readTextFile(new URL("./testdata/server.key", import.meta.url)),
   *   onListen: () => {},
   *   interceptors: [async (call, next) => {
   *     const start = performance.now();
   *     try {
   *       return await next();
   *     } finally {
   *       console.log(`${call.method} took ${(performance.now() - start).toFixed(1)} ms`);
   *     }
   *   }],
   * });
   * await server.shutdown();
   * ```
   */
  interceptors?: readonly Interceptor[];
  /** Aborting it shuts the server down, as `shutdown()` does. */
  signal?: AbortSignal;
  /**
   * Called once the server listens. The default prints `listening on HOSTNAME:PORT` to stderr.
   */
  onListen?: (addr: ServerAddr) => void;
  /**
   * Called with each error that cost a connection, or that the accept loop recovered from, and a
   * one-line description of it; at most 5 a second, then one summary line with the count. The
   * default prints the line to stderr.
   */
  onError?: (error: unknown, line: string, fields: LogFields) => void;
}

/** A running server, from {@linkcode serve}. */
export interface RpcServer extends AsyncDisposable {
  /** The address the server listens on, with the real port when `port` was 0. */
  readonly addr: ServerAddr;
  /** The exposed methods, by name. */
  readonly methods: ReadonlyMap<string, MethodInfo>;
  /** Resolves when the server has stopped and every connection is closed. */
  readonly finished: Promise<void>;
  /** The server's counts, when `metrics` was set: `render()` gives the Prometheus text. */
  readonly metrics: ServerMetrics | undefined;
  /** Where `/metrics` is served, with the real port when `port` was 0, when it is. */
  readonly metricsAddr: { hostname: string; port: number } | undefined;
  /**
   * Stops accepting connections, answers new calls with a "shutting down" error, waits for calls
   * in flight (up to `shutdownTimeout`), then closes every connection.
   *
   * @returns A promise that resolves with `finished`.
   */
  shutdown(): Promise<void>;
}

/**
 * Serves `handlers` over TLS. Functions become methods; nested plain objects become dotted
 * namespaces (`math.add`); a class instance also exposes its prototype's methods. Names starting
 * with `_`, `constructor` and anything of `Object.prototype` are never exposed.
 *
 * @example Serve a class instance
 * ```ts
 * import { serve } from "./server.ts";
 *
 * class Greeter {
 *   greet(name: string): string {
 *     return `hello, ${name}`;
 *   }
 * }
 * await using server = await serve(new Greeter(), {
 *   port: 0,
 *   cert: await Deno.readTextFile(new URL("./testdata/server.pem", import.meta.url)),
 *   key: await Deno.readTextFile(new URL("./testdata/server.key", import.meta.url)),
 *   onListen: () => {},
 * });
 * console.log([...server.methods.keys()]); // ["greet"]
 * ```
 *
 * @param handlers The object, class instance or module namespace whose functions to serve.
 * @param options The address, certificate and limits.
 * @returns The running server.
 * @throws {TypeError} When `handlers` is not an object or exposes a reserved `rpc.` name.
 */
export async function serve(handlers: object, options: ServeOptions): Promise<RpcServer> {
  const server = new Server(handlers, options);
  await server.listen();
  return server;
}

class Server implements RpcServer {
  #addr: ServerAddr | undefined;
  #dispatcher: Dispatcher;
  #listener: Listener | undefined;
  #options: ServeOptions;
  #limits: Limits;
  #log: RateLimitedLog;
  #connections = new Set<ServerConnection>();
  #closing = false;
  #shutdown: Promise<void> | undefined;
  #sweeper: ReturnType<typeof setInterval> | undefined;
  #finished = Promise.withResolvers<void>();
  #onAbort = () => void this.shutdown();
  #metrics: Metrics | undefined;
  #metricsServer: MetricsServer | undefined;

  constructor(handlers: object, options: ServeOptions) {
    const limits = resolveLimits(options);
    this.#limits = limits;
    this.#options = options;
    if (options.token !== undefined && options.authenticate !== undefined) {
      throw new TypeError("Cannot serve: give token or authenticate, not both");
    }
    const authenticate = options.authenticate ??
      (options.token === undefined ? undefined : fixedToken(options.token));
    const onError = options.onError ?? ((_: unknown, line: string) => console.error(line));
    this.#log = new RateLimitedLog(onError, LOG_LINES_PER_SECOND);
    let observer: Metrics | undefined;
    this.#dispatcher = new Dispatcher(handlers, {
      ...(authenticate && { authenticate }),
      ...(options.metrics && {
        // The metrics need the method table, made by the dispatcher: bound once it exists.
        observer: {
          callFinished: (method, code, seconds) => observer!.callFinished(method, code, seconds),
        },
      }),
      exposeStack: options.exposeStack ?? false,
      maxBatch: limits.maxBatch,
      throttle: new AuthThrottle(limits.maxAuthFailures),
      ...(options.info && { info: options.info }),
      log: (error, line, fields) => this.#log.report(error, line, fields),
      ...(options.interceptors && { interceptors: options.interceptors }),
    });
    if (options.metrics) {
      this.#metrics = observer = new Metrics(this.#dispatcher.methods.keys());
    }
    // Checked here so that a bad value fails at startup, not at the first connection.
    new FrameReader({ read: () => Promise.resolve(null) }, { maxFrameBytes: limits.maxFrameBytes });
  }

  async listen(): Promise<void> {
    const options = this.#options;
    if (
      options.transport !== undefined && options.transport !== "node" &&
      options.transport !== "deno"
    ) {
      throw new TypeError(`Cannot serve: unknown transport "${options.transport}"`);
    }
    // Refused before anything is bound, rather than failing half-started.
    if (options.transport === "deno") requireDeno("serve", 'the "deno" transport');
    this.#listener = await listen(options.transport ?? "node", {
      hostname: options.hostname ?? "127.0.0.1",
      port: options.port ?? DEFAULT_PORT,
      cert: options.cert,
      key: options.key,
      handshakeTimeout: this.#limits.handshakeTimeout,
      maxConnections: this.#limits.maxConnections,
      clientCa: options.clientCa,
      reusePort: options.reusePort ?? false,
      proxyProtocol: options.proxyProtocol ?? false,
      onConnection: (conn) => this.#accept(conn),
      onHandshakeFailure: (reason) => this.#metrics?.handshakeFailed(reason),
      onRefused: (limit) => this.#metrics?.limitRefused(limit),
      log: (error, line, fields) => this.#log.report(error, line, fields),
    });
    const { hostname, port } = this.#listener.addr;
    this.#addr = { transport: "tcp", hostname, port };
    const metrics = options.metrics;
    if (this.#metrics !== undefined && typeof metrics === "object") {
      const counts = this.#metrics;
      this.#metricsServer = await listenMetrics(() => counts.render(), {
        hostname: metrics.hostname ?? "127.0.0.1",
        port: metrics.port,
        onListen: () => {},
      });
    }
    const sweepEvery = sweepInterval(this.#limits);
    if (sweepEvery > 0) this.#sweeper = setInterval(() => this.#sweep(), sweepEvery);
    (options.onListen ?? ((addr) => console.error(`listening on ${formatAddr(addr)}`)))(this.addr);
    if (options.signal?.aborted) void this.shutdown();
    else options.signal?.addEventListener("abort", this.#onAbort, { once: true });
  }

  get addr(): ServerAddr {
    return this.#addr!;
  }

  get finished(): Promise<void> {
    return this.#finished.promise;
  }

  get metricsAddr(): { hostname: string; port: number } | undefined {
    return this.#metricsServer?.addr;
  }

  get metrics(): ServerMetrics | undefined {
    return this.#metrics;
  }

  get methods(): ReadonlyMap<string, MethodInfo> {
    return this.#dispatcher.methods;
  }

  shutdown(): Promise<void> {
    this.#shutdown ??= this.#stop();
    return this.#shutdown;
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.shutdown();
  }

  async #stop(): Promise<void> {
    this.#closing = true;
    this.#options.signal?.removeEventListener("abort", this.#onAbort);
    this.#listener?.close();
    // Every client hears that it should send its next calls elsewhere; the running ones finish.
    for (const connection of this.#connections) connection.goAway();
    const deadline = Date.now() + this.#limits.shutdownTimeout;
    await within(
      Promise.all([...this.#connections].map((connection) => connection.drain())),
      deadline - Date.now(),
    );
    // A client that heard rpc.goaway closes its side once its calls are answered, so that a call
    // still on its way is never cut off; others are closed after a short grace.
    const running = [...this.#connections].map((connection) => connection.finished);
    await within(Promise.all(running), Math.min(GOAWAY_GRACE_MS, deadline - Date.now()));
    for (const connection of this.#connections) connection.close();
    await Promise.all([this.#listener?.closed, ...running]);
    clearInterval(this.#sweeper);
    await this.#metricsServer?.shutdown();
    this.#metrics?.close();
    this.#log.flush(true);
    this.#finished.resolve();
  }

  /** Serves one connection whose handshake completed, in a task of its own. */
  #accept(conn: Connection): void {
    if (this.#closing) return conn.close();
    const metrics = this.#metrics;
    const connection = new ServerConnection(
      conn,
      this.#dispatcher,
      this.#limits,
      this.#log,
      metrics,
    );
    this.#connections.add(connection);
    metrics?.connectionOpened();
    connection.run(() => !this.#closing).finally(() => {
      this.#connections.delete(connection);
      metrics?.connectionClosed();
    });
  }

  #sweep(): void {
    const now = Date.now();
    for (const connection of this.#connections) connection.checkDeadlines(now);
    this.#log.flush(false);
  }
}

/** Resolves when `promise` settles or `ms` have passed, whichever comes first; never rejects. */
async function within(promise: Promise<unknown>, ms: number): Promise<void> {
  if (ms <= 0) return;
  let timer: ReturnType<typeof setTimeout> | undefined;
  try {
    await Promise.race([
      promise.catch(() => {}),
      new Promise<void>((resolve) => timer = setTimeout(resolve, ms)),
    ]);
  } finally {
    clearTimeout(timer);
  }
}
