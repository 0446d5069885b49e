// Tests of what one extended frame may cost its receiver (_rich.ts): byte sections named twice are
// refused, the bytes a frame decodes into and the digits of a BigInt are bounded (DecodeLimits),
// and what the encoders do with boxed primitives and SharedArrayBuffers, alone or beside a rich
// value. The costs of the worst frames are measured and printed, not asserted.

import assert from "node:assert/strict";
import {
  type DecodeLimits,
  DEFAULT_DECODE_LIMITS,
  DEFAULT_MAX_BIGINT_DIGITS,
  DEFAULT_MAX_DECODED_BYTES,
  ExtendedFrameError,
  extendedParts,
  jsonOnlyProblem,
  parseJson,
  revive,
  RichEncoder,
  splitExtended,
  UnsendableError,
} from "../_rich.ts";
import { extendedPayload, pattern } from "./portable/_data.ts";

const KiB = 1024;

/** Decodes a payload as a receiver does: split, parse, revive. */
function decode(
  bytes: Uint8Array,
  owned = true,
  limits: DecodeLimits = DEFAULT_DECODE_LIMITS,
): unknown {
  const { json, binary } = splitExtended(bytes);
  return revive(parseJson(json), binary, owned, limits);
}

/** Encodes `value` as a rich peer would send it, then decodes it as the receiver would. */
function roundTrip(value: unknown, owned = true): unknown {
  const rich = new RichEncoder(128);
  const parts = extendedParts(JSON.stringify(rich.encode(value)), rich.sections);
  const whole = new Uint8Array(parts.reduce((sum, part) => sum + part.length, 0));
  let at = 0;
  for (const part of parts) {
    whole.set(part, at);
    at += part.length;
  }
  return decode(whole, owned);
}

/** A tag for the section at `o` of `n` bytes, of kind `k` (a Uint8Array when absent). */
function tag(o: number, n: number, k?: string): string {
  return JSON.stringify(k === undefined ? { $t: "bytes", o, n } : { $t: "bytes", o, n, k });
}

/** Asserts that `f` throws an ExtendedFrameError whose message matches `pattern`. */
function assertRefused(f: () => unknown, pattern: RegExp, limit?: number): void {
  assert.throws(f, (error: unknown) => {
    assert.ok(error instanceof ExtendedFrameError, `expected ExtendedFrameError, got ${error}`);
    assert.match(error.message, /^Cannot decode frame: /);
    assert.match(error.message, pattern);
    assert.equal(error.limit, limit);
    return true;
  });
}

// ---------------------------------------------------------------------------------------------
// Sections named twice

Deno.test("revive() refuses byte sections that more than one value names, in whole or in part", async (t) => {
  const binary = pattern(64);
  const cases: [string, string][] = [
    ["two Uint8Arrays on one section", `[${tag(0, 8)},${tag(0, 8)}]`],
    [
      "a Uint8Array and an ArrayBuffer on one section",
      `[${tag(0, 8)},${tag(0, 8, "ArrayBuffer")}]`,
    ],
    ["a section inside another", `[${tag(0, 32)},${tag(8, 8, "Float64Array")}]`],
    ["sections that overlap by a byte", `[${tag(0, 9)},${tag(8, 8)}]`],
    ["an overlap after tags out of order", `[${tag(32, 8)},${tag(0, 8)},${tag(4, 8)}]`],
    ["an overlap of the first tag with the last", `[${tag(8, 8)},${tag(24, 8)},${tag(0, 16)}]`],
    ["2 000 tags on one section", `[${Array(2_000).fill(tag(0, 64)).join(",")}]`],
  ];
  for (const [name, json] of cases) {
    for (const owned of [true, false]) {
      await t.step(`${name} (${owned ? "views" : "copies"})`, () => {
        assertRefused(() => decode(extendedPayload(json, binary), owned), /sections overlap/);
      });
    }
  }
});

Deno.test("revive() accepts sections in any order that do not overlap, and empty ones anywhere", async (t) => {
  const binary = pattern(64);
  const cases: [string, string, unknown][] = [
    ["adjacent sections", `[${tag(0, 8)},${tag(8, 8)}]`, [binary.slice(0, 8), binary.slice(8, 16)]],
    [
      "sections out of order",
      `[${tag(16, 8)},${tag(0, 8)},${tag(8, 4)}]`,
      [binary.slice(16, 24), binary.slice(0, 8), binary.slice(8, 12)],
    ],
    [
      "empty sections at the offset of another",
      `[${tag(0, 0)},${tag(0, 8)},${tag(0, 0)},${tag(8, 0)}]`,
      [new Uint8Array(0), binary.slice(0, 8), new Uint8Array(0), new Uint8Array(0)],
    ],
    [
      "10 000 empty sections",
      `[${Array(10_000).fill(tag(64, 0)).join(",")}]`,
      Array(10_000).fill(new Uint8Array(0)),
    ],
  ];
  for (const [name, json, want] of cases) {
    for (const owned of [true, false]) {
      await t.step(`${name} (${owned ? "views" : "copies"})`, () => {
        assert.deepStrictEqual(decode(extendedPayload(json, binary), owned), want);
      });
    }
  }
});

