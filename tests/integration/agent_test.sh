#!/usr/bin/env bash
# foxden-agent against a real `foxden server`, Allocations created with kubectl: registration and
# Lease, a batch task to completion, restart policy, start errors, stop on delete, and re-attach
# after kill -9 of the agent without a second start.
source "$(dirname "$0")/lib/common.sh"
start_server
AGENT_PID=""
NODE=w1
AGENT_DATA="$WORK/agent"
"$FOXDEN_BIN/foxden" token create --worker $NODE --kubeconfig "$KUBECONFIG_FILE" >"$WORK/worker.kubeconfig"

start_agent() {
  "$FOXDEN_BIN/foxden-agent" --kubeconfig "$WORK/worker.kubeconfig" --name $NODE --data-dir "$AGENT_DATA" \
    --label rack=r1 --heartbeat-ms 500 >>"$WORK/agent.log" 2>&1 &
  AGENT_PID=$!
}
stop_agent() { [ -n "$AGENT_PID" ] && kill "${1:--TERM}" "$AGENT_PID" 2>/dev/null; wait "$AGENT_PID" 2>/dev/null || true; AGENT_PID=""; }
trap 'stop_agent -KILL; cleanup' EXIT

alloc() {  # alloc NAME TASKS_JSON [RESTART_JSON]
  local rp=${3:-}
  [ -n "$rp" ] || rp='{"attempts":1,"intervalSeconds":300,"delaySeconds":0,"mode":"Fail"}'
  k 1.32 apply -f - >/dev/null <<JSON
{"apiVersion":"foxden.io/v1alpha1","kind":"Allocation",
 "metadata":{"name":"$1","namespace":"default","labels":{"foxden.io/worker":"$NODE","foxden.io/job":"t"}},
 "spec":{"workerName":"$NODE","jobName":"t","groupName":"g","index":0,
         "restartPolicy":$rp,
         "tasks":$2}}
JSON
}
state_is() { [ "$(jp allocation "$1" '{.status.tasks[0].state}')" = "$2" ]; }
worker_ready() { [ "$(jp worker $NODE '{.status.conditions[?(@.type=="Ready")].status}')" = True ]; }
lease_renewed() { k 1.32 get lease $NODE -n foxden-system -o jsonpath='{.spec.renewTime}' 2>/dev/null | grep -q .; }
not_alive() { ! kill -0 "$1" 2>/dev/null; }

start_agent
wait_for "worker registers Ready" worker_ready
if [ "$(jp worker $NODE '{.metadata.labels.rack}')" = r1 ]; then pass; else fail "worker label"; fi
wait_for "lease renewed in foxden-system" lease_renewed

# A batch task runs to completion.
alloc done1 '[{"name":"main","command":["/bin/sh","-c","echo hello from $FOXDEN_TASK; exit 0"]}]'
wait_for "batch alloc Succeeded" phase_is done1 Succeeded
[ "$(jp allocation done1 '{.status.tasks[0].reason}')" = Completed ] && pass || fail "reason Completed"
[ "$(jp allocation done1 '{.status.tasks[0].exitCode}')" = 0 ] && pass || fail "exit code 0"
[ -n "$(jp allocation done1 '{.status.tasks[0].startedAt}')" ] && [ -n "$(jp allocation done1 '{.status.tasks[0].finishedAt}')" ] && pass || fail "start and finish times"
uid=$(jp allocation done1 '{.metadata.uid}')
grep -q "hello from main" "$AGENT_DATA/allocs/$uid/main/logs/stdout.0" && pass || fail "stdout captured"

# Restart policy: a crashing task is restarted `attempts` times, then the allocation fails.
alloc crash1 '[{"name":"main","command":["/bin/sh","-c","exit 3"]}]' '{"attempts":2,"intervalSeconds":300,"delaySeconds":0,"mode":"Fail"}'
wait_for "crashing alloc Failed" phase_is crash1 Failed
[ "$(jp allocation crash1 '{.status.tasks[0].restarts}')" = 2 ] && pass || fail "restarts = attempts ($(jp allocation crash1 '{.status.tasks[0].restarts}'))"
[ "$(jp allocation crash1 '{.status.tasks[0].exitCode}')" = 3 ] && pass || fail "exit code 3"

