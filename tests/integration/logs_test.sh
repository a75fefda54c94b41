#!/usr/bin/env bash
# Task logs: the task's init writes size-rotated files; `foxden logs` reads them through the agent's
# HTTPS endpoint with API tokens (TokenReview). `foxden logs -f` keeps a gapless, duplicate-free
# stream across rotations and a kill -9 + restart of the agent; a burst written while the agent is
# dead does not block the task; hostile requests get clear errors and the endpoint keeps serving.
source "$(dirname "$0")/lib/common.sh"
start_server
NODE=logs-w1-$$  # unique per run: two runs of this test must not adopt each other's task cgroups
AGENT_DATA="$WORK/agent"
AGENT_PID=""
FOLLOW_PID=""
"$FOXDEN_BIN/foxden" token create --worker $NODE --kubeconfig "$KUBECONFIG_FILE" >"$WORK/worker.kubeconfig"
WORKER_TOKEN=$(sed -n 's/^ *token: *"\{0,1\}\([^"]*\)"\{0,1\}$/\1/p' "$WORK/worker.kubeconfig" | head -1)
ADMIN_TOKEN=$(admin_token)

start_agent() {
  "$FOXDEN_BIN/foxden-agent" --kubeconfig "$WORK/worker.kubeconfig" --name $NODE --data-dir "$AGENT_DATA" \
    --listen 127.0.0.1:0 --heartbeat-ms 500 >>"$WORK/agent.log" 2>&1 &
  AGENT_PID=$!
}
stop_agent() { [ -n "$AGENT_PID" ] && kill "${1:--TERM}" "$AGENT_PID" 2>/dev/null; wait "$AGENT_PID" 2>/dev/null || true; AGENT_PID=""; }
stop_follow() { if [ -n "$FOLLOW_PID" ]; then kill "$FOLLOW_PID" 2>/dev/null || true; wait "$FOLLOW_PID" 2>/dev/null || true; fi; FOLLOW_PID=""; }
rm_cgroups() {
  rm_agent_cgroups $NODE
}
teardown() {
  stop_follow
  if [ -n "$AGENT_PID" ]; then k 1.32 delete allocations --all --wait=false >/dev/null 2>&1 || true; sleep 2; fi
  stop_agent -TERM
  rm_cgroups
  cleanup
}
trap teardown EXIT

alloc() {  # alloc NAME TASKS_JSON
  k 1.32 apply -f - >/dev/null <<JSON
{"apiVersion":"foxden.io/v1alpha1","kind":"Allocation",
 "metadata":{"name":"$1","namespace":"default","labels":{"foxden.io/worker":"$NODE","foxden.io/job":"t"}},
 "spec":{"workerName":"$NODE","jobName":"t","groupName":"g","index":0,"jobType":"service",
         "restartPolicy":{"attempts":3,"intervalSeconds":300,"delaySeconds":0,"mode":"Fail"},
         "tasks":$2}}
JSON
}
state_is() { [ "$(jp allocation "$1" '{.status.tasks[0].state}')" = "$2" ]; }
endpoint_port() { jp worker $NODE '{.status.agentEndpoint.port}'; }
has_endpoint() { [ -n "$(endpoint_port)" ] && [ -n "$(jp worker $NODE '{.status.agentEndpoint.certificateSHA256}')" ]; }
logs() { "$FOXDEN_BIN/foxden" logs --kubeconfig "$KUBECONFIG_FILE" "$@"; }
# In the background, `exec` so that $! is foxden itself (killing a subshell would leave it running).
logs_bg() { exec "$FOXDEN_BIN/foxden" logs --kubeconfig "$KUBECONFIG_FILE" "$@"; }
# Every line of FILE must be "n=<N> fox" with N consecutive (a last line cut short
# by stopping the reader excepted): prints "first last count".
consecutive() {
  awk -F'[= ]' '{ if (pending) { print "malformed line " NR - 1 ": " pending > "/dev/stderr"; bad = 1; pending = "" }
                  if ($0 !~ /^n=[0-9]+ fox$/) { pending = $0; next }
                  n = $2 + 0; if (seen && n != prev + 1) { print "gap or repeat after " prev ": " n > "/dev/stderr"; bad = 1 }
                  if (!seen) first = n; prev = n; seen = 1; count++ }
                END { print first, prev, count; exit (bad || !seen) }' "$1"
}

