// The README's quick-start commands, run as written (`deno` being this Deno), with the development
// certificates made in a fresh state folder: serve, then call, list and describe against it.

import assert from "node:assert/strict";
import { root, tempDir } from "./_util.ts";
import { cliArgs, runCli, startServe } from "./_cli.ts";

/** The `deno run -A cli.ts ...` lines of the README's quick-start shell block, comments dropped. */
async function quickStartCommands(): Promise<string[][]> {
  const readme = await Deno.readTextFile(new URL("README.md", root));
  const start = readme.indexOf("Or without writing any code");
  const block = /```sh\n([\s\S]*?)```/.exec(readme.slice(start))?.[1];
  assert.ok(block, "the README has a quick-start shell block");
  return block.split("\n")
    .map((line) => line.replace(/#.*$/, "").trim())
    .filter((line) => line.startsWith("deno run -A cli.ts "))
    .map((line) => line.split(/\s+/).slice(1));
}

Deno.test("the README's quick-start commands run as written", async () => {
  const commands = await quickStartCommands();
  assert.deepEqual(commands.map((args) => args[3]), ["serve", "call", "list", "describe"]);
  // Every command is `run -A cli.ts COMMAND ...`, as runCli and startServe run the CLI.
  for (const args of commands) assert.deepEqual(args.slice(0, 3), cliArgs([]));
  await using home = await tempDir();
  const env = { TLSRPC_HOME: home.path };
  await using serve = await startServe(commands[0]!.slice(4), { env, timeout: 30_000 });
  assert.equal(serve.port, 7443, "serve listens on 127.0.0.1:7443");
  const outputs: string[] = [];
  for (const args of commands.slice(1)) {
    const { code, stdout, stderr } = await runCli(args.slice(3), { env });
    assert.equal(code, 0, `${args.join(" ")}: ${stderr}`);
    outputs.push(stdout);
  }
  assert.equal(outputs[0], "5\n"); // call add 2 3, as the README's comment says
  assert.match(outputs[1]!, /^add\(a, b\)/m); // list
  assert.match(outputs[2]!, /range/); // describe stats.range
});
