// Micro-benchmarks of the codec: the cost of keeping plain JSON plain (the check that a value
// needs no extension) over bare JSON.stringify and JSON.parse, and of rich values.
// Run: deno bench bench/codec_bench.ts

import {
  DEFAULT_DECODE_LIMITS,
  DEFAULT_MAX_BIGINT_DIGITS,
  ExtendedFrameError,
  parseJson as parseExtendedJson,
  revive,
  RichEncoder,
  splitExtended,
} from "../_rich.ts";
import { parseJson } from "../_json.ts";
import { Codec } from "../_codec.ts";
import { extendedPayload, jsonArrayOf } from "../tests/portable/_data.ts";

const small = { id: 42, name: "ada", active: true, score: 3.5, tags: ["a", "b"] };
const medium = {
  users: Array.from({ length: 50 }, (_, i) => ({
    id: i,
    name: `user${i}`,
    email: `user${i}@example.com`,
    roles: ["reader", i % 3 === 0 ? "admin" : "writer"],
    profile: { age: 20 + i, city: "Lyon", verified: i % 2 === 0 },
  })),
  total: 50,
};
const encoder = new TextEncoder();
const response = (result: unknown) => JSON.stringify({ jsonrpc: "2.0", id: 1, result });
const smallFrame = encoder.encode(response(small));
const mediumFrame = encoder.encode(response(medium));
const plainPeer = new Codec();
const richPeer = new Codec({ rich: true });

// What the server does with a result: prove it plain (so that a Map never silently becomes {}),
// then JSON.stringify it. The envelope is written into the frame in pieces, not joined first.
for (const [name, value] of [["small", small], ["medium", medium]] as const) {
  Deno.bench(`JSON.stringify ${name}`, { group: `encode ${name}`, baseline: true }, () => {
    JSON.stringify(value);
  });
  Deno.bench(`Codec.result ${name}, plain peer`, { group: `encode ${name}` }, () => {
    plainPeer.result("1", value);
  });
  Deno.bench(`Codec.result ${name}, rich peer`, { group: `encode ${name}` }, () => {
    richPeer.result("1", value);
  });
}
// What a receiver does with a frame: UTF-8, parse, the nesting check.
for (const [name, frame] of [["small", smallFrame], ["medium", mediumFrame]] as const) {
  const text = new TextDecoder().decode(frame);
  const utf8 = new TextDecoder();
  Deno.bench(`TextDecoder + JSON.parse ${name}`, {
    group: `decode ${name}`,
    baseline: true,
  }, () => {
    JSON.parse(utf8.decode(frame));
  });
  Deno.bench(`JSON.parse ${name}, text already decoded`, { group: `decode ${name}` }, () => {
    JSON.parse(text);
  });
  Deno.bench(`Codec.decode ${name} (UTF-8, parse, depth check)`, {
    group: `decode ${name}`,
  }, () => {
    plainPeer.decode(frame);
  });
}
const rich = {
  when: new Date(),
  big: 2n ** 70n,
  seen: new Set([1, 2]),
  index: new Map([["a", 1]]),
};
Deno.bench("RichEncoder rich small", () => {
  JSON.stringify(new RichEncoder(128).encode(rich));
});

// Worst frames of the reliability issue, so that the figures in _json.ts and _rich.ts can be
// reproduced. JSON guard (_json.ts): 15 MiB frames, parseJson against JSON.parse, a few runs each
// (JSON.parse alone takes seconds on some). Memory is not measured here: tests/json_guard_test.ts
// and tests/rich_budget_test.ts print it.

const MiB = 1024 * 1024;

const worstJson: [string, () => string][] = [
  // The frame that took the old guard 6 s and +958 MiB: one key with an escape, at the end.
  ["[{},{},…] and one escaped key", () => jsonArrayOf(15 * MiB, () => "{}", ',{"k\\\\":1}')],
  ["escapes in values only", () => jsonArrayOf(15 * MiB, (i) => `{"id":${i},"t":"a \\"b\\"\\n"}`)],
  // Keys that need a placeholder, so that every object is rebuilt.
  ['[{"a\\t":1},…]: every key escaped', () => jsonArrayOf(15 * MiB, () => '{"a\\t":1}')],
  [
    '[{"a\\\\N":1},…]: distinct escaped keys',
    () => jsonArrayOf(15 * MiB, (i) => `{"a\\\\${i}":1}`),
  ],
  [
    "one object of 900 000 escaped keys",
    () => `[{${jsonArrayOf(15 * MiB, (i) => `"a\\t${i}":${i}`).slice(1, -1)}}]`,
  ],
];
for (const [name, make] of worstJson) {
  const text = make();
  const group = `15 MiB: ${name}`;
  Deno.bench(`JSON.parse ${name}`, { group, baseline: true, n: 3, warmup: 1 }, () => {
    JSON.parse(text);
  });
  Deno.bench(`parseJson ${name}`, { group, n: 3, warmup: 1 }, () => {
    parseJson(text);
  });
}

// Extended frames (_rich.ts): decoded as the receiver decodes them (split, parse, revive).

/** Decodes an extended payload; a refused one counts as decoded. */
function decodeExtended(payload: Uint8Array, owned: boolean): unknown {
  try {
    const { json, binary } = splitExtended(payload);
    return revive(parseExtendedJson(json), binary, owned, DEFAULT_DECODE_LIMITS);
  } catch (error) {
    if (error instanceof ExtendedFrameError) return error;
    throw error;
  }
}

const bytesTag = (o: number) => JSON.stringify({ $t: "bytes", o, n: 64, k: "ArrayBuffer" });
const request = (params: string) => `{"jsonrpc":"2.0","id":1,"method":"m","params":[${params}]}`;
const worstExtended: [string, Uint8Array][] = [
  // The old decoder made 2 000 copies of the section: 131 MB for a 164 KB frame. Refused now.
  [
    "164 KB: 2 000 ArrayBuffer tags on one 64 KiB section (refused)",
    extendedPayload(
      request(
        Array(2_000).fill(JSON.stringify({ $t: "bytes", o: 0, n: 65536, k: "ArrayBuffer" }))
          .join(","),
      ),
      new Uint8Array(64 * 1024),
    ),
  ],
  [
    "2 000 ArrayBuffer tags on 2 000 sections of 64 bytes",
    extendedPayload(
      request(Array.from({ length: 2_000 }, (_, i) => bytesTag(i * 64)).join(",")),
      new Uint8Array(2_000 * 64),
    ),
  ],
  // The old decoder parsed it (and the handler printed the sum): 4 s. Refused now.
  [
    "7.6 MiB: add(8 000 000-digit BigInt, 1n) (refused)",
    extendedPayload(
      request(`{"$t":"bigint","v":"${"9".repeat(8_000_000)}"},{"$t":"bigint","v":"1"}`),
    ),
  ],
];
for (const [name, payload] of worstExtended) {
  for (const owned of [true, false]) {
    Deno.bench(
      `decode ${name}, ${owned ? "views" : "copies"}`,
      { group: "extended frames" },
      () => {
        decodeExtended(payload, owned);
      },
    );
  }
}
const largestBigInt = "9".repeat(DEFAULT_MAX_BIGINT_DIGITS);
Deno.bench(
  `BigInt of ${DEFAULT_MAX_BIGINT_DIGITS} digits (the largest allowed): parse, add 1, print`,
  () => {
    (BigInt(largestBigInt) + 1n).toString();
  },
);