start_agent
wait_for "worker publishes its log endpoint" has_endpoint
sha=$(jp worker $NODE '{.status.agentEndpoint.certificateSHA256}')
[ "$sha" = "$(openssl x509 -in "$AGENT_DATA/pki/cert.pem" -outform DER | sha256sum | cut -d' ' -f1)" ] && pass || fail "fingerprint is the certificate's"
[ "$(jp worker $NODE '{.status.agentEndpoint.address}')" = 127.0.0.1 ] && pass || fail "endpoint address is the --listen host"

# TokenReview: faithful to authentication.k8s.io/v1.
review() { printf '{"apiVersion":"authentication.k8s.io/v1","kind":"TokenReview","spec":{"token":"%s"}}' "$1" | k 1.32 create -f - -o json; }
expect_contains "TokenReview: admin token authenticates" '"system:masters"' review "$ADMIN_TOKEN"
expect_contains "TokenReview: worker token authenticates" "\"system:foxden-worker:$NODE\"" review "$WORKER_TOKEN"
out=$(review "fxw.logs-w1.nope" 2>&1 || true)
grep -q '"authenticated": true' <<<"$out" && fail "bad token authenticated: $out" || pass
expect_fail_contains "TokenReview without a token" "token is required" \
  sh -c 'echo "{\"apiVersion\":\"authentication.k8s.io/v1\",\"kind\":\"TokenReview\",\"spec\":{}}" | "$0" --kubeconfig "$1" create -f -' \
  "$KUBECTL_DIR/kubectl.1.32" "$KUBECONFIG_FILE"
expect_contains "TokenReview is create-only in discovery" "create" k 1.32 api-resources --api-group=authentication.k8s.io -o wide
curl_api() { curl -sk -o /dev/null -w '%{http_code}' "$@"; }
[ "$(curl_api -X GET -H "Authorization: Bearer $ADMIN_TOKEN" "https://127.0.0.1:$PORT/apis/authentication.k8s.io/v1/tokenreviews")" = 405 ] && pass || fail "TokenReview list is 405"

# A task printing a numbered line every ~50 ms to stdout, and one to stderr, into 4Ki files x 3:
# a rotation every ~20 s, so the files hold ~40 s more than the current one (the agent's outage
# below must stay shorter, even under ASan on a loaded machine).
alloc ticker '[{"name":"main","command":["/bin/sh","-c","i=0; while :; do i=$((i+1)); echo \"n=$i fox\"; echo \"e=$i\" >&2; sleep 0.05; done"],
  "logs":{"maxFiles":3,"maxFileSize":"4Ki"}}]'
wait_for "ticker Running" state_is ticker Running
pid1=$(jp allocation ticker '{.status.tasks[0].pid}')
uid=$(jp allocation ticker '{.metadata.uid}')
LOGDIR="$AGENT_DATA/allocs/$uid/main/logs"

