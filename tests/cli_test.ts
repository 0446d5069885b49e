import assert from "node:assert/strict";
import { DEFAULT_CLIENT_OPTIONS } from "../client.ts";
import { RpcError } from "../errors.ts";
import { FrameReader, FrameWriter } from "../framing.ts";
import { DEFAULT_LIMITS, DEFAULT_PORT, serve } from "../server.ts";
import * as calc from "../examples/calc.ts";
import { certFiles, certs, freePort, root, serverOptions } from "./_util.ts";
import {
  assertFailure,
  type Output,
  runCli as run,
  type RunCliOptions,
  startServe,
} from "./_cli.ts";

const path = (relative: string) => new URL(relative, root).pathname;
const { ca, cert, key } = certFiles;
const decoder = new TextDecoder();

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
    assert.ok(server.port > 0, "a port in the listening line");
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
      stderr: /^error: 1001 Cannot divide: the divisor is 0\ndata: \{"name":"RangeError"\}\n$/,
    },
    {
      args: ["call", "--port", port, "--ca", ca, "nope"],
      code: 1,
      stderr: /^error: -32601 Method not found: "nope" \(run "list" to see the methods\)\n$/,
    },
    {
      args: ["call", "--port", port, "--ca", ca, "--timeout", "200", "sleep", "1000"],
      code: 3,
      stderr: /^error: Cannot call "sleep": no response within 200 ms \(raise --timeout, 0 waits/,
    },
    {
      args: ["call", "--port", port, "add", "1", "2"],
      code: 3,
      stderr:
        // Whether a development CA sits in this machine's state folder changes the advice's start.
        /^error: Cannot connect to "localhost:\d+": UnknownIssuer: the server's certificate is not signed by a CA this client trusts \(.*pass the server's CA with --ca FILE/,
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
      stderr:
        /^error: Cannot parse arguments: Unknown option '--bogus' \(run "help call" to see its options\)\n$/,
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
      stderr: /^error: Cannot use --params: it must be a JSON object \(for by-position params/,
    },
    {
      args: ["list", "--port", port, "--ca", ca],
      code: 0,
      stdout: [
        "add(a, b)",
        "divide(a, b)",
        "sleep(ms)",
        "stats.mean(values)",
        "stats.range(...values)",
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
      stderr:
        /^error: Cannot run "frobnicate": unknown command \(run "help" to see the commands\)\n$/,
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
  const port = freePort();
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
      stderr:
        /^error: Cannot parse arguments: Unknown option '--verbose' \(run "help serve" to see its options\)\n$/,
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
    assert.match(
      bad.stderr,
      /^error: Cannot parse arguments: Unknown option '--bogus' \(run "help cert" to see its options\)\n$/,
    );
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

/** Each flag of a help text with the default it shows, `(default: X)`, which never wraps. */
function helpDefaults(help: string): Map<string, string> {
  const defaults = new Map<string, string>();
  let flag: string | undefined;
  for (const line of help.split("\n")) {
    const head = /^ {2}(?:-\w, )?--([\w-]+)/.exec(line);
    if (head) flag = head[1];
    else if (!/^ {4}/.test(line)) flag = undefined;
    const fallback = /\(default: ([^)]*)\)/.exec(line);
    if (flag !== undefined && fallback) defaults.set(flag, fallback[1]!);
  }
  return defaults;
}

Deno.test("cli serve --help shows every limit's default as DEFAULT_LIMITS has it", async (t) => {
  const out = await run(["serve", "--help"]);
  assert.equal(out.code, 0, out.stderr);
  const defaults = helpDefaults(out.stdout);
  for (const [limit, value] of Object.entries(DEFAULT_LIMITS)) {
    const flag = limit.replace(/[A-Z]/g, (c) => `-${c.toLowerCase()}`);
    await t.step(`--${flag} (default: ${value})`, () => {
      assert.equal(defaults.get(flag), String(value));
    });
  }
  await t.step("--port and --hostname", () => {
    assert.equal(defaults.get("port"), String(DEFAULT_PORT));
    assert.equal(defaults.get("hostname"), "127.0.0.1");
  });
});

Deno.test("cli call --help and list --help show the same connection flags and the client's defaults", async () => {
  const [call, list] = await Promise.all([run(["call", "--help"]), run(["list", "--help"])]);
  // --json is each command's own: the rest are the connection flags, which must not drift apart.
  const flags = (help: string) =>
    help.split("\n").filter((line) => /^ {2}(-\w, )?--/.test(line) && !/^ {2}--json /.test(line));
  const callDefaults = helpDefaults(call.stdout);
  for (const line of flags(list.stdout)) assert.ok(flags(call.stdout).includes(line), line);
  assert.deepEqual(
    [callDefaults.get("hostname"), callDefaults.get("port"), callDefaults.get("timeout")],
    [DEFAULT_CLIENT_OPTIONS.hostname, String(DEFAULT_PORT), "30000"],
  );
  assert.deepEqual(helpDefaults(list.stdout), callDefaults);
});

// ---------------------------------------------------------------------------------------------
// Tokens fail closed

const SECRET = "s3cret-token-value";
/** Deno's permissions for a CLI that may not read the environment. */
const NO_ENV = ["--allow-net", "--allow-read"];

/** Asserts a refusal: exit 2, nothing on stdout, one line on stderr, and never the token. */
function assertRefused(out: Output, pattern: RegExp): void {
  assertFailure(out, 2, pattern);
  assert.ok(!out.stderr.includes(SECRET), "the token is printed");
}

Deno.test("cli serve refuses to start, exit 2 in one line, when a token it may need cannot be read", async (t) => {
  const dir = await Deno.makeTempDir();
  try {
    const empty = `${dir}/empty`;
    const token = `${dir}/token`;
    await Deno.writeTextFile(empty, "\n");
    await Deno.writeTextFile(token, `${SECRET}\n`);
    const base = [path("examples/calc.ts"), "--port", "0", "--cert", cert, "--key", key];
    const unknown =
      /^error: Cannot read TLSRPC_TOKEN: no env permission, so "serve" cannot tell whether it is set \(run with --allow-env=TLSRPC_TOKEN, or pass --token-file FILE or --no-token\)\n$/;
    const cases: { name: string; args?: string[]; options?: RunCliOptions; stderr: RegExp }[] = [
      { name: "no env permission", options: { permissions: NO_ENV }, stderr: unknown },
      {
        name: "no env permission, TLSRPC_TOKEN set",
        options: { permissions: NO_ENV, env: { TLSRPC_TOKEN: SECRET } },
        stderr: unknown,
      },
      {
        name: "TLSRPC_TOKEN denied",
        options: { permissions: ["-A", "--deny-env=TLSRPC_TOKEN"], env: { TLSRPC_TOKEN: SECRET } },
        stderr: unknown,
      },
      {
        name: "empty TLSRPC_TOKEN",
        options: { env: { TLSRPC_TOKEN: "" } },
        stderr: /^error: Cannot use TLSRPC_TOKEN: it is empty \(unset it for no token\)\n$/,
      },
      {
        name: "blank TLSRPC_TOKEN",
        options: { env: { TLSRPC_TOKEN: " \t" } },
        stderr: /^error: Cannot use TLSRPC_TOKEN: it is empty/,
      },
      {
        name: "TLSRPC_TOKEN set with --no-token",
        args: ["--no-token"],
        options: { env: { TLSRPC_TOKEN: SECRET } },
        stderr:
          /^error: Cannot use --no-token: TLSRPC_TOKEN is set \(unset it, or drop --no-token\)\n$/,
      },
      {
        name: "--token-file with --no-token",
        args: ["--token-file", token, "--no-token"],
        stderr: /^error: Cannot run "serve": give --token-file or --no-token, not both/,
      },
      {
        name: "empty --token-file",
        args: ["--token-file", empty],
        stderr: /^error: Cannot use --token-file ".*\/empty": it is empty\n$/,
      },
      {
        name: "missing --token-file",
        args: ["--token-file", `${dir}/missing`],
        stderr: /^error: Cannot read --token-file ".*\/missing": file not found\n$/,
      },
      {
        name: "--token-file is a folder",
        args: ["--token-file", dir],
        stderr: /^error: Cannot read --token-file ".*": /,
      },
      {
        name: "--token-file without read permission",
        args: ["--token-file", token],
        options: { permissions: ["--allow-net", `--allow-read=${root.pathname}`, "--allow-env"] },
        stderr: /^error: Cannot read --token-file ".*\/token": /,
      },
    ];
    for (const c of cases) {
      await t.step(c.name, async () => {
        assertRefused(await run(["serve", ...base, ...c.args ?? []], c.options), c.stderr);
      });
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("cli serve --no-token serves without env permission; with TLSRPC_TOKEN it says once that authentication is on, never the token", async (t) => {
  const base = [path("examples/calc.ts"), "--port", "0", "--cert", cert, "--key", key];
  await t.step("--no-token, no env permission", async () => {
    const server = await startServe([...base, "--no-token"], { permissions: NO_ENV });
    assert.ok(server.port > 0, "a port in the listening line");
    const target = ["--port", String(server.port), "--ca", ca];
    const call = await run(["call", ...target, "--no-token", "add", "1", "2"], {
      permissions: NO_ENV,
    });
    const done = await server.stop();
    assert.equal(call.stdout, "3\n", call.stderr);
    assert.equal(done.code, 0, done.stderr);
    assert.doesNotMatch(done.stderr, /token/);
  });
  await t.step("TLSRPC_TOKEN with --allow-env=TLSRPC_TOKEN", async () => {
    const server = await startServe(base, {
      permissions: [...NO_ENV, "--allow-env=TLSRPC_TOKEN"],
      env: { TLSRPC_TOKEN: SECRET },
    });
    assert.ok(server.port > 0, "a port in the listening line");
    const target = ["--port", String(server.port), "--ca", ca];
    const [none, given] = await Promise.all([
      run(["call", ...target, "add", "1", "2"]),
      run(["call", ...target, "add", "1", "2"], { env: { TLSRPC_TOKEN: SECRET } }),
    ]);
    const done = await server.stop();
    assert.equal(none.code, 3, none.stderr);
    assert.match(
      none.stderr,
      /^error: -32004 .*\(the server requires a token: pass --token-file FILE, or set TLSRPC_TOKEN\)\n$/,
    );
    assert.equal(given.stdout, "3\n", given.stderr);
    assert.equal(done.code, 0, done.stderr);
    assert.deepEqual(
      done.stderr.split("\n").filter((line) => /token/.test(line)),
      ["token authentication is on: clients must present the token from TLSRPC_TOKEN"],
    );
    assert.ok(
      !done.stdout.includes(SECRET) && !done.stderr.includes(SECRET),
      "the token is printed",
    );
  });
});

Deno.test("cli call and list refuse, exit 2, a token they cannot read, and go without one only when told", async (t) => {
  await using server = await serve(calc, serverOptions());
  const target = ["--port", String(server.addr.port), "--ca", ca];
  const unknown = (command: string) =>
    new RegExp(`^error: Cannot read TLSRPC_TOKEN: no env permission, so "${command}" cannot tell`);
  const cases: { args: string[]; options?: RunCliOptions; code: number; out: RegExp }[] = [
    {
      args: ["call", "add", "1", "2"],
      options: { permissions: NO_ENV },
      code: 2,
      out: unknown("call"),
    },
    { args: ["list"], options: { permissions: NO_ENV }, code: 2, out: unknown("list") },
    {
      args: ["call", "add", "1", "2"],
      options: { env: { TLSRPC_TOKEN: "" } },
      code: 2,
      out: /^error: Cannot use TLSRPC_TOKEN: it is empty/,
    },
    {
      args: ["list"],
      options: { env: { TLSRPC_TOKEN: "" } },
      code: 2,
      out: /^error: Cannot use TLSRPC_TOKEN: it is empty/,
    },
    {
      args: ["call", "--no-token", "add", "1", "2"],
      options: { env: { TLSRPC_TOKEN: SECRET } },
      code: 2,
      out: /^error: Cannot use --no-token: TLSRPC_TOKEN is set/,
    },
    {
      args: ["list", "--no-token", "--token-file", cert],
      code: 2,
      out: /^error: Cannot run "list": give --token-file or --no-token, not both/,
    },
    {
      args: ["call", "--no-token", "add", "1", "2"],
      options: { permissions: NO_ENV },
      code: 0,
      out: /^3\n$/,
    },
    {
      args: ["list", "--no-token"],
      options: { permissions: NO_ENV },
      code: 0,
      out: /^add\(a, b\)$/m,
    },
    { args: ["call", "add", "1", "2"], code: 0, out: /^3\n$/ },
  ];
  for (const c of cases) {
    const permissions = c.options?.permissions?.join(" ") ?? "-A";
    const env = c.options?.env ? ` ${JSON.stringify(c.options.env)}` : "";
    await t.step(`${c.args.join(" ")} (${permissions}${env}) exits ${c.code}`, async () => {
      const [command, ...rest] = c.args;
      const out = await run([command!, ...target, ...rest], c.options);
      if (c.code === 2) assertRefused(out, c.out);
      else {
        assert.equal(out.code, c.code, out.stderr);
        assert.match(out.stdout, c.out);
      }
    });
  }
});

// ---------------------------------------------------------------------------------------------
// A hostile server's text is escaped

/** Retitles the terminal (OSC 0 ... BEL), clears it (ESC [2J, then CSI 2J), and turns text around. */
const EVIL = "\x1b]0;pwned\x07\x1b[2J\u009b2J\u202e";
/** EVIL in a line of text, as the CLI prints it. */
const EVIL_TEXT = String.raw`\x1b]0;pwned\x07\x1b[2J\x9b2J\u{202e}`;
/** EVIL as a JSON string, as the CLI prints it: every character a terminal acts on escaped. */
const EVIL_JSON = String.raw`"\u001b]0;pwned\u0007\u001b[2J\u009b2J\u202e"`;

/** Asserts that no character a terminal acts on (but the line ends) reached stdout or stderr. */
function assertNoControls(out: Output): void {
  // deno-lint-ignore no-control-regex -- looking for control characters is the point
  const unsafe = /[\x00-\x09\x0b-\x1f\x7f-\x9f\u2028-\u202e\u2066-\u2069]/;
  assert.doesNotMatch(out.stdout, unsafe, JSON.stringify(out.stdout));
  assert.doesNotMatch(out.stderr, unsafe, JSON.stringify(out.stderr));
}

Deno.test("cli call and list escape what a hostile server sends: errors, data, results, names", async (t) => {
  await using server = await serve({
    fail: () => {
      throw new RpcError(4000, `bad ${EVIL}`, { data: { [EVIL]: EVIL } });
    },
    echo: () => EVIL,
    rich: () => new Map([[EVIL, 1n]]),
    [`evil${EVIL}`]: (a: unknown) => a,
  }, serverOptions());
  const target = ["--port", String(server.addr.port), "--ca", ca];
  const cases: { args: string[]; code: number; stdout: string; stderr: string }[] = [
    {
      args: ["call", "fail"],
      code: 1,
      stdout: "",
      stderr: `error: 4000 bad ${EVIL_TEXT}\ndata: {${EVIL_JSON}:${EVIL_JSON}}\n`,
    },
    { args: ["call", "echo"], code: 0, stdout: `${EVIL_JSON}\n`, stderr: "" },
    { args: ["call", "echo", "--raw"], code: 0, stdout: `${EVIL_JSON}\n`, stderr: "" },
    {
      args: ["call", "rich"],
      code: 0,
      stdout: `{"$map":[[${EVIL_JSON},{"$bigint":"1"}]]}\n`,
      stderr: "",
    },
    {
      // The server puts the name in its message: what it echoes is escaped too.
      args: ["call", `nope${EVIL}`],
      code: 1,
      stdout: "",
      stderr: 'error: -32601 Method not found: "nope',
    },
    {
      args: ["list"],
      code: 0,
      stdout: `fail()\necho()\nrich()\nevil${EVIL_TEXT}(a)\n`,
      stderr: "",
    },
  ];
  for (const c of cases) {
    await t.step(c.args.join(" ").replace(EVIL, "EVIL"), async () => {
      const [command, ...rest] = c.args;
      const out = await run([command!, ...target, ...rest]);
      assertNoControls(out);
      assert.equal(out.code, c.code, out.stderr);
      assert.equal(out.stdout, c.stdout);
      if (c.code === 0) assert.equal(out.stderr, c.stderr);
      else assert.ok(out.stderr.startsWith(c.stderr), JSON.stringify(out.stderr));
    });
  }
  await t.step("the JSON printed parses back to what the server sent", async () => {
    const out = await run(["call", ...target, "echo"]);
    assert.equal(JSON.parse(out.stdout), EVIL);
  });
});

Deno.test("cli call escapes a hostile server's error for a message it says it could not read (id null)", async () => {
  const listener = Deno.listenTls({ hostname: "127.0.0.1", port: 0, ...certs });
  const hostile = (async () => {
    using conn = await listener.accept();
    const reader = new FrameReader(conn);
    const writer = new FrameWriter(conn);
    for (let frames = await reader.read(); frames; frames = await reader.read()) {
      for (const frame of frames) {
        const { id, method } = JSON.parse(decoder.decode(frame));
        // Answer the hello, so that the connection opens; then refuse the call with id null.
        writer.writeText(JSON.stringify(
          method === "rpc.hello"
            ? { jsonrpc: "2.0", id, result: { extensions: [] } }
            : { jsonrpc: "2.0", id: null, error: { code: -32600, message: `bad ${EVIL}` } },
        ));
        await writer.flushed();
        if (method !== "rpc.hello") return;
      }
    }
  })();
  try {
    const port = String(listener.addr.port);
    const out = await run(["call", "--hostname", "127.0.0.1", "--port", port, "--ca", ca, "add"]);
    assertNoControls(out);
    assert.equal(out.code, 3, out.stderr);
    assert.match(out.stderr, /^error: Cannot complete call: .*\n$/);
    assert.ok(out.stderr.includes(`bad ${EVIL_TEXT}`), JSON.stringify(out.stderr));
  } finally {
    listener.close();
    await hostile;
  }
});
