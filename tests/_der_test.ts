import assert from "node:assert/strict";
import {
  bitString,
  boolean,
  explicit,
  generalizedTime,
  ia5String,
  implicit,
  integer,
  namedBits,
  nullValue,
  octetString,
  oid,
  printableString,
  sequence,
  set,
  utcTime,
  utf8String,
  x509Time,
} from "../_der.ts";
import {
  parseDer,
  readBitString,
  readBoolean,
  readInteger,
  readNamedBits,
  readOctetString,
  readOid,
  readString,
  readTime,
  readUnsigned,
} from "../_der_read.ts";
import { Tag } from "../_der_tag.ts";
import { seededRandom } from "./portable/_data.ts";

function hex(bytes: Uint8Array): string {
  return Array.from(bytes, (byte) => byte.toString(16).padStart(2, "0")).join(" ");
}

function fromHex(text: string): Uint8Array<ArrayBuffer> {
  return Uint8Array.from(text.split(" ").filter(Boolean), (byte) => parseInt(byte, 16));
}

Deno.test("integer() writes the shortest two's complement and readInteger() reads it back", async (t) => {
  const cases: [bigint | number, string][] = [
    [0, "02 01 00"],
    [1, "02 01 01"],
    [127, "02 01 7f"],
    [128, "02 02 00 80"],
    [255, "02 02 00 ff"],
    [256, "02 02 01 00"],
    [65535, "02 03 00 ff ff"],
    [-1, "02 01 ff"],
    [-128, "02 01 80"],
    [-129, "02 02 ff 7f"],
    [-256, "02 02 ff 00"],
    [Number.MAX_SAFE_INTEGER, "02 07 1f ff ff ff ff ff ff"],
    [2n ** 64n, "02 09 01 00 00 00 00 00 00 00 00"],
    [-(2n ** 64n), "02 09 ff 00 00 00 00 00 00 00 00"],
  ];
  for (const [value, expected] of cases) {
    await t.step(`${value}`, () => {
      const der = integer(value);
      assert.equal(hex(der), expected);
      assert.equal(readInteger(parseDer(der)), BigInt(value));
    });
  }
});

Deno.test("integer() reads bytes as an unsigned magnitude, dropping and adding zero bytes", async (t) => {
  const cases: [string, string, string][] = [
    ["", "02 01 00", "00 00 00 00"],
    ["00", "02 01 00", "00 00 00 00"],
    ["00 00", "02 01 00", "00 00 00 00"],
    ["7f", "02 01 7f", "00 00 00 7f"],
    ["80", "02 02 00 80", "00 00 00 80"],
    ["00 00 80", "02 02 00 80", "00 00 00 80"],
    ["00 01 ff", "02 02 01 ff", "00 00 01 ff"],
    ["ff ff", "02 03 00 ff ff", "00 00 ff ff"],
  ];
  for (const [input, expected, padded] of cases) {
    await t.step(`[${input}]`, () => {
      const der = integer(fromHex(input));
      assert.equal(hex(der), expected);
      assert.equal(hex(readUnsigned(parseDer(der), 4)), padded);
    });
  }
});

Deno.test("readUnsigned() left-pads to the size and rejects what does not fit", () => {
  assert.equal(hex(readUnsigned(parseDer(integer(0x80)), 3)), "00 00 80");
  assert.throws(() => readUnsigned(parseDer(integer(0x1_0000)), 2), RangeError);
  assert.throws(() => readUnsigned(parseDer(integer(-1)), 2), RangeError);
});

Deno.test("integer() round-trips random values (seeded)", () => {
  const seed = Date.now() >>> 0;
  const next = seededRandom(seed);
  for (let i = 0; i < 500; i++) {
    const bytes = Math.floor(next() * 40);
    let value = 0n;
    for (let j = 0; j < bytes; j++) value = (value << 8n) | BigInt(Math.floor(next() * 256));
    if (next() < 0.5) value = -value;
    const read = readInteger(parseDer(integer(value)));
    assert.equal(read, value, `integer ${value} read back as ${read} (seed ${seed})`);
  }
});

