#!/usr/bin/env bash
# Garbage collection of finished allocations (as root, real agent): only the newest --gc-max-allocs
# finished directories stay; a deleted allocation's directory goes at once; a running one is never
# touched; a symlink a task left pointing at the host is removed, not followed; finished tasks'
# cgroups are gone.
source "$(dirname "$0")/lib/common.sh"
start_server
NODE=gc1
AGENT_DATA="$WORK/agent"
"$FOXDEN_BIN/foxden" token create --worker $NODE --kubeconfig "$KUBECONFIG_FILE" >"$WORK/worker.kubeconfig"
"$FOXDEN_BIN/foxden-agent" --kubeconfig "$WORK/worker.kubeconfig" --name $NODE --data-dir "$AGENT_DATA" \
  --heartbeat-ms 500 --gc-max-allocs 2 --gc-interval-seconds 1 >>"$WORK/agent.log" 2>&1 &
AGENT_PID=$!
CANARY=$WORK/host-canary
mkdir -p "$CANARY" && echo keep >"$CANARY/file"
trap 'kill -9 $AGENT_PID 2>/dev/null || true; for d in /sys/fs/cgroup/*/foxden-$NODE; do rmdir "$d"/* "$d" 2>/dev/null || true; done; cleanup' EXIT

alloc() {  # alloc NAME COMMAND_JSON
  k 1.32 apply -f - >/dev/null <<JSON
{"apiVersion":"foxden.io/v1alpha1","kind":"Allocation",
 "metadata":{"name":"$1","namespace":"default","labels":{"foxden.io/worker":"$NODE"}},
 "spec":{"workerName":"$NODE","restartPolicy":{"attempts":0,"mode":"Fail"},"tasks":[{"name":"main","command":$2}]}}
JSON
}
dir_of() { echo "$AGENT_DATA/allocs/$(jp allocation "$1" '{.metadata.uid}')"; }
gone() { [ ! -e "$1" ]; }

alloc run1 '["/bin/sleep","1000"]'
wait_for "running allocation" phase_is run1 Running
RUN_DIR=$(dir_of run1)
# The first finished allocation leaves a symlink to a host directory in the shared alloc dir.
alloc f1 '["/bin/ln","-s","'$CANARY'","/alloc/escape"]'
wait_for "f1 done" phase_is f1 Succeeded
F1=$(dir_of f1)
[ -L "$F1/alloc/escape" ] && pass || fail "the task left its symlink"
sleep 1.1  # distinct finish times (the plan orders by seconds)
for n in f2 f3; do alloc $n '["/bin/true"]'; wait_for "$n done" phase_is $n Succeeded; sleep 1.1; done
F2=$(dir_of f2); F3=$(dir_of f3)
wait_for "over the limit of 2 finished allocations, the oldest goes" gone "$F1"
[ -d "$F2" ] && [ -d "$F3" ] && pass || fail "the two newest finished allocations stay"
[ -f "$CANARY/file" ] && pass || fail "the symlink was followed: host canary removed"
[ -d "$RUN_DIR/main/local" ] && pass || fail "running allocation's directory untouched"
k 1.32 delete allocation f3 >/dev/null
wait_for "a deleted allocation's directory goes at once" gone "$F3"
left=$( (find /sys/fs/cgroup/pids/foxden-$NODE /sys/fs/cgroup/foxden-$NODE -mindepth 1 -maxdepth 1 -type d ! -name "spare-*" 2>/dev/null || true) | wc -l)
[ "$left" = 1 ] && pass || fail "only the running task has a cgroup ($left found)"
RUN_PID=$(jp allocation run1 '{.status.tasks[0].pid}')
kill -0 "$RUN_PID" 2>/dev/null && pass || fail "running task still runs"
k 1.32 delete allocation run1 >/dev/null
not_alive() { ! kill -0 "$1" 2>/dev/null; }
wait_for "running task stopped on delete" not_alive "$RUN_PID"
wait_for "and its directory collected" gone "$RUN_DIR"
finish
