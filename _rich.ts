// Rich values: what plain JSON cannot carry faithfully (bytes, Date, BigInt, Map, Set, undefined,
// NaN, ±Infinity, -0) as tagged JSON plus raw byte sections, for peers that announced the
// extension. PROTOCOL.md section 8 is the specification; this file is its implementation.
//
// A message whose values are all plain JSON never comes here: it goes out as standard JSON-RPC,
// byte for byte. `jsonOnlyProblem` tells the two apart.
//
// The implementation is in three parts: _rich_tags.ts (shared), _rich_encode.ts, _rich_decode.ts.

export * from "./_rich_tags.ts";
export * from "./_rich_encode.ts";
export * from "./_rich_decode.ts";
