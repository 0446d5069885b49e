// Framing on every runtime: what FrameWriter writes, FrameReader reads back, whatever the chunks;
// the limits and malformed streams.

import assert from "node:assert/strict";
import { test } from "node:test";
import { ProtocolError } from "../../errors.ts";
import { FrameReader, FrameWriter, HEADER_BYTES } from "../../framing.ts";
import { pattern, seededRandom } from "./_data.ts";

/** A source that hands out `bytes` in chunks of sizes `size()` picks, then ends. */
function chunked(bytes: Uint8Array, size: () => number) {
  let at = 0;
  return {
    read(into: Uint8Array): Promise<number | null> {
      if (at === bytes.length) return Promise.resolve(null);
      const n = Math.min(into.length, bytes.length - at, Math.max(1, size()));
      into.set(bytes.subarray(at, at + n));
      at += n;
      return Promise.resolve(n);
    },
  };
}

/** A sink that keeps what it is given, taking at most `max` bytes a write. */
function collecting(max = Infinity) {
  const chunks: Uint8Array[] = [];
  return {
    chunks,
    write(bytes: Uint8Array): Promise<number> {
      const n = Math.min(bytes.length, max);
      chunks.push(bytes.slice(0, n));
      return Promise.resolve(n);
    },
    bytes(): Uint8Array {
      const all = new Uint8Array(chunks.reduce((sum, chunk) => sum + chunk.length, 0));
      let at = 0;
      for (const chunk of chunks) {
        all.set(chunk, at);
        at += chunk.length;
      }
      return all;
    },
  };
}

async function readAll(reader: FrameReader): Promise<Uint8Array[]> {
  const frames: Uint8Array[] = [];
  for (let batch = await reader.read(); batch !== null; batch = await reader.read()) {
    // A frame may be a view of the read buffer: copied before the next read.
    for (const frame of batch) frames.push(frame.slice());
  }
  return frames;
}

test("FrameReader reads back every frame FrameWriter wrote, whatever the chunk sizes", async () => {
  const seed = Date.now() % 100_000;
  try {
    const next = seededRandom(seed);
    const sizes = [
      1,
      3 * 1024 * 1024,
      ...Array.from({ length: 200 }, () => 1 + Math.floor(next() * 70_000)),
    ];
    const sink = collecting(50_000);
    const writer = new FrameWriter(sink);
    sizes.forEach((size, i) => writer.writeFrame(pattern(size, i)));
    writer.writeText("héllo, wörld");
    await writer.flushed();
    const reader = new FrameReader(chunked(sink.bytes(), () => Math.floor(next() * 40_000)));
    const frames = await readAll(reader);
    assert.equal(frames.length, sizes.length + 1);
    sizes.forEach((size, i) => {
      assert.equal(frames[i]!.length, size, `frame ${i}`);
      assert.deepEqual(frames[i], pattern(size, i), `frame ${i}`);
    });
    assert.equal(new TextDecoder().decode(frames.at(-1)), "héllo, wörld");
  } catch (error) {
    console.error(`failed with seed ${seed}`);
    throw error;
  }
});

test("FrameWriter sends the frames queued in one turn in one write", async () => {
  const sink = collecting();
  const writer = new FrameWriter(sink);
  writer.writeText('{"a":1}');
  writer.writeFrame(new Uint8Array([1, 2, 3]));
  writer.writeParts([new Uint8Array([4]), new Uint8Array([5, 6])]);
  await writer.flushed();
  assert.equal(sink.chunks.length, 1);
  assert.equal(sink.chunks[0]!.length, 3 * HEADER_BYTES + 7 + 3 + 3);
});

test("FrameReader refuses malformed streams with ProtocolError", async (t) => {
  const header = (length: number) => {
    const bytes = new Uint8Array(HEADER_BYTES);
    new DataView(bytes.buffer).setUint32(0, length);
    return bytes;
  };
  const cases = [
    {
      name: "a length over maxFrameBytes, before allocating it",
      bytes: header(0xffff_fff0),
      options: { maxFrameBytes: 1024 },
      message: /length 4294967280 exceeds the limit of 1024 bytes/,
    },
    { name: "a zero length", bytes: header(0), options: {}, message: /length 0 is not allowed/ },
    {
      name: "a stream that ends inside a frame",
      bytes: new Uint8Array([...header(10), 1, 2, 3]),
      options: {},
      message: /the stream ended after \d+/,
    },
    {
      name: "a stream that ends inside a header",
      bytes: new Uint8Array([0, 0]),
      options: {},
      message: /the stream ended after 2 bytes/,
    },
  ];
  for (const { name, bytes, options, message } of cases) {
    await t.test(name, async () => {
      const reader = new FrameReader(chunked(bytes, () => 2), options);
      await assert.rejects(readAll(reader), (error) => {
        assert.ok(error instanceof ProtocolError, `expected ProtocolError, got ${error}`);
        assert.match(error.message, message);
        return true;
      });
    });
  }
});

test("FrameWriter refuses an empty or oversized payload with RangeError, queuing nothing", async () => {
  const sink = collecting();
  const writer = new FrameWriter(sink, { maxFrameBytes: 8 });
  assert.throws(() => writer.writeFrame(new Uint8Array(0)), RangeError);
  assert.throws(() => writer.writeFrame(new Uint8Array(9)), /9 bytes exceed the limit of 8 bytes/);
  assert.throws(() => writer.writeText("123456789"), RangeError);
  await writer.flushed();
  assert.equal(sink.chunks.length, 0);
});

test("FrameWriter reports a failing sink once through onError, and flushed() still resolves", async () => {
  const errors: unknown[] = [];
  const failure = new Error("the sink broke");
  const writer = new FrameWriter({ write: () => Promise.reject(failure) }, {
    onError: (error) => errors.push(error),
  });
  writer.writeText("one");
  await writer.flushed();
  writer.writeText("two");
  await writer.flushed();
  assert.deepEqual(errors, [failure]);
});
