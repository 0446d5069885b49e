// deploy/haproxy.cfg, tested with real processes on loopback: `haproxy -c` on it and its variants,
// its health check against a real server and impostors, its CA and PROXY protocol variants, and
// two `cli.ts serve` backends behind it restarted one after the other (SIGTERM: rpc.goaway,
// drain, exit) or killed while a client with `reconnect` calls through it. HAProxy comes from
// .ci/fetch_tools.sh; a missing one fails the test.

import assert from "node:assert/strict";
import { fakeTlsServer, freePort, root, until, within } from "../_util.ts";
import { spawnCollected, tool } from "../_tools.ts";
import {
  type Backend,
  type Balancer,
  callsSucceed,
  connectThrough,
  type Figures,
  LOOPS,
  rollingRestart,
  served,
  silentTcpServer,
  startBackend,
  startLoad,
} from "./_balancer.ts";

const decoder = new TextDecoder();
const encoder = new TextEncoder();

/** The PROXY protocol v2 signature, the first 12 bytes of its header. */
const PROXY_V2_SIGNATURE = [0x0d, 0x0a, 0x0d, 0x0a, 0x00, 0x0d, 0x0a, 0x51, 0x55, 0x49, 0x54, 0x0a];

// --- HAProxy -------------------------------------------------------------------------------------

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
    env: {
      TLSRPC_FRONT: `127.0.0.1:${port}`,
      TLSRPC_BACKEND_A: `127.0.0.1:${ports.a}`,
      TLSRPC_BACKEND_B: `127.0.0.1:${ports.b}`,
      TLSRPC_STATS: socket,
    },
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
