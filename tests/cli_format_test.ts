import assert from "node:assert/strict";
import {
  BYTES_PREVIEW,
  describeMethod,
  escapeText,
  formatMethod,
  formatValue,
  rawJson,
  toJson,
} from "../_format.ts";
import { formatFlags, HELP_FLAG, switchFlag, valueFlag } from "../_cli_flags.ts";

/** Characters a terminal acts on or that reorder text; line ends allowed where the test says. */
// deno-lint-ignore no-control-regex -- looking for control characters is the point
const UNSAFE = /[\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028-\u202e\u2066-\u2069]/;

Deno.test("escapeText() shows every control, separator and bidi character as a visible escape", async (t) => {
  const cases: [string, string][] = [
    ["plain text, ünïcödé ✓ and \\x1b as typed", "plain text, ünïcödé ✓ and \\x1b as typed"],
    ["\x1b]0;pwned\x07", String.raw`\x1b]0;pwned\x07`],
    ["\x1b[2J\x1b[H", String.raw`\x1b[2J\x1b[H`],
    ["a\tb\nc\rd", String.raw`a\tb\nc\rd`],
    ["\x00\x08\x0b\x0c\x1f", String.raw`\x00\x08\x0b\x0c\x1f`],
    ["del\x7f", String.raw`del\x7f`],
    ["c1 \u0080 \u0085 \u009b31m \u009f", String.raw`c1 \x80 \x85 \x9b31m \x9f`],
    ["line\u2028para\u2029", String.raw`line\u{2028}para\u{2029}`],
    [
      "bidi \u202a\u202b\u202c\u202d\u202e",
      String.raw`bidi \u{202a}\u{202b}\u{202c}\u{202d}\u{202e}`,
    ],
    ["isolates \u2066\u2067\u2068\u2069", String.raw`isolates \u{2066}\u{2067}\u{2068}\u{2069}`],
    ["marks \u200e\u200f\u061c", String.raw`marks \u{200e}\u{200f}\u{61c}`],
    ["\u00a0 and \u00e9 stay", "\u00a0 and \u00e9 stay"],
  ];
  for (const [input, expected] of cases) {
    await t.step(JSON.stringify(input), () => {
      assert.equal(escapeText(input), expected);
    });
  }
});

Deno.test("formatValue() prints JSON, one line or indented, and rich values as themselves", async (t) => {
  const bytes = Uint8Array.from({ length: BYTES_PREVIEW + 4 }, (_, i) => i);
  const cases: { name: string; value: unknown; indent?: number; expected: string }[] = [
    { name: "a number", value: 5, expected: "5" },
    { name: "an object", value: { a: [1, "x"], b: null }, expected: '{"a":[1,"x"],"b":null}' },
    {
      name: "an object, indented",
      value: { a: [1] },
      indent: 2,
      expected: '{\n  "a": [\n    1\n  ]\n}',
    },
    { name: "undefined, as JSON has it", value: undefined, expected: "null" },
    { name: "undefined inside", value: [undefined, 1n], expected: "[undefined, 1n]" },
    { name: "a BigInt", value: 12345678901234567890n, expected: "12345678901234567890n" },
    { name: "NaN, -0 and Infinity", value: [NaN, -0, -Infinity], expected: "[NaN, -0, -Infinity]" },
    {
      name: "a Date",
      value: new Date(Date.UTC(2024, 0, 1)),
      expected: "Date(2024-01-01T00:00:00.000Z)",
    },
    { name: "an invalid Date", value: new Date(NaN), expected: "Date(invalid)" },
    {
      name: "a few bytes",
      value: new Uint8Array([1, 2, 255]),
      expected: "Uint8Array(3 bytes) <01 02 ff>",
    },
    {
      name: "more bytes than the preview",
      value: bytes,
      expected:
        `Uint8Array(${bytes.length} bytes) <00 01 02 03 04 05 06 07 08 09 0a 0b 0c 0d 0e 0f ...>`,
    },
    {
      name: "an ArrayBuffer",
      value: new Uint8Array([7]).buffer,
      expected: "ArrayBuffer(1 bytes) <07>",
    },
    {
      name: "a Map and a Set",
      value: { m: new Map([["a", 1]]), s: new Set([1, 2]) },
      expected: '{"m": Map {"a" => 1}, "s": Set [1, 2]}',
    },
    {
      name: "a Map, indented",
      value: new Map([["a", [1n]]]),
      indent: 2,
      expected: 'Map {\n  "a" => [\n    1n\n  ]\n}',
    },
    {
      name: "empty rich containers",
      value: [new Map(), new Set(), 1n],
      expected: "[Map {}, Set [], 1n]",
    },
  ];
  for (const c of cases) {
    await t.step(c.name, () => {
      assert.equal(formatValue(c.value, c.indent), c.expected);
    });
  }
});

