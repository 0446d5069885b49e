// The prose of the CLI's help, one text per command. The option lists are made from the flag
// tables in cli.ts (formatFlags) and passed in, so that the help cannot drift from the flags and
// their defaults; this module holds only the words around them.

import { STATE_VARIABLES } from "./_cli_dev.ts";
import { TOKEN_VARIABLE } from "./_cli_token.ts";

/** The smallest permissions of serve (with --cert and --key), call and list (with --ca). */
const FILE_PERMISSIONS = `--allow-net --allow-read --allow-env=${TOKEN_VARIABLE}`;

/** The same with the development certificates, once they exist. */
const DEV_PERMISSIONS =
  `--allow-net --allow-read --allow-sys=uid\n    --allow-env=${TOKEN_VARIABLE},${STATE_VARIABLES}`;

/** The option lists of each command, made by formatFlags. */
export interface FlagSections {
  serve: string;
  limits: string;
  call: string;
  list: string;
  describe: string;
  cert: string;
}

const CLIENT_TOKENS =
  `The token comes from --token-file, else from ${TOKEN_VARIABLE} when it is set. A token
that cannot be read is an error (exit 2), never a call without it: an empty or unreadable
--token-file, an empty ${TOKEN_VARIABLE}, ${TOKEN_VARIABLE} set along with --no-token, or no
permission to read ${TOKEN_VARIABLE} (run with --allow-env=${TOKEN_VARIABLE}, or pass
--token-file FILE, or --no-token to call without a token).`;

const CLIENT_TRUST = `The server's certificate is verified against the system's roots and --ca FILE;
without --ca, also against the development CA that "serve" and "cert" make in the state
folder, when it is there and the folder is safe (owned by you, not writable by others: an
unsafe folder is an error, exit 2). Looking for it needs
--allow-env=${STATE_VARIABLES}, --allow-read and --allow-sys=uid; without
them it is skipped, and an untrusted certificate's error says so.

Permissions:
  with --ca FILE:
    ${FILE_PERMISSIONS}
  without, trusting the development CA:
    ${DEV_PERMISSIONS}`;

const EXIT_CODES = "Exit codes: 0 ok, 1 the server answered with an error, 2 usage (a bad flag, " +
  "argument or\nfile, a missing permission), 3 connection, TLS, token or timeout.";

/** The JSON form of rich values, as `call` prints them when stdout is not a terminal. */
const RICH_JSON =
  `Rich values print in JSON as one-key objects: {"$bigint":"12"}, {"$bytes":"AQID"} (base64;
other typed arrays add "type":"Int16Array"), {"$date":"2024-01-01T00:00:00.000Z"},
{"$map":[[key,value],...]}, {"$set":[...]}, {"$undefined":true} and {"$number":"NaN"} (also
"Infinity", "-Infinity", "-0"). A data object that has one of these keys prints as
{"$object":{...}}. A function that returns nothing prints null.`;

