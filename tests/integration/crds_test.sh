#!/usr/bin/env bash
# Foxden's four CRDs (crds/*.yaml) against a real `foxden server` (which installs crds/ at start)
# and real kubectl 1.32: the examples apply and get their defaults; kubectl explain teaches the
# API; `kubectl get foxden` and the printer columns answer the first questions; malformed Jobs
# are refused with a message naming the field; Allocation and Worker objects as the operator and
# the agent write them validate, and bad ones are refused; the task schema is the same in Jobs
# and Allocations.
source "$(dirname "$0")/lib/common.sh"

start_server
K=(k 1.32)
EX="$FOXDEN_SRC/examples"

for crd in jobs services allocations workers; do
  expect_contains "crd $crd installed" "$crd.foxden.io" "${K[@]}" get crd "$crd.foxden.io" -o name
done
check "crds established" "${K[@]}" wait --for=condition=Established crd/jobs.foxden.io \
  crd/services.foxden.io crd/allocations.foxden.io crd/workers.foxden.io --timeout=30s

# The server read crds/*.yaml exactly as kubectl's YAML decoder reads them.
for crd in jobs services allocations workers; do
  a=$("${K[@]}" create --dry-run=client -o json -f "$FOXDEN_SRC/crds/$crd.yaml" | jq -S '.spec.versions[0] | {schema, additionalPrinterColumns}')
  b=$("${K[@]}" get crd "$crd.foxden.io" -o json | jq -S '.spec.versions[0] | {schema, additionalPrinterColumns}')
  if [ "$a" = "$b" ]; then pass; else fail "crds/$crd.yaml as served differs from the file"; diff <(echo "$a") <(echo "$b") | head -20 >&2; fi
done

# --- the task schema is one schema in two files ---------------------------------------------
jobs_json=$("${K[@]}" get crd jobs.foxden.io -o json)
alloc_json=$("${K[@]}" get crd allocations.foxden.io -o json)
S='.spec.versions[0].schema.openAPIV3Schema.properties.spec.properties'
for part in tasks restartPolicy volumes; do
  a=$(jq -S "$S.groups.items.properties.$part" <<<"$jobs_json")
  b=$(jq -S "$S.$part" <<<"$alloc_json")
  if [ "$a" != "null" ] && [ "$a" = "$b" ]; then pass; else
    fail "Job group $part and Allocation $part schemas differ"; diff <(echo "$a") <(echo "$b") | head -20 >&2
  fi
done

# --- examples --------------------------------------------------------------------------------
expect_contains "apply settings" "configmap/hello-foxden created" "${K[@]}" apply -f "$EX/settings-configmap.yaml"
expect_contains "apply web" "job.foxden.io/web created" "${K[@]}" apply -f "$EX/web-job.yaml"
# Re-applying sends the defaulted lists again (JSON merge patch replaces lists whole), so kubectl
# may say "configured", as against a real cluster; nothing must change.
expect_contains "apply web again" "job.foxden.io/web" "${K[@]}" apply -f "$EX/web-job.yaml"
expect_contains "re-apply is a no-op" "1" "${K[@]}" get fj web -o jsonpath='{.metadata.generation}'
check "apply web diff empty" "${K[@]}" diff -f "$EX/web-job.yaml"
expect_contains "apply batch" "job.foxden.io/checksum created" "${K[@]}" apply -f "$EX/batch-job.yaml"
expect_contains "ssa web (strict)" "serverside-applied" "${K[@]}" apply --server-side --dry-run=server -f "$EX/web-job.yaml"

