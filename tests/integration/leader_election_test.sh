#!/usr/bin/env bash
# Two processes using kube/'s LeaderElector contend for one Lease on a real `foxden server`:
# exactly one leads; kill -9 the leader and the other takes over. The observed hand-over time is
# printed next to the lease duration (a figure, not an assertion: the wait below is a safety net).
source "$(dirname "$0")/lib/common.sh"
start_server
LEASE_MS=3000
for id in alpha beta; do
  "$FOXDEN_BIN/kube_driver" elect --kubeconfig "$KUBECONFIG_FILE" --identity "$id" --lease-ms $LEASE_MS \
    >"$WORK/$id.out" 2>"$WORK/$id.err" &
  echo $! >"$WORK/$id.pid"
done
holder() { k 1.32 get lease test-leader -n foxden-system -o jsonpath='{.spec.holderIdentity}' 2>/dev/null || true; }
leading() { grep -l '^LEADING' "$WORK/alpha.out" "$WORK/beta.out" 2>/dev/null | wc -l; }

for _ in $(seq 1 600); do [ "$(leading)" -ge 1 ] && break; sleep 0.05; done
sleep 2  # several retry periods: a second leader would show up now
if [ "$(leading)" -eq 1 ]; then pass; else fail "exactly one leader (got $(leading))"; fi
first=$(grep -h '^LEADING' "$WORK/alpha.out" "$WORK/beta.out" | awk '{print $2}')
if [ "$(holder)" = "$first" ]; then pass; else fail "lease holder $(holder) != $first"; fi
other=alpha; [ "$first" = alpha ] && other=beta

lastRenew=$(k 1.32 get lease test-leader -n foxden-system -o jsonpath='{.spec.renewTime}')
t0=$(date +%s%N)
kill -9 "$(cat "$WORK/$first.pid")"
for _ in $(seq 1 600); do grep -q '^LEADING' "$WORK/$other.out" && break; sleep 0.05; done
t1=$(date +%s%N)
if grep -q '^LEADING' "$WORK/$other.out"; then pass; else fail "$other did not take over"; fi
if [ "$(holder)" = "$other" ]; then pass; else fail "lease holder after failover: $(holder)"; fi
acquired=$(k 1.32 get lease test-leader -n foxden-system -o jsonpath='{.spec.acquireTime}')
sinceRenew=$(python3 -c "import datetime,sys; p=lambda s: datetime.datetime.strptime(s, '%Y-%m-%dT%H:%M:%S.%fZ'); print(int((p(sys.argv[2]) - p(sys.argv[1])).total_seconds() * 1000))" "$lastRenew" "$acquired" 2>/dev/null || echo '?')
echo "hand-over: $(( (t1 - t0) / 1000000 )) ms after kill -9; the new leader acquired the lease $sinceRenew ms after the old one's last renewal (lease duration $LEASE_MS ms, retry period $((LEASE_MS / 6)) ms)"
transitions=$(k 1.32 get lease test-leader -n foxden-system -o jsonpath='{.spec.leaseTransitions}')
if [ "${transitions:-0}" -ge 1 ]; then pass; else fail "leaseTransitions not counted ($transitions)"; fi

# A clean stop releases the lease at once.
kill -TERM "$(cat "$WORK/$other.pid")"; wait "$(cat "$WORK/$other.pid")" 2>/dev/null || true
if [ -z "$(holder)" ]; then pass; else fail "lease not released on stop: $(holder)"; fi
finish