Deno.test("formatValue() and rawJson() escape what JSON.stringify leaves raw, and stay the same JSON", async (t) => {
  const hostile = "\x1b]0;pwned\x07 \u009b2J \x7f \u202e \u2028 \u2066";
  const escaped = String.raw`"\u001b]0;pwned\u0007 \u009b2J \u007f \u202e \u2028 \u2066"`;
  await t.step("a string, as JSON", () => {
    const text = formatValue(hostile);
    assert.equal(text, escaped);
    assert.equal(JSON.parse(text), hostile);
  });
  await t.step("keys and values, indented", () => {
    const text = formatValue({ [hostile]: [hostile] }, 2);
    assert.doesNotMatch(text.replaceAll("\n", ""), UNSAFE);
    assert.deepEqual(JSON.parse(text), { [hostile]: [hostile] });
  });
  await t.step("rich values: strings, keys of objects and of Maps", () => {
    const text = formatValue({ [hostile]: new Map([[hostile, new Set([hostile, 1n])]]) });
    assert.equal(text, `{${escaped}: Map {${escaped} => Set [${escaped}, 1n]}}`);
  });
  await t.step("rawJson(): plain and tagged", () => {
    assert.equal(rawJson(hostile), escaped);
    assert.equal(rawJson({ [hostile]: 1n }), `{${escaped}:{"$t":"bigint","v":"1"}}`);
    assert.equal(
      rawJson(new Map([[hostile, hostile]])),
      `{"$t":"map","v":[[${escaped},${escaped}]]}`,
    );
  });
});

Deno.test("formatValue() leaves no unsafe character in any string (property; prints its seed)", () => {
  const seed = Date.now() >>> 0;
  let state = seed;
  function next(n: number): number {
    state = (Math.imul(state, 1_103_515_245) + 12_345) >>> 0;
    return state % n;
  }
  const pool = [
    0x00,
    0x07,
    0x09,
    0x0a,
    0x1b,
    0x20,
    0x41,
    0x5c,
    0x7f,
    0x80,
    0x9b,
    0x9f,
    0xe9,
    0x61c,
    0x200e,
    0x2028,
    0x2029,
    0x202e,
    0x2066,
    0x2069,
    0xd800,
    0x1f600,
  ];
  try {
    for (let i = 0; i < 500; i++) {
      const text = Array.from(
        { length: next(12) },
        () => String.fromCodePoint(pool[next(pool.length)]!),
      )
        .join("");
      const json = formatValue({ [text]: text });
      assert.doesNotMatch(json, UNSAFE);
      assert.deepEqual(JSON.parse(json), { [text]: text });
      assert.doesNotMatch(formatValue(new Map([[text, 1n]])), UNSAFE);
      assert.doesNotMatch(escapeText(text), UNSAFE);
    }
  } catch (error) {
    throw new Error(`failed with seed ${seed}`, { cause: error });
  }
});

Deno.test("formatMethod() prints name(params), escaped, whatever the discover document holds", async (t) => {
  const cases: { name: string; method: unknown; expected: string }[] = [
    {
      name: "a method",
      method: { name: "add", params: [{ name: "a" }, { name: "b" }] },
      expected: "add(a, b)",
    },
    { name: "no params", method: { name: "ping" }, expected: "ping()" },
    {
      name: "escapes in names and params",
      method: { name: "evil\x1b[2J", params: [{ name: "\u009b31m" }, { name: "x\u202e" }] },
      expected: String.raw`evil\x1b[2J(\x9b31m, x\u{202e})`,
    },
    {
      name: "names that are not strings",
      method: { name: 5, params: [{ name: { a: "\x1b" } }, {}] },
      expected: String.raw`5({"a":"\u001b"}, undefined)`,
    },
    { name: "no name", method: null, expected: "undefined()" },
    {
      name: "an optional and a rest parameter",
      method: {
        name: "mix",
        params: [
          { name: "a", required: true },
          { name: "b", required: false },
          { name: "xs", required: false, "x-rest": true },
        ],
      },
      expected: "mix(a, b?, ...xs)",
    },
    {
      name: "required and x-rest only as own booleans",
      method: { name: "m", params: [{ name: "a", required: "no", "x-rest": "yes" }] },
      expected: "m(a)",
    },
    {
      name: "a null-prototype object",
      method: Object.assign(Object.create(null), { name: Object.create(null) }),
      expected: "{}()",
    },
    {
      name: "a name only inherited",
      method: Object.create({ name: "inherited" }),
      expected: "undefined()",
    },
  ];
  for (const c of cases) {
    await t.step(c.name, () => {
      assert.equal(formatMethod(c.method), c.expected);
    });
  }
});

