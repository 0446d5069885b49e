// The frame format that FrameReader (_frame_reader.ts) and FrameWriter (_frame_writer.ts) share:
// a 4-byte big-endian length prefix, the limits on it, and reading and writing it. The public
// framing.ts documents the format and re-exports from all three; private modules import from them
// directly, as a private module never imports a public one.

/** The size of a frame's length prefix in bytes. */
export const HEADER_BYTES = 4;

/**
 * The default largest frame payload, in bytes: 16 MiB. Large enough for any sensible RPC argument,
 * small enough that a hostile length prefix cannot make a peer allocate much memory.
 */
export const DEFAULT_MAX_FRAME_BYTES: number = 16 * 1024 * 1024;

/** The largest length a 4-byte prefix can state. */
const MAX_HEADER_VALUE = 0xffff_ffff;

/** The big-endian length prefix at `at`: a DataView a frame (or a buffer) costs more. */
export function readLength(buffer: Uint8Array, at: number): number {
  return buffer[at]! * 0x100_0000 +
    (buffer[at + 1]! << 16 | buffer[at + 2]! << 8 | buffer[at + 3]!);
}

/** Writes `length` as a big-endian prefix at `at`. */
export function writeLength(buffer: Uint8Array, at: number, length: number): void {
  buffer[at] = length >>> 24;
  buffer[at + 1] = length >>> 16;
  buffer[at + 2] = length >>> 8;
  buffer[at + 3] = length;
}

/** `value` checked as a frame size limit (`maxFrameBytes`), or the default when it is not given. */
export function checkMaxFrameBytes(value: number | undefined): number {
  if (value === undefined) return DEFAULT_MAX_FRAME_BYTES;
  if (!Number.isInteger(value) || value < 1 || value > MAX_HEADER_VALUE) {
    throw new RangeError(
      `Cannot use maxFrameBytes ${value}: it must be an integer from 1 to ${MAX_HEADER_VALUE}`,
    );
  }
  return value;
}
