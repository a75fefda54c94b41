# Shared helpers for integration tests: start a real `foxden server` on a free port with a fresh
# data directory, run kubectl with a fresh cache, assert on output. Source it from a *_test.sh.
set -euo pipefail

FOXDEN_BIN=${FOXDEN_BIN:-$(cd "$(dirname "${BASH_SOURCE[0]}")/../../.." && pwd)/build/bin}
FOXDEN_SRC=${FOXDEN_SRC:-$(cd "$(dirname "${BASH_SOURCE[0]}")/../../.." && pwd)}
KUBECTL_DIR=${KUBECTL_DIR:-/usr/lib/google-cloud-sdk/bin}
TESTDATA="$FOXDEN_SRC/tests/integration/testdata"
WORK=$(mktemp -d "${FOXDEN_WORK_PREFIX:-/tmp/foxden-it}.XXXXXX")
SERVER_PID=""
FAILURES=0
PASSES=0

cleanup() {
  [ -n "$SERVER_PID" ] && kill "$SERVER_PID" 2>/dev/null && wait "$SERVER_PID" 2>/dev/null || true
  jobs -p | xargs -r kill 2>/dev/null || true
  if [ "$FAILURES" -eq 0 ] && [ -z "${KEEP_WORK:-}" ]; then rm -rf "$WORK"; else echo "work dir kept: $WORK"; fi
}
trap cleanup EXIT

# The cgroup parents of agent NODE (and its raw_exec one), once its tasks are gone: the spare cgroups
# an agent keeps ready (spare-N, v1) go first. An agent stopped with SIGTERM removes its spares
# itself; after a kill -9 they stay until the next agent of that name starts.
rm_agent_cgroups() {
  local d
  for d in /sys/fs/cgroup/*/foxden-"$1" /sys/fs/cgroup/*/foxden-"$1"-raw /sys/fs/cgroup/foxden-"$1"; do
    [ -d "$d" ] || continue
    rmdir "$d"/spare-* 2>/dev/null || true
    rmdir "$d" 2>/dev/null || true
  done
}
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# start_server [DATA_DIR] [extra args...]: starts foxden server, waits until it answers.
start_server() {
  local data=${1:-$WORK/data}; shift || true
  PORT=${PORT:-$(free_port)}
  "$FOXDEN_BIN/foxden" server --data-dir "$data" --listen "127.0.0.1:$PORT" --crds "$FOXDEN_SRC/crds" "$@" \
    >>"$WORK/server.log" 2>&1 &
  SERVER_PID=$!
  KUBECONFIG_FILE="$data/kubeconfig"
  for _ in $(seq 1 200); do
    if [ -s "$KUBECONFIG_FILE" ] && curl -sk "https://127.0.0.1:$PORT/healthz" >/dev/null 2>&1; then return 0; fi
    if ! kill -0 "$SERVER_PID" 2>/dev/null; then echo "server exited:"; cat "$WORK/server.log"; return 1; fi
    sleep 0.05
  done
  echo "server did not start"; cat "$WORK/server.log"; return 1
}

stop_server() {
  if [ -n "$SERVER_PID" ]; then
    kill "${1:--TERM}" "$SERVER_PID" 2>/dev/null || true
    wait "$SERVER_PID" 2>/dev/null || true
  fi
  SERVER_PID=""
}

admin_token() { cat "$(dirname "$KUBECONFIG_FILE")/admin.token"; }

# k VERSION args...: kubectl of that minor with a fresh cache dir per version.
k() {
  local v=$1; shift
  "$KUBECTL_DIR/kubectl.$v" --kubeconfig "$KUBECONFIG_FILE" --cache-dir "$WORK/cache-$v" "$@"
}

# jp KIND NAME JSONPATH: one field of an object ("" when absent or on error).
jp() { k 1.32 get "$1" "$2" -o jsonpath="$3" 2>/dev/null || true; }
# phase_is ALLOCATION PHASE
phase_is() { [ "$(jp allocation "$1" '{.status.phase}')" = "$2" ]; }
# wait_for DESCRIPTION COMMAND...: retries until the command succeeds, then passes; fails after
# a safety net of WAIT_FOR_TENTHS tenths of a second (default 600: 60 s).
wait_for() {
  local what=$1; shift
  for _ in $(seq 1 "${WAIT_FOR_TENTHS:-600}"); do if "$@" >/dev/null 2>&1; then pass; return 0; fi; sleep 0.1; done
  fail "$what"; return 1
}
pass() { PASSES=$((PASSES+1)); }
fail() { FAILURES=$((FAILURES+1)); echo "FAIL: $*" >&2; }

# check NAME COMMAND...: runs the command, counts pass/fail, shows output on failure.
check() {
  local name=$1; shift
  local out
  if out=$("$@" 2>&1); then pass; else fail "$name"; echo "$out" | sed 's/^/    /' >&2; fi
}

# expect_contains NAME NEEDLE COMMAND...: command must succeed and print NEEDLE.
expect_contains() {
  local name=$1 needle=$2; shift 2
  local out rc=0
  out=$("$@" 2>&1) || rc=$?
  if [ $rc -eq 0 ] && grep -qF -- "$needle" <<<"$out"; then pass; else fail "$name (rc=$rc, wanted '$needle')"; echo "$out" | sed 's/^/    /' >&2; fi
}

# expect_fail_contains NAME NEEDLE COMMAND...: command must fail and print NEEDLE.
expect_fail_contains() {
  local name=$1 needle=$2; shift 2
  local out rc=0
  out=$("$@" 2>&1) || rc=$?
  if [ $rc -ne 0 ] && grep -qF -- "$needle" <<<"$out"; then pass; else fail "$name (rc=$rc, wanted failure with '$needle')"; echo "$out" | sed 's/^/    /' >&2; fi
}

# Under the ASan+UBSan build, any report in the server's log fails the test.
sanitizer_check() {
  if [ -f "$WORK/server.log" ] && grep -qE "ERROR: AddressSanitizer|runtime error:|ERROR: LeakSanitizer" "$WORK/server.log"; then
    fail "sanitizer report in server log"
    grep -A20 -E "ERROR: AddressSanitizer|runtime error:|ERROR: LeakSanitizer" "$WORK/server.log" | head -60 >&2
  else
    pass
  fi
}

finish() {
  stop_server
  sanitizer_check
  echo "$PASSES passed, $FAILURES failed"
  [ "$FAILURES" -eq 0 ]
}
