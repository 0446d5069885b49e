/**
 * Length-prefixed frames: each frame is a 4-byte unsigned big-endian length N followed by N bytes.
 *
 * {@linkcode FrameReader} turns a byte stream into frames without copying small frames out of its
 * read buffer and reads large frames straight into their own buffer; it checks the length against
 * the limit before it allocates anything. {@linkcode FrameWriter} queues frames and writes all that
 * are queued in one write, so that many small replies cost one system call.
 *
 * @example Write two frames and read them back
 * ```ts
 * import { FrameReader, FrameWriter } from "./framing.ts";
 * import assert from "node:assert/strict";
 *
 * const chunks: Uint8Array[] = [];
 * const writer = new FrameWriter({
 *   write(bytes) {
 *     chunks.push(bytes.slice());
 *     return Promise.resolve(bytes.length);
 *   },
 * });
 * writer.writeText('{"hello":1}');
 * writer.writeText('{"hello":2}');
 * await writer.flushed();
 * assert.equal(chunks.length, 1); // both frames went out in one write
 *
 * const reader = new FrameReader({
 *   read(into) {
 *     const chunk = chunks.shift();
 *     if (chunk === undefined) return Promise.resolve(null);
 *     into.set(chunk);
 *     return Promise.resolve(chunk.length);
 *   },
 * });
 * const frames = await reader.read();
 * assert.deepEqual(frames?.map((f) => new TextDecoder().decode(f)), ['{"hello":1}', '{"hello":2}']);
 * assert.equal(await reader.read(), null);
 * ```
 *
 * @module
 */

export { DEFAULT_MAX_FRAME_BYTES, HEADER_BYTES } from "./_framing.ts";
export { type ByteSource, FrameReader, type FrameReaderOptions } from "./_frame_reader.ts";
export { type ByteSink, FrameWriter, type FrameWriterOptions } from "./_frame_writer.ts";
