import assert from "node:assert/strict";
import { serve } from "./server.ts";
import * as calc from "./examples/calc.ts";
import { certs, serverOptions } from "./_test_util.ts";

const root = new URL("./", import.meta.url);

function has(command: string): boolean {
  try {
    new Deno.Command(command, { args: ["--version"], stdout: "null", stderr: "null" }).outputSync();
    return true;
  } catch {
    return false;
  }
}

Deno.test({
  name: "examples/python_client.py, written from PROTOCOL.md, calls the server",
  ignore: !has("python3"),
  async fn(t) {
    await using server = await serve(calc, serverOptions());
    const ca = await Deno.makeTempFile({ suffix: ".pem" });
    await Deno.writeTextFile(ca, certs.ca);
    try {
      const python = async (...args: string[]) => {
        const { code, stdout, stderr } = await new Deno.Command("python3", {
          args: [
            new URL("examples/python_client.py", root).pathname,
            "--port",
            String(server.addr.port),
            "--ca",
            ca,
            ...args,
          ],
        }).output();
        const decoder = new TextDecoder();
        return {
          code,
          stdout: decoder.decode(stdout).trim(),
          stderr: decoder.decode(stderr).trim(),
        };
      };
      const cases: { args: string[]; code: number; stdout?: string; stderr?: RegExp }[] = [
        { args: ["add", "2", "3"], code: 0, stdout: "5" },
        { args: ["subtract", "-1", "2"], code: 0, stdout: "-3" },
        { args: ["stats.range", "4", "-1", "9"], code: 0, stdout: '{"min": -1, "max": 9}' },
        { args: ["stats.mean", "--params", '{"values": [1, 2, 6]}'], code: 0, stdout: "3" },
        { args: ["divide", "1", "0"], code: 1, stderr: /^error: 1001 Cannot divide/ },
        { args: ["nope"], code: 1, stderr: /^error: -32601 Method not found/ },
      ];
      for (const c of cases) {
        await t.step(`python_client.py ${c.args.join(" ")} exits ${c.code}`, async () => {
          const result = await python(...c.args);
          assert.equal(result.code, c.code, result.stderr);
          if (c.stdout !== undefined) assert.equal(result.stdout, c.stdout);
          if (c.stderr !== undefined) assert.match(result.stderr, c.stderr);
        });
      }
    } finally {
      await Deno.remove(ca);
    }
  },
});

Deno.test("deno task demo makes development certificates and runs the calculator end to end", async () => {
  const home = await Deno.makeTempDir();
  const { code, stdout, stderr } = await new Deno.Command(Deno.execPath(), {
    args: ["task", "--quiet", "demo"],
    cwd: root.pathname,
    env: { TLSRPC_HOME: home },
  }).output();
  const files = (await Array.fromAsync(Deno.readDir(`${home}/dev-certs`))).map((e) => e.name)
    .sort();
  await Deno.remove(home, { recursive: true });
  assert.deepEqual(files, ["ca.key", "ca.pem", "cert.pem", "key.pem"]);
  assert.match(new TextDecoder().decode(stderr), /for development only/);
  const out = new TextDecoder().decode(stdout);
  assert.equal(code, 0, new TextDecoder().decode(stderr));
  assert.match(out, /cli: call add 2 3 -> 5 \(exit 0\)/);
  assert.match(out, /library: add\(2, 3\) -> 5/);
  assert.match(out, /answers in order: add\(40, 2\) -> 42, sleep\(200\) -> 200/);
  assert.match(out, /server: stopped \(exit 0\)/);
});
