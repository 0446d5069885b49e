// The version of tlsrpc: one number for the package (deno.json), `--version` and rpc.discover. It is
// written here rather than imported from deno.json, so that the library keeps working when imported
// from a URL or an npm build of the JSR package; tests/layout_test.ts checks the two agree.

/** The version in deno.json, e.g. `0.1.0`. */
export const VERSION = "0.1.0";