# defaults
T='{.spec.groups[0].tasks[0]'
expect_contains "default killSignal" "SIGTERM" "${K[@]}" get fj web -o jsonpath="$T.killSignal}"
expect_contains "probe defaults" "1 3 1 0 2" "${K[@]}" get fj web -o jsonpath="$T.readinessProbe.timeoutSeconds} $T.readinessProbe.failureThreshold} $T.readinessProbe.successThreshold} $T.readinessProbe.initialDelaySeconds} $T.readinessProbe.periodSeconds}"
expect_contains "probe scheme default" "HTTP" "${K[@]}" get fj web -o jsonpath="$T.readinessProbe.httpGet.scheme}"
expect_contains "port protocol default" "TCP" "${K[@]}" get fj web -o jsonpath='{.spec.groups[0].ports[0].protocol}'
expect_contains "update defaults" "600 checks false" "${K[@]}" get fj web -o jsonpath='{.spec.update.progressDeadlineSeconds} {.spec.update.healthCheck} {.spec.update.autoPromote}'
expect_contains "batch driver default" "exec" "${K[@]}" get fj checksum -o jsonpath="$T.driver}"
expect_contains "batch restartPolicy defaults" "1 300 2 Fail" "${K[@]}" get fj checksum -o jsonpath='{.spec.groups[0].restartPolicy.attempts} {.spec.groups[0].restartPolicy.intervalSeconds} {.spec.groups[0].restartPolicy.delaySeconds} {.spec.groups[0].restartPolicy.mode}'
expect_contains "job defaults" "false 10 6" "${K[@]}" get fj web -o jsonpath='{.spec.suspend} {.spec.revisionHistoryLimit} {.spec.backoffLimit}'
expect_contains "batch fields kept" "30 2 600 3600 4" "${K[@]}" get fj checksum -o jsonpath='{.spec.priority} {.spec.backoffLimit} {.spec.activeDeadlineSeconds} {.spec.ttlSecondsAfterFinished} {.spec.groups[0].completions}'

# --- explain ---------------------------------------------------------------------------------
expect_contains "explain job" "A Foxden Job" "${K[@]}" explain fj
expect_contains "explain resources" "Compute resources, as in Kubernetes" "${K[@]}" explain fj.spec.groups.tasks.resources
expect_contains "explain resources fields" "limits" "${K[@]}" explain fj.spec.groups.tasks.resources
expect_contains "explain alloc tasks" "OOMKilled" "${K[@]}" explain allocation.status.tasks
expect_contains "explain alloc tasks fields" "exitCode" "${K[@]}" explain allocation.status.tasks
expect_contains "explain enum" "sysbatch" "${K[@]}" explain fj.spec.type
expect_contains "explain recursive" "failureThreshold" "${K[@]}" explain fj.spec.groups.tasks.livenessProbe --recursive
expect_contains "explain worker" "drain" "${K[@]}" explain wk.spec
expect_contains "explain service" "onlyHealthy" "${K[@]}" explain fsvc.spec.health

# --- get: category and printer columns ------------------------------------------------------
out=$("${K[@]}" get foxden 2>&1 || true)
if grep -q 'job.foxden.io/web' <<<"$out" && grep -q 'job.foxden.io/checksum' <<<"$out"; then pass; else fail "get foxden lists jobs"; echo "$out" >&2; fi
expect_contains "api-resources shortnames" "fj" "${K[@]}" api-resources --api-group=foxden.io

check "job status patch" "${K[@]}" patch fj web --subresource=status --type merge -p '{"status":{
  "observedGeneration":1,"phase":"Running","desired":3,"running":3,"healthy":2,"currentVersion":0,"stableVersion":0,
  "groups":[{"name":"app","desired":3,"placed":3,"running":3,"healthy":2}],
  "conditions":[{"type":"Available","status":"True","reason":"MinimumHealthy","message":"2/3 healthy","lastTransitionTime":"2025-01-01T00:00:00Z","observedGeneration":1}]}}'
out=$("${K[@]}" get fj 2>&1 || true)
if grep -q '^NAME *TYPE *DESIRED *RUNNING *HEALTHY *STATUS *AGE$' <<<"$out" &&
   grep -q '^web *service *3 *3 *2 *Running ' <<<"$out" &&
   grep -qE '^checksum +batch +[0-9]+s$' <<<"$out"; then pass; else fail "get fj columns"; echo "$out" >&2; fi
expect_contains "get fj -o wide" "VERSION" "${K[@]}" get fj -o wide

