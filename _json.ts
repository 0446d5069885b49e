// JSON.parse, guarded against a V8 bug in Deno 2.9.6 (V8 15.0): once an object with a key that
// holds an escaped backslash (`"a\\"`) has been parsed, a later object with the same earlier keys
// and a key with another escape at that place (`"a\t"`, `"a\u0041"`) gets the cached key (`a\`)
// instead. One client could so change the keys another client sends. The wrong key always holds a
// backslash, so only text with a backslash whose parsed keys hold one is parsed again, by a small
// parser of our own that reads each string with JSON.parse alone (strings are not affected).

/** Parses JSON text as JSON.parse does, keys immune to the bug above. */
export function parseJson(text: string): unknown {
  const value = JSON.parse(text);
  if (text.indexOf("\\") === -1 || !hasBackslashKey(value, MAX_CHECK_DEPTH)) return value;
  return new Parser(text).parse();
}

/** The check stops here; the message depth limit (128) refuses deeper text anyway. */
const MAX_CHECK_DEPTH = 256;

function hasBackslashKey(value: unknown, depth: number): boolean {
  if (value === null || typeof value !== "object" || depth === 0) return false;
  if (Array.isArray(value)) {
    for (const item of value) if (hasBackslashKey(item, depth - 1)) return true;
    return false;
  }
  for (const key in value) {
    if (key.includes("\\") || hasBackslashKey((value as Record<string, unknown>)[key], depth - 1)) {
      return true;
    }
  }
  return false;
}

/** A recursive-descent JSON parser for the rare text above; depth bounded by MAX_CHECK_DEPTH. */
class Parser {
  #text: string;
  #at = 0;

  constructor(text: string) {
    this.#text = text;
  }

  parse(): unknown {
    const value = this.#value(MAX_CHECK_DEPTH);
    this.#space();
    if (this.#at !== this.#text.length) this.#fail();
    return value;
  }

  #value(depth: number): unknown {
    if (depth === 0) throw new SyntaxError("JSON nests too deeply");
    this.#space();
    const c = this.#text[this.#at];
    if (c === "{") return this.#object(depth);
    if (c === "[") return this.#array(depth);
    if (c === '"') return this.#string();
    const match = /^(?:-?(?:0|[1-9]\d*)(?:\.\d+)?(?:[eE][+-]?\d+)?|true|false|null)/.exec(
      this.#text.slice(this.#at, this.#at + 400),
    );
    if (!match) this.#fail();
    this.#at += match[0].length;
    return JSON.parse(match[0]);
  }

  #object(depth: number): Record<string, unknown> {
    const object: Record<string, unknown> = {};
    this.#at++;
    this.#space();
    if (this.#text[this.#at] === "}") {
      this.#at++;
      return object;
    }
    for (;;) {
      this.#space();
      if (this.#text[this.#at] !== '"') this.#fail();
      const key = this.#string();
      this.#space();
      if (this.#text[this.#at++] !== ":") this.#fail();
      // defineProperty: a key named __proto__ stays an own key, as with JSON.parse.
      Object.defineProperty(object, key, {
        value: this.#value(depth - 1),
        enumerable: true,
        writable: true,
        configurable: true,
      });
      this.#space();
      const next = this.#text[this.#at++];
      if (next === "}") return object;
      if (next !== ",") this.#fail();
    }
  }

  #array(depth: number): unknown[] {
    const array: unknown[] = [];
    this.#at++;
    this.#space();
    if (this.#text[this.#at] === "]") {
      this.#at++;
      return array;
    }
    for (;;) {
      array.push(this.#value(depth - 1));
      this.#space();
      const next = this.#text[this.#at++];
      if (next === "]") return array;
      if (next !== ",") this.#fail();
    }
  }

  #string(): string {
    const start = this.#at;
    for (let i = start + 1; i < this.#text.length; i++) {
      const c = this.#text[i];
      if (c === "\\") i++;
      else if (c === '"') {
        this.#at = i + 1;
        return JSON.parse(this.#text.slice(start, i + 1));
      }
    }
    this.#fail();
  }

  #space(): void {
    while (/[ \t\n\r]/.test(this.#text[this.#at] ?? "")) this.#at++;
  }

  #fail(): never {
    throw new SyntaxError(`Unexpected token in JSON at position ${this.#at}`);
  }
}
