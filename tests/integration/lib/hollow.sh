# Helpers for tests that run foxden-operator against hollow workers (tests/integration/
# hollow_workers.cc). Source after lib/common.sh and start_server.
#
#   start_hollow NAME ARGS...    hollow_workers process NAME (pid in HOLLOW_PIDS[NAME]), waits until ready
#   stop_hollow NAME [SIGNAL]
#   go_dark NAME WORKER...       those workers of process NAME stop answering; come_back NAME
#   start_operator [ARGS...]     foxden-operator (pid OPERATOR_PID, metrics port OPERATOR_PORT), waits for /readyz
#   stop_operator [SIGNAL]
#   set_clock RFC3339            the operator's fake clock (--fake-clock-file $CLOCK_FILE)
#   wait_until DESC SECONDS CMD  retries CMD every 0.2 s; pass, or fail after SECONDS (returns 0 either way)
#   allocs_json [SELECTOR]       all Allocations as JSON (kubectl), for jq
declare -A HOLLOW_PIDS=()
OPERATOR_PID=""
OPERATOR_PORT=""
CLOCK_FILE="$WORK/clock"
OPERATOR_LOG="$WORK/operator.log"

start_hollow() {
  local name=$1; shift
  rm -f "$WORK/hollow-$name.ready"
  : >"$WORK/hollow-$name.dark"
  "$FOXDEN_BIN/hollow_workers" --kubeconfig "$KUBECONFIG_FILE" --control "$WORK/hollow-$name.dark" \
    --ready-file "$WORK/hollow-$name.ready" --stats-file "$WORK/hollow-$name.stats" "$@" \
    >>"$WORK/hollow-$name.log" 2>&1 &
  HOLLOW_PIDS[$name]=$!
  for _ in $(seq 1 600); do
    [ -s "$WORK/hollow-$name.ready" ] && return 0
    kill -0 "${HOLLOW_PIDS[$name]}" 2>/dev/null || { echo "hollow $name exited:"; tail -20 "$WORK/hollow-$name.log"; return 1; }
    sleep 0.1
  done
  echo "hollow $name not ready"; tail -20 "$WORK/hollow-$name.log"; return 1
}

stop_hollow() {
  local pid=${HOLLOW_PIDS[$1]:-}
  [ -n "$pid" ] || return 0
  kill "${2:--TERM}" "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
  HOLLOW_PIDS[$1]=""
}

go_dark() { local name=$1; shift; printf '%s\n' "$@" >"$WORK/hollow-$name.dark"; }
come_back() { : >"$WORK/hollow-$1.dark"; }

start_operator() {
  [ -f "$CLOCK_FILE" ] || : >"$CLOCK_FILE"
  local before=0
  [ -f "$OPERATOR_LOG" ] && before=$(wc -l <"$OPERATOR_LOG")
  "$FOXDEN_BIN/foxden-operator" --kubeconfig "$KUBECONFIG_FILE" --metrics-addr 127.0.0.1:0 \
    --fake-clock-file "$CLOCK_FILE" "$@" >>"$OPERATOR_LOG" 2>&1 &
  OPERATOR_PID=$!
  OPERATOR_PORT=""
  for _ in $(seq 1 300); do
    OPERATOR_PORT=$(tail -n +$((before + 1)) "$OPERATOR_LOG" | sed -n 's/.*serving .* on 127.0.0.1:\([0-9]*\).*/\1/p' | tail -1)
    if [ -n "$OPERATOR_PORT" ] && curl -sf "http://127.0.0.1:$OPERATOR_PORT/readyz" >/dev/null 2>&1; then return 0; fi
    kill -0 "$OPERATOR_PID" 2>/dev/null || { echo "operator exited:"; tail -30 "$OPERATOR_LOG"; return 1; }
    sleep 0.1
  done
  echo "operator not ready"; tail -30 "$OPERATOR_LOG"; return 1
}

stop_operator() {
  [ -n "$OPERATOR_PID" ] || return 0
  kill "${1:--TERM}" "$OPERATOR_PID" 2>/dev/null || true
  wait "$OPERATOR_PID" 2>/dev/null || true
  OPERATOR_PID=""
}

hollow_cleanup() {
  stop_operator -KILL || true
  for n in "${!HOLLOW_PIDS[@]}"; do stop_hollow "$n" -KILL || true; done
  cleanup
}
trap hollow_cleanup EXIT

set_clock() { echo "$1" >"$CLOCK_FILE.tmp" && mv "$CLOCK_FILE.tmp" "$CLOCK_FILE"; }

wait_until() {
  local what=$1 secs=$2; shift 2
  local n=$((secs * 5))
  for _ in $(seq 1 "$n"); do
    if "$@" >/dev/null 2>&1; then pass; return 0; fi
    sleep 0.2
  done
  fail "$what (after ${secs}s)"
  return 0  # counted; the script goes on (set -e)
}

allocs_json() { k 1.32 get allocations -A -o json ${1:+-l "$1"} 2>/dev/null || echo '{"items":[]}'; }
job_json() { k 1.32 get job.foxden.io "$1" -o json 2>/dev/null || echo '{}'; }
job_cond() { job_json "$1" | jq -r --arg t "$2" '.status.conditions // [] | map(select(.type==$t)) | .[0].status // ""'; }
# count_allocs JOB JQ_FILTER: Allocations of JOB for which the filter is true.
count_allocs() { allocs_json "foxden.io/job=$1" | jq "[.items[] | select($2)] | length"; }
running_healthy='.status.phase=="Running" and ((.status.conditions // []) | map(select(.type=="Healthy" and .status=="True")) | length > 0)'
metric() { curl -sf "http://127.0.0.1:$OPERATOR_PORT/metrics" | awk -v m="$1" '$1==m {print $2}' | head -1; }

# sanitizer_logs_check FILE...: any ASan/UBSan/LSan report in these logs fails the test (shown).
sanitizer_logs_check() {
  local hits
  hits=$(grep -h -A15 -E "ERROR: AddressSanitizer|runtime error:|ERROR: LeakSanitizer" "$@" 2>/dev/null | head -60 || true)
  if [ -n "$hits" ]; then fail "sanitizer report"; echo "$hits" >&2; else pass; fi
}
