import assert from "node:assert/strict";
import { parseJson } from "../_json.ts";
import { serve } from "../server.ts";
import { RawClient, serverOptions } from "./_util.ts";

const escapes = ["\\\\", '\\"', "\\/", "\\b", "\\f", "\\n", "\\r", "\\t", "\\u0041", "\\u00e9"];

Deno.test("parseJson() reads keys with escapes right after V8 has cached a key with an escaped backslash", () => {
  let n = 0;
  for (const first of escapes) {
    for (const second of escapes) {
      const prefix = `key${n++}`;
      parseJson(`{"${prefix}a":1,"${prefix}${first}":2}`);
      const parsed = parseJson(`{"${prefix}a":1,"${prefix}${second}":2}`) as Record<
        string,
        unknown
      >;
      assert.deepEqual(Object.keys(parsed), [`${prefix}a`, JSON.parse(`"${prefix}${second}"`)]);
    }
  }
});

Deno.test("parseJson() gives what JSON.parse gives, __proto__ as an own key included", async (t) => {
  const texts = [
    '{"a\\\\b":[1,"x\\ty",{"__proto__":{"polluted":true},"c\\n":null}],"d":-1.5e3,"e":true}',
    '[{"k\\\\":1},{"k\\t":2},{"k\\u00e9":[false,null,"\\ud83d\\ude00"]}]',
    '"just a string \\\\"',
    ' { "spaced \\\\" : [ 1 , 2 ] } ',
  ];
  for (const text of texts) {
    await t.step(text, () => {
      const parsed = parseJson(text);
      assert.deepEqual(parsed, JSON.parse(text.replaceAll("\\\\", "\\\\")));
      assert.equal(({} as Record<string, unknown>).polluted, undefined);
    });
  }
  for (const bad of ['{"a\\\\":1,}', '{"a\\\\" 1}', '["\\\\"', '{"a\\\\":tru}']) {
    await t.step(`refuses ${bad}`, () => {
      assert.throws(() => parseJson(bad), SyntaxError);
    });
  }
});

Deno.test("one client's escaped keys cannot change the keys another client sends", async () => {
  await using server = await serve({
    keys: (object: Record<string, unknown>) => Object.keys(object),
  }, serverOptions());
  await using poisoner = await RawClient.connect(server.addr.port);
  await using victim = await RawClient.connect(server.addr.port);
  await poisoner.exchange(
    '{"jsonrpc":"2.0","id":1,"method":"keys","params":[{"name":1,"tab\\\\":2}]}',
  );
  const reply = await victim.exchange(
    '{"jsonrpc":"2.0","id":1,"method":"keys","params":[{"name":1,"tab\\t":2}]}',
  );
  assert.deepEqual(reply, { jsonrpc: "2.0", id: 1, result: ["name", "tab\t"] });
});
