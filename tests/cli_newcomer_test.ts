// The CLI as a newcomer and an operator meet it: every check serve makes before it listens, every
// failure of call and list said in plain words with what to do next, the output formats, and the
// smallest permission sets. Each behaviour runs the CLI as a subprocess on real sockets; the
// development state folder is always a temporary one (TLSRPC_HOME), never the user's.

import assert from "node:assert/strict";
import { RpcError } from "../errors.ts";
import { generateDevCertificates, writeDevCertificates } from "../dev_cert.ts";
import { serve } from "../server.ts";
import config from "../deno.json" with { type: "json" };
import { serverOptions } from "./_util.ts";

const root = new URL("../", import.meta.url).pathname;
const cliPath = `${root}cli.ts`;
const ca = `${root}testdata/ca.pem`;
const cert = `${root}testdata/server.pem`;
const key = `${root}testdata/server.key`;
const decoder = new TextDecoder();

/** The variables the state folder is found by, as the CLI's permission sets name them. */
const STATE_ENV = "TLSRPC_TOKEN,TLSRPC_HOME,XDG_STATE_HOME,HOME";

/** The smallest permission sets the README shows (serve also needs what its module needs). */
const PERMISSIONS = {
  /** serve --cert --key, and call and list --ca. */
  files: ["--allow-net", "--allow-read", "--allow-env=TLSRPC_TOKEN"],
  /** serve, call and list with development certificates that exist. */
  dev: ["--allow-net", "--allow-read", `--allow-env=${STATE_ENV}`, "--allow-sys=uid"],
} as const;

const handlers = {
  greet: (name: string, greeting = "Hello") => `${greeting}, ${name}`,
  sum: (...xs: number[]) => xs.reduce((a, b) => a + b, 0),
  echo: (value: unknown) => value,
  sleep: (ms: number) => new Promise((resolve) => setTimeout(resolve, ms, ms)),
  rich: () => ({
    big: 12n,
    bytes: new Uint8Array([1, 2, 3]),
    when: new Date(Date.UTC(2024, 0, 1)),
    byKey: new Map<unknown, unknown>([[1, "one"], ["1", "string one"], [2n, "two"], ["k", {
      x: [true],
    }]]),
    tags: new Set(["a"]),
    nothing: undefined,
    nan: NaN,
  }),
  fail: () => {
    throw new RpcError(4000, "Cannot fail: as asked", { data: { n: 1n, why: "asked" } });
  },
};

/** `rich()` in the CLI's JSON form. */
const RICH_JSON = {
  big: { $bigint: "12" },
  bytes: { $bytes: "AQID" },
  when: { $date: "2024-01-01T00:00:00.000Z" },
  byKey: {
    $map: [[1, "one"], ["1", "string one"], [{ $bigint: "2" }, "two"], ["k", { x: [true] }]],
  },
  tags: { $set: ["a"] },
  nothing: { $undefined: true },
  nan: { $number: "NaN" },
};

interface Output {
  code: number;
  stdout: string;
  stderr: string;
}

interface CliOptions {
  /** Deno's permission flags; `--no-prompt` is always added. @default ["-A"] */
  permissions?: readonly string[];
  /** The state folder (TLSRPC_HOME). @default a fresh empty folder */
  home?: string;
  /** Variables besides this process's, without TLSRPC_TOKEN and TLSRPC_HOME. */
  env?: Record<string, string>;
  /** Text for standard input. @default none */
  stdin?: string;
}

/** A temporary folder, removed on disposal. */
async function tempDir(): Promise<{ path: string } & AsyncDisposable> {
  const path = await Deno.makeTempDir({ prefix: "tlsrpc-cli-" });
  return {
    path,
    async [Symbol.asyncDispose]() {
      await Deno.remove(path, { recursive: true });
    },
  };
}

/** One empty state folder for the runs that name none, so that none reads the user's own. */
const emptyHome = await Deno.makeTempDir({ prefix: "tlsrpc-home-" });
globalThis.addEventListener("unload", () => Deno.removeSync(emptyHome, { recursive: true }));

function environment(options: CliOptions): Record<string, string> {
  const env = Deno.env.toObject();
  delete env.TLSRPC_TOKEN;
  return { ...env, NO_COLOR: "1", TLSRPC_HOME: options.home ?? emptyHome, ...options.env };
}

function denoArgs(args: readonly string[], options: CliOptions): string[] {
  return ["run", "--no-prompt", ...(options.permissions ?? ["-A"]), cliPath, ...args];
}