logs_bg ticker -f >"$WORK/follow.out" 2>"$WORK/follow.err" &
FOLLOW_PID=$!
lines() { wc -l <"$WORK/follow.out"; }
more_than() { [ "$(lines)" -gt "$1" ]; }
last_index() { ls "$LOGDIR" | sed -n 's/^stdout\.//p' | sort -n | tail -1; }
index_at_least() { [ "$(last_index)" -ge "$1" ]; }
wait_for "follow streams lines" more_than 50
wait_for "a first rotation" index_at_least 1
# Kill only once the follower has caught up: what it may lose is then bounded by the outage alone.
newest_line() { tail -n1 "$LOGDIR/stdout.$(last_index)" | sed -n 's/^n=\([0-9]*\) fox$/\1/p'; }
followed_line() { tail -n2 "$WORK/follow.out" | sed -n 's/^n=\([0-9]*\) fox$/\1/p' | tail -1; }
caught_up() { local w f; w=$(newest_line); f=$(followed_line); [ -n "$w" ] && [ -n "$f" ] && [ "$f" -ge $((w - 5)) ]; }
wait_for "follow catches up" caught_up
# kill -9 the agent while lines flow; rotations go on while it is away.
stop_agent -KILL
idx_dead=$(last_index)
sleep 1
kill -0 "$pid1" 2>/dev/null && pass || fail "task survives the agent's kill -9"
n_dead=$(lines)
start_agent
wait_for "follow resumes after the restart" more_than $((n_dead + 40))
wait_for "two more rotations" index_at_least $((idx_dead + 2))
wait_for "follow keeps up" more_than $(($(lines) + 20))
stop_follow
first_idx=$(ls "$LOGDIR" | sed -n 's/^stdout\.//p' | sort -n | head -1)
last_idx=$(ls "$LOGDIR" | sed -n 's/^stdout\.//p' | sort -n | tail -1)
if range=$(consecutive "$WORK/follow.out"); then pass; else fail "followed stream has a gap or a repeat"; fi
echo "followed: first last count = $range; files stdout.$first_idx..stdout.$last_idx" >&2
[ "$last_idx" -ge 3 ] && pass || fail "several rotations happened (last index $last_idx)"
[ "$(ls "$LOGDIR" | grep -c '^stdout\.')" -le 3 ] && pass || fail "at most maxFiles stdout files: $(ls "$LOGDIR")"
[ "$(ls "$LOGDIR" | grep -c '^stderr\.')" -le 3 ] && pass || fail "at most maxFiles stderr files"
big=$(find "$LOGDIR" -name 'stdout.*' -size +4096c | wc -l)
[ "$big" = 0 ] && pass || fail "no file over maxFileSize"
for f in "$LOGDIR"/stdout.*; do [ "$(tail -c1 "$f" | od -An -c | tr -d ' ')" = '\n' ] || [ "$f" = "$LOGDIR/stdout.$last_idx" ] || fail "$f does not end on a line boundary"; done
grep -q "retrying" "$WORK/follow.err" && pass || fail "follow noticed the agent was gone: $(cat "$WORK/follow.err")"
grep -q "rotated away" "$WORK/follow.err" && fail "follow lost output to rotation: $(cat "$WORK/follow.err")" || pass
[ "$(jp allocation ticker '{.status.tasks[0].pid}')" = "$pid1" ] && pass || fail "task PID unchanged after the agent restart"
[ "$(jp allocation ticker '{.status.tasks[0].restarts}')" = 0 ] && pass || fail "restarts stay 0"

# --tail N: the last N lines; --stderr reads the other stream.
logs ticker --tail 5 >"$WORK/tail.out" 2>&1 && pass || fail "logs --tail 5: $(cat "$WORK/tail.out")"
[ "$(wc -l <"$WORK/tail.out")" = 5 ] && consecutive "$WORK/tail.out" >/dev/null && pass || fail "--tail 5 gives 5 consecutive lines: $(cat "$WORK/tail.out")"
logs ticker --stderr --tail 3 >"$WORK/err.out" 2>&1 && pass || fail "logs --stderr"
[ "$(grep -c '^e=[0-9]*$' "$WORK/err.out")" = 3 ] && pass || fail "stderr stream: $(cat "$WORK/err.out")"
logs ticker --tail 0 >"$WORK/zero.out" 2>&1 && [ ! -s "$WORK/zero.out" ] && pass || fail "--tail 0 prints nothing"

# A burst written while the agent is dead does not block the task: its init drains the pipe.
alloc burst '[{"name":"main","command":["/bin/sh","-c","while [ ! -f /local/go ]; do sleep 0.05; done; head -c 8000000 /dev/zero | tr \"\\000\" x | fold -w 99; touch /local/burst-done; exec sleep 100000"],
  "logs":{"maxFiles":2,"maxFileSize":"1Mi"}}]'
wait_for "burst task Running" state_is burst Running
buid=$(jp allocation burst '{.metadata.uid}')
old_port=$(endpoint_port)
stop_agent -KILL
touch "$AGENT_DATA/allocs/$buid/main/local/go"
burst_done() { [ -f "$AGENT_DATA/allocs/$buid/main/local/burst-done" ]; }
wait_for "an 8 MB burst completes while the agent is dead" burst_done
[ "$(ls "$AGENT_DATA/allocs/$buid/main/logs" | grep -c '^stdout\.')" = 2 ] && pass || fail "burst rotated down to 2 files: $(ls -l "$AGENT_DATA/allocs/$buid/main/logs")"
start_agent
new_endpoint() { has_endpoint && [ "$(endpoint_port)" != "$old_port" ]; }
wait_for "the restarted agent publishes its new endpoint" new_endpoint

