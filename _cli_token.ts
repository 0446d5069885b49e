// Where the CLI's token comes from. It fails closed: a source that may hold a token but cannot be
// read stops the command with a usage error, never turns into "no token".

import { CliError, ExitCode } from "./_cli_error.ts";
import { readFile, usage } from "./_cli_flags.ts";

/** The environment variable that holds a token when no --token-file is given. */
export const TOKEN_VARIABLE = "TLSRPC_TOKEN";

/** A token and where it came from, for the log; the token itself is never printed. */
export interface Token {
  /** The token. */
  token: string;
  /** `--token-file "FILE"` or `TLSRPC_TOKEN`. */
  source: string;
}

/**
 * The token of `command` (serve, call, list): the first line of --token-file, else $TLSRPC_TOKEN,
 * else none. A usage error, rather than no token, for an unreadable or empty --token-file, an
 * empty (or blank) TLSRPC_TOKEN, --no-token with --token-file or with TLSRPC_TOKEN set, and no
 * permission to read TLSRPC_TOKEN without --no-token: we cannot tell then whether it is set.
 */
export async function readToken(
  command: string,
  values: { "token-file"?: string | undefined; "no-token"?: boolean | undefined },
): Promise<Token | undefined> {
  const file = values["token-file"];
  const none = values["no-token"] ?? false;
  if (file !== undefined) {
    if (none) usage(command, "give --token-file or --no-token, not both");
    const token = (await readFile("--token-file", file)).split(/\r?\n/)[0]?.trim();
    if (!token) {
      throw new CliError(ExitCode.Usage, `Cannot use --token-file "${file}": it is empty`);
    }
    return { token, source: `--token-file "${file}"` };
  }
  // querySync, not Deno.env.get: no prompt, and no NotCapable error to mistake for "unset".
  const { state } = Deno.permissions.querySync({ name: "env", variable: TOKEN_VARIABLE });
  if (state !== "granted") {
    if (none) return undefined;
    throw new CliError(
      ExitCode.Usage,
      `Cannot read ${TOKEN_VARIABLE}: no env permission, so "${command}" cannot tell whether ` +
        `it is set (run with --allow-env=${TOKEN_VARIABLE}, or pass --token-file FILE or --no-token)`,
    );
  }
  const token = Deno.env.get(TOKEN_VARIABLE);
  if (token === undefined) return undefined;
  if (none) {
    throw new CliError(
      ExitCode.Usage,
      `Cannot use --no-token: ${TOKEN_VARIABLE} is set (unset it, or drop --no-token)`,
    );
  }
  if (token.trim() === "") {
    throw new CliError(
      ExitCode.Usage,
      `Cannot use ${TOKEN_VARIABLE}: it is empty (unset it for no token)`,
    );
  }
  return { token, source: TOKEN_VARIABLE };
}
