// Tests of the accept watchdog: when it looks and what it does with what it sees (a fake check),
// the two real ways of looking (a listener's accept queue, a probe connection), and recovery from
// EMFILE with listeners that share a port, in a subprocess with few descriptors.

import assert from "node:assert/strict";
import net from "node:net";
import {
  type AcceptCheck,
  AcceptQueue,
  acceptQueueLength,
  type AcceptState,
  AcceptWatchdog,
  PROBE_WAIT_MS,
  SelfProbe,
  STALL_MS,
} from "../_watchdog.ts";
import { certs, delay, has, until, within } from "./_util.ts";

/** A check that answers from a script, and counts the looks. */
class ScriptedCheck implements AcceptCheck {
  looks = 0;
  cancelled = false;
  #answer: (look: number) => AcceptState;

  constructor(answer: (look: number) => AcceptState) {
    this.#answer = answer;
  }

  check(): Promise<AcceptState> {
    return Promise.resolve(this.#answer(++this.looks));
  }

  cancel(): void {
    this.cancelled = true;
  }
}

/** A watchdog on `check` ticking every 10 ms, with its restarts and log lines recorded. */
function watchdog(
  check: AcceptCheck,
  restart: () => Promise<void> = () => Promise.resolve(),
): { watchdog: AcceptWatchdog; restarts: () => number; lines: string[] } & AsyncDisposable {
  let restarts = 0;
  const lines: string[] = [];
  const dog = new AcceptWatchdog({
    check,
    restart: () => (restarts++, restart()),
    log: (_error, line) => void lines.push(line),
    tickMs: 10,
  });
  return {
    watchdog: dog,
    restarts: () => restarts,
    lines,
    [Symbol.asyncDispose]: () => dog.close(),
  };
}

Deno.test("AcceptWatchdog does not look while connections arrive, and says nothing while all is well", async () => {
  const check = new ScriptedCheck(() => "accepting");
  await using dog = watchdog(check);
  for (let i = 0; i < 30; i++) {
    dog.watchdog.accepted();
    await delay(3);
  }
  assert.equal(check.looks, 0);
  await until(() => check.looks >= 3, "a few looks once idle");
  assert.equal(dog.restarts(), 0);
  assert.deepEqual(dog.lines, []);
});

Deno.test("AcceptWatchdog looks less often the longer all stays well: after 1, 2, 4, 8, 8 ... idle ticks", async () => {
  const check = new ScriptedCheck(() => "accepting");
  await using _dog = watchdog(check);
  // Looks at ticks 1, 3, 7, 15, 23, 31: 6 in 31 ticks. Timers may run late, never early.
  await delay(320);
  assert.ok(check.looks >= 2 && check.looks <= 6, `${check.looks} looks in 32 ticks`);
});

Deno.test("AcceptWatchdog listens again after two stuck looks in a row, with one line, and not after one", async (t) => {
  await t.step("stuck, then stuck: one restart", async () => {
    const check = new ScriptedCheck((look) => look <= 2 ? "stuck" : "accepting");
    await using dog = watchdog(check);
    await until(() => check.looks >= 4, "looks after the restart");
    assert.equal(dog.restarts(), 1);
    assert.deepEqual(dog.lines, [
      "the listener stopped accepting (out of file descriptors?): listening again",
    ]);
  });
  await t.step("stuck, accepting, stuck, unknown, accepting: no restart", async () => {
    const answers: AcceptState[] = ["stuck", "accepting", "stuck", "unknown", "accepting"];
    const check = new ScriptedCheck((look) => answers[look - 1] ?? "accepting");
    await using dog = watchdog(check);
    await until(() => check.looks >= 6, "six looks");
    assert.equal(dog.restarts(), 0);
    assert.deepEqual(dog.lines, []);
  });
  await t.step("a connection accepted during a stuck look clears it", async () => {
    const ref: { dog?: ReturnType<typeof watchdog> } = {};
    const check = new ScriptedCheck((look) => {
      if (look === 2) ref.dog!.watchdog.accepted();
      return look <= 3 ? "stuck" : "accepting";
    });
    await using dog = ref.dog = watchdog(check);
    await until(() => check.looks >= 5, "five looks");
    assert.equal(dog.restarts(), 0);
  });
});

/** Holds the event loop up for `ms`: a handler's long synchronous work. */
function holdUp(ms: number): void {
  const end = performance.now() + ms;
  while (performance.now() < end) {
    // busy
  }
}

Deno.test("AcceptWatchdog does not look while the event loop is held up, and looks again after", async () => {
  const check = new ScriptedCheck(() => "stuck");
  await using dog = watchdog(check);
  // Held up for longer than STALL_MS before every tick (this timer's 1 ms comes before the
  // watchdog's 10): each tick is late, and a stuck look then would be no news of the listener.
  const staller = setInterval(() => holdUp(STALL_MS + 50), 1);
  try {
    await delay(1_500);
  } finally {
    clearInterval(staller);
  }
  assert.equal(check.looks, 0, "no look while held up");
  assert.equal(dog.restarts(), 0);
  // Once the loop runs freely, the same stuck listener is listened again.
  await until(() => dog.restarts() === 1, "the restart");
});

Deno.test("AcceptWatchdog retries a failed restart every tick, logging the first failure only", async () => {
  let failures = 3;
  const check = new ScriptedCheck(() => "stuck");
  await using dog = watchdog(check, () => {
    if (failures-- > 0) return Promise.reject(new Error("Too many open files"));
    return Promise.resolve();
  });
  await until(() => dog.restarts() >= 4, "four restarts");
  assert.deepEqual(dog.lines.slice(0, 2), [
    "the listener stopped accepting (out of file descriptors?): listening again",
    "cannot listen again, will retry: Too many open files",
  ]);
  assert.equal(dog.lines.filter((line) => line.startsWith("cannot listen again")).length, 1);
});

Deno.test("AcceptWatchdog.close() stops the ticks, cancels the look, and waits for it", async () => {
  const answer = Promise.withResolvers<AcceptState>();
  let looks = 0;
  let cancelled = false;
  const dog = new AcceptWatchdog({
    check: {
      check: () => (looks++, answer.promise),
      cancel: () => {
        cancelled = true;
        answer.resolve("accepting");
      },
    },
    restart: () => Promise.resolve(),
    log: () => {},
    tickMs: 10,
  });
  await until(() => looks === 1, "a look");
  await dog.close();
  assert.ok(cancelled);
  await delay(50);
  assert.equal(looks, 1);
});

Deno.test("acceptQueueLength() reads a LISTEN socket's queue from /proc/net/tcp text", async (t) => {
  const table = [
    "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode",
    "   0: 0100007F:1F90 00000000:0000 0A 00000000:00000003 00:00000000 00000000  1000        0 4242 1 0000000000000000 100 0 0 10 0",
    "   1: 0100007F:1F90 0100007F:D431 01 00000000:00000000 00:00000000 00000000  1000        0 4243 1 0000000000000000 20 4 30 10 -1",
    "   2: 00000000:0016 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 17 1 0000000000000000 100 0 0 10 0",
    "",
  ].join("\n");
  const cases: [string, string, number | undefined][] = [
    ["a listener with 3 waiting", "4242", 3],
    ["a listener with none", "17", 0],
    ["a connection, not a listener", "4243", undefined],
    ["no such socket", "99", undefined],
    ["an inode that is a prefix of another", "424", undefined],
  ];
  for (const [name, inode, expected] of cases) {
    await t.step(name, () => assert.equal(acceptQueueLength(table, inode), expected));
  }
});

/** The inode of the listening socket on `port`, from /proc/net/tcp. */
async function listeningInode(port: number): Promise<string> {
  const hexPort = port.toString(16).toUpperCase().padStart(4, "0");
  const table = await Deno.readTextFile("/proc/net/tcp");
  const row = table.split("\n").map((line) => line.trim().split(/\s+/))
    .find((fields) => fields[1]?.endsWith(`:${hexPort}`) && fields[3] === "0A");
  assert.ok(row?.[9], `no listener on port ${port}`);
  return row[9];
}

Deno.test({
  name: "AcceptQueue says stuck while connections wait in a listener's queue, accepting once taken",
  ignore: Deno.build.os !== "linux",
  async fn() {
    // Deno.listen accepts only when asked: connections wait in the kernel's queue meanwhile.
    using listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
    const inode = await listeningInode(listener.addr.port);
    const queue = new AcceptQueue(() => inode, false);
    assert.equal(await queue.check(), "accepting");
    const peers = await Promise.all(
      [1, 2, 3].map(() => Deno.connect({ hostname: "127.0.0.1", port: listener.addr.port })),
    );
    assert.equal(await queue.check(), "stuck");
    const accepted = await Promise.all(peers.map(() => listener.accept()));
    assert.equal(await queue.check(), "accepting");
    for (const conn of [...peers, ...accepted]) conn.close();
    assert.equal(await new AcceptQueue(() => undefined, false).check(), "unknown");
    assert.equal(await new AcceptQueue(() => "1", false).check(), "unknown");
  },
});

/** A socket's peer, as the node listener reports it. */
function peerOf(socket: net.Socket): { hostname: string; port: number } {
  return { hostname: socket.remoteAddress!, port: socket.remotePort! };
}

/** A node:net server that reports each connection to `probe`, as the node listener does. */
async function probedServer(
  report: (socket: net.Socket) => void,
): Promise<net.Server & AsyncDisposable> {
  const sockets = new Set<net.Socket>();
  const server = net.createServer((socket) => {
    sockets.add(socket);
    socket.on("close", () => sockets.delete(socket));
    socket.on("error", () => {});
    report(socket);
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  return Object.assign(server, {
    async [Symbol.asyncDispose]() {
      for (const socket of sockets) socket.destroy();
      await new Promise((resolve) => server.close(resolve));
    },
  });
}

Deno.test("SelfProbe says accepting when the listener reports its connection, which it claims by port", async () => {
  const ref: { probe?: SelfProbe } = {};
  const decisions: boolean[] = [];
  await using server = await probedServer((socket) =>
    ref.probe!.claim(peerOf(socket), (isProbe) => {
      decisions.push(isProbe);
      if (isProbe) socket.destroy();
    })
  );
  const port = (server.address() as net.AddressInfo).port;
  const probe = ref.probe = new SelfProbe("127.0.0.1", port);
  assert.equal(await probe.check(), "accepting");
  assert.equal(await probe.check(), "accepting");
  assert.deepEqual(decisions, [true, true]);
  // Another connection, between probes, is not the probe's.
  const other = await Deno.connect({ hostname: "127.0.0.1", port });
  await until(() => decisions.length === 3, "the other connection reported");
  assert.equal(decisions[2], false);
  other.close();
});

Deno.test("SelfProbe says stuck when the listener never reports its connection, unknown when it cannot connect", async () => {
  await using server = await probedServer(() => {});
  const port = (server.address() as net.AddressInfo).port;
  assert.equal(await new SelfProbe("127.0.0.1", port).check(), "stuck");
  const free = net.createServer();
  await new Promise<void>((resolve) => free.listen(0, "127.0.0.1", resolve));
  const freePort = (free.address() as net.AddressInfo).port;
  await new Promise((resolve) => free.close(resolve));
  assert.equal(await new SelfProbe("127.0.0.1", freePort).check(), "unknown");
});

Deno.test("SelfProbe says unknown, not stuck, when the event loop was held up during its wait", async () => {
  const ref: { probe?: SelfProbe } = {};
  await using server = await probedServer((socket) =>
    ref.probe!.claim(peerOf(socket), (isProbe) => {
      if (isProbe) socket.destroy();
    })
  );
  const port = (server.address() as net.AddressInfo).port;
  const probe = ref.probe = new SelfProbe("127.0.0.1", port);
  const looking = probe.check();
  // The connect and the listener's report wait behind this, and so do the probe's timers.
  holdUp(PROBE_WAIT_MS + STALL_MS + 100);
  assert.notEqual(await looking, "stuck");
  assert.equal(await probe.check(), "accepting", "a look on a free loop");
});

Deno.test("SelfProbe.report() drops the probe's own lines, and holds others' only until it knows its port", async () => {
  const ref: { probe?: SelfProbe } = {};
  const emitted: number[] = [];
  let probePort = 0;
  await using server = await probedServer((socket) => {
    const port = socket.remotePort!;
    // As the node listener does for a handshake that fails inside node:tls's own listener: the
    // line comes before the connection is claimed, and before connect() resolved in the probe.
    ref.probe!.report(peerOf(socket), () => emitted.push(port));
    ref.probe!.claim(peerOf(socket), (isProbe) => {
      if (isProbe) probePort = port;
      socket.destroy();
    });
  });
  const probe = ref.probe = new SelfProbe("127.0.0.1", (server.address() as net.AddressInfo).port);
  assert.equal(await probe.check(), "accepting");
  assert.ok(probePort > 0);
  assert.equal(emitted.length, 0, `lines emitted for ${emitted}`);
  probe.report({ hostname: "127.0.0.1", port: 40000 }, () => emitted.push(40000));
  assert.deepEqual(emitted, [40000]);
});

/** Whether a byte sent on a new TLS connection to `port` comes back within 2 s. */
async function echoed(port: number, byte: number): Promise<boolean> {
  let conn: Deno.TlsConn | undefined;
  try {
    conn = await within(
      Deno.connectTls({ hostname: "127.0.0.1", port, caCerts: [certs.ca] }),
      "connect",
      2000,
    );
    await within(conn.write(new Uint8Array([byte])), "the byte", 2000);
    const echo = new Uint8Array(1);
    return await within(conn.read(echo), "the echo", 2000) === 1 && echo[0] === byte;
  } catch {
    return false;
  } finally {
    try {
      conn?.close();
    } catch {
      // Already closed.
    }
  }
}

Deno.test({
  name:
    "node listeners sharing a port (reusePort) both listen again after running out of descriptors at accept (EMFILE)",
  ignore: Deno.build.os !== "linux" || !has("bash"),
  async fn() {
    const transport = new URL("../_transport.ts", import.meta.url).href;
    // Two listeners in a process allowed 64 descriptors; each echoes a byte, then closes.
    const child = `
      import { listen } from ${JSON.stringify(transport)};
      Deno.addSignalListener("SIGTERM", () => Deno.exit(0));
      let port = 0;
      for (let i = 0; i < 2; i++) {
        const listener = await listen("node", {
          hostname: "127.0.0.1", port, reusePort: true,
          cert: ${JSON.stringify(certs.cert)}, key: ${JSON.stringify(certs.key)},
          handshakeTimeout: 10_000, maxConnections: 1000,
          onConnection: async (conn) => {
            const byte = new Uint8Array(1);
            try {
              if (await conn.read(byte) === 1) await conn.write(byte);
            } catch {}
            conn.close();
          },
          log: (_error, line) => console.log("listener " + i + ": " + line),
        });
        port = listener.addr.port;
      }
      console.log("port " + port);
    `;
    const process = new Deno.Command("bash", {
      args: ["-c", 'ulimit -n 64; exec "$0" eval "$1"', Deno.execPath(), child],
      stdin: "null",
      stdout: "piped",
      stderr: "piped",
    }).spawn();
    const stderr = new Response(process.stderr).text();
    const lines = process.stdout.pipeThrough(new TextDecoderStream()).getReader();
    let output = "";
    const readLine = async (pattern: RegExp, what: string, ms = 20_000) => {
      while (!pattern.test(output)) {
        const { value, done } = await within(lines.read(), what, ms);
        if (done) throw new Error(`The child ended before ${what}: ${output}${await stderr}`);
        output += value;
      }
      return pattern.exec(output)!;
    };
    try {
      const port = Number((await readLine(/^port (\d+)$/m, "the port"))[1]);
      // About 25 descriptors are in use at start: 80 more connections push accept over 64.
      const flood: Deno.TcpConn[] = [];
      for (let i = 0; i < 80; i++) flood.push(await Deno.connect({ hostname: "127.0.0.1", port }));
      await delay(500);
      for (const conn of flood) conn.close();
      await readLine(/listening again/, "a listener to listen again", 15_000);
      // Either listener may have been stuck, or both, each recovering in its own time: 12 echoes
      // in a row, each landing on either listener, say both serve again.
      const deadline = Date.now() + 20_000;
      let inARow = 0;
      for (let i = 0; inARow < 12; i++) {
        assert.ok(Date.now() < deadline, `${inARow} echoes in a row, then a failure: ${output}`);
        if (await echoed(port, i % 256)) inARow++;
        else inARow = 0;
      }
    } finally {
      try {
        process.kill("SIGKILL");
      } catch {
        // It ended on its own: the error above says why.
      }
      await process.status;
      await lines.cancel();
      await stderr;
    }
  },
});
