#!/usr/bin/env bash
# Crash consistency of foxden-operator: kill -9 it at random points of a rollout of 50
# allocations on hollow workers, twenty times, restarting it each time; it must converge to the
# same state (50 allocations of the new version Running and healthy, one per index, the old
# version gone), and at no moment may an index have two live allocations (non-terminal and
# desiredState run): updates are stop first. That is sampled right after every kill, right after
# every restart, and by a sampler that lists the allocations all through the rollout. Then two operators at once: only one leads at any sample
# of the Lease, the standby runs no reconcile (its writes never leave the process), and it takes
# over when the leader is killed.
# Own work-dir prefix: clean-ups of /tmp/foxden-it.* elsewhere must not pull the floor from under us.
FOXDEN_WORK_PREFIX=/tmp/foxden-hollow-it
source "$(dirname "$0")/lib/common.sh"
source "$(dirname "$0")/lib/hollow.sh"
start_server
start_hollow crash --count 20 --prefix crash --cpu 8 --memory 16Gi --renew-seconds 2 --lease-seconds 20 --start-delay-ms 50
# Short leases so that a killed leader's Lease is taken over quickly.
OPARGS=(--leader-elect-lease-duration 3s --leader-elect-renew-deadline 2s --leader-elect-retry-period 500ms)
start_operator "${OPARGS[@]}"

