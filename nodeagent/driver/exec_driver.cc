#include "nodeagent/driver/exec_driver.h"

#include <dirent.h>
#include <fcntl.h>
#include <grp.h>
#include <poll.h>
#include <pthread.h>
#include <pwd.h>
#include <sched.h>
#include <seccomp.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <map>
#include <memory>
#include <fstream>
#include <iostream>
#include <mutex>
#include <set>
#include <sstream>

#include "nodeagent/driver/cgroup.h"
#include "nodeagent/driver/task_init.h"
#include "nodeagent/driver/zygote.h"
#include "nodeagent/spare_pool.h"

namespace nodeagent {
namespace {

using kube::Status;
using kube::StatusOr;
using init::MountOp;
using init::MountOpKind;

constexpr const char* kDefaultPath = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

// ---- small RAII and /proc helpers -----------------------------------------------------------

class Fd {
 public:
  Fd() = default;
  explicit Fd(int fd) : fd_(fd) {}
  Fd(Fd&& o) noexcept : fd_(std::exchange(o.fd_, -1)) {}
  Fd& operator=(Fd&& o) noexcept {
    reset(std::exchange(o.fd_, -1));
    return *this;
  }
  ~Fd() { reset(); }
  int get() const { return fd_; }
  void reset(int fd = -1) {
    if (fd_ >= 0) close(fd_);
    fd_ = fd;
  }

 private:
  int fd_ = -1;
};

std::string errnoText(int err) { return std::strerror(err); }

struct ProcStat {
  char state = '?';
  pid_t ppid = 0;
  uint64_t startTicks = 0;
};

// /proc/<pid>/stat: comm may contain spaces and ')', so fields are counted after the last ')'.
std::optional<ProcStat> readProcStat(pid_t pid) {
  auto text = readFile("/proc/" + std::to_string(pid) + "/stat");
  if (!text) return std::nullopt;
  size_t close = text->rfind(')');
  if (close == std::string::npos) return std::nullopt;
  std::vector<std::string> f;  // f[0] = field 3 (state)
  size_t pos = close + 2;
  while (pos < text->size()) {
    size_t end = text->find(' ', pos);
    if (end == std::string::npos) end = text->size();
    f.push_back(text->substr(pos, end - pos));
    pos = end + 1;
  }
  if (f.size() < 20) return std::nullopt;
  ProcStat st;
  st.state = f[0].empty() ? '?' : f[0][0];
  st.ppid = static_cast<pid_t>(std::stol(f[1]));
  st.startTicks = std::stoull(f[19]);  // field 22
  return st;
}

int pidfdOpen(pid_t pid) { return static_cast<int>(syscall(SYS_pidfd_open, pid, 0)); }

// A task id names a cgroup, a state file and the hostname: keep it to a safe grammar.
bool validId(const std::string& id) {
  if (id.empty() || id.size() > 200 || id[0] == '.' || id.find("..") != std::string::npos) return false;
  for (char c : id) {
    if (!(std::isalnum(static_cast<unsigned char>(c)) || c == '.' || c == '-' || c == '_')) return false;
  }
  return true;
}

struct ResolvedUser {
  uid_t uid = 0;
  gid_t gid = 0;
  std::vector<gid_t> groups;
};

// getpwnam is not async-signal-safe: resolve against the host's /etc/passwd here, in the agent.
StatusOr<ResolvedUser> resolveUser(const std::string& user) {
  std::vector<char> buf(16384);
  passwd pw{};
  passwd* res = nullptr;
  bool numeric = !user.empty() && user.size() <= 9 && user.find_first_not_of("0123456789") == std::string::npos;
  int rc = numeric ? getpwuid_r(static_cast<uid_t>(std::stoul(user)), &pw, buf.data(), buf.size(), &res)
                   : getpwnam_r(user.c_str(), &pw, buf.data(), buf.size(), &res);
  if (res == nullptr) {
    if (numeric) return ResolvedUser{static_cast<uid_t>(std::stoul(user)), static_cast<gid_t>(std::stoul(user)), {}};
    return Status::invalid("unknown user '" + user + "'" + (rc != 0 ? ": " + errnoText(rc) : ""));
  }
  ResolvedUser u{pw.pw_uid, pw.pw_gid, {}};
  int n = 64;
  u.groups.resize(static_cast<size_t>(n));
  if (getgrouplist(pw.pw_name, pw.pw_gid, u.groups.data(), &n) < 0) {
    u.groups.resize(static_cast<size_t>(n));
    getgrouplist(pw.pw_name, pw.pw_gid, u.groups.data(), &n);
  }
  u.groups.resize(static_cast<size_t>(std::max(n, 0)));
  return u;
}

// Top-level names of a rootfs tree the driver mounts itself.
const std::set<std::string> kDriverOwnedTopLevel = {"dev", "proc", "local", "secrets", "tmp", "alloc"};

std::vector<std::string> listDir(const std::string& dir) {
  std::vector<std::string> out;
  if (DIR* d = opendir(dir.c_str())) {
    while (dirent* de = readdir(d)) {
      std::string n = de->d_name;
      if (n != "." && n != "..") out.push_back(n);
    }
    closedir(d);
  }
  std::sort(out.begin(), out.end());
  return out;
}

// A volume's mountPath: absolute, no "."/".." or empty components, and clear of what the driver
// mounts itself (the task dirs, /proc, /sys, /dev) and of the root.
Status checkMountPath(const std::string& p) {
  auto bad = [&](const std::string& why) { return Status::invalid("volume mountPath '" + p + "' " + why); };
  if (p.size() < 2 || p[0] != '/') return bad("must be an absolute path other than /");
  if (p.back() == '/') return bad("must not end with /");
  for (size_t pos = 1; pos <= p.size();) {
    size_t end = p.find('/', pos);
    if (end == std::string::npos) end = p.size();
    std::string part = p.substr(pos, end - pos);
    if (part.empty() || part == "." || part == "..") return bad("must not contain empty, '.' or '..' components");
    pos = end + 1;
  }
  for (const char* reserved : {"/proc", "/sys", "/dev", "/local", "/secrets", "/tmp", "/alloc"}) {
    std::string r = reserved;
    if (p == r || p.rfind(r + "/", 0) == 0) return bad("must not be on or under " + r);
  }
  return Status::ok();
}

bool isDirectory(const std::string& p) {
  struct stat st;
  return stat(p.c_str(), &st) == 0 && S_ISDIR(st.st_mode);
}

void mkdirs(const std::string& path) {
  for (size_t pos = 1; pos <= path.size(); ++pos) {
    if (pos == path.size() || path[pos] == '/') mkdir(path.substr(0, pos).c_str(), 0755);
  }
}

// ---- the start context: everything the init needs, built before clone ------------------------

// Owns the strings behind InitSpec's pointers; std::deque-free: reserve so c_str()s stay put.
class StartContext {
 public:
  const char* keep(std::string s) {
    strings_.push_back(std::make_unique<std::string>(std::move(s)));
    return strings_.back()->c_str();
  }
  void op(MountOpKind kind, const std::string& src, const std::string& dst, const char* fstype = nullptr,
          unsigned long flags = 0, const char* data = nullptr, unsigned mode = 0755) {
    MountOp o;
    o.kind = kind;
    o.src = src.empty() ? nullptr : keep(src);
    o.dst = keep(dst);
    o.fstype = fstype;
    o.flags = flags;
    o.data = data;
    o.mode = mode;
    ops.push_back(o);
  }
  // mkdir every component of `rel` (absolute inside the root) under `root`.
  void mkdirsInRoot(const std::string& root, const std::string& rel) {
    for (size_t pos = 1; pos <= rel.size(); ++pos) {
      if (pos == rel.size() || rel[pos] == '/') op(MountOpKind::kMkdir, "", root + rel.substr(0, pos));
    }
  }