# Bad input is reported, and the agent keeps serving.
alloc bad1 '[{"name":"main","command":["/no/such/binary"]}]'
wait_for "missing binary fails" phase_is bad1 Failed
jp allocation bad1 '{.status.tasks[0].reason}' | grep -q StartError && pass || fail "StartError reason"
jp allocation bad1 '{.status.tasks[0].message}' | grep -qi "no such" && pass || fail "StartError names the cause: $(jp allocation bad1 '{.status.tasks[0].message}')"
alloc bad2 '[{"name":"main","command":["/bin/true"],"killSignal":"SIGBOGUS"}]'
wait_for "bogus signal fails" phase_is bad2 Failed
jp allocation bad2 '{.status.tasks[0].message}' | grep -q killSignal && pass || fail "bogus signal message"

# A long-running task; kill -9 the agent; the task keeps its PID and is not started twice.
alloc long1 '[{"name":"main","command":["/bin/sh","-c","echo started >> /alloc/starts; exec sleep 1000"]}]'
wait_for "long task Running" state_is long1 Running
pid1=$(jp allocation long1 '{.status.tasks[0].pid}')
luid=$(jp allocation long1 '{.metadata.uid}')
stop_agent -KILL
kill -0 "$pid1" 2>/dev/null && pass || fail "task survives agent kill -9"
start_agent
sleep 3
pid2=$(jp allocation long1 '{.status.tasks[0].pid}')
[ "$pid1" = "$pid2" ] && kill -0 "$pid1" 2>/dev/null && pass || fail "re-attached with the same pid ($pid1 -> $pid2)"
[ "$(grep -c started "$AGENT_DATA/allocs/$luid/alloc/starts")" = 1 ] && pass || fail "started exactly once"
[ "$(jp allocation long1 '{.status.tasks[0].restarts}')" = 0 ] && pass || fail "no restarts after re-attach"
# A completed allocation is not run again after the restart.
[ "$(grep -c "hello from main" "$AGENT_DATA/allocs/$uid/main/logs/stdout.0")" = 1 ] && pass || fail "completed task not rerun"

# Probes: readiness flips in status; a failing liveness probe restarts the task.
alloc probe1 '[{"name":"main","command":["/bin/sh","-c","exec sleep 1000"],
  "readinessProbe":{"exec":{"command":["test","-f","/local/ready"]},"periodSeconds":1},
  "livenessProbe":{"exec":{"command":["test","!","-f","/local/die"]},"periodSeconds":1,"failureThreshold":2}}]' \
  '{"attempts":3,"intervalSeconds":300,"delaySeconds":0,"mode":"Fail"}'
wait_for "probe task Running" state_is probe1 Running
ready_is() { [ "$(jp allocation probe1 '{.status.tasks[0].ready}')" = "$1" ]; }
sleep 2
ready_is false && pass || fail "not ready before the readiness file exists"
puid=$(jp allocation probe1 '{.metadata.uid}')
touch "$AGENT_DATA/allocs/$puid/main/local/ready"
wait_for "readiness flips to true" ready_is true
restarts_is() { [ "$(jp allocation probe1 '{.status.tasks[0].restarts}')" = "$1" ]; }
touch "$AGENT_DATA/allocs/$puid/main/local/die"
wait_for "failing liveness restarts the task" restarts_is 1
rm -f "$AGENT_DATA/allocs/$puid/main/local/die"
wait_for "restarted task Running again" state_is probe1 Running
k 1.32 delete allocation probe1 --wait=false >/dev/null

# Deleting the allocation stops the task and leaves no process.
k 1.32 delete allocation long1 --wait=false >/dev/null
wait_for "task gone after delete" not_alive "$pid1"

stop_agent
# The agent's (now empty) cgroup parents.
rm_agent_cgroups $NODE
leftover=$( (ls -d /sys/fs/cgroup/*/foxden-$NODE* 2>/dev/null || true) | wc -l)
[ "$leftover" = 0 ] && pass || fail "cgroups left behind: $(ls -d /sys/fs/cgroup/*/foxden-$NODE*/* 2>/dev/null)"
finish
