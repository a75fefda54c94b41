#!/usr/bin/env bash
# foxden-operator end to end against `foxden server` and hollow workers (tests/integration/
# hollow_workers.cc), all on this machine. Prints figures; asserts nothing.
#
#   bench/operator_bench.sh [BUILD_DIR]        (default build/; build foxden, foxden-operator, hollow_workers)
#
#  1. a 1,000-allocation service Job on 100 hollow workers: seconds from `kubectl apply` until
#     every allocation is reported Running (the hollow workers' own count), and the operator's
#     reconciles per second over that time (foxden_operator_reconciles_total from /metrics);
#  2. placements per second against 5,000 hollow workers, end to end: from `kubectl apply` of a
#     5,000-allocation Job until the hollow workers have seen every allocation (decided, created
#     through the API server, delivered by watch) and queued its Running report; then 2,000 with a
#     GPU constraint on a GPU class;
#  3. reconciles per second: 500 small Jobs created at once;
#  4. the placements of 2. again with hollow workers that only watch (they report nothing while it
#     runs), as scheduler_perf's nodes run no kubelet: one API write per placement;
#  5. the placements of 4. with the operator pinned to one core (taskset), the API server and the
#     hollow workers on the other cores.
set -euo pipefail
SRC=$(cd "$(dirname "$0")/.." && pwd)
BUILD=${1:-$SRC/build}
BIN=$BUILD/bin
WORK=$(mktemp -d /tmp/foxden-opbench.XXXXXX)
PIDS=()
stop_all() {
  for p in "${PIDS[@]}"; do kill -9 "$p" 2>/dev/null || true; done
  for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
  PIDS=()
}
cleanup() {
  stop_all
  rm -rf "$WORK"
}
trap cleanup EXIT
KUBECTL="/usr/lib/google-cloud-sdk/bin/kubectl.1.32"
[ -x "$KUBECTL" ] || KUBECTL=kubectl
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
now() { date +%s.%N; }
# CPU time (user + system) a process has used, in ms: what each placement costs, whatever else
# the machine is doing.
cpu_ms() { awk -v hz="$(getconf CLK_TCK)" '{print int(($14 + $15) * 1000 / hz)}' "/proc/$1/stat"; }
# requests_snapshot FILE: the server's request counts by verb and resource (apiserver_request_total).
requests_snapshot() {
  curl -sk -H "Authorization: Bearer $(cat "$WORK/data$SRV_N/admin.token")" "https://127.0.0.1:$PORT/metrics" |
    awk -F'[{}]' '/^apiserver_request_total/ {
      match($2, /verb="[A-Z]*"/); v = substr($2, RSTART + 6, RLENGTH - 7)
      match($2, /resource="[a-z]*"/); r = substr($2, RSTART + 10, RLENGTH - 11)
      match($2, /subresource="[a-z]*"/); sr = substr($2, RSTART + 13, RLENGTH - 14)
      match($2, /code="[0-9]*"/); c = substr($2, RSTART + 6, RLENGTH - 7)
      n[v " " r (sr != "" ? "/" sr : "") (c >= 400 ? "(" c ")" : "")] += $3 } END { for (k in n) print k, n[k] }' | sort >"$1"
}
requests_report() {  # requests_report BEFORE AFTER COUNT: requests per placement, by verb and resource
  join -a 2 -e 0 -o 0,1.2,2.2 <(sed 's/ /:/' "$1") <(sed 's/ /:/' "$2") |
    awk -v n="$3" '{ d = $3 - $2; if (d > 0) printf "%s %s %.2f", (c++ ? "," : "  server requests per placement:"), $1, d / n } END { print "" }'
}
cpu_all() { echo "$(cpu_ms "$SRV_PID") $(cpu_ms "$OP_PID") $(cpu_ms "$HOLLOW_PID")"; }
cpu_report() {  # cpu_report "BEFORE" "AFTER" COUNT
  read -r s0 o0 h0 <<<"$1"
  read -r s1 o1 h1 <<<"$2"
  printf "  CPU per placement: server %.2f ms, operator %.2f ms, hollow workers %.2f ms\n" \
    "$(echo "($s1 - $s0) / $3" | bc -l)" "$(echo "($o1 - $o0) / $3" | bc -l)" "$(echo "($h1 - $h0) / $3" | bc -l)"
}

