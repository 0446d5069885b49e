// The README's quick-start commands, run as written (`deno` being this Deno), with the development
// certificates made in a fresh state folder: serve, then call, list and describe against it.

import assert from "node:assert/strict";
import { root, within } from "./_util.ts";

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
  const home = await Deno.makeTempDir();
  const env = { TLSRPC_HOME: home };
  const serve = new Deno.Command(Deno.execPath(), {
    args: commands[0]!,
    cwd: root.pathname,
    env,
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const stderr = new Response(serve.stderr).text();
  const lines = serve.stdout.pipeThrough(new TextDecoderStream()).getReader();
  try {
    let first = "";
    while (!first.includes("\n")) {
      const { value, done } = await within(lines.read(), "serve's listening line", 30_000);
      if (done) break;
      first += value;
    }
    assert.match(first, /^listening on 127\.0\.0\.1:7443\n/, await Promise.race([stderr, ""]));
    const outputs: string[] = [];
    for (const args of commands.slice(1)) {
      const { code, stdout, stderr } = await new Deno.Command(Deno.execPath(), {
        args,
        cwd: root.pathname,
        env,
        stdin: "null",
      }).output();
      const decoder = new TextDecoder();
      assert.equal(code, 0, `${args.join(" ")}: ${decoder.decode(stderr)}`);
      outputs.push(decoder.decode(stdout));
    }
    assert.equal(outputs[0], "5\n"); // call add 2 3, as the README's comment says
    assert.match(outputs[1]!, /^add\(a, b\)/m); // list
    assert.match(outputs[2]!, /range/); // describe stats.range
  } finally {
    serve.kill("SIGTERM");
    await serve.status;
    await lines.cancel();
    await stderr;
    await Deno.remove(home, { recursive: true });
  }
});
