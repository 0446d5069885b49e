// The version of tlsrpc, read from deno.json so that one number serves the package, `--version`
// and anything else that names it. A JSON import (not a read at run time) keeps it working in an
// installed command, offline and without --allow-read.

import config from "./deno.json" with { type: "json" };

/** The version in deno.json, e.g. `0.1.0`. */
export const VERSION: string = config.version;
