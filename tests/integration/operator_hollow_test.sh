#!/usr/bin/env bash
# foxden-operator against `foxden server` and hollow workers (simulated, tests/integration/
# hollow_workers.cc): batch completion and failure accounting; a system job follows workers
# joining and leaving; a periodic job fires on its schedule (fake clock) and honours Forbid,
# Replace and Allow; constraints, GPUs, static ports and spread place as asked; an unplaceable
# group explains itself; a lost worker's allocations are replaced elsewhere; stopping the operator
# and the server for longer than the grace period evicts nothing; a drain keeps its budget.
# Own work-dir prefix: clean-ups of /tmp/foxden-it.* elsewhere must not pull the floor from under us.
FOXDEN_WORK_PREFIX=/tmp/foxden-hollow-it
source "$(dirname "$0")/lib/common.sh"
source "$(dirname "$0")/lib/hollow.sh"
start_server
GRACE=10

cat >"$WORK/classes.yaml" <<'EOF'
classes:
- {name: cpu, count: 6, cpu: "4", memory: 8Gi, labels: {pool: general}, zones: {key: zone, values: [a, b, c]}}
- {name: gpu, count: 3, cpu: "16", memory: 64Gi, labels: {pool: gpu},
   gpus: {count: 4, vendor: nvidia, model: H100, memoryBytes: 85899345920}}
EOF
start_hollow main --classes "$WORK/classes.yaml" --prefix hw --renew-seconds 1 --lease-seconds "$GRACE" --start-delay-ms 100
start_operator --worker-grace-period ${GRACE}s --worker-monitor-period 500ms

job() {  # job NAME YAML_SPEC_BODY (indented under spec:)
  k 1.32 apply -f - >/dev/null <<EOF
apiVersion: foxden.io/v1alpha1
kind: Job
metadata: {name: $1, namespace: default}
spec:
$2
EOF
}

# ---- batch: completion and failure accounting ----
job batch-ok '  type: batch
  groups:
  - name: work
    count: 2
    completions: 4
    tasks:
    - {name: t, command: ["sleep", "1"], resources: {requests: {cpu: 100m, memory: 16Mi}}}'
job batch-bad '  type: batch
  backoffLimit: 1
  groups:
  - name: work
    count: 1
    reschedulePolicy: {attempts: 0}
    restartPolicy: {attempts: 0, mode: Fail}
    tasks:
    - {name: t, command: ["/bin/false"], resources: {requests: {cpu: 100m, memory: 16Mi}}}'
complete_is() { [ "$(job_cond "$1" Complete)" = True ]; }
failed_is() { [ "$(job_cond "$1" Failed)" = True ]; }
wait_until "batch job Complete" 60 complete_is batch-ok
succeeded=$(count_allocs batch-ok '.status.phase=="Succeeded"')
[ "$succeeded" = 4 ] && pass || fail "batch-ok: 4 allocations Succeeded (got $succeeded)"
gc=$(job_json batch-ok | jq -r '.status.groups[0].complete // 0')
[ "$gc" = 4 ] && pass || fail "batch-ok: status.groups[0].complete = 4 (got $gc)"
wait_until "failing batch job Failed" 60 failed_is batch-bad
nf=$(count_allocs batch-bad '.status.phase=="Failed"')
[ "$nf" -ge 1 ] && pass || fail "batch-bad: failed allocations counted ($nf)"
gf=$(job_json batch-bad | jq -r '.status.groups[0].failed // 0')
[ "$gf" -ge 1 ] && pass || fail "batch-bad: status.groups[0].failed >= 1 (got $gf)"

# ---- system job: one allocation per eligible worker, following workers ----
job sys '  type: system
  constraints: [{key: pool, operator: In, values: [general]}]
  groups:
  - name: agent
    tasks:
    - {name: t, command: ["sleep", "infinity"], resources: {requests: {cpu: 50m, memory: 8Mi}}}'
sys_running() { [ "$(count_allocs sys "$running_healthy")" = "$1" ]; }
wait_until "system job on the 6 general workers" 60 sys_running 6
start_hollow late --count 2 --prefix late --label pool=general --renew-seconds 1 --lease-seconds "$GRACE" --start-delay-ms 100
wait_until "system job follows 2 joining workers" 60 sys_running 8
stop_hollow late
k 1.32 delete worker late-0 late-1 --wait=false >/dev/null 2>&1 || true
wait_until "system job lets go of the workers that left" 60 sys_running 6
on_late=$(allocs_json foxden.io/job=sys | jq '[.items[] | select(.spec.workerName|startswith("late-")) | select(.status.phase=="Running" or .status.phase=="Pending")] | length')
[ "$on_late" = 0 ] && pass || fail "no live allocation left on departed workers ($on_late)"