  std::vector<MountOp> ops;
  std::vector<const char*> execCandidates;
  std::vector<char*> argv;
  std::vector<char*> envp;
  std::vector<std::string> opDescriptions;

 private:
  std::vector<std::unique_ptr<std::string>> strings_;
};

// ---- the driver ------------------------------------------------------------------------------

class ExecDriver final : public Driver {
 public:
  explicit ExecDriver(ExecDriverOptions o);
  ~ExecDriver() override;

  std::string name() const override { return options_.isolate ? "exec" : "raw_exec"; }

  StatusOr<TaskHandle> start(const TaskLaunch& launch) override;
  bool alive(const TaskHandle& h) override;
  std::optional<TaskExit> wait(const TaskHandle& h, int timeoutMs) override;
  Status stop(const TaskHandle& h, int signal, int killTimeoutMs) override;
  Status destroy(const TaskHandle& h) override;
  std::vector<std::pair<std::string, TaskHandle>> recover() override;

 private:
  std::string cgroupPath(const std::string& id) const { return options_.cgroupParent + "/" + id; }
  std::string spareCgroup(size_t n) const { return cgroupPath(kSparePrefix + std::to_string(n)); }
  // Makes the cgroup `cg` (which has no processes) new: an empty one of that path, made for other
  // limits or left by an agent that died before removing it, is removed first, because the v1
  // values a new cgroup has by default are not written. A spare is renamed into place when one is
  // ready. On failure nothing is left.
  Status makeCgroup(const std::string& cg, const CgroupLimits& limits, const std::vector<DeviceRule>& devices,
                    bool* fromSpare = nullptr);
  std::string idOf(const TaskHandle& h) const { return h.cgroup.substr(h.cgroup.rfind('/') + 1); }
  std::string stateFile(const std::string& id) const { return options_.stateDir + "/" + id; }
  std::optional<std::string> taskDirOf(const TaskHandle& h);
  // Opens a pidfd for the handle's process, or -1 if that exact process (pid + start time) is gone.
  Fd openProcess(const TaskHandle& h);
  // Reaps the init if it is our child (no-op otherwise) and remembers its status.
  void reap(const TaskHandle& h, int pidfd);
  void buildRoot(StartContext& ctx, const TaskLaunch& launch, const std::string& root,
                 const std::vector<std::string>& devices);
  StatusOr<const sock_fprog*> seccompProgram();

