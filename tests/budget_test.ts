// Tests of what one connection may cost the server, on real sockets: calls in flight (notifications
// and batches included) against maxInFlight, maxBatch, fair slices for a client that pipelines
// thousands of calls, and messages whose numbers a double cannot hold (64-bit ids, 500 digits).

import assert from "node:assert/strict";
import { serve } from "../server.ts";
import { callContext } from "../context.ts";
import { ErrorCode } from "../errors.ts";
import { delay, frames, RawClient, request, serverOptions, until, within } from "./_util.ts";

/** A JSON-RPC response as it comes off the wire. */
interface Response {
  jsonrpc: string;
  id: unknown;
  result?: unknown;
  error?: { code: number; message: string; data?: unknown };
}

/** A notification: a request without an id. */
function notification(method: string, params: unknown[]): Record<string, unknown> {
  return { jsonrpc: "2.0", method, params };
}

/** Handlers that sleep, counting how many sleep at once, and a call that reports the counts. */
function sleepers() {
  const counts = { running: 0, maxRunning: 0, completed: 0, started: 0 };
  /** `completed` when the first sleep tagged so started, by tag. */
  const completedAtFirstStart = new Map<string, number>();
  return {
    counts,
    completedAtFirstStart,
    handlers: {
      async sleep(ms: number, tag = ""): Promise<string> {
        if (!completedAtFirstStart.has(tag)) completedAtFirstStart.set(tag, counts.completed);
        counts.started++;
        counts.running++;
        counts.maxRunning = Math.max(counts.maxRunning, counts.running);
        try {
          await delay(ms);
        } finally {
          counts.running--;
          counts.completed++;
        }
        return "slept";
      },
      status: () => ({ ...counts }),
    },
  };
}

// ---------------------------------------------------------------------------------------------
// maxInFlight

Deno.test("notifications count against maxInFlight: of 100 pipelined sleeps at most 8 run at once, and a call after them waits for a free slot", async () => {
  const maxInFlight = 8;
  const total = 100;
  const { counts, handlers } = sleepers();
  await using server = await serve(handlers, { ...serverOptions(), maxInFlight });
  await using client = await RawClient.connect(server.addr.port);
  // 100 ms a sleep: long enough that, were the limit not enforced, all 100 would overlap (reading
  // and dispatching them takes a few ms); short enough that 13 rounds stay near a second.
  const messages: unknown[] = Array.from({ length: total }, () => notification("sleep", [100]));
  messages.push(request(1, "status"));
  await client.sendBytes(frames(messages));
  const answer = await within(client.receive(), "the answer to status", 10_000) as Response;
  const status = answer.result as typeof counts;
  assert.equal(answer.id, 1);
  // The call is dispatched only once fewer than maxInFlight calls are in flight: all 100 sleeps
  // have started and at most maxInFlight - 1 of them are still running.
  assert.equal(status.started, total);
  assert.ok(status.running <= maxInFlight - 1, JSON.stringify(status));
  assert.ok(status.completed >= total - (maxInFlight - 1), JSON.stringify(status));
  await within(until(() => counts.completed === total, "the sleeps to drain"), "the sleeps");
  assert.equal(counts.maxRunning, maxInFlight, `at most ${maxInFlight} sleeps at once`);
});

Deno.test("a batch is dispatched whole past maxInFlight, and the next frame waits until the connection is under the limit again", async () => {
  // What the code guarantees: ServerConnection waits for a free slot before each *frame*, and
  // Dispatcher.handleFrame then dispatches every request of a batch at once, each counting one in
  // flight. So a batch of N runs N calls at once however low maxInFlight is, and the bound per
  // connection is maxInFlight - 1 + maxBatch: a batch may arrive with maxInFlight - 1 calls in
  // flight. The frame after it waits until fewer than maxInFlight are in flight.
  const maxInFlight = 8;
  const size = 100;
  const { counts, completedAtFirstStart, handlers } = sleepers();
  await using server = await serve(handlers, { ...serverOptions(), maxInFlight });
  await using client = await RawClient.connect(server.addr.port);
  const batch = (tag: string) =>
    Array.from({ length: size }, (_, i) => request(`${tag}-${i}`, "sleep", [100, tag]));
  await client.sendBytes(frames([batch("first"), batch("second"), request("status", "status")]));
  const answers: Response[][] = [];
  let status: Response | undefined;
  for (let i = 0; i < 3; i++) {
    const answer = await within(client.receive(), `answer ${i + 1} of 3`, 10_000);
    if (Array.isArray(answer)) answers.push(answer);
    else status = answer as Response;
  }
  assert.equal(answers.length, 2);
  for (const answer of answers) {
    assert.equal(answer.length, size);
    assert.ok(answer.every((reply) => reply.result === "slept"), JSON.stringify(answer[0]));
  }
  console.log(`at most ${counts.maxRunning} sleeps ran at once with maxInFlight ${maxInFlight}`);
  assert.ok(counts.maxRunning >= size, "a batch runs whole");
  assert.ok(
    counts.maxRunning <= maxInFlight - 1 + size,
    `${counts.maxRunning} sleeps at once; the bound is maxInFlight - 1 + the batch's size`,
  );
  // The second batch and the status call each waited for the connection to go under the limit.
  assert.ok(completedAtFirstStart.get("second")! >= size - (maxInFlight - 1));
  const seen = status?.result as typeof counts;
  assert.ok(seen.completed >= 2 * size - (maxInFlight - 1), JSON.stringify(seen));
});