Deno.test("formatFlags() lines up the flags, wraps descriptions, and keeps each default whole", () => {
  const text = formatFlags({
    port: valueFlag("PORT", "port to listen on", 7443),
    "expose-stack": switchFlag("send stacks"),
    long: valueFlag("X", "word ".repeat(30).trim(), "the state folder that serve uses"),
    ...HELP_FLAG,
  });
  const lines = text.split("\n");
  assert.equal(lines[0], "  --port PORT     port to listen on (default: 7443)");
  assert.equal(lines[1], "  --expose-stack  send stacks");
  assert.ok(lines.every((line) => line.length <= 96), text);
  assert.ok(
    lines.some((line) => line.includes("(default: the state folder that serve uses)")),
    text,
  );
  assert.ok(lines.slice(3, -1).every((line) => line.startsWith(" ".repeat(18))), text);
  assert.equal(lines.at(-1), "  -h, --help      show this help");
});

Deno.test("toJson() prints plain JSON as itself and rich values as one-key tagged objects", async (t) => {
  const cases: { name: string; value: unknown; indent?: number; expected: string }[] = [
    { name: "plain JSON", value: { a: [1, "x", null, true] }, expected: '{"a":[1,"x",null,true]}' },
    { name: "plain JSON, indented", value: { a: 1 }, indent: 2, expected: '{\n  "a": 1\n}' },
    { name: "a function's missing result", value: undefined, expected: "null" },
    {
      name: "a BigInt",
      value: 12345678901234567890n,
      expected: '{"$bigint":"12345678901234567890"}',
    },
    { name: "bytes", value: new Uint8Array([1, 2, 3]), expected: '{"$bytes":"AQID"}' },
    {
      name: "another typed array",
      value: new Int16Array([1]),
      expected: '{"$bytes":"AQA=","type":"Int16Array"}',
    },
    {
      name: "an ArrayBuffer",
      value: new Uint8Array([255]).buffer,
      expected: '{"$bytes":"/w==","type":"ArrayBuffer"}',
    },
    {
      name: "a Date, and an invalid one",
      value: [new Date(Date.UTC(2024, 0, 1)), new Date(NaN)],
      expected: '[{"$date":"2024-01-01T00:00:00.000Z"},{"$date":null}]',
    },
    {
      name: "a Map with keys of any kind",
      value: new Map<unknown, unknown>([[1, "one"], [[2], new Set([3n])]]),
      expected: '{"$map":[[1,"one"],[[2],{"$set":[{"$bigint":"3"}]}]]}',
    },
    {
      name: "undefined inside, NaN, ±Infinity and -0",
      value: { u: undefined, n: [NaN, Infinity, -Infinity, -0, 0] },
      expected: '{"u":{"$undefined":true},"n":[{"$number":"NaN"},{"$number":"Infinity"},' +
        '{"$number":"-Infinity"},{"$number":"-0"},0]}',
    },
    {
      name: "a data object with a tag key is wrapped, other $ keys are not",
      value: [{ $bigint: "1" }, { $schema: "x", $t: 1 }],
      expected: '[{"$object":{"$bigint":"1"}},{"$schema":"x","$t":1}]',
    },
    {
      name: "a __proto__ key stays a key",
      value: JSON.parse('{"__proto__":{"a":1}}'),
      expected: '{"__proto__":{"a":1}}',
    },
  ];
  for (const c of cases) {
    await t.step(c.name, () => {
      const text = toJson(c.value, c.indent);
      assert.equal(text, c.expected);
      JSON.parse(text); // any JSON reader reads it
    });
  }
  await t.step("characters a terminal acts on are escaped, and the JSON is the same", () => {
    const hostile = "\x1b[2J\u009b\u202e";
    const text = toJson(new Map([[hostile, hostile]]));
    assert.doesNotMatch(text, UNSAFE);
    assert.deepEqual(JSON.parse(text), { $map: [[hostile, hostile]] });
  });
});

Deno.test("describeMethod() prints the signature, then each parameter's kind, escaped", () => {
  const text = describeMethod({
    name: "greet\x1b",
    summary: "Greets\u202e",
    params: [
      { name: "name", required: true },
      { name: "greeting", required: false },
      { name: "xs", required: false, "x-rest": true },
    ],
  });
  assert.equal(
    text,
    [
      String.raw`greet\x1b(name, greeting?, ...xs)`,
      String.raw`  Greets\u{202e}`,
      "  name      required",
      "  greeting  optional",
      "  ...xs     rest: takes any number of values, by position",
    ].join("\n"),
  );
  assert.equal(describeMethod({ name: "ping", params: [] }), "ping()\n  no parameters");
});
