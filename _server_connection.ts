// One accepted connection after its handshake, on the server: reads frames, dispatches them with
// backpressure and in fair slices, enforces its deadlines, and writes the replies. The glue between
// framing (framing.ts) and dispatch (_dispatch.ts).

import type { Call, Session } from "./_call.ts";
import { Codec, type Outgoing } from "./_codec.ts";
import type { Dispatcher } from "./_dispatch.ts";
import type { Limits } from "./_limits.ts";
import type { RateLimitedLog } from "./_log.ts";
import type { Connection } from "./_transport.ts";
import { ConnectionError, ErrorCode, ProtocolError } from "./errors.ts";
import type { CertificateIdentity } from "./_x509_identity.ts";
import { FrameReader } from "./_frame_reader.ts";
import { FrameWriter } from "./_frame_writer.ts";
import { formatAddr, isDisconnect, reason } from "./_util.ts";
import type { Metrics } from "./_metrics.ts";
import type { LimitName } from "./_metrics_text.ts";

/**
 * Milliseconds of dispatching one connection's frames before it yields to the others: a client
 * that pipelines thousands of calls is served in slices, and the calls of other connections flow
 * in between. 5 ms keeps the yield's own cost (one macrotask) under 1 % of the work.
 */
const SLICE_MS = 5;

/** Connections of this process being served now: those that may have to yield to others. */
let serving = 0;

/**
 * The connection that dispatched the latest frame. A connection whose frame comes after another
 * connection's has let the others run since its own last frame: its slice begins anew.
 */
let lastToDispatch: ServerConnection | undefined;

/**
 * Bytes of replies waiting to be written past which a connection's next frame waits: 1 MiB keeps
 * many small replies flowing in one write, while a client that requests large replies and never
 * reads them pins about this much plus one reply, not `maxQueuedBytes` (which still closes it).
 */
const WRITE_HIGH_WATER = 1024 * 1024;

/** Serves one connection: reads frames, dispatches, writes replies. */
export class ServerConnection implements Session {
  readonly peer: { readonly hostname: string; readonly port: number };
  readonly certificate: CertificateIdentity | undefined;
  readonly codec: Codec;
  readonly calls: Map<string, Call> = new Map();
  tokenIdentity: unknown;
  authenticated: boolean;
  authAttempts = 0;
  #inFlight = 0;
  #metrics: Metrics | undefined;
  #accepting: () => boolean = () => true;
  #conn: Connection;
  #peer: string;
  #dispatcher: Dispatcher;
  #limits: Limits;
  #log: RateLimitedLog;
  #reader: FrameReader;
  #writer: FrameWriter;
  #waiters: (() => void)[] = [];
  #openedAt = Date.now();
  #lastActive = this.#openedAt;
  /**
   * Set by every read and every reply, read by the deadline sweep, which dates the activity: the
   * clock is read once a sweep instead of on every message. An idle connection is so closed up to
   * one sweep (a quarter of the shortest deadline) later, never earlier.
   */
  #active = false;
  #closed = false;
  #closeAfterReply = false;
  #finished: Promise<void> | undefined;