check "batch complete" "${K[@]}" patch fj checksum --subresource=status --type merge -p '{"status":{"phase":"Complete",
  "conditions":[{"type":"Complete","status":"True","reason":"CompletionsReached","message":"4/4","lastTransitionTime":"2025-01-01T00:00:00Z"}]}}'
expect_contains "wait Complete" "condition met" "${K[@]}" wait --for=condition=Complete job.foxden.io/checksum --timeout=10s
expect_fail_contains "bad job status" 'status.phase: Unsupported value: "Exploded"' \
  "${K[@]}" patch fj web --subresource=status --type merge -p '{"status":{"phase":"Exploded"}}'
expect_fail_contains "condition needs reason" 'status.conditions[0].reason: Required value' \
  "${K[@]}" patch fj web --subresource=status --type merge -p '{"status":{"conditions":[{"type":"Failed","status":"True","message":"","lastTransitionTime":"2025-01-01T00:00:00Z"}]}}'

# --- malformed Jobs ---------------------------------------------------------------------------
# bad_job NAME SED-EXPRESSION: the web example, renamed, with one edit.
bad_job() {
  sed -e "s/name: web,/name: $1,/" -e "$2" "$EX/web-job.yaml" >"$WORK/$1.yaml"
  echo "$WORK/$1.yaml"
}
expect_fail_contains "bad type" 'spec.type: Unsupported value: "cron"' \
  "${K[@]}" apply -f "$(bad_job bad-type 's/type: service /type: cron /')"
expect_fail_contains "negative count" 'spec.groups[0].count: Invalid value: -1' \
  "${K[@]}" apply -f "$(bad_job bad-count 's/count: 3/count: -1/')"
expect_fail_contains "priority 101" 'spec.priority: Invalid value: 101' \
  "${K[@]}" apply -f "$(bad_job bad-priority 's/priority: 50/priority: 101/')"
expect_fail_contains "bad port name" 'spec.groups[0].ports[0].name: Invalid value: "HTTP_port"' \
  "${K[@]}" apply -f "$(bad_job bad-port 's/ports: \[{name: http}\]/ports: [{name: HTTP_port}]/')"
expect_fail_contains "static port range" 'spec.groups[0].ports[0].static: Invalid value: 70000' \
  "${K[@]}" apply -f "$(bad_job bad-static 's/ports: \[{name: http}\]/ports: [{name: http, static: 70000}]/')"
expect_fail_contains "bad driver" 'spec.groups[0].tasks[0].driver: Unsupported value: "docker"' \
  "${K[@]}" apply -f "$(bad_job bad-driver 's/driver: exec /driver: docker /')"
expect_fail_contains "bad quantity" 'spec.groups[0].tasks[0].resources.limits[memory]: Invalid value: "128Qi"' \
  "${K[@]}" apply -f "$(bad_job bad-qty 's/memory: 128Mi/memory: 128Qi/')"
expect_fail_contains "bad restart mode" 'spec.groups[0].restartPolicy.mode: Unsupported value: "Never"' \
  "${K[@]}" apply -f "$(bad_job bad-mode 's/mode: Fail/mode: Never/')"
expect_fail_contains "probe period 0" 'spec.groups[0].tasks[0].readinessProbe.periodSeconds: Invalid value: 0' \
  "${K[@]}" apply -f "$(bad_job bad-probe 's/periodSeconds: 2/periodSeconds: 0/')"
expect_fail_contains "bad task name" 'spec.groups[0].tasks[0].name: Invalid value: "Server_1"' \
  "${K[@]}" apply -f "$(bad_job bad-tname 's/- name: server/- name: Server_1/')"
expect_fail_contains "bad constraint op" 'spec.constraints[0].operator: Unsupported value: "Equals"' \
  "${K[@]}" apply -f "$(bad_job bad-op 's/operator: In/operator: Equals/')"
expect_fail_contains "missing command" 'spec.groups[0].tasks[0].command: Required value' \
  "${K[@]}" apply -f "$(bad_job bad-nocmd '/command:/d')"
cat >"$WORK/bad-notasks.yaml" <<'EOF'
apiVersion: foxden.io/v1alpha1
kind: Job
metadata: {name: bad-notasks}
spec:
  type: batch
  groups: [{name: app, count: 1}]
