/**
 * A calculator service: each exported function is a method, and `stats` is a namespace.
 *
 * Serve it with `deno run -A cli.ts serve examples/calc.ts`.
 *
 * @module
 */

/** Adds two numbers. */
export function add(a: number, b: number): number {
  return a + b;
}

/** Subtracts `b` from `a`. */
export function subtract(a: number, b: number): number {
  return a - b;
}

/** Divides `a` by `b`; dividing by zero is an error with code 1001. */
export function divide(a: number, b: number): number {
  if (b === 0) {
    throw Object.assign(new RangeError("Cannot divide: the divisor is 0"), { code: 1001 });
  }
  return a / b;
}

/** Waits `ms` milliseconds (at most 10 s), then answers `ms`: for trying timeouts and concurrency. */
export async function sleep(ms: number): Promise<number> {
  await new Promise((resolve) => setTimeout(resolve, Math.min(Math.max(ms, 0), 10_000)));
  return ms;
}

/** Statistics over lists of numbers. */
export const stats = {
  /** The arithmetic mean; by-name params `{ values }` work too. */
  mean(values: number[] | { values: number[] }): number {
    const list = Array.isArray(values) ? values : values.values;
    return list.reduce((sum, x) => sum + x, 0) / list.length;
  },
  /** The smallest and largest value. */
  range(...values: number[]): { min: number; max: number } {
    return { min: Math.min(...values), max: Math.max(...values) };
  },
};
