// AttrWrapper on every runtime: views of results of unknown shape, read by attribute.

import assert from "node:assert/strict";
import { test } from "node:test";
import { inspect } from "node:util";
import { AttrWrapper } from "../../mod.ts";

const { isEmpty, isWrapped, unwrap, wrap } = AttrWrapper;

test("wrap() gives views of objects and arrays, and every other value as it is", () => {
  const data = JSON.parse('{"user": {"name": "ada", "tags": ["a", "b"]}, "n": 1}');
  const view = wrap(data);
  assert.equal(isWrapped(view), true);
  assert.equal(unwrap(view), data);
  for (const value of ["text", 1, null, undefined, 1n, new Date(0), new Uint8Array(1), new Map()]) {
    assert.equal(wrap(value), value);
    assert.equal(isWrapped(wrap(value)), false);
  }
});

test("An object view reads own keys as views and missing keys as undefined", () => {
  const view = wrap({ user: { name: "ada", tags: ["a", "b"] } }) as AttrWrapper.Untyped;
  assert.equal(view.user.name, "ada");
  assert.equal(view.user.tags[1], "b");
  assert.equal(view.user.tags.length, 2);
  assert.equal(view.missing, undefined);
  assert.equal(view.toString, undefined, "an inherited name is no key of the data");
  assert.deepEqual(Object.keys(view.user), ["name", "tags"]);
  assert.equal(isEmpty(wrap({})), true);
  assert.equal(isEmpty(view), false);
});

test("An array view counts negative indexes from the end and refuses one out of range", () => {
  const view = wrap([10, 20, 30]) as AttrWrapper.Untyped;
  assert.equal(view[-1], 30);
  assert.deepEqual(view.map((x: number) => x * 2), [20, 40, 60]);
  assert.throws(() => view[3], RangeError);
});

test("A view shows its data through node:util's inspect", () => {
  const view = wrap({ a: [1, { b: 2 }] });
  assert.match(inspect(view), /a: \[ 1, \{ b: 2 \} \]/);
});
