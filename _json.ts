// JSON.parse, guarded against a V8 bug in Deno 2.9.6 (V8 15.0): once an object with a key that
// holds an escaped backslash (`"a\\"`) has been parsed, a later object with the same earlier keys
// and a key with another escape at that place (`"a\t"`, `"a\u0041"`) gets the cached key (`a\`)
// instead. One client could so change the keys another client sends.
//
// What triggers it, found by experiment (tests/json_guard_test.ts keeps the reproducers): V8 reads
// a key against a hint, the key of the only transition out of the map of the object so far (a key
// that an earlier object, from any client, had at that place). For a key that holds an escape,
// V8 15.0 compares the hint with the first n characters of the key's raw text, n being the length
// of the decoded key, instead of with the decoded key: `"a\t"` (2 characters) matches the hint
// `a\`. A key without an escape is its own raw text, so its comparison is right, and string values
// get no hint. Only keys with an escape can come out wrong.
//
// So the guard never parses JSON itself, and JSON.parse never sees a key with an escape. Keys
// with one are found by reading only the strings that hold a backslash (text without such a key
// goes to JSON.parse as it is). Each is rewritten by the key it stands for: as that key itself,
// unescaped, when it needs no escape; else as a placeholder without escapes that stands for it, and
// a walk after JSON.parse renames the placeholders, rebuilding only the objects that hold one. One
// key has one spelling in the rewritten text, so a key given twice is JSON.parse's to resolve (first
// place, last value). Every step is linear in the text and iterative (any depth), and JSON.parse
// does the parsing: numbers of any length included.
//
// Cost on 15 MiB frames (bench/codec_bench.ts, a loaded 2-core VM): about JSON.parse's own when no
// key needs a placeholder (escapes in values, `[{},{},…]` with one escaped key: 1.0-1.2x, where
// the re-parse of old took 3x and +958 MiB); 2-4x when every object holds one and is rebuilt.

/** Parses JSON text as JSON.parse does, keys immune to the bug above. */
export function parseJson(text: string): unknown {
  if (text.indexOf("\\") === -1) return JSON.parse(text);
  try {
    const rewritten = rewriteEscapedKeys(text);
    if (rewritten === undefined) return JSON.parse(text);
    const value = JSON.parse(rewritten.text);
    if (rewritten.placeholders === 0) return value;
    return new KeyRestorer(rewritten.prefix, rewritten.placeholders).restore(value);
  } catch (error) {
    // Not JSON (a rewritten key may hide a bad escape or a raw control character): throw
    // JSON.parse's own error, its position in the text the peer sent.
    JSON.parse(text);
    throw error;
  }
}

const BACKSLASH = 0x5c;
const QUOTE = 0x22;
const COLON = 0x3a;
const TILDE = 0x7e;

/** Text whose keys hold no escape, and how to read its placeholders. */
interface Rewritten {
  text: string;
  /** What every placeholder starts with, and no other key. */
  prefix: string;
  /** How many keys became placeholders. */
  placeholders: number;
}

/**
 * `text` with each key that holds an escape rewritten (see the top of the file), or `undefined`
 * when no key holds one.
 *
 * Only strings with a backslash are read, each from its first backslash on. That backslash starts
 * an escape: no backslash lies between it and its string's opening quote, which is the last quote
 * before it. (That holds in JSON text; in other text the result is nonsense that JSON.parse then
 * refuses, see parseJson.)
 *
 * @throws {SyntaxError} When a key is not a valid JSON string.
 */
function rewriteEscapedKeys(text: string): Rewritten | undefined {
  const length = text.length;
  const batch = new KeyBatch();
  let last = 0;
  let backslash = text.indexOf("\\");
  while (backslash !== -1) {
    let close = backslash;
    for (;;) {
      const c = text.charCodeAt(close);
      if (c === BACKSLASH) close += 2;
      else if (c === QUOTE) break;
      else if (close >= length) return undefined; // unterminated: JSON.parse says so
      else close++;
    }
    let after = close + 1;
    let c = text.charCodeAt(after);
    while (c === 0x20 || c === 0x09 || c === 0x0a || c === 0x0d) c = text.charCodeAt(++after);
    if (c === COLON) {
      const open = text.lastIndexOf('"', backslash);
      if (open < last) return undefined; // a backslash outside a string: JSON.parse says so
      batch.prefix ??= absentPrefix(text);
      batch.add(text.slice(last, open), text.slice(open, close + 1));
      last = close + 1;
    }
    backslash = text.indexOf("\\", close + 1);
  }
  if (batch.prefix === undefined) return undefined;
  return {
    text: batch.end(text.slice(last)),
    prefix: batch.prefix,
    placeholders: batch.placeholders,
  };
}