Deno.test("tlv() writes lengths in short and long form and parseDer() reads them", async (t) => {
  const cases: [number, string][] = [
    [0, "04 00"],
    [1, "04 01"],
    [127, "04 7f"],
    [128, "04 81 80"],
    [255, "04 81 ff"],
    [256, "04 82 01 00"],
    [65535, "04 82 ff ff"],
    [65536, "04 83 01 00 00"],
  ];
  for (const [length, header] of cases) {
    await t.step(`${length} bytes`, () => {
      const contents = Uint8Array.from({ length }, (_, i) => i % 251);
      const der = octetString(contents);
      const headerLength = header.split(" ").length;
      assert.equal(hex(der.subarray(0, headerLength)), header);
      assert.equal(der.length, headerLength + length);
      assert.deepEqual(readOctetString(parseDer(der)), contents);
    });
  }
});

Deno.test("oid() writes base-128 arcs and readOid() reads them back", async (t) => {
  const cases: [string, string][] = [
    ["2.5.4.3", "06 03 55 04 03"],
    ["1.2.840.10045.2.1", "06 07 2a 86 48 ce 3d 02 01"],
    ["1.2.840.10045.4.3.2", "06 08 2a 86 48 ce 3d 04 03 02"],
    ["1.3.6.1.5.5.7.3.1", "06 08 2b 06 01 05 05 07 03 01"],
    ["0.0", "06 01 00"],
    ["2.999.3", "06 03 88 37 03"],
    ["1.2.18446744073709551616", "06 0b 2a 82 80 80 80 80 80 80 80 80 00"],
  ];
  for (const [dotted, expected] of cases) {
    await t.step(dotted, () => {
      const der = oid(dotted);
      assert.equal(hex(der), expected);
      assert.equal(readOid(parseDer(der)), dotted);
    });
  }
});

Deno.test("oid() rejects identifiers that are not dotted arcs", async (t) => {
  for (const bad of ["", "1", "3.1", "1.40", "1.2.", "1..2", "1.02", "a.b"]) {
    await t.step(JSON.stringify(bad), () => {
      assert.throws(() => oid(bad), /^(TypeError|RangeError): Cannot encode OBJECT IDENTIFIER: /);
    });
  }
});

Deno.test("x509Time() writes UTCTime up to 2049 and GeneralizedTime from 2050", async (t) => {
  const cases: [string, number, string][] = [
    ["1950-01-01T00:00:00Z", Tag.UtcTime, "500101000000Z"],
    ["1999-12-31T23:59:59Z", Tag.UtcTime, "991231235959Z"],
    ["2026-03-04T05:06:07.890Z", Tag.UtcTime, "260304050607Z"],
    ["2049-12-31T23:59:59Z", Tag.UtcTime, "491231235959Z"],
    ["2050-01-01T00:00:00Z", Tag.GeneralizedTime, "20500101000000Z"],
    ["9999-12-31T23:59:59Z", Tag.GeneralizedTime, "99991231235959Z"],
    ["1949-12-31T23:59:59Z", Tag.GeneralizedTime, "19491231235959Z"],
  ];
  for (const [iso, tag, text] of cases) {
    await t.step(iso, () => {
      const date = new Date(iso);
      const node = parseDer(x509Time(date));
      assert.equal(node.tag, tag);
      assert.equal(new TextDecoder().decode(node.contents), text);
      assert.equal(readTime(node).getTime(), Math.floor(date.getTime() / 1000) * 1000);
    });
  }
});

Deno.test("utcTime() and generalizedTime() each round-trip, and utcTime() refuses years past 2049", () => {
  const date = new Date("2030-07-08T09:10:11Z");
  assert.deepEqual(readTime(parseDer(utcTime(date))), date);
  assert.deepEqual(readTime(parseDer(generalizedTime(date))), date);
  assert.throws(() => utcTime(new Date("2050-01-01T00:00:00Z")), RangeError);
  assert.throws(() => x509Time(new Date(Number.NaN)), RangeError);
});

