// `call --get PATH`: the value at a dotted path of a result. Each step reads only what the value
// itself holds (own keys, indices, Map entries), never what its prototype gives (`length`,
// `constructor`): a result from the wire is data, not an object to explore.

import { CliError, ExitCode } from "./_cli_error.ts";

/**
 * The value at the dotted `path` of `value`: `2.dd.ee`, `items.-1.name`, `byName.ada`. A step
 * reads an own key of an object; an index of an array or typed array (negative from the end); or
 * a key of a Map, taken as JSON when it parses (so `1` finds the number key 1, `"1"` the string)
 * and else as the string itself, with a BigInt key found by its digits.
 *
 * @throws {CliError} Exit 1, naming the first step that finds nothing.
 */
export function pick(value: unknown, path: string): unknown {
  const steps = path.split(".");
  let current = value;
  for (const [i, step] of steps.entries()) {
    const found = lookup(current, step);
    if (found === undefined) {
      const where = i === 0 ? "the result" : `"${steps.slice(0, i).join(".")}"`;
      throw new CliError(ExitCode.Failure, `Cannot get "${path}": ${where} has no "${step}"`);
    }
    current = found.value;
  }
  return current;
}

/** What `step` finds in `value`, boxed so that a found `undefined` (a rich value) counts. */
function lookup(value: unknown, step: string): { value: unknown } | undefined {
  if (value === null || typeof value !== "object") return undefined;
  if (value instanceof Map) return mapEntry(value, step);
  if (Array.isArray(value) || (ArrayBuffer.isView(value) && !(value instanceof DataView))) {
    const items = value as ArrayLike<unknown>;
    if (!/^-?\d+$/.test(step)) return undefined;
    const index = Number(step) < 0 ? items.length + Number(step) : Number(step);
    return index >= 0 && index < items.length ? { value: items[index] } : undefined;
  }
  if (value instanceof Set || value instanceof Date || value instanceof ArrayBuffer) {
    return undefined;
  }
  return Object.hasOwn(value, step)
    ? { value: (value as Record<string, unknown>)[step] }
    : undefined;
}

function mapEntry(map: Map<unknown, unknown>, step: string): { value: unknown } | undefined {
  const keys: unknown[] = [];
  try {
    keys.push(JSON.parse(step));
  } catch {
    // Not JSON: the step is the string key itself.
  }
  keys.push(step);
  if (/^-?\d+$/.test(step)) keys.push(BigInt(step));
  for (const key of keys) if (map.has(key)) return { value: map.get(key) };
  return undefined;
}
