// The layout rules of the README's Architecture section, checked on the source files: no import
// cycle (types included), private modules import no public module but errors.ts, and no source
// file holds more than one idea's worth of lines.

import assert from "node:assert/strict";
import { root } from "./_util.ts";

/** Past this many lines a file holds more than one idea (STYLE.md: about 600). */
const MAX_LINES = 620;

/** The top-level .ts files of the library and CLI, with the modules each imports. */
async function sources(): Promise<Map<string, string[]>> {
  const files = new Map<string, string[]>();
  for await (const entry of Deno.readDir(root)) {
    if (!entry.isFile || !entry.name.endsWith(".ts")) continue;
    // Comments hold examples that import the module itself: leave them out.
    const text = (await Deno.readTextFile(new URL(entry.name, root)))
      .replace(/\/\*[\s\S]*?\*\//g, "")
      .replace(/^\s*\/\/.*$/gm, "");
    const imports = [
      ...text.matchAll(/^\s*(?:import|export)\b[^"';]*?from\s+["']\.\/([\w.]+\.ts)["']/gm),
    ].map((match) => match[1]!);
    files.set(entry.name, imports);
  }
  return files;
}

Deno.test("no module imports itself through a cycle, types included", async () => {
  const files = await sources();
  const state = new Map<string, "visiting" | "done">();
  const cycles: string[] = [];
  function visit(name: string, path: string[]): void {
    if (state.get(name) === "done") return;
    if (state.get(name) === "visiting") {
      cycles.push([...path.slice(path.indexOf(name)), name].join(" -> "));
      return;
    }
    state.set(name, "visiting");
    for (const next of files.get(name) ?? []) visit(next, [...path, name]);
    state.set(name, "done");
  }
  for (const name of files.keys()) visit(name, []);
  assert.deepEqual(cycles, []);
});

Deno.test("private modules import no public module but errors.ts", async () => {
  const files = await sources();
  const wrong: string[] = [];
  for (const [name, imports] of files) {
    if (!name.startsWith("_")) continue;
    for (const imported of imports) {
      if (!imported.startsWith("_") && imported !== "errors.ts") {
        wrong.push(`${name} -> ${imported}`);
      }
    }
  }
  assert.deepEqual(wrong, []);
});

Deno.test(`no source file is longer than ${MAX_LINES} lines`, async () => {
  const files = await sources();
  const long: string[] = [];
  for (const name of files.keys()) {
    const lines = (await Deno.readTextFile(new URL(name, root))).split("\n").length;
    if (lines > MAX_LINES) long.push(`${name}: ${lines}`);
  }
  assert.deepEqual(long, []);
});

Deno.test("_version.ts names the version deno.json publishes", async () => {
  const { VERSION } = await import("../_version.ts");
  const config = JSON.parse(await Deno.readTextFile(new URL("deno.json", root)));
  assert.equal(VERSION, config.version);
});
