import assert from "node:assert/strict";
import { serve } from "../server.ts";
import * as calc from "../examples/calc.ts";
import { serverOptions } from "./_util.ts";

const root = new URL("../", import.meta.url);
const path = (relative: string) => new URL(relative, root).pathname;
const cli = path("cli.ts");
const ca = path("testdata/ca.pem");
const cert = path("testdata/server.pem");
const key = path("testdata/server.key");
const decoder = new TextDecoder();

interface Output {
  code: number;
  stdout: string;
  stderr: string;
}

async function run(args: string[], options: { cwd?: string } = {}): Promise<Output> {
  const output = await new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", cli, ...args],
    ...options,
    stdin: "null",
  }).output();
  return {
    code: output.code,
    stdout: decoder.decode(output.stdout),
    stderr: decoder.decode(output.stderr),
  };
}

/** Starts `cli.ts serve` and reads its stdout up to the "listening on" line. */
async function startServe(args: string[]) {
  const child = new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", cli, "serve", ...args],
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const stderr = new Response(child.stderr).text();
  const reader = child.stdout.pipeThrough(new TextDecoderStream()).getReader();
  let stdout = "";
  while (!stdout.includes("\n")) {
    const { value, done } = await reader.read();
    if (done) break;
    stdout += value;
  }
  const port = Number(/^listening on 127\.0\.0\.1:(\d+)\n/.exec(stdout)?.[1]);
  return {
    child,
    port,
    firstLine: stdout,
    async stop(signal: Deno.Signal = "SIGTERM"): Promise<Output> {
      child.kill(signal);
      for (let chunk = await reader.read(); !chunk.done; chunk = await reader.read()) {
        stdout += chunk.value;
      }
      const status = await child.status;
      return { code: status.code, stdout, stderr: await stderr };
    },
  };
}

for (const signal of ["SIGTERM", "SIGINT"] as const) {
  Deno.test(`cli serve prints one "listening on" line, serves, and exits 0 on ${signal}`, async () => {
    const server = await startServe([
      path("examples/calc.ts"),
      "--port",
      "0",
      "--cert",
      cert,
      "--key",
      key,
    ]);
    assert.ok(server.port > 0, `no port in ${JSON.stringify(server.firstLine)}`);
    const call = await run(["call", "--port", String(server.port), "--ca", ca, "add", "2", "3"]);
    assert.equal(call.stdout, "5\n");
    const done = await server.stop(signal);
    assert.equal(done.code, 0, done.stderr);
    assert.equal(done.stdout, `listening on 127.0.0.1:${server.port}\n`);
  });
}