EOF
expect_fail_contains "missing tasks" 'spec.groups[0].tasks: Required value' "${K[@]}" apply -f "$WORK/bad-notasks.yaml"
cat >"$WORK/bad-emptytasks.yaml" <<'EOF'
apiVersion: foxden.io/v1alpha1
kind: Job
metadata: {name: bad-emptytasks}
spec:
  groups: [{name: app, tasks: []}]
EOF
expect_fail_contains "empty tasks" 'spec.groups[0].tasks: Invalid value: 0' "${K[@]}" apply -f "$WORK/bad-emptytasks.yaml"
cat >"$WORK/bad-nogroups.yaml" <<'EOF'
apiVersion: foxden.io/v1alpha1
kind: Job
metadata: {name: bad-nogroups}
spec: {type: service}
EOF
expect_fail_contains "missing groups" 'spec.groups: Required value' "${K[@]}" apply -f "$WORK/bad-nogroups.yaml"
cat >"$WORK/bad-dup.yaml" <<'EOF'
apiVersion: foxden.io/v1alpha1
kind: Job
metadata: {name: bad-dup}
spec:
  groups:
  - name: app
    tasks:
    - {name: a, command: [/bin/true]}
    - {name: a, command: [/bin/false]}
EOF
expect_fail_contains "duplicate task" 'spec.groups[0].tasks[1]: Duplicate value' "${K[@]}" apply -f "$WORK/bad-dup.yaml"
cat >"$WORK/bad-cron.yaml" <<'EOF'
apiVersion: foxden.io/v1alpha1
kind: Job
metadata: {name: bad-cron}
spec:
  type: batch
  schedule: {cron: "0 3 * * *", concurrencyPolicy: Sometimes}
  groups: [{name: app, tasks: [{name: a, command: [/bin/true]}]}]
EOF
expect_fail_contains "bad concurrencyPolicy" 'spec.schedule.concurrencyPolicy: Unsupported value: "Sometimes"' "${K[@]}" apply -f "$WORK/bad-cron.yaml"
expect_fail_contains "unknown field strict" 'unknown field "spec.groups[0].tasks[0].comand"' \
  "${K[@]}" apply --validate=strict -f "$(bad_job bad-unknown 's/command:/comand:/')"
# Without strict validation the unknown field is pruned (with a warning) and the missing
# command is what is refused.
expect_fail_contains "unknown field pruned" 'spec.groups[0].tasks[0].command: Required value' \
  "${K[@]}" apply --validate=false -f "$WORK/bad-unknown.yaml"
for n in bad-type bad-count bad-priority bad-port bad-static bad-driver bad-qty bad-mode bad-probe \
         bad-tname bad-op bad-nocmd bad-notasks bad-emptytasks bad-nogroups bad-dup bad-cron bad-unknown; do
  expect_fail_contains "$n not stored" "NotFound" "${K[@]}" get fj "$n"
done

# --- Allocation, as the operator and the agent write it --------------------------------------
cat >"$WORK/alloc.yaml" <<'EOF'
apiVersion: foxden.io/v1alpha1
kind: Allocation
metadata:
  name: web-app-0-x7k2p
  namespace: default
  labels: {foxden.io/job: web, foxden.io/group: app, foxden.io/worker: rig-1}
spec:
  workerName: rig-1
  jobName: web
  groupName: app
  jobType: service
  index: 0
  jobVersion: 0
  restartPolicy: {attempts: 3}
  tasks:
  - name: server
    command: ["/usr/bin/python3", "-m", "http.server", "$(FOXDEN_PORT_http)"]
    env:
    - {name: GREETING, value: hello}
    - name: TOKEN
      valueFrom: {secretKeyRef: {name: web-secrets, key: token, optional: true}}
    resources:
      requests: {cpu: 250m, memory: 64Mi, nvidia.com/gpu: 1}
      limits: {cpu: "1", memory: 128Mi, nvidia.com/gpu: 1}
    livenessProbe: {tcpSocket: {port: http}}
    startupProbe: {exec: {command: [/bin/true]}, failureThreshold: 30}
  - name: setup
    command: [/bin/sh, -c, "echo ready > $(FOXDEN_TASK_DIR)/../alloc/ready"]
    lifecycle: {hook: prestart}
    templates:
    - {destination: local/config.txt, data: "port={{FOXDEN_PORT_http}}", changeMode: signal, changeSignal: SIGHUP}
  resources:
    cpu: 250m
    memory: 64Mi
    gpus: [{vendor: nvidia, index: 0, uuid: GPU-5a1c0e7e-1111-2222-3333-444455556666}]
    ports: [{name: http, value: 23456}]
