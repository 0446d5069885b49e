// Dispatch on every runtime: requests to handler calls and their outcomes to responses, through
// the examples of the JSON-RPC 2.0 specification and tlsrpc's own rules.

import assert from "node:assert/strict";
import { test } from "node:test";
import { detachedSession } from "../../_call.ts";
import { Dispatcher } from "../../_dispatch.ts";
import { ErrorCode, RpcError } from "../../errors.ts";
import { SPEC_EXAMPLES, specHandlers } from "./_spec_examples.ts";

const encoder = new TextEncoder();

/** Answers one frame of text and parses the response; `undefined` when there is none. */
async function answer(dispatcher: Dispatcher, text: string): Promise<unknown> {
  const reply = await dispatcher.handleFrame(encoder.encode(text), detachedSession());
  if (reply === undefined) return undefined;
  assert.equal(typeof reply.body, "string", "a plain peer gets plain JSON");
  return JSON.parse(reply.body as string);
}

/** A response's error reduced to its code, and a batch sorted by id: what the spec fixes. */
function normalize(response: unknown): unknown {
  if (Array.isArray(response)) {
    return response.map(normalize).sort((a, b) =>
      String((a as { id: unknown }).id).localeCompare(String((b as { id: unknown }).id))
    );
  }
  if (response === null || typeof response !== "object" || !("error" in response)) return response;
  const { error, ...rest } = response as { error: { code: number } };
  return { ...rest, error: { code: error.code } };
}

const E = (code: number, id: unknown) => ({ jsonrpc: "2.0", error: { code }, id });

test("Dispatcher answers the examples of the JSON-RPC 2.0 specification", async (t) => {
  for (const { name, request, response, log: expected = [] } of SPEC_EXAMPLES) {
    await t.test(name, async () => {
      const log: unknown[] = [];
      const dispatcher = new Dispatcher(specHandlers(log));
      assert.deepEqual(normalize(await answer(dispatcher, request)), normalize(response));
      assert.deepEqual(log, expected);
    });
  }
});

test("Dispatcher keeps an RpcError's code, message and data, and hides runtime errors", async () => {
  const dispatcher = new Dispatcher({
    refuse: () => {
      throw new RpcError(4000, "Cannot refuse: no reason", { data: { why: "none" } });
    },
    async later() {
      await Promise.resolve();
      throw new RpcError(4001, "Cannot wait");
    },
    system: () => {
      // A runtime's error (a failed system call) may name the server's paths.
      throw Object.assign(new Error("ENOENT: no such file, open '/srv/secret'"), {
        code: "ENOENT",
        syscall: "open",
        errno: -2,
      });
    },
  });
  assert.deepEqual(await answer(dispatcher, '{"jsonrpc":"2.0","method":"refuse","id":1}'), {
    jsonrpc: "2.0",
    error: { code: 4000, message: "Cannot refuse: no reason", data: { why: "none" } },
    id: 1,
  });
  const later = await answer(dispatcher, '{"jsonrpc":"2.0","method":"later","id":2}') as {
    error: { code: number; message: string };
  };
  assert.equal(later.error.code, 4001);
  assert.equal(later.error.message, "Cannot wait");
  const system = await answer(dispatcher, '{"jsonrpc":"2.0","method":"system","id":3}') as {
    error: { code: number; message: string };
  };
  assert.equal(system.error.code, ErrorCode.ServerError);
  assert.ok(!system.error.message.includes("secret"), system.error.message);
});

test("Dispatcher never lets a payload reach Object.prototype", async () => {
  const dispatcher = new Dispatcher({ echo: (value: unknown) => value });
  const answered = await answer(
    dispatcher,
    '{"jsonrpc":"2.0","method":"echo","params":[{"__proto__":{"polluted":true}}],"id":1}',
  );
  assert.deepEqual(answered, {
    jsonrpc: "2.0",
    result: { ["__proto__"]: { polluted: true } },
    id: 1,
  });
  assert.equal(({} as { polluted?: unknown }).polluted, undefined);
  for (const method of ["constructor", "__proto__", "toString", "hasOwnProperty"]) {
    const response = await answer(dispatcher, `{"jsonrpc":"2.0","method":"${method}","id":1}`);
    assert.deepEqual(normalize(response), E(ErrorCode.MethodNotFound, 1), method);
  }
});
