// cli serve as a newcomer meets it: every check it makes before it listens (the certificate, key
// and CA files, the module, the certificate's dates) and every permission it lacks, each said in
// one line with what to do next. Each behaviour runs the CLI as a subprocess on real sockets; the
// development state folder is always a temporary one (TLSRPC_HOME), never the user's.

import assert from "node:assert/strict";
import { generateDevCertificates } from "../dev_cert.ts";
import { certFiles, root, tempDir } from "./_util.ts";
import {
  assertFailure,
  devHome,
  newcomerCli as cli,
  newcomerServe as startServe,
  PERMISSIONS,
  STATE_ENV,
} from "./_cli.ts";

const { ca, cert, key } = certFiles;

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
  const module = `${root.pathname}examples/calc.ts`;
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
    `${root.pathname}examples/calc.ts`,
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
  const base = [`${root.pathname}examples/calc.ts`, "--port", "0", "--no-token"];
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