start_server() {
  PORT=$(free_port)
  "$BIN/foxden" server --data-dir "$WORK/data$1" --listen "127.0.0.1:$PORT" --crds "$SRC/crds" >>"$WORK/server.log" 2>&1 &
  PIDS+=($!)
  SRV_PID=$!
  SRV_N=$1
  KC="$WORK/data$1/kubeconfig"
  for _ in $(seq 1 200); do [ -s "$KC" ] && curl -sk "https://127.0.0.1:$PORT/healthz" >/dev/null 2>&1 && return 0; sleep 0.05; done
  echo "server did not start"; exit 1
}
kc() { "$KUBECTL" --kubeconfig "$KC" --cache-dir "$WORK/cache" "$@"; }
start_hollow() {  # start_hollow NAME ARGS...
  local n=$1; shift
  "$BIN/hollow_workers" --kubeconfig "$KC" --ready-file "$WORK/$n.ready" --stats-file "$WORK/$n.stats" --stats-seconds 30 "$@" \
    >>"$WORK/$n.log" 2>&1 &
  PIDS+=($!)
  HOLLOW_PID=$!
  for _ in $(seq 1 1200); do [ -s "$WORK/$n.ready" ] && return 0; sleep 0.1; done
  echo "hollow $n not ready"; tail "$WORK/$n.log"; exit 1
}
start_operator() {
  : >>"$WORK/operator.log"  # the background job opens it in its own time
  "$BIN/foxden-operator" --kubeconfig "$KC" --metrics-addr 127.0.0.1:0 "$@" >>"$WORK/operator.log" 2>&1 &
  OP_PID=$!
  PIDS+=($OP_PID)
  for _ in $(seq 1 300); do
    OP_PORT=$(sed -n 's/.*serving .* on 127.0.0.1:\([0-9]*\).*/\1/p' "$WORK/operator.log" | tail -1)
    [ -n "$OP_PORT" ] && curl -sf "http://127.0.0.1:$OP_PORT/readyz" >/dev/null 2>&1 && return 0
    sleep 0.1
  done
  echo "operator not ready"; tail "$WORK/operator.log"; exit 1
}
metric_sum() {  # metric_sum PREFIX [LABEL_FILTER]: sum of the series of a family
  curl -sf "http://127.0.0.1:$OP_PORT/metrics" | awk -v m="$1" -v f="${2:-}" 'index($1, m)==1 && (f=="" || index($1, f)>0) {s+=$2} END {printf "%d", s+0}'
}
# stat NAME KEY: sets STAT to a count from a hollow stats file, without forking (the poll loops
# below would otherwise spend a tenth of the machine on jq).
stat() {
  local l=""
  STAT=0
  { read -r l <"$WORK/$1.stats"; } 2>/dev/null || return 0
  [[ $l =~ \"$2\":([0-9]+) ]] && STAT=${BASH_REMATCH[1]}
  return 0
}
job() {  # job NAME COUNT EXTRA_REQUESTS CONSTRAINTS
  kc apply -f - >/dev/null <<EOF
apiVersion: foxden.io/v1alpha1
kind: Job
metadata: {name: $1, namespace: default}
spec:
  type: service
  constraints: ${4:-[]}
  groups:
  - name: g
    count: $2
    tasks:
    - {name: t, command: ["sleep", "infinity"], resources: {requests: {cpu: 10m, memory: 8Mi}, limits: {${3:-}}}}
EOF
}

echo "== operator benchmark ($(nproc) cores; $(date -u +%FT%TZ))"

# 1. 1,000 allocations on 100 workers.
start_server 1
start_hollow h100 --count 100 --prefix b --cpu 64 --memory 256Gi --start-delay-ms 0 --no-pending --renew-seconds 10
start_operator
r0=$(metric_sum foxden_operator_reconciles_total)
t0=$(now)
job thousand 1000
while stat h100 Running; [ "$STAT" -lt 1000 ]; do sleep 0.05; done
t1=$(now)
r1=$(metric_sum foxden_operator_reconciles_total)
el=$(echo "$t1 - $t0" | bc -l)
printf "1000-allocation job on 100 hollow workers: all Running after %.2f s\n" "$el"
printf "reconciles: %d in that time = %.1f/s (all controllers)\n" $((r1 - r0)) "$(echo "($r1 - $r0) / $el" | bc -l)"
stop_all

# 2. Placements per second against 5,000 workers.
start_server 2
cat >"$WORK/classes.yaml" <<'EOF'
classes:
- {name: cpu, count: 4000, cpu: "32", memory: 128Gi}
- {name: gpu, count: 1000, cpu: "32", memory: 128Gi, gpus: {count: 8, vendor: nvidia, model: H100}}
EOF
t=$(now)
start_hollow h5k --classes "$WORK/classes.yaml" --prefix p --start-delay-ms 0 --no-pending --renew-seconds 30 --lease-seconds 120
printf "5000 hollow workers registered in %.1f s\n" "$(echo "$(now) - $t" | bc -l)"
start_operator --worker-grace-period 300s
H=h5k  # the hollow workers measure() reads
measure() {  # measure NAME COUNT LIMITS CONSTRAINTS [PHASE]
  # End to end: from `kubectl apply` until the hollow workers have seen all COUNT new allocations
  # (each was decided, created through the API server and delivered by its watch). PHASE is the
  # hollow workers' own phase for a seen allocation: Running (its report queued; the default) or
  # Pending (workers that only watch).
  local r0 t0 end n c0 p0 tf="" nf=0 phase=${5:-Running}
  stat "$H" "$phase"; r0=$STAT
  stat "$H" patches; p0=$STAT
  c0=$(cpu_all)
  requests_snapshot "$WORK/req0"
  t0=$(now)
  job "$1" "$2" "$3" "$4"
  local deadline=$((SECONDS + 300))
  while :; do
    stat "$H" "$phase"; n=$((STAT - r0))
    [ -z "$tf" ] && [ "$n" -gt 0 ] && { tf=$(now); nf=$n; }
    [ "$n" -ge "$2" ] && { end=$(now); break; }
    [ $SECONDS -gt $deadline ] && { echo "$1: only $n of $2 delivered in 300 s"; return; }
    sleep 0.02
  done
  printf "%s: %d allocations placed, created and delivered to hollow workers in %.2f s = %.0f/s end to end\n" "$1" "$2" \
    "$(echo "$end - $t0" | bc -l)" "$(echo "$2 / ($end - $t0)" | bc -l)"
  # The same, once placements flow: from the first poll that saw one to the last (kubectl's own
  # run, the Job's delivery to the operator and the first create are left out, as
  # scheduler_perf's throughput counts only while pods are being scheduled).
  if [ "$2" -gt "$nf" ] && [ "$(echo "$end > $tf" | bc -l)" = 1 ]; then
    printf "  steady rate: %.0f/s (%d placements from %.2f s to %.2f s after the apply)\n" \
      "$(echo "($2 - $nf) / ($end - $tf)" | bc -l)" $(($2 - nf)) "$(echo "$tf - $t0" | bc -l)" "$(echo "$end - $t0" | bc -l)"
  fi
  local c1
  c1=$(cpu_all)
  cpu_report "$c0" "$c1" "$2"
  # The operator's share of one core over the run, and so the rate one core of it would carry.
  read -r _ o0 _ <<<"$c0"
  read -r _ o1 _ <<<"$c1"
  printf "  operator busy %.0f%% of one core over the run: %.0f placements/s per operator core\n" \
    "$(echo "($o1 - $o0) / (($end - $t0) * 10)" | bc -l)" "$(echo "$2 * 1000 / ($o1 - $o0 + 0.001)" | bc -l)"
  requests_snapshot "$WORK/req1"
  requests_report "$WORK/req0" "$WORK/req1" "$2"
  stat "$H" patches
  printf "  hollow workers' API writes per placement: %.2f\n" "$(echo "($STAT - $p0) / $2" | bc -l)"
}
measure plain 5000 "" "[]"
# Let the operator finish its follow-up work on the first Job (it records when each allocation
# turned healthy) so it is not counted against the second.
for _ in $(seq 1 600); do
  [ "$(kc get fj plain -o jsonpath='{.status.groups[0].healthy}' 2>/dev/null)" = 5000 ] && break
  sleep 0.2
done
sleep 2
measure gpu 2000 "nvidia.com/gpu: 1" "[{key: foxden.io/gpu-model, operator: In, values: [H100]}]"
# 3. Reconciles: 500 small Jobs (2 allocations each) created at once, over 8 connections
# (kubectl would take 14 ms a Job and measure itself).
create_jobs() {  # create_jobs N: POSTs Jobs small-1..small-N
  python3 - "$1" "$PORT" "$WORK/data$SRV_N/admin.token" <<'PY'
import http.client, json, ssl, sys, threading
n, port, token = int(sys.argv[1]), int(sys.argv[2]), open(sys.argv[3]).read().strip()
ctx = ssl._create_unverified_context()  # a benchmark on localhost: the server's own CA is not the point
def job(i):
    return {"apiVersion": "foxden.io/v1alpha1", "kind": "Job", "metadata": {"name": f"small-{i}", "namespace": "default"},
            "spec": {"type": "service", "groups": [{"name": "g", "count": 2, "tasks": [
                {"name": "t", "command": ["sleep", "infinity"], "resources": {"requests": {"cpu": "10m", "memory": "8Mi"}}}]}]}}
failed = []
def worker(k):
    c = http.client.HTTPSConnection("127.0.0.1", port, context=ctx)
    for i in range(k + 1, n + 1, 8):
        c.request("POST", "/apis/foxden.io/v1alpha1/namespaces/default/jobs", json.dumps(job(i)),
                  {"Authorization": "Bearer " + token, "Content-Type": "application/json"})
        r = c.getresponse(); r.read()
        if r.status != 201: failed.append(r.status)
ts = [threading.Thread(target=worker, args=(k,)) for k in range(8)]
[t.start() for t in ts]; [t.join() for t in ts]
sys.exit(1 if failed else 0)
PY
}
stat h5k Running; r0=$STAT
m0=$(metric_sum foxden_operator_reconciles_total)
c0=$(cpu_all)
t0=$(now)
create_jobs 500
t_created=$(now)
deadline=$((SECONDS + 300))
while stat h5k Running; [ $((STAT - r0)) -lt 1000 ] && [ $SECONDS -lt $deadline ]; do sleep 0.05; done
t1=$(now)
m1=$(metric_sum foxden_operator_reconciles_total)
printf "500 Jobs of 2 allocations (created in %.2f s): all 1000 Running after %.2f s; %d reconciles = %.0f/s\n" \
  "$(echo "$t_created - $t0" | bc -l)" "$(echo "$t1 - $t0" | bc -l)" $((m1 - m0)) "$(echo "($m1 - $m0) / ($t1 - $t0)" | bc -l)"
read -r s0 o0 h0 <<<"$c0"
read -r s1 o1 h1 <<<"$(cpu_all)"
printf "  operator CPU per reconcile: %.2f ms\n" "$(echo "($o1 - $o0) / ($m1 - $m0)" | bc -l)"

rss=$(ps -o rss= -p "$OP_PID" | tr -d ' ')
echo "operator RSS after 7000 placements on 5000 workers: $((rss / 1024)) MiB"

# 4. The same placements with hollow workers that only watch: they count what they see (as
# Pending, their own phase before a start) and report nothing for an hour, as scheduler_perf's
# nodes run no kubelet. One API write per placement (the Allocation's create), no status traffic.
stop_all
start_server 3
t=$(now)
H=h5kw
start_hollow h5kw --classes "$WORK/classes.yaml" --prefix q --start-delay-ms 3600000 --no-pending --renew-seconds 30 --lease-seconds 120
start_operator --worker-grace-period 300s
echo "workers that only watch:"
measure plain-watch-only 5000 "" "[]" Pending
sleep 2  # the operator's follow-up on the first Job (its status) is not counted against the second
measure gpu-watch-only 2000 "nvidia.com/gpu: 1" "[{key: foxden.io/gpu-model, operator: In, values: [H100]}]" Pending

# 5. "On one core", as the issue asks: the operator pinned to one CPU (taskset, every thread), the
# API server and the hollow workers on the others; workers that only watch. Needs 2 CPUs.
if [ "$(nproc)" -ge 2 ]; then
  stop_all
  start_server 4
  H=h5kp
  start_hollow h5kp --classes "$WORK/classes.yaml" --prefix r --start-delay-ms 3600000 --no-pending --renew-seconds 30 --lease-seconds 120
  start_operator --worker-grace-period 300s
  others=1
  [ "$(nproc)" -gt 2 ] && others="1-$(($(nproc) - 1))"
  taskset -a -p -c 0 "$OP_PID" >/dev/null
  taskset -a -p -c "$others" "$SRV_PID" >/dev/null
  taskset -a -p -c "$others" "$HOLLOW_PID" >/dev/null
  echo "operator on one core (CPU 0; the server and the hollow workers on CPUs $others), workers that only watch:"
  measure plain-one-core 5000 "" "[]" Pending
  sleep 2
  measure gpu-one-core 2000 "nvidia.com/gpu: 1" "[{key: foxden.io/gpu-model, operator: In, values: [H100]}]" Pending
fi