EOF
expect_contains "create alloc" "allocation.foxden.io/web-app-0-x7k2p created" "${K[@]}" apply -f "$WORK/alloc.yaml"
expect_contains "alloc defaults" "run 3 300 5 Fail exec SIGTERM 5 false" "${K[@]}" get alloc web-app-0-x7k2p -o jsonpath='{.spec.desiredState} {.spec.restartPolicy.attempts} {.spec.restartPolicy.intervalSeconds} {.spec.restartPolicy.delaySeconds} {.spec.restartPolicy.mode} {.spec.tasks[0].driver} {.spec.tasks[0].killSignal} {.spec.tasks[0].killTimeoutSeconds} {.spec.tasks[1].lifecycle.sidecar}'
check "alloc status" "${K[@]}" patch alloc web-app-0-x7k2p --subresource=status --type merge -p '{"status":{
  "phase":"Running","observedGeneration":1,"startedAt":"2025-01-01T00:00:00Z",
  "tasks":[{"name":"setup","state":"Terminated","exitCode":0,"reason":"Completed","restarts":0,"startedAt":"2025-01-01T00:00:00Z","finishedAt":"2025-01-01T00:00:01Z","ready":false},
           {"name":"server","state":"Running","pid":4242,"restarts":1,"startedAt":"2025-01-01T00:00:02Z","ready":true}],
  "conditions":[{"type":"Ready","status":"True","reason":"TasksReady","message":"","lastTransitionTime":"2025-01-01T00:00:03Z"}]}}'
out=$("${K[@]}" get allocs 2>&1 || true)
if grep -q '^NAME *JOB *GROUP *WORKER *PHASE *AGE$' <<<"$out" &&
   grep -q '^web-app-0-x7k2p *web *app *rig-1 *Running ' <<<"$out"; then pass; else fail "get alloc columns"; echo "$out" >&2; fi
expect_contains "alloc in foxden category" "allocation.foxden.io/web-app-0-x7k2p" "${K[@]}" get foxden
expect_contains "alloc by label" "web-app-0-x7k2p" "${K[@]}" get alloc -l foxden.io/worker=rig-1 -o name
expect_fail_contains "alloc bad phase" 'status.phase: Unsupported value: "Exploded"' \
  "${K[@]}" patch alloc web-app-0-x7k2p --subresource=status --type merge -p '{"status":{"phase":"Exploded"}}'
expect_fail_contains "alloc bad task state" 'status.tasks[0].state: Unsupported value: "Zombie"' \
  "${K[@]}" patch alloc web-app-0-x7k2p --subresource=status --type merge -p '{"status":{"tasks":[{"name":"server","state":"Zombie"}]}}'
expect_fail_contains "alloc bad desiredState" 'spec.desiredState: Unsupported value: "pause"' \
  "${K[@]}" patch alloc web-app-0-x7k2p --type merge -p '{"spec":{"desiredState":"pause"}}'
expect_fail_contains "alloc bad port value" 'spec.resources.ports[0].value: Invalid value: 0' \
  "${K[@]}" patch alloc web-app-0-x7k2p --type merge -p '{"spec":{"resources":{"ports":[{"name":"http","value":0}]}}}'
expect_fail_contains "alloc bad gpu vendor" 'spec.resources.gpus[0].vendor: Unsupported value: "intel"' \
  "${K[@]}" patch alloc web-app-0-x7k2p --type merge -p '{"spec":{"resources":{"gpus":[{"vendor":"intel","index":0}]}}}'
