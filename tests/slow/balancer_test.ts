// deploy/haproxy.cfg and deploy/nginx.conf, tested with real processes on loopback: two
// `cli.ts serve` backends behind HAProxy or nginx, a client with `reconnect` calling through it,
// and the backends restarted one after the other (SIGTERM: rpc.goaway, drain, exit) or killed.
// HAProxy and nginx come from .ci/fetch_tools.sh; a missing one fails the test.

import assert from "node:assert/strict";
import { type ClientConnection, connect, type Dialer, type RpcClient } from "../../client.ts";
import {
  certs,
  closeQuietly,
  fakeTlsServer,
  root,
  type ServeProcess,
  startServe,
  until,
  within,
} from "../_util.ts";

const tools = new URL(".ci/cache/tools/", root);
const decoder = new TextDecoder();
const encoder = new TextEncoder();

/** The calling loops of the client under load: as many calls in flight at any time. */
const LOOPS = 6;

/** A file from .ci/fetch_tools.sh; fails the test when it is missing. */
function tool(path: string): string {
  const file = new URL(path, tools).pathname;
  try {
    Deno.statSync(file);
  } catch {
    assert.fail(`${file} is missing: run .ci/fetch_tools.sh`);
  }
  return file;
}

/** A port free on 127.0.0.1 a moment ago. */
function freePort(): number {
  using listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  return listener.addr.port;
}

// --- backends ------------------------------------------------------------------------------------

/** A `cli.ts serve tests/fixtures/balancer_backend.ts` process on a fixed port; disposing stops it. */
interface Backend extends AsyncDisposable {
  readonly name: string;
  readonly port: number;
  readonly process: ServeProcess;
  /** Its process id, from its own `served()`. */
  readonly pid: number;
}

/**
 * Asks the backend on `port` (or the one a balancer there picks), on a connection of its own,
 * which process it is and how many `add` calls it has served.
 */
async function served(port: number): Promise<{ pid: number; adds: number }> {
  await using client = await connect({
    hostname: "127.0.0.1",
    port,
    caCerts: [certs.ca],
    connectTimeout: 10_000,
  });
  const answer = await client.withOptions({ timeout: 10_000 }).call("served");
  return answer as { pid: number; adds: number };
}

async function startBackend(name: string, port: number): Promise<Backend> {
  const process = await startServe([
    "tests/fixtures/balancer_backend.ts",
    "--port",
    String(port),
    "--cert",
    "testdata/server.pem",
    "--key",
    "testdata/server.key",
  ]);
  const { pid } = await served(port);
  return { name, port, process, pid, [Symbol.asyncDispose]: () => process.stop().then(() => {}) };
}

// --- balancers -----------------------------------------------------------------------------------

/** HAProxy or nginx, started on loopback in front of two backends. */
interface Balancer extends AsyncDisposable {
  readonly name: string;
  /** The port clients connect to. */
  readonly port: number;
  /** What it has written to stderr so far, for failure messages. */
  log(): string;
  /** Resolves once new connections reach `backend` (restarted on its port) again. */
  waitRouting(backend: Backend): Promise<void>;
  /** Resolves once the balancer has seen that `backend` is gone, if it looks (HAProxy does). */
  waitGone?(backend: Backend): Promise<void>;
}

/** A child process whose stderr is collected; disposing it sends `signal` and awaits its exit. */
function spawnCollected(
  binary: string,
  args: string[],
  env: Record<string, string>,
): { child: Deno.ChildProcess; log(): string; stop(signal: Deno.Signal): Promise<void> } {
  const child = new Deno.Command(binary, {
    args,
    cwd: root.pathname,
    env,
    stdin: "null",
    stdout: "null",
    stderr: "piped",
  }).spawn();
  let stderr = "";
  const reading = child.stderr.pipeThrough(new TextDecoderStream()).pipeTo(
    new WritableStream({ write: (chunk) => void (stderr += chunk) }),
  );
  let stopping: Promise<void> | undefined;
  function stop(signal: Deno.Signal): Promise<void> {
    stopping ??= (async () => {
      try {
        child.kill(signal);
      } catch {
        // It has exited already.
      }
      // A guard, far above the moment either balancer takes to stop.
      const timer = setTimeout(() => {
        try {
          child.kill("SIGKILL");
        } catch {
          // It has exited meanwhile.
        }
      }, 10_000);
      await child.status;
      clearTimeout(timer);
      await reading;
    })();
    return stopping;
  }
  return { child, log: () => stderr, stop };
}

