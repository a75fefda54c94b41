#!/usr/bin/env bash
# foxden-agent with templates and hostile Allocations (created with kubectl, as root): templates
# render the task's variables into its directory; destinations that escape it (absolute, "..", a
# symlink a task planted) and quantities or signals that pass the schema but mean nothing are
# StartErrors with a clear message; nothing is written outside; the agent keeps serving.
source "$(dirname "$0")/lib/common.sh"
start_server
NODE=input1
AGENT_DATA="$WORK/agent"
"$FOXDEN_BIN/foxden" token create --worker $NODE --kubeconfig "$KUBECONFIG_FILE" >"$WORK/worker.kubeconfig"
"$FOXDEN_BIN/foxden-agent" --kubeconfig "$WORK/worker.kubeconfig" --name $NODE --data-dir "$AGENT_DATA" \
  --heartbeat-ms 500 >>"$WORK/agent.log" 2>&1 &
AGENT_PID=$!
CANARY=/etc/foxden-canary-$$
trap 'kill -9 $AGENT_PID 2>/dev/null || true; rm -f $CANARY; for d in /sys/fs/cgroup/*/foxden-$NODE; do rmdir "$d"/* "$d" 2>/dev/null || true; done; cleanup' EXIT

alloc() {  # alloc NAME TASKS_JSON
  k 1.32 apply -f - >/dev/null <<JSON
{"apiVersion":"foxden.io/v1alpha1","kind":"Allocation",
 "metadata":{"name":"$1","namespace":"default","labels":{"foxden.io/worker":"$NODE"}},
 "spec":{"workerName":"$NODE","jobName":"web","groupName":"g","index":2,
         "restartPolicy":{"attempts":0,"mode":"Fail"},"tasks":$2}}
JSON
}
msg() { jp allocation "$1" '{.status.tasks[*].message}'; }
expect_start_error() {  # expect_start_error NAME TEXT
  wait_for "$1 fails" phase_is "$1" Failed
  if jp allocation "$1" '{.status.tasks[*].reason}' | grep -q StartError && msg "$1" | grep -q -- "$2"; then pass
  else fail "$1: StartError with '$2', got: $(jp allocation "$1" '{.status.tasks[*].reason}') $(msg "$1")"; fi
}

# Templates render the task's variables, escaped or raw; perms apply; ../alloc/ reaches the group.
alloc tmpl '[{"name":"main","command":["/bin/sh","-c","cat /local/app.conf /alloc/shared.txt; stat -c %a /local/app.conf"],
  "env":[{"name":"GREETING","value":"a<b"}],
  "templates":[{"destination":"local/app.conf","perms":"0640","data":"job={{FOXDEN_JOB}} index={{FOXDEN_ALLOC_INDEX}} esc={{GREETING}} raw={{{GREETING}}}{{#NOPE}} hidden{{/NOPE}}\n"},
               {"destination":"../alloc/shared.txt","data":"group={{FOXDEN_GROUP}}\n"}]}]'
wait_for "template task completes" phase_is tmpl Succeeded
out=$(cat "$AGENT_DATA"/allocs/$(jp allocation tmpl '{.metadata.uid}')/main/logs/stdout* 2>/dev/null)
[ "$(echo "$out" | head -1)" = "job=web index=2 esc=a&lt;b raw=a<b" ] && pass || fail "template rendered: $out"
echo "$out" | grep -qx "group=g" && pass || fail "../alloc/ template: $out"
echo "$out" | grep -qx "640" && pass || fail "template perms: $out"

# env valueFrom.fieldRef: the downward API over the Allocation.
alloc fref '[{"name":"main","command":["/bin/sh","-c","echo w=$W j=$J i=$I l=$L"],
  "env":[{"name":"W","valueFrom":{"fieldRef":{"fieldPath":"spec.workerName"}}},
         {"name":"J","valueFrom":{"fieldRef":{"fieldPath":"spec.jobName"}}},
         {"name":"I","valueFrom":{"fieldRef":{"fieldPath":"spec.index"}}},
         {"name":"L","valueFrom":{"fieldRef":{"fieldPath":"metadata.labels['"'"'foxden.io/worker'"'"']"}}}]}]'
wait_for "fieldRef task completes" phase_is fref Succeeded
out=$(cat "$AGENT_DATA"/allocs/$(jp allocation fref '{.metadata.uid}')/main/logs/stdout* 2>/dev/null)
[ "$out" = "w=$NODE j=web i=2 l=$NODE" ] && pass || fail "fieldRef values: $out"
alloc fref-bad '[{"name":"main","command":["/bin/true"],"env":[{"name":"X","valueFrom":{"fieldRef":{"fieldPath":"status.phase"}}}]}]'
expect_start_error fref-bad "unsupported fieldPath"

# Escapes: absolute, "..", and a symlink planted by a prestart task in the shared alloc dir.
alloc esc-abs '[{"name":"main","command":["/bin/true"],"templates":[{"destination":"'$CANARY'","data":"x"}]}]'
expect_start_error esc-abs "not absolute"
alloc esc-dots '[{"name":"main","command":["/bin/true"],"templates":[{"destination":"local/../../../../../..'$CANARY'","data":"x"}]}]'
expect_start_error esc-dots '".." may not leave'
alloc esc-link '[{"name":"plant","lifecycle":{"hook":"prestart"},"command":["/bin/ln","-s","/etc","/alloc/evil"]},
  {"name":"main","command":["/bin/true"],"templates":[{"destination":"../alloc/evil/'$(basename $CANARY)'","data":"x"}]}]'
expect_start_error esc-link "symlink"
[ ! -e $CANARY ] && pass || fail "a template wrote outside the allocation: $CANARY exists"
alloc bad-tmpl '[{"name":"main","command":["/bin/true"],"templates":[{"destination":"local/x","data":"{{#open}} never closed"}]}]'
expect_start_error bad-tmpl "not closed"

# Schema-valid but meaningless quantities and signals.
alloc q-neg '[{"name":"main","command":["/bin/true"],"resources":{"limits":{"memory":"-64Mi"}}}]'
expect_start_error q-neg "greater than or equal to 0"
alloc q-huge '[{"name":"main","command":["/bin/true"],"resources":{"limits":{"cpu":"9E"}}}]'
expect_start_error q-huge "larger than any worker"
alloc q-req '[{"name":"main","command":["/bin/true"],"resources":{"requests":{"cpu":"2"},"limits":{"cpu":"1"}}}]'
expect_start_error q-req "less than or equal to cpu limit"
alloc q-tiny '[{"name":"main","command":["/bin/true"],"resources":{"limits":{"memory":"4Ki"}}}]'
expect_start_error q-tiny "at least 1Mi"
alloc sig '[{"name":"main","command":["/bin/true"],"killSignal":"SIGNOPE"}]'
expect_start_error sig "unknown signal"
# The schema itself refuses what its patterns can see (kubectl shows the field).
expect_fail_contains "schema rejects a junk quantity" "spec.tasks[0].resources.limits[memory]" k 1.32 apply -f - <<JSON
{"apiVersion":"foxden.io/v1alpha1","kind":"Allocation","metadata":{"name":"q-junk","namespace":"default"},
 "spec":{"workerName":"$NODE","tasks":[{"name":"main","command":["/bin/true"],"resources":{"limits":{"memory":"lots"}}}]}}
JSON

# And the agent still serves: a good allocation after all that runs to completion.
alloc after '[{"name":"main","command":["/bin/sh","-c","exit 0"]}]'
wait_for "agent keeps serving after bad input" phase_is after Succeeded
kill -0 $AGENT_PID 2>/dev/null && pass || fail "agent alive"
finish