# ---- placement: GPUs + constraint, static ports, spread ----
job gpu '  type: service
  constraints: [{key: foxden.io/gpu-model, operator: In, values: [H100]}]
  groups:
  - name: train
    count: 3
    tasks:
    - {name: t, command: ["sleep", "infinity"], resources: {requests: {cpu: "1", memory: 1Gi}, limits: {nvidia.com/gpu: 2}}}'
gpu_ok() { [ "$(count_allocs gpu "$running_healthy")" = 3 ]; }
wait_until "GPU job placed" 60 gpu_ok
bad_gpu=$(allocs_json foxden.io/job=gpu | jq '[.items[] | select((.spec.workerName|startswith("hw-gpu-")|not) or ((.spec.resources.gpus // [])|length) != 2)] | length')
[ "$bad_gpu" = 0 ] && pass || fail "GPU allocations on H100 workers with 2 GPUs each ($bad_gpu wrong)"
dup_gpu=$(allocs_json foxden.io/job=gpu | jq '[.items[] | .spec.workerName as $w | (.spec.resources.gpus // [])[] | "\($w)/\(.index)"] | (length - (unique|length))')
[ "$dup_gpu" = 0 ] && pass || fail "no GPU given twice ($dup_gpu duplicates)"

job ports '  type: service
  constraints: [{key: pool, operator: In, values: [general]}]
  groups:
  - name: web
    count: 3
    ports: [{name: http, static: 18080}]
    tasks:
    - {name: t, command: ["sleep", "infinity"], resources: {requests: {cpu: 50m, memory: 8Mi}}}'
ports_ok() { [ "$(count_allocs ports "$running_healthy")" = 3 ]; }
wait_until "static-port job placed" 60 ports_ok
distinct=$(allocs_json foxden.io/job=ports | jq '[.items[] | select(.status.phase=="Running") | .spec.workerName] | unique | length')
[ "$distinct" = 3 ] && pass || fail "static port 18080: three different workers ($distinct)"
pv=$(allocs_json foxden.io/job=ports | jq -r '[.items[] | .spec.resources.ports[]? | select(.name=="http") | .value] | unique | join(",")')
[ "$pv" = 18080 ] && pass || fail "static port value 18080 ($pv)"

job spread '  type: service
  constraints: [{key: pool, operator: In, values: [general]}]
  spread: [{key: zone, weight: 100}]
  groups:
  - name: web
    count: 6
    tasks:
    - {name: t, command: ["sleep", "infinity"], resources: {requests: {cpu: 10m, memory: 8Mi}}}'
spread_ok() { [ "$(count_allocs spread "$running_healthy")" = 6 ]; }
wait_until "spread job placed" 60 spread_ok
zones=$(allocs_json foxden.io/job=spread | jq -r '[.items[] | .spec.workerName] | .[]' | while read -r w; do k 1.32 get worker "$w" -o jsonpath='{.metadata.labels.zone}'; echo; done | sort | uniq -c | awk '{print $1}' | sort | tr '\n' ' ')
[ "$zones" = "2 2 2 " ] && pass || fail "spread over zones a, b, c evenly (counts: $zones)"

# ---- an unplaceable group explains itself ----
job huge '  type: service
  groups:
  - name: big
    count: 1
    tasks:
    - {name: t, command: ["sleep", "infinity"], resources: {requests: {cpu: "500", memory: 8Mi}}}'
unsched() { job_json huge | jq -e '.status.conditions // [] | map(select(.type=="Progressing" and .reason=="Unschedulable")) | length > 0'; }
wait_until "unplaceable group: Progressing=Unschedulable" 60 unsched
msg=$(job_json huge | jq -r '.status.conditions[] | select(.type=="Progressing") | .message')
grep -q "workers" <<<"$msg" && grep -qi "cpu" <<<"$msg" && pass || fail "condition says why per worker ($msg)"
ev=$(k 1.32 get events --field-selector involvedObject.name=huge -o jsonpath='{range .items[*]}{.reason}: {.message}{"\n"}{end}' 2>/dev/null)
grep -qi "cpu" <<<"$ev" && pass || fail "an Event explains it ($ev)"

