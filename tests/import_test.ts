// The README's import lines, run as written: the JSR names through an import map that points them
// at this checkout (offline), as `deno add jsr:@tlsrpc/tlsrpc` would resolve them.

import assert from "node:assert/strict";
import { root } from "./_util.ts";
import { runDeno } from "./_cli.ts";

/** The code lines of the README's "Importing it" block. */
async function readmeImports(): Promise<string[]> {
  const readme = await Deno.readTextFile(new URL("README.md", root));
  const section = readme.slice(readme.indexOf("### Importing it"));
  const block = /```ts ignore\n([\s\S]*?)```/.exec(section)?.[1];
  assert.ok(block, "README has an import block under Importing it");
  return block.split("\n").filter((line) => line.startsWith("import "));
}

Deno.test("the README's JSR import lines resolve and give the library's functions", async () => {
  const lines = await readmeImports();
  assert.ok(lines.some((line) => line.includes('"jsr:@tlsrpc/tlsrpc"')));
  assert.ok(lines.some((line) => line.includes('"jsr:@tlsrpc/tlsrpc/client"')));
  const dir = await Deno.makeTempDir();
  try {
    const exports = JSON.parse(await Deno.readTextFile(new URL("deno.json", root)))
      .exports as Record<
        string,
        string
      >;
    const imports: Record<string, string> = {};
    for (const [key, path] of Object.entries(exports)) {
      const name = key === "." ? "@tlsrpc/tlsrpc" : `@tlsrpc/tlsrpc${key.slice(1)}`;
      imports[`jsr:${name}`] = new URL(path, root).href;
      imports[name] = new URL(path, root).href;
    }
    await Deno.writeTextFile(`${dir}/deno.json`, JSON.stringify({ imports }));
    await Deno.writeTextFile(
      `${dir}/main.ts`,
      [
        ...lines,
        'import { serve as serveIt } from "@tlsrpc/tlsrpc";',
        "const read = (name: string) => Deno.readTextFile(new URL(name, " +
        JSON.stringify(new URL("testdata/", root).href) + "));",
        "await using server = await serveIt({ add: (a: number, b: number) => a + b }, {",
        '  port: 0, cert: await read("server.pem"), key: await read("server.key"), onListen() {},',
        "});",
        'await using client = await connectOnly({ port: server.addr.port, caCerts: [await read("ca.pem")] });',
        'console.log(typeof connect, typeof serve, await client.call("add", 2, 3));',
      ].join("\n"),
    );
    const { code, stdout, stderr } = await runDeno([
      "run",
      "--no-remote",
      "--allow-net",
      "--allow-read",
      `--config=${dir}/deno.json`,
      `${dir}/main.ts`,
    ]);
    assert.equal(code, 0, stderr);
    assert.equal(stdout, "function function 5\n");
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
