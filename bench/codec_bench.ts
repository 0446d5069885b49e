// Micro-benchmarks of the codec: the cost of keeping plain JSON plain (the check that a value
// needs no extension) over bare JSON.stringify and JSON.parse, and of rich values.
// Run: deno bench bench/codec_bench.ts

import { jsonOnlyProblem, RichEncoder } from "../_rich.ts";
import { decodeFrame, resultText } from "../_codec.ts";

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
const smallFrame = encoder.encode(resultText("1", small));
const mediumFrame = encoder.encode(resultText("1", medium));

for (const [name, value] of [["small", small], ["medium", medium]] as const) {
  Deno.bench(`JSON.stringify ${name}`, { group: `encode ${name}`, baseline: true }, () => {
    JSON.stringify(value);
  });
  Deno.bench(`plain check + JSON.stringify ${name}`, { group: `encode ${name}` }, () => {
    if (jsonOnlyProblem(value, 128, false) === undefined) JSON.stringify(value);
  });
  Deno.bench(`resultText ${name} (what the server sends)`, { group: `encode ${name}` }, () => {
    if (jsonOnlyProblem(value, 128, false) === undefined) resultText("1", value);
  });
}
for (const [name, frame] of [["small", smallFrame], ["medium", mediumFrame]] as const) {
  const text = new TextDecoder().decode(frame);
  Deno.bench(`JSON.parse ${name}`, { group: `decode ${name}`, baseline: true }, () => {
    JSON.parse(text);
  });
  Deno.bench(`TextDecoder + JSON.parse ${name}`, { group: `decode ${name}` }, () => {
    JSON.parse(new TextDecoder().decode(frame));
  });
  Deno.bench(`decodeFrame ${name} (depth check, UTF-8, parse)`, { group: `decode ${name}` }, () => {
    decodeFrame(frame, 128);
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
