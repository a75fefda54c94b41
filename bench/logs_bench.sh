#!/usr/bin/env bash
# Task log benchmark: how fast a task can write through its init into rotated files, the init's
# resident memory while it copies, and how fast `foxden logs` reads them back. Needs root. Prints
# figures; never fails on speed.
#   make build && sudo bench/logs_bench.sh           # MB=512 by default
set -euo pipefail
cd "$(dirname "$0")/.."
export FOXDEN_BIN=${FOXDEN_BIN:-$PWD/build/bin} FOXDEN_SRC=$PWD
source tests/integration/lib/common.sh
MB=${MB:-512}
NODE=logs-bench
start_server
"$FOXDEN_BIN/foxden" token create --worker $NODE --kubeconfig "$KUBECONFIG_FILE" >"$WORK/worker.kubeconfig"
"$FOXDEN_BIN/foxden-agent" --kubeconfig "$WORK/worker.kubeconfig" --name $NODE --data-dir "$WORK/agent" \
  --listen 127.0.0.1:0 >"$WORK/agent.log" 2>&1 &
AGENT=$!
finish_bench() {
  k 1.32 delete allocations --all --wait=false >/dev/null 2>&1 || true
  sleep 2
  kill $AGENT 2>/dev/null || true
  wait $AGENT 2>/dev/null || true
  rm_agent_cgroups $NODE
  cleanup
}
trap finish_bench EXIT
jp() { k 1.32 get "$1" "$2" -o jsonpath="$3" 2>/dev/null || true; }
# The task times itself: `yes` writes 100-byte lines as fast as the pipe takes them.
k 1.32 apply -f - >/dev/null <<JSON
{"apiVersion":"foxden.io/v1alpha1","kind":"Allocation","metadata":{"name":"bench","namespace":"default",
 "labels":{"foxden.io/worker":"$NODE"}},"spec":{"workerName":"$NODE","jobType":"service",
 "tasks":[{"name":"main","logs":{"maxFiles":10,"maxFileSize":"128Mi"},"command":["/bin/sh","-c",
   "while [ ! -f /local/go ]; do sleep 0.05; done; s=\$(date +%s%N); yes \$(printf '%099d' 0) | head -c ${MB}M; e=\$(date +%s%N); echo \$(( (e - s) / 1000000 )) > /local/ms; exec sleep 100000"]}]}}
JSON
for _ in $(seq 1 600); do [ "$(jp allocation bench '{.status.tasks[0].state}')" = Running ] && break; sleep 0.1; done
uid=$(jp allocation bench '{.metadata.uid}')
init=$(jp allocation bench '{.status.tasks[0].pid}')
rss() { awk '/VmRSS/ {print $2}' "/proc/$1/status"; }
idle_rss=$(rss "$init")
touch "$WORK/agent/allocs/$uid/main/local/go"
peak=0
while [ ! -s "$WORK/agent/allocs/$uid/main/local/ms" ]; do r=$(rss "$init"); [ "$r" -gt "$peak" ] && peak=$r; sleep 0.05; done
ms=$(cat "$WORK/agent/allocs/$uid/main/local/ms")
files=$(ls "$WORK/agent/allocs/$uid/main/logs" | grep -c '^stdout\.')
for _ in $(seq 1 600); do [ -n "$(jp worker $NODE '{.status.agentEndpoint.port}')" ] && break; sleep 0.1; done
s=$(date +%s%N)
bytes=$("$FOXDEN_BIN/foxden" logs bench --kubeconfig "$KUBECONFIG_FILE" | wc -c)
e=$(date +%s%N)
read_ms=$(( (e - s) / 1000000 ))
echo "task writes ${MB} MiB of 100-byte lines through its init: ${ms} ms ($(( MB * 1000 / (ms > 0 ? ms : 1) )) MiB/s), ${files} files"
echo "init RSS: ${idle_rss} KiB before, peak ${peak} KiB while copying"
echo "foxden logs reads $(( bytes / 1048576 )) MiB: ${read_ms} ms ($(( bytes / 1048576 * 1000 / (read_ms > 0 ? read_ms : 1) )) MiB/s)"
