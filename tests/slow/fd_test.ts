// A slow suite: `cli serve` run out of file descriptors by connections it must accept, and then
// serving again.

import assert from "node:assert/strict";
import { delay, has, TcpClient, whileGoodClientCalls } from "../_util.ts";
import { type Output, runCli, startServe } from "../_cli.ts";

Deno.test({
  name: "cli serve recovers from running out of file descriptors at accept (EMFILE)",
  ignore: !has("bash"),
  async fn() {
    await using server = await startServe([
      ...["examples/calc.ts", "--port", "0"],
      ...["--cert", "testdata/server.pem", "--key", "testdata/server.key"],
    ], { fileLimit: 64 });
    const port = server.port;
    await whileGoodClientCalls(port, async () => {
      // About 25 descriptors are in use at start: 80 more connections push accept over 64.
      const conns: TcpClient[] = [];
      try {
        for (let i = 0; i < 80; i++) conns.push(await TcpClient.connect(port));
        await delay(500);
      } finally {
        await Promise.all(conns.map((conn) => conn[Symbol.asyncDispose]()));
      }
    });
    // The accept loop may be backing off: a few tries, each bounded by --timeout.
    let call: Output | undefined;
    for (let attempt = 0; attempt < 3 && call?.code !== 0; attempt++) {
      call = await runCli([
        ...["call", "--hostname", "127.0.0.1", "--port", String(port)],
        ...["--ca", "testdata/ca.pem", "--timeout", "2000", "add", "2", "3"],
      ]);
    }
    assert.equal(call?.stdout, "5\n", call?.stderr);
  },
});
