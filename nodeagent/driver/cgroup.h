#pragma once
// One task's cgroup across the hierarchies, for cgroup v1 (through libcgroup, as on this host) and
// v2 (plain files under the unified mount; libcgroup 2.0.2's v2 support is too immature).
//
// v1 layout assumed: one hierarchy per controller (cpu and cpuacct may be separate or joined;
// each is looked up through libcgroup). The device allow-list is devices.deny/allow on v1 and a
// BPF_PROG_TYPE_CGROUP_DEVICE program attached to the task's cgroup on v2.

#include <sys/types.h>

#include <cstdint>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "kube/status.h"
#include "nodeagent/driver/driver.h"

namespace nodeagent {

enum class CgroupMode { kV1, kV2 };

// statfs() of the cgroup mount: cgroup2 at the top means v2, a tmpfs of hierarchies means v1.
CgroupMode detectCgroupMode(const std::string& root = "/sys/fs/cgroup");

struct CgroupSetting {
  std::string controller;
  std::string file;
  std::string value;
};

// The files (in write order) that express `limits`. Pure, so the v2 mapping is testable here.
std::vector<CgroupSetting> cgroupSettings(CgroupMode mode, const CgroupLimits& limits, bool memswAvailable);
// A v1 setting that every new cgroup has already (the kernel's defaults): not written.
bool isNewV1CgroupDefault(const CgroupSetting& s);

// A device-cgroup rule, e.g. {'c', 195, 0} -> "c 195:0 rwm"; minor -1 = any.
struct DeviceRule {
  char type = 'c';
  int64_t major = 0;
  int64_t minor = 0;
  std::string toString() const;
};
// null, zero, full, random, urandom, tty, ptmx and the pts range.
std::vector<DeviceRule> standardDeviceRules();

// cgroup v2: attaches a BPF device filter allowing exactly `rules` (rwm) to the cgroup directory.
[[nodiscard]] kube::Status attachDeviceFilter(const std::string& cgroupDir, const std::vector<DeviceRule>& rules);

class CgroupManager {
 public:
  // v1: `root` is ignored (libcgroup finds the mounts); v2: the unified mount (a fake tree in tests).
  CgroupManager(CgroupMode mode, std::string root = "/sys/fs/cgroup");

  CgroupMode mode() const { return mode_; }
  // Creates the cgroup `path` ("<parent>/<id>") in every hierarchy with the limits and devices.
  [[nodiscard]] kube::Status create(const std::string& path, const CgroupLimits& limits,
                                    const std::vector<DeviceRule>& devices);
  // v1, without a cpuset: makes `spare`, a cgroup made by create() with default limits and no
  // devices, and holding no process, the cgroup `path` of the same parent (one rename in each
  // hierarchy: no mkdir, no libcgroup walk of every hierarchy), then writes `limits` and allows
  // `devices`. On failure the caller removes both paths.
  [[nodiscard]] kube::Status adopt(const std::string& spare, const std::string& path, const CgroupLimits& limits,
                                   const std::vector<DeviceRule>& devices);
  // Moves `pid` (single-threaded: v1 attaches by tid) into the cgroup in every hierarchy.
  [[nodiscard]] kube::Status attach(const std::string& path, pid_t pid);
  // v2: an fd of the cgroup's directory, for clone3's CLONE_INTO_CGROUP (the caller closes it).
  [[nodiscard]] kube::StatusOr<int> openDirFd(const std::string& path) const;
  // v1: the `tasks` file of every hierarchy the cgroup `path` is (or will be) created in, cpuset's
  // only if `withCpuset`. A process enters the cgroup without an attach by pid by writing "0" to
  // each: moving itself skips the kernel's global threadgroup lock and RCU wait an attach takes.
  std::vector<std::string> joinPaths(const std::string& path, bool withCpuset) const;
  std::vector<pid_t> procs(const std::string& path) const;
  // Whether the cgroup `path` exists (in the first hierarchy of the controllers used).
  bool exists(const std::string& path) const;
  // Freezes, SIGKILLs every process, thaws, and waits (up to timeoutMs) until the cgroup is empty.
  [[nodiscard]] kube::Status killAll(const std::string& path, int timeoutMs);
  // The OOM killer's kill count in this cgroup (v1 memory.oom_control, v2 memory.events).
  int64_t oomKills(const std::string& path) const;
  // Names of the child cgroups of `parent` (one level).
  std::vector<std::string> children(const std::string& parent) const;
  [[nodiscard]] kube::Status remove(const std::string& path);
  // The directory of `path` in the hierarchy of `controller` ("" if not mounted).
  std::string dir(const std::string& controller, const std::string& path) const;
  // The controllers this manager uses, in creation order.
  const std::vector<std::string>& controllers() const { return controllers_; }

 private:
  [[nodiscard]] kube::Status createV1(const std::string& path, const CgroupLimits& limits,
                                      const std::vector<DeviceRule>& devices);
  [[nodiscard]] kube::Status createV2(const std::string& path, const CgroupLimits& limits,
                                      const std::vector<DeviceRule>& devices);
  // v1: the directory of `path` in each hierarchy used (cpuset's only if `withCpuset`), each once.
  std::vector<std::string> hierarchyDirs(const std::string& path, bool withCpuset) const;
  // v1: appends `rules` to the cgroup's devices.allow.
  [[nodiscard]] kube::Status allowDevices(const std::string& path, const std::vector<DeviceRule>& rules);
  [[nodiscard]] kube::Status setFrozen(const std::string& path, bool frozen);

  CgroupMode mode_;
  std::string root_;
  std::vector<std::string> controllers_;
  std::vector<std::pair<std::string, std::string>> mounts_;  // controller -> mount point (v1)
  bool memsw_ = false;
  bool deviceFilter_ = true;  // v2: false on a fake tree (statfs says it is no cgroup2 mount)
  mutable std::mutex mu_;  // libcgroup keeps global state; serialize our calls into it
};

// Small file helpers shared by the driver (they report errno through the Status message).
[[nodiscard]] kube::Status writeFile(const std::string& path, const std::string& value);
std::optional<std::string> readFile(const std::string& path);

}  // namespace nodeagent
