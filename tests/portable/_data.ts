/**
 * Test data made from scratch, the same on every runtime: seeded random numbers, byte patterns,
 * byte arrays joined, extended payloads and long JSON arrays. Pure functions with no I/O and no runtime's own API, so
 * that the portable tests, the Deno tests and the benchmarks (bench/codec_bench.ts runs without
 * permissions) can all import them.
 *
 * @module
 */

const encoder = new TextEncoder();

/**
 * A small seeded generator (mulberry32) of numbers from 0 up to 1, so that a failing run can be
 * replayed from its seed.
 */
export function seededRandom(seed: number): () => number {
  let state = seed >>> 0;
  return () => {
    state = (state + 0x6d2b79f5) >>> 0;
    let t = state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** Bytes 0, 1, 2... modulo 251 from `seed`, so that a shifted or truncated copy never looks right. */
export function pattern(length: number, seed = 0): Uint8Array {
  const bytes = new Uint8Array(length);
  for (let i = 0; i < length; i++) bytes[i] = (i + seed) % 251;
  return bytes;
}

/** `parts` one after the other in one buffer. */
export function concat(parts: readonly Uint8Array[]): Uint8Array {
  const bytes = new Uint8Array(parts.reduce((sum, part) => sum + part.length, 0));
  let at = 0;
  for (const part of parts) {
    bytes.set(part, at);
    at += part.length;
  }
  return bytes;
}

/**
 * An extended frame's payload laid out as PROTOCOL.md section 8 says, independently of the
 * encoder: 0x00, the JSON part's length (u32, big-endian; `statedLength` when given), the JSON
 * part (a string as UTF-8), zero padding to a multiple of 8, the binary part. It owns its buffer.
 */
export function extendedPayload(
  json: string | Uint8Array,
  binary: Uint8Array = new Uint8Array(0),
  options: { statedLength?: number } = {},
): Uint8Array {
  const text = typeof json === "string" ? encoder.encode(json) : json;
  const start = Math.ceil((5 + text.length) / 8) * 8;
  const payload = new Uint8Array(start + binary.length);
  new DataView(payload.buffer).setUint32(1, options.statedLength ?? text.length);
  payload.set(text, 5);
  payload.set(binary, start);
  return payload;
}

/** `unit(i)` repeated, comma-separated, in a JSON array of about `size` characters, `tail` last. */
export function jsonArrayOf(size: number, unit: (i: number) => string, tail = ""): string {
  const parts: string[] = [];
  let length = 2 + tail.length;
  for (let i = 0; length < size; i++) {
    const part = unit(i);
    parts.push(part);
    length += part.length + 1;
  }
  return `[${parts.join(",")}${tail}]`;
}