# Hostile input on the agent endpoint. curl -k: the tests do not pin; foxden logs does.
AG="https://127.0.0.1:$(endpoint_port)"
code() { curl -sk --path-as-is -o "$WORK/body" -w '%{http_code}' --max-time 10 "$@" || true; }
A=(-H "Authorization: Bearer $ADMIN_TOKEN")
agent_serving() { [ "$(code "${A[@]}" "$AG/logs/default/ticker/main?tail=1")" = 200 ]; }
wait_for "agent serving again (allocation cache synced)" agent_serving
[ "$(code "$AG/logs/default/ticker/main?tail=1")" = 401 ] && grep -q '"kind":"Status"' "$WORK/body" && pass || fail "no token -> 401 Status"
[ "$(code -H "Authorization: Bearer fxa.wrong" "$AG/logs/default/ticker/main?tail=1")" = 401 ] && pass || fail "bad token -> 401"
[ "$(code -H "Authorization: Basic Zm9vOmJhcg==" "$AG/logs/default/ticker/main?tail=1")" = 401 ] && pass || fail "basic auth -> 401"
[ "$(code -H "Authorization: Bearer $WORKER_TOKEN" "$AG/logs/default/ticker/main?tail=1")" = 403 ] && grep -q Forbidden "$WORK/body" && pass || fail "worker token -> 403"
[ "$(code "${A[@]}" "$AG/logs/default/ticker/main?tail=1")" = 200 ] && grep -q '^n=' "$WORK/body" && pass || fail "admin token -> 200"
for bad in "/logs/default/../ticker/main" "/logs/default/ticker/..%2f..%2fetc" "/logs/%2e%2e/ticker/main" \
           "/logs/default/ticker/main/extra" "/logs/default/ticker" "/logs/default/TICKER/main" "/logs/default/ticker/a%00b" \
           "/logs/default/$(printf 'x%.0s' $(seq 300))/main"; do
  c=$(code "${A[@]}" "$AG$bad")
  [ "$c" = 400 ] && grep -q '"code":400' "$WORK/body" && pass || fail "$bad -> $c (want 400): $(cat "$WORK/body")"
done
for q in "tail=-1" "tail=99999999999999999999999" "tail=abc" "tail=" "stream=stdin" "follow=maybe" "foo=bar" "%zz=1" \
         "from=1" "from=a:b" "tail=1&from=0:0" "tail=1&tail=2"; do
  c=$(code "${A[@]}" "$AG/logs/default/ticker/main?$q")
  [ "$c" = 400 ] && pass || fail "?$q -> $c (want 400): $(cat "$WORK/body")"
done
[ "$(code "${A[@]}" "$AG/logs/default/nosuch/main")" = 404 ] && pass || fail "unknown allocation -> 404"
[ "$(code "${A[@]}" "$AG/logs/default/ticker/nosuch")" = 404 ] && grep -q "tasks: main" "$WORK/body" && pass || fail "unknown task -> 404 listing tasks"
[ "$(code "${A[@]}" -X POST "$AG/logs/default/ticker/main")" = 405 ] && pass || fail "POST -> 405"
[ "$(code "${A[@]}" "$AG/nothing")" = 404 ] && pass || fail "other paths -> 404"
# Clients that never read (a follow) or never send anything, held open while others are served.
python3 - "$AG" "$ADMIN_TOKEN" >"$WORK/slow.log" 2>&1 <<'PY' &
import socket, ssl, sys, time
host, port = sys.argv[1].split("//")[1].split(":")
ctx = ssl.create_default_context(); ctx.check_hostname = False; ctx.verify_mode = ssl.CERT_NONE
held = []
for i in range(5):
    s = ctx.wrap_socket(socket.create_connection((host, int(port))))
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    s.sendall(f"GET /logs/default/ticker/main?follow=true HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {sys.argv[2]}\r\n\r\n".encode())
    held.append(s)
for i in range(5):
    held.append(socket.create_connection((host, int(port))))  # silent: no TLS handshake at all
time.sleep(8)
PY
SLOW_PID=$!
sleep 1
[ "$(code "${A[@]}" "$AG/logs/default/ticker/main?tail=2")" = 200 ] && pass || fail "served while slow clients hang"
wait "$SLOW_PID" 2>/dev/null || true
[ "$(code "${A[@]}" "$AG/logs/default/ticker/main?tail=2")" = 200 ] && pass || fail "served after slow clients"
kill -0 "$AGENT_PID" 2>/dev/null && pass || fail "agent still running after hostile input"