check "alloc stop" "${K[@]}" patch alloc web-app-0-x7k2p --type merge -p '{"spec":{"desiredState":"stop"}}'
# The smallest Allocation an operator (or a test) may write: every default the agent relies on.
echo '{"apiVersion":"foxden.io/v1alpha1","kind":"Allocation","metadata":{"name":"min","namespace":"default"},
  "spec":{"workerName":"rig-1","tasks":[{"name":"main","command":["/bin/true"]}]}}' >"$WORK/alloc-min.json"
expect_contains "minimal alloc" "allocation.foxden.io/min created" "${K[@]}" create -f "$WORK/alloc-min.json"
expect_contains "minimal alloc defaults" "run 2 300 5 Fail exec SIGTERM 5" "${K[@]}" get alloc min -o jsonpath='{.spec.desiredState} {.spec.restartPolicy.attempts} {.spec.restartPolicy.intervalSeconds} {.spec.restartPolicy.delaySeconds} {.spec.restartPolicy.mode} {.spec.tasks[0].driver} {.spec.tasks[0].killSignal} {.spec.tasks[0].killTimeoutSeconds}'
cat >"$WORK/alloc-bad.yaml" <<'EOF'
apiVersion: foxden.io/v1alpha1
kind: Allocation
metadata: {name: alloc-bad, namespace: default}
spec: {jobName: web, tasks: []}
EOF
expect_fail_contains "alloc needs workerName" 'spec.workerName: Required value' "${K[@]}" apply -f "$WORK/alloc-bad.yaml"
expect_fail_contains "alloc needs a task" 'spec.tasks: Invalid value: 0' "${K[@]}" apply -f "$WORK/alloc-bad.yaml"

# --- Worker, as the agent writes it ---------------------------------------------------------
cat >"$WORK/worker.yaml" <<'EOF'
apiVersion: foxden.io/v1alpha1
kind: Worker
metadata:
  name: rig-1
  labels: {foxden.io/gpu-vendor: nvidia, foxden.io/gpu-model: NVIDIA-GeForce-RTX-3090, site: office}
spec: {}
EOF
expect_contains "create worker" "worker.foxden.io/rig-1 created" "${K[@]}" apply -f "$WORK/worker.yaml"
expect_contains "worker defaults" "false" "${K[@]}" get wk rig-1 -o jsonpath='{.spec.unschedulable}'
check "worker status" "${K[@]}" patch wk rig-1 --subresource=status --type merge -p '{"status":{
  "capacity":{"cpu":"8","memory":"32Gi","nvidia.com/gpu":2},
  "allocatable":{"cpu":"7500m","memory":"30Gi","nvidia.com/gpu":2},
  "allocated":{"cpu":"250m","memory":"64Mi","nvidia.com/gpu":1},
  "free":{"cpu":"7250m","memory":"30656Mi","nvidia.com/gpu":1},
  "gpus":[{"vendor":"nvidia","index":0,"uuid":"GPU-5a1c0e7e-1111-2222-3333-444455556666","model":"NVIDIA GeForce RTX 3090","memoryBytes":25769803776},
          {"vendor":"nvidia","index":1,"uuid":"GPU-5a1c0e7e-1111-2222-3333-444455556667","model":"NVIDIA GeForce RTX 3090","memoryBytes":25769803776}],
  "drivers":["exec","raw_exec"],
  "addresses":[{"type":"InternalIP","address":"10.0.0.11"},{"type":"Hostname","address":"rig-1"}],
  "agentEndpoint":{"port":10250},
  "agentVersion":"0.1.0","allocations":1,
  "nodeInfo":{"kernelVersion":"6.1.0","architecture":"amd64","cgroupVersion":"v1"},
  "conditions":[{"type":"Ready","status":"True","reason":"AgentReady","message":"ok","lastHeartbeatTime":"2025-01-01T00:00:00Z","lastTransitionTime":"2025-01-01T00:00:00Z"},
                {"type":"MemoryPressure","status":"False"},{"type":"DiskPressure","status":"False"}]}}'
