// FrameWriter: frames queued and written to a byte stream, all that are queued in one write (the
// format is in _framing.ts).

import { checkMaxFrameBytes, HEADER_BYTES, writeLength } from "./_framing.ts";

/** Write buffers above this size are dropped after a flush, so idle connections stay small. */
const KEEP_WRITE_BUFFER_BYTES = 256 * 1024;

/** Strings longer than this are encoded on their own instead of in the worst case of 3 bytes a char. */
const ENCODE_IN_PLACE_CHARS = 1024 * 1024;

/**
 * Parts of a frame at least this large go to the sink as they are, not copied into the write
 * buffer: a sink write of its own costs less than copying them (a 1 MiB echo copied each way twice
 * before), and the buffer does not grow to hold them.
 */
const HAND_OVER_BYTES = 64 * 1024;

/** Byte runs shorter than this are copied by a loop: `Uint8Array.set` costs more for a few bytes. */
const SET_MIN_BYTES = 64;

/** Where a {@linkcode FrameWriter} puts its bytes: a `Deno.Conn` is one. */
export interface ByteSink {
  /** Writes some of `bytes`, resolving with how many were written. Rejects when the stream fails. */
  write(bytes: Uint8Array): Promise<number>;
}

/** Options for {@linkcode FrameWriter}. */
export interface FrameWriterOptions {
  /**
   * The largest frame payload to send, in bytes; a larger one is refused with a `RangeError`
   * before anything is queued.
   *
   * @default {16777216}
   */
  maxFrameBytes?: number;
  /**
   * Called once with the error when writing to the sink fails; the writer drops everything
   * queued then and afterwards.
   */
  onError?: (error: unknown) => void;
  /**
   * Called with the number of bytes of each write to the sink, as it returns: to count them
   * without wrapping the sink (a server's metrics).
   *
   * @default {undefined}
   */
  onWrite?: ((count: number) => void) | undefined;
}

const encoder = new TextEncoder();

/**
 * Queues frames and writes them: at once when the sink is idle, else together with every other
 * frame queued while the previous write was under way.
 *
 * @example Frames queued in one turn go out in one write
 * ```ts
 * import { FrameWriter } from "./framing.ts";
 * import assert from "node:assert/strict";
 *
 * const writes: number[] = [];
 * const writer = new FrameWriter({
 *   write(bytes) {
 *     writes.push(bytes.length);
 *     return Promise.resolve(bytes.length);
 *   },
 * });
 * writer.writeText('{"jsonrpc":"2.0","method":"ping"}'); // 4 + 33 bytes
 * writer.writeFrame(new Uint8Array([1, 2, 3])); // 4 + 3 bytes
 * await writer.flushed();
 * assert.deepEqual(writes, [44]);
 * ```
 */
export class FrameWriter {
  #sink: ByteSink;
  #maxFrameBytes: number;
  #onError: ((error: unknown) => void) | undefined;
  #onWrite: ((count: number) => void) | undefined;
  #buffer = new Uint8Array(0);
  #spare = new Uint8Array(0);
  #length = 0;
  /**
   * What goes out before the buffer's bytes from `#sealed` on: views of the buffer up to
   * `#sealed`, and large parts as they were given (see HAND_OVER_BYTES), in order.
   */
  #chunks: Uint8Array[] = [];
  #chunkBytes = 0;
  #sealed = 0;
  /** Where the frame being built (`beginFrame`) starts in the buffer, or -1. */
  #frameAt = -1;
  #writing = false;
  #writeSince: number | undefined;
  #failed = false;
  #waiters: (() => void)[] = [];

  /**
   * Makes a writer of frames to `sink`.
   *
   * @param sink The byte stream to write to.
   * @param options The frame size limit, the error callback and a counter of the bytes written.
   */
  constructor(sink: ByteSink, options?: FrameWriterOptions) {
    this.#sink = sink;
    this.#maxFrameBytes = checkMaxFrameBytes(options?.maxFrameBytes);
    this.#onError = options?.onError;
    this.#onWrite = options?.onWrite;
  }

  /**
   * When (`Date.now()`) the sink write under way began, or `undefined` when none is: a write that
   * makes no progress for long means a peer that does not read.
   */
  get writeStartedAt(): number | undefined {
    return this.#writeSince;
  }

  /** The number of bytes queued and not yet handed to the sink. */
  get queuedBytes(): number {
    return this.#chunkBytes + this.#length - this.#sealed;
  }