# The command line: clear errors for bad flags and values.
expect_fail_contains "negative --tail" "--tail must be 0 or more" logs ticker --tail -3
expect_fail_contains "unknown allocation" 'allocation "nosuch" not found in namespace "default"' logs nosuch
expect_fail_contains "bad allocation name" "invalid allocation name" logs "../etc"
expect_fail_contains "bad task name" "invalid task name" logs ticker --task "a/b"
expect_fail_contains "unknown task" "choose one of: [main]" logs ticker --task other
expect_fail_contains "bad namespace" "invalid namespace" logs ticker -n "Bad_NS"
expect_fail_contains "missing kubeconfig" "nope.yaml" "$FOXDEN_BIN/foxden" logs ticker --kubeconfig "$WORK/nope.yaml"
alloc two '[{"name":"a","command":["/bin/sh","-c","echo from-a; exec sleep 100000"]},{"name":"b","command":["/bin/sh","-c","echo from-b; exec sleep 100000"]}]'
expect_fail_contains "two tasks need --task" "a task name must be specified for allocation two, choose one of: [a b]" logs two
two_b() { logs two --task b | grep -q from-b; }
wait_for "--task picks the task" two_b
k 1.32 apply -f - >/dev/null <<JSON
{"apiVersion":"foxden.io/v1alpha1","kind":"Worker","metadata":{"name":"logs-w0"}}
JSON
k 1.32 apply -f - >/dev/null <<JSON
{"apiVersion":"foxden.io/v1alpha1","kind":"Allocation","metadata":{"name":"elsewhere","namespace":"default"},
 "spec":{"workerName":"logs-w0","jobName":"t","groupName":"g","index":0,"tasks":[{"name":"main","command":["/bin/true"]}]}}
JSON
expect_fail_contains "worker without endpoint" "publishes no log endpoint" logs elsewhere
expect_fail_contains "bad logs spec is rejected by the schema" "maxFiles" \
  sh -c 'echo "{\"apiVersion\":\"foxden.io/v1alpha1\",\"kind\":\"Allocation\",\"metadata\":{\"name\":\"badlogs\",\"namespace\":\"default\"},\"spec\":{\"workerName\":\"logs-w1\",\"jobName\":\"t\",\"groupName\":\"g\",\"index\":0,\"tasks\":[{\"name\":\"main\",\"command\":[\"/bin/true\"],\"logs\":{\"maxFiles\":0}}]}}" | "$0" --kubeconfig "$1" apply -f -' \
  "$KUBECTL_DIR/kubectl.1.32" "$KUBECONFIG_FILE"
alloc toosmall '[{"name":"main","command":["/bin/true"],"logs":{"maxFileSize":"100"}}]'
msg_has() { jp allocation toosmall '{.status.tasks[0].message}' | grep -q "logs.maxFileSize"; }
wait_for "too small maxFileSize is a StartError naming the field" msg_has

# A follower ends when its allocation is deleted.
logs_bg ticker -f >/dev/null 2>"$WORK/follow2.err" &
FOLLOW_PID=$!
sleep 1
k 1.32 delete allocation ticker --wait=false >/dev/null
follower_done() { ! kill -0 "$FOLLOW_PID" 2>/dev/null; }
wait_for "follow ends when the allocation is gone" follower_done
wait "$FOLLOW_PID" && pass || fail "follow exits 0 after the allocation is gone: $(cat "$WORK/follow2.err")"
FOLLOW_PID=""

k 1.32 delete allocations --all --wait=false >/dev/null
ticker_gone() { ! kill -0 "$pid1" 2>/dev/null; }
wait_for "tasks stopped" ticker_gone
no_task_cgroups() { [ -z "$(find /sys/fs/cgroup/pids/foxden-$NODE -mindepth 1 -maxdepth 1 -type d ! -name "spare-*" 2>/dev/null)" ]; }  # spare-N: empty ones kept ready
wait_for "task cgroups removed" no_task_cgroups
stop_agent
rm_cgroups
leftover=$( (ls -d /sys/fs/cgroup/*/foxden-$NODE* 2>/dev/null || true) | wc -l)
[ "$leftover" = 0 ] && pass || fail "cgroups left behind: $(ls -d /sys/fs/cgroup/*/foxden-$NODE*/* 2>/dev/null)"
# Under the ASan+UBSan build: no report from the agent or from foxden logs either.
if grep -qE "ERROR: AddressSanitizer|runtime error:|ERROR: LeakSanitizer" "$WORK/agent.log" "$WORK/follow.err"; then
  fail "sanitizer report in the agent's or foxden logs' output"
  grep -h -A20 -E "ERROR: AddressSanitizer|runtime error:|ERROR: LeakSanitizer" "$WORK/agent.log" "$WORK/follow.err" | head -60 >&2
else
  pass
fi
finish
