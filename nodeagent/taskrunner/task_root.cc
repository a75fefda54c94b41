#include "nodeagent/taskrunner/task_root.h"

#include <sys/stat.h>

#include <cerrno>
#include <climits>
#include <cstdlib>
#include <cstring>
#include <optional>

#include "nodeagent/driver/rootfs.h"

namespace nodeagent {

using kube::JsonValue;
using kube::Status;

namespace {

std::optional<std::string> realPath(const std::string& p) {
  char buf[PATH_MAX];
  if (::realpath(p.c_str(), buf) == nullptr) return std::nullopt;
  return std::string(buf);
}

bool under(const std::string& path, const std::string& dir) {
  return path == dir || dir == "/" || path.rfind(dir + "/", 0) == 0;
}

const JsonValue* findVolume(const kube::JsonPtr& volumes, const std::string& name) {
  if (!volumes || !volumes->IsArray()) return nullptr;
  for (const auto& v : volumes->GetArray()) {
    if (kube::getString(v, {"name"}) == name) return &v;
  }
  return nullptr;
}

}  // namespace

Status applyTaskRoot(const JsonValue& task, const TaskRootConfig& config, bool rawExec, TaskLaunch& launch) {
  if (!config.rootBinds.empty()) launch.rootBinds = config.rootBinds;
  const JsonValue* rootfs = kube::find(task, {"rootfs"});
  const JsonValue* mounts = kube::find(task, {"volumeMounts"});
  bool hasMounts = mounts != nullptr && mounts->IsArray() && !mounts->Empty();
  if (rawExec && ((rootfs != nullptr && !rootfs->IsNull()) || hasMounts)) {
    return Status::invalid("rootfs and volumeMounts need the exec driver (raw_exec runs in the host's root)");
  }
  if (rootfs != nullptr && rootfs->IsObject()) {
    if (config.rootfs == nullptr) return Status::invalid("rootfs: tarballs are not enabled on this worker");
    auto dir = config.rootfs->prepare(kube::getString(*rootfs, {"path"}), kube::getString(*rootfs, {"sha256"}));
    if (!dir) return Status::invalid(dir.status().message());
    launch.rootfs = *dir;
  }
  if (!hasMounts) return Status::ok();
  for (const auto& m : mounts->GetArray()) {
    std::string name = kube::getString(m, {"name"});
    std::string field = "volumeMounts[" + name + "]";
    const JsonValue* vol = findVolume(config.groupVolumes, name);
    if (vol == nullptr) return Status::invalid(field + ": no volume named \"" + name + "\" in the group");
    VolumeBind bind;
    bind.mountPath = kube::getString(m, {"mountPath"});
    bind.readOnly = kube::getBool(m, {"readOnly"}) || kube::getBool(*vol, {"readOnly"});
    const JsonValue* host = kube::find(*vol, {"hostPath"});
    const JsonValue* empty = kube::find(*vol, {"emptyDir"});
    bool isHost = host != nullptr && host->IsObject();
    bool isEmpty = empty != nullptr && empty->IsObject();
    if (isHost == isEmpty) return Status::invalid("volumes[" + name + "]: set exactly one of hostPath and emptyDir");
    if (isEmpty) {
      // Beside alloc/, not in it: tasks cannot reach this path to swap it for a symlink.
      std::string dir = config.volumeDir + "/" + name;
      ::mkdir(config.volumeDir.c_str(), 0755);
      if (::mkdir(dir.c_str(), 0755) == 0) {
        ::chmod(dir.c_str(), 01777);  // like /alloc: every task user of the group may write
      } else if (errno != EEXIST) {
        return Status::internal("volumes[" + name + "]: mkdir " + dir + ": " + std::strerror(errno));
      }
      bind.hostPath = dir;
    } else {
      std::string path = kube::getString(*host, {"path"});
      if (path.empty() || path[0] != '/') {
        return Status::invalid("volumes[" + name + "].hostPath.path '" + path + "' must be absolute");
      }
      if (config.hostVolumes.empty()) {
        return Status::invalid("volumes[" + name + "].hostPath: host volumes are not allowed on this worker (--host-volume)");
      }
      // Resolved, so that neither ".." nor a symlink leads out of the allow-list; the driver binds
      // the resolved path.
      auto resolved = realPath(path);
      if (!resolved) return Status::invalid("volumes[" + name + "].hostPath " + path + ": " + std::strerror(errno));
      bool allowed = false;
      for (const auto& dir : config.hostVolumes) {
        auto d = realPath(dir);
        allowed = allowed || (d && under(*resolved, *d));
      }
      if (!allowed) {
        return Status::invalid("volumes[" + name + "].hostPath " + path +
                               (*resolved != path ? " (resolves to " + *resolved + ")" : "") +
                               " is not under an allowed host volume directory (--host-volume)");
      }
      struct stat st;
      if (::stat(resolved->c_str(), &st) < 0 || !S_ISDIR(st.st_mode)) {
        return Status::invalid("volumes[" + name + "].hostPath " + path + " is not a directory");
      }
      bind.hostPath = *resolved;
    }
    launch.volumes.push_back(std::move(bind));
  }
  return Status::ok();
}

}  // namespace nodeagent
