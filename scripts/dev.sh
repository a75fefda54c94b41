#!/usr/bin/env bash
# `make dev`: a working single-machine Foxden. Starts `foxden server` (data in .foxden/, HTTPS on
# 127.0.0.1:${FOXDEN_PORT:-6443}) and, as root, a `foxden-agent` for this machine (worker "local")
# in the background if they are not already running, applies the examples (one of them a task
# that runs on "local"), and prints how to use kubectl against it. Idempotent.
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=${FOXDEN_DATA:-$PWD/.foxden}
PORT=${FOXDEN_PORT:-6443}
BIN=${FOXDEN_BIN:-$PWD/build/bin}
mkdir -p "$DATA"
KUBECTL=kubectl
if [ -x /usr/lib/google-cloud-sdk/bin/kubectl.1.32 ]; then KUBECTL=/usr/lib/google-cloud-sdk/bin/kubectl.1.32; fi

if [ -f "$DATA/server.pid" ] && kill -0 "$(cat "$DATA/server.pid")" 2>/dev/null; then
  echo "foxden server already running (pid $(cat "$DATA/server.pid"))"
else
  nohup "$BIN/foxden" server --data-dir "$DATA" --listen "127.0.0.1:$PORT" --crds "$PWD/crds" \
    >>"$DATA/server.log" 2>&1 &
  echo $! >"$DATA/server.pid"
  for _ in $(seq 1 100); do
    [ -s "$DATA/kubeconfig" ] && curl -skf "https://127.0.0.1:$PORT/healthz" >/dev/null 2>&1 && break
    sleep 0.1
  done
  curl -skf "https://127.0.0.1:$PORT/healthz" >/dev/null || { echo "server failed to start:"; tail -20 "$DATA/server.log"; exit 1; }
  echo "foxden server started (pid $(cat "$DATA/server.pid")), log: $DATA/server.log"
fi

# The operator: places the example Jobs on the agent below (metrics on 127.0.0.1:8383).
if [ -f "$DATA/operator.pid" ] && kill -0 "$(cat "$DATA/operator.pid")" 2>/dev/null; then
  echo "foxden-operator already running (pid $(cat "$DATA/operator.pid"))"
elif [ -x "$BIN/foxden-operator" ]; then
  nohup "$BIN/foxden-operator" --kubeconfig "$DATA/kubeconfig" --metrics-addr "127.0.0.1:${FOXDEN_OPERATOR_METRICS_PORT:-8383}" \
    >>"$DATA/operator.log" 2>&1 &
  echo $! >"$DATA/operator.pid"
  echo "foxden-operator started (pid $(cat "$DATA/operator.pid")), log: $DATA/operator.log"
fi

# A node agent for this machine (the exec driver needs root: namespaces, cgroups).
if [ "$(id -u)" -eq 0 ] && [ -x "$BIN/foxden-agent" ]; then
  if [ -f "$DATA/agent.pid" ] && kill -0 "$(cat "$DATA/agent.pid")" 2>/dev/null; then
    echo "foxden-agent already running (pid $(cat "$DATA/agent.pid"))"
  else
    [ -s "$DATA/worker-local.kubeconfig" ] ||
      "$BIN/foxden" token create --worker local --kubeconfig "$DATA/kubeconfig" >"$DATA/worker-local.kubeconfig"
    nohup "$BIN/foxden-agent" --kubeconfig "$DATA/worker-local.kubeconfig" --name local \
      --data-dir "$DATA/agent" >>"$DATA/agent.log" 2>&1 &
    echo $! >"$DATA/agent.pid"
    echo "foxden-agent started as worker \"local\" (pid $(cat "$DATA/agent.pid")), log: $DATA/agent.log"
  fi
else
  echo "not root: no foxden-agent started (the exec driver needs root)"
fi

export KUBECONFIG="$DATA/kubeconfig"
"$KUBECTL" --cache-dir "$DATA/kubectl-cache" apply -f examples/
echo
for _ in $(seq 1 100); do
  [ "$("$KUBECTL" --cache-dir "$DATA/kubectl-cache" get allocation hello -o jsonpath='{.status.phase}' 2>/dev/null)" = Running ] && break
  sleep 0.1
done
"$KUBECTL" --cache-dir "$DATA/kubectl-cache" get workers,jobs.foxden.io,allocations
echo
cat <<MSG
Foxden's control plane is running on https://127.0.0.1:$PORT (one machine; a real cluster is the
answer at scale). Use it with:

  export KUBECONFIG=$DATA/kubeconfig
  kubectl get configmaps
  kubectl api-resources --api-group=foxden.io

  kubectl get allocation hello -o yaml      # the example task, running on worker "local"

Stop it with: kill \$(cat $DATA/operator.pid 2>/dev/null) \$(cat $DATA/server.pid) \$(cat $DATA/agent.pid 2>/dev/null)
(running tasks outlive the agent by design; delete their Allocations first to stop them)
MSG