rollout_job() {  # rollout_job VERSION_VALUE
  k 1.32 apply -f - >/dev/null <<EOF
apiVersion: foxden.io/v1alpha1
kind: Job
metadata: {name: roll, namespace: default}
spec:
  type: service
  update: {maxParallel: 5, minHealthySeconds: 1, healthyDeadlineSeconds: 60}
  groups:
  - name: web
    count: 50
    tasks:
    - name: t
      command: ["sleep", "infinity"]
      env: [{name: V, value: "$1"}, {name: HOLLOW_START_DELAY_MS, value: "700"}]
      resources: {requests: {cpu: 100m, memory: 64Mi}}
EOF
}
# converged VALUE: exactly one live allocation per index 0..49, all of the task env V=VALUE,
# Running and healthy, and nothing else live.
converged() {
  allocs_json foxden.io/job=roll | jq -e --arg v "$1" '
    [.items[] | select(.status.phase != "Succeeded" and .status.phase != "Failed" and .status.phase != "Lost")] as $live
    | ($live | length) == 50
      and ($live | map(.spec.index) | unique | length) == 50
      and ($live | map(.spec.index) | (min == 0 and max == 49))
      and ($live | all(.status.phase == "Running"
                       and ((.status.conditions // []) | map(select(.type=="Healthy" and .status=="True")) | length > 0)
                       and ((.spec.tasks[0].env // []) | map(select(.name=="V")) | .[0].value) == $v))' >/dev/null
}
# Live: non-terminal and not asked to stop. Each sample is one list, one resourceVersion.
LIVE='[.items[] | select(.status.phase != "Succeeded" and .status.phase != "Failed" and .status.phase != "Lost" and (.spec.desiredState // "run") == "run")]'
dupes() {  # live allocations beyond one per index (must stay 0 at every sample)
  allocs_json foxden.io/job=roll | jq "$LIVE"' | group_by(.spec.index) | map(length - 1) | add // 0'
}
# sample LABEL: one list of the allocations; the extra live allocations per index go to
# $WORK/dupe-samples (one line per sample), and any found are shown.
sample() {
  local j d
  j=$(k 1.32 get allocations -n default -l foxden.io/job=roll -o json 2>/dev/null) || return 0
  d=$(jq "$LIVE"' | group_by(.spec.index) | map(length - 1) | add // 0' <<<"$j") || return 0
  echo "$d $1" >>"$WORK/dupe-samples"
  if [ "$d" -gt 0 ]; then
    echo "$1: $d extra live allocation(s) for an index:" >&2
    jq -r "$LIVE"' | group_by(.spec.index) | map(select(length > 1)) | .[][] | "  \(.metadata.name) index=\(.spec.index) version=\(.spec.jobVersion) phase=\(.status.phase) created=\(.metadata.creationTimestamp) prev=\(.spec.previousAllocation // "")"' <<<"$j" >&2
  fi
}

rollout_job v1
wait_until "50 allocations of v1 running" 120 converged v1
: >"$WORK/dupe-samples"
( while :; do sample sampler; sleep 0.1; done ) &
SAMPLER_PID=$!
trap 'kill $SAMPLER_PID 2>/dev/null || true; hollow_cleanup' EXIT
rollout_job v2
during=0
for i in $(seq 1 20); do
  sleep "$(awk -v r=$RANDOM 'BEGIN{printf "%.2f", 0.2 + (r % 1300) / 1000}')"
  stop_operator -KILL
  converged v2 || during=$((during + 1))
  sample "after kill $i"
  start_operator "${OPARGS[@]}" || { fail "operator restart $i"; break; }
  sample "after restart $i"
done
# A generous safety net (the rollout left after the last kill takes seconds). Once this wait failed
# because the operator judged healthyDeadlineSeconds across its own restarts: a replacement that
# turned healthy while no operator led counted as a missed deadline and failed the rollout.
wait_until "after 20 kill -9s: 50 allocations of v2, one per index, Running and healthy" 420 converged v2
kill "$SAMPLER_PID" 2>/dev/null || true
wait "$SAMPLER_PID" 2>/dev/null || true
sample "converged"
samples=$(wc -l <"$WORK/dupe-samples")
bad=$(awk '$1 > 0' "$WORK/dupe-samples" | wc -l)
max_dupes=$(awk 'BEGIN {m = 0} $1 > m {m = $1} END {print m}' "$WORK/dupe-samples")
kill_samples=$(grep -c ' after \(kill\|restart\) ' "$WORK/dupe-samples" || true)
[ "$kill_samples" -ge 40 ] && pass || fail "sampled after every kill and every restart ($kill_samples of 40)"
[ "$bad" = 0 ] && pass || fail "$bad of $samples samples had an index with two live allocations (max $max_dupes extra)"
[ "$during" -ge 5 ] && pass || fail "kills landed during the rollout ($during of 20)"
gen=$(job_json roll | jq -r '.status.observedGeneration // 0')
[ "$gen" = "$(job_json roll | jq -r '.metadata.generation')" ] && pass || fail "observedGeneration caught up ($gen)"
echo "crash: 20 kill -9, $during of them while the rollout was in progress; converged; $samples samples ($kill_samples right after a kill or restart), $bad with an index holding two live allocations (max $max_dupes extra)"

# ---- two operators at once ----
first_pid=$OPERATOR_PID
"$FOXDEN_BIN/foxden-operator" --kubeconfig "$KUBECONFIG_FILE" --metrics-addr 127.0.0.1:0 --id standby \
  --fake-clock-file "$CLOCK_FILE" "${OPARGS[@]}" >>"$WORK/standby.log" 2>&1 &
STANDBY_PID=$!
trap 'kill -9 $STANDBY_PID 2>/dev/null || true; hollow_cleanup' EXIT
for _ in $(seq 1 100); do
  sport=$(sed -n 's/.*serving .* on 127.0.0.1:\([0-9]*\).*/\1/p' "$WORK/standby.log" | tail -1)
  [ -n "$sport" ] && break; sleep 0.1
done
rollout_job v3  # work for whoever leads
holders="" overlap=0
for _ in $(seq 1 30); do
  h=$(k 1.32 get lease foxden-operator -n foxden-system -o jsonpath='{.spec.holderIdentity}')
  holders="$holders $h"
  sl=$(curl -sf "http://127.0.0.1:$sport/metrics" | awk '$1=="foxden_operator_leader" {print $2}')
  # The standby may lead only once the Lease is its own (under a slow build the first operator can
  # miss its renew deadline: it must then stop, and the standby takes over).
  if [ "$sl" = 1 ] && [ "$h" != standby ]; then overlap=1; fi
  sleep 0.2
done
[ "$overlap" = 0 ] && pass || fail "the standby acted as leader while another held the Lease"
nh=$(tr ' ' '\n' <<<"$holders" | grep -v '^$' | sort -u | wc -l)
first_gone() {  # exited (a zombie until we wait for it counts)
  ! kill -0 "$first_pid" 2>/dev/null || [ "$(awk '{print $3}' "/proc/$first_pid/stat" 2>/dev/null)" = Z ]
}
if [ "$nh" = 1 ]; then
  pass
  standby_leader=$(curl -sf "http://127.0.0.1:$sport/metrics" | awk '$1=="foxden_operator_leader" {print $2}')
  standby_reconciles=$(curl -sf "http://127.0.0.1:$sport/metrics" | awk '$1 ~ /^foxden_operator_reconciles_total/ {s+=$2} END {print s+0}')
  [ "$standby_leader" = 0 ] && pass || fail "standby reports foxden_operator_leader 0 ($standby_leader)"
  [ "$standby_reconciles" = 0 ] && pass || fail "standby ran no reconcile, so wrote nothing ($standby_reconciles)"
  curl -sf "http://127.0.0.1:$sport/readyz" >/dev/null && fail "standby must not be ready" || pass
else
  # The Lease moved while both ran: the old leader must have stopped writing and exited.
  echo "the Lease moved while both ran (holders seen: $(tr ' ' '\n' <<<"$holders" | sort -u | tr '\n' ' '))" >&2
  wait_until "the operator that lost the Lease exits" 60 first_gone
fi
wait_until "leader converges v3" 120 converged v3
# The leader dies: the standby takes over and keeps the state.
kill -9 "$first_pid" 2>/dev/null || true
wait "$first_pid" 2>/dev/null || true
OPERATOR_PID=""
took_over() { [ "$(k 1.32 get lease foxden-operator -n foxden-system -o jsonpath='{.spec.holderIdentity}')" = standby ]; }
wait_until "standby takes over the Lease" 30 took_over
rollout_job v4
wait_until "new leader converges v4" 120 converged v4
[ "$(dupes)" = 0 ] && pass || fail "no duplicate after the hand-over"
kill "$STANDBY_PID" 2>/dev/null || true
wait "$STANDBY_PID" 2>/dev/null || true
stop_operator
for n in "${!HOLLOW_PIDS[@]}"; do stop_hollow "$n"; done
sanitizer_logs_check "$OPERATOR_LOG" "$WORK/standby.log" "$WORK"/hollow-*.log
finish