/** Keys rewritten at a time: one JSON.parse decodes them all, and the parts die young. */
const KEYS_PER_BATCH = 2048;

/** The rewritten text, built a batch of keys at a time. */
class KeyBatch {
  /** What placeholders start with: chosen once the first key with an escape is found. */
  prefix: string | undefined;
  /** How many keys became placeholders. */
  placeholders = 0;
  #pieces: string[] = [];
  /** The text before each key of the batch, and the key's raw text. */
  #texts: string[] = [];
  #keys: string[] = [];
  /** The last key rewritten and how: objects of one shape repeat their keys. */
  #lastName = "";
  #lastRewritten = "";

  /** Adds `before` and then the rewriting of the key whose raw text is `key`. */
  add(before: string, key: string): void {
    this.#texts.push(before);
    this.#keys.push(key);
    if (this.#keys.length >= KEYS_PER_BATCH) this.#flush();
  }

  /** The whole rewritten text, `rest` at its end. */
  end(rest: string): string {
    this.#flush();
    this.#pieces.push(rest);
    return this.#pieces.join("");
  }

  /**
   * @throws {SyntaxError} When a key is not a valid JSON string. Strings in an array get no hint,
   * so JSON.parse decodes them right.
   */
  #flush(): void {
    const names = JSON.parse(`[${this.#keys.join(",")}]`) as string[];
    const parts: string[] = [];
    for (let i = 0; i < names.length; i++) {
      const name = names[i]!;
      if (name !== this.#lastName) { // never empty: a key with an escape holds a character
        this.#lastName = name;
        this.#lastRewritten = rewriteKey(name, this.prefix!);
      }
      if (this.#lastRewritten.startsWith(this.prefix!, 1)) this.placeholders++;
      parts.push(this.#texts[i]!, this.#lastRewritten);
    }
    this.#pieces.push(parts.join(""));
    this.#texts = [];
    this.#keys = [];
  }
}

/**
 * A prefix for placeholders that occurs nowhere in `text`, so that no key written without escapes
 * starts with it. Random, so that a peer cannot make the search long by sending likely candidates;
 * a letter first, so that no placeholder is an array index.
 */
function absentPrefix(text: string): string {
  for (;;) {
    const random = crypto.getRandomValues(new Uint32Array(2));
    const prefix = `k${random[0]!.toString(36)}${random[1]!.toString(36)}_`;
    if (text.indexOf(prefix) === -1) return prefix;
  }
}

/**
 * The JSON text, without escapes, that stands for the key `name`: the key itself when it needs no
 * escape (and does not start with `prefix`, which only placeholders do), else a placeholder:
 * `prefix` then `name` with `~` as `~~`, `\` as `~b`, `"` as `~q` and a control character as `~`
 * and two hex digits. One key, one spelling; two keys, two spellings.
 */
function rewriteKey(name: string, prefix: string): string {
  let plain = !name.startsWith(prefix);
  for (let i = 0; plain && i < name.length; i++) {
    const c = name.charCodeAt(i);
    plain = c >= 0x20 && c !== QUOTE && c !== BACKSLASH;
  }
  if (plain) return `"${name}"`;
  let result = `"${prefix}`;
  let from = 0;
  for (let i = 0; i < name.length; i++) {
    const c = name.charCodeAt(i);
    if (c < 0x20 || c === QUOTE || c === BACKSLASH || c === TILDE) {
      result += name.slice(from, i) +
        (c === TILDE
          ? "~~"
          : c === BACKSLASH
          ? "~b"
          : c === QUOTE
          ? "~q"
          : `~${c.toString(16).padStart(2, "0")}`);
      from = i + 1;
    }
  }
  return `${result}${name.slice(from)}"`;
}

/**
 * Placeholders a KeyRestorer remembers the keys of: objects of one shape repeat their keys, and a
 * bounded map cannot grow with a hostile frame.
 */
const NAME_CACHE_SIZE = 1024;

/**
 * Renames placeholder keys back to the keys they stand for. The objects that hold one are rebuilt,
 * the others are left as they are. Iterative, so any depth is safe; stops once all the
 * placeholders are renamed.
 */
class KeyRestorer {
  #prefix: string;
  #remaining: number;
  /** Containers whose children are still to be visited. */
  #stack: object[] = [];
  /** Placeholder to key, for the last few keys. */
  #names = new Map<string, string>();

  constructor(prefix: string, count: number) {
    this.#prefix = prefix;
    this.#remaining = count;
  }

  /** `root` with its placeholders renamed. */
  restore(root: unknown): unknown {
    const holder = [root];
    this.#stack.push(holder);
    while (this.#stack.length > 0 && this.#remaining > 0) {
      const container = this.#stack.pop() as Record<string | number, unknown>;
      if (Array.isArray(container)) {
        for (let i = 0; i < container.length; i++) {
          const child = container[i];
          if (child !== null && typeof child === "object") {
            const visited = this.#visit(child);
            if (visited !== child) container[i] = visited;
          }
        }
      } else {
        for (const key of Object.keys(container)) {
          const child = container[key];
          if (child !== null && typeof child === "object") {
            const visited = this.#visit(child);
            // An own data property: no setter runs, even for a key named __proto__.
            if (visited !== child) container[key] = visited;
          }
        }
      }
    }
    return holder[0];
  }

  /** `object`, or its rebuilt copy when it holds a placeholder; queued when it holds objects. */
  #visit(object: object): object {
    if (Array.isArray(object)) {
      this.#stack.push(object);
      return object;
    }
    // Object.keys, not for-in: much faster on a large object in dictionary mode, and a copy needs
    // the list anyway.
    const keys = Object.keys(object);
    let parent = false;
    for (let i = 0; i < keys.length; i++) {
      const key = keys[i]!;
      if (key.startsWith(this.#prefix)) {
        return this.#rebuilt(object as Record<string, unknown>, keys);
      }
      const child = (object as Record<string, unknown>)[key];
      if (child !== null && typeof child === "object") parent = true;
    }
    if (parent) this.#stack.push(object);
    return object;
  }

  /**
   * A copy of `object` (whose keys are `keys`), placeholders renamed, keys in the same order. No
   * two of its keys are one: JSON.parse has already merged repeats of a key, each spelled one way.
   * Queued when it holds objects.
   */
  #rebuilt(object: Record<string, unknown>, keys: readonly string[]): Record<string, unknown> {
    const copy: Record<string, unknown> = {};
    let parent = false;
    for (let i = 0; i < keys.length; i++) {
      const key = keys[i]!;
      let name = key;
      if (key.startsWith(this.#prefix)) {
        name = this.#name(key);
        this.#remaining--;
      }
      const value = object[key];
      if (value !== null && typeof value === "object") parent = true;
      if (name in Object.prototype) {
        // __proto__ (whose setter would set the prototype) or another inherited member: define,
        // as JSON.parse does.
        Object.defineProperty(copy, name, {
          value,
          enumerable: true,
          writable: true,
          configurable: true,
        });
      } else {
        copy[name] = value;
      }
    }
    if (parent) this.#stack.push(copy);
    return copy;
  }

  /** The key a placeholder stands for: rewriteKey's encoding, undone. */
  #name(placeholder: string): string {
    let name = this.#names.get(placeholder);
    if (name === undefined) {
      name = "";
      let from = this.#prefix.length;
      for (let i = from; i < placeholder.length; i++) {
        if (placeholder.charCodeAt(i) !== TILDE) continue;
        const c = placeholder[i + 1];
        name += placeholder.slice(from, i);
        if (c === "~") name += "~";
        else if (c === "b") name += "\\";
        else if (c === "q") name += '"';
        else {
          name += String.fromCharCode(parseInt(placeholder.slice(i + 1, i + 3), 16));
          i++;
        }
        from = ++i + 1;
      }
      name += placeholder.slice(from);
      if (this.#names.size >= NAME_CACHE_SIZE) this.#names.clear();
      this.#names.set(placeholder, name);
    }
    return name;
  }
}
