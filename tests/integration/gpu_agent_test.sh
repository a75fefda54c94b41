#!/usr/bin/env bash
# GPUs with FAKE devices (no GPU on this machine): fake NVIDIA device nodes (mknod, the real
# nvidia major 195) and a FAKE nvidia-smi. The Worker lists the GPUs with the gpu labels; a task
# given GPU 1 sees only that GPU's node (and nvidiactl) and the matching env; the devices cgroup
# and the missing CAP_MKNOD keep it from the other GPU.
source "$(dirname "$0")/lib/common.sh"
start_server
NODE=gpu1
FAKEDEV=/dev/foxden-fake-gpus-$$
mkdir -p "$FAKEDEV"
mknod "$FAKEDEV/nvidia0" c 195 0
mknod "$FAKEDEV/nvidia1" c 195 1
mknod "$FAKEDEV/nvidiactl" c 195 255
cat >"$WORK/fake-nvidia-smi" <<'SH'
#!/bin/sh
# FAKE nvidia-smi for tests: two GPUs.
echo "0, GPU-aaaaaaaa-0000-0000-0000-000000000000, NVIDIA FAKE A100 80GB, 81920"
echo "1, GPU-bbbbbbbb-1111-1111-1111-111111111111, NVIDIA FAKE A100 80GB, 81920"
SH
chmod +x "$WORK/fake-nvidia-smi"
"$FOXDEN_BIN/foxden" token create --worker $NODE --kubeconfig "$KUBECONFIG_FILE" >"$WORK/worker.kubeconfig"
"$FOXDEN_BIN/foxden-agent" --kubeconfig "$WORK/worker.kubeconfig" --name $NODE --data-dir "$WORK/agent" \
  --nvidia-smi "$WORK/fake-nvidia-smi" --gpu-dev-root "$FAKEDEV" --heartbeat-ms 500 >"$WORK/agent.log" 2>&1 &
AGENT=$!
trap 'kill -9 $AGENT 2>/dev/null || true; rm -rf "$FAKEDEV"; cleanup' EXIT
listed() { [ "$(jp worker $NODE '{.status.capacity.nvidia\.com/gpu}')" = 2 ]; }
for _ in $(seq 1 300); do listed && break; sleep 0.1; done
listed && pass || fail "worker capacity nvidia.com/gpu = 2"
[ "$(jp worker $NODE '{.status.gpus[1].uuid}')" = GPU-bbbbbbbb-1111-1111-1111-111111111111 ] && pass || fail "worker lists GPU uuids"
[ "$(jp worker $NODE '{.metadata.labels.foxden\.io/gpu-vendor}')" = nvidia ] && pass || fail "gpu-vendor label"
jp worker $NODE '{.metadata.labels.foxden\.io/gpu-model}' | grep -q FAKE && pass || fail "gpu-model label"

k 1.32 apply -f - >/dev/null <<JSON
{"apiVersion":"foxden.io/v1alpha1","kind":"Allocation",
 "metadata":{"name":"cuda","namespace":"default","labels":{"foxden.io/worker":"$NODE"}},
 "spec":{"workerName":"$NODE","resources":{"gpus":[{"vendor":"nvidia","index":1}]},
  "tasks":[{"name":"main","resources":{"limits":{"nvidia.com/gpu":"1"}},"command":["/bin/sh","-c",
   "ls $FAKEDEV; echo NVIDIA_VISIBLE_DEVICES=\$NVIDIA_VISIBLE_DEVICES; echo CUDA=\$CUDA_VISIBLE_DEVICES; cat $FAKEDEV/nvidia1 2>&1 | head -1; mknod /tmp/n0 c 195 0 2>&1 | head -1; exit 0"]}]}}
JSON
done_() { [ "$(jp allocation cuda '{.status.phase}')" = Succeeded ]; }
for _ in $(seq 1 300); do done_ && break; sleep 0.1; done
done_ && pass || fail "GPU task completes ($(jp allocation cuda '{.status.tasks[0].message}'))"
out=$(cat "$WORK"/agent/allocs/*/main/logs/stdout.* "$WORK"/agent/allocs/*/main/logs/stderr.* 2>/dev/null)
echo "$out" | sed 's/^/    task: /'
grep -qx "nvidia1" <<<"$out" && grep -qx "nvidiactl" <<<"$out" && pass || fail "task sees its GPU node and nvidiactl"
grep -qx "nvidia0" <<<"$out" && fail "task sees the other GPU's node" || pass
grep -q "NVIDIA_VISIBLE_DEVICES=GPU-bbbbbbbb" <<<"$out" && grep -q "CUDA=GPU-bbbbbbbb" <<<"$out" && pass || fail "visible-devices env"
grep -q "No such device or address" <<<"$out" && pass || fail "assigned node opens past the devices cgroup (ENXIO: no driver)"
grep -qi "not permitted" <<<"$out" && pass || fail "mknod of the other GPU denied"

# A GPU this worker does not have is a clear error.
k 1.32 apply -f - >/dev/null <<JSON
{"apiVersion":"foxden.io/v1alpha1","kind":"Allocation",
 "metadata":{"name":"nogpu","namespace":"default","labels":{"foxden.io/worker":"$NODE"}},
 "spec":{"workerName":"$NODE","resources":{"gpus":[{"vendor":"nvidia","index":7}]},
  "tasks":[{"name":"main","resources":{"limits":{"nvidia.com/gpu":"1"}},"command":["/bin/true"]}]}}
JSON
failed_() { [ "$(jp allocation nogpu '{.status.phase}')" = Failed ]; }
for _ in $(seq 1 300); do failed_ && break; sleep 0.1; done
jp allocation nogpu '{.status.tasks[0].message}' | grep -q "no nvidia GPU 7" && pass || fail "unknown GPU: $(jp allocation nogpu '{.status.tasks[0].message}')"
kill -9 $AGENT 2>/dev/null || true
rm_agent_cgroups $NODE
finish
