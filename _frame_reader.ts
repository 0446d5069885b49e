// FrameReader: a byte stream to length-prefixed frames (the format is in _framing.ts), with the
// length checked against the limit before anything is allocated.

import { ProtocolError } from "./errors.ts";
import { checkMaxFrameBytes, HEADER_BYTES, readLength } from "./_framing.ts";

/**
 * The read buffer of each connection. A TLS record carries at most 16 KiB, so one read rarely
 * returns more; frames larger than the buffer are read into a buffer of their own.
 */
const READ_BUFFER_BYTES = 16 * 1024;

/** Where a {@linkcode FrameReader} gets its bytes: a `Deno.Conn` is one. */
export interface ByteSource {
  /**
   * Reads into `buffer`, resolving with the number of bytes read, or `null` at the end of the
   * stream. Rejects when the stream fails.
   */
  read(buffer: Uint8Array): Promise<number | null>;
}

/** Options for {@linkcode FrameReader}. */
export interface FrameReaderOptions {
  /**
   * The largest frame payload accepted, in bytes; a larger length prefix is a protocol error,
   * detected before anything is allocated.
   *
   * @default {16777216}
   */
  maxFrameBytes?: number;
  /**
   * Called with the number of bytes of each read from the source, as it returns: to count them
   * without wrapping the source (a server's metrics).
   *
   * @default {undefined}
   */
  onRead?: ((count: number) => void) | undefined;
}

/**
 * Reads frames from a byte stream.
 *
 * @example Read frames from a stream, whatever its chunks
 * ```ts
 * import { FrameReader } from "./framing.ts";
 * import assert from "node:assert/strict";
 *
 * // Two frames, "hi" and "there", arriving cut at arbitrary places, as TCP may deliver them.
 * const chunks = [[0, 0, 0], [2, 104, 105, 0, 0], [0, 5, 116, 104, 101, 114, 101]];
 * const reader = new FrameReader({
 *   read(into) {
 *     const chunk = chunks.shift();
 *     if (chunk === undefined) return Promise.resolve(null);
 *     into.set(chunk);
 *     return Promise.resolve(chunk.length);
 *   },
 * });
 * const texts: string[] = [];
 * for (let frames = await reader.read(); frames !== null; frames = await reader.read()) {
 *   // A frame is a view of the read buffer: decode it before the next read.
 *   for (const frame of frames) texts.push(new TextDecoder().decode(frame));
 * }
 * assert.deepEqual(texts, ["hi", "there"]);
 * ```
 */
export class FrameReader {
  #source: ByteSource;
  #maxFrameBytes: number;
  #onRead: ((count: number) => void) | undefined;
  #buffer: Uint8Array = new Uint8Array(0);
  #start = 0;
  #end = 0;
  /**
   * When the bytes of the frame now partly received began to arrive. The clock is read only when a
   * read leaves part of a frame (rare for small messages), not on every read.
   */
  #partialSince: number | undefined;

  /**
   * Makes a reader of the frames in `source`.
   *
   * @param source The byte stream to read.
   * @param options The frame size limit, and a counter of the bytes read.
   */
  constructor(source: ByteSource, options?: FrameReaderOptions) {
    this.#source = source;
    this.#maxFrameBytes = checkMaxFrameBytes(options?.maxFrameBytes);
    this.#onRead = options?.onRead;
  }

  /** Whether part of a frame has arrived and the rest has not. */
  get inFrame(): boolean {
    return this.#partialSince !== undefined;
  }

  /**
   * When (`Date.now()`) the first bytes of the frame now partly received arrived, or `undefined`
   * between frames: a server closes a connection whose frame takes too long (slowloris).
   */
  get frameStartedAt(): number | undefined {
    return this.#partialSince;
  }

  /**
   * Resolves with the next frames: at least one, and all that are complete in the bytes read so
   * far. A frame that fits in the read buffer is a view of that buffer, valid until the next call
   * of `read`: decode it before then. Resolves with `null` when the stream ends between frames.
   *
   * @returns The frames, or `null` at the end of the stream.
   * @throws {ProtocolError} When a length prefix is 0 or above the limit, or the stream ends
   * inside a frame. Errors of the byte source are passed on as they are.
   */
  async read(): Promise<Uint8Array[] | null> {
    if (this.#start === this.#end) this.#start = this.#end = 0;
    for (;;) {
      const frames = this.#parse();
      if (frames.length > 0) {
        // Bytes left over belong to a frame that began in the latest read, just now.
        this.#partialSince = this.#end === this.#start ? undefined : Date.now();
        return frames;
      }
      const available = this.#end - this.#start;
      // Part of a frame is here (or nothing yet): it began to arrive in the latest read.
      if (available > 0) this.#partialSince ??= Date.now();
      if (available >= HEADER_BYTES) {
        const length = readLength(this.#buffer, this.#start);
        if (length + HEADER_BYTES > READ_BUFFER_BYTES) return [await this.#readLarge(length)];
      }
      if (this.#start > 0) {
        this.#buffer.copyWithin(0, this.#start, this.#end);
        this.#start = 0;
        this.#end = available;
      }
      if (this.#buffer.length === 0) this.#buffer = new Uint8Array(READ_BUFFER_BYTES);
      const count = await this.#source.read(this.#buffer.subarray(this.#end));
      if (count !== null) this.#onRead?.(count);
      if (count === null) {
        if (this.#end > this.#start) {
          throw new ProtocolError(
            `Cannot read frame: the stream ended after ${this.#end - this.#start} bytes of a frame`,
          );
        }
        return null;
      }
      this.#end += count;
    }
  }

  #parse(): Uint8Array[] {
    const frames: Uint8Array[] = [];
    while (this.#end - this.#start >= HEADER_BYTES) {
      const length = readLength(this.#buffer, this.#start);
      this.#checkLength(length);
      const frameEnd = this.#start + HEADER_BYTES + length;
      if (frameEnd > this.#end) break;
      frames.push(this.#buffer.subarray(this.#start + HEADER_BYTES, frameEnd));
      this.#start = frameEnd;
    }
    return frames;
  }

  #checkLength(length: number): void {
    if (length === 0) throw new ProtocolError("Cannot read frame: length 0 is not allowed");
    if (length > this.#maxFrameBytes) {
      throw new ProtocolError(
        `Cannot read frame: length ${length} exceeds the limit of ${this.#maxFrameBytes} bytes`,
      );
    }
  }

  async #readLarge(length: number): Promise<Uint8Array> {
    const frame = new Uint8Array(length);
    const head = this.#buffer.subarray(this.#start + HEADER_BYTES, this.#end);
    frame.set(head);
    this.#start = this.#end = 0;
    // The read buffer is idle while a large frame streams in; drop it rather than hold both.
    this.#buffer = new Uint8Array(0);
    let filled = head.length;
    while (filled < length) {
      const count = await this.#source.read(frame.subarray(filled));
      if (count !== null) this.#onRead?.(count);
      if (count === null) {
        throw new ProtocolError(
          `Cannot read frame: the stream ended after ${filled} of ${length} bytes`,
        );
      }
      filled += count;
    }
    this.#partialSince = undefined;
    return frame;
  }
}