/** The help texts by command, with the option lists in `flags`. */
export function helpTexts(flags: FlagSections): {
  main: string;
  serve: string;
  call: string;
  list: string;
  describe: string;
  cert: string;
} {
  return {
    main: `tlsrpc: JSON-RPC 2.0 over TLS

Usage: tlsrpc <command> [options]
   or: deno run PERMISSIONS cli.ts <command> [options]   (each command's help lists them)

Commands:
  serve MODULE           serve the functions of MODULE
  call METHOD [ARG...]   call one method and print its result
  list                   print the methods a server exposes
  describe METHOD        print one method's parameters
  cert                   make development certificates (a CA and a localhost certificate)
  help [COMMAND]         print this help, or a command's

Options: -h, --help (also after a command), -V, --version

Run "tlsrpc help <command>" for a command's options. Each command asks only for the Deno
permissions it needs; a missing one is an error naming the flag to add.
${EXIT_CODES}`,
    serve: `Usage: tlsrpc serve MODULE [options]

Serves the functions of MODULE (a path or URL): its default export when it has one, else its
named exports. Prints "listening on HOST:PORT" on stdout when ready; logs go to stderr.
SIGINT and SIGTERM shut it down gracefully: clients are told (rpc.goaway) and calls finish.

Before it listens, serve checks everything and stops with exit 2 and one line naming the file
and what is wrong: the certificate and key (readable, PEM, in force, the key the certificate's),
--client-ca (it must hold a certificate), and MODULE (it must load, with Deno's error and code
frame when it does not, and expose at least one method). A certificate not valid yet, or that
expires within 7 days, is a warning.

Without --cert and --key it uses development certificates from the state folder:
$TLSRPC_HOME/dev-certs, else $XDG_STATE_HOME/tlsrpc/dev-certs or
~/.local/state/tlsrpc/dev-certs, made on first use; call and list trust their CA when no --ca
is given. They are for development only. When they exist, serve reuses them without writing
(and so without asking to write); making or renewing them needs --allow-write to the state
folder.

Token authentication: with --token-file FILE, else with ${TOKEN_VARIABLE} set, every client
must present that token, and serve says so on stderr (never the token). serve will not start
(exit 2) when it cannot read a token it may be meant to require: an empty or unreadable
--token-file, an empty ${TOKEN_VARIABLE}, ${TOKEN_VARIABLE} set along with --no-token, or no
permission to read ${TOKEN_VARIABLE}, since it cannot tell then whether it is set. Run with
--allow-env=${TOKEN_VARIABLE}, or pass --token-file FILE, or --no-token to serve without a token.

Workers: --workers N serves from N worker threads (0: one per core) that share the port
(SO_REUSEPORT, Linux only), so that the kernel spreads connections over the cores. Each worker
loads MODULE and serves it with every flag given here; MODULE is also loaded once in the main
thread first, to check it, so its top-level code runs N+1 times. Module state and the limits,
--max-connections included, are per worker: N workers take up to N times as many connections.
A worker that dies (an uncaught error) is logged and started again after a second; log lines
name their worker ("[worker 2] ..."); SIGINT and SIGTERM drain every worker before serve exits.

Metrics: --metrics HOST:PORT serves Prometheus metrics at http://HOST:PORT/metrics, over plain
HTTP: keep HOST on loopback or a private network. With --workers, the one endpoint reports the
sum over the workers. Once it listens, serve logs "metrics on http://HOST:PORT/metrics" on
stderr, with the real port when PORT is 0, before it prints "listening on" on stdout.

--proxy-protocol: every connection must start with a PROXY protocol header (v1 or v2) naming
the client, as HAProxy (send-proxy) and nginx (proxy_protocol on) send it; the client's address
in it is what handlers and logs see. Use it only behind such a balancer, with the port out of
anyone else's reach: whoever can connect can claim any address. A connection without a header
is closed and logged.

Logs go to stderr, at most 5 connection errors a second (per worker), then one summary line.
--log-format text (the default) writes each line as it is, with control characters escaped;
--log-format json writes one JSON object a line: "time" (ISO 8601), "level" ("error" when an
error came with the line, "warn" for other trouble, "info" for notices and routine events),
"message", and when known "event" (e.g. "closed", "handshake_failed", "worker_died"), "peer"
(host:port), "worker" (with --workers), "error" (the error's name) and the event's own fields.
serve's own notices and a failure to start are JSON lines too; "listening on" stays plain text
on stdout, for scripts.

Permissions, besides what MODULE needs:
  with --cert and --key:
    ${FILE_PERMISSIONS}
  with development certificates:
    ${DEV_PERMISSIONS}
    and --allow-write=STATE_FOLDER the first time (in a terminal, serve asks for it)

Options:
${flags.serve}

Limits (each bounds what one client can cost the server):
${flags.limits}`,
    call: `Usage: tlsrpc call [options] METHOD [ARG...]

Calls METHOD and prints its result on stdout: as JSON when stdout is not a terminal or with
--json (one line; indented on a terminal), so that jq or python3 -m json.tool read it; as
readable text on a terminal, rich values as themselves (12n, Uint8Array(3 bytes) <01 02 03>).
${RICH_JSON}

Each ARG is parsed as JSON when it is valid JSON, else taken as a string: call greet ada,
call add 2 3, call sum '[1,2]'. An ARG that starts like JSON ([, {, ", a digit, or - and a
digit) but is not valid JSON is an error (exit 2): quote a string as JSON, '"2024-01-01"'.
--params takes by-name params: a JSON object, @FILE for a file's, or - for standard input's.

--endpoint HOST:PORT, repeatable, names the server instead of --hostname and --port; with
several, the client tries them in a random order until one answers ([::1]:7443 for IPv6).

--verbose prints on stderr, before the result, lines starting "* ": each connection attempt
with its TCP connect and TLS handshake times and TLS version, the server certificate's
subject, issuer, names and expiry, connect() as a whole (with rpc.hello and the token), the
extensions agreed in that rpc.hello, and the call's time; all of the one connection the call
goes over. The result alone goes to stdout.

An error answer prints its code and message, with what to do next, and its data on stderr;
with --raw, the error object as received, JSON. Control and bidi characters from the server
print as escapes (\\x1b, \\u{202e}; \\u001b inside JSON).

${CLIENT_TRUST}

${CLIENT_TOKENS}

Options:
${flags.call}

${EXIT_CODES}`,
    list: `Usage: tlsrpc list [options]

Prints the methods the server exposes, one per line, as name(params): "b?" is an optional
parameter, "...xs" a rest parameter that takes any number of values. With --json, prints the
server's rpc.discover document (OpenRPC) as JSON instead. Control and bidi characters print as
escapes.

${CLIENT_TRUST}

${CLIENT_TOKENS}

Options:
${flags.list}

${EXIT_CODES}`,
    describe: `Usage: tlsrpc describe [options] METHOD

Prints one method from the server's rpc.discover document: its signature, then each parameter
and whether it is required, optional ("b?") or a rest parameter ("...xs", any number of values,
by position). With --json, prints the method's entry of the document as JSON.

${CLIENT_TRUST}

Options:
${flags.describe}

${EXIT_CODES}`,
    cert: `Usage: tlsrpc cert [--dir DIR] [--host NAME ...] [--client NAME]

Makes development certificates in pure TypeScript: a CA (ca.pem, ca.key) and a certificate for
localhost, 127.0.0.1, ::1 and every --host (cert.pem, key.pem), signed by it; --client NAME also
makes a client certificate for mutual TLS (client.pem, client.key). Existing keys are never
overwritten: they are reused, and certificates that no longer fit are renewed. Key files get
mode 0600. The CA lasts 10 years, the certificates 825 days.

These certificates are for development only: anyone who reads ca.key can impersonate any server
to whoever trusts ca.pem.

Permissions: --allow-read --allow-write --allow-env=${STATE_VARIABLES}
(no --allow-env with --dir).

Options:
${flags.cert}`,
  };
}