Deno.test("the encoder gives a byte value that appears twice a section each, which decode apart", async (t) => {
  const bytes = pattern(16);
  const buffer = pattern(8, 3).buffer;
  for (const owned of [true, false]) {
    await t.step(owned ? "views" : "copies", () => {
      const got = roundTrip([bytes, bytes, { again: bytes }, buffer, buffer], owned) as [
        Uint8Array,
        Uint8Array,
        { again: Uint8Array },
        ArrayBuffer,
        ArrayBuffer,
      ];
      assert.deepStrictEqual(got, [bytes, bytes, { again: bytes }, buffer, buffer]);
      got[0][0] = 99;
      assert.equal(got[1][0], 0, "the two values share no memory");
      assert.equal(got[2].again[0], 0);
      assert.notEqual(got[3], got[4]);
    });
  }
});

// ---------------------------------------------------------------------------------------------
// The decode budget

Deno.test("revive() refuses a frame whose byte values exceed maxDecodedBytes, before allocating them", async (t) => {
  const binary = pattern(64);
  const limits = (maxDecodedBytes: number): DecodeLimits => ({
    ...DEFAULT_DECODE_LIMITS,
    maxDecodedBytes,
  });
  const kinds = [undefined, "ArrayBuffer", "DataView", "Float64Array", "BigUint64Array"];
  for (const kind of kinds) {
    for (const owned of [true, false]) {
      const name = `${kind ?? "Uint8Array"} (${owned ? "views" : "copies"})`;
      await t.step(`${name}: 32 + 24 bytes fit a limit of 56`, () => {
        const json = `[${tag(0, 32, kind)},${tag(32, 24, kind)}]`;
        const got = decode(extendedPayload(json, binary), owned, limits(56)) as ArrayBufferView[];
        assert.equal(got.length, 2);
      });
      await t.step(`${name}: 32 + 32 bytes exceed a limit of 56`, () => {
        const json = `[${tag(0, 32, kind)},${tag(32, 32, kind)}]`;
        assertRefused(
          () => decode(extendedPayload(json, binary), owned, limits(56)),
          /its byte values \(64 bytes so far\) exceed the limit of 56 bytes/,
          56,
        );
      });
    }
  }
  await t.step("a Float64Array at an unaligned offset is a copy, counted alike", () => {
    // Offset 4 of an owned frame: a Float64Array cannot view it in place.
    const json = `[${tag(4, 8, "Float64Array")},${tag(16, 48)}]`;
    assertRefused(
      () => decode(extendedPayload(json, binary), true, limits(48)),
      /limit of 48 bytes/,
      48,
    );
    const got = decode(extendedPayload(json, binary), true, limits(56)) as [
      Float64Array,
      Uint8Array,
    ];
    assert.deepStrictEqual(new Uint8Array(got[0].buffer), binary.slice(4, 12));
  });
  await t.step("the default is 16 MiB, the largest frame", () => {
    assert.equal(DEFAULT_MAX_DECODED_BYTES, 16 * 1024 * 1024);
    assert.equal(DEFAULT_DECODE_LIMITS.maxDecodedBytes, DEFAULT_MAX_DECODED_BYTES);
  });
});

Deno.test("malformed frames get an ExtendedFrameError without a limit, its message 'Cannot decode frame: ...'", async (t) => {
  const eight = pattern(8);
  const cases: [string, () => unknown, RegExp][] = [
    ["a payload shorter than its header", () => splitExtended(Uint8Array.of(0, 0)), /header/],
    [
      "a JSON length beyond the payload",
      () => splitExtended(Uint8Array.of(0, 0, 0, 0, 9, 0x7b)),
      /exceeds the frame/,
    ],
    [
      "a section beyond the frame",
      () => decode(extendedPayload(tag(0, 16), eight)),
      /outside the frame/,
    ],
    ["an unknown tag", () => decode(extendedPayload('{"$t":"nope"}')), /"nope" is not valid/],
    [
      "an unknown typed array",
      () => decode(extendedPayload(tag(0, 8, "Float16Array"), eight)),
      /"Float16Array" is not a typed array/,
    ],
    [
      "a section that is not a whole number of elements",
      () => decode(extendedPayload(tag(0, 6, "Int32Array"), eight)),
      /not a whole number of elements/,
    ],
    [
      "a BigInt that is no number",
      () => decode(extendedPayload('{"$t":"bigint","v":"1e3"}')),
      /bigint/,
    ],
    [
      "a map entry that is no pair",
      () => decode(extendedPayload('{"$t":"map","v":[[1]]}')),
      /pair/,
    ],
  ];
  for (const [name, f, pattern] of cases) {
    await t.step(name, () => assertRefused(f, pattern));
  }
});

