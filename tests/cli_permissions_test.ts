// The CLI's permissions as a newcomer meets them: the smallest sets the README shows, the flag to
// add when one is missing, development certificates made once and then reused without writing,
// and `deno install` for a command that runs offline. Each behaviour runs the CLI as a subprocess
// on real sockets; the development state folder is always a temporary one (TLSRPC_HOME), never
// the user's.

import assert from "node:assert/strict";
import { serve } from "../server.ts";
import config from "../deno.json" with { type: "json" };
import { certFiles, root, serverOptions, tempDir } from "./_util.ts";
import {
  assertFailure,
  childEnv,
  newcomerCli as cli,
  newcomerHandlers as handlers,
  newcomerRunOptions,
  newcomerServe as startServe,
  PERMISSIONS,
  STATE_ENV,
} from "./_cli.ts";

const { ca, cert, key } = certFiles;
const decoder = new TextDecoder();

// ---------------------------------------------------------------------------------------------
// Permissions

/** The kind a permission flag grants: `--allow-env=X` grants env. */
function kind(flag: string): string {
  return /^--allow-(\w+)/.exec(flag)![1]!;
}

Deno.test("cli serve, call and list run with the smallest permission sets, and without any one flag name the one to add", async (t) => {
  const module = `${root.pathname}examples/calc.ts`;
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
  const module = `${root.pathname}examples/calc.ts`;
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
    cwd: root.pathname,
    stdin: "null",
  }).output();
  assert.equal(install.code, 0, decoder.decode(install.stderr));
  await using server = await serve(handlers, serverOptions());
  // Offline: any attempt to reach the network goes to a closed proxy.
  const env = {
    ...childEnv(true, newcomerRunOptions().env),
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
