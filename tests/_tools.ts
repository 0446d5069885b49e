/**
 * The programs .ci/fetch_tools.sh puts under .ci/cache/tools, as the tests run them: where one is
 * (a missing one fails the test), a child process whose stderr is kept and whose stop cannot hang
 * (HAProxy, nginx, Prometheus), and `promtool check metrics`.
 *
 * @module
 */

import assert from "node:assert/strict";
import { root } from "./_util.ts";

/**
 * A file that .ci/fetch_tools.sh puts under .ci/cache/tools (`bin/haproxy`, say); fails the test
 * when it is missing.
 */
export function tool(path: string): string {
  const file = new URL(`.ci/cache/tools/${path}`, root).pathname;
  try {
    Deno.statSync(file);
  } catch {
    assert.fail(`${file} is missing: run .ci/fetch_tools.sh`);
  }
  return file;
}

/** Options of {@linkcode spawnCollected}. */
export interface SpawnCollectedOptions {
  /** Where it runs. @default the repository's root */
  cwd?: string;
  /** Variables added to this process's environment. @default {} */
  env?: Record<string, string>;
}

/** A child process from {@linkcode spawnCollected}. */
export interface CollectedChild {
  readonly child: Deno.ChildProcess;
  /** What it has written to stderr so far, for failure messages. */
  log(): string;
  /**
   * Sends `signal` and resolves once it has exited and its stderr is read; SIGKILL follows if it
   * has not exited within 10 s. Only the first call sends a signal; later ones resolve as it does.
   */
  stop(signal: Deno.Signal): Promise<void>;
}

/** Runs `binary ARGS`, stdin and stdout null, its stderr collected. */
export function spawnCollected(
  binary: string,
  args: string[],
  options: SpawnCollectedOptions = {},
): CollectedChild {
  const child = new Deno.Command(binary, {
    args,
    cwd: options.cwd ?? root.pathname,
    env: options.env ?? {},
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
      // A guard, far above the second or so HAProxy, nginx or Prometheus takes to stop.
      const timer = setTimeout(() => {
        try {
          child.kill("SIGKILL");
        } catch {
          // It has exited meanwhile.
        }
      }, 10_000);
      try {
        await child.status;
      } finally {
        clearTimeout(timer);
      }
      await reading;
    })();
    return stopping;
  }
  return { child, log: () => stderr, stop };
}

/** Fails unless `promtool check metrics` accepts `text` without a word, lint included. */
export async function assertPromtoolAccepts(text: string): Promise<void> {
  const child = new Deno.Command(Deno.env.get("PROMTOOL") ?? tool("bin/promtool"), {
    args: ["check", "metrics"],
    stdin: "piped",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const writer = child.stdin.getWriter();
  await writer.write(new TextEncoder().encode(text));
  await writer.close();
  const { code, stdout, stderr } = await child.output();
  const said = new TextDecoder().decode(stdout) + new TextDecoder().decode(stderr);
  assert.equal(code, 0, `promtool check metrics exited ${code}:\n${said}`);
  assert.equal(said.trim(), "", `promtool check metrics found problems:\n${said}`);
}