// ---------------------------------------------------------------------------------------------
// BigInt

Deno.test("revive() refuses a BigInt of more than maxBigIntDigits digits before reading it", async (t) => {
  const limits: DecodeLimits = { ...DEFAULT_DECODE_LIMITS, maxBigIntDigits: 50 };
  const big = (text: string) => extendedPayload(`{"$t":"bigint","v":"${text}"}`);
  await t.step("50 digits, and a sign besides, pass", () => {
    assert.equal(decode(big("9".repeat(50)), true, limits), 10n ** 50n - 1n);
    assert.equal(decode(big(`-${"9".repeat(50)}`), true, limits), -(10n ** 50n - 1n));
  });
  await t.step("51 digits are refused, with the limit", () => {
    assertRefused(
      () => decode(big("1".repeat(51)), true, limits),
      /a BigInt of 51 digits exceeds the limit of 50 digits/,
      50,
    );
  });
  await t.step("51 characters that are no digits at all are refused alike", () => {
    assertRefused(() => decode(big("x".repeat(51)), true, limits), /limit of 50 digits/, 50);
  });
  await t.step("the default allows 10 000 digits", () => {
    assert.equal(DEFAULT_MAX_BIGINT_DIGITS, 10_000);
    const text = "7".repeat(DEFAULT_MAX_BIGINT_DIGITS);
    assert.equal(decode(big(text)), BigInt(text));
    assertRefused(() => decode(big(`${text}7`)), /limit of 10000 digits/, 10_000);
  });
});

Deno.test("RichEncoder refuses a BigInt no receiver would accept, without printing it", async (t) => {
  await t.step("the largest allowed is sent and round-trips", () => {
    const largest = -(10n ** BigInt(DEFAULT_MAX_BIGINT_DIGITS) - 1n);
    assert.equal(roundTrip(largest), largest);
  });
  await t.step("one more digit is a RangeError", () => {
    assert.throws(
      () => new RichEncoder(128).encode([1, { x: 10n ** BigInt(DEFAULT_MAX_BIGINT_DIGITS) }]),
      (error: unknown) => {
        assert.ok(error instanceof RangeError);
        assert.equal(
          error.message,
          `Cannot send value: a BigInt exceeds the limit of ${DEFAULT_MAX_BIGINT_DIGITS} digits`,
        );
        return true;
      },
    );
  });
  await t.step("the limit is the encoder's to set", () => {
    assert.throws(() => new RichEncoder(128, 3).encode(1000n), RangeError);
    assert.deepEqual(new RichEncoder(128, 3).encode(-999n), { $t: "bigint", v: "-999" });
  });
});

// ---------------------------------------------------------------------------------------------
// Boxed primitives and SharedArrayBuffer

/** A subclass of Number: still a box (it has the internal slot). */
class Meters extends Number {}

/** How a value goes out alone: plain JSON text when plain, else the rich encoding. */
function alone(value: unknown, strict: boolean): unknown {
  if (jsonOnlyProblem(value, 128, strict) === undefined) {
    return JSON.parse(JSON.stringify([value]))[0];
  }
  return (roundTrip([value]) as unknown[])[0];
}

