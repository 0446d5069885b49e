// The CLI's everyday use as a newcomer meets it: the whole error and results as JSON (or readable
// text on a terminal), --params, ARGs, --timeout 0, --get on Maps, --version and help, describe
// and list. Each behaviour runs the CLI as a subprocess on real sockets; the development state
// folder is always a temporary one (TLSRPC_HOME), never the user's.

import assert from "node:assert/strict";
import { serve } from "../server.ts";
import config from "../deno.json" with { type: "json" };
import { certFiles, root, serverOptions, tempDir } from "./_util.ts";
import {
  assertFailure,
  childEnv,
  cliArgs,
  newcomerCli as cli,
  newcomerHandlers as handlers,
  newcomerRunOptions,
  type Output,
} from "./_cli.ts";

const { ca } = certFiles;
const decoder = new TextDecoder();

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
  const { permissions, env } = newcomerRunOptions();
  const quoted = [Deno.execPath(), ...cliArgs(args, permissions)]
    .map((arg) => `'${arg.replaceAll("'", `'\\''`)}'`)
    .join(" ");
  const output = await new Deno.Command("script", {
    args: ["-qec", quoted, "/dev/null"],
    cwd: root.pathname,
    clearEnv: true,
    env: childEnv(true, env),
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
