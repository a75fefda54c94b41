#pragma once
// What an exec task's root is made of, from its spec: the worker's root binds or a rootfs tarball
// (unpacked once per digest by RootfsCache), and the group volumes it mounts.
//
//   task.rootfs {path, sha256}     -> RootfsCache::prepare -> TaskLaunch::rootfs (shared, read-only)
//   task.volumeMounts[] {name, mountPath, readOnly}
//     group volume emptyDir        -> <alloc dir>/volumes/<name>, shared by the group's tasks
//     group volume hostPath {path} -> realpath, allowed only under a --host-volume directory
//
// Every refusal is a kube::Status with the field and the reason; the task runner reports it as a
// StartError. Called on the task runner's thread (prepare may unpack: seconds for a large image).

#include <string>
#include <vector>

#include "kube/json.h"
#include "kube/status.h"
#include "nodeagent/driver/driver.h"

namespace nodeagent {

class RootfsCache;

struct TaskRootConfig {
  std::vector<std::string> rootBinds;    // --root-bind; empty: TaskLaunch's default list
  RootfsCache* rootfs = nullptr;         // null: rootfs tarballs are refused
  std::vector<std::string> hostVolumes;  // --host-volume: allowed hostPath prefixes (none: refused)
  kube::JsonPtr groupVolumes;            // the allocation's spec.volumes (null: none)
  std::string volumeDir;                 // where emptyDir volumes live: <alloc dir>/volumes
};

// Fills launch.rootBinds, launch.rootfs and launch.volumes for `task` (a task spec object).
[[nodiscard]] kube::Status applyTaskRoot(const kube::JsonValue& task, const TaskRootConfig& config, bool rawExec,
                                         TaskLaunch& launch);

}  // namespace nodeagent