  /**
   * Queues one frame holding `text` encoded as UTF-8.
   *
   * @param text The payload, usually JSON text.
   * @throws {RangeError} When the encoded text is empty or larger than the frame limit.
   */
  writeText(text: string): void {
    if (text.length > ENCODE_IN_PLACE_CHARS) return this.writeFrame(encoder.encode(text));
    if (this.#failed) return;
    const at = this.#length;
    this.#reserve(at + HEADER_BYTES + text.length * 3);
    const written = encodeText(text, this.#buffer, at + HEADER_BYTES);
    this.#checkSize(written);
    writeLength(this.#buffer, at, written);
    this.#length = at + HEADER_BYTES + written;
    this.#schedule();
  }

  /**
   * Queues one frame holding `payload`, copied.
   *
   * @param payload The frame's bytes.
   * @throws {RangeError} When the payload is empty or larger than the frame limit.
   */
  writeFrame(payload: Uint8Array): void {
    this.#checkSize(payload.length);
    if (this.#failed) return;
    const at = this.#length;
    this.#reserve(at + HEADER_BYTES + payload.length);
    writeLength(this.#buffer, at, payload.length);
    this.#buffer.set(payload, at + HEADER_BYTES);
    this.#length = at + HEADER_BYTES + payload.length;
    this.#schedule();
  }

  /**
   * Queues one frame whose payload is `parts` back to back. Parts under 64 KiB are copied into
   * the write buffer; larger ones are handed to the sink as they are, after the bytes queued
   * before them: they must not change until {@linkcode FrameWriter.flushed} resolves.
   *
   * @param parts The pieces of the frame's payload.
   * @throws {RangeError} When the payload is empty or larger than the frame limit.
   */
  writeParts(parts: readonly Uint8Array[]): void {
    let size = 0;
    for (const part of parts) size += part.length;
    this.#checkSize(size);
    if (this.#failed) return;
    this.#reserve(this.#length + HEADER_BYTES);
    writeLength(this.#buffer, this.#length, size);
    this.#length += HEADER_BYTES;
    for (const part of parts) {
      if (part.length < HAND_OVER_BYTES) {
        this.#copy(part);
        continue;
      }
      if (this.#length > this.#sealed) {
        this.#chunks.push(this.#buffer.subarray(this.#sealed, this.#length));
        this.#chunkBytes += this.#length - this.#sealed;
        this.#sealed = this.#length;
      }
      this.#chunks.push(part);
      this.#chunkBytes += part.length;
    }
    this.#schedule();
  }

  /**
   * Starts a frame whose payload is built in place by {@linkcode FrameWriter.appendText} and
   * {@linkcode FrameWriter.appendBytes} and queued by {@linkcode FrameWriter.endFrame}: a message
   * made of pieces (an envelope around a value's JSON text) is written without joining them
   * first. Nothing else may be written until the frame ends.
   *
   * @example Write an envelope and a value's JSON text as one frame
   * ```ts
   * import { FrameWriter } from "./framing.ts";
   * import assert from "node:assert/strict";
   *
   * const written: Uint8Array[] = [];
   * const writer = new FrameWriter({
   *   write(bytes) {
   *     written.push(bytes.slice());
   *     return Promise.resolve(bytes.length);
   *   },
   * });
   * writer.beginFrame();
   * writer.appendText('{"jsonrpc":"2.0","id":1,"result":');
   * writer.appendText(JSON.stringify([1, 2]));
   * writer.appendText("}");
   * writer.endFrame();
   * await writer.flushed();
   * const payload = new TextDecoder().decode(written[0]!.subarray(4));
   * assert.equal(payload, '{"jsonrpc":"2.0","id":1,"result":[1,2]}');
   * ```
   *
   * @throws {TypeError} When a frame begun earlier has not ended.
   */
  beginFrame(): void {
    if (this.#frameAt >= 0) {
      throw new TypeError("Cannot begin frame: the frame begun before has not ended");
    }
    if (this.#failed) return;
    this.#frameAt = this.#length;
    this.#reserve(this.#length + HEADER_BYTES);
    this.#length += HEADER_BYTES;
  }

  /**
   * Appends `text`, encoded as UTF-8, to the frame begun by {@linkcode FrameWriter.beginFrame}.
   *
   * @param text A piece of the payload.
   */
  appendText(text: string): void {
    if (this.#frameAt < 0) return; // writing failed: everything is dropped
    if (text.length > ENCODE_IN_PLACE_CHARS) return this.#copy(encoder.encode(text));
    this.#reserve(this.#length + text.length * 3);
    this.#length += encodeText(text, this.#buffer, this.#length);
  }

  /**
   * Appends `bytes`, copied, to the frame begun by {@linkcode FrameWriter.beginFrame}.
   *
   * @param bytes A piece of the payload.
   */
  appendBytes(bytes: Uint8Array): void {
    if (this.#frameAt >= 0) this.#copy(bytes);
  }

  /**
   * Queues the frame begun by {@linkcode FrameWriter.beginFrame}.
   *
   * @throws {RangeError} When its payload is empty or larger than the frame limit: the frame is
   * dropped, and the writer takes the next one.
   */
  endFrame(): void {
    const at = this.#frameAt;
    if (at < 0) return;
    this.#frameAt = -1;
    const size = this.#length - at - HEADER_BYTES;
    if (size === 0 || size > this.#maxFrameBytes) {
      this.#length = at;
      this.#checkSize(size);
    }
    writeLength(this.#buffer, at, size);
    this.#schedule();
  }

  /**
   * Resolves when everything queued so far has been handed to the sink, or when writing failed.
   *
   * @returns A promise that never rejects.
   */
  flushed(): Promise<void> {
    if (!this.#writing || this.#failed) return Promise.resolve();
    return new Promise((resolve) => this.#waiters.push(resolve));
  }

  /** Copies `bytes` to the end of the write buffer. */
  #copy(bytes: Uint8Array): void {
    const length = bytes.length;
    const at = this.#length;
    this.#reserve(at + length);
    const buffer = this.#buffer;
    if (length >= SET_MIN_BYTES) buffer.set(bytes, at);
    else for (let i = 0; i < length; i++) buffer[at + i] = bytes[i]!;
    this.#length = at + length;
  }

  #checkSize(size: number): void {
    if (size === 0) throw new RangeError("Cannot write frame: the payload is empty");
    if (size > this.#maxFrameBytes) {
      throw new RangeError(
        `Cannot write frame: ${size} bytes exceed the limit of ${this.#maxFrameBytes} bytes`,
      );
    }
  }

  #reserve(size: number): void {
    if (size <= this.#buffer.length) return;
    const grown = new Uint8Array(Math.max(size, this.#buffer.length * 2, 4096));
    // Sealed chunks keep viewing the old buffer, which is theirs until written.
    grown.set(this.#buffer.subarray(this.#sealed, this.#length), this.#sealed);
    this.#buffer = grown;
  }

  #schedule(): void {
    if (this.#writing) return;
    this.#writing = true;
    // A microtask lets replies that are ready in the same turn share one write.
    queueMicrotask(() => this.#flush());
  }

  async #flush(): Promise<void> {
    try {
      while (this.queuedBytes > 0 && !this.#failed) {
        const tail = this.#buffer.subarray(this.#sealed, this.#length);
        let chunks: Uint8Array[] | undefined;
        if (this.#chunks.length > 0) {
          chunks = this.#chunks;
          if (tail.length > 0) chunks.push(tail);
          this.#chunks = [];
          this.#chunkBytes = 0;
        }
        const spare = this.#spare;
        this.#spare = this.#buffer;
        this.#buffer = spare;
        this.#length = this.#sealed = 0;
        if (chunks === undefined) await this.#write(tail);
        else for (const chunk of chunks) await this.#write(chunk);
        this.#writeSince = undefined;
        if (this.#spare.length > KEEP_WRITE_BUFFER_BYTES) this.#spare = new Uint8Array(0);
      }
    } catch (error) {
      this.#failed = true;
      this.#writeSince = undefined;
      this.#length = this.#sealed = this.#chunkBytes = 0;
      this.#chunks = [];
      this.#buffer = this.#spare = new Uint8Array(0);
      this.#onError?.(error);
    } finally {
      this.#writing = false;
      if (this.#buffer.length > KEEP_WRITE_BUFFER_BYTES) this.#buffer = new Uint8Array(0);
      const waiters = this.#waiters;
      this.#waiters = [];
      for (const resolve of waiters) resolve();
    }
  }

  /** Hands all of `bytes` to the sink, over as many writes as it takes. */
  async #write(bytes: Uint8Array): Promise<void> {
    let offset = 0;
    while (offset < bytes.length) {
      this.#writeSince = Date.now();
      const count = await this.#sink.write(offset === 0 ? bytes : bytes.subarray(offset));
      this.#onWrite?.(count);
      offset += count;
    }
  }
}

/**
 * Texts up to this long are copied char by char when ASCII: cheaper than `encodeInto` below about
 * 64 chars, dearer above (`deno bench`: 176 against 254 ns at 50 chars, 1.2 µs against 153 ns at
 * 400).
 */
const ASCII_FAST_CHARS = 64;

/** Writes `text` as UTF-8 into `buffer` at `offset`, which has room for 3 bytes a char. */
function encodeText(text: string, buffer: Uint8Array, offset: number): number {
  if (text.length <= ASCII_FAST_CHARS) {
    let i = 0;
    for (; i < text.length; i++) {
      const code = text.charCodeAt(i);
      if (code >= 0x80) break;
      buffer[offset + i] = code;
    }
    if (i === text.length) return i;
  }
  return encoder.encodeInto(text, buffer.subarray(offset)).written;
}
