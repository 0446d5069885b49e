// One connection of the client, from its first byte to its loss: frames over the byte stream, the
// hello and the token, keepalive pings, the read loop, and the protocol's own calls (ids 0, -1,
// ...). The client's calls go out through it and their answers come back through `LinkEvents`.
// Every message is encoded and decoded here, and nowhere else in the client.

import { decodeFrame, DEFAULT_MAX_DEPTH, isId } from "./_codec.ts";
import { errorText, NotPlainError, Outgoing, requestMessage } from "./_outgoing.ts";
import type { ClientConnection } from "./_dial.ts";
import { closeQuietly, isDisconnect, reason } from "./_util.ts";
import { ConnectionError, ErrorCode, ProtocolError, RpcError, TimeoutError } from "./errors.ts";
import { DEFAULT_MAX_FRAME_BYTES } from "./_framing.ts";
import { FrameReader } from "./_frame_reader.ts";
import { FrameWriter } from "./_frame_writer.ts";

/** How a link behaves; the client's options, resolved. */
export interface LinkOptions {
  /** `host:port`, for messages. */
  readonly target: string;
  readonly maxFrameBytes: number | undefined;
  /** Bytes that may wait to be written before a new message is refused. */
  readonly maxQueuedBytes: number;
  /** Milliseconds one write may make no progress before the connection counts as dead; 0: none. */
  readonly writeTimeout: number;
  readonly keepalive: { readonly interval: number; readonly timeout: number } | undefined;
  /** Offer rich values in `rpc.hello`. */
  readonly richValues: boolean;
  readonly token: string | undefined;
  /** Milliseconds connecting may take, for messages (`start()` takes the deadline). */
  readonly connectTimeout: number;
}

/** What a link tells its owner. Called synchronously from the read loop. */
export interface LinkEvents {
  /** The answer to a call the owner sent on `link` with a positive id. */
  response(link: Link, id: number, error: RpcError | undefined, result: unknown): void;
  /** A notification from the server; `params` as received (an array, an object, or undefined). */
  notification(method: string, params: unknown): void;
  /**
   * The server said `rpc.goaway`: it is shutting down, answers calls already running here, and
   * answers new ones with -32001. Not called for a link whose `start()` has not finished: its
   * opener sees {@linkcode Link.goingAway} instead.
   */
  goaway(link: Link): void;
  /** The link is gone; called once, also for a link that never finished `start()`. */
  lost(link: Link, error: ConnectionError): void;
}

/** A call of the protocol's own, waiting for its answer. */
interface InternalCall {
  resolve(value: unknown): void;
  reject(error: unknown): void;
  timer: ReturnType<typeof setTimeout>;
}

/** A message waiting for the write under way; `message` is cleared when its call is withdrawn. */
interface Queued {
  message: Outgoing | undefined;
  readonly size: number;
}

/** One connection of a client. */
export class Link {
  /** Resolves once the read loop has ended: the connection is closed and nothing more arrives. */
  readonly done: Promise<void>;
  #conn: ClientConnection;
  #options: LinkOptions;
  #events: LinkEvents;
  #writer: FrameWriter;
  #maxFrameBytes: number;
  #rich = false;
  #lost = false;
  #started = false;
  #goingAway = false;
  #lastHeard = Date.now();
  /**
   * Set by every read; the keepalive check dates it, so that the clock is read once a check, not
   * on every message.
   */
  #heard = false;
  /** The server's error for a message it could not read (id null), just before it closes. */
  #serverError: RpcError | undefined;
  #internal = new Map<number, InternalCall>();
  #nextInternalId = 0;
  #keepalive: ReturnType<typeof setInterval> | undefined;
  #pinging = false;
  #watchdog: ReturnType<typeof setTimeout> | undefined;
  /**
   * Messages sent while a write is under way, held here rather than in the writer's buffer so that
   * a call that ends before they go out can take its message back.
   */
  #outbox: Queued[] = [];
  #outboxBytes = 0;
  #outboxById = new Map<number, Queued>();
  /** Entries of the outbox taken back, dropped from it when they are many. */
  #withdrawn = 0;
  #pumping = false;

