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
 * const server = serve({
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

import { Dispatcher } from "./_dispatch.ts";
import { errorText } from "./_codec.ts";
import { ErrorCode, ProtocolError } from "./errors.ts";
import { FrameReader, FrameWriter } from "./framing.ts";
import { closeQuietly, formatAddr, isDisconnect, reason } from "./_util.ts";

/** The limits and timeouts a server starts with, each with the reason for its value. */
export const DEFAULT_SERVER_OPTIONS = {
  /** The port of the CLI and of the client: 443 is HTTPS's, and 7443 is a common "alternate". */
  port: 7443,
  /**
   * A TLS handshake takes a few round trips; 10 s covers a slow network while a client that
   * connects and says nothing holds its socket only that long.
   */
  handshakeTimeout: 10_000,
  /** How long `shutdown()` waits for calls in flight before it closes their connections. */
  shutdownTimeout: 10_000,
} as const;

/** An exposed method, as introspection found it. */
export interface MethodInfo {
  /** The name callers use, dotted for namespaces (`"math.add"`). */
  readonly name: string;
  /** The parameter names, read from the function's source; destructured ones are `argN`. */
  readonly params: readonly string[];
  /** Whether the last parameter is a rest parameter, so that any number of params fits. */
  readonly rest: boolean;
}

/** Options for {@linkcode serve}. */
export interface ServeOptions {
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
   * Milliseconds a client has to complete the TLS handshake before its connection is closed.
   *
   * @default {10000}
   */
  handshakeTimeout?: number;
  /**
   * The largest frame accepted or sent, in bytes.
   *
   * @default {16777216}
   */
  maxFrameBytes?: number;
  /**
   * Milliseconds `shutdown()` lets calls in flight finish before it closes their connections.
   *
   * @default {10000}
   */
  shutdownTimeout?: number;
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
   * @default {{ title: "tlsrpc", version: "0.0.0" }}
   */
  info?: { title: string; version: string };
  /** Aborting it shuts the server down, as `shutdown()` does. */
  signal?: AbortSignal;
  /**
   * Called once the server listens. The default prints `listening on HOSTNAME:PORT` to stderr.
   */
  onListen?: (addr: Deno.NetAddr) => void;
  /**
   * Called with each error that cost a connection, or that the accept loop recovered from, and a
   * one-line description of it. The default prints the line to stderr.
   */
  onError?: (error: unknown, line: string) => void;
}

/** A running server, from {@linkcode serve}. */
export interface RpcServer extends AsyncDisposable {
  /** The address the server listens on, with the real port when `port` was 0. */
  readonly addr: Deno.NetAddr;
  /** The exposed methods, by name. */
  readonly methods: ReadonlyMap<string, MethodInfo>;
  /** Resolves when the server has stopped and every connection is closed. */
  readonly finished: Promise<void>;
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
 * await using server = serve(new Greeter(), {
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
export function serve(handlers: object, options: ServeOptions): RpcServer {
  return new Server(handlers, options);
}

class Server implements RpcServer {
  readonly addr: Deno.NetAddr;
  readonly finished: Promise<void>;
  #dispatcher: Dispatcher;
  #listener: Deno.TlsListener;
  #options: Required<Pick<ServeOptions, "handshakeTimeout" | "shutdownTimeout">> & ServeOptions;
  #connections = new Set<ServerConnection>();
  #tasks = new Set<Promise<void>>();
  #closing = false;
  #shutdown: Promise<void> | undefined;
  #wakeAccept: (() => void) | undefined;
  #onAbort = () => void this.shutdown();

  constructor(handlers: object, options: ServeOptions) {
    this.#dispatcher = new Dispatcher(handlers, {
      exposeStack: options.exposeStack ?? false,
      ...(options.info && { info: options.info }),
    });
    this.#options = {
      ...options,
      handshakeTimeout: options.handshakeTimeout ?? DEFAULT_SERVER_OPTIONS.handshakeTimeout,
      shutdownTimeout: options.shutdownTimeout ?? DEFAULT_SERVER_OPTIONS.shutdownTimeout,
    };
    // Checked here so that a bad value fails at startup, not at the first connection.
    new FrameReader({ read: () => Promise.resolve(null) }, options);
    this.#listener = Deno.listenTls({
      hostname: options.hostname ?? "127.0.0.1",
      port: options.port ?? DEFAULT_SERVER_OPTIONS.port,
      cert: options.cert,
      key: options.key,
      transport: "tcp",
    });
    this.addr = this.#listener.addr;
    (options.onListen ?? ((addr) => console.error(`listening on ${formatAddr(addr)}`)))(this.addr);
    this.finished = this.#acceptLoop();
    if (options.signal?.aborted) void this.shutdown();
    else options.signal?.addEventListener("abort", this.#onAbort, { once: true });
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
    closeQuietly(this.#listener);
    this.#wakeAccept?.();
    const drained = Promise.all([...this.#connections].map((connection) => connection.drain()));
    let timer: ReturnType<typeof setTimeout> | undefined;
    const timeout = new Promise<void>((resolve) => {
      timer = setTimeout(resolve, this.#options.shutdownTimeout);
    });
    await Promise.race([drained, timeout]);
    clearTimeout(timer);
    for (const connection of this.#connections) connection.close();
    await this.finished;
  }

  async #acceptLoop(): Promise<void> {
    let backoff = 0;
    while (!this.#closing) {
      let conn: Deno.TlsConn;
      try {
        conn = await this.#listener.accept();
        backoff = 0;
      } catch (error) {
        if (this.#closing || error instanceof Deno.errors.BadResource) break;
        // EMFILE and friends pass; ending the server over them would be the bug we exist to fix.
        backoff = Math.min(Math.max(backoff * 2, 10), 1000);
        this.#report(error, `accept failed, retrying in ${backoff} ms: ${reason(error)}`);
        await new Promise<void>((resolve) => {
          const timer = setTimeout(resolve, backoff);
          this.#wakeAccept = () => {
            clearTimeout(timer);
            resolve();
          };
        });
        this.#wakeAccept = undefined;
        continue;
      }
      const task = this.#handle(conn);
      this.#tasks.add(task);
      task.finally(() => this.#tasks.delete(task));
    }
    closeQuietly(this.#listener);
    while (this.#tasks.size > 0) await Promise.all(this.#tasks);
  }

  /** Runs one connection from handshake to close. Never rejects. */
  async #handle(conn: Deno.TlsConn): Promise<void> {
    const peer = formatAddr(conn.remoteAddr as Deno.NetAddr);
    try {
      await handshake(conn, this.#options.handshakeTimeout);
    } catch (error) {
      this.#report(error, `TLS handshake with ${peer} failed: ${reason(error)}`);
      closeQuietly(conn);
      return;
    }
    if (this.#closing) {
      closeQuietly(conn);
      return;
    }
    const connection = new ServerConnection(
      conn,
      peer,
      this.#dispatcher,
      this.#options,
      (e, l) => this.#report(e, l),
    );
    this.#connections.add(connection);
    try {
      await connection.run(() => !this.#closing);
    } finally {
      this.#connections.delete(connection);
    }
  }

  #report(error: unknown, line: string): void {
    try {
      (this.#options.onError ?? ((_, text) => console.error(text)))(error, line);
    } catch {
      // A failing log hook must not take the connection task down with it.
    }
  }
}

/** One accepted connection after its handshake: reads frames, dispatches, writes replies. */
class ServerConnection {
  #conn: Deno.TlsConn;
  #peer: string;
  #dispatcher: Dispatcher;
  #reader: FrameReader;
  #writer: FrameWriter;
  #report: (error: unknown, line: string) => void;
  #inFlight = 0;
  #idleWaiters: (() => void)[] = [];
  #closed = false;

  constructor(
    conn: Deno.TlsConn,
    peer: string,
    dispatcher: Dispatcher,
    options: ServeOptions,
    report: (error: unknown, line: string) => void,
  ) {
    this.#conn = conn;
    this.#peer = peer;
    this.#dispatcher = dispatcher;
    this.#report = report;
    const frameOptions = options.maxFrameBytes === undefined
      ? {}
      : { maxFrameBytes: options.maxFrameBytes };
    this.#reader = new FrameReader(conn, frameOptions);
    this.#writer = new FrameWriter(conn, {
      ...frameOptions,
      onError: (error) => {
        if (!isDisconnect(error)) {
          this.#report(error, `write to ${this.#peer} failed: ${reason(error)}`);
        }
        this.close();
      },
    });
  }

  /** Serves frames until the peer leaves or the connection breaks; never rejects. */
  async run(accepting: () => boolean): Promise<void> {
    try {
      for (let frames = await this.#reader.read(); frames; frames = await this.#reader.read()) {
        const accept = accepting();
        for (const frame of frames) this.#dispatch(frame, accept);
      }
      // The peer finished sending; it may still be waiting for the replies to what it sent.
      await this.drain();
    } catch (error) {
      if (this.#closed) return;
      if (error instanceof ProtocolError) {
        this.#report(error, `protocol error from ${this.#peer}: ${error.message}`);
        this.#send(
          errorText("null", ErrorCode.InvalidRequest, `Invalid Request: ${error.message}`),
        );
        await this.#writer.flushed();
      } else if (!isDisconnect(error)) {
        this.#report(error, `read from ${this.#peer} failed: ${reason(error)}`);
      }
    } finally {
      this.close();
    }
  }

  /** Resolves when no call is in flight and every reply is written. */
  async drain(): Promise<void> {
    while (this.#inFlight > 0 && !this.#closed) {
      await new Promise<void>((resolve) => this.#idleWaiters.push(resolve));
    }
    await this.#writer.flushed();
  }

  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    closeQuietly(this.#conn);
    this.#wakeIdle();
  }

  #wakeIdle(): void {
    const waiters = this.#idleWaiters;
    this.#idleWaiters = [];
    for (const resolve of waiters) resolve();
  }

  #dispatch(frame: Uint8Array, accept: boolean): void {
    let reply;
    try {
      reply = this.#dispatcher.handleFrame(frame, accept);
    } catch (error) {
      this.#report(error, `cannot answer ${this.#peer}: ${reason(error)}`);
      return;
    }
    if (typeof reply === "string") this.#send(reply);
    else if (reply !== undefined) {
      this.#inFlight++;
      reply.then(
        (text) => this.#finish(text),
        (error) => {
          this.#report(error, `cannot answer ${this.#peer}: ${reason(error)}`);
          this.#finish(undefined);
        },
      );
    }
  }

  #finish(text: string | undefined): void {
    if (text !== undefined && !this.#closed) this.#send(text);
    if (--this.#inFlight === 0) this.#wakeIdle();
  }

  #send(text: string): void {
    try {
      this.#writer.writeText(text);
    } catch (error) {
      // The reply is over the frame limit: the caller still gets an answer.
      const id = /^\{"jsonrpc":"2.0","id":((?:"(?:[^"\\]|\\.)*"|[^,]*)),/.exec(text)?.[1] ?? "null";
      this.#writer.writeText(
        errorText(id, ErrorCode.InternalError, `Cannot send reply: ${reason(error)}`),
      );
    }
  }
}

/** Completes the TLS handshake, or rejects once `timeout` ms have passed. */
async function handshake(conn: Deno.TlsConn, timeout: number): Promise<void> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  try {
    await Promise.race([
      conn.handshake(),
      new Promise((_, reject) => {
        timer = setTimeout(
          () => reject(new Error(`no handshake within ${timeout} ms`)),
          timeout,
        );
      }),
    ]);
  } finally {
    clearTimeout(timer);
  }
}
