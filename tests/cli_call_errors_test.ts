// cli call and list as a newcomer meets them: every way a call fails (an untrusted certificate, a
// port that is not TLS, nothing listening, a token or client certificate refused, a method or
// parameter wrong, an unsafe state folder) said in plain words with what to do next. Each runs the
// CLI as a subprocess on real sockets; the development state folder is always a temporary one
// (TLSRPC_HOME), never the user's.

import assert from "node:assert/strict";
import { generateDevCertificates } from "../dev_cert.ts";
import { serve } from "../server.ts";
import { certFiles, freePort, root, serverOptions, tempDir } from "./_util.ts";
import {
  assertFailure,
  devHome,
  newcomerCli as cli,
  newcomerHandlers as handlers,
  type NewcomerOptions,
  PERMISSIONS,
} from "./_cli.ts";

const { ca } = certFiles;

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
  const closedPort = String(freePort());
  const at = (server: { addr: Deno.NetAddr } | { port: number }) =>
    String("addr" in server ? server.addr.port : server.port);
  const cases: {
    name: string;
    args: string[];
    options?: NewcomerOptions;
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
    ["serve", ["serve", `${root.pathname}examples/calc.ts`, "--port", "0", "--no-token"]],
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
