#!/usr/bin/env bash
# Node agent benchmark: watch-to-execve latency of task starts, agent RSS idle and with 100 running
# tasks, and helper processes per task. Needs root (exec driver). Prints figures; never fails on
# speed.
#   make build && sudo bench/agent_bench.sh            # 200 tasks, in two waves of 100
set -euo pipefail
cd "$(dirname "$0")/.."
export FOXDEN_BIN=${FOXDEN_BIN:-$PWD/build/bin} FOXDEN_SRC=$PWD
source tests/integration/lib/common.sh
WAVE=${WAVE:-100}
NODE=bench
start_server
"$FOXDEN_BIN/foxden" token create --worker $NODE --kubeconfig "$KUBECONFIG_FILE" >"$WORK/worker.kubeconfig"
"$FOXDEN_BIN/foxden-agent" --kubeconfig "$WORK/worker.kubeconfig" --name $NODE --data-dir "$WORK/agent" \
  --trace-starts >"$WORK/agent.log" 2>&1 &
AGENT=$!
trap 'kill -9 $AGENT 2>/dev/null || true; cleanup' EXIT
rss() { awk '/VmRSS/ {print $2 / 1024 " MiB"}' "/proc/$1/status"; }
# The API directly (curl + python3), so the benchmark also runs where no kubectl is installed.
api() { curl -sk -H "Authorization: Bearer $(admin_token)" -H 'Content-Type: application/json' "$@"; }
ALLOCS="https://127.0.0.1:$PORT/apis/foxden.io/v1alpha1/namespaces/default/allocations"
running() { api "$ALLOCS" | python3 -c 'import json,sys; print(sum(1 for i in json.load(sys.stdin)["items"] if i.get("status",{}).get("phase")=="Running"))'; }
wave() {  # wave FIRST LAST: creates allocations b-FIRST..b-LAST at once, waits until all run
  local pids=()
  for i in $(seq "$1" "$2"); do
    api -X POST "$ALLOCS" -o /dev/null -d @- <<JSON &
{"apiVersion":"foxden.io/v1alpha1","kind":"Allocation","metadata":{"name":"b-$i","namespace":"default",
 "labels":{"foxden.io/worker":"$NODE"}},"spec":{"workerName":"$NODE","jobType":"service",
 "tasks":[{"name":"main","command":["/bin/sleep","100000"],"resources":{"limits":{"memory":"16Mi"}}}]}}
JSON
    pids+=($!)
  done
  wait "${pids[@]}"
  for _ in $(seq 1 1200); do [ "$(running)" -ge "$2" ] && break; sleep 0.1; done
}
sleep 3
IDLE=$(rss $AGENT)
wave 1 "$WAVE"
sleep 2
RSS100=$(rss $AGENT)
if [ "$(stat -fc %T /sys/fs/cgroup)" = cgroup2fs ]; then CGMODE=v2; PIDS=/sys/fs/cgroup; else CGMODE=v1; PIDS=/sys/fs/cgroup/pids; fi
helpers=$(for d in $PIDS/foxden-$NODE/*/; do case $d in */spare-*/) continue ;; esac; echo $(( $(wc -l <"$d/cgroup.procs") - 1 )); done | sort | uniq -c | awk '{printf "%s task(s) with %s extra process(es); ", $1, $2}')
wave $((WAVE + 1)) $((2 * WAVE))
STARTED=$(running)
# One at a time: the start path without queueing behind a burst. Each start is awaited through the
# agent's own trace line (a grep every 10 ms), not by listing Allocations with curl + python (~25 ms
# of CPU per poll on the same 2 CPUs as the start being measured), and the next one is created
# 0.3 s later, once the previous start's status writes are done: on a real worker neither the API
# server nor its clients share the CPUs.
SEQ=${SEQ:-200}
for i in $(seq 1 "$SEQ"); do
  n=$((2 * WAVE + i))
  api -X POST "$ALLOCS" -o /dev/null -d @- <<JSON
{"apiVersion":"foxden.io/v1alpha1","kind":"Allocation","metadata":{"name":"b-$n","namespace":"default",
 "labels":{"foxden.io/worker":"$NODE"}},"spec":{"workerName":"$NODE","jobType":"service",
 "tasks":[{"name":"main","command":["/bin/sleep","100000"],"resources":{"limits":{"memory":"16Mi"}}}]}}
JSON
  for _ in $(seq 1 3000); do grep -q "alloc=default/b-$n " "$WORK/agent.log" && break; sleep 0.01; done
  sleep 0.3
done
grep -o 'alloc=default/b-[0-9]* watch_to_exec_us=[0-9]*' "$WORK/agent.log" |
  awk -v w=$((2 * WAVE)) '{split($1, a, "-"); split($2, b, "="); print (a[2] > w ? "seq" : "burst"), b[2]}' >"$WORK/lat-all.txt"
grep '^burst' "$WORK/lat-all.txt" | cut -d' ' -f2 | sort -n >"$WORK/lat.txt"
grep '^seq' "$WORK/lat-all.txt" | cut -d' ' -f2 | sort -n >"$WORK/lat-seq.txt"
# The same starts until the task runner has fsynced its state and set Running (after the execve).
grep -o 'alloc=default/b-[0-9]* watch_to_exec_us=[0-9]* watch_to_running_us=[0-9]*' "$WORK/agent.log" |
  awk -v w=$((2 * WAVE)) '{split($1, a, "-"); split($3, b, "="); if (a[2] > w) print b[2]}' | sort -n >"$WORK/lat-seq-running.txt"
pctf() { local f=$1 p=$2 n; n=$(wc -l <"$f"); awk -v p="$p" -v n="$n" 'NR == int((n - 1) * p / 100) + 1 {printf "%.2f ms", $1 / 1000}' "$f"; }
pct() { pctf "$WORK/lat.txt" "$1"; }
n=$(wc -l <"$WORK/lat.txt")
echo "== foxden-agent benchmark ($(nproc) CPUs, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(uname -r))"
echo "tasks running: $STARTED of $((2 * WAVE)) in the waves (exec driver: 4 namespaces, pivot_root, cgroups $CGMODE, seccomp, user nobody)"
echo "watch-to-execve over $n starts (two waves of $WAVE applied at once): p50 $(pct 50), p90 $(pct 90), p99 $(pct 99), max $(pct 100)"
echo "watch-to-execve, one allocation at a time ($(wc -l <"$WORK/lat-seq.txt") starts): p50 $(pctf "$WORK/lat-seq.txt" 50), p90 $(pctf "$WORK/lat-seq.txt" 90), p99 $(pctf "$WORK/lat-seq.txt" 99), max $(pctf "$WORK/lat-seq.txt" 100)"
echo "  the same starts to Running recorded (state fsynced): p50 $(pctf "$WORK/lat-seq-running.txt" 50), p99 $(pctf "$WORK/lat-seq-running.txt" 99)"
echo "agent RSS: idle $IDLE, with $WAVE running tasks $RSS100"
echo "per task, besides the task itself: $helpers(the task's init: PID 1 of its namespace, reaps and records the exit status)"
echo "server RSS with $((2 * WAVE)) allocations: $(rss $SERVER_PID)"
cp "$WORK/agent.log" "${BENCH_LOG:-/tmp/foxden-agent-bench.log}"
api -X DELETE "$ALLOCS" -o /dev/null
for _ in $(seq 1 600); do [ -z "$(find $PIDS/foxden-$NODE -mindepth 1 -maxdepth 1 -type d ! -name 'spare-*' 2>/dev/null)" ] && break; sleep 0.1; done
kill -9 $AGENT 2>/dev/null || true
rm_agent_cgroups $NODE