# ---- a lost worker's allocations are replaced elsewhere ----
victim=$(allocs_json foxden.io/job=spread | jq -r '[.items[] | select(.status.phase=="Running") | .spec.workerName][0]')
victim_allocs=$(allocs_json foxden.io/job=spread | jq -r --arg w "$victim" '[.items[] | select(.spec.workerName==$w and .status.phase=="Running") | .metadata.name] | join(" ")')
go_dark main "$victim"
ready_unknown() { [ "$(k 1.32 get worker "$victim" -o jsonpath='{.status.conditions[?(@.type=="Ready")].status}')" = Unknown ]; }
wait_until "dark worker $victim: Ready Unknown" 60 ready_unknown
all_lost() { for a in $victim_allocs; do [ "$(k 1.32 get allocation "$a" -o jsonpath='{.status.phase}')" = Lost ] || return 1; done; }
wait_until "its allocations Lost" 60 all_lost
# Every job's allocations there, not only spread's (the count below must not move afterwards).
none_live() { [ "$(allocs_json | jq --arg w "$victim" '[.items[] | select(.spec.workerName==$w and (.status.phase=="Running" or .status.phase=="Pending"))] | length')" = 0 ]; }
wait_until "nothing live left on $victim" 60 none_live
replaced() { [ "$(allocs_json foxden.io/job=spread | jq --arg w "$victim" "[.items[] | select(.spec.workerName!=\$w) | select($running_healthy)] | length")" = 6 ]; }
wait_until "replaced elsewhere: 6 running on other workers" 60 replaced
come_back main
ready_true() { [ "$(k 1.32 get worker "$victim" -o jsonpath='{.status.conditions[?(@.type=="Ready")].status}')" = True ]; }
wait_until "worker back: Ready True again" 60 ready_true

# ---- operator and server down longer than the grace period: nothing evicted ----
lost_before=$(allocs_json | jq '[.items[] | select(.status.phase=="Lost")] | length')
stop_operator
stop_server
sleep $((GRACE * 2))
start_server "$WORK/data"
start_operator --worker-grace-period ${GRACE}s --worker-monitor-period 500ms
sleep $((GRACE * 2))
lost_after=$(allocs_json | jq '[.items[] | select(.status.phase=="Lost")] | length')
[ "$lost_after" = "$lost_before" ] && pass || fail "no allocation Lost after the restart ($lost_before -> $lost_after)"
unknown=$(k 1.32 get workers -o json | jq '[.items[] | select(.status.conditions[]? | .type=="Ready" and .status!="True")] | length')
[ "$unknown" = 0 ] && pass || fail "every worker Ready after the restart ($unknown not)"

# ---- drain: never more than maxParallel in flight ----
job drainme '  type: service
  constraints: [{key: pool, operator: In, values: [general]}]
  groups:
  - name: web
    count: 6
    tasks:
    - {name: t, command: ["sleep", "infinity"], env: [{name: HOLLOW_START_DELAY_MS, value: "1500"}],
       resources: {requests: {cpu: 10m, memory: 8Mi}}}'
