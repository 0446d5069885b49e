import assert from "node:assert/strict";
import { serve } from "../server.ts";
import { connect, RpcError } from "../client.ts";
import * as calc from "../examples/calc.ts";
import { certs, has, root, serverOptions } from "./_util.ts";
import { runDeno } from "./_cli.ts";

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
  const { code, stdout: out, stderr } = await runDeno(["task", "--quiet", "demo"], {
    env: { TLSRPC_HOME: home },
  });
  const files = (await Array.fromAsync(Deno.readDir(`${home}/dev-certs`))).map((e) => e.name)
    .sort();
  await Deno.remove(home, { recursive: true });
  assert.deepEqual(files, ["ca.key", "ca.pem", "cert.pem", "key.pem"]);
  assert.match(stderr, /for development only/);
  assert.equal(code, 0, stderr);
  assert.match(out, /cli: call add 2 3 -> 5 \(exit 0\)/);
  assert.match(out, /library: add\(2, 3\) -> 5/);
  assert.match(out, /answers in order: add\(40, 2\) -> 42, sleep\(200\) -> 200/);
  assert.match(out, /server: stopped \(exit 0\)/);
});

Deno.test("examples/service.ts, a class with a namespace, serves its methods and coded errors", async () => {
  const { default: Inventory, InventoryErrors } = await import("../examples/service.ts");
  await using server = await serve(new Inventory(), serverOptions());
  assert.deepEqual([...server.methods.keys()].sort(), [
    "add",
    "admin.log",
    "admin.reset",
    "list",
    "take",
  ]);
  await using client = await connect({ port: server.addr.port, caCerts: [certs.ca] });
  assert.equal(await client.call("add", "apples", 3), 3);
  assert.equal(await client.call("take", "apples", 1), 2);
  assert.deepEqual(await client.call("list"), { apples: 2 });
  await assert.rejects(
    client.call("take", "pears"),
    (error) => error instanceof RpcError && error.code === InventoryErrors.NotFound,
  );
  await assert.rejects(
    client.call("take", "apples", 5),
    (error) =>
      error instanceof RpcError && error.code === InventoryErrors.Insufficient &&
      (error.data as { have: number }).have === 2,
  );
  assert.deepEqual(await client.call("admin.log"), [
    "add apples 3 (from 127.0.0.1)",
    "take apples 1 (from 127.0.0.1)",
  ]);
  await assert.rejects(client.call("_record", "x"), (error) => (error as RpcError).code === -32601);
  assert.equal(await client.call("admin.reset"), 1);
});

Deno.test("examples/typed_client.ts calls a running calculator with types from import type", async () => {
  await using server = await serve(calc, serverOptions());
  const out = await runDeno(
    ["run", "--allow-net", "--allow-read", "--allow-env", "examples/typed_client.ts"],
    {
      env: {
        TLSRPC_PORT: String(server.addr.port),
        TLSRPC_CA: new URL("testdata/ca.pem", root).pathname,
      },
    },
  );
  assert.equal(out.code, 0, out.stderr);
  assert.equal(
    out.stdout,
    [
      "add(2, 3) = 5; stats.range(4, -1, 9) = -1..9",
      "sleep(5000) with a 100 ms deadline: TimeoutError",
      "divide(1, 0): error 1001: Cannot divide: the divisor is 0",
      "",
    ].join("\n"),
  );
});

Deno.test("examples/upload.ts sends 8 MiB raw and gets the same digest back", async () => {
  const out = await runDeno(["run", "--allow-net", "--allow-read", "examples/upload.ts"]);
  assert.equal(out.code, 0, out.stderr);
  assert.match(out.stdout, /uploaded 8388608 bytes/);
  assert.match(out.stdout, /digest matches: true/);
  assert.match(out.stdout, /downloaded 8388608 bytes, equal: true/);
});

Deno.test("client.ts and mod.ts import from a URL and call with --allow-net alone", async () => {
  // A file server for the repository, on loopback: the import map and bare specifiers of the
  // project never come into play, only the relative imports between its files.
  const types: Record<string, string> = {
    ".ts": "application/typescript",
    ".js": "text/javascript",
  };
  await using files = Deno.serve(
    { hostname: "127.0.0.1", port: 0, onListen: () => {} },
    async (request) => {
      const path = decodeURIComponent(new URL(request.url).pathname);
      if (path.includes("..") || !/^\/[\w./-]+\.ts$/.test(path)) {
        return new Response("no", {
          status: 404,
        });
      }
      try {
        const body = await Deno.readFile(new URL(`.${path}`, root));
        return new Response(body, { headers: { "content-type": types[".ts"]! } });
      } catch {
        return new Response("not found", { status: 404 });
      }
    },
  );
  await using server = await serve(calc, serverOptions());
  const base = `http://127.0.0.1:${files.addr.port}`;
  const dir = await Deno.makeTempDir();
  try {
    const script = `${dir}/remote_call.ts`;
    await Deno.writeTextFile(
      script,
      `import { connect } from "${base}/client.ts";
import * as tlsrpc from "${base}/mod.ts";
const [port, ca] = Deno.args;
await using client = await connect({ port: Number(port), caCerts: [ca!] });
console.log(await client.call("add", 40, 2), typeof tlsrpc.serve, typeof tlsrpc.AttrWrapper.wrap);
`,
    );
    const out = await runDeno(
      [
        "run",
        "--no-config",
        "--no-lock",
        `--allow-import=127.0.0.1:${files.addr.port}`,
        "--allow-net=127.0.0.1,localhost",
        script,
        String(server.addr.port),
        certs.ca,
      ],
      { env: { DENO_DIR: `${dir}/deno_dir` } },
    );
    assert.equal(out.code, 0, out.stderr);
    assert.equal(out.stdout, "42 function function\n");
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("examples/rate_limit.ts refuses an identity's calls over its rate, and only that identity's", async () => {
  const { rateLimit, RATE_LIMITED } = await import("../examples/rate_limit.ts");
  const TOKEN_A = "token-a";
  await using server = await serve({ add: (a: number, b: number) => a + b }, {
    ...serverOptions(),
    authenticate: (token: string) => token.startsWith("token-") ? token : undefined,
    interceptors: [rateLimit(3)],
  });
  const base = { port: server.addr.port, caCerts: [certs.ca] };
  await using a = await connect({ ...base, token: TOKEN_A });
  const burst = await Promise.allSettled(Array.from({ length: 5 }, () => a.call("add", 1, 1)));
  const refused = burst.filter((outcome) =>
    outcome.status === "rejected" && outcome.reason instanceof RpcError &&
    outcome.reason.code === RATE_LIMITED
  );
  assert.equal(refused.length, 2, JSON.stringify(burst));
  // Another identity has its own bucket.
  await using b = await connect({ ...base, token: "token-b" });
  assert.equal(await b.call("add", 2, 2), 4);
});