out=$("${K[@]}" get workers 2>&1 || true)
if grep -q '^NAME *READY *CPU FREE *MEMORY FREE *GPU FREE *ALLOCATIONS *AGE$' <<<"$out" &&
   grep -q '^rig-1 *True *7250m *30656Mi *1 *1 ' <<<"$out"; then pass; else fail "get workers columns"; echo "$out" >&2; fi
expect_contains "get wk -o wide" "UNSCHEDULABLE" "${K[@]}" get wk -o wide
expect_contains "worker in foxden category" "worker.foxden.io/rig-1" "${K[@]}" get foxden
check "cordon and drain" "${K[@]}" patch wk rig-1 --type merge -p '{"spec":{"unschedulable":true,"drain":{"deadlineSeconds":600}}}'
expect_contains "drain defaults" "600 1 false" "${K[@]}" get wk rig-1 -o jsonpath='{.spec.drain.deadlineSeconds} {.spec.drain.maxParallel} {.spec.drain.ignoreSystemJobs}'
expect_fail_contains "worker drain maxParallel" 'spec.drain.maxParallel: Invalid value: 0' \
  "${K[@]}" patch wk rig-1 --type merge -p '{"spec":{"drain":{"maxParallel":0}}}'
expect_fail_contains "worker bad condition status" 'status.conditions[0].status: Unsupported value: "Yes"' \
  "${K[@]}" patch wk rig-1 --subresource=status --type merge -p '{"status":{"conditions":[{"type":"Ready","status":"Yes"}]}}'
expect_fail_contains "worker bad capacity" 'status.capacity[cpu]: Invalid value: "eight"' \
  "${K[@]}" patch wk rig-1 --subresource=status --type merge -p '{"status":{"capacity":{"cpu":"eight"}}}'
expect_fail_contains "worker bad address type" 'status.addresses[0].type: Unsupported value: "MAC"' \
  "${K[@]}" patch wk rig-1 --subresource=status --type merge -p '{"status":{"addresses":[{"type":"MAC","address":"x"}]}}'
expect_contains "worker Ready wait" "condition met" "${K[@]}" wait --for=condition=Ready wk/rig-1 --timeout=10s

# --- Service ------------------------------------------------------------------------------------
cat >"$WORK/svc.yaml" <<'EOF'
apiVersion: foxden.io/v1alpha1
kind: Service
metadata: {name: web, namespace: default}
spec:
  selector: {job: web, group: app}
  ports: [{name: http, port: 80}]
  loadBalancer: {algorithm: leastconn}
EOF
expect_contains "create fsvc" "service.foxden.io/web created" "${K[@]}" apply -f "$WORK/svc.yaml"
expect_contains "fsvc defaults" "true TCP 5" "${K[@]}" get fsvc web -o jsonpath='{.spec.health.onlyHealthy} {.spec.ports[0].protocol} {.spec.loadBalancer.connectTimeoutSeconds}'
check "fsvc status" "${K[@]}" patch fsvc web --subresource=status --type merge -p '{"status":{"readyEndpoints":1,
  "endpoints":[{"allocation":"web-app-0-x7k2p","worker":"rig-1","address":"10.0.0.11","ready":true,"ports":[{"name":"http","port":23456}]}]}}'
out=$("${K[@]}" get fsvc 2>&1 || true)
if grep -q '^NAME *JOB *GROUP *PORT *ENDPOINTS *AGE$' <<<"$out" && grep -q '^web *web *app *http *1 ' <<<"$out"; then pass; else fail "get fsvc columns"; echo "$out" >&2; fi
expect_fail_contains "fsvc needs selector.job" 'spec.selector.job: Required value' \
  "${K[@]}" patch fsvc web --type json -p '[{"op":"remove","path":"/spec/selector/job"}]'
expect_fail_contains "fsvc bad algorithm" 'spec.loadBalancer.algorithm: Unsupported value: "fastest"' \
  "${K[@]}" patch fsvc web --type merge -p '{"spec":{"loadBalancer":{"algorithm":"fastest"}}}'

finish
