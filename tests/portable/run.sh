#!/usr/bin/env bash
# Runs the portable tests (tests/portable/*.test.ts, node:test and node:assert/strict) on Deno,
# Node.js and Bun, one runtime after the other, and ends with a summary: one line per runtime, then
# "portable: N passed, N failed". Node.js 26 and Bun 1 come from .ci/runtimes.sh (installed into
# .ci/cache on first use); Deno is the deno on PATH, else the pinned one of .ci/deno. Each runtime
# learns the others' binaries from TLSRPC_DENO, TLSRPC_NODE and TLSRPC_BUN, for the cross-runtime
# pairings. Exits non-zero when a test fails, a runtime cannot be had, or a runner ends without
# its summary. Usage: tests/portable/run.sh [FILE.test.ts...]
set -uo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$root"

if ! paths=$(bash .ci/runtimes.sh --paths); then
  echo "Cannot run the portable tests: .ci/runtimes.sh could not install Node.js and Bun"
  echo "portable: 0 passed, 1 failed"
  exit 1
fi
TLSRPC_NODE=$(sed -n 1p <<<"$paths")
TLSRPC_BUN=$(sed -n 2p <<<"$paths")
TLSRPC_DENO=$(command -v deno || true)
if [ -z "$TLSRPC_DENO" ]; then
  TLSRPC_DENO=$("$root/.ci/deno" eval --quiet 'console.log(Deno.execPath())')
fi
export TLSRPC_DENO TLSRPC_NODE TLSRPC_BUN NO_COLOR=1

if [ "$#" -gt 0 ]; then
  files=("$@")
else
  files=(tests/portable/*.test.ts)
fi
# Bun takes an argument without a slash as a name filter, not a file.
bun_files=()
for file in "${files[@]}"; do
  case "$file" in /* | ./*) bun_files+=("$file") ;; *) bun_files+=("./$file") ;; esac
done

# A test may take its time on a loaded machine (peers in other runtimes start, 3 MB values);
# Bun's default is 5 s a test.
timeout_ms=120000
log=$(mktemp -d)
trap 'rm -rf "$log"' EXIT
summary=()
total_passed=0
total_failed=0
status=0

run() { # NAME COMMAND...: runs one runtime's tests, output to the terminal and to $log/NAME
  local name=$1
  shift
  echo "== $name: $*"
  local start=$SECONDS
  "$@" 2>&1 | tee "$log/$name"
  local code=${PIPESTATUS[0]}
  local seconds=$((SECONDS - start))
  local passed failed
  # Deno: "ok | 20 passed (35 steps) | 0 failed (3s)"; Node.js (spec reporter): "ℹ pass 31" and
  # "ℹ fail 0"; Bun: " 21 pass" and " 0 fail".
  case "$name" in
  deno)
    passed=$(sed -n -E 's/^(ok|FAILED) \| ([0-9]+) passed.*/\2/p' "$log/$name" | tail -1)
    failed=$(sed -n -E 's/^(ok|FAILED) \| .*\| ([0-9]+) failed.*/\2/p' "$log/$name" | tail -1)
    ;;
  node)
    passed=$(sed -n -E 's/^ℹ pass ([0-9]+)$/\1/p' "$log/$name" | tail -1)
    failed=$(sed -n -E 's/^ℹ fail ([0-9]+)$/\1/p' "$log/$name" | tail -1)
    ;;
  bun)
    passed=$(sed -n -E 's/^ *([0-9]+) pass$/\1/p' "$log/$name" | tail -1)
    failed=$(sed -n -E 's/^ *([0-9]+) fail$/\1/p' "$log/$name" | tail -1)
    ;;
  esac
  if [ -z "$passed" ] || [ -z "$failed" ]; then
    summary+=("$name: no summary from the test runner (exit code $code, ${seconds}s)")
    passed=${passed:-0}
    failed=$((${failed:-0} + 1))
    status=1
  else
    summary+=("$name: $passed passed, $failed failed (${seconds}s)")
  fi
  if [ "$code" -ne 0 ] || [ "$failed" -ne 0 ]; then
    status=1
    [ "$failed" -eq 0 ] && failed=1 # a runner that failed with every test passed still fails
  fi
  total_passed=$((total_passed + passed))
  total_failed=$((total_failed + failed))
}

run deno "$TLSRPC_DENO" test -A "${files[@]}"
run node "$TLSRPC_NODE" --test --test-reporter=spec --test-timeout="$timeout_ms" "${files[@]}"
run bun "$TLSRPC_BUN" test --timeout "$timeout_ms" "${bun_files[@]}"

echo
echo "== portable tests: Deno $("$TLSRPC_DENO" --version | head -1 | cut -d' ' -f2)," \
  "Node.js $("$TLSRPC_NODE" --version), Bun $("$TLSRPC_BUN" --version)"
printf '%s\n' "${summary[@]}"
echo "portable: $total_passed passed, $total_failed failed"
exit "$status"