  ExecDriverOptions options_;
  CgroupManager cgroups_;
  std::mutex mu_;
  std::map<pid_t, int> reaped_;  // init pid -> wait status, for inits this process reaped
  std::unique_ptr<SparePool> spares_;  // v1: cgroups <cgroupParent>/spare-<n>, made ahead
  std::vector<sock_filter> filter_;
  sock_fprog fprog_{};
};

StatusOr<const sock_fprog*> ExecDriver::seccompProgram() {
  std::lock_guard lock(mu_);
  if (filter_.empty()) {
    auto bytes = buildSeccompProgram();
    if (!bytes) return bytes.status();
    filter_.resize(bytes->size() / sizeof(sock_filter));
    std::memcpy(filter_.data(), bytes->data(), filter_.size() * sizeof(sock_filter));
    fprog_.len = static_cast<unsigned short>(filter_.size());
    fprog_.filter = filter_.data();
  }
  return &fprog_;
}

void ExecDriver::buildRoot(StartContext& ctx, const TaskLaunch& launch, const std::string& root,
                           const std::vector<std::string>& devices) {
  ctx.op(MountOpKind::kMount, "tmpfs", root, "tmpfs", MS_NOSUID | MS_NODEV, "mode=0755,size=1m");
  // {host path, path inside}: the host's directories as they are, or a rootfs tree's top level.
  // Either way the tree is shared by every task and bound read-only, never copied.
  std::vector<std::pair<std::string, std::string>> binds;
  if (!launch.rootfs.empty()) {
    for (const auto& name : listDir(launch.rootfs)) {
      if (!kDriverOwnedTopLevel.contains(name)) binds.emplace_back(launch.rootfs + "/" + name, "/" + name);
    }
  } else {
    for (const auto& b : launch.rootBinds) binds.emplace_back(b, b);
  }
  for (const auto& [host, inside] : binds) {
    struct stat st;
    if (host.empty() || host[0] != '/' || lstat(host.c_str(), &st) < 0) continue;  // missing on this host
    std::string parent = inside.substr(0, inside.rfind('/'));
    if (!parent.empty()) ctx.mkdirsInRoot(root, parent);
    if (S_ISLNK(st.st_mode)) {
      // e.g. /lib64 -> usr/lib64 on merged-/usr hosts: recreate the link, its target is bound too.
      // An absolute target resolves inside the new root: links are only followed after pivot_root.
      char target[4096];
      ssize_t n = readlink(host.c_str(), target, sizeof target - 1);
      if (n <= 0) continue;
      ctx.op(MountOpKind::kSymlink, std::string(target, static_cast<size_t>(n)), root + inside);
    } else if (S_ISDIR(st.st_mode)) {
      ctx.op(MountOpKind::kMkdir, "", root + inside);
      ctx.op(MountOpKind::kBindReadOnly, host, root + inside);
    } else if (S_ISREG(st.st_mode)) {
      ctx.op(MountOpKind::kTouch, "", root + inside);
      ctx.op(MountOpKind::kBindReadOnly, host, root + inside);
    }
  }
  struct Writable {
    std::string host, inside;
    unsigned long extra;
  };
  std::vector<Writable> writable = {{launch.taskDir + "/local", "/local", 0},
                                    {launch.taskDir + "/secrets", "/secrets", MS_NOEXEC},
                                    {launch.taskDir + "/tmp", "/tmp", 0}};
  if (!launch.allocDir.empty()) writable.push_back({launch.allocDir, "/alloc", 0});
  for (const auto& w : writable) {
    ctx.op(MountOpKind::kMkdir, "", root + w.inside);
    ctx.op(MountOpKind::kBindWritable, w.host, root + w.inside, nullptr, w.extra);
  }
  // Volumes: mount points are created in the root's tmpfs (or must already exist inside a
  // read-only bound directory); start() checked the paths.
  for (const auto& v : launch.volumes) {
    ctx.mkdirsInRoot(root, v.mountPath);
    ctx.op(v.readOnly ? MountOpKind::kBindReadOnly : MountOpKind::kBindWritable, v.hostPath, root + v.mountPath);
  }

  // A minimal /dev: the standard nodes bound from the host, a private devpts and shm, and exactly
  // the assigned devices. The devices cgroup backs this up for anything created later.
  std::string dev = root + "/dev";
  ctx.op(MountOpKind::kMkdir, "", dev);
  ctx.op(MountOpKind::kMount, "tmpfs", dev, "tmpfs", MS_NOSUID | MS_NOEXEC, "mode=0755,size=64k");
  for (const char* n : {"null", "zero", "full", "random", "urandom", "tty"}) {
    ctx.op(MountOpKind::kTouch, "", dev + "/" + n);
    ctx.op(MountOpKind::kMount, std::string("/dev/") + n, dev + "/" + n, nullptr, MS_BIND);
  }
  ctx.op(MountOpKind::kMkdir, "", dev + "/pts");
  ctx.op(MountOpKind::kMount, "devpts", dev + "/pts", "devpts", MS_NOSUID | MS_NOEXEC,
         "newinstance,ptmxmode=0666,mode=0620");
  ctx.op(MountOpKind::kSymlink, "pts/ptmx", dev + "/ptmx");
  ctx.op(MountOpKind::kMkdir, "", dev + "/shm");
  ctx.op(MountOpKind::kMount, "shm", dev + "/shm", "tmpfs", MS_NOSUID | MS_NODEV | MS_NOEXEC, "mode=1777,size=65536k");
  ctx.op(MountOpKind::kSymlink, "/proc/self/fd", dev + "/fd");
  ctx.op(MountOpKind::kSymlink, "/proc/self/fd/0", dev + "/stdin");
  ctx.op(MountOpKind::kSymlink, "/proc/self/fd/1", dev + "/stdout");
  ctx.op(MountOpKind::kSymlink, "/proc/self/fd/2", dev + "/stderr");
  for (const auto& d : devices) {
    std::string rel = d.substr(4);  // "/dev/x/y" -> "/x/y"
    std::string parent = rel.substr(0, rel.rfind('/'));
    if (!parent.empty()) ctx.mkdirsInRoot(dev, parent);
    ctx.op(MountOpKind::kTouch, "", dev + rel);
    ctx.op(MountOpKind::kMount, d, dev + rel, nullptr, MS_BIND);
  }

  // A fresh /proc: the init is already PID 1 of the new namespace, so it shows only the task.
  ctx.op(MountOpKind::kMkdir, "", root + "/proc");
  ctx.op(MountOpKind::kMount, "proc", root + "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC);
  for (const auto& p : options_.maskedPaths) ctx.op(MountOpKind::kMaskPath, dev + "/null", root + p);
  for (const auto& p : options_.readOnlyPaths) ctx.op(MountOpKind::kReadOnlyPath, "", root + p);
}

namespace {

struct StackRange {
  void* addr = nullptr;
  size_t size = 0;
};
thread_local StackRange tExcludedStack;

// While a start() clones, the calling thread's stack must be copied (the init reads its InitSpec
// from there, and clone3 runs the child on a copy of it).
struct StackForkGuard {
  StackForkGuard() {
    if (tExcludedStack.addr != nullptr) madvise(tExcludedStack.addr, tExcludedStack.size, MADV_DOFORK);
  }
  ~StackForkGuard() {
    if (tExcludedStack.addr != nullptr) madvise(tExcludedStack.addr, tExcludedStack.size, MADV_DONTFORK);
  }
  StackForkGuard(const StackForkGuard&) = delete;
  StackForkGuard& operator=(const StackForkGuard&) = delete;
};

}  // namespace

StatusOr<TaskHandle> ExecDriver::start(const TaskLaunch& launch) {
  using TraceClock = std::chrono::steady_clock;
  const TraceClock::time_point t0 = TraceClock::now();
  TraceClock::time_point tPrepared, tCgroup, tCloned, tAttached;
  if (!validId(launch.id)) return Status::invalid("task id '" + launch.id + "' must match [A-Za-z0-9._-]+");
  if (launch.argv.empty() || launch.argv[0].empty()) return Status::invalid("argv is empty");
  if (launch.taskDir.empty() || launch.taskDir[0] != '/' || !isDirectory(launch.taskDir)) {
    return Status::invalid("taskDir '" + launch.taskDir + "' is not an existing absolute directory");
  }
  const bool isolate = options_.isolate;
  std::string workingDir = launch.workingDir.empty() ? (isolate ? "/local" : "") : launch.workingDir;
  // A cwd through /proc (e.g. /proc/self/fd/N) could name a directory outside the new root
  // (runc CVE-2024-21626).
  if (!workingDir.empty() && (workingDir[0] != '/' || workingDir.rfind("/proc", 0) == 0)) {
    return Status::invalid("workingDir '" + workingDir + "' must be absolute and outside /proc");
  }
  if (isolate) {
    for (const char* sub : {"/local", "/secrets", "/tmp"}) {
      if (!isDirectory(launch.taskDir + sub)) return Status::invalid("missing task directory " + launch.taskDir + sub);
    }
    if (!launch.allocDir.empty() && !isDirectory(launch.allocDir)) {
      return Status::invalid("allocDir '" + launch.allocDir + "' is not a directory");
    }
  }

  if (!isolate && (!launch.rootfs.empty() || !launch.volumes.empty())) {
    return Status::invalid("rootfs and volumes need the exec driver (raw_exec runs in the host's root)");
  }
  if (!launch.rootfs.empty()) {
    struct stat st;
    if (launch.rootfs[0] != '/' || lstat(launch.rootfs.c_str(), &st) < 0 || !S_ISDIR(st.st_mode)) {
      return Status::invalid("rootfs '" + launch.rootfs + "' is not an existing absolute directory");
    }
  }
  for (const auto& v : launch.volumes) {
    if (auto st = checkMountPath(v.mountPath); !st) return st;
    struct stat st;
    if (v.hostPath.empty() || v.hostPath[0] != '/' || lstat(v.hostPath.c_str(), &st) < 0 || !S_ISDIR(st.st_mode)) {
      return Status::invalid("volume source '" + v.hostPath + "' is not an existing directory");
    }
    if (launch.rootfs.empty()) continue;
    // The init mounts by path before pivot_root: a symlink in the (job-supplied) tree on the way
    // to a mount point would be followed on the host. The tree is the agent's and read-only, so
    // what is checked here is what the init sees.
    for (size_t pos = 1; pos <= v.mountPath.size(); ++pos) {
      if (pos != v.mountPath.size() && v.mountPath[pos] != '/') continue;
      std::string inTree = launch.rootfs + v.mountPath.substr(0, pos);
      if (lstat(inTree.c_str(), &st) < 0) break;  // created in the root's tmpfs
      if (!S_ISDIR(st.st_mode)) {
        return Status::invalid("volume mountPath '" + v.mountPath + "' crosses a non-directory in the rootfs: " +
                               v.mountPath.substr(0, pos));
      }
    }
  }

  std::optional<ResolvedUser> user;
  std::string userName = launch.user;
  if (isolate && userName.empty()) userName = "nobody";
  if (!userName.empty()) {
    auto u = resolveUser(userName);
    if (!u) return u.status();
    user = *u;
  }

  std::vector<cap_value_t> keepCaps;
  for (const auto& name : launch.capabilities) {
    cap_value_t v;
    std::string lower = name;
    for (auto& c : lower) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    if (cap_from_name(lower.c_str(), &v) < 0) return Status::invalid("unknown capability '" + name + "'");
    keepCaps.push_back(v);
  }

  std::vector<DeviceRule> deviceRules;
  std::vector<std::string> devices;
  for (const auto& d : launch.devices) {
    struct stat st;
    if (d.rfind("/dev/", 0) != 0 || d.find("/../") != std::string::npos) {
      return Status::invalid("device '" + d + "' must be a path under /dev");
    }
    if (stat(d.c_str(), &st) < 0) return Status::invalid("device " + d + ": " + errnoText(errno));
    if (!S_ISCHR(st.st_mode) && !S_ISBLK(st.st_mode)) return Status::invalid("device " + d + " is not a device node");
    deviceRules.push_back({S_ISCHR(st.st_mode) ? 'c' : 'b', major(st.st_rdev), minor(st.st_rdev)});
    devices.push_back(d);
  }

  const sock_fprog* seccomp = nullptr;
  if (isolate && options_.seccomp) {
    auto prog = seccompProgram();
    if (!prog) return prog.status();
    seccomp = *prog;
  }

  // The task's .foxden dir: the root mount point and the exit file.
  std::string foxdenDir = launch.taskDir + "/.foxden";
  std::string rootDir = foxdenDir + "/root";
  mkdir(foxdenDir.c_str(), 0700);
  if (isolate) mkdir(rootDir.c_str(), 0755);
  unlink((foxdenDir + "/exit").c_str());
  Fd exitDir(open(foxdenDir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC | O_NOFOLLOW));
  if (exitDir.get() < 0) return Status::internal("open " + foxdenDir + ": " + errnoText(errno));
  Fd devNull(open("/dev/null", O_RDWR | O_CLOEXEC));
  Fd logDir;
  if (!launch.logDir.empty()) {
    logDir.reset(open(launch.logDir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC | O_NOFOLLOW));
    if (logDir.get() < 0) return Status::internal("open log directory " + launch.logDir + ": " + errnoText(errno));
  }

  StartContext ctx;
  if (isolate) buildRoot(ctx, launch, rootDir, devices);
  std::vector<std::string> candidates;
  if (launch.argv[0].find('/') != std::string::npos) {
    candidates.push_back(launch.argv[0]);
  } else {
    std::string path = kDefaultPath;
    for (size_t pos = 0; pos <= path.size();) {
      size_t end = path.find(':', pos);
      if (end == std::string::npos) end = path.size();
      candidates.push_back(path.substr(pos, end - pos) + "/" + launch.argv[0]);
      pos = end + 1;
    }
  }
  for (const auto& c : candidates) ctx.execCandidates.push_back(ctx.keep(c));
  for (const auto& a : launch.argv) ctx.argv.push_back(const_cast<char*>(ctx.keep(a)));
  ctx.argv.push_back(nullptr);
  bool hasPath = false;
  for (const auto& e : launch.env) {
    hasPath = hasPath || e.rfind("PATH=", 0) == 0;
    ctx.envp.push_back(const_cast<char*>(ctx.keep(e)));
  }
  if (!hasPath) ctx.envp.push_back(const_cast<char*>(ctx.keep(std::string("PATH=") + kDefaultPath)));
  ctx.envp.push_back(nullptr);

  cap_t capState = cap_init();
  if (!keepCaps.empty()) {
    for (cap_flag_t flag : {CAP_EFFECTIVE, CAP_PERMITTED, CAP_INHERITABLE}) {
      cap_set_flag(capState, flag, static_cast<int>(keepCaps.size()), keepCaps.data(), CAP_SET);
    }
  }
  struct CapFree {
    cap_t c;
    ~CapFree() { cap_free(c); }
  } capFree{capState};

  init::InitSpec spec;
  spec.isolate = isolate;
  spec.exitDirFd = exitDir.get();
  spec.stdoutFd = launch.stdoutFd;
  spec.stderrFd = launch.stderrFd;
  spec.devNullFd = devNull.get();
  spec.logDirFd = logDir.get();
  spec.logMaxFiles = launch.logMaxFiles;
  spec.logMaxFileSize = launch.logMaxFileSize;
  spec.rootDir = ctx.keep(rootDir);
  spec.ops = ctx.ops.data();
  spec.opCount = ctx.ops.size();
  spec.hostname = ctx.keep(launch.id.substr(0, 64));
  spec.execCandidates = ctx.execCandidates.data();
  spec.execCandidateCount = ctx.execCandidates.size();
  spec.argv = ctx.argv.data();
  spec.envp = ctx.envp.data();
  spec.workingDir = workingDir.empty() ? nullptr : ctx.keep(workingDir);
  spec.switchUser = user.has_value();
  if (user) {
    spec.uid = user->uid;
    spec.gid = user->gid;
    spec.groups = user->groups.data();
    spec.groupCount = user->groups.size();
  }
  spec.dropCapabilities = isolate;
  spec.keepCaps = keepCaps.data();
  spec.keepCapCount = keepCaps.size();
  spec.lastCap = static_cast<int>(cap_max_bits()) - 1;
  spec.capState = capState;
  spec.noNewPrivs = isolate;
  spec.seccomp = seccomp;

  // The cgroup exists, with its limits, before any task code runs. The agent never writes the
  // init's pid into it (that takes the kernel's global threadgroup lock and waits for an RCU grace
  // period: milliseconds per start): on v2 clone3() creates the init inside it, on v1 the init
  // writes "0" to each hierarchy's `tasks` itself.
  tPrepared = TraceClock::now();
  std::string cg = cgroupPath(launch.id);
  if (!cgroups_.procs(cg).empty()) return Status::alreadyExists("task " + launch.id + " is already running");
  bool spare = false;
  if (auto st = makeCgroup(cg, launch.limits, deviceRules, &spare); !st) return st;
  const bool v2 = cgroups_.mode() == CgroupMode::kV2;
  tCgroup = TraceClock::now();
  Fd cgroupDir;
  std::vector<std::string> joinPaths;
  std::vector<const char*> joinPathPtrs;
  if (v2) {
    auto fd = cgroups_.openDirFd(cg);
    if (!fd) {
      (void)cgroups_.remove(cg);
      return fd.status();
    }
    cgroupDir.reset(*fd);
  } else {
    joinPaths = cgroups_.joinPaths(cg, !launch.limits.cpuset.empty());
    for (const auto& p : joinPaths) joinPathPtrs.push_back(p.c_str());
    spec.cgroupJoinPaths = joinPathPtrs.data();
    spec.cgroupJoinPathCount = joinPathPtrs.size();
  }
  // Trace marks of the init, in a page it shares with us: a memfd, so that the zygote can map it.
  uint64_t* traceNs = nullptr;
  Fd traceFd;
  if (options_.traceStarts) {
    traceFd.reset(memfd_create("foxden-trace", MFD_CLOEXEC));
    if (traceFd.get() >= 0 && ftruncate(traceFd.get(), 4096) == 0) {
      void* page = mmap(nullptr, 4096, PROT_READ | PROT_WRITE, MAP_SHARED, traceFd.get(), 0);
      if (page != MAP_FAILED) traceNs = static_cast<uint64_t*>(page);
    }
    spec.traceNs = traceNs;
  }
  struct TraceUnmap {
    uint64_t* p;
    ~TraceUnmap() {
      if (p != nullptr) munmap(p, 4096);
    }
  } traceUnmap{traceNs};

  // A clone() from the agent hands the child every fd of the agent until its init closes them.
  // Were another start's error-pipe write end among them, that start would miss the EOF that means
  // "execve succeeded" until our init gets going. So pipes are made and the clone is done under
  // one lock, and the parent's copies of the child's ends are closed before the lock is released.
  // (A clone by the zygote copies only the fds sent with the request, but a start may still fall
  // back to cloning here.)
  static std::mutex cloneMu;
  std::unique_lock cloneLock(cloneMu);
  int syncPipe[2], errPipe[2];
  if (pipe2(syncPipe, O_CLOEXEC) < 0) return Status::internal("pipe2: " + errnoText(errno));
  Fd syncRead(syncPipe[0]), syncWrite(syncPipe[1]);
  if (pipe2(errPipe, O_CLOEXEC) < 0) return Status::internal("pipe2: " + errnoText(errno));
  Fd errRead(errPipe[0]), errWrite(errPipe[1]);
  spec.syncFd = syncRead.get();
  spec.syncWriteFd = syncWrite.get();
  spec.errorReadFd = errRead.get();
  spec.errorFd = errWrite.get();

  const uint64_t nsFlags = isolate ? CLONE_NEWNS | CLONE_NEWPID | CLONE_NEWIPC | CLONE_NEWUTS : 0;
  const int cgroupFd = v2 ? cgroupDir.get() : -1;
  std::optional<SpawnResult> spawned;
  TraceClock::time_point tSent = TraceClock::now();
  if (options_.zygoteFd >= 0) {
    spawned = zygoteSpawn(options_.zygoteFd, spec, nsFlags, cgroupFd, traceNs != nullptr ? traceFd.get() : -1);
  }
  const bool viaZygote = spawned.has_value();
  if (!spawned) {
    StackForkGuard stackGuard;
    tSent = TraceClock::now();
    spawned = spawnInit(spec, nsFlags, cgroupFd, /*cloneParent=*/false);
  }
  const pid_t pid = spawned->pid;
  if (pid < 0) {
    (void)cgroups_.remove(cg);
    return Status::internal("clone: " + errnoText(spawned->err));
  }
  const bool inCgroup = spawned->inCgroup;
  syncRead.reset();
  errWrite.reset();
  cloneLock.unlock();
  tCloned = TraceClock::now();

  auto abort = [&](Status why) -> Status {
    syncWrite.reset();  // an init still waiting for the go byte exits
    (void)cgroups_.killAll(cg, 5000);
    kill(pid, SIGKILL);
    waitpid(pid, nullptr, 0);
    (void)cgroups_.remove(cg);
    return why;
  };

  // An init made inside its cgroup (clone3) or joining it itself (v1) is running by now; one we
  // attach (v2 without clone3) waits for our go.
  if (!inCgroup) {
    if (auto st = cgroups_.attach(cg, pid); !st) return abort(st);
  }
  if (spawned->awaitsGo) {
    char go = 1;
    if (write(syncWrite.get(), &go, 1) != 1) return abort(Status::internal("release init: " + errnoText(errno)));
  }
  tAttached = TraceClock::now();
  syncWrite.reset();

  // EOF on the error pipe = the task's execve succeeded (CLOEXEC); a record = where it failed.
  pollfd pfd{errRead.get(), POLLIN, 0};
  int pr;
  do pr = poll(&pfd, 1, options_.startTimeoutMs); while (pr < 0 && errno == EINTR);
  if (pr == 0) {
    // Say where the init is stuck: its state and kernel wait channel, and its children's.
    auto where = [](pid_t p) {
      std::string out = std::to_string(p);
      std::ifstream wchan("/proc/" + std::to_string(p) + "/wchan");
      std::string w, line;
      wchan >> w;
      std::ifstream status("/proc/" + std::to_string(p) + "/status");
      while (std::getline(status, line)) {
        if (line.rfind("State:", 0) == 0) out += " " + line.substr(7);
      }
      return out + " wchan=" + w;
    };
    std::string detail = "init " + where(pid);
    std::ifstream children("/proc/" + std::to_string(pid) + "/task/" + std::to_string(pid) + "/children");
    pid_t c;
    while (children >> c) detail += "; child " + where(c);
    return abort(Status::timeout("task " + launch.id + " did not start within " +
                                 std::to_string(options_.startTimeoutMs) + " ms (" + detail + ")"));
  }
  init::ErrorRecord rec{};
  ssize_t n;
  do n = read(errRead.get(), &rec, sizeof rec); while (n < 0 && errno == EINTR);
  if (n != 0) {
    if (n != static_cast<ssize_t>(sizeof rec)) return abort(Status::internal("task init died during setup"));
    auto step = static_cast<init::Step>(rec.step);
    std::string what = init::stepName(step);
    if (step == init::Step::kMountOp && rec.index >= 0 && static_cast<size_t>(rec.index) < ctx.ops.size()) {
      const MountOp& o = ctx.ops[static_cast<size_t>(rec.index)];
      what += std::string(" (") + (o.src ? o.src : "") + " -> " + o.dst + ")";
    } else if (step == init::Step::kExecve) {
      what += " " + launch.argv[0];
    } else if (step == init::Step::kChdir) {
      what += " " + workingDir;
    }
    return abort(Status::invalid("start task " + launch.id + ": " + what + ": " + errnoText(rec.err)));
  }

  const TraceClock::time_point tExecSeen = TraceClock::now();
  if (options_.traceStarts) {
    auto us = [](TraceClock::time_point a, TraceClock::time_point b) {
      return std::to_string(std::chrono::duration_cast<std::chrono::microseconds>(b - a).count());
    };
    const TraceClock::time_point tExec = tExecSeen;
    // One write per line: starts on other threads trace at the same time.
    std::ostringstream out;
    out << "trace: task=" << launch.id
              << " begin_at_us=" << std::chrono::duration_cast<std::chrono::microseconds>(t0.time_since_epoch()).count()
              << " prepare_us=" << us(t0, tPrepared)
              << " cgroup_us=" << us(tPrepared, tCgroup) << " clone_us=" << us(tSent, tCloned)
              << " attach_us=" << us(tCloned, tAttached) << " exec_us=" << us(tAttached, tExec)
              << " spawn=" << (viaZygote ? "zygote" : "agent") << " spare_cgroup=" << (spare ? 1 : 0);
    if (traceNs != nullptr) {
      // Inside the init: up -> go -> joined -> stdio -> mounts -> new root -> forked -> execve.
      static const char* const kNames[] = {"up", "go", "join", "stdio", "mounts", "root", "fork", "seccomp_to_exec"};
      for (int m = init::kTraceJoined; m < init::kTraceMarkCount; ++m) {
        if (traceNs[m] != 0 && traceNs[m - 1] != 0) out << " init_" << kNames[m] << "_us=" << (traceNs[m] - traceNs[m - 1]) / 1000;
      }
      // Scheduling: until the init runs, and from the task's execve to our wakeup
      // (steady_clock is CLOCK_MONOTONIC, as the init's marks).
      auto ns = [](TraceClock::time_point t) {
        return static_cast<int64_t>(std::chrono::duration_cast<std::chrono::nanoseconds>(t.time_since_epoch()).count());
      };
      // init_up: from the request to the init running; wake: from our go to the init past it.
      if (traceNs[init::kTraceUp] != 0) {
        out << " init_up_us=" << (static_cast<int64_t>(traceNs[init::kTraceUp]) - ns(tSent)) / 1000;
      }
      if (traceNs[init::kTraceZygoteReceived] != 0) {  // the zygote's marks
        auto at = [&](int m) { return static_cast<int64_t>(traceNs[m]); };
        out << " zy_recv_us=" << (at(init::kTraceZygoteReceived) - ns(tSent)) / 1000
            << " zy_decode_us=" << (at(init::kTraceZygoteDecoded) - at(init::kTraceZygoteReceived)) / 1000
            << " zy_clone_us=" << (at(init::kTraceZygoteCloned) - at(init::kTraceZygoteDecoded)) / 1000
            << " zy_to_up_us=" << (at(init::kTraceUp) - at(init::kTraceZygoteCloned)) / 1000;
      }
      if (spawned->awaitsGo && traceNs[init::kTraceGo] != 0) {
        out << " wake_us=" << (static_cast<int64_t>(traceNs[init::kTraceGo]) - ns(tAttached)) / 1000;
      }
      if (traceNs[init::kTraceExec] != 0) {
        out << " exec_seen_us=" << (ns(tExec) - static_cast<int64_t>(traceNs[init::kTraceExec])) / 1000;
      }
    }
    out << '\n';
    std::cerr << out.str() << std::flush;
  }
  auto ps = readProcStat(pid);
  TaskHandle h{pid, ps ? ps->startTicks : 0, cg, tExecSeen};
  // Re-attach record: which pid is the init and where its exit file lives.
  mkdirs(options_.stateDir);
  std::string tmp = stateFile(launch.id) + ".tmp";
  if (auto st = writeFile(tmp, std::to_string(pid) + " " + std::to_string(h.startTicks) + " " + launch.taskDir + "\n");
      st) {
    rename(tmp.c_str(), stateFile(launch.id).c_str());
  }
  return h;
}

std::optional<std::string> ExecDriver::taskDirOf(const TaskHandle& h) {
  auto text = readFile(stateFile(idOf(h)));
  if (!text) return std::nullopt;
  size_t a = text->find(' ');
  size_t b = a == std::string::npos ? a : text->find(' ', a + 1);
  if (b == std::string::npos) return std::nullopt;
  std::string dir = text->substr(b + 1);
  while (!dir.empty() && dir.back() == '\n') dir.pop_back();
  return dir;
}

Fd ExecDriver::openProcess(const TaskHandle& h) {
  if (h.pid <= 0) return Fd();
  Fd fd(pidfdOpen(h.pid));
  if (fd.get() < 0) return Fd();
  // Checked after opening: from here on the pidfd pins this exact process, even if the pid is reused.
  auto st = readProcStat(h.pid);
  if (!st || st->startTicks != h.startTicks) return Fd();
  return fd;
}

void ExecDriver::reap(const TaskHandle& h, int pidfd) {
  siginfo_t info{};
  // P_PIDFD reaps exactly this process; ECHILD when a previous agent forked it.
  if (pidfd >= 0 && waitid(static_cast<idtype_t>(P_PIDFD), static_cast<id_t>(pidfd), &info, WEXITED | WNOHANG) == 0 &&
      info.si_pid == h.pid) {
    int status = info.si_code == CLD_EXITED ? (info.si_status & 0xff) << 8 : info.si_status & 0x7f;
    std::lock_guard lock(mu_);
    reaped_[h.pid] = status;
  }
}

bool ExecDriver::alive(const TaskHandle& h) {
  auto st = readProcStat(h.pid);
  return st && st->startTicks == h.startTicks && st->state != 'Z' && st->state != 'X';
}

std::optional<TaskExit> ExecDriver::wait(const TaskHandle& h, int timeoutMs) {
  Fd fd = openProcess(h);
  if (fd.get() >= 0) {
    pollfd pfd{fd.get(), POLLIN, 0};
    int pr;
    do pr = poll(&pfd, 1, timeoutMs); while (pr < 0 && errno == EINTR);
    if (pr == 0) return std::nullopt;
    reap(h, fd.get());
  }
  TaskExit e;
  std::optional<int> status;
  if (auto dir = taskDirOf(h)) {
    if (auto text = readFile(*dir + "/.foxden/exit"); text && !text->empty()) status = std::atoi(text->c_str());
  }
  if (!status) {
    std::lock_guard lock(mu_);
    if (auto it = reaped_.find(h.pid); it != reaped_.end()) status = it->second;
  }
  if (!status) {
    e.signal = SIGKILL;
    e.message = "the task's init ended without an exit record (killed)";
  } else if (WIFEXITED(*status)) {
    e.exitCode = WEXITSTATUS(*status);
  } else if (WIFSIGNALED(*status)) {
    e.signal = WTERMSIG(*status);
  }
  e.oomKilled = cgroups_.oomKills(h.cgroup) > 0;
  if (e.oomKilled) e.message = "OOM killed (memory limit reached)";
  return e;
}

Status ExecDriver::stop(const TaskHandle& h, int signal, int killTimeoutMs) {
  Fd fd = openProcess(h);
  if (fd.get() >= 0) {
    // Through the init, which forwards it to the task; pidfd_send_signal cannot hit a reused pid.
    if (syscall(SYS_pidfd_send_signal, fd.get(), signal, nullptr, 0) == 0) {
      pollfd pfd{fd.get(), POLLIN, 0};
      int pr;
      do pr = poll(&pfd, 1, killTimeoutMs); while (pr < 0 && errno == EINTR);
    }
  }
  Status st = cgroups_.killAll(h.cgroup, 10000);
  if (fd.get() >= 0) {
    // The init may still be exiting after the kill; give it a moment so it can be reaped.
    pollfd pfd{fd.get(), POLLIN, 0};
    poll(&pfd, 1, 2000);
    reap(h, fd.get());
  }
  return st;
}

Status ExecDriver::destroy(const TaskHandle& h) {
  if (!cgroups_.procs(h.cgroup).empty()) {
    if (auto st = cgroups_.killAll(h.cgroup, 10000); !st) return st;
  }
  Fd fd = openProcess(h);
  if (fd.get() >= 0) reap(h, fd.get());
  if (auto st = cgroups_.remove(h.cgroup); !st) return st;
  if (auto dir = taskDirOf(h)) rmdir((*dir + "/.foxden/root").c_str());
  unlink(stateFile(idOf(h)).c_str());
  std::lock_guard lock(mu_);
  reaped_.erase(h.pid);
  return Status::ok();
}

ExecDriver::ExecDriver(ExecDriverOptions o)
    : options_(std::move(o)), cgroups_(detectCgroupMode(options_.cgroupRoot), options_.cgroupRoot) {
  if (options_.spareCgroups == 0 || cgroups_.mode() != CgroupMode::kV1) return;
  // An earlier agent's spares (it was killed) go first; then the pool's thread makes new ones,
  // through libcgroup, with the defaults and the standard device rules.
  for (const auto& child : cgroups_.children(options_.cgroupParent)) {
    if (child.rfind(kSparePrefix, 0) == 0 && cgroups_.procs(cgroupPath(child)).empty()) {
      (void)cgroups_.remove(cgroupPath(child));
    }
  }
  spares_ = std::make_unique<SparePool>(options_.spareCgroups, [this](size_t n) {
    std::string cg = spareCgroup(n);
    if (cgroups_.create(cg, CgroupLimits{}, {})) return true;
    (void)cgroups_.remove(cg);
    return false;
  });
}

ExecDriver::~ExecDriver() {
  if (!spares_) return;
  spares_->stop();
  for (size_t n : spares_->drain()) (void)cgroups_.remove(spareCgroup(n));
}

Status ExecDriver::makeCgroup(const std::string& cg, const CgroupLimits& limits,
                              const std::vector<DeviceRule>& devices, bool* fromSpare) {
  if (cgroups_.exists(cg)) (void)cgroups_.remove(cg);
  // A spare: six renames and the limits written, instead of libcgroup's creation (0.9 ms here).
  if (spares_ && limits.cpuset.empty()) {
    if (auto n = spares_->take()) {
      std::string spare = spareCgroup(*n);
      if (cgroups_.adopt(spare, cg, limits, devices)) {
        if (fromSpare != nullptr) *fromSpare = true;
        return Status::ok();
      }
      (void)cgroups_.remove(spare);
      (void)cgroups_.remove(cg);
    }
  }
  if (auto st = cgroups_.create(cg, limits, devices); !st) {
    (void)cgroups_.remove(cg);
    return st;
  }
  return Status::ok();
}

std::vector<std::pair<std::string, TaskHandle>> ExecDriver::recover() {
  std::vector<std::pair<std::string, TaskHandle>> out;
  for (const auto& id : cgroups_.children(options_.cgroupParent)) {
    std::string cg = cgroupPath(id);
    auto procs = cgroups_.procs(cg);
    if (procs.empty()) continue;
    std::set<pid_t> in(procs.begin(), procs.end());
    TaskHandle h{-1, 0, cg};
    // The state file names the init; trust it only if that pid (same start time) is in the cgroup.
    if (auto text = readFile(stateFile(id))) {
      pid_t pid = static_cast<pid_t>(std::atol(text->c_str()));
      uint64_t ticks = std::strtoull(text->c_str() + text->find(' ') + 1, nullptr, 10);
      auto st = readProcStat(pid);
      if (in.count(pid) && st && st->startTicks == ticks) h = {pid, ticks, cg};
    }
    if (h.pid < 0) {
      // Fallback: the init is the oldest process whose parent is outside the cgroup.
      for (pid_t p : procs) {
        auto st = readProcStat(p);
        if (!st || in.count(st->ppid)) continue;
        if (h.pid < 0 || st->startTicks < h.startTicks) h = {p, st->startTicks, cg};
      }
    }
    if (h.pid > 0) out.emplace_back(id, h);
  }
  return out;
}

}  // namespace

StatusOr<std::vector<unsigned char>> buildSeccompProgram() {
  scmp_filter_ctx ctx = seccomp_init(SCMP_ACT_ALLOW);
  if (ctx == nullptr) return Status::internal("seccomp_init failed");
  struct Release {
    scmp_filter_ctx c;
    ~Release() { seccomp_release(c); }
  } release{ctx};
  // Denied outright (EPERM). Names unknown to this libseccomp/arch are skipped.
  static const char* const kDenied[] = {
      "mount", "umount", "umount2", "pivot_root", "chroot", "unshare", "setns", "keyctl", "add_key",
      "request_key", "bpf", "perf_event_open", "kexec_load", "kexec_file_load", "init_module",
      "finit_module", "delete_module", "open_by_handle_at", "name_to_handle_at", "io_uring_setup",
      "io_uring_enter", "io_uring_register", "ptrace", "process_vm_readv", "process_vm_writev",
      "userfaultfd", "swapon", "swapoff", "reboot", "acct", "settimeofday", "clock_settime",
      "clock_adjtime", "stime", "fsopen", "fsconfig", "fsmount", "fspick", "move_mount", "open_tree",
      "mount_setattr", "quotactl", "lookup_dcookie", "vhangup", "iopl", "ioperm"};
  for (const char* name : kDenied) {
    int nr = seccomp_syscall_resolve_name(name);
    if (nr == __NR_SCMP_ERROR) continue;
    if (int rc = seccomp_rule_add(ctx, SCMP_ACT_ERRNO(EPERM), nr, 0); rc < 0) {
      return Status::internal(std::string("seccomp rule ") + name + ": " + std::strerror(-rc));
    }
  }
  // clone with any namespace flag; plain fork/threads stay allowed.
  for (uint64_t flag : {CLONE_NEWNS, CLONE_NEWUTS, CLONE_NEWIPC, CLONE_NEWUSER, CLONE_NEWPID, CLONE_NEWNET,
                        CLONE_NEWCGROUP}) {
    if (int rc = seccomp_rule_add(ctx, SCMP_ACT_ERRNO(EPERM), SCMP_SYS(clone), 1,
                                  SCMP_A0_64(SCMP_CMP_MASKED_EQ, flag, flag));
        rc < 0) {
      return Status::internal(std::string("seccomp clone rule: ") + std::strerror(-rc));
    }
  }
  // clone3 passes flags in memory, which BPF cannot inspect: ENOSYS makes libc fall back to clone.
  if (int rc = seccomp_rule_add(ctx, SCMP_ACT_ERRNO(ENOSYS), SCMP_SYS(clone3), 0); rc < 0) {
    return Status::internal(std::string("seccomp clone3 rule: ") + std::strerror(-rc));
  }
  // Device nodes only; regular files and FIFOs through mknod stay allowed.
  for (uint32_t type : {static_cast<uint32_t>(S_IFCHR), static_cast<uint32_t>(S_IFBLK)}) {
    int rc = seccomp_rule_add(ctx, SCMP_ACT_ERRNO(EPERM), SCMP_SYS(mknod), 1,
                              SCMP_A1_32(SCMP_CMP_MASKED_EQ, S_IFMT, type));
    if (rc == 0) {
      rc = seccomp_rule_add(ctx, SCMP_ACT_ERRNO(EPERM), SCMP_SYS(mknodat), 1,
                            SCMP_A2_32(SCMP_CMP_MASKED_EQ, S_IFMT, type));
    }
    if (rc < 0) return Status::internal(std::string("seccomp mknod rule: ") + std::strerror(-rc));
  }
  Fd mem(memfd_create("foxden-seccomp", MFD_CLOEXEC));
  if (mem.get() < 0) return Status::internal("memfd_create: " + errnoText(errno));
  if (int rc = seccomp_export_bpf(ctx, mem.get()); rc < 0) {
    return Status::internal(std::string("seccomp_export_bpf: ") + std::strerror(-rc));
  }
  off_t size = lseek(mem.get(), 0, SEEK_END);
  std::vector<unsigned char> bytes(static_cast<size_t>(size));
  if (pread(mem.get(), bytes.data(), bytes.size(), 0) != size) return Status::internal("read seccomp program");
  return bytes;
}

DriverPtr newExecDriver(ExecDriverOptions options) {
  options.isolate = true;
  return std::make_unique<ExecDriver>(std::move(options));
}

DriverPtr newRawExecDriver(ExecDriverOptions options) {
  options.isolate = false;
  return std::make_unique<ExecDriver>(std::move(options));
}

void excludeStackFromForks() {
  pthread_attr_t attr;
  if (pthread_getattr_np(pthread_self(), &attr) != 0) return;
  void* addr = nullptr;
  size_t size = 0;
  size_t guard = 0;
  if (pthread_attr_getstack(&attr, &addr, &size) == 0 && pthread_attr_getguardsize(&attr, &guard) == 0) {
    // The guard page below the stack is a mapping of its own: leave it out of forks too.
    char* low = static_cast<char*>(addr) - guard;
    if (madvise(low, size + guard, MADV_DONTFORK) == 0) {
      tExcludedStack = {low, size + guard};
    } else if (madvise(addr, size, MADV_DONTFORK) == 0) {
      tExcludedStack = {addr, size};
    }
  }
  pthread_attr_destroy(&attr);
}

namespace {
std::atomic<bool> gTraceStarts{false};
}  // namespace

void enableStartTrace(bool on) { gTraceStarts = on; }

void traceStartPoint(const char* what) {
  if (!gTraceStarts) return;
  auto us = std::chrono::duration_cast<std::chrono::microseconds>(
                std::chrono::steady_clock::now().time_since_epoch()).count();
  std::cerr << ("trace: point=" + std::string(what) + " at_us=" + std::to_string(us) + "\n") << std::flush;
}

}  // namespace nodeagent