  /** Starts reading from `conn` at once; `start()` then says hello. */
  constructor(conn: ClientConnection, options: LinkOptions, events: LinkEvents) {
    this.#conn = conn;
    this.#options = options;
    this.#events = events;
    this.#maxFrameBytes = options.maxFrameBytes ?? DEFAULT_MAX_FRAME_BYTES;
    const limit = options.maxFrameBytes === undefined
      ? {}
      : { maxFrameBytes: options.maxFrameBytes };
    this.#writer = new FrameWriter(
      { write: (bytes) => this.#write(bytes) },
      { ...limit, onError: (error) => this.#fail(this.#lostError(error)) },
    );
    this.done = this.#readLoop(new FrameReader(conn, limit));
  }

  /** Whether the server took rich values in `rpc.hello`. */
  get rich(): boolean {
    return this.#rich;
  }

  /** Whether the connection is gone. */
  get lost(): boolean {
    return this.#lost;
  }

  /** Whether the server said `rpc.goaway` on this connection. */
  get goingAway(): boolean {
    return this.#goingAway;
  }

  /** `host:port` of the server, for messages. */
  get target(): string {
    return this.#options.target;
  }

  /**
   * The hello (one round trip, unless rich values are off), then the token, then keepalive, all
   * within `deadline` (`Date.now()` time). On failure the link is closed.
   *
   * @throws {TimeoutError} When the server does not answer in time.
   * @throws {ConnectionError} When the connection fails or the server refuses the token.
   * @throws The signal's reason when it aborts first.
   */
  async start(deadline: number, signal: AbortSignal | undefined): Promise<void> {
    const { target, connectTimeout } = this.#options;
    const timeout = () => Math.max(1, deadline - Date.now());
    // Aborting ends the attempt at once, not when its answers time out.
    const onAbort = () => this.close(new ConnectionError(`Cannot connect to "${target}": aborted`));
    signal?.addEventListener("abort", onAbort, { once: true });
    try {
      signal?.throwIfAborted();
      // The hello is one round trip before the connection counts as open: with TLS 1.3 the
      // client's handshake ends before the server has checked the client certificate, so a
      // refusal shows here. (With richValues: false there is none: it shows on the first call.)
      if (this.#options.richValues) {
        try {
          const answer = await this.#internalCall("rpc.hello", { extensions: ["rich"] }, timeout());
          const extensions = (answer as { extensions?: unknown } | null)?.extensions;
          this.#rich = Array.isArray(extensions) && extensions.includes("rich");
        } catch (error) {
          // A plain JSON-RPC server answers rpc.hello with "method not found": it gets plain JSON.
          // A server that answers "shutting down" takes no calls: this connection is no use.
          if (error instanceof RpcError && error.code === ErrorCode.ShuttingDown) {
            throw new ConnectionError(`Cannot connect to "${target}": ${error.message}`, {
              cause: error,
            });
          }
          if (!(error instanceof RpcError)) {
            if (signal?.aborted) throw signal.reason;
            throw error instanceof TimeoutError
              ? new TimeoutError(
                `Cannot connect to "${target}": no answer within ${connectTimeout} ms`,
              )
              : new ConnectionError(`Cannot connect to "${target}": ${reason(underlying(error))}`, {
                cause: error,
              });
          }
        }
      }
      if (this.#options.token !== undefined) {
        try {
          await this.#internalCall("rpc.auth", [this.#options.token], timeout());
        } catch (error) {
          if (signal?.aborted) throw signal.reason;
          const why = error instanceof RpcError && error.code === ErrorCode.AuthenticationFailed
            ? "the server refused the token"
            : reason(error);
          throw error instanceof TimeoutError
            ? new TimeoutError(
              `Cannot connect to "${target}": no answer to the token within ${connectTimeout} ms`,
            )
            : new ConnectionError(`Cannot connect to "${target}": ${why}`, { cause: error });
        }
      }
      signal?.throwIfAborted();
    } catch (error) {
      this.close(new ConnectionError(`Cannot connect to "${target}": ${reason(error)}`));
      throw error;
    } finally {
      signal?.removeEventListener("abort", onAbort);
    }
    this.#started = true;
    if (this.#options.keepalive && !this.#lost) {
      const { interval } = this.#options.keepalive;
      this.#keepalive = setInterval(() => this.#checkKeepalive(), Math.max(10, interval / 4));
    }
  }

  /**
   * Sends call `id`; `timeout` (ms) travels with it as its deadline, and `traceparent` (when
   * tracing) names its client span as the server span's parent.
   *
   * @throws {TypeError} When the params cannot be encoded.
   * @throws {RangeError} When the message is larger than the frame limit.
   * @throws {ConnectionError} When the link is lost or too many bytes wait to be written.
   */
  call(
    id: number,
    method: string,
    params: unknown,
    timeout: number | undefined,
    traceparent?: string,
  ): void {
    this.#send(this.#encode(id, method, params, timeout, traceparent), id, `call "${method}"`);
  }

  /**
   * Sends a notification.
   *
   * @throws {TypeError} When the params cannot be encoded.
   * @throws {RangeError} When the message is larger than the frame limit.
   * @throws {ConnectionError} When the link is lost or too many bytes wait to be written.
   */
  notify(method: string, params: unknown): void {
    this.#send(this.#encode(undefined, method, params, undefined), undefined, `notify "${method}"`);
  }

  /**
   * Takes call `id` back if it has not been handed to the connection yet.
   *
   * @returns Whether it was taken back: the server will never see it.
   */
  withdraw(id: number): boolean {
    const queued = this.#outboxById.get(id);
    if (queued === undefined) return false;
    this.#outboxById.delete(id);
    queued.message = undefined;
    this.#outboxBytes -= queued.size;
    // Calls that time out against a jammed connection must not grow the outbox, even by a slot.
    if (++this.#withdrawn > 16 && this.#withdrawn * 2 > this.#outbox.length) {
      this.#outbox = this.#outbox.filter((entry) => entry.message !== undefined);
      this.#withdrawn = 0;
    }
    return true;
  }

  /** Tells the server that nobody waits for call `id` any more. Never throws. */
  cancel(id: number): void {
    if (this.#lost || this.withdraw(id)) return;
    try {
      this.#send(
        new Outgoing("null", `{"jsonrpc":"2.0","method":"rpc.cancel","params":[${id}]}`),
        undefined,
        "cancel",
      );
    } catch {
      // The connection is failing or jammed; the server aborts the call when it notices.
    }
  }

  /** Closes the connection; `error` goes to the protocol's own calls and to `lost`, once. */
  close(error: ConnectionError): void {
    this.#fail(error);
  }

  // --- writing ----------------------------------------------------------------------------------

  /**
   * Hands `message` to the writer, or, while a write is under way, keeps it in the outbox until
   * that write is done (then everything kept goes out in one write, as the writer would do).
   */
  #send(message: Outgoing, id: number | undefined, what: string): void {
    const { target, maxQueuedBytes } = this.#options;
    if (this.#lost) {
      throw new ConnectionError(`Cannot ${what}: connection to "${target}" is closed`);
    }
    const size = message.size;
    const queued = this.#writer.queuedBytes + this.#outboxBytes;
    // A message alone is always taken (up to the frame limit): the limit bounds what piles up.
    if (queued > 0 && queued + size > maxQueuedBytes) {
      throw new ConnectionError(
        `Cannot ${what}: ${queued} bytes already wait to be written to "${target}", which is not reading (maxQueuedBytes is ${maxQueuedBytes})`,
      );
    }
    if (this.#outbox.length === 0 && this.#writer.writeStartedAt === undefined) {
      message.writeTo(this.#writer);
      return;
    }
    // The writer checks the frame limit when a message reaches it: check it now instead. Text
    // takes at most 3 bytes a code unit.
    if (message.extended || size * 3 > this.#maxFrameBytes) {
      const bytes = message.byteLength();
      if (bytes === 0 || bytes > this.#maxFrameBytes) {
        throw new RangeError(
          `Cannot write frame: ${bytes} bytes exceed the limit of ${this.#maxFrameBytes} bytes`,
        );
      }
    }
    const entry: Queued = { message, size };
    this.#outbox.push(entry);
    this.#outboxBytes += size;
    if (id !== undefined) this.#outboxById.set(id, entry);
    if (!this.#pumping) {
      this.#pumping = true;
      void this.#writer.flushed().then(() => this.#pump());
    }
  }

  /** Moves the outbox into the writer once its write is done. */
  #pump(): void {
    this.#pumping = false;
    const outbox = this.#outbox;
    this.#outbox = [];
    this.#outboxBytes = 0;
    this.#outboxById.clear();
    this.#withdrawn = 0;
    if (this.#lost) return;
    try {
      for (const { message } of outbox) message?.writeTo(this.#writer);
    } catch (error) {
      // Cannot happen (`#send` checked each size); were it to, the stream would be out of step.
      this.#fail(this.#lostError(error));
    }
  }

  /** The writer's sink: the connection, watched for writes that make no progress. */
  #write(bytes: Uint8Array): Promise<number> {
    if (this.#watchdog === undefined && this.#options.writeTimeout > 0 && !this.#lost) {
      this.#watchdog = setTimeout(() => this.#checkWrite(), this.#options.writeTimeout);
    }
    return this.#conn.write(bytes);
  }

  /** Ends a link whose current write has waited longer than `writeTimeout`. */
  #checkWrite(): void {
    this.#watchdog = undefined;
    const since = this.#writer.writeStartedAt;
    if (this.#lost || since === undefined) return; // idle: the next write arms it again
    const { writeTimeout, target } = this.#options;
    const waited = Date.now() - since;
    if (waited < writeTimeout) {
      this.#watchdog = setTimeout(() => this.#checkWrite(), writeTimeout - waited);
      return;
    }
    this.#fail(
      new ConnectionError(
        `Cannot complete call: "${target}" read nothing for ${writeTimeout} ms (writeTimeout)`,
      ),
    );
  }

