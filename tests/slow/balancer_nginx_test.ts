// deploy/nginx.conf, tested with real processes on loopback: `nginx -t` on it and its PROXY
// protocol variant, the PROXY v1 header it sends, and two `cli.ts serve` backends behind it
// restarted one after the other (SIGTERM: rpc.goaway, drain, exit) while a client with
// `reconnect` calls through it. nginx comes from .ci/fetch_tools.sh; a missing one fails the test.

import assert from "node:assert/strict";
import { freePort, root, until } from "../_util.ts";
import { spawnCollected, tool } from "../_tools.ts";
import { type Balancer, latin1, rollingRestart, served, silentTcpServer } from "./_balancer.ts";

const decoder = new TextDecoder();
const encoder = new TextEncoder();

// --- nginx ---------------------------------------------------------------------------------------

/** The stream module's path where Debian installs it, as deploy/nginx.conf loads it. */
const DEBIAN_STREAM_MODULE = "/usr/lib/nginx/modules/ngx_stream_module.so";

/**
 * deploy/nginx.conf rendered as its header says (envsubst of the three addresses), the stream
 * module loaded from .ci/cache/tools instead of /usr, with `edit` applied to the text first.
 */
async function renderNginxConf(
  dir: string,
  vars: Record<string, string>,
  edit: (text: string) => string = (text) => text,
): Promise<string> {
  let text = edit(await Deno.readTextFile(new URL("deploy/nginx.conf", root)));
  assert.ok(text.includes(`load_module ${DEBIAN_STREAM_MODULE};`), "the load_module line");
  text = text.replace(DEBIAN_STREAM_MODULE, tool("usr/lib/nginx/modules/ngx_stream_module.so"));
  text = text.replace(/\$\{(TLSRPC_\w+)\}/g, (_, name: string) => {
    assert.ok(name in vars, `nginx.conf uses \${${name}}, which the test does not set`);
    return vars[name]!;
  });
  const file = `${dir}/nginx.conf`;
  await Deno.writeTextFile(file, text);
  return file;
}

/** The nginx arguments that keep everything in `dir`: prefix, pid file, foreground. */
function nginxArgs(dir: string, config: string): string[] {
  return ["-p", `${dir}/`, "-c", config, "-e", "stderr", "-g", `daemon off; pid ${dir}/nginx.pid;`];
}

/**
 * nginx with deploy/nginx.conf rendered for the servers on `ports.a` and `ports.b`, `edit`
 * applied to its text first.
 */
async function startNginx(
  ports: { a: number; b: number },
  edit?: (text: string) => string,
): Promise<Balancer> {
  const binary = tool("bin/nginx");
  const dir = await Deno.makeTempDir({ prefix: "tlsrpc_nginx_" });
  const port = freePort();
  const config = await renderNginxConf(dir, {
    TLSRPC_FRONT: `127.0.0.1:${port}`,
    TLSRPC_BACKEND_A: `127.0.0.1:${ports.a}`,
    TLSRPC_BACKEND_B: `127.0.0.1:${ports.b}`,
  }, edit);
  const process = spawnCollected(binary, nginxArgs(dir, config));
  const balancer: Balancer = {
    name: "nginx",
    port,
    log: process.log,
    async waitRouting(backend) {
      // nginx checks nothing by itself: a connection through it must reach the backend. With
      // least_conn, a fresh one goes to the backend without the client's connection.
      await until(
        async () => {
          try {
            return (await served(port)).pid === backend.pid;
          } catch {
            return false;
          }
        },
        `a new connection through nginx reaches backend ${backend.name}\n${process.log()}`,
        20_000,
      );
    },
    async [Symbol.asyncDispose]() {
      // SIGTERM is nginx's fast shutdown; SIGQUIT would wait for the connections to end.
      await process.stop("SIGTERM");
      await Deno.remove(dir, { recursive: true });
    },
  };
  try {
    await until(
      async () => {
        try {
          (await Deno.connect({ hostname: "127.0.0.1", port })).close();
          return true;
        } catch {
          return false;
        }
      },
      `nginx listens on ${port}\n${process.log()}`,
      20_000,
    );
  } catch (error) {
    await balancer[Symbol.asyncDispose]();
    throw error;
  }
  return balancer;
}

/** deploy/nginx.conf with its commented `proxy_protocol on;` in force. */
function nginxProxyVariant(text: string): string {
  assert.match(text, /^ +# proxy_protocol on;$/m, "the proxy_protocol line");
  return text.replace("# proxy_protocol on;", "proxy_protocol on;");
}

// --- tests ---------------------------------------------------------------------------------------

Deno.test("deploy/nginx.conf passes nginx -t, and so does its PROXY protocol variant", async (t) => {
  const binary = tool("bin/nginx");
  const vars = {
    TLSRPC_FRONT: "127.0.0.1:17443",
    TLSRPC_BACKEND_A: "127.0.0.1:17444",
    TLSRPC_BACKEND_B: "[::1]:17445",
  };
  const cases = [
    { name: "rendered as its header says", edit: undefined },
    { name: "with proxy_protocol on", edit: nginxProxyVariant },
  ];
  for (const { name, edit } of cases) {
    await t.step(name, async () => {
      const dir = await Deno.makeTempDir({ prefix: "tlsrpc_nginx_" });
      try {
        const config = await renderNginxConf(dir, vars, edit);
        const output = await new Deno.Command(binary, {
          args: ["-t", ...nginxArgs(dir, config)],
          stdout: "piped",
          stderr: "piped",
        }).output();
        const report = decoder.decode(output.stdout) + decoder.decode(output.stderr);
        assert.equal(output.code, 0, report);
        assert.match(report, /test is successful/);
      } finally {
        await Deno.remove(dir, { recursive: true });
      }
    });
  }
});

Deno.test("deploy/nginx.conf's PROXY variant sends a v1 header with the client's address", async () => {
  await using sniffer = silentTcpServer();
  await using balancer = await startNginx({ a: sniffer.port, b: sniffer.port }, nginxProxyVariant);
  // startNginx's own probes of the port reached the sniffer too: look at what comes after.
  const seen = sniffer.firstBytes.length;
  using conn = await Deno.connect({ hostname: "127.0.0.1", port: balancer.port });
  await conn.write(encoder.encode("hello"));
  const expected = `PROXY TCP4 127.0.0.1 127.0.0.1 ${conn.localAddr.port} ${balancer.port}\r\n`;
  await until(
    () => sniffer.firstBytes.slice(seen).some((bytes) => latin1.decode(bytes).startsWith(expected)),
    `a connection that starts with ${JSON.stringify(expected)}: ${
      JSON.stringify(sniffer.firstBytes.map((bytes) => latin1.decode(bytes)))
    }\n${balancer.log()}`,
    20_000,
  );
});

Deno.test("a rolling restart behind nginx loses no call of a client with reconnect", async () => {
  await rollingRestart(startNginx);
});