// ---------------------------------------------------------------------------------------------
// maxBatch

Deno.test("maxBatch: a batch of 10 is answered and a batch of 11 gets one -32600 naming the limit, no call made", async (t) => {
  let calls = 0;
  await using server = await serve({
    echo: (value: unknown) => {
      calls++;
      return value;
    },
  }, { ...serverOptions(), maxBatch: 10 });
  await using client = await RawClient.connect(server.addr.port);
  await t.step("10 requests", async () => {
    const batch = Array.from({ length: 10 }, (_, i) => request(i, "echo", [i]));
    const answers = await client.exchange(batch) as Response[];
    assert.deepEqual(
      answers,
      Array.from({ length: 10 }, (_, i) => ({ jsonrpc: "2.0", id: i, result: i })),
    );
    assert.equal(calls, 10);
  });
  await t.step("11 requests", async () => {
    const batch = Array.from({ length: 11 }, (_, i) => request(i, "echo", [i]));
    const answer = await client.exchange(batch) as Response;
    assert.deepEqual(answer, {
      jsonrpc: "2.0",
      id: null,
      error: {
        code: ErrorCode.InvalidRequest,
        message: "Invalid Request: a batch may hold at most 10 requests",
      },
    });
    assert.equal(calls, 10, "no request of the refused batch was called");
  });
  await t.step("the connection still serves", async () => {
    assert.deepEqual(await client.exchange(request(99, "echo", ["ok"])), {
      jsonrpc: "2.0",
      id: 99,
      result: "ok",
    });
  });
});

// ---------------------------------------------------------------------------------------------
// Fairness

Deno.test("a client pipelining 20 000 calls does not hold up another connection's call", async () => {
  const total = 20_000;
  let calls = 0;
  await using server = await serve({
    add: (a: number, b: number) => {
      calls++;
      return a + b;
    },
  }, serverOptions());
  await using flooder = await RawClient.connect(server.addr.port);
  await using other = await RawClient.connect(server.addr.port);
  const flood = frames(Array.from({ length: total }, (_, i) => request(i, "add", [i, 1])));
  const sending = flooder.sendBytes(flood);
  const receiving = (async () => {
    let answers = 0;
    while (answers < total && await flooder.receiveFrame() !== null) answers++;
    return answers;
  })();
  await within(until(() => calls >= 1_000, "the flood to be under way"), "the flood", 10_000);
  const started = performance.now();
  const answer = await within(other.exchange(request(1, "add", [2, 3])), "the other call", 2_000);
  const took = performance.now() - started;
  const callsThen = calls;
  console.log(
    `the other connection's call took ${took.toFixed(1)} ms, ` +
      `answered after ${callsThen} of ${total} flooded calls`,
  );
  assert.deepEqual(answer, { jsonrpc: "2.0", id: 1, result: 5 });
  await within(sending, "the flood's write", 30_000);
  assert.equal(await within(receiving, "the flood's answers", 30_000), total);
  // The other call was answered in between the flooded ones, not after them all.
  assert.ok(callsThen < total, `the other call waited for all ${total} flooded calls`);
});

// ---------------------------------------------------------------------------------------------
// Numbers a double cannot hold

/** Id texts a double would change, or print otherwise, written into the frame as they are. */
const RAW_IDS = ["9223372036854775807", "-9007199254740993", "9007199254740993", "1.5"];

/** A request whose id is `idText` verbatim. */
function rawRequest(idText: string, method: string, paramsText: string): string {
  return `{"jsonrpc":"2.0","id":${idText},"method":"${method}","params":${paramsText}}`;
}