  /** A request or notification, rich when the server took rich values and the params need it. */
  #encode(
    id: number | undefined,
    method: string,
    params: unknown,
    timeout: number | undefined,
    traceparent?: string,
  ): Outgoing {
    try {
      return requestMessage(
        id,
        method,
        params,
        timeout,
        this.#rich,
        DEFAULT_MAX_DEPTH,
        traceparent,
      );
    } catch (error) {
      const what = id === undefined ? "notify" : "call";
      const why = error instanceof NotPlainError
        ? `${error.message}, and the server has no rich values`
        : reason(error);
      // A cycle and too deep a value are one error, like JSON.stringify's TypeError for a cycle.
      throw new TypeError(`Cannot ${what} "${method}": ${why}`, { cause: error });
    }
  }

  // --- the protocol's own calls -----------------------------------------------------------------

  /** A call of the protocol's own (`rpc.hello`, `rpc.auth`, `rpc.ping`), ids 0, -1, -2, ... */
  #internalCall(method: string, params: unknown, timeout: number): Promise<unknown> {
    const id = this.#nextInternalId--;
    const paramsText = params === undefined ? "" : `,"params":${JSON.stringify(params)}`;
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.#internal.delete(id);
        reject(new TimeoutError(`Cannot call "${method}": no response within ${timeout} ms`));
      }, timeout);
      this.#internal.set(id, { resolve, reject, timer });
      try {
        this.#send(
          new Outgoing(
            String(id),
            `{"jsonrpc":"2.0","id":${id},"method":"${method}"${paramsText}}`,
          ),
          undefined,
          method,
        );
      } catch (error) {
        this.#settleInternal(id, error, undefined);
      }
    });
  }

  #settleInternal(id: number, error: unknown, result: unknown): void {
    const call = this.#internal.get(id);
    if (call === undefined) return;
    this.#internal.delete(id);
    clearTimeout(call.timer);
    if (error === undefined) call.resolve(result);
    else call.reject(error);
  }

  #checkKeepalive(): void {
    const { interval, timeout } = this.#options.keepalive!;
    const now = Date.now();
    if (this.#heard) {
      this.#heard = false;
      this.#lastHeard = now;
    }
    if (this.#lost || this.#pinging || now - this.#lastHeard < interval) return;
    this.#pinging = true;
    this.#internalCall("rpc.ping", undefined, timeout).then(() => {
      this.#pinging = false;
    }, (error) => {
      // Any answer says the server is there, an error too (a draining server answers -32001):
      // pinging goes on, and finds the server if it hangs later.
      if (!(error instanceof TimeoutError)) this.#pinging = false;
      else {
        this.#fail(
          new ConnectionError(
            `Cannot complete call: "${this.#options.target}" did not answer a keepalive ping within ${timeout} ms`,
          ),
        );
      }
    });
  }

  // --- reading ----------------------------------------------------------------------------------

  async #readLoop(reader: FrameReader): Promise<void> {
    try {
      for (let frames = await reader.read(); frames; frames = await reader.read()) {
        this.#heard = true;
        // The server's replies are bounded by the frame size, not by the count of their values: a
        // large result is the point of many calls.
        for (const frame of frames) {
          this.#receive(decodeFrame(frame, DEFAULT_MAX_DEPTH, Number.MAX_SAFE_INTEGER));
        }
      }
      this.#fail(
        this.#serverError ? this.#lostError(undefined) : new ConnectionError(
          `Cannot complete call: server "${this.#options.target}" closed the connection`,
        ),
      );
    } catch (error) {
      this.#fail(this.#lostError(error));
    }
  }

  #receive(message: unknown): void {
    if (!Array.isArray(message)) return this.#receiveOne(message);
    // A batch holds messages, not batches.
    for (const item of message) if (!Array.isArray(item)) this.#receiveOne(item);
  }

  #receiveOne(message: unknown): void {
    if (message === null || typeof message !== "object") return;
    const { id, method } = message as { id?: unknown; method?: unknown };
    if (typeof method === "string") return this.#receiveRequest(message, method);
    const error = Object.hasOwn(message, "error")
      ? toRpcError((message as { error: unknown }).error)
      : undefined;
    if (typeof id !== "number") {
      // id null: the server could not read something we sent and is about to close.
      if (id === null && error !== undefined) this.#serverError = error;
      return;
    }
    const result = (message as { result?: unknown }).result;
    if (id <= 0) this.#settleInternal(id, error, result);
    else this.#events.response(this, id, error, result);
  }

  /** A notification goes to the owner; a request gets "method not found". */
  #receiveRequest(request: object, method: string): void {
    if (Object.hasOwn(request, "id")) {
      const id = (request as { id: unknown }).id;
      try {
        const idText = JSON.stringify(isId(id) ? id : null);
        const text = errorText(
          idText,
          ErrorCode.MethodNotFound,
          `Method not found: ${JSON.stringify(method)}`,
        );
        this.#send(new Outgoing(idText, text), undefined, "answer the server");
      } catch {
        // Jammed (or over the frame limit, for a long name): a server that asks must wait.
      }
      return;
    }
    if (method === "rpc.goaway") {
      if (this.#goingAway) return;
      this.#goingAway = true;
      if (this.#started) this.#events.goaway(this);
      return;
    }
    this.#events.notification(method, (request as { params?: unknown }).params);
  }

  // --- losing -----------------------------------------------------------------------------------

  #fail(error: ConnectionError): void {
    if (this.#lost) return;
    this.#lost = true;
    clearInterval(this.#keepalive);
    clearTimeout(this.#watchdog);
    this.#watchdog = undefined;
    this.#outbox = [];
    this.#outboxBytes = 0;
    this.#outboxById.clear();
    closeQuietly(this.#conn);
    for (const id of [...this.#internal.keys()]) this.#settleInternal(id, error, undefined);
    this.#events.lost(this, error);
  }

  #lostError(error: unknown): ConnectionError {
    const serverError = this.#serverError;
    const detail = serverError
      ? `the server refused a message: ${serverError.message}`
      : error instanceof ProtocolError || (error !== undefined && !isDisconnect(error))
      ? reason(error)
      : "the connection was lost";
    return new ConnectionError(`Cannot complete call: ${detail} ("${this.#options.target}")`, {
      cause: serverError ?? error,
    });
  }
}

/** The error under a ConnectionError of ours, for a message that says what really failed. */
function underlying(error: unknown): unknown {
  return error instanceof ConnectionError && error.cause !== undefined ? error.cause : error;
}

/**
 * An error member from the wire as an {@linkcode RpcError}. Its `code` is documented as an
 * integer, so a code that is not a safe integer (missing, text, 1.5, 1e400 parsed as Infinity)
 * is not passed on: the error gets -32603 (internal error), and `data` holds the error object as
 * received, so nothing is lost. A message that is not text reads "Invalid error response".
 */
export function toRpcError(error: unknown): RpcError {
  if (error === null || typeof error !== "object" || Array.isArray(error)) {
    return new RpcError(ErrorCode.InternalError, "Invalid error response", { data: error });
  }
  const { code, message, data } = error as { code?: unknown; message?: unknown; data?: unknown };
  const text = typeof message === "string" ? message : "Invalid error response";
  return Number.isSafeInteger(code)
    ? new RpcError(code as number, text, { data })
    : new RpcError(ErrorCode.InternalError, text, { data: error });
}
