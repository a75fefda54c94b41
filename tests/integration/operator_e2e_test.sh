#!/usr/bin/env bash
# End to end: `foxden server`, `foxden-operator` and a real `foxden-agent` (exec driver, as root).
# A service Job with count 3 runs three processes; a killed task process comes back (restarted by
# the agent or replaced by the operator); a new command rolls out never more than maxParallel at
# a time; a broken version is reverted to the stable one automatically; a batch Job completes;
# invalid and unplaceable Jobs explain themselves once, without a hot loop; a few hundred mutated
# Jobs leave the operator alive; deleting the Job leaves no process and no cgroup.
source "$(dirname "$0")/lib/common.sh"
start_server
NODE=ope2e-$$
AGENT_PID=""
OP_PID=""
"$FOXDEN_BIN/foxden" token create --worker "$NODE" --kubeconfig "$KUBECONFIG_FILE" >"$WORK/worker.kubeconfig"
"$FOXDEN_BIN/foxden-agent" --kubeconfig "$WORK/worker.kubeconfig" --name "$NODE" --data-dir "$WORK/agent" \
  --heartbeat-ms 500 >>"$WORK/agent.log" 2>&1 &
AGENT_PID=$!
METRICS_PORT=$(free_port)
start_operator() {
  "$FOXDEN_BIN/foxden-operator" --kubeconfig "$KUBECONFIG_FILE" --metrics-addr "127.0.0.1:$METRICS_PORT" \
    --leader-elect-lease-duration 3s --leader-elect-renew-deadline 2s --leader-elect-retry-period 500ms \
    >>"$WORK/operator.log" 2>&1 &
  OP_PID=$!
}
stop_all() {
  if [ -n "$OP_PID" ]; then kill "$OP_PID" 2>/dev/null || true; wait "$OP_PID" 2>/dev/null || true; fi
  if [ -n "$AGENT_PID" ]; then kill -KILL "$AGENT_PID" 2>/dev/null || true; wait "$AGENT_PID" 2>/dev/null || true; fi
  # Tasks outlive a killed agent by design: kill what is left in this test's cgroups.
  for d in $(ls -d /sys/fs/cgroup/*/foxden-"$NODE"* 2>/dev/null || true); do
    find "$d" -name cgroup.procs -exec cat {} + 2>/dev/null | xargs -r kill -KILL 2>/dev/null || true
    find "$d" -depth -type d -exec rmdir {} + 2>/dev/null || true
  done
  OP_PID=""; AGENT_PID=""
  return 0
}
trap 'stop_all || true; cleanup' EXIT
start_operator

jp() { k 1.32 get "$1" "$2" -o jsonpath="$3" 2>/dev/null || true; }
wait_for() {  # wait_for DESCRIPTION COMMAND...: retries until the command succeeds (safety net 90 s)
  local what=$1; shift
  for _ in $(seq 1 900); do if "$@" >/dev/null 2>&1; then pass; return 0; fi; sleep 0.1; done
  fail "$what"; return 1
}
ready() { curl -sf "127.0.0.1:$METRICS_PORT/readyz" >/dev/null; }
metric() { curl -s "127.0.0.1:$METRICS_PORT/metrics" | awk -v m="$1" '$1 ~ "^"m {s+=$2} END {print s+0}'; }
worker_ready() { [ "$(jp worker "$NODE" '{.status.conditions[?(@.type=="Ready")].status}')" = True ]; }
allocs_json() { k 1.32 get allocations -l "foxden.io/job=$1" -o json 2>/dev/null; }
# Live (desiredState run, not terminal) allocations of a job, and how many run a command containing $2.
live_running() {  # live_running JOB WANT [NEEDLE]: exactly WANT live allocations, all Running (with NEEDLE)
  allocs_json "$1" | python3 -c '
import json, sys
want, needle = int(sys.argv[1]), sys.argv[2]
items = [a for a in json.load(sys.stdin)["items"]
         if a["spec"].get("desiredState", "run") == "run" and a.get("status", {}).get("phase") not in ("Succeeded", "Failed", "Lost")]
ok = len(items) == want and all(a.get("status", {}).get("phase") == "Running" and
        needle in " ".join(a["spec"]["tasks"][0]["command"]) for a in items)
sys.exit(0 if ok else 1)' "$2" "${3:-}"
}
cond_is() { [ "$(jp job.foxden.io "$1" "{.status.conditions[?(@.type==\"$2\")].status}")" = "$3" ]; }
events_of() { k 1.32 get events --field-selector "involvedObject.name=$1" -o jsonpath='{range .items[*]}{.reason}{" "}{.count}{"\n"}{end}' 2>/dev/null; }

wait_for "worker registers Ready" worker_ready
wait_for "operator leads and its caches sync (/readyz)" ready
curl -sf "127.0.0.1:$METRICS_PORT/healthz" >/dev/null && pass || fail "/healthz"
curl -s "127.0.0.1:$METRICS_PORT/metrics" | grep -q '^foxden_operator_reconciles_total' && pass || fail "/metrics lists reconciles"

job() {  # job NAME COMMAND_SUFFIX: the service Job of this test, with a given command
  cat <<YAML
apiVersion: foxden.io/v1alpha1
kind: Job
metadata: {name: $1, namespace: default}
spec:
  type: service
  update: {maxParallel: 1, minHealthySeconds: 2, healthyDeadlineSeconds: 60, autoRevert: true}
  groups:
  - name: app
    count: 3
    restartPolicy: {attempts: 1, intervalSeconds: 300, delaySeconds: 0, mode: Fail}
    reschedulePolicy: {delaySeconds: 1, delayFunction: constant, unlimited: true}
    ports: [{name: http}]
    tasks:
    - name: server
      command: ["/bin/sh", "-c", "$2"]
      resources: {requests: {cpu: 10m, memory: 16Mi}}
      killTimeoutSeconds: 2
YAML
}

# --- a service Job with count 3 runs three processes ------------------------------------------
job web "echo v1; exec sleep 1000" | k 1.32 apply -f - >/dev/null
wait_for "three allocations Running" live_running web 3 v1
wait_for "Job Available" cond_is web Available True
pids=$(allocs_json web | python3 -c 'import json,sys; print(" ".join(str(a["status"]["tasks"][0]["pid"]) for a in json.load(sys.stdin)["items"]))')
n=0; for p in $pids; do kill -0 "$p" 2>/dev/null && n=$((n+1)); done
[ "$n" = 3 ] && pass || fail "three live task processes (pids: $pids)"
[ "$(jp job.foxden.io web '{.status.running}')" = 3 ] && pass || fail "status.running = 3"

# --- kill -9 one task process: it comes back ---------------------------------------------------
victim=$(echo "$pids" | awk '{print $1}')
kill -9 "$victim"
three_new_pids() {
  local now; now=$(allocs_json web | python3 -c 'import json,sys; print(" ".join(str(a.get("status",{}).get("tasks",[{}])[0].get("pid",0)) for a in json.load(sys.stdin)["items"] if a["spec"].get("desiredState","run")=="run" and a.get("status",{}).get("phase")=="Running"))')
  local alive=0; for p in $now; do [ "$p" != "$victim" ] && kill -0 "$p" 2>/dev/null && alive=$((alive+1)); done
  [ "$alive" = 3 ]
}
wait_for "killed task restarted or replaced: three live processes again" three_new_pids

# --- a new command rolls out one at a time ------------------------------------------------------
# A monitor samples the allocations: a slot is "in flight" while its new-version allocation has not
# been healthy for minHealthySeconds (2) or its old allocation is still stopping. maxParallel is 1.
# Each sample also counts the slots with two live allocations (non-terminal, desiredState run):
# updates are stop first, so there must never be one.
monitor() {
  while :; do
    allocs_json web | python3 -c '
import calendar, json, sys, time
items = json.load(sys.stdin)["items"]
now = time.time()
slots = set()
live = {}
for a in items:
    st = a.get("status", {}).get("phase")
    ann = a["metadata"]["annotations"]
    slot = ann.get("foxden.io/slot")
    if a["spec"].get("desiredState") == "stop" and st not in ("Succeeded", "Failed", "Lost"):
        slots.add(slot)
    if a["spec"].get("desiredState", "run") == "run" and st not in ("Succeeded", "Failed", "Lost"):
        live[slot] = live.get(slot, 0) + 1
    if "v2" in " ".join(a["spec"]["tasks"][0]["command"]) and a["spec"].get("desiredState", "run") == "run":
        since = ann.get("foxden.io/healthy-since")
        if since is None or now - calendar.timegm(time.strptime(since, "%Y-%m-%dT%H:%M:%SZ")) < 2:
            slots.add(slot)
print(len(slots), sum(1 for n in live.values() if n > 1))' 2>/dev/null || true
    sleep 0.2
  done
}
monitor >"$WORK/inflight" &
MON_PID=$!
job web "echo v2; exec sleep 1000" | k 1.32 apply -f - >/dev/null
dep_is() { [ "$(jp job.foxden.io web '{.status.deployment.state}')" = "$1" ] && [ "$(jp job.foxden.io web '{.status.currentVersion}')" = "$2" ]; }
wait_for "version 1 rolled out" dep_is Successful 1
wait_for "three v2 allocations Running" live_running web 3 v2
kill "$MON_PID" 2>/dev/null; wait "$MON_PID" 2>/dev/null || true
max=$(awk '{print $1}' "$WORK/inflight" | sort -n | tail -1)
doubled=$(awk '$2 > 0' "$WORK/inflight" | wc -l)
samples=$(wc -l <"$WORK/inflight")
[ "${max:-9}" -le 1 ] && [ "$samples" -gt 5 ] && pass || fail "never more than maxParallel=1 slots in flight (max $max over $samples samples)"
[ "$doubled" = 0 ] && pass || fail "no slot with two live allocations ($doubled of $samples samples had one)"
echo "rolling update on a real agent: $samples samples, at most $max slot(s) in flight, $doubled with a slot holding two live allocations" >&2
[ "$(jp job.foxden.io web '{.status.stableVersion}')" = 1 ] && pass || fail "stableVersion 1"
[ "$(events_of web | awk '$1=="Replaced"{n+=$2} END{print n+0}')" -ge 3 ] && pass || fail "three Replaced events: $(events_of web)"

# --- a broken version is reverted to the stable one -----------------------------------------
job web "echo v3; exit 1" | k 1.32 apply -f - >/dev/null
reverted() { events_of web | grep -q '^RolloutReverted'; }
wait_for "broken version 2 reverted" reverted
back_to_v2() { jp job.foxden.io web '{.spec.groups[0].tasks[0].command[2]}' | grep -q v2; }
wait_for "spec back to the stable template" back_to_v2
wait_for "three v2 allocations Running after the revert" live_running web 3 v2
stable_again() { [ "$(jp job.foxden.io web '{.status.deployment.state}')" = Successful ] && [ "$(jp job.foxden.io web '{.status.currentVersion}')" = 3 ]; }
wait_for "revert is version 3 and it is healthy" stable_again
[ "$(jp job.foxden.io web '{.status.stableVersion}')" = 3 ] && pass || fail "stableVersion 3 after the revert"

# --- a batch Job runs to completion -----------------------------------------------------------
k 1.32 apply -f - >/dev/null <<YAML
apiVersion: foxden.io/v1alpha1
kind: Job
metadata: {name: once, namespace: default}
spec:
  type: batch
  groups:
  - name: work
    count: 2
    completions: 3
    tasks:
    - name: main
      command: ["/bin/sh", "-c", "echo done"]
      resources: {requests: {cpu: 10m, memory: 8Mi}}
YAML
check "batch Job Complete (kubectl wait)" k 1.32 wait --for=condition=Complete job.foxden.io/once --timeout=90s
[ "$(jp job.foxden.io once '{.status.groups[0].complete}')" = 3 ] && pass || fail "3 completions"

# --- invalid and unplaceable Jobs explain themselves once --------------------------------------
k 1.32 apply -f - >/dev/null <<YAML
apiVersion: foxden.io/v1alpha1
kind: Job
metadata: {name: bad-gt, namespace: default}
spec:
  constraints: [{key: cores, operator: Gt, values: [many]}]
  groups: [{name: g, tasks: [{name: t, command: [/bin/true]}]}]
---
apiVersion: foxden.io/v1alpha1
kind: Job
metadata: {name: bad-cron, namespace: default}
spec:
  type: batch
  schedule: {cron: "61 * * * *"}
  groups: [{name: g, tasks: [{name: t, command: [/bin/true]}]}]
---
apiVersion: foxden.io/v1alpha1
kind: Job
metadata: {name: too-big, namespace: default}
spec:
  groups: [{name: g, tasks: [{name: t, command: [/bin/true], resources: {requests: {memory: 64Ti}}}]}]
YAML
wait_for "Gt with a non-integer: InvalidSpec" cond_is bad-gt InvalidSpec True
wait_for "unparseable cron: InvalidSpec" cond_is bad-cron InvalidSpec True
jp job.foxden.io bad-gt '{.status.conditions[?(@.type=="InvalidSpec")].message}' | grep -q "integer" && pass || fail "InvalidSpec message names the problem"
unschedulable() { [ "$(jp job.foxden.io too-big '{.status.conditions[?(@.type=="Progressing")].reason}')" = Unschedulable ]; }
wait_for "unplaceable group: Progressing=False Unschedulable" unschedulable
jp job.foxden.io too-big '{.status.conditions[?(@.type=="Progressing")].message}' | grep -q "0/1 workers" && pass ||
  fail "unschedulable message counts workers: $(jp job.foxden.io too-big '{.status.conditions[?(@.type=="Progressing")].message}')"
r1=$(metric 'foxden_operator_reconciles_total')
sleep 4
r2=$(metric 'foxden_operator_reconciles_total')
[ $((r2 - r1)) -lt 40 ] && pass || fail "no hot requeue loop ($((r2 - r1)) reconciles in 4 s)"
[ "$(events_of bad-gt | awk '$1=="InvalidSpec"{n+=$2} END{print n+0}')" = 1 ] && pass || fail "one InvalidSpec Event: $(events_of bad-gt)"
[ "$(events_of bad-cron | awk '$1=="InvalidSpec"{n+=$2} END{print n+0}')" = 1 ] && pass || fail "one InvalidSpec Event for the cron"
[ "$(events_of too-big | awk '$1=="FailedScheduling"{n++} END{print n+0}')" = 1 ] && pass || fail "one FailedScheduling Event: $(events_of too-big)"

# --- mutated Jobs never crash the operator ------------------------------------------------------
python3 - "$WORK/fuzz.json" <<'PY'
import json, random, sys
random.seed(4)
base = {"apiVersion": "foxden.io/v1alpha1", "kind": "Job", "metadata": {"namespace": "default"},
        "spec": {"type": "service", "update": {"maxParallel": 1, "canary": 1}, "groups": [{"name": "g", "count": 1,
                 "ports": [{"name": "http"}], "constraints": [{"key": "k", "operator": "In", "values": ["a"]}],
                 "tasks": [{"name": "t", "command": ["/bin/true"], "resources": {"requests": {"cpu": "1m"}}}]}]}}
values = [None, 0, -1, 2**40, "", "x", "Gt", "In", [], {}, [1], {"a": 1}, True, "nvidia.com/gpu", "1.5", "@hourly", "61 * * * *"]
def paths(o, p=()):
    yield p
    if isinstance(o, dict):
        for k, v in o.items(): yield from paths(v, p + (k,))
    elif isinstance(o, list):
        for i, v in enumerate(o): yield from paths(v, p + (i,))
items = []
for n in range(300):
    j = json.loads(json.dumps(base)); j["metadata"]["name"] = "fz-%d" % n
    for _ in range(random.randint(1, 4)):
        p = random.choice([q for q in paths(j["spec"]) if q])
        o = j["spec"]
        for k in p[:-1]: o = o[k]
        if random.random() < 0.2 and isinstance(o, dict): o.pop(p[-1], None)
        else: o[p[-1]] = random.choice(values + ["Lt", "DistinctHosts", "system", "batch", "sysbatch"])
    items.append(j)
json.dump({"apiVersion": "v1", "kind": "List", "items": items}, open(sys.argv[1], "w"))
PY
k 1.32 apply -f "$WORK/fuzz.json" >"$WORK/fuzz.out" 2>&1 || true
accepted=$(grep -c created "$WORK/fuzz.out" || true)
sleep 3
kill -0 "$OP_PID" 2>/dev/null && pass || fail "operator alive after $accepted mutated Jobs"
ready && pass || fail "operator still ready after mutated Jobs"
echo "mutated Jobs accepted by the schema: $accepted of 300"
k 1.32 delete job.foxden.io once bad-gt bad-cron too-big --wait=false >/dev/null 2>&1 || true

# --- deleting the Job leaves no process and no cgroup ------------------------------------------
pids=$(allocs_json web | python3 -c 'import json,sys; print(" ".join(str(a.get("status",{}).get("tasks",[{}])[0].get("pid",0)) for a in json.load(sys.stdin)["items"]))')
uids=$(allocs_json web | python3 -c 'import json,sys; print(" ".join(a["metadata"]["uid"] for a in json.load(sys.stdin)["items"]))')
check "delete the Job (waits for the finalizer)" k 1.32 delete job.foxden.io web --timeout=90s
gone() { [ -z "$(jp job.foxden.io web '{.metadata.name}')" ] && [ "$(allocs_json web | python3 -c 'import json,sys; print(len(json.load(sys.stdin)["items"]))')" = 0 ]; }
wait_for "Job and its allocations gone" gone
alive=0; for p in $pids; do [ "$p" != 0 ] && kill -0 "$p" 2>/dev/null && alive=$((alive+1)); done
[ "$alive" = 0 ] && pass || fail "no task process left ($alive alive of: $pids)"
left=0; for u in $uids; do ls -d /sys/fs/cgroup/*/foxden-"$NODE"/*"$u"* >/dev/null 2>&1 && left=$((left+1)); done
[ "$left" = 0 ] && pass || fail "no task cgroup left: $(ls -d /sys/fs/cgroup/*/foxden-"$NODE"/* 2>/dev/null)"

# The operator exits non-zero when it loses its Lease (here: another holder takes it over).
kill -STOP "$OP_PID"
sleep 4
k 1.32 -n foxden-system patch lease foxden-operator --type merge -p '{"spec":{"holderIdentity":"someone-else","renewTime":"2099-01-01T00:00:00.000000Z","leaseDurationSeconds":3600}}' >/dev/null
kill -CONT "$OP_PID"
rc=0; for _ in $(seq 1 100); do kill -0 "$OP_PID" 2>/dev/null || break; sleep 0.1; done
wait "$OP_PID" 2>/dev/null || rc=$?
OP_PID=""
[ "$rc" = 1 ] && pass || fail "operator exits 1 after losing the Lease (rc=$rc)"
grep -q "lost leadership" "$WORK/operator.log" && pass || fail "operator logs the loss of leadership"

if grep -qE "ERROR: AddressSanitizer|runtime error:|ERROR: LeakSanitizer" "$WORK/operator.log"; then
  fail "sanitizer report in operator log"; grep -A20 -E "ERROR: AddressSanitizer|runtime error:" "$WORK/operator.log" | head -40 >&2
fi
stop_all
finish