Deno.test("boxed primitives go out as their primitive, alone and beside a rich value alike", async (t) => {
  const cases: [string, () => unknown, unknown][] = [
    ["new Number(5)", () => new Number(5), 5],
    ["new Number(-1.5)", () => new Number(-1.5), -1.5],
    ["new String('x')", () => new String("x"), "x"],
    ["new String('')", () => new String(""), ""],
    ["new Boolean(false)", () => new Boolean(false), false],
    ["new Boolean(true)", () => new Boolean(true), true],
    ["a subclass of Number", () => new Meters(3), 3],
    ["new Number(NaN), which needs the extension", () => new Number(NaN), NaN],
    ["Object(5n), which needs the extension", () => Object(5n), 5n],
    ["new Number(-0) for a rich peer", () => new Number(-0), -0],
  ];
  for (const [name, make, want] of cases) {
    await t.step(name, () => {
      const beside = (roundTrip([make(), new Map([[1, 2]])]) as unknown[])[0];
      assert.ok(Object.is(beside, want), `beside a Map: ${String(beside)}`);
      assert.ok(Object.is(alone(make(), true), want), `alone: ${String(alone(make(), true))}`);
      // In an object, too.
      const member = (roundTrip({ a: make(), b: new Set() }) as { a: unknown }).a;
      assert.ok(Object.is(member, want), `as a member: ${String(member)}`);
    });
  }
  await t.step(
    "a plain peer gets JSON's own unboxing, or NotPlain for what JSON would mangle",
    () => {
      assert.equal(jsonOnlyProblem([new Number(5), new String("x")], 128, false), undefined);
      assert.equal(jsonOnlyProblem({ a: new Number(NaN) }, 128, false), "NaN");
      assert.equal(jsonOnlyProblem([Object(5n)], 128, false), "BigInt");
    },
  );
  await t.step("an object that only inherits from Number.prototype is an ordinary object", () => {
    const fake = () => Object.create(Number.prototype) as object;
    assert.equal(jsonOnlyProblem(fake(), 128, true), undefined);
    assert.deepEqual((roundTrip([fake(), new Map()]) as unknown[])[0], {});
  });
  await t.step("a boxed Symbol is refused, alone and beside a rich value", () => {
    assert.equal(jsonOnlyProblem([Object(Symbol("s"))], 128, true), "symbol");
    assert.throws(() => new RichEncoder(128).encode([Object(Symbol("s")), 1n]), UnsendableError);
  });
});

Deno.test("a SharedArrayBuffer is refused as unsendable; a Uint8Array over one sends its bytes", async (t) => {
  const shared = new SharedArrayBuffer(8);
  new Uint8Array(shared).set(pattern(8, 5));
  for (const strict of [true, false]) {
    await t.step(`jsonOnlyProblem() names it (${strict ? "rich" : "plain"} peer)`, () => {
      assert.equal(jsonOnlyProblem(shared, 128, strict), "SharedArrayBuffer");
      assert.equal(jsonOnlyProblem({ a: [shared] }, 128, strict), "SharedArrayBuffer");
    });
  }
  for (const [name, value] of [["alone", shared], ["beside a Map", [shared, new Map()]]] as const) {
    await t.step(`RichEncoder refuses it ${name}`, () => {
      assert.throws(() => new RichEncoder(128).encode(value), (error: unknown) => {
        assert.ok(error instanceof UnsendableError);
        assert.match(error.message, /SharedArrayBuffer cannot be sent/);
        return true;
      });
    });
  }
  await t.step("a Uint8Array over it round-trips as a Uint8Array of its bytes", () => {
    assert.deepStrictEqual(roundTrip(new Uint8Array(shared)), pattern(8, 5));
  });
});

// ---------------------------------------------------------------------------------------------
// Cost

/** Milliseconds and heap bytes `f` takes (the heap after a collection when one can be asked). */
function measure(f: () => unknown): { ms: number; heap: number; result: unknown } {
  const before = Deno.memoryUsage().heapUsed;
  const start = performance.now();
  let result: unknown;
  try {
    result = f();
  } catch (error) {
    result = error;
  }
  const ms = performance.now() - start;
  return { ms, heap: Deno.memoryUsage().heapUsed - before, result };
}

Deno.test("the worst frames found cost little to refuse (measured, printed)", async (t) => {
  await t.step("2 000 ArrayBuffer tags naming one 64 KiB section", () => {
    const json = `[${Array(2_000).fill(tag(0, 64 * KiB, "ArrayBuffer")).join(",")}]`;
    const frame = extendedPayload(json, pattern(64 * KiB));
    for (const owned of [true, false]) {
      const { ms, heap, result } = measure(() => decode(frame, owned));
      assert.ok(result instanceof ExtendedFrameError);
      console.log(
        `  ${(frame.length / 1000).toFixed(0)} KB frame, ${owned ? "views" : "copies"}: refused ` +
          `in ${ms.toFixed(1)} ms, heap ${(heap / 1e6).toFixed(1)} MB (${result.message})`,
      );
    }
  });
  await t.step("a BigInt of 8 000 000 digits", () => {
    const frame = extendedPayload(`{"$t":"bigint","v":"${"9".repeat(8_000_000)}"}`);
    const { ms, result } = measure(() => decode(frame));
    assert.ok(result instanceof ExtendedFrameError);
    console.log(`  ${(frame.length / 1e6).toFixed(1)} MB frame: refused in ${ms.toFixed(0)} ms`);
  });
  await t.step("the largest BigInt allowed: parse, add 1, print", () => {
    const text = "9".repeat(DEFAULT_MAX_BIGINT_DIGITS);
    let best = Infinity;
    for (let i = 0; i < 5; i++) {
      const { ms } = measure(() => (BigInt(text) + 1n).toString());
      best = Math.min(best, ms);
    }
    console.log(`  ${DEFAULT_MAX_BIGINT_DIGITS} digits: ${best.toFixed(2)} ms`);
  });
});