/** Runs `deno run --no-prompt PERMISSIONS cli.ts ARGS` in the repository's root. */
async function cli(args: readonly string[], options: CliOptions = {}): Promise<Output> {
  const child = new Deno.Command(Deno.execPath(), {
    args: denoArgs(args, options),
    cwd: root,
    clearEnv: true,
    env: environment(options),
    stdin: options.stdin === undefined ? "null" : "piped",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  if (options.stdin !== undefined) {
    const writer = child.stdin.getWriter();
    await writer.write(new TextEncoder().encode(options.stdin));
    await writer.close();
  }
  const output = await child.output();
  return {
    code: output.code,
    stdout: decoder.decode(output.stdout),
    stderr: decoder.decode(output.stderr),
  };
}

/** A `cli.ts serve` subprocess that printed its "listening on" line; disposal stops it. */
interface Served extends AsyncDisposable {
  port: number;
  stop(): Promise<Output>;
}

async function startServe(args: readonly string[], options: CliOptions = {}): Promise<Served> {
  const child = new Deno.Command(Deno.execPath(), {
    args: denoArgs(["serve", ...args], options),
    cwd: root,
    clearEnv: true,
    env: environment(options),
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
  let stopped: Promise<Output> | undefined;
  const stop = () =>
    stopped ??= (async () => {
      try {
        child.kill("SIGTERM");
      } catch {
        // Exited already.
      }
      for (let chunk = await reader.read(); !chunk.done; chunk = await reader.read()) {
        stdout += chunk.value;
      }
      return { code: (await child.status).code, stdout, stderr: await stderr };
    })();
  const port = Number(/^listening on 127\.0\.0\.1:(\d+)\n/.exec(stdout)?.[1]);
  if (!(port > 0)) assert.fail(`cli serve did not start: ${JSON.stringify(await stop())}`);
  return { port, stop, [Symbol.asyncDispose]: async () => void await stop() };
}

/** Asserts a failure: the exit code, nothing on stdout, `lines` lines on stderr, no stack trace. */
function assertFailure(out: Output, code: number, pattern: RegExp, lines = 1): void {
  assert.equal(out.code, code, JSON.stringify(out));
  assert.equal(out.stdout, "", JSON.stringify(out));
  assert.match(out.stderr, pattern);
  assert.equal(out.stderr.trimEnd().split("\n").length, lines, out.stderr);
  assert.doesNotMatch(out.stderr, /Uncaught|ext:|\.ts:\d+:\d+\)/, "a stack trace");
}

/** A state folder holding development certificates (and a client certificate "worker"). */
async function devHome(dir: string): Promise<string> {
  await Deno.chmod(dir, 0o700);
  await writeDevCertificates(`${dir}/dev-certs`, { clientName: "worker" });
  return `${dir}/dev-certs`;
}

// ---------------------------------------------------------------------------------------------
// serve checks everything before it listens

Deno.test("cli serve refuses, exit 2 in one line naming the file, a certificate, key or CA file that is wrong, before it listens", async (t) => {
  await using dir = await tempDir();
  const other = await generateDevCertificates();
  const expired = await generateDevCertificates({ now: new Date(Date.now() - 900 * 86_400_000) });
  const files: Record<string, string> = {
    "other.key": other.key,
    "expired.pem": expired.cert,
    "expired.key": expired.key,
    "encrypted.key":
      "-----BEGIN ENCRYPTED PRIVATE KEY-----\nAAAA\n-----END ENCRYPTED PRIVATE KEY-----\n",
    "empty.pem": "",
  };
  for (const [name, text] of Object.entries(files)) {
    await Deno.writeTextFile(`${dir.path}/${name}`, text);
  }
  const file = (name: string) => `${dir.path}/${name}`;
  const module = `${root}examples/calc.ts`;
  const cases: { name: string; args: string[]; stderr: RegExp }[] = [
    {
      name: "--cert and --key swapped",
      args: ["--cert", key, "--key", cert],
      stderr:
        /^error: Cannot use --cert ".*server\.key": it holds no PEM certificate .*\(it holds a private key: did you swap --cert and --key\?\)\n$/,
    },
    {
      name: "--key is a certificate",
      args: ["--cert", cert, "--key", ca],
      stderr:
        /^error: Cannot use --key ".*ca\.pem": it holds no PEM private key .*\(it holds a certificate: did you swap --cert and --key\?\)\n$/,
    },
    {
      name: "the key of another certificate",
      args: ["--cert", cert, "--key", file("other.key")],
      stderr:
        /^error: Cannot use --key ".*other\.key": it is not the key of --cert ".*server\.pem", their public keys differ/,
    },
    {
      name: "an expired certificate",
      args: ["--cert", file("expired.pem"), "--key", file("expired.key")],
      stderr:
        /^error: Cannot use --cert ".*expired\.pem": it expired on \d{4}-\d\d-\d\dT.* \(renew it/,
    },
    {
      name: "an encrypted key",
      args: ["--cert", cert, "--key", file("encrypted.key")],
      stderr: /^error: Cannot use --key ".*encrypted\.key": the key is encrypted.*\(decrypt it/,
    },
    {
      name: "an empty certificate file",
      args: ["--cert", file("empty.pem"), "--key", key],
      stderr: /^error: Cannot use --cert ".*empty\.pem": it holds no PEM certificate/,
    },
    {
      name: "--client-ca README.md",
      args: ["--cert", cert, "--key", key, "--client-ca", "README.md"],
      stderr: /^error: Cannot use --client-ca "README\.md": it holds no PEM certificate/,
    },
    {
      name: "an unreadable --client-ca",
      args: ["--cert", cert, "--key", key, "--client-ca", file("missing.pem")],
      stderr: /^error: Cannot read --client-ca ".*missing\.pem": file not found\n$/,
    },
  ];
  for (const c of cases) {
    await t.step(c.name, async () => {
      const out = await cli(["serve", module, "--port", "0", "--no-token", ...c.args]);
      assertFailure(out, 2, c.stderr);
    });
  }
});

Deno.test("cli serve refuses, exit 2, a module that does not load (with Deno's error and code frame) or exposes no method", async (t) => {
  await using dir = await tempDir();
  const modules: Record<string, string> = {
    "syntax.ts": "export function add(a: number, b: number) {\n  return a + ;\n}\n",
    "throws.ts": 'export const f = () => 1;\nthrow new Error("Cannot start: no database");\n',
    "missing_import.ts": 'import "./nowhere.ts";\nexport const f = () => 1;\n',
    "no_methods.ts": "export const answer = 42;\nexport function _hidden() {}\n",
  };
  for (const [name, source] of Object.entries(modules)) {
    await Deno.writeTextFile(`${dir.path}/${name}`, source);
  }
  const cases: { module: string; stderr: RegExp; lines: number }[] = [
    {
      module: "syntax.ts",
      // Deno's own frame: the message, the source line with a marker, and file:line:column.
      stderr:
        /^error: Cannot load module ".*syntax\.ts": SyntaxError: Expression expected\n(.*\n)*.*return a \+ ;\n(.*\n)*\s+at file:\/\/.*syntax\.ts:2:\d+\n$/,
      lines: 5,
    },
    {
      module: "throws.ts",
      stderr:
        /^error: Cannot load module ".*throws\.ts": Error: Cannot start: no database\n\s+at file:\/\/.*throws\.ts:2:7\n$/,
      lines: 2,
    },
    {
      module: "missing_import.ts",
      stderr:
        /^error: Cannot load module ".*missing_import\.ts": Module not found ".*nowhere\.ts"\.\n\s+at file:\/\/.*missing_import\.ts:1:8\n$/,
      lines: 2,
    },
    {
      module: "no_methods.ts",
      stderr:
        /^error: Cannot serve ".*no_methods\.ts": it exposes no method \(export functions, or a default export object or class with methods; names starting with "_" are not exposed\)\n$/,
      lines: 1,
    },
  ];
  for (const c of cases) {
    await t.step(c.module, async () => {
      const args = ["serve", `${dir.path}/${c.module}`, "--port", "0", "--no-token"];
      const out = await cli([...args, "--cert", cert, "--key", key]);
      assert.equal(out.code, 2, JSON.stringify(out));
      assert.equal(out.stdout, "");
      assert.match(out.stderr, c.stderr);
      assert.equal(out.stderr.trimEnd().split("\n").length, c.lines, out.stderr);
      assert.ok(!out.stderr.includes("\x1b"), "colour codes");
    });
  }
});

Deno.test("cli serve warns about a certificate that is not valid yet, and serves", async () => {
  await using dir = await tempDir();
  const early = await generateDevCertificates({ now: new Date(Date.now() + 30 * 86_400_000) });
  await Deno.writeTextFile(`${dir.path}/cert.pem`, early.cert);
  await Deno.writeTextFile(`${dir.path}/key.pem`, early.key);
  const args = ["--cert", `${dir.path}/cert.pem`, "--key", `${dir.path}/key.pem`];
  const server = await startServe([
    `${root}examples/calc.ts`,
    "--port",
    "0",
    "--no-token",
    ...args,
  ]);
  const done = await server.stop();
  assert.equal(done.code, 0, done.stderr);
  assert.match(
    done.stderr,
    /^warning: the server certificate --cert ".*cert\.pem" is not valid until \d{4}-.*: peers refuse it until then \(is the clock right\?\)$/m,
  );
});

Deno.test("cli serve without a permission it needs names the flag to add, exit 2", async (t) => {
  await using dir = await tempDir();
  const base = [`${root}examples/calc.ts`, "--port", "0", "--no-token"];
  await t.step("--cert and --key, no --allow-net", async () => {
    const out = await cli(["serve", ...base, "--cert", cert, "--key", key], {
      permissions: ["--allow-read"],
    });
    assertFailure(
      out,
      2,
      /^error: Cannot serve ".*calc\.ts": no net permission for "127\.0\.0\.1:0" \(run with --allow-net=127\.0\.0\.1 or --allow-net\)\n$/,
    );
  });
  await t.step("no development certificates yet, no --allow-write", async () => {
    const out = await cli(["serve", ...base], { permissions: PERMISSIONS.dev, home: dir.path });
    assertFailure(
      out,
      2,
      /^error: Cannot make development certificates in ".*dev-certs": no write permission for ".*" \(run with --allow-write=.* or --allow-write, or pass --cert and --key\)\n$/,
    );
  });
  await t.step("development certificates, no env permission for the state folder", async () => {
    const out = await cli(["serve", ...base], {
      permissions: ["--allow-net", "--allow-read", "--allow-write"],
      home: dir.path,
    });
    assertFailure(
      out,
      2,
      /^error: Cannot find the state folder for development certificates: .*TLSRPC_HOME.* \(run with --allow-env=TLSRPC_HOME,XDG_STATE_HOME,HOME, or pass --cert and --key\)\n$/,
    );
  });
  await t.step(
    "development certificates that exist, no --allow-sys=uid to check whose",
    async () => {
      await devHome(dir.path);
      const out = await cli(["serve", ...base], {
        permissions: ["--allow-net", "--allow-read", `--allow-env=${STATE_ENV}`],
        home: dir.path,
      });
      assertFailure(
        out,
        2,
        /^error: Cannot use the development certificates in ".*": whether the folder is yours, and so safe to use, is unknown without --allow-sys=uid \(run with --allow-sys=uid or --allow-write=.*, or pass --cert and --key\)\n$/,
      );
    },
  );
});

// ---------------------------------------------------------------------------------------------
// Every error says what to do next

/** A plain TCP port that answers like an HTTP server. */
function plainTcpServer(): { port: number } & AsyncDisposable {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const serving = (async () => {
    for await (const conn of listener) {
      await conn.read(new Uint8Array(1024)).catch(() => null);
      await conn.write(new TextEncoder().encode("HTTP/1.1 400 Bad Request\r\n\r\n")).catch(() => 0);
      conn.close();
    }
  })();
  return {
    port: listener.addr.port,
    async [Symbol.asyncDispose]() {
      listener.close();
      await serving.catch(() => {});
    },
  };
}

Deno.test("cli call and list say in plain words what went wrong, and what to do next", async (t) => {
  await using dir = await tempDir();
  await using devDir = await tempDir();
  const dev = await devHome(devDir.path);
  const worker = await generateDevCertificates({ clientName: "worker" });
  const stranger = await generateDevCertificates({ clientName: "stranger" });
  const write = (name: string, text: string) => Deno.writeTextFile(`${dir.path}/${name}`, text);
  await write("other-ca.pem", stranger.caCert);
  await write("worker.pem", worker.clientCert!);
  await write("worker.key", worker.clientKey!);
  await write("stranger.pem", stranger.clientCert!);
  await write("stranger.key", stranger.clientKey!);
  await write("token", "s3cret\n");
  await using plain = await serve(handlers, serverOptions());
  await using tokened = await serve(handlers, { ...serverOptions(), token: "s3cret" });
  await using mutual = await serve(handlers, { ...serverOptions(), clientCa: worker.caCert });
  await using elsewhere = await serve(handlers, { ...serverOptions(), hostname: "127.0.0.2" });
  await using tcp = plainTcpServer();
  const closed = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const closedPort = String(closed.addr.port);
  closed.close();
  const at = (server: { addr: Deno.NetAddr } | { port: number }) =>
    String("addr" in server ? server.addr.port : server.port);
  const cases: {
    name: string;
    args: string[];
    options?: CliOptions;
    code: number;
    stderr: RegExp;
  }[] = [
    {
      name: "untrusted certificate, no development CA",
      args: ["call", "--port", at(plain), "greet", "ada"],
      code: 3,
      stderr:
        /^error: Cannot connect to "localhost:\d+": UnknownIssuer: the server's certificate is not signed by a CA this client trusts \(pass the server's CA with --ca FILE; a server on development certificates is trusted through the development CA, which is not there: ".*ca\.pem"\)\n$/,
    },
    {
      name: "untrusted certificate, --ca of another CA",
      args: ["list", "--port", at(plain), "--ca", `${dir.path}/other-ca.pem`],
      code: 3,
      stderr: /UnknownIssuer: .* \(--ca ".*other-ca\.pem" did not sign it: pass the CA that did/,
    },
    {
      name: "untrusted certificate, the development CA did not sign it",
      args: ["call", "--port", at(plain), "greet", "ada"],
      options: { home: devDir.path },
      code: 3,
      stderr: new RegExp(
        `UnknownIssuer: .* \\(the development CA "${dev}/ca\\.pem" did not sign it either: pass the server's CA with --ca FILE\\)\\n$`,
      ),
    },
    {
      name: "untrusted certificate, the development CA skipped for lack of permission",
      args: ["call", "--port", at(plain), "greet", "ada"],
      options: { permissions: PERMISSIONS.files, home: devDir.path },
      code: 3,
      stderr:
        /UnknownIssuer: .* \(pass the server's CA with --ca FILE; the development CA was not tried: no permission to read TLSRPC_HOME; trusting it needs --allow-env=TLSRPC_HOME,XDG_STATE_HOME,HOME, --allow-read and --allow-sys=uid\)\n$/,
    },
    {
      name: "a plain TCP port",
      args: ["call", "--port", at(tcp), "--ca", ca, "greet", "ada"],
      code: 3,
      stderr:
        /^error: Cannot connect to "localhost:\d+": the server at localhost:\d+ does not speak TLS \(is it a plain TCP or HTTP port\? Check --hostname and --port\)\n$/,
    },
    {
      name: "a plain TCP port, list",
      args: ["list", "--port", at(tcp), "--ca", ca],
      code: 3,
      stderr: /does not speak TLS \(is it a plain TCP or HTTP port\?/,
    },
    {
      name: "nothing listens",
      args: ["call", "--hostname", "127.0.0.1", "--port", closedPort, "--ca", ca, "greet", "ada"],
      code: 3,
      stderr:
        /^error: Cannot connect to "127\.0\.0\.1:\d+": nothing listens there, the connection was refused \(start the server, or check --hostname and --port\)\n$/,
    },
    {
      name: "a certificate for other names",
      args: ["call", "--hostname", "127.0.0.2", "--port", at(elsewhere), "--ca", ca, "greet", "x"],
      code: 3,
      stderr:
        /^error: Cannot connect to "127\.0\.0\.2:\d+": the server's certificate is not valid for "127\.0\.0\.2"; it is for localhost, 127\.0\.0\.1, .*::1 \(connect with --hostname set to a name the certificate has, e.g\. --hostname localhost; /,
    },
    {
      name: "a missing token",
      args: ["call", "--port", at(tokened), "--ca", ca, "greet", "ada"],
      code: 3,
      stderr:
        /^error: -32004 .* \(the server requires a token: pass --token-file FILE, or set TLSRPC_TOKEN\)\n$/,
    },
    {
      name: "a wrong token",
      args: ["list", "--port", at(tokened), "--ca", ca],
      options: { env: { TLSRPC_TOKEN: "guess" } },
      code: 3,
      stderr:
        /^error: Cannot connect to "localhost:\d+": the server refused the token \(check the token in --token-file or TLSRPC_TOKEN/,
    },
    {
      name: "no client certificate for a server that requires one",
      args: ["call", "--port", at(mutual), "--ca", ca, "greet", "ada"],
      code: 3,
      stderr:
        /^error: Cannot connect to "localhost:\d+": the server closed the connection during the handshake: it requires a client certificate for mutual TLS \(pass --cert FILE --key FILE, /,
    },
    {
      name: "a client certificate the server does not trust",
      args: [
        "call",
        "--port",
        at(mutual),
        "--ca",
        ca,
        "--cert",
        `${dir.path}/stranger.pem`,
        "--key",
        `${dir.path}/stranger.key`,
        "greet",
        "ada",
      ],
      code: 3,
      stderr:
        /^error: Cannot connect to "localhost:\d+": the server refused the client certificate --cert ".*stranger\.pem" \(give a client certificate signed by the CA the server trusts/,
    },
    {
      name: "no --allow-net",
      args: ["call", "--port", at(plain), "--ca", ca, "greet", "ada"],
      options: { permissions: ["--allow-read", "--allow-env"] },
      code: 2,
      stderr:
        /^error: Cannot connect to "localhost:(\d+)": no net permission for "localhost:\1" \(run with --allow-net=localhost:\1 or --allow-net\)\n$/,
    },
    {
      name: "an unknown method",
      args: ["call", "--port", at(plain), "--ca", ca, "gret", "ada"],
      code: 1,
      stderr:
        /^error: -32601 Method not found: "gret"; did you mean "greet"\? \(run "list" to see the methods\)\n$/,
    },
    {
      name: "a missing parameter",
      args: ["call", "--port", at(plain), "--ca", ca, "greet"],
      code: 1,
      stderr: /^error: -32602 .*"name".* \(run "describe greet" to see its parameters\)\n$/,
    },
    {
      name: "--ca README.md, at once",
      args: ["call", "--port", closedPort, "--ca", "README.md", "greet", "ada"],
      code: 2,
      stderr:
        /^error: Cannot use --ca "README\.md": it holds no PEM certificate \(no "-----BEGIN CERTIFICATE-----" block\) \(give a PEM certificate file\)\n$/,
    },
    {
      name: "--ca README.md, list",
      args: ["list", "--port", closedPort, "--ca", "README.md"],
      code: 2,
      stderr: /^error: Cannot use --ca "README\.md": it holds no PEM certificate/,
    },
  ];
  for (const c of cases) {
    await t.step(c.name, async () => {
      assertFailure(await cli(c.args, c.options), c.code, c.stderr);
    });
  }
  await t.step("a client certificate the server trusts is let in", async () => {
    const args = ["--cert", `${dir.path}/worker.pem`, "--key", `${dir.path}/worker.key`];
    const out = await cli(["call", "--port", at(mutual), "--ca", ca, ...args, "greet", "ada"]);
    assert.equal(out.stdout, '"Hello, ada"\n', out.stderr);
  });
  await t.step("the right token is let in", async () => {
    const args = ["--token-file", `${dir.path}/token`];
    const out = await cli(["call", "--port", at(tokened), "--ca", ca, ...args, "greet", "ada"]);
    assert.equal(out.stdout, '"Hello, ada"\n', out.stderr);
  });
});

Deno.test("cli call, list and serve refuse an unsafe development state folder with its message, exit 2", async (t) => {
  await using dir = await tempDir();
  await Deno.mkdir(`${dir.path}/dev-certs`);
  await Deno.chmod(`${dir.path}/dev-certs`, 0o777);
  await using server = await serve(handlers, serverOptions());
  const port = String(server.addr.port);
  const unsafe =
    /^error: Cannot use development certificates: ".*dev-certs" is writable by other users \(mode 0777\); run "chmod 700 .*dev-certs" or set TLSRPC_HOME to a new folder/;
  const cases: [string, string[]][] = [
    ["call", ["call", "--port", port, "greet", "ada"]],
    ["list", ["list", "--port", port]],
    ["serve", ["serve", `${root}examples/calc.ts`, "--port", "0", "--no-token"]],
  ];
  for (const [name, args] of cases) {
    await t.step(name, async () => {
      assertFailure(await cli(args, { home: dir.path }), 2, unsafe);
    });
  }
  await t.step("call --ca does not look at the folder", async () => {
    const out = await cli(["call", "--port", port, "--ca", ca, "greet", "ada"], { home: dir.path });
    assert.equal(out.stdout, '"Hello, ada"\n', out.stderr);
  });
});

// ---------------------------------------------------------------------------------------------
// The whole error, and results as JSON

Deno.test("cli call prints an error's code, message and data; --raw prints the error object as received", async () => {
  await using server = await serve(handlers, serverOptions());
  const base = ["call", "--port", String(server.addr.port), "--ca", ca, "fail"];
  const out = await cli(base);
  assert.equal(out.code, 1);
  assert.equal(out.stderr, 'error: 4000 Cannot fail: as asked\ndata: {"n": 1n, "why": "asked"}\n');
  const raw = await cli([...base, "--raw"]);
  assert.equal(raw.code, 1);
  assert.equal(raw.stdout, "");
  assert.deepEqual(JSON.parse(raw.stderr), {
    code: 4000,
    message: "Cannot fail: as asked",
    data: { n: { $t: "bigint", v: "1" }, why: "asked" },
  });
});

/** Runs `command` in a pseudo-terminal (util-linux `script`), as a user at a terminal would. */
async function inTerminal(args: readonly string[]): Promise<Output> {
  const quoted = [Deno.execPath(), ...denoArgs(args, {})]
    .map((arg) => `'${arg.replaceAll("'", `'\\''`)}'`)
    .join(" ");
  const output = await new Deno.Command("script", {
    args: ["-qec", quoted, "/dev/null"],
    cwd: root,
    clearEnv: true,
    env: environment({}),
    stdin: "null",
  }).output();
  const text = (bytes: Uint8Array) => decoder.decode(bytes).replaceAll("\r\n", "\n");
  return { code: output.code, stdout: text(output.stdout), stderr: text(output.stderr) };
}

Deno.test("cli call prints JSON that python3 -m json.tool reads when stdout is not a terminal, readable text on a terminal, JSON there with --json", async (t) => {
  await using server = await serve(handlers, serverOptions());
  const base = ["call", "--port", String(server.addr.port), "--ca", ca, "rich"];
  await t.step("not a terminal: one line of JSON, rich values tagged", async () => {
    const out = await cli(base);
    assert.equal(out.code, 0, out.stderr);
    assert.equal(out.stdout.trimEnd().split("\n").length, 1);
    assert.deepEqual(JSON.parse(out.stdout), RICH_JSON);
    const python = new Deno.Command("python3", {
      args: ["-m", "json.tool"],
      stdin: "piped",
      stdout: "piped",
      stderr: "piped",
    }).spawn();
    const writer = python.stdin.getWriter();
    await writer.write(new TextEncoder().encode(out.stdout));
    await writer.close();
    const tool = await python.output();
    assert.equal(tool.code, 0, decoder.decode(tool.stderr));
    assert.deepEqual(JSON.parse(decoder.decode(tool.stdout)), RICH_JSON);
  });
  await t.step("a terminal: readable, rich values as themselves", async () => {
    const out = await inTerminal(base);
    assert.equal(out.code, 0, out.stdout);
    assert.match(out.stdout, /^ {2}"big": 12n,$/m);
    assert.match(out.stdout, /^ {2}"bytes": Uint8Array\(3 bytes\) <01 02 03>,$/m);
    assert.match(out.stdout, /^ {2}"byKey": Map \{$/m);
  });
  await t.step("a terminal with --json: indented JSON", async () => {
    const out = await inTerminal([...base, "--json"]);
    assert.equal(out.code, 0, out.stdout);
    assert.match(out.stdout, /^ {2}"big": \{$/m);
    assert.deepEqual(JSON.parse(out.stdout), RICH_JSON);
  });
});

// ---------------------------------------------------------------------------------------------
// Ergonomics

Deno.test("cli call --timeout 0 waits for ever, for the connection and the response", async () => {
  await using server = await serve(handlers, serverOptions());
  const port = String(server.addr.port);
  const out = await cli(["call", "--port", port, "--ca", ca, "--timeout", "0", "sleep", "300"]);
  assert.equal(out.stdout, "300\n", out.stderr);
});

Deno.test("cli call --params takes a JSON object, @FILE or - for standard input", async (t) => {
  await using dir = await tempDir();
  await using server = await serve(handlers, serverOptions());
  const base = ["call", "--port", String(server.addr.port), "--ca", ca, "greet", "--params"];
  await Deno.writeTextFile(`${dir.path}/params.json`, '{"name":"bob","greeting":"Hi"}');
  await t.step("a JSON object", async () => {
    const out = await cli([...base, '{"name":"ada"}']);
    assert.equal(out.stdout, '"Hello, ada"\n', out.stderr);
  });
  await t.step("@FILE", async () => {
    const out = await cli([...base, `@${dir.path}/params.json`]);
    assert.equal(out.stdout, '"Hi, bob"\n', out.stderr);
  });
  await t.step("- reads standard input", async () => {
    const out = await cli([...base, "-"], { stdin: '{"name":"eve","greeting":"Hey"}\n' });
    assert.equal(out.stdout, '"Hey, eve"\n', out.stderr);
  });
  await t.step("@FILE that is missing", async () => {
    const out = await cli([...base, `@${dir.path}/missing.json`]);
    assertFailure(out, 2, /^error: Cannot read --params ".*missing\.json": file not found\n$/);
  });
  await t.step("- with input that is not JSON", async () => {
    const out = await cli([...base, "-"], { stdin: "name=eve\n" });
    assertFailure(
      out,
      2,
      /^error: Cannot use --params - \(standard input\): .* \(give a JSON object/,
    );
  });
});

Deno.test("cli call refuses an ARG that starts like JSON but does not parse, exit 2 naming it, before connecting", async (t) => {
  await using server = await serve(handlers, serverOptions());
  const port = String(server.addr.port);
  for (const arg of ["[1,", "{name}", '"ada', "12abc", "-1x", "2024-01-01"]) {
    await t.step(`${arg} is refused`, async () => {
      const out = await cli(["call", "--port", port, "--ca", ca, "echo", arg]);
      assertFailure(
        out,
        2,
        /^error: Cannot use ARG 1 ".*": it starts like JSON but is not valid JSON \(fix the JSON, or quote a string as JSON: '".*"'\)\n$/,
      );
      assert.ok(out.stderr.includes(`"${arg}"`), out.stderr);
    });
  }
  for (
    const [arg, echoed] of [["ada", '"ada"'], ["-", '"-"'], ["1e3", "1000"], ['"12abc"', '"12abc"']]
  ) {
    await t.step(`${arg} is sent as ${echoed}`, async () => {
      const out = await cli(["call", "--port", port, "--ca", ca, "echo", arg!]);
      assert.equal(out.stdout, `${echoed}\n`, out.stderr);
    });
  }
});

Deno.test("cli call --get indexes Maps by key, JSON-parsed when it parses", async (t) => {
  await using server = await serve(handlers, serverOptions());
  const base = ["call", "--port", String(server.addr.port), "--ca", ca, "rich", "--get"];
  const cases: { path: string; stdout?: string; stderr?: RegExp }[] = [
    { path: "byKey.1", stdout: '"one"\n' },
    { path: 'byKey."1"', stdout: '"string one"\n' },
    { path: "byKey.2", stdout: '"two"\n' },
    { path: "byKey.k.x.0", stdout: "true\n" },
    { path: "bytes.-1", stdout: "3\n" },
    { path: "big", stdout: '{"$bigint":"12"}\n' },
    { path: "byKey.3", stderr: /^error: Cannot get "byKey\.3": "byKey" has no "3"\n$/ },
  ];
  for (const c of cases) {
    await t.step(c.path, async () => {
      const out = await cli([...base, c.path]);
      if (c.stdout !== undefined) assert.equal(out.stdout, c.stdout, out.stderr);
      else assertFailure(out, 1, c.stderr!);
    });
  }
});

Deno.test("cli --version prints deno.json's version; help COMMAND and COMMAND --help print that command's help", async (t) => {
  for (const flag of ["--version", "-V"]) {
    await t.step(flag, async () => {
      const out = await cli([flag], { permissions: [] });
      assert.equal(out.stdout, `tlsrpc ${config.version}\n`, out.stderr);
      assert.equal(out.code, 0);
    });
  }
  for (const command of ["serve", "call", "list", "describe", "cert"]) {
    await t.step(`help ${command}`, async () => {
      const [help, flag] = await Promise.all([
        cli(["help", command], { permissions: [] }),
        cli([command, "--help"], { permissions: [] }),
      ]);
      assert.equal(help.code, 0, help.stderr);
      assert.match(help.stdout, new RegExp(`^Usage: tlsrpc ${command}\\b`));
      assert.equal(help.stdout, flag.stdout);
      // Readable in an 80-column terminal, give or take the options' indent.
      const long = help.stdout.split("\n").filter((line) => line.length > 96);
      assert.deepEqual(long, []);
    });
  }
  await t.step("help with no command, and an unknown one", async () => {
    const main = await cli(["help"], { permissions: [] });
    assert.match(main.stdout, /^Commands:$/m);
    assert.match(main.stdout, /^ {2}describe METHOD/m);
    assertFailure(
      await cli(["help", "frobnicate"], { permissions: [] }),
      2,
      /^error: Cannot run "help frobnicate": unknown command \(run "help" to see the commands\)\n$/,
    );
  });
});

Deno.test("cli describe prints a method's parameters; list prints sum(...xs) and greeting?; list --json prints rpc.discover", async (t) => {
  await using server = await serve(handlers, serverOptions());
  const target = ["--port", String(server.addr.port), "--ca", ca];
  await t.step("list", async () => {
    const out = await cli(["list", ...target]);
    assert.equal(
      out.stdout,
      "greet(name, greeting?)\nsum(...xs)\necho(value)\nsleep(ms)\nrich()\nfail()\n",
      out.stderr,
    );
  });
  await t.step("list --json", async () => {
    const out = await cli(["list", ...target, "--json"]);
    const document = JSON.parse(out.stdout);
    assert.equal(document.openrpc, "1.3.2");
    assert.deepEqual(document.methods[1].params, [
      { name: "xs", schema: {}, required: false, "x-rest": true },
    ]);
  });
  await t.step("describe greet", async () => {
    const out = await cli(["describe", ...target, "greet"]);
    assert.equal(
      out.stdout,
      "greet(name, greeting?)\n  name      required\n  greeting  optional\n",
    );
  });
  await t.step("describe sum", async () => {
    const out = await cli(["describe", ...target, "sum"]);
    assert.equal(
      out.stdout,
      "sum(...xs)\n  ...xs  rest: takes any number of values, by position\n",
    );
  });
  await t.step("describe --json", async () => {
    const out = await cli(["describe", ...target, "--json", "rich"]);
    assert.deepEqual(JSON.parse(out.stdout).params, []);
  });
  await t.step("describe an unknown method", async () => {
    assertFailure(
      await cli(["describe", ...target, "gret"]),
      1,
      /^error: Cannot describe "gret": the server has no such method \(run "list" to see the methods\)\n$/,
    );
  });
});

// ---------------------------------------------------------------------------------------------
// Permissions

/** The kind a permission flag grants: `--allow-env=X` grants env. */
function kind(flag: string): string {
  return /^--allow-(\w+)/.exec(flag)![1]!;
}

Deno.test("cli serve, call and list run with the smallest permission sets, and without any one flag name the one to add", async (t) => {
  const module = `${root}examples/calc.ts`;
  const files = PERMISSIONS.files;
  await using server = await startServe([module, "--port", "0", "--cert", cert, "--key", key], {
    permissions: files,
  });
  const target = ["--port", String(server.port), "--ca", ca];
  await t.step(`serve --cert --key, call and list --ca with ${files.join(" ")}`, async () => {
    const call = await cli(["call", ...target, "add", "2", "3"], { permissions: files });
    assert.equal(call.stdout, "5\n", call.stderr);
    const list = await cli(["list", ...target], { permissions: files });
    assert.match(list.stdout, /^add\(a, b\)$/m, list.stderr);
  });
  for (const missing of files) {
    const fewer = files.filter((flag) => flag !== missing);
    await t.step(`call without ${missing}`, async () => {
      const out = await cli(["call", ...target, "add", "2", "3"], { permissions: fewer });
      assertFailure(out, 2, new RegExp(`--allow-${kind(missing)}`));
    });
    await t.step(`serve without ${missing}`, async () => {
      const args = ["serve", module, "--port", "0", "--cert", cert, "--key", key];
      const out = await cli(args, { permissions: fewer });
      assertFailure(out, 2, new RegExp(`--allow-${kind(missing)}`));
    });
  }
  const done = await server.stop();
  assert.equal(done.code, 0, done.stderr);
});

Deno.test("cli serve makes development certificates with --allow-write once, then reuses them without writing; call and list trust their CA", async (t) => {
  await using home = await tempDir();
  await Deno.chmod(home.path, 0o700);
  const module = `${root}examples/calc.ts`;
  const dev = PERMISSIONS.dev;
  const first = dev.filter((flag) => flag !== "--allow-sys=uid");
  await t.step(`first run: ${first.join(" ")} --allow-write=STATE`, async () => {
    const server = await startServe([module, "--port", "0"], {
      permissions: [...first, `--allow-write=${home.path}`],
      home: home.path,
    });
    const done = await server.stop();
    assert.equal(done.code, 0, done.stderr);
    assert.match(done.stderr, /^made a development CA and certificate in /m);
  });
  const listing = async () => {
    const entries = [];
    for await (const entry of Deno.readDir(`${home.path}/dev-certs`)) {
      const { mtime } = await Deno.stat(`${home.path}/dev-certs/${entry.name}`);
      entries.push(`${entry.name} ${mtime?.getTime()}`);
    }
    return entries.sort();
  };
  const before = await listing();
  await using server = await startServe([module, "--port", "0"], {
    permissions: dev,
    home: home.path,
  });
  await t.step(`later runs: ${dev.join(" ")}, nothing written`, () => {
    // A write would have failed under --no-prompt without --allow-write.
    assert.equal(server.port > 0, true);
  });
  const target = ["--port", String(server.port)];
  await t.step(`call and list without --ca: ${dev.join(" ")}`, async () => {
    const call = await cli(["call", ...target, "add", "2", "3"], {
      permissions: dev,
      home: home.path,
    });
    assert.equal(call.stdout, "5\n", call.stderr);
    const list = await cli(["list", ...target], { permissions: dev, home: home.path });
    assert.match(list.stdout, /^add\(a, b\)$/m, list.stderr);
  });
  await t.step("without --allow-sys=uid, call skips the development CA and says so", async () => {
    const out = await cli(["call", ...target, "add", "2", "3"], {
      permissions: first,
      home: home.path,
    });
    assertFailure(
      out,
      3,
      /the development CA was not tried: whether ".*dev-certs" is yours, and so safe to trust, is unknown; trusting it needs .*--allow-sys=uid\)\n$/,
    );
  });
  const done = await server.stop();
  assert.equal(done.code, 0, done.stderr);
  assert.match(done.stderr, /^using development certificates in /m);
  assert.deepEqual(await listing(), before, "the state folder was written to");
});

Deno.test("deno install -g makes a tlsrpc command that runs offline", async () => {
  await using dir = await tempDir();
  const flags = ["--allow-net", "--allow-read", `--allow-env=${STATE_ENV}`, "--allow-sys=uid"];
  const install = await new Deno.Command(Deno.execPath(), {
    args: ["install", "-g", "--root", dir.path, "-n", "tlsrpc", ...flags, "cli.ts"],
    cwd: root,
    stdin: "null",
  }).output();
  assert.equal(install.code, 0, decoder.decode(install.stderr));
  await using server = await serve(handlers, serverOptions());
  // Offline: any attempt to reach the network goes to a closed proxy.
  const env = {
    ...environment({}),
    PATH: `${Deno.execPath().replace(/\/[^/]*$/, "")}:${Deno.env.get("PATH") ?? ""}`,
    HTTP_PROXY: "http://127.0.0.1:9",
    HTTPS_PROXY: "http://127.0.0.1:9",
    DENO_NO_UPDATE_CHECK: "1",
  };
  const command = `${dir.path}/bin/tlsrpc`;
  const run = async (args: string[]) => {
    const out = await new Deno.Command(command, { args, env, clearEnv: true, cwd: dir.path })
      .output();
    return {
      code: out.code,
      stdout: decoder.decode(out.stdout),
      stderr: decoder.decode(out.stderr),
    };
  };
  const version = await run(["--version"]);
  assert.equal(version.stdout, `tlsrpc ${config.version}\n`, version.stderr);
  const call = await run(["call", "--port", String(server.addr.port), "--ca", ca, "sum", "1", "2"]);
  assert.equal(call.stdout, "3\n", call.stderr);
});
