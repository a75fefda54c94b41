#!/usr/bin/env bash
# kill -9 the agent ten times at random moments while 20 tasks run (5 of them crash-looping):
# after each restart the steady tasks keep their PIDs and zero restarts, restart counters never go
# down, and no task runs twice. Then the same with the agent's state (DATA/state, DATA/driver)
# deleted, so that re-attachment must come from the cgroup tree alone.
source "$(dirname "$0")/lib/common.sh"
start_server
NODE=crash1
AGENT_DATA="$WORK/agent"
AGENT_PID=""
"$FOXDEN_BIN/foxden" token create --worker $NODE --kubeconfig "$KUBECONFIG_FILE" >"$WORK/worker.kubeconfig"
start_agent() {
  "$FOXDEN_BIN/foxden-agent" --kubeconfig "$WORK/worker.kubeconfig" --name $NODE --data-dir "$AGENT_DATA" \
    --heartbeat-ms 500 >>"$WORK/agent.log" 2>&1 &
  AGENT_PID=$!
}
kill_agent() { [ -n "$AGENT_PID" ] && kill -9 "$AGENT_PID" 2>/dev/null; wait "$AGENT_PID" 2>/dev/null || true; AGENT_PID=""; }
trap 'kill_agent; cleanup' EXIT

{
  for i in $(seq 1 20); do
    if [ "$i" -le 15 ]; then
      cmd='echo x >> /alloc/starts; exec sleep 100000'; rp='{"attempts":1000,"intervalSeconds":3600,"delaySeconds":0,"mode":"Fail"}'; kind=steady
    else
      cmd='sleep 0.2; exit 1'; rp='{"attempts":100000,"intervalSeconds":3600,"delaySeconds":0,"mode":"Fail"}'; kind=crash
    fi
    cat <<JSON
---
{"apiVersion":"foxden.io/v1alpha1","kind":"Allocation",
 "metadata":{"name":"$kind-$i","namespace":"default","labels":{"foxden.io/worker":"$NODE","kind":"$kind"}},
 "spec":{"workerName":"$NODE","jobName":"crash","groupName":"g","index":$i,"jobType":"service","restartPolicy":$rp,
         "tasks":[{"name":"main","command":["/bin/sh","-c","$cmd"]}]}}
JSON
  done
} >"$WORK/allocs.yaml"
start_agent
k 1.32 apply -f "$WORK/allocs.yaml" >/dev/null

# "name pid restarts state" for every allocation, from the API.
snapshot() {
  k 1.32 get allocations -o jsonpath='{range .items[*]}{.metadata.name} {.status.tasks[0].pid} {.status.tasks[0].restarts} {.status.tasks[0].state} {.status.tasks[0].message}{"\n"}{end}' |
    awk '{ if ($4 == "") { print $1, 0, $2, $3 } else { print $1, $2, $3, $4, $5, $6, $7, $8 } }'
}
steady_running() { [ "$(snapshot | awk '$1 ~ /^steady/ && $4 == "Running" && $2 > 0' | wc -l)" = 15 ]; }
for _ in $(seq 1 600); do steady_running && break; sleep 0.1; done
if steady_running; then pass; else fail "15 steady tasks running"; snapshot >&2; fi
declare -A PID RESTARTS
while read -r name pid restarts state msg; do PID[$name]=$pid; RESTARTS[$name]=${restarts:-0}; done < <(snapshot)
snapshot | grep steady | awk '$3 != 0' | sed 's/^/  restarted before the first kill: /' >&2 || true

round() {  # round LABEL: verify after a restart
  local label=$1 bad=0
  for _ in $(seq 1 300); do steady_running && break; sleep 0.1; done
  sleep 1.5  # a few status writes: counters settle
  while read -r name pid restarts state msg; do
    if [[ $name == steady* ]]; then
      if [ "$pid" != "${PID[$name]}" ] || ! kill -0 "$pid" 2>/dev/null || [ "${restarts:-0}" != 0 ]; then
        bad=1; echo "  $label: $name pid ${PID[$name]} -> $pid restarts $restarts state $state $msg" >&2
      fi
    else
      if [ "${restarts:-0}" -lt "${RESTARTS[$name]}" ]; then
        bad=1; echo "  $label: $name restarts went down ${RESTARTS[$name]} -> $restarts" >&2
      fi
      RESTARTS[$name]=${restarts:-0}
    fi
  done < <(snapshot)
  for f in "$AGENT_DATA"/allocs/*/alloc/starts; do
    if [ "$(wc -l <"$f")" != 1 ]; then bad=1; echo "  $label: a steady task started $(wc -l <"$f") times" >&2; fi
  done
  if [ $bad = 0 ]; then pass; else fail "$label"; fi
}

for r in $(seq 1 10); do
  sleep "$(awk -v s=$RANDOM 'BEGIN{srand(s); printf "%.2f", 0.2 + rand() * 1.3}')"
  kill_agent
  start_agent
  round "kill -9 #$r"
done
for r in $(seq 1 3); do
  sleep 0.5
  kill_agent
  rm -rf "$AGENT_DATA/state" "$AGENT_DATA/driver"
  start_agent
  round "kill -9 with state deleted #$r"
done
crash_restarts=$(snapshot | awk '$1 ~ /^crash/ {s += $3} END {print s+0}')
echo "crash-looping tasks restarted $crash_restarts times in all"
[ "$crash_restarts" -gt 0 ] && pass || fail "crash loopers never restarted"

k 1.32 delete allocations --all --wait=false >/dev/null
task_cgroups() { find /sys/fs/cgroup/pids/foxden-$NODE -mindepth 1 -maxdepth 1 -type d ! -name "spare-*" 2>/dev/null | wc -l; }  # spare-N: kept ready
for _ in $(seq 1 300); do [ "$(task_cgroups)" = 0 ] && break; sleep 0.1; done
left=$(task_cgroups)
[ "$left" = 0 ] && pass || fail "task cgroups left after deleting every allocation: $left"
kill_agent
# Nothing forked by any of the agents may outlive them and their allocations: a task init left
# waiting for a "go" from a killed agent would show up here (its command line is the agent's).
sleep 1
stray=$(pgrep -f -- "--data-dir $AGENT_DATA" || true)
[ -z "$stray" ] && pass || { fail "processes left behind: $stray"; kill -9 $stray 2>/dev/null || true; }
rm_agent_cgroups $NODE
finish