  constructor(
    conn: Connection,
    dispatcher: Dispatcher,
    limits: Limits,
    log: RateLimitedLog,
    metrics?: Metrics,
  ) {
    this.#conn = conn;
    this.#metrics = metrics;
    this.peer = conn.remoteAddr;
    this.#peer = formatAddr(conn.remoteAddr);
    this.certificate = conn.peerCertificate;
    this.#dispatcher = dispatcher;
    this.authenticated = !dispatcher.requiresToken;
    this.#limits = limits;
    this.#log = log;
    this.codec = new Codec({
      maxDepth: limits.maxDepth,
      maxJsonValues: limits.maxJsonValues,
      decodeLimits: {
        maxDecodedBytes: limits.maxDecodedBytes,
        maxBigIntDigits: limits.maxBigIntDigits,
      },
    });
    this.#reader = new FrameReader(conn, {
      maxFrameBytes: limits.maxFrameBytes,
      onRead: metrics && ((count) => metrics.bytesReceived(count)),
    });
    this.#writer = new FrameWriter(conn, {
      maxFrameBytes: limits.maxFrameBytes,
      onWrite: metrics && ((count) => metrics.bytesSent(count)),
      onError: (error) => {
        if (!isDisconnect(error)) {
          this.#log.report(error, `write to ${this.#peer} failed: ${reason(error)}`, {
            event: "write_failed",
            peer: this.#peer,
          });
        }
        this.close();
      },
    });
  }

  /** Resolves once `run` has ended. */
  get finished(): Promise<void> {
    return this.#finished ?? Promise.resolve();
  }

  /** False while the server shuts down. */
  get accepting(): boolean {
    return this.#accepting();
  }

  /** Whether the connection is closing or closed: nothing more is dispatched. */
  get closing(): boolean {
    return this.#closeAfterReply || this.#closed;
  }

  /** Serves frames until the peer leaves or the connection breaks; never rejects. */
  run(accepting: () => boolean): Promise<void> {
    this.#accepting = accepting;
    this.#finished = this.#run();
    return this.#finished;
  }

  notify(method: string, params: unknown[]): void {
    if (this.#closed) return;
    let message;
    try {
      message = this.codec.request(undefined, method, params);
    } catch (error) {
      throw new TypeError(`Cannot notify "${method}": ${reason(error)}`, { cause: error });
    }
    this.#send(message);
  }

  get inFlight(): number {
    return this.#inFlight;
  }

  began(): void {
    this.#inFlight++;
    this.#metrics?.callStarted();
  }

  refused(limit: string): void {
    this.#metrics?.limitRefused(limit as LimitName);
  }

  /** With metrics, when the frames now dispatched were read: see {@linkcode Session.receivedAt}. */
  receivedAt: number | undefined;
  /** Calls answered at once since the read, timed together by #timeAnswered. */
  #answeredMethods: string[] = [];
  #answeredCodes: number[] = [];

  answeredAtOnce(method: string, code: number): void {
    this.#answeredMethods.push(method);
    this.#answeredCodes.push(code);
  }

  /**
   * Counts the calls answered at once since the read, each as taking the time from the read to
   * now: one clock read for them all, and what their callers wait (their replies go out together
   * after the read's last call). Called before every wait of the read loop and at its end.
   */
  #timeAnswered(): void {
    const count = this.#answeredMethods.length;
    if (count === 0) return;
    const seconds = (performance.now() - this.receivedAt!) / 1000;
    for (let i = 0; i < count; i++) {
      try {
        this.#metrics!.callFinished(this.#answeredMethods[i]!, this.#answeredCodes[i]!, seconds);
      } catch {
        // Metrics must never cost a reply.
      }
    }
    this.#answeredMethods.length = 0;
    this.#answeredCodes.length = 0;
  }

  settled(): void {
    this.#inFlight--;
    this.#metrics?.callEnded();
    this.#active = true;
    if (this.#waiters.length > 0) this.#wake();
  }

  async #run(): Promise<void> {
    serving++;
    try {
      let sliceStart = 0;
      for (let frames = await this.#reader.read(); frames; frames = await this.#reader.read()) {
        this.#active = true;
        if (this.#metrics !== undefined) this.receivedAt = performance.now();
        for (const frame of frames) {
          // Backpressure: with its calls at the limit, a connection is neither dispatched nor read
          // until calls finish; the peer's sends queue up in TCP. The frames stay valid: the read
          // buffer is not touched before the next read.
          if (this.#inFlight >= this.#limits.maxInFlight) this.refused("max_in_flight");
          while (this.#inFlight >= this.#limits.maxInFlight && !this.closing) {
            this.#timeAnswered();
            await this.#wait();
          }
          if (this.closing) {
            this.#timeAnswered();
            return await this.#writer.flushed();
          }
          // A client that does not read its replies is not read either: past this many bytes of
          // replies waiting, its next frame waits until they are written (or writeTimeout ends it).
          if (this.#writer.queuedBytes > WRITE_HIGH_WATER) {
            this.#timeAnswered();
            await this.#writer.flushed();
            if (this.closing) return;
          }
          this.#dispatch(frame);
          // A yield costs a millisecond or more (a timer): only a connection that has held the
          // loop for a whole slice while others wait pays it. Alone, it has nobody to yield to;
          // taking turns with others (many clients calling in sequence), it yields already.
          if (serving > 1) {
            if (lastToDispatch !== this) {
              lastToDispatch = this;
              sliceStart = Date.now();
            } else if (Date.now() - sliceStart > SLICE_MS) {
              this.#timeAnswered();
              await yieldToOthers();
              sliceStart = Date.now();
            }
          }
        }
        this.#timeAnswered();
      }
      // The end of the stream is a disconnect, as in Go's net/http: the calls in flight are
      // aborted and their results dropped. What is already queued still goes out.
      this.#abortCalls(`client ${this.#peer} closed the connection`);
      await this.#writer.flushed();
    } catch (error) {
      if (this.#closed) return;
      if (error instanceof ProtocolError) {
        this.refused("max_frame_bytes");
        this.#log.report(error, `protocol error from ${this.#peer}: ${error.message}`, {
          event: "protocol_error",
          peer: this.#peer,
        });
        this.#send(
          this.codec.plain.error(
            "null",
            ErrorCode.InvalidRequest,
            `Invalid Request: ${error.message}`,
          ),
        );
        await this.#writer.flushed();
      } else if (!isDisconnect(error)) {
        this.#log.report(error, `read from ${this.#peer} failed: ${reason(error)}`, {
          event: "read_failed",
          peer: this.#peer,
        });
      }
    } finally {
      this.#timeAnswered(); // a read cut short by an error or a close
      serving--;
      if (lastToDispatch === this) lastToDispatch = undefined;
      this.close();
    }
  }

  /**
   * Tells the peer that the server is shutting down (`rpc.goaway`): it should send its next calls
   * on another connection, and close this one once its calls here are answered.
   */
  goAway(): void {
    if (this.#closed) return;
    this.#send(this.codec.plain.request(undefined, "rpc.goaway", []));
  }

  /** Resolves when no call is in flight and every reply is written, or the connection closed. */
  async drain(): Promise<void> {
    while (this.#inFlight > 0 && !this.#closed) await this.#wait();
    await this.#writer.flushed();
  }

  /** Closes the connection when a deadline has passed. */
  checkDeadlines(now: number): void {
    if (this.#active) {
      this.#active = false;
      this.#lastActive = now;
    }
    const { frameTimeout, idleTimeout, writeTimeout, authTimeout } = this.#limits;
    const frameStarted = this.#reader.frameStartedAt;
    const writeStarted = this.#writer.writeStartedAt;
    if (frameTimeout > 0 && frameStarted !== undefined && now - frameStarted > frameTimeout) {
      this.#abandon(`a frame took more than ${frameTimeout} ms to arrive`, "frame_timeout");
    } else if (
      writeTimeout > 0 && writeStarted !== undefined && now - writeStarted > writeTimeout
    ) {
      this.#abandon(`it read none of our replies for ${writeTimeout} ms`, "write_timeout");
    } else if (authTimeout > 0 && !this.authenticated && now - this.#openedAt > authTimeout) {
      // Without a token, a connection may only ping: it must not hold its slot for ever.
      this.#abandon(`it did not authenticate within ${authTimeout} ms`, "auth_timeout");
    } else if (
      idleTimeout > 0 && this.#inFlight === 0 && frameStarted === undefined &&
      writeStarted === undefined && now - this.#lastActive > idleTimeout
    ) {
      this.#abandon(`idle for ${idleTimeout} ms`, "idle_timeout");
    }
  }

  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#conn.close();
    this.#wake();
    this.#abortCalls(`client ${this.#peer} disconnected`);
  }

  closeSoon(why: string): void {
    if (this.#closeAfterReply) return;
    this.#log.report(undefined, `closing ${this.#peer}: ${why}`, {
      event: "closing",
      peer: this.#peer,
    });
    this.#closeAfterReply = true;
  }

  /** After a reply is queued (or dropped): closes once it is written, when closeSoon() asked. */
  #closeIfAsked(): void {
    if (this.#closeAfterReply) void this.#writer.flushed().then(() => this.close());
  }

  #abortCalls(why: string): void {
    if (this.calls.size === 0) return;
    const gone = new ConnectionError(`Cannot finish call: ${why}`);
    for (const call of this.calls.values()) call.abort(gone);
  }

  #abandon(why: string, limit?: LimitName): void {
    if (this.#closed) return;
    if (limit !== undefined) this.refused(limit);
    this.#log.report(undefined, `closed ${this.#peer}: ${why}`, {
      event: "closed",
      peer: this.#peer,
    });
    this.close();
  }

  #wait(): Promise<void> {
    return new Promise((resolve) => this.#waiters.push(resolve));
  }

  #wake(): void {
    const waiters = this.#waiters;
    this.#waiters = [];
    for (const resolve of waiters) resolve();
  }

  #dispatch(frame: Uint8Array): void {
    let reply;
    try {
      reply = this.#dispatcher.handleFrame(frame, this);
    } catch (error) {
      this.#log.report(error, `cannot answer ${this.#peer}: ${reason(error)}`, {
        event: "reply_failed",
        peer: this.#peer,
      });
      return;
    }
    if (!(reply instanceof Promise)) {
      if (reply !== undefined) this.#send(reply);
      this.#closeIfAsked();
      return;
    }
    reply.then(
      (message) => this.#reply(message),
      (error) => {
        this.#log.report(error, `cannot answer ${this.#peer}: ${reason(error)}`, {
          event: "reply_failed",
          peer: this.#peer,
        });
        this.#reply(undefined);
      },
    );
  }

  #reply(message: Outgoing | undefined): void {
    this.#active = true;
    if (message !== undefined && !this.#closed) this.#send(message);
    this.#closeIfAsked();
  }

  #send(message: Outgoing): void {
    try {
      message.writeTo(this.#writer);
    } catch (error) {
      // The reply is over the frame limit: the caller still gets an answer if one fits.
      try {
        const fallback = this.codec.plain.error(
          message.idText,
          ErrorCode.InternalError,
          `Cannot send reply: ${reason(error)}`,
        );
        fallback.writeTo(this.#writer);
      } catch {
        this.#abandon(`not even an error reply fits in ${this.#limits.maxFrameBytes} bytes`);
        return;
      }
    }
    if (this.#writer.queuedBytes > this.#limits.maxQueuedBytes) {
      this.#abandon(
        `it left more than ${this.#limits.maxQueuedBytes} bytes of replies unread`,
        "max_queued_bytes",
      );
    }
  }
}

/**
 * Lets the event loop run I/O and timers for other connections before this one goes on. (Deno's
 * setImmediate would cost microseconds, not a millisecond, but it runs before the loop polls I/O.)
 */
function yieldToOthers(): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, 0));
}