Deno.test("cli serve uses a module's default export, and instantiates a default-export class", async (t) => {
  const dir = await Deno.makeTempDir();
  try {
    const cases = [
      {
        name: "object",
        source: "export default { hi: () => 'object' }; export const other = () => 0;",
      },
      {
        name: "class",
        source: "export default class { hi() { return 'class'; } _secret() { return 1; } }",
      },
    ];
    for (const c of cases) {
      await t.step(`default export ${c.name}`, async () => {
        const file = `${dir}/${c.name}.ts`;
        await Deno.writeTextFile(file, c.source);
        const server = await startServe([file, "--port", "0", "--cert", cert, "--key", key]);
        try {
          const list = await run(["list", "--port", String(server.port), "--ca", ca]);
          assert.equal(list.stdout, "hi()\n");
          const call = await run(["call", "--port", String(server.port), "--ca", ca, "hi"]);
          assert.equal(call.stdout, `"${c.name}"\n`);
        } finally {
          assert.equal((await server.stop()).code, 0);
        }
      });
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("cli call and list against a running server", async (t) => {
  await using server = await serve(calc, serverOptions());
  const port = String(server.addr.port);
  const cases: { args: string[]; code: number; stdout?: string; stderr?: RegExp }[] = [
    { args: ["call", "--port", port, "--ca", ca, "add", "2", "3"], code: 0, stdout: "5\n" },
    { args: ["call", "--port", port, "--ca", ca, "add", "-1", "-2.5"], code: 0, stdout: "-3.5\n" },
    {
      args: ["call", "--port", port, "--ca", ca, "stats.range", "3", "9", "-4"],
      code: 0,
      stdout: '{"min":-4,"max":9}\n',
    },
    {
      args: ["call", "--port", port, "--ca", ca, "stats.mean", "--params", '{"values":[1,2,6]}'],
      code: 0,
      stdout: "3\n",
    },
    {
      // "ada" is not JSON, so it is sent as a string; '"3"' is the JSON string "3"
      args: ["call", "--port", port, "--ca", ca, "add", "ada", '"3"'],
      code: 0,
      stdout: '"ada3"\n',
    },
    {
      args: ["call", "--port", port, "--ca", ca, "divide", "1", "0"],
      code: 1,
      stderr: /^error: 1001 Cannot divide: the divisor is 0\n$/,
    },
    {
      args: ["call", "--port", port, "--ca", ca, "nope"],
      code: 1,
      stderr: /^error: -32601 Method not found: "nope"\n$/,
    },
    {
      args: ["call", "--port", port, "--ca", ca, "--timeout", "200", "sleep", "1000"],
      code: 3,
      stderr: /^error: Cannot call "sleep": no response within 200 ms\n$/,
    },
    {
      args: ["call", "--port", port, "add", "1", "2"],
      code: 3,
      stderr: /^error: Cannot connect to "localhost:\d+": invalid peer certificate/,
    },
    {
      args: ["call", "--port", port, "--ca", "missing.pem", "add"],
      code: 2,
      stderr: /^error: Cannot read --ca "missing.pem": file not found\n$/,
    },
    {
      args: ["call", "--port", port, "--ca", ca],
      code: 2,
      stderr: /^error: Cannot run "call": a METHOD is required \(see --help\)\n$/,
    },
    {
      args: ["call", "--port", port, "--bogus", "add"],
      code: 2,
      stderr: /^error: Cannot parse arguments: Unknown option '--bogus'\n$/,
    },
    {
      args: ["call", "--port", "http", "add"],
      code: 2,
      stderr: /^error: Cannot use --port "http": it must be a whole number from 0 to 65535\n$/,
    },
    {
      args: ["call", "--port", port, "--ca", ca, "--params", "{}", "add", "1"],
      code: 2,
      stderr: /^error: Cannot run "call": give either ARGs or --params, not both/,
    },
    {
      args: ["call", "--port", port, "--ca", ca, "--params", "[1]", "stats.mean"],
      code: 2,
      stderr: /^error: Cannot use --params: it must be a JSON object\n$/,
    },
    {
      args: ["list", "--port", port, "--ca", ca],
      code: 0,
      stdout: [
        "add(a, b)",
        "divide(a, b)",
        "sleep(ms)",
        "stats.mean(values)",
        "stats.range(values)",
        "subtract(a, b)",
        "",
      ].join("\n"),
    },
    {
      args: ["list", "--port", port, "--ca", ca, "extra"],
      code: 2,
      stderr: /unexpected argument "extra"/,
    },
    {
      args: ["frobnicate"],
      code: 2,
      stderr: /^error: Cannot run "frobnicate": unknown command\n$/,
    },
  ];
  for (const c of cases) {
    await t.step(
      `${c.args.filter((a) => a !== port && a !== ca).join(" ")} exits ${c.code}`,
      async () => {
        const out = await run(c.args);
        assert.equal(out.code, c.code, out.stderr);
        if (c.stdout !== undefined) assert.equal(out.stdout, c.stdout);
        if (c.stderr !== undefined) assert.match(out.stderr, c.stderr);
      },
    );
  }
});

Deno.test("cli call exits 3 with a one-line reason when nothing listens", async () => {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = listener.addr.port;
  listener.close();
  const out = await run([
    "call",
    "--hostname",
    "127.0.0.1",
    "--port",
    String(port),
    "--ca",
    ca,
    "add",
  ]);
  assert.equal(out.code, 3);
  assert.match(
    out.stderr,
    new RegExp(`^error: Cannot connect to "127\\.0\\.0\\.1:${port}": .+\\n$`),
  );
});

Deno.test("cli serve refuses bad input with exit 2 and a one-line reason", async (t) => {
  const cases: { args: string[]; stderr: RegExp }[] = [
    {
      args: ["serve", "nothere.ts", "--cert", cert, "--key", key],
      stderr: /^error: Cannot load module "nothere.ts": file not found\n$/,
    },
    { args: ["serve", "--cert", cert, "--key", key], stderr: /a MODULE is required/ },
    {
      args: ["serve", path("examples/calc.ts"), "--key", key],
      stderr: /give both --cert and --key, or neither/,
    },
    {
      args: ["serve", path("examples/calc.ts"), "--cert", cert],
      stderr: /give both --cert and --key, or neither/,
    },
    {
      args: ["serve", path("examples/calc.ts"), "--cert", "nope.pem", "--key", key],
      stderr: /^error: Cannot read --cert "nope.pem": file not found\n$/,
    },
    {
      args: ["serve", path("examples/calc.ts"), "--cert", cert, "--key", key, "--port", "70000"],
      stderr: /^error: Cannot use --port "70000": it must be a whole number from 0 to 65535\n$/,
    },
    {
      args: [
        "serve",
        path("examples/calc.ts"),
        "--cert",
        cert,
        "--key",
        key,
        "--handshake-timeout",
        "soon",
      ],
      stderr: /^error: Cannot use --handshake-timeout "soon"/,
    },
    {
      args: [
        "serve",
        path("examples/calc.ts"),
        "--cert",
        cert,
        "--key",
        key,
        "--max-frame-bytes",
        "0",
      ],
      stderr: /--max-frame-bytes must be at least 1/,
    },
    {
      args: ["serve", path("examples/calc.ts"), "--verbose"],
      stderr: /^error: Cannot parse arguments: Unknown option '--verbose'\n$/,
    },
  ];
  for (const c of cases) {
    await t.step(c.args.slice(1).map((a) => a.replace(/^\/.*\//, "")).join(" "), async () => {
      const out = await run(c.args);
      assert.equal(out.code, 2, out.stderr);
      assert.match(out.stderr, c.stderr);
      assert.equal(out.stdout, "");
    });
  }
});

Deno.test("cli serve exits 1 naming the cause when the port is taken", async () => {
  await using server = await serve(calc, serverOptions());
  const out = await run([
    "serve",
    path("examples/calc.ts"),
    "--port",
    String(server.addr.port),
    "--cert",
    cert,
    "--key",
    key,
  ]);
  assert.equal(out.code, 1);
  assert.match(out.stderr, /^error: Cannot serve ".*calc\.ts": .*[Aa]ddress.* in use/);
});

Deno.test("cli --help on each command prints its usage and exits 0", async (t) => {
  for (const command of [[], ["serve"], ["call"], ["list"]]) {
    await t.step(`${[...command, "--help"].join(" ")}`, async () => {
      const out = await run([...command, "--help"]);
      assert.equal(out.code, 0);
      assert.match(
        out.stdout,
        command.length === 0 ? /Commands:/ : new RegExp(`Usage: .* ${command[0]}`),
      );
    });
  }
  const none = await run([]);
  assert.equal(none.code, 2);
  assert.match(none.stderr, /Commands:/);
});

Deno.test("cli call --get prints the value at a dotted path, and exits 1 naming a missing step", async (t) => {
  await using server = await serve(
    { nested: () => [1, 2, { dd: { ee: "x", n: null } }] },
    serverOptions(),
  );
  const base = ["call", "--port", String(server.addr.port), "--ca", ca, "nested"];
  const cases: { get: string; code: number; stdout?: string; stderr?: RegExp }[] = [
    { get: "2.dd.ee", code: 0, stdout: '"x"\n' },
    { get: "-1.dd", code: 0, stdout: '{"ee":"x","n":null}\n' },
    { get: "0", code: 0, stdout: "1\n" },
    { get: "2.dd.n", code: 0, stdout: "null\n" },
    { get: "3", code: 1, stderr: /^error: Cannot get "3": the result has no "3"\n$/ },
    { get: "2.zz.ee", code: 1, stderr: /^error: Cannot get "2.zz.ee": "2" has no "zz"\n$/ },
    {
      get: "length",
      code: 1,
      stderr: /^error: Cannot get "length": the result has no "length"\n$/,
    },
    { get: "2.dd.n.x", code: 1, stderr: /^error: Cannot get "2.dd.n.x": "2.dd.n" has no "x"\n$/ },
  ];
  for (const c of cases) {
    await t.step(`--get ${c.get} exits ${c.code}`, async () => {
      const out = await run([...base, "--get", c.get]);
      assert.equal(out.code, c.code, out.stderr);
      if (c.stdout !== undefined) assert.equal(out.stdout, c.stdout);
      if (c.stderr !== undefined) assert.match(out.stderr, c.stderr);
    });
  }
});

Deno.test("cli cert makes a CA, a server and a client certificate, keys 0600, and reuses them", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const args = ["cert", "--dir", dir, "--host", "api.example.test", "--client", "worker-1"];
    const first = await run(args);
    assert.equal(first.code, 0, first.stderr);
    const names = ["ca.pem", "ca.key", "cert.pem", "key.pem", "client.pem", "client.key"];
    assert.deepEqual(
      first.stdout.trim().split("\n").map((line) => line.split(/\s+/)),
      names.map((name) => ["created", `${dir}/${name}`]),
    );
    assert.match(first.stderr, /For development only/);
    for (const key of ["ca.key", "key.pem", "client.key"]) {
      assert.equal((await Deno.stat(`${dir}/${key}`)).mode! & 0o777, 0o600, key);
    }
    const caKey = await Deno.readTextFile(`${dir}/ca.key`);
    const again = await run(args);
    assert.equal(again.code, 0, again.stderr);
    assert.deepEqual(
      again.stdout.trim().split("\n").map((line) => line.split(/\s+/)[0]),
      names.map(() => "reused"),
    );
    assert.equal(
      await Deno.readTextFile(`${dir}/ca.key`),
      caKey,
      "an existing key is never rewritten",
    );
    const bad = await run(["cert", "--dir", dir, "--bogus"]);
    assert.equal(bad.code, 2);
    assert.match(bad.stderr, /^error: Cannot parse arguments: Unknown option '--bogus'\n$/);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("cli serve warns on stderr when its certificate expires within 7 days", async () => {
  const { generateDevCertificates } = await import("../dev_cert.ts");
  // A certificate issued 822 days ago: the leaf lasts 825 days, so 3 are left.
  const issued = new Date(Date.now() - 822 * 86_400_000);
  const made = await generateDevCertificates({ now: issued });
  const dir = await Deno.makeTempDir();
  try {
    await Deno.writeTextFile(`${dir}/cert.pem`, made.cert);
    await Deno.writeTextFile(`${dir}/key.pem`, made.key);
    const server = await startServe([
      path("examples/calc.ts"),
      "--port",
      "0",
      "--cert",
      `${dir}/cert.pem`,
      "--key",
      `${dir}/key.pem`,
    ]);
    const done = await server.stop();
    assert.equal(done.code, 0, done.stderr);
    assert.match(done.stderr, /warning: the server certificate expires on \d{4}-\d\d-\d\dT/);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
