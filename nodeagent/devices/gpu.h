#pragma once
// GPU detection and assignment for the node agent.
//
// GpuDetector finds the machine's GPUs (NVIDIA through `nvidia-smi`, AMD through /dev/kfd,
// /dev/dri/renderD* and sysfs) and the device nodes each one needs; select() turns an allocation's
// (vendor, index) list into GPUs of the inventory, and GpuInventory::deviceNodes()/env() give what
// goes into TaskLaunch::devices and TaskLaunch::env. Every path is configurable so that tests run
// against a fake tree (fake nodes, fake sysfs, a fake nvidia-smi) without root or the real /dev.

#include <cstdint>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include "kube/status.h"

namespace nodeagent {

struct Gpu {
  std::string vendor;  // "nvidia" | "amd"
  int index = 0;       // nvidia-smi's index; AMD: rank among AMD render nodes by minor
  std::string uuid;    // "GPU-..." (NVIDIA always; AMD when sysfs has unique_id, else "")
  std::string model;
  int64_t memoryBytes = 0;               // 0 when the tool or sysfs does not say
  std::vector<std::string> deviceNodes;  // nodes a task using this GPU alone needs (/dev/nvidia0)
};

struct GpuInventory {
  std::vector<Gpu> gpus;
  // Nodes every task using any GPU of that vendor needs: nvidia /dev/nvidiactl, /dev/nvidia-uvm,
  // /dev/nvidia-uvm-tools, /dev/nvidia-modeset (those present); amd /dev/kfd.
  std::vector<std::string> sharedNodes;
  // Dynamic majors from /proc/devices (-1: module not loaded). nvidia-uvm's node is often missing
  // on headless rigs; the major is what a caller needs to mknod it or to write a device-cgroup
  // rule.
  int nvidiaUvmMajor = -1;
  int kfdMajor = -1;
  // Things an operator should know (a GPU skipped, a node missing); never fatal.
  std::vector<std::string> warnings;

  // The GPU's per-GPU nodes plus the shared nodes of the vendors among `assigned`, deduplicated,
  // in a stable order: exactly what TaskLaunch::devices should hold.
  std::vector<std::string> deviceNodes(const std::vector<const Gpu*>& assigned) const;

  // NVIDIA: NVIDIA_VISIBLE_DEVICES and CUDA_VISIBLE_DEVICES as UUIDs (index if none), which stay
  // right whether or not the task sees the other GPUs' nodes.
  // AMD: ROCR_VISIBLE_DEVICES as UUIDs when every assigned AMD GPU has one, else as task-local
  // ordinals 0..n-1 (ROCm skips render nodes the task cannot open, so under the exec driver the
  // assigned GPUs are renumbered from 0); HIP_VISIBLE_DEVICES = 0..n-1 (it indexes what ROCR
  // shows). Variables are set only for vendors among `assigned`.
  std::map<std::string, std::string> env(const std::vector<const Gpu*>& assigned) const;
};

struct GpuDetectorOptions {
  std::string nvidiaSmi = "nvidia-smi";  // path, or a name looked up on PATH
  std::string devRoot = "/dev";
  std::string sysRoot = "/sys";
  std::string procDevices = "/proc/devices";
  // /proc/driver/nvidia/gpus/<bus>/information maps a GPU's UUID to its device minor, which is not
  // always nvidia-smi's index (e.g. A100 systems). Without it, minor = index.
  std::string procDriverNvidia = "/proc/driver/nvidia";
  int timeoutMs = 5000;  // nvidia-smi hangs when the driver is wedged
};

class GpuDetector {
 public:
  explicit GpuDetector(GpuDetectorOptions options = {}) : options_(std::move(options)) {}

  // No GPUs (no nvidia-smi, no /dev/kfd) is an empty inventory, not an error. An nvidia-smi that
  // fails, times out or prints nothing parseable is an error: a GPU rig silently advertising zero
  // GPUs is worse than an agent that says why it cannot count them.
  [[nodiscard]] kube::StatusOr<GpuInventory> detect() const;

 private:
  [[nodiscard]] kube::Status detectNvidia(GpuInventory& inv,
                                          const std::map<std::string, int>& majors) const;
  void detectAmd(GpuInventory& inv, const std::map<std::string, int>& majors) const;

  GpuDetectorOptions options_;
};

// Character-device majors by driver name from a /proc/devices text (block devices ignored).
std::map<std::string, int> parseProcDevices(const std::string& text);

// Parses `nvidia-smi --query-gpu=index,uuid,name,memory.total --format=csv,noheader,nounits`.
// Lines that do not parse are skipped and described in `warnings`. Memory is in MiB.
std::vector<Gpu> parseNvidiaSmiCsv(const std::string& text, std::vector<std::string>& warnings);

// The GPUs named by (vendor, index), in the order given. Unknown vendors, GPUs this worker does
// not have and GPUs named twice are refused with a message that says which.
[[nodiscard]] kube::StatusOr<std::vector<const Gpu*>> select(
    const GpuInventory& inventory, const std::vector<std::pair<std::string, int>>& vendorIndex);

}  // namespace nodeagent