/** Sends `command` to HAProxy's admin socket and resolves with the whole answer. */
async function haproxyCommand(socket: string, command: string): Promise<string> {
  const conn = await Deno.connect({ transport: "unix", path: socket });
  try {
    await conn.write(encoder.encode(`${command}\n`));
    let text = "";
    const buffer = new Uint8Array(64 * 1024);
    // HAProxy answers in a few reads and closes; the bound only guards against a runaway.
    for (let reads = 0; reads < 1_000; reads++) {
      const count = await conn.read(buffer);
      if (count === null) break;
      text += decoder.decode(buffer.subarray(0, count));
    }
    return text;
  } finally {
    conn.close();
  }
}

/** The rows of HAProxy's `show stat`, each a map from column name to value. */
async function haproxyStats(socket: string): Promise<Map<string, string>[]> {
  const [header, ...lines] = (await haproxyCommand(socket, "show stat")).trim().split("\n");
  const columns = (header ?? "").replace(/^# /, "").split(",");
  return lines.map((line) => new Map(line.split(",").map((value, i) => [columns[i]!, value])));
}

/**
 * What HAProxy says of server `name`: `status` ("UP", "DOWN", "DOWN 1/2" while rising, ...) and
 * `check` (the last check's outcome: "L7OK", "L7RSP", "L6TOUT", ...); empty strings before the
 * admin socket answers.
 */
async function haproxyServer(
  socket: string,
  name: string,
): Promise<{ status: string; check: string }> {
  try {
    const row = (await haproxyStats(socket)).find((row) =>
      row.get("pxname") === "tlsrpc_servers" && row.get("svname") === name
    );
    return { status: row?.get("status") ?? "", check: row?.get("check_status") ?? "" };
  } catch {
    return { status: "", check: "" };
  }
}

/** HAProxy has checked server `name` and found it well: new connections may go there. */
async function haproxyRoutesTo(socket: string, name: string): Promise<boolean> {
  const { status, check } = await haproxyServer(socket, name);
  return status === "UP" && check === "L7OK";
}

/** Options of {@linkcode startHaproxy}. */
interface StartHaproxyOptions {
  /** Resolve once both servers have passed a check. @default true */
  waitUp?: boolean;
  /** The configuration file. @default "deploy/haproxy.cfg" */
  config?: string;
}

/**
 * HAProxy with deploy/haproxy.cfg as it is, the addresses in its environment, in front of the
 * servers on `ports.a` and `ports.b`.
 */
async function startHaproxy(
  ports: { a: number; b: number },
  options: StartHaproxyOptions = {},
): Promise<Balancer & { socket: string }> {
  const { waitUp = true, config = "deploy/haproxy.cfg" } = options;
  const binary = tool("bin/haproxy");
  const dir = await Deno.makeTempDir({ prefix: "tlsrpc_haproxy_" });
  const socket = `${dir}/admin.sock`;
  const port = freePort();
  const process = spawnCollected(binary, [
    "-f",
    config,
    "-db",
    "-p",
    `${dir}/haproxy.pid`,
  ], {
    TLSRPC_FRONT: `127.0.0.1:${port}`,
    TLSRPC_BACKEND_A: `127.0.0.1:${ports.a}`,
    TLSRPC_BACKEND_B: `127.0.0.1:${ports.b}`,
    TLSRPC_STATS: socket,
  });
  const balancer: Balancer & { socket: string } = {
    name: "HAProxy",
    port,
    socket,
    log: process.log,
    async waitRouting(backend) {
      // leastconn sends new connections to a server as soon as its checks mark it UP.
      await until(
        () => haproxyRoutesTo(socket, backend.name),
        `HAProxy marks server ${backend.name} UP\n${process.log()}`,
        20_000,
      );
    },
    async waitGone(backend) {
      await until(
        async () => (await haproxyServer(socket, backend.name)).status.startsWith("DOWN"),
        `HAProxy marks server ${backend.name} DOWN\n${process.log()}`,
        20_000,
      );
    },
    async [Symbol.asyncDispose]() {
      // SIGTERM stops at once; SIGUSR1 would wait for the clients' connections to end.
      await process.stop("SIGTERM");
      await Deno.remove(dir, { recursive: true });
    },
  };
  try {
    // Servers start UP, before any check: wait for a check that passed.
    if (waitUp) {
      for (const name of ["a", "b"]) {
        await until(
          () => haproxyRoutesTo(socket, name),
          `HAProxy checks server ${name} and finds it well\n${process.log()}`,
          20_000,
        );
      }
    }
  } catch (error) {
    await balancer[Symbol.asyncDispose]();
    throw error;
  }
  return balancer;
}

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
  const process = spawnCollected(binary, nginxArgs(dir, config), {});
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

/** A TCP server from {@linkcode silentTcpServer}. */
interface SilentTcpServer extends AsyncDisposable {
  readonly port: number;
  /** The first bytes (one read, at most 256) of each connection that sent any, in order. */
  readonly firstBytes: Uint8Array[];
}

/**
 * A TCP listener on 127.0.0.1 that accepts connections, records what each sends first, and never
 * writes: not a TLS server, nor anything else.
 */
function silentTcpServer(): SilentTcpServer {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const conns: Deno.Conn[] = [];
  const reads: Promise<void>[] = [];
  const firstBytes: Uint8Array[] = [];
  async function readFirst(conn: Deno.Conn): Promise<void> {
    const buffer = new Uint8Array(256);
    const count = await conn.read(buffer).catch(() => null);
    if (count !== null) firstBytes.push(buffer.slice(0, count));
  }
  const accepting = (async () => {
    for (;;) {
      let conn: Deno.Conn;
      try {
        conn = await listener.accept();
      } catch {
        return;
      }
      conns.push(conn);
      reads.push(readFirst(conn));
    }
  })();
  return {
    port: listener.addr.port,
    firstBytes,
    async [Symbol.asyncDispose]() {
      closeQuietly(listener);
      await accepting;
      for (const conn of conns) closeQuietly(conn);
      await Promise.all(reads);
    },
  };
}

/** `config` with its active `default-server` line replaced by `line` (the part after the keyword). */
function withDefaultServer(config: string, line: string): string {
  assert.match(config, /^ +default-server check .*$/m, "the default-server line");
  return config.replace(
    /^( +)default-server check .*$/m,
    (_, indent) => `${indent}default-server ${line}`,
  );
}

/** deploy/haproxy.cfg with its commented PROXY protocol lines in force. */
function haproxyProxyVariant(config: string): string {
  const connect = /^ +# +(tcp-check connect ssl send-proxy)$/m.exec(config)?.[1];
  const server = /^ +# +default-server (check .*send-proxy-v2.*)$/m.exec(config)?.[1];
  assert.ok(connect !== undefined && server !== undefined, "the PROXY protocol lines");
  assert.match(config, /^ +tcp-check connect ssl$/m, "the tcp-check connect line");
  return withDefaultServer(
    config.replace(/^( +)tcp-check connect ssl$/m, (_, indent) => `${indent}${connect}`),
    server,
  );
}

/** deploy/nginx.conf with its commented `proxy_protocol on;` in force. */
function nginxProxyVariant(text: string): string {
  assert.match(text, /^ +# proxy_protocol on;$/m, "the proxy_protocol line");
  return text.replace("# proxy_protocol on;", "proxy_protocol on;");
}

/** The PROXY protocol v2 signature, the first 12 bytes of its header. */
const PROXY_V2_SIGNATURE = [0x0d, 0x0a, 0x0d, 0x0a, 0x00, 0x0d, 0x0a, 0x51, 0x55, 0x49, 0x54, 0x0a];

// --- load ----------------------------------------------------------------------------------------

/** What a load run did. */
interface Figures {
  made: number;
  failed: number;
  ms: number;
  errors: string[];
}

/** What a client's connections brought: rpc.goaway notifications and -32001 answers. */
interface Tap {
  goaways: number;
  shuttingDown: number;
}

const latin1 = new TextDecoder("latin1");
const GOAWAY = /"method":\s*"rpc\.goaway"/g;
const SHUTTING_DOWN = /"code":\s*-32001\b/g;

function occurrences(text: string, pattern: RegExp): number {
  return text.match(pattern)?.length ?? 0;
}

/**
 * The client's default dial (TCP without Nagle, then TLS with the test CA), with the bytes it
 * reads counted into `tap`, so that a test can tell what the client saw. A match may straddle two
 * reads: the last bytes of the previous read are scanned again, and matches within them alone
 * are not counted twice.
 */
function tappedDial(tap: Tap): Dialer {
  return async (signal, { hostname, port }) => {
    const tcp = await Deno.connect({ hostname, port });
    tcp.setNoDelay(true);
    const tls = await Deno.startTls(tcp, { hostname, caCerts: [certs.ca] });
    const onAbort = () => closeQuietly(tls);
    signal.addEventListener("abort", onAbort, { once: true });
    try {
      await tls.handshake();
    } catch (error) {
      closeQuietly(tls);
      throw error;
    } finally {
      signal.removeEventListener("abort", onAbort);
    }
    let tail = "";
    const connection: ClientConnection = {
      async read(buffer) {
        const count = await tls.read(buffer);
        if (count !== null) {
          const text = tail + latin1.decode(buffer.subarray(0, count));
          tap.goaways += occurrences(text, GOAWAY) - occurrences(tail, GOAWAY);
          tap.shuttingDown += occurrences(text, SHUTTING_DOWN) - occurrences(tail, SHUTTING_DOWN);
          tail = text.slice(-64);
        }
        return count;
      },
      write: (bytes) => tls.write(bytes),
      close: () => closeQuietly(tls),
    };
    return connection;
  };
}

/**
 * `LOOPS` loops of plain (not idempotent) `add` calls on `client`, each checking its answer, until
 * stopped. With `slowMs`, every other loop calls `slowAdd`, which answers after `slowMs`, so that
 * calls are still running when a backend is told to stop.
 */
function startLoad(
  client: RpcClient,
  slowMs = 0,
): { readonly ok: number; stop(): Promise<Figures> } {
  const caller = client.withOptions({ timeout: 30_000 });
  const started = performance.now();
  let stopped = false;
  let made = 0;
  let ok = 0;
  const errors: string[] = [];
  const loops = Array.from({ length: LOOPS }, async (_, loop) => {
    // The stop ends each loop; the bound only keeps a runaway finite.
    for (let i = 0; !stopped && i < 10_000_000; i++) {
      const a = loop * 10_000_000 + i;
      const slow = slowMs > 0 && loop % 2 === 0;
      const call = slow ? `slowAdd(${a}, 1, ${slowMs})` : `add(${a}, 1)`;
      made++;
      try {
        const sum = await (slow ? caller.call("slowAdd", a, 1, slowMs) : caller.call("add", a, 1));
        if (sum === a + 1) ok++;
        else errors.push(`${call} answered ${JSON.stringify(sum)}`);
      } catch (error) {
        errors.push(
          `${call}: ${error instanceof Error ? `${error.name}: ${error.message}` : error}`,
        );
      }
    }
  });
  return {
    get ok() {
      return ok;
    },
    async stop() {
      stopped = true;
      await Promise.all(loops);
      return { made, failed: errors.length, ms: Math.round(performance.now() - started), errors };
    },
  };
}

/** Waits until `load` has made `more` successful calls beyond what it had. */
async function callsSucceed(
  load: { readonly ok: number },
  more: number,
  what: string,
): Promise<void> {
  const target = load.ok + more;
  await until(() => load.ok >= target, `${more} more calls succeed ${what}`, 30_000);
}

/** A client through a balancer, and what it saw. */
interface Observed {
  client: RpcClient;
  tap: Tap;
  reconnects(): number;
}

/**
 * Connects a client through the balancer, with `reconnect`, counting its reconnections and what
 * its connections brought.
 */
async function connectThrough(balancer: Balancer): Promise<Observed> {
  let reconnects = 0;
  const tap: Tap = { goaways: 0, shuttingDown: 0 };
  const client = await connect({
    hostname: "127.0.0.1",
    port: balancer.port,
    reconnect: true,
    onReconnect: () => void reconnects++,
    dial: tappedDial(tap),
  });
  return { client, tap, reconnects: () => reconnects };
}

/**
 * Restarts backend A, then B, under load from one client through the balancer: SIGTERM, wait for
 * the exit, start again on the same port, wait until the balancer routes to it. No call may fail,
 * and each new process must serve calls.
 */
async function rollingRestart(
  startBalancer: (ports: { a: number; b: number }) => Promise<Balancer>,
  slowMs = 0,
): Promise<void> {
  const backends = [await startBackend("a", freePort()), await startBackend("b", freePort())];
  try {
    await using balancer = await startBalancer({ a: backends[0]!.port, b: backends[1]!.port });
    const { client, tap, reconnects } = await connectThrough(balancer);
    await using _client = client;
    const load = startLoad(client, slowMs);
    let late: Observed | undefined;
    let lateLoad: ReturnType<typeof startLoad> | undefined;
    const steps: string[] = [];
    let figures: Figures;
    let lateFigures: Figures | undefined;
    try {
      await callsSucceed(load, 200, "before the restart");
      for (const [i, old] of backends.entries()) {
        const t0 = performance.now();
        const output = await within(old.process.stop(), `backend ${old.name} exits`, 30_000);
        assert.equal(output.code, 0, `backend ${old.name} exits 0 after SIGTERM: ${output.stderr}`);
        const t1 = performance.now();
        await balancer.waitGone?.(old);
        const t2 = performance.now();
        const fresh = backends[i] = await startBackend(old.name, old.port);
        await balancer.waitRouting(fresh);
        const t3 = performance.now();
        steps.push(
          `${old.name}: drained and exited in ${Math.round(t1 - t0)} ms` +
            (balancer.waitGone ? `, marked down ${Math.round(t2 - t1)} ms later` : "") +
            `, started again and routed to in ${Math.round(t3 - t2)} ms`,
        );
        await callsSucceed(load, 200, `after backend ${old.name} came back`);
      }
      // The client's connection went to A's new process when B stopped, and stays there; a
      // second client lands on B's new one (fewest connections), so that both serve calls.
      late = await connectThrough(balancer);
      lateLoad = startLoad(late.client);
      await until(
        async () => (await served(backends[1]!.port)).adds > 0,
        "a second client's calls reach B's new process",
        30_000,
      );
    } finally {
      figures = await load.stop();
      lateFigures = await lateLoad?.stop();
      await late?.client.close();
    }
    const counts = await Promise.all(backends.map((backend) => served(backend.port)));
    console.log(
      [
        `${balancer.name} rolling restart, one client, ${LOOPS} loops of plain ` +
        (slowMs > 0 ? `add and slowAdd (${slowMs} ms) calls:` : "add calls:"),
        `  calls made ${figures.made}, failed ${figures.failed}, in ${figures.ms} ms`,
        `  the client heard rpc.goaway ${tap.goaways} times, reconnected ${reconnects()} times, ` +
        `and had ${tap.shuttingDown} calls answered -32001 (and sent again)`,
        ...steps.map((step) => `  ${step}`),
        `  second client afterwards: calls made ${lateFigures?.made}, failed ${lateFigures?.failed}`,
        ...counts.map((count, i) =>
          `  new process of ${backends[i]!.name} (pid ${count.pid}) served ${count.adds} add calls`
        ),
      ].join("\n"),
    );
    assert.deepEqual(figures.errors.slice(0, 10), [], `no call fails\n${balancer.log()}`);
    assert.deepEqual(lateFigures?.errors.slice(0, 10), [], "no call of the second client fails");
    // Its backend stopped at least once (B, if not A before), and it moved on.
    assert.ok(tap.goaways >= 1, "the client heard rpc.goaway");
    assert.ok(reconnects() >= tap.goaways, "the client reconnected after each rpc.goaway");
    for (const [i, count] of counts.entries()) {
      assert.ok(count.adds > 0, `backend ${backends[i]!.name} served calls after its restart`);
    }
  } finally {
    await Promise.all(backends.map((backend) => backend.process.stop()));
  }
}

// --- tests ---------------------------------------------------------------------------------------

Deno.test("deploy/haproxy.cfg passes haproxy -c, and so does its PROXY protocol variant", async (t) => {
  const binary = tool("bin/haproxy");
  const config = await Deno.readTextFile(new URL("deploy/haproxy.cfg", root));
  const dir = await Deno.makeTempDir({ prefix: "tlsrpc_haproxy_" });
  try {
    const cases = [
      { name: "as it is, with its defaults", text: config, env: {} },
      {
        name: "as it is, with addresses from the environment",
        text: config,
        env: {
          TLSRPC_FRONT: "127.0.0.1:17443",
          TLSRPC_BACKEND_A: "127.0.0.1:17444",
          TLSRPC_BACKEND_B: "[::1]:17445",
          TLSRPC_STATS: `${dir}/admin.sock`,
        },
      },
      { name: "with PROXY protocol v2", text: haproxyProxyVariant(config), env: {} },
    ];
    for (const { name, text, env } of cases) {
      await t.step(name, async () => {
        await Deno.writeTextFile(`${dir}/haproxy.cfg`, text);
        const output = await new Deno.Command(binary, {
          args: ["-c", "-f", `${dir}/haproxy.cfg`],
          env,
          stdout: "piped",
          stderr: "piped",
        }).output();
        const report = decoder.decode(output.stdout) + decoder.decode(output.stderr);
        assert.equal(output.code, 0, report);
        assert.match(report, /Configuration file is valid/);
      });
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("deploy/haproxy.cfg's health check sends a framed rpc.ping and expects pong", async () => {
  const config = await Deno.readTextFile(new URL("deploy/haproxy.cfg", root));
  const hex = /^ +tcp-check send-binary ([0-9a-f]+)$/m.exec(config)?.[1];
  assert.ok(hex !== undefined, "the send-binary line");
  const bytes = Uint8Array.from(hex.match(/../g)!, (pair) => parseInt(pair, 16));
  const payload = '{"jsonrpc":"2.0","id":1,"method":"rpc.ping"}';
  assert.equal(new DataView(bytes.buffer).getUint32(0), payload.length);
  assert.equal(decoder.decode(bytes.subarray(4)), payload);
  assert.match(config, /^ +tcp-check connect ssl$/m);
  assert.match(config, /^ +tcp-check expect string pong$/m);
});

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

Deno.test("HAProxy's health check passes a tlsrpc server and fails what only looks like one", async (t) => {
  await using backend = await startBackend("a", freePort());
  const cases: {
    name: string;
    start: () => AsyncDisposable & { port: number };
    check: RegExp;
  }[] = [
    {
      name: "a TLS server that answers rpc.ping with an error",
      start: () =>
        fakeTlsServer(async (peer) => {
          await peer.receive();
          await peer.send({ jsonrpc: "2.0", id: 1, error: { code: -32601, message: "Nope" } });
          await peer.closedByServer();
        }),
      // A check whose expect does not match waits for more bytes until `timeout check`, unless the
      // server closes: then it is L7RSP.
      check: /^L7(RSP|TOUT)$/,
    },
    {
      name: "a TLS server that says nothing",
      start: () => fakeTlsServer((peer) => peer.closedByServer()),
      check: /^L7TOUT$/,
    },
    {
      name: "a TCP server that accepts and says nothing",
      start: () => silentTcpServer(),
      check: /^L[46]/,
    },
  ];
  for (const { name, start, check } of cases) {
    await t.step(name, async () => {
      await using impostor = start();
      await using balancer = await startHaproxy({ a: backend.port, b: impostor.port }, {
        waitUp: false,
      });
      await until(
        async () => (await haproxyServer(balancer.socket, "b")).status.startsWith("DOWN"),
        `HAProxy marks the impostor DOWN\n${balancer.log()}`,
        20_000,
      );
      assert.match((await haproxyServer(balancer.socket, "b")).check, check);
      await until(
        () => haproxyRoutesTo(balancer.socket, "a"),
        `HAProxy finds the real server well\n${balancer.log()}`,
        20_000,
      );
      // Every new connection goes to the real server.
      for (let i = 0; i < 3; i++) assert.equal((await served(balancer.port)).pid, backend.pid);
    });
  }
});

Deno.test("deploy/haproxy.cfg's CA variant checks the server's chain and name", async (t) => {
  const config = await Deno.readTextFile(new URL("deploy/haproxy.cfg", root));
  const verified = /^ +# +default-server (check .*verify required.*)$/m.exec(config)?.[1];
  assert.ok(verified !== undefined, "the CA variant's default-server line");
  await using backend = await startBackend("a", freePort());
  const dir = await Deno.makeTempDir({ prefix: "tlsrpc_haproxy_" });
  try {
    const cases = [
      { name: "the test CA and the name localhost pass", ca: "ca.pem", host: "localhost" },
      { name: "another name fails", ca: "ca.pem", host: "wrong.example" },
      { name: "another CA fails", ca: "server.pem", host: "localhost" },
    ];
    for (const { name, ca, host } of cases) {
      await t.step(name, async () => {
        const file = `${dir}/haproxy.cfg`;
        const caFile = new URL(`testdata/${ca}`, root).pathname;
        const line = verified.replace("/etc/tlsrpc/ca.pem", caFile).replace(
          "rpc.example.com",
          host,
        );
        await Deno.writeTextFile(file, withDefaultServer(config, line));
        await using balancer = await startHaproxy({ a: backend.port, b: backend.port }, {
          waitUp: false,
          config: file,
        });
        const pass = ca === "ca.pem" && host === "localhost";
        await until(
          async () => {
            const { status, check } = await haproxyServer(balancer.socket, "a");
            return pass ? status === "UP" && check === "L7OK" : status.startsWith("DOWN");
          },
          `HAProxy marks the server ${pass ? "UP" : "DOWN"}\n${balancer.log()}`,
          20_000,
        );
        if (!pass) assert.equal((await haproxyServer(balancer.socket, "a")).check, "L6RSP");
      });
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("deploy/haproxy.cfg's PROXY variant sends a v2 header on checks and on traffic", async () => {
  const config = await Deno.readTextFile(new URL("deploy/haproxy.cfg", root));
  await using sniffer = silentTcpServer();
  const dir = await Deno.makeTempDir({ prefix: "tlsrpc_haproxy_" });
  try {
    await Deno.writeTextFile(`${dir}/haproxy.cfg`, haproxyProxyVariant(config));
    await using balancer = await startHaproxy({ a: sniffer.port, b: sniffer.port }, {
      waitUp: false,
      config: `${dir}/haproxy.cfg`,
    });
    await until(() => sniffer.firstBytes.length > 0, `a health check\n${balancer.log()}`, 20_000);
    const check = sniffer.firstBytes[0]!;
    assert.deepEqual([...check.subarray(0, 12)], PROXY_V2_SIGNATURE, "a v2 header");
    // Version 2, LOCAL (the proxy's own connection), no address; the TLS ClientHello follows.
    assert.deepEqual([...check.subarray(12, 16)], [0x20, 0x00, 0x00, 0x00], "v2 LOCAL, no address");
    // The sniffer fails its checks: turn them off for server a and call it up, so that HAProxy
    // relays to it.
    await haproxyCommand(balancer.socket, "disable health tlsrpc_servers/a");
    await haproxyCommand(balancer.socket, "set server tlsrpc_servers/a health up");
    await until(
      async () => (await haproxyServer(balancer.socket, "a")).status === "no check",
      `server a up without checks\n${balancer.log()}`,
      20_000,
    );
    const seen = sniffer.firstBytes.length;
    using conn = await Deno.connect({ hostname: "127.0.0.1", port: balancer.port });
    await conn.write(encoder.encode("hello"));
    await until(
      () => sniffer.firstBytes.slice(seen).some((bytes) => bytes[12] === 0x21),
      `the relayed connection\n${balancer.log()}`,
      20_000,
    );
    const relayed = sniffer.firstBytes.slice(seen).find((bytes) => bytes[12] === 0x21)!;
    assert.deepEqual([...relayed.subarray(0, 12)], PROXY_V2_SIGNATURE, "a v2 header");
    // Version 2, PROXY, TCP over IPv4, 12 bytes: source 127.0.0.1 and the client's own port.
    const view = new DataView(relayed.buffer, relayed.byteOffset);
    assert.deepEqual([...relayed.subarray(13, 20)], [0x11, 0x00, 0x0c, 127, 0, 0, 1]);
    assert.equal(view.getUint16(24), conn.localAddr.port, "the client's port");
    assert.equal(view.getUint16(26), balancer.port, "the frontend's port");
  } finally {
    await Deno.remove(dir, { recursive: true });
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

Deno.test("a rolling restart behind HAProxy loses no call of a client with reconnect", async () => {
  await rollingRestart((ports) => startHaproxy(ports));
});

Deno.test("a rolling restart behind HAProxy lets the calls running on a stopping backend finish", async () => {
  await rollingRestart((ports) => startHaproxy(ports), 300);
});

Deno.test("a backend killed behind HAProxy costs at most the calls in flight on it", async () => {
  const backends = [await startBackend("a", freePort()), await startBackend("b", freePort())];
  try {
    await using balancer = await startHaproxy({ a: backends[0]!.port, b: backends[1]!.port });
    const { client, reconnects } = await connectThrough(balancer);
    await using _client = client;
    const load = startLoad(client);
    let figures: Figures | undefined;
    let victim: Backend | undefined;
    let okAtKill = 0;
    try {
      await callsSucceed(load, 200, "before the kill");
      // The backend the client's connection went to: the one whose count grows.
      const pid = ((await client.call("served")) as { pid: number }).pid;
      victim = backends.find((backend) => backend.pid === pid);
      assert.ok(victim !== undefined, `the client's backend is one of ours (pid ${pid})`);
      okAtKill = load.ok;
      Deno.kill(victim.pid, "SIGKILL");
      const output = await within(victim.process.stop(), "the killed backend's exit", 10_000);
      assert.equal(output.code, 137, `SIGKILL ends backend ${victim.name}: ${output.stderr}`);
      await callsSucceed(load, 1_000, "after the kill");
    } finally {
      figures = await load.stop();
      console.log(
        [
          `HAProxy, backend ${victim?.name ?? "?"} killed (SIGKILL) under load, ${LOOPS} loops:`,
          `  calls made ${figures.made}, failed ${figures.failed}, in ${figures.ms} ms` +
          `, reconnections ${reconnects()}, ${load.ok - okAtKill} succeeded after the kill`,
          ...figures.errors.map((error) => `  failed: ${error}`),
        ].join("\n"),
      );
    }
    assert.ok(
      figures.failed <= LOOPS,
      `at most the ${LOOPS} calls in flight fail: ${figures.errors.join("\n")}\n${balancer.log()}`,
    );
    for (const error of figures.errors) assert.match(error, /ConnectionError/);
    const survivor = backends.find((backend) => backend !== victim)!;
    assert.ok((await served(survivor.port)).adds > 0, "the other backend took the calls");
  } finally {
    await Promise.all(backends.map((backend) => backend.process.stop()));
  }
});

Deno.test("a rolling restart behind nginx loses no call of a client with reconnect", async () => {
  await rollingRestart(startNginx);
});