Deno.test("readTime() rejects times DER does not allow", async (t) => {
  const cases: [string, Uint8Array][] = [
    ["fraction", fromHex("18 11 " + hex(new TextEncoder().encode("20300101000000.5Z")))],
    ["offset", fromHex("17 11 " + hex(new TextEncoder().encode("300101000000+0100")))],
    ["February 30", generalizedTimeText("20230230000000Z")],
    ["hour 24", generalizedTimeText("20230101240000Z")],
    ["not a time", octetString(new Uint8Array(1))],
  ];
  for (const [name, der] of cases) {
    await t.step(name, () => {
      assert.throws(() => readTime(parseDer(der as Uint8Array<ArrayBuffer>)), TypeError);
    });
  }
});

function generalizedTimeText(text: string): Uint8Array<ArrayBuffer> {
  const bytes = new TextEncoder().encode(text);
  return Uint8Array.of(Tag.GeneralizedTime, bytes.length, ...bytes);
}

Deno.test("string, boolean and null encoders round-trip", async (t) => {
  await t.step("UTF8String", () => {
    const der = utf8String("héllo ✓");
    assert.equal(der[0], Tag.Utf8String);
    assert.equal(readString(parseDer(der)), "héllo ✓");
  });
  await t.step("PrintableString", () => {
    const der = printableString("Hello, World (1+1=2)?");
    assert.equal(der[0], Tag.PrintableString);
    assert.equal(readString(parseDer(der)), "Hello, World (1+1=2)?");
    assert.throws(() => printableString("a@b"), TypeError);
  });
  await t.step("IA5String", () => {
    assert.equal(hex(ia5String("a.b")), "16 03 61 2e 62");
    assert.throws(() => ia5String("é"), TypeError);
  });
  await t.step("BOOLEAN", () => {
    assert.equal(hex(boolean(true)), "01 01 ff");
    assert.equal(hex(boolean(false)), "01 01 00");
    assert.equal(readBoolean(parseDer(boolean(true))), true);
    assert.equal(readBoolean(parseDer(boolean(false))), false);
    assert.throws(() => readBoolean(parseDer(fromHex("01 01 01"))), TypeError);
  });
  await t.step("NULL", () => {
    assert.equal(hex(nullValue()), "05 00");
    assert.equal(parseDer(nullValue()).tag, Tag.Null);
  });
});

Deno.test("namedBits() drops trailing zero bits and readNamedBits() reads the bits back", async (t) => {
  const cases: [number[], string][] = [
    [[], "03 01 00"],
    [[0], "03 02 07 80"],
    [[5, 6], "03 02 01 06"],
    [[0, 5, 6], "03 02 01 86"],
    [[7], "03 02 00 01"],
    [[0, 8], "03 03 07 80 80"],
  ];
  for (const [bits, expected] of cases) {
    await t.step(`[${bits}]`, () => {
      const der = namedBits(bits);
      assert.equal(hex(der), expected);
      assert.deepEqual(readNamedBits(parseDer(der)), bits);
    });
  }
});

Deno.test("bitString() checks its unused bits", () => {
  assert.deepEqual(readBitString(parseDer(bitString(fromHex("ab cd")))), {
    bytes: fromHex("ab cd"),
    unusedBits: 0,
  });
  assert.throws(() => bitString(fromHex("01"), 1), RangeError);
  assert.throws(() => bitString(new Uint8Array(0), 3), RangeError);
  assert.throws(() => bitString(fromHex("00"), 8), RangeError);
});

