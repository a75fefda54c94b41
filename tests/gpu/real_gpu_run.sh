#!/usr/bin/env bash
# Proves GPU tasks on REAL hardware (the lent GPU machine; not part of the CI suite, which has no
# GPU and uses fake devices in tests/integration/gpu_agent_test.sh).
#
#   scripts/gpu-bundle.sh            # here: builds gpu-bundle/ (stripped binaries + their libraries)
#   bash tests/gpu/real_gpu_run.sh gpu-bundle OUTDIR    # there, as root
#
# Starts `foxden server` and a real `foxden-agent` (real nvidia-smi, real /dev/nvidia*), then runs
# the CUDA program tests/gpu/cuda_smoke.cc as exec-driver tasks: one given GPU 0 (must run a kernel
# and check its result), one given no GPU (must see no device). Everything it saw goes to OUTDIR.
set -uo pipefail
B=$(cd "$1" && pwd)
OUT=${2:-/tmp/foxden-gpu-out}
SRC=$(cd "$(dirname "$0")/../.." && pwd)
mkdir -p "$OUT"
export LD_LIBRARY_PATH=$B/lib
WORK=$(mktemp -d /tmp/foxden-gpu.XXXXXX)
PORT=16443
say() { echo "== $*" | tee -a "$OUT/summary.txt"; }

# The program must be inside the task's root: the default root binds /usr read-only.
install -m 0755 "$B/cuda_smoke" /usr/local/bin/foxden-cuda-smoke

"$B/bin/foxden" server --data-dir "$WORK/data" --listen 127.0.0.1:$PORT --crds "$SRC/crds" >"$OUT/server.log" 2>&1 &
SERVER=$!
for _ in $(seq 1 200); do curl -sk https://127.0.0.1:$PORT/healthz >/dev/null 2>&1 && break; sleep 0.05; done
TOKEN=$(cat "$WORK/data/admin.token")
api() { curl -sk -H "Authorization: Bearer $TOKEN" -H 'Content-Type: application/json' "$@"; }
"$B/bin/foxden" token create --worker gpu-rig --kubeconfig "$WORK/data/kubeconfig" >"$WORK/worker.kubeconfig"
"$B/bin/foxden-agent" --kubeconfig "$WORK/worker.kubeconfig" --name gpu-rig --data-dir "$WORK/agent" \
  --heartbeat-ms 500 --enable-raw-exec >"$OUT/agent.log" 2>&1 &
AGENT=$!
trap 'kill $AGENT $SERVER 2>/dev/null; sleep 1; kill -9 $AGENT $SERVER 2>/dev/null; rm -f /usr/local/bin/foxden-cuda-smoke' EXIT

for _ in $(seq 1 100); do
  api https://127.0.0.1:$PORT/apis/foxden.io/v1alpha1/workers/gpu-rig | grep -q '"gpus"' && break; sleep 0.1
done
api https://127.0.0.1:$PORT/apis/foxden.io/v1alpha1/workers/gpu-rig >"$OUT/worker.json"
say "Worker status (capacity, gpus, labels):"
python3 - "$OUT/worker.json" <<'PY' | tee -a "$OUT/summary.txt"
import json, sys
w = json.load(open(sys.argv[1]))
print(" labels:", {k: v for k, v in w["metadata"].get("labels", {}).items() if "gpu" in k})
print(" capacity:", w["status"].get("capacity"))
print(" gpus:", w["status"].get("gpus"))
print(" drivers:", w["status"].get("drivers"))
PY

alloc() {  # alloc NAME GPUS_JSON GPU_COUNT
  api -X POST https://127.0.0.1:$PORT/apis/foxden.io/v1alpha1/namespaces/default/allocations -d @- >/dev/null <<JSON
{"apiVersion":"foxden.io/v1alpha1","kind":"Allocation",
 "metadata":{"name":"$1","namespace":"default","labels":{"foxden.io/worker":"gpu-rig"}},
 "spec":{"workerName":"gpu-rig","resources":{"gpus":$2},"restartPolicy":{"attempts":0,"mode":"Fail"},
  "tasks":[{"name":"main","resources":{"limits":{"memory":"2Gi","nvidia.com/gpu":"$3"}},"command":["/bin/sh","-c",
   "echo uid=\$(id -u) NVIDIA_VISIBLE_DEVICES=\$NVIDIA_VISIBLE_DEVICES CUDA_VISIBLE_DEVICES=\$CUDA_VISIBLE_DEVICES; ls /dev; nvidia-smi -L 2>&1; exec /usr/local/bin/foxden-cuda-smoke"]}]}}
JSON
}
wait_terminal() {
  for _ in $(seq 1 600); do
    phase=$(api https://127.0.0.1:$PORT/apis/foxden.io/v1alpha1/namespaces/default/allocations/$1 |
      python3 -c 'import json,sys; print(json.load(sys.stdin).get("status",{}).get("phase",""))')
    case $phase in Succeeded|Failed) break ;; esac
    sleep 0.1
  done
  api https://127.0.0.1:$PORT/apis/foxden.io/v1alpha1/namespaces/default/allocations/$1 >"$OUT/$1.json"
  say "allocation $1: phase $phase"
  python3 -c 'import json,sys; s=json.load(open(sys.argv[1]))["status"]; [print("  task", t["name"], t.get("reason"), "exit", t.get("exitCode"), t.get("message","")) for t in s.get("tasks",[])]' "$OUT/$1.json" | tee -a "$OUT/summary.txt"
}
logs_of() {  # the task's output files of allocation $1
  uid=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["metadata"]["uid"])' "$OUT/$1.json")
  cat "$WORK/agent/allocs/$uid/main/logs/"* 2>/dev/null | sed 's/^/    /' | tee -a "$OUT/summary.txt"
}

alloc cuda-gpu0 '[{"vendor":"nvidia","index":0}]' 1
wait_terminal cuda-gpu0
logs_of cuda-gpu0
alloc cuda-nogpu '[]' 0
wait_terminal cuda-nogpu
logs_of cuda-nogpu
# raw_exec sees the host's /dev: only the devices cgroup (v1 allow-list, v2 BPF filter) stands
# between a task and a GPU it was not given.
rawalloc() {  # rawalloc NAME GPUS_JSON GPU_COUNT
  api -X POST https://127.0.0.1:$PORT/apis/foxden.io/v1alpha1/namespaces/default/allocations -d @- >/dev/null <<JSON
{"apiVersion":"foxden.io/v1alpha1","kind":"Allocation",
 "metadata":{"name":"$1","namespace":"default","labels":{"foxden.io/worker":"gpu-rig"}},
 "spec":{"workerName":"gpu-rig","resources":{"gpus":$2},"restartPolicy":{"attempts":0,"mode":"Fail"},
  "tasks":[{"name":"main","driver":"raw_exec","resources":{"limits":{"nvidia.com/gpu":"$3"}},"command":["/bin/sh","-c",
   "head -c 0 /dev/nvidia0 && echo open /dev/nvidia0: allowed; head -c 0 /dev/nvidiactl && echo open /dev/nvidiactl: allowed; /usr/local/bin/foxden-cuda-smoke; exit 0"]}]}}
JSON
}
rawalloc raw-gpu0 '[{"vendor":"nvidia","index":0}]' 1
wait_terminal raw-gpu0
logs_of raw-gpu0
rawalloc raw-nogpu '[]' 0
wait_terminal raw-nogpu
logs_of raw-nogpu
say "cgroup mode: $(stat -fc %T /sys/fs/cgroup)"
cp -r "$WORK/agent/state" "$OUT/agent-state" 2>/dev/null || true