drain_ready() { [ "$(count_allocs drainme "$running_healthy")" = 6 ]; }
wait_until "drain job placed" 60 drain_ready
# Its replacements take 1.5 s to start, so migrations stay in flight long enough to be sampled.
drained=$(allocs_json foxden.io/job=drainme | jq -r '[.items[] | select(.status.phase=="Running") | .spec.workerName] | group_by(.) | max_by(length) | .[0]')
on_drained=$(allocs_json | jq --arg w "$drained" '[.items[] | select(.spec.workerName==$w and .status.phase=="Running")] | length')
initial=$(allocs_json | jq -c --arg w "$drained" '[.items[] | select(.spec.workerName==$w and .status.phase=="Running") | .metadata.name]')
k 1.32 patch worker "$drained" --type merge -p '{"spec":{"drain":{"maxParallel":2,"deadlineSeconds":600}}}' >/dev/null
# Sample: a migration is in flight from spec.migrate until the old allocation is terminal (or
# deleted) and its replacement is Running and healthy. Old allocations may be deleted once
# terminal, so count by name: migrating olds still live, plus olds whose replacement is not healthy.
max_in_flight=0
for _ in $(seq 1 600); do
  snap=$(allocs_json)
  n=$(jq --arg w "$drained" --argjson initial "$initial" '
    def healthy: .status.phase=="Running" and ((.status.conditions // []) | map(select(.type=="Healthy" and .status=="True")) | length > 0);
    def terminal: .status.phase=="Succeeded" or .status.phase=="Failed" or .status.phase=="Lost";
    ([.items[] | select(.spec.workerName==$w and .spec.migrate==true and (terminal|not)) | .metadata.name]
     + [.items[] | select((.spec.previousAllocation // "") as $p | $initial | any(. == $p)) | select((healthy|not) and (terminal|not)) | .spec.previousAllocation])
    | unique | length' <<<"$snap")
  [ "$n" -gt "$max_in_flight" ] && max_in_flight=$n
  done_=$(k 1.32 get worker "$drained" -o jsonpath='{.status.drain.complete}')
  [ "$done_" = true ] && break
  sleep 0.1
done
[ "$done_" = true ] && pass || fail "drain of $drained ($on_drained allocations) completes"
[ "$max_in_flight" -le 2 ] && pass || fail "drain kept maxParallel 2 (sampled $max_in_flight in flight)"
[ "$max_in_flight" -ge 1 ] && pass || fail "drain sampled migrations in flight ($max_in_flight)"
left=$(allocs_json | jq --arg w "$drained" '[.items[] | select(.spec.workerName==$w and (.status.phase=="Running" or .status.phase=="Pending"))] | length')
[ "$left" = 0 ] && pass || fail "nothing left running on $drained ($left)"
echo "drain: $on_drained allocations moved off $drained, at most $max_in_flight in flight (maxParallel 2)"

# ---- periodic: fires on the fake clock; Forbid, Replace, Allow ----
# The clock starts an hour back, so no tick lies between creation and "now".
now=$(date -u +%s)
set_clock "$(date -u -d @$((now - 3600)) +%Y-%m-%dT%H:%M:%SZ)"
for p in Forbid Replace Allow; do
  lp=$(tr 'A-Z' 'a-z' <<<"$p")
  job "cron-$lp" "  type: batch
  schedule: {cron: \"* * * * *\", timeZone: Europe/Berlin, concurrencyPolicy: $p}
  groups:
  - name: run
    count: 1
    tasks:
    - {name: t, command: [\"sleep\", \"3600\"], resources: {requests: {cpu: 10m, memory: 8Mi}}}"
done
children() { k 1.32 get jobs.foxden.io -o json | jq -r --arg p "$1" '[.items[] | select(.metadata.ownerReferences[]?.name==$p) | select(.metadata.deletionTimestamp==null) | .metadata.name] | sort | join(" ")'; }
sleep 2
[ -z "$(children cron-allow)" ] && pass || fail "no run before the first tick ($(children cron-allow))"
t1=$(( (now / 60 + 2) * 60 ))
set_clock "$(date -u -d @$((t1 + 5)) +%Y-%m-%dT%H:%M:%SZ)"
first() { [ "$(children "$1")" = "$1-$t1" ]; }
for p in forbid replace allow; do wait_until "cron-$p: first run $p-$t1" 30 first "cron-$p"; done
no_alloc_parent=$(count_allocs cron-allow 'true')
[ "$no_alloc_parent" = 0 ] && pass || fail "the periodic parent itself gets no allocations ($no_alloc_parent)"
run_running() { [ "$(count_allocs "$1" "$running_healthy")" = 1 ]; }
wait_until "first run of cron-forbid running" 30 run_running "cron-forbid-$t1"
t2=$((t1 + 60))
set_clock "$(date -u -d @$((t2 + 5)) +%Y-%m-%dT%H:%M:%SZ)"
two() { [ "$(children cron-allow)" = "cron-allow-$t1 cron-allow-$t2" ]; }
wait_until "Allow: a second run beside the first" 30 two
replaced_run() { [ "$(children cron-replace)" = "cron-replace-$t2" ]; }
wait_until "Replace: the first run replaced by the second" 30 replaced_run
sleep 2
[ "$(children cron-forbid)" = "cron-forbid-$t1" ] && pass || fail "Forbid: no second run while the first is active ($(children cron-forbid))"
ev=$(k 1.32 get events --field-selector involvedObject.name=cron-forbid -o jsonpath='{range .items[*]}{.reason} {end}')
grep -q JobAlreadyActive <<<"$ev" && pass || fail "Forbid: Event JobAlreadyActive ($ev)"
lst=$(job_json cron-allow | jq -r '.status.lastScheduleTime // ""')
[ "$lst" = "$(date -u -d @$t2 +%Y-%m-%dT%H:%M:%SZ)" ] && pass || fail "status.lastScheduleTime ($lst)"
job bad-cron '  type: batch
  schedule: {cron: "61 * * * *"}
  groups:
  - name: run
    tasks:
    - {name: t, command: ["/bin/true"]}'
invalid() { [ "$(job_cond bad-cron InvalidSpec)" = True ]; }
wait_until "an unparseable cron: InvalidSpec" 30 invalid

stop_operator
for n in "${!HOLLOW_PIDS[@]}"; do stop_hollow "$n"; done
sanitizer_logs_check "$OPERATOR_LOG" "$WORK"/hollow-*.log
finish