Deno.test("an id a double cannot hold is answered with the id text the client wrote, alone and in a batch", async (t) => {
  await using server = await serve({
    echo: (value: unknown) => value,
    later: async (value: unknown) => {
      await delay(1);
      return value;
    },
    fail: () => {
      throw new RangeError("Cannot fail: on purpose");
    },
  }, serverOptions());
  await using client = await RawClient.connect(server.addr.port);
  for (const idText of RAW_IDS) {
    for (const method of ["echo", "later", "fail"]) {
      await t.step(`${idText} (${method})`, async () => {
        await client.send(rawRequest(idText, method, "[1]"));
        const text = await within(client.receiveText(), "the reply");
        assert.ok(text?.startsWith(`{"jsonrpc":"2.0","id":${idText},`), text ?? "closed");
      });
    }
  }
  await t.step("a batch of all of them, with a 64-bit id one less than the first", async () => {
    const ids = [...RAW_IDS, "9223372036854775806"];
    const methods = ["echo", "later", "fail"];
    const items = ids.map((idText, i) => rawRequest(idText, methods[i % methods.length]!, "[1]"));
    await client.send(`[${items.join(",")}]`);
    const text = await within(client.receiveText(), "the batch's reply");
    assert.ok(text !== null);
    // The answers come in the order of the requests, each with its own id text.
    const positions = ids.map((idText) => text.indexOf(`"id":${idText},`));
    assert.ok(positions.every((at) => at >= 0), text);
    assert.deepEqual(positions, [...positions].sort((a, b) => a - b), text);
  });
});

// Found by this test and fixed: rpc.cancel cannot find a call whose id a double cannot hold.
// Calls in flight are kept under idTextOf(request), the id's text as the client wrote it
// ("9223372036854775807"), but the cancel builtin (_builtins.ts, `cancel`) looks the call up under
// String(id) of its parsed param, which is "9223372036854776000": the lookup misses, rpc.cancel
// answers false, and the call runs on. (Any id whose text String() does not reproduce misses the
// same way, e.g. 1.50.)
Deno.test("rpc.cancel finds a call whose id is a 64-bit integer", async (t) => {
  const releases: (() => void)[] = [];
  await using server = await serve({
    wait: async () => {
      const signal = callContext()!.signal;
      await new Promise<void>((resolve) => {
        releases.push(resolve);
        signal.addEventListener("abort", () => resolve(), { once: true });
      });
      return signal.aborted ? "aborted" : "released";
    },
  }, serverOptions());
  try {
    for (const idText of ["9223372036854775807", "1.50"]) {
      await t.step(idText, async () => {
        await using client = await RawClient.connect(server.addr.port);
        await client.send(rawRequest(idText, "wait", "[]"));
        await until(() => releases.length > 0, "the call to start");
        const answer = await client.exchange(rawRequest("2", "rpc.cancel", `[${idText}]`));
        for (const release of releases.splice(0)) release();
        assert.deepEqual(answer, { jsonrpc: "2.0", id: 2, result: true });
      });
    }
  } finally {
    for (const release of releases.splice(0)) release();
  }
});

Deno.test("a request with an escaped backslash in a key and a 500-digit number is answered, and as a notification it is not", async (t) => {
  let described = 0;
  await using server = await serve({
    describe: (params: Record<string, unknown>) => {
      described++;
      return {
        keys: Object.keys(params),
        n: String(params.n),
        m: String(params["a\\b"]),
      };
    },
  }, serverOptions());
  await using client = await RawClient.connect(server.addr.port);
  const numbers = [
    "1" + "0".repeat(499),
    "-" + "9".repeat(500),
    "0." + "0".repeat(497) + "1",
    "1" + "2".repeat(496) + "e-400",
  ];
  for (const [i, digits] of numbers.entries()) {
    // The key below is `a\b` in JSON text: an escaped backslash.
    const params = `{"a\\\\b":${digits},"n":${digits}}`;
    const expected = String(JSON.parse(digits));
    await t.step(
      `${digits.slice(0, 12)}... (${digits.length} characters), as a request`,
      async () => {
        await client.send(rawRequest(String(i), "describe", params));
        const answer = JSON.parse((await within(client.receiveText(), "the reply"))!) as Response;
        assert.equal(answer.id, i);
        assert.equal(answer.error, undefined, JSON.stringify(answer));
        assert.deepEqual(answer.result, { keys: ["a\\b", "n"], n: expected, m: expected });
      },
    );
    await t.step(`${digits.slice(0, 12)}..., as a notification`, async () => {
      const before = described;
      await client.send(`{"jsonrpc":"2.0","method":"describe","params":${params}}`);
      // The next frame answers the ping sent after it: the notification got none.
      const answer = await within(client.exchange(request("after", "rpc.ping")), "the ping");
      assert.deepEqual(answer, { jsonrpc: "2.0", id: "after", result: "pong" });
      assert.equal(described, before + 1, "the notification was dispatched");
    });
  }
});