Deno.test("explicit() wraps a value and implicit() replaces its tag", async (t) => {
  await t.step("EXPLICIT [0] INTEGER 2", () => {
    const der = explicit(0, integer(2));
    assert.equal(hex(der), "a0 03 02 01 02");
    const node = parseDer(der);
    assert.equal(node.tagClass, 2);
    assert.equal(node.tagNumber, 0);
    assert.equal(node.constructed, true);
    assert.equal(readInteger(node.children[0]!), 2n);
  });
  await t.step("IMPLICIT [2] IA5String", () => {
    const node = parseDer(implicit(2, new TextEncoder().encode("localhost")));
    assert.equal(node.tag, 0x82);
    assert.equal(node.constructed, false);
    assert.equal(new TextDecoder().decode(node.contents), "localhost");
  });
  await t.step("IMPLICIT [3] constructed", () => {
    const der = implicit(3, integer(1), { constructed: true });
    assert.equal(hex(der), "a3 03 02 01 01");
    assert.equal(parseDer(der).children.length, 1);
  });
  await t.step("tag numbers above 30 are refused", () => {
    assert.throws(() => explicit(31, nullValue()), RangeError);
  });
});

Deno.test("sequence() keeps order, set() sorts, and parseDer() exposes children and raw bytes", () => {
  assert.equal(hex(set([integer(2), integer(1)])), "31 06 02 01 01 02 01 02");
  const inner = sequence([oid("2.5.4.3"), utf8String("x")]);
  const der = sequence([integer(2), inner, sequence([])]);
  const node = parseDer(der);
  assert.equal(node.tag, Tag.Sequence);
  assert.equal(node.children.length, 3);
  assert.deepEqual(node.raw, der);
  assert.deepEqual(node.children[1]!.raw, inner);
  assert.equal(readOid(node.children[1]!.children[0]!), "2.5.4.3");
  assert.equal(node.children[2]!.children.length, 0);
});

Deno.test("parseDer() rejects encodings that are not DER", async (t) => {
  const cases: [string, string][] = [
    ["trailing bytes", "05 00 00"],
    ["indefinite length", "30 80 00 00"],
    ["long form for a short length", "04 81 05 00 00 00 00 00"],
    ["leading zero in long length", "04 82 00 80"],
    ["truncated contents", "04 05 00"],
    ["truncated header", "04"],
    ["child overruns its parent", "30 03 04 05 00 00 00 00 00"],
    ["high tag number", "1f 81 00 00"],
  ];
  for (const [name, input] of cases) {
    await t.step(name, () => {
      assert.throws(() => parseDer(fromHex(input)), /^TypeError: Cannot parse DER: /);
    });
  }
});

Deno.test("readInteger() and readOid() reject encodings that are not the shortest", () => {
  assert.throws(() => readInteger(parseDer(fromHex("02 02 00 01"))), TypeError);
  assert.throws(() => readInteger(parseDer(fromHex("02 02 ff 80"))), TypeError);
  assert.throws(() => readInteger(parseDer(fromHex("02 00"))), TypeError);
  assert.throws(() => readOid(parseDer(fromHex("06 02 80 01"))), TypeError);
  assert.throws(() => readOid(parseDer(fromHex("06 01 81"))), TypeError);
  assert.throws(() => readInteger(parseDer(nullValue())), /tag is 0x05, not 0x02/);
});

Deno.test("readOid() reads a UUID arc but refuses longer arcs, and readInteger() reads long values in linear time", async (t) => {
  await t.step("a 128-bit UUID arc", () => {
    const uuid = `2.25.${2n ** 128n - 1n}`;
    assert.equal(readOid(parseDer(oid(uuid))), uuid);
  });
  await t.step("an arc of 21 octets", () => {
    const contents = [0x2a, ...new Array<number>(20).fill(0x81), 0x01];
    const der = Uint8Array.of(Tag.Oid, contents.length, ...contents);
    assert.throws(() => readOid(parseDer(der)), /^RangeError: Cannot read OBJECT IDENTIFIER: /);
  });
  await t.step("an INTEGER of 100 KiB", () => {
    const length = 100 * 1024;
    const der = new Uint8Array(5 + length).fill(0x41);
    der.set([Tag.Integer, 0x83, length >> 16, (length >> 8) & 0xff, length & 0xff]);
    const started = performance.now();
    const value = readInteger(parseDer(der));
    assert.ok(performance.now() - started < 1_000, "read in under a second");
    assert.equal(value & 0xffffn, 0x4141n);
    assert.equal(value >> BigInt(8 * (length - 2)), 0x4141n);
  });
});
