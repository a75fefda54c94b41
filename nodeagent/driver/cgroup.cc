#include "nodeagent/driver/cgroup.h"

#include <dirent.h>
#include <dlfcn.h>
#include <elf.h>
#include <link.h>
#include <fcntl.h>
#include <libcgroup.h>
#include <linux/magic.h>
#include <sys/syscall.h>
#include <linux/bpf.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/mman.h>
#include <sys/statfs.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <thread>

namespace nodeagent {
namespace {

using kube::Status;

constexpr int64_t kCfsPeriodMicros = 100000;
// Order matters for v1 creation only in that memory values are written in insertion order.
const char* const kV1Controllers[] = {"cpu", "cpuacct", "memory", "pids", "devices", "freezer"};

std::string libcgroupError(int rc) {
  std::string msg = cgroup_strerror(rc);
  if (rc == ECGOTHER) msg += std::string(": ") + std::strerror(cgroup_get_last_errno());
  return msg;
}

// Hands back the resident pages of a library's zero-initialised (.bss) object `symbol` that hold
// only zeros. cgroup_init() clears libcgroup's whole mount table, cg_mount_table: 100 entries of
// 8 KiB for the dozen controllers a machine has, so 0.7 MiB of an idle agent's 16 were pages of
// zeros (docs/benchmarks.md). Past the object's first page, .bss is private anonymous memory,
// which reads as zeros again after MADV_DONTNEED: the contents do not change. Must run while
// nothing else uses the object; a symbol that is absent (another libcgroup) leaves all as is.
void releaseZeroPages(const char* symbol) {
  void* addr = ::dlsym(RTLD_DEFAULT, symbol);
  Dl_info info{};
  void* entry = nullptr;
  if (addr == nullptr || ::dladdr1(addr, &info, &entry, RTLD_DL_SYMENT) == 0) return;
  const auto* sym = static_cast<const ElfW(Sym)*>(entry);
  if (sym == nullptr || ELF64_ST_TYPE(sym->st_info) != STT_OBJECT) return;
  const auto page = static_cast<uintptr_t>(::sysconf(_SC_PAGESIZE));
  const auto start = reinterpret_cast<uintptr_t>(addr);
  const uintptr_t begin = (start + page - 1) / page * page;
  const uintptr_t end = (start + sym->st_size) / page * page;
  uintptr_t run = 0;  // start of the current run of zero pages, 0: none
  auto flush = [&](uintptr_t upTo) {
    if (run != 0) ::madvise(reinterpret_cast<void*>(run), upTo - run, MADV_DONTNEED);
    run = 0;
  };
  for (uintptr_t p = begin; p < end; p += page) {
    const auto* words = reinterpret_cast<const uint64_t*>(p);
    const bool zero = std::all_of(words, words + page / sizeof(uint64_t), [](uint64_t w) { return w == 0; });
    if (zero && run == 0) run = p;
    if (!zero) flush(p);
  }
  flush(end);
}

// libcgroup parses /proc/mounts once per process. Every use of libcgroup comes through here, so
// nothing touches its tables while the zero pages go back.
int ensureLibcgroup() {
  static int rc = [] {
    int r = cgroup_init();
    releaseZeroPages("cg_mount_table");
    return r;
  }();
  return rc;
}

struct CgroupFree {
  void operator()(cgroup* cg) const { cgroup_free(&cg); }
};
using CgroupPtr = std::unique_ptr<cgroup, CgroupFree>;

void sleepMs(int ms) { std::this_thread::sleep_for(std::chrono::milliseconds(ms)); }

// cgroup v2 has no devices.allow: the allow-list is a BPF_PROG_TYPE_CGROUP_DEVICE program attached
// to the task's cgroup. It compares (type, major, minor) against each rule and returns 1 (allow)
// or 0 (deny, EPERM), as runc's devicefilter does.
std::vector<bpf_insn> deviceFilterProgram(const std::vector<DeviceRule>& rules) {
  auto ins = [](uint8_t code, uint8_t dst, uint8_t src, int16_t off, int32_t imm) {
    bpf_insn i{};
    i.code = code;
    i.dst_reg = dst & 0xf;
    i.src_reg = src & 0xf;
    i.off = off;
    i.imm = imm;
    return i;
  };
  std::vector<bpf_insn> p;
  // r2 = ctx->access_type & 0xffff (the device type); r4 = ctx->major; r5 = ctx->minor
  p.push_back(ins(BPF_LDX | BPF_W | BPF_MEM, BPF_REG_2, BPF_REG_1, 0, 0));
  p.push_back(ins(BPF_ALU | BPF_AND | BPF_K, BPF_REG_2, 0, 0, 0xffff));
  p.push_back(ins(BPF_LDX | BPF_W | BPF_MEM, BPF_REG_4, BPF_REG_1, 4, 0));
  p.push_back(ins(BPF_LDX | BPF_W | BPF_MEM, BPF_REG_5, BPF_REG_1, 8, 0));
  for (const auto& r : rules) {
    const int type = r.type == 'b' ? BPF_DEVCG_DEV_BLOCK : BPF_DEVCG_DEV_CHAR;
    const bool anyMinor = r.minor < 0;
    // Jumps skip the rest of this rule: the compares after them plus "r0 = 1; exit".
    const int16_t tail = anyMinor ? 2 : 3;
    p.push_back(ins(BPF_JMP | BPF_JNE | BPF_K, BPF_REG_2, 0, static_cast<int16_t>(tail + 1), type));
    p.push_back(ins(BPF_JMP | BPF_JNE | BPF_K, BPF_REG_4, 0, tail, static_cast<int32_t>(r.major)));
    if (!anyMinor) p.push_back(ins(BPF_JMP | BPF_JNE | BPF_K, BPF_REG_5, 0, 2, static_cast<int32_t>(r.minor)));
    p.push_back(ins(BPF_ALU64 | BPF_MOV | BPF_K, BPF_REG_0, 0, 0, 1));
    p.push_back(ins(BPF_JMP | BPF_EXIT, 0, 0, 0, 0));
  }
  p.push_back(ins(BPF_ALU64 | BPF_MOV | BPF_K, BPF_REG_0, 0, 0, 0));
  p.push_back(ins(BPF_JMP | BPF_EXIT, 0, 0, 0, 0));
  return p;
}

Status attachDeviceFilterImpl(const std::string& cgroupDir, const std::vector<DeviceRule>& rules) {
  std::vector<bpf_insn> prog = deviceFilterProgram(rules);
  static const char kLicense[] = "Apache-2.0";
  char verifierLog[4096] = {};
  bpf_attr load{};
  load.prog_type = BPF_PROG_TYPE_CGROUP_DEVICE;
  load.insns = reinterpret_cast<uint64_t>(prog.data());
  load.insn_cnt = static_cast<uint32_t>(prog.size());
  load.license = reinterpret_cast<uint64_t>(kLicense);
  load.log_buf = reinterpret_cast<uint64_t>(verifierLog);
  load.log_size = sizeof verifierLog;
  load.log_level = 1;
  int progFd = static_cast<int>(syscall(SYS_bpf, BPF_PROG_LOAD, &load, sizeof load));
  if (progFd < 0) {
    return Status::internal(std::string("load the cgroup v2 device filter (BPF): ") + std::strerror(errno) +
                            (verifierLog[0] != 0 ? std::string(": ") + verifierLog : ""));
  }
  int dirFd = open(cgroupDir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dirFd < 0) {
    int err = errno;
    close(progFd);
    return Status::internal("open " + cgroupDir + ": " + std::strerror(err));
  }
  bpf_attr attach{};
  attach.target_fd = static_cast<uint32_t>(dirFd);
  attach.attach_bpf_fd = static_cast<uint32_t>(progFd);
  attach.attach_type = BPF_CGROUP_DEVICE;
  long rc = syscall(SYS_bpf, BPF_PROG_ATTACH, &attach, sizeof attach);
  int err = errno;
  close(dirFd);
  close(progFd);  // the attachment keeps the program
  if (rc < 0) return Status::internal("attach the device filter to " + cgroupDir + ": " + std::strerror(err));
  return Status::ok();
}

}  // namespace

Status attachDeviceFilter(const std::string& cgroupDir, const std::vector<DeviceRule>& rules) {
  return attachDeviceFilterImpl(cgroupDir, rules);
}

Status writeFile(const std::string& path, const std::string& value) {
  int fd = open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) return Status::internal("open " + path + ": " + std::strerror(errno));
  ssize_t n = write(fd, value.data(), value.size());
  int err = errno;
  close(fd);
  if (n != static_cast<ssize_t>(value.size())) {
    return Status::internal("write '" + value + "' to " + path + ": " + std::strerror(n < 0 ? err : EIO));
  }
  return Status::ok();
}

std::optional<std::string> readFile(const std::string& path) {
  int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return std::nullopt;
  std::string out;
  char buf[4096];
  for (;;) {
    ssize_t n = read(fd, buf, sizeof buf);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    out.append(buf, static_cast<size_t>(n));
  }
  close(fd);
  return out;
}

CgroupMode detectCgroupMode(const std::string& root) {
  struct statfs fs {};
  if (statfs(root.c_str(), &fs) == 0 && fs.f_type == CGROUP2_SUPER_MAGIC) return CgroupMode::kV2;
  return CgroupMode::kV1;
}

std::string DeviceRule::toString() const {
  return std::string(1, type) + " " + std::to_string(major) + ":" + (minor < 0 ? "*" : std::to_string(minor)) +
         " rwm";
}

std::vector<DeviceRule> standardDeviceRules() {
  return {{'c', 1, 3}, {'c', 1, 5}, {'c', 1, 7}, {'c', 1, 8}, {'c', 1, 9},  // null zero full random urandom
          {'c', 5, 0}, {'c', 5, 2}, {'c', 136, -1}};                         // tty ptmx pts/*
}

bool isNewV1CgroupDefault(const CgroupSetting& s) {
  return (s.file == "cpu.shares" && s.value == "1024") ||
         (s.file == "cpu.cfs_period_us" && s.value == "100000") ||
         (s.file == "cpu.cfs_quota_us" && s.value == "-1") || (s.file == "pids.max" && s.value == "max");
}

std::vector<CgroupSetting> cgroupSettings(CgroupMode mode, const CgroupLimits& l, bool memswAvailable) {
  std::vector<CgroupSetting> s;
  if (mode == CgroupMode::kV1) {
    s.push_back({"cpu", "cpu.shares", std::to_string(std::clamp<int64_t>(l.cpuShares, 2, 262144))});
    s.push_back({"cpu", "cpu.cfs_period_us", std::to_string(kCfsPeriodMicros)});
    s.push_back({"cpu", "cpu.cfs_quota_us", l.cpuQuotaMicros > 0 ? std::to_string(l.cpuQuotaMicros) : "-1"});
    if (l.memoryBytes > 0) {
      // memsw (memory+swap) must be >= limit_in_bytes, so it is written second; equal = no swap.
      s.push_back({"memory", "memory.limit_in_bytes", std::to_string(l.memoryBytes)});
      if (memswAvailable) s.push_back({"memory", "memory.memsw.limit_in_bytes", std::to_string(l.memoryBytes)});
    }
    s.push_back({"pids", "pids.max", l.pidsMax > 0 ? std::to_string(l.pidsMax) : "max"});
    if (!l.cpuset.empty()) s.push_back({"cpuset", "cpuset.cpus", l.cpuset});
  } else {
    // The runc/Kubernetes mapping of shares [2, 262144] onto weight [1, 10000].
    int64_t shares = std::clamp<int64_t>(l.cpuShares, 2, 262144);
    s.push_back({"cpu", "cpu.weight", std::to_string(1 + ((shares - 2) * 9999) / 262142)});
    s.push_back({"cpu", "cpu.max", (l.cpuQuotaMicros > 0 ? std::to_string(l.cpuQuotaMicros) : std::string("max")) +
                                       " " + std::to_string(kCfsPeriodMicros)});
    if (l.memoryBytes > 0) {
      s.push_back({"memory", "memory.max", std::to_string(l.memoryBytes)});
      if (memswAvailable) s.push_back({"memory", "memory.swap.max", "0"});
    }
    s.push_back({"pids", "pids.max", l.pidsMax > 0 ? std::to_string(l.pidsMax) : "max"});
    if (!l.cpuset.empty()) s.push_back({"cpuset", "cpuset.cpus", l.cpuset});
  }
  return s;
}

CgroupManager::CgroupManager(CgroupMode mode, std::string root) : mode_(mode), root_(std::move(root)) {
  if (mode_ == CgroupMode::kV2) {
    controllers_ = {"cpu", "memory", "pids"};
    memsw_ = true;  // memory.swap.max: written only where the file exists (see createV2)
    deviceFilter_ = detectCgroupMode(root_) == CgroupMode::kV2;
    return;
  }
  std::lock_guard lock(mu_);
  ensureLibcgroup();
  for (const char* c : {"cpu", "cpuacct", "memory", "pids", "devices", "freezer", "cpuset"}) {
    char* mnt = nullptr;
    if (cgroup_get_subsys_mount_point(c, &mnt) == 0 && mnt != nullptr) {
      mounts_.emplace_back(c, mnt);
      if (std::string(c) != "cpuset") controllers_.push_back(c);
    }
    free(mnt);
  }
  std::string mem = dir("memory", "");
  memsw_ = !mem.empty() && access((mem + "/memory.memsw.limit_in_bytes").c_str(), F_OK) == 0;
}

std::string CgroupManager::dir(const std::string& controller, const std::string& path) const {
  if (mode_ == CgroupMode::kV2) return path.empty() ? root_ : root_ + "/" + path;
  for (const auto& [c, mnt] : mounts_) {
    if (c == controller) return path.empty() ? mnt : mnt + "/" + path;
  }
  return "";
}

Status CgroupManager::create(const std::string& path, const CgroupLimits& limits,
                             const std::vector<DeviceRule>& devices) {
  return mode_ == CgroupMode::kV1 ? createV1(path, limits, devices) : createV2(path, limits, devices);
}

Status CgroupManager::createV1(const std::string& path, const CgroupLimits& limits,
                               const std::vector<DeviceRule>& devices) {
  for (const char* c : kV1Controllers) {
    if (dir(c, "").empty()) return Status::internal(std::string("cgroup v1 controller not mounted: ") + c);
  }
  if (!limits.cpuset.empty()) {
    // A v1 cpuset child starts with empty cpus/mems and refuses tasks; seed the parent chain
    // from the root so the task's own cpuset.cpus is a valid subset.
    std::string rootDir = dir("cpuset", "");
    if (rootDir.empty()) return Status::internal("cpuset requested but the cpuset controller is not mounted");
    size_t pos = 0;
    const std::string& rel = path;
    while ((pos = rel.find('/', pos)) != std::string::npos) {
      std::string d = rootDir + "/" + rel.substr(0, pos);
      mkdir(d.c_str(), 0755);
      for (const char* f : {"cpuset.cpus", "cpuset.mems"}) {
        auto val = readFile(d + "/" + f);
        if (val && val->find_first_not_of(" \n") == std::string::npos) {
          auto parentVal = readFile(d.substr(0, d.rfind('/')) + "/" + f);
          if (parentVal) (void)writeFile(d + "/" + f, *parentVal);
        }
      }
      ++pos;
    }
  }
  {
    std::lock_guard lock(mu_);
    if (int rc = ensureLibcgroup(); rc != 0) return Status::internal("cgroup_init: " + libcgroupError(rc));
    CgroupPtr cg(cgroup_new_cgroup(path.c_str()));
    if (!cg) return Status::internal("cgroup_new_cgroup failed");
    std::vector<std::pair<std::string, cgroup_controller*>> ctrls;
    auto controller = [&](const std::string& name) -> cgroup_controller* {
      for (auto& [n, c] : ctrls) {
        if (n == name) return c;
      }
      cgroup_controller* c = cgroup_add_controller(cg.get(), name.c_str());
      ctrls.emplace_back(name, c);
      return c;
    };
    for (const auto& c : controllers_) {
      if (controller(c) == nullptr) return Status::internal("cgroup_add_controller " + c);
    }
    for (const auto& s : cgroupSettings(CgroupMode::kV1, limits, memsw_)) {
      // A new v1 cgroup has these values already, and libcgroup spends seven syscalls on each
      // value it writes (it re-reads /proc/mounts first). (ExecDriver::makeCgroup removes a
      // leftover cgroup of the same path first, so that the cgroup made here is always new.)
      if (isNewV1CgroupDefault(s)) continue;
      cgroup_controller* c = controller(s.controller);
      if (c == nullptr) return Status::internal("cgroup_add_controller " + s.controller);
      if (int rc = cgroup_add_value_string(c, s.file.c_str(), s.value.c_str()); rc != 0) {
        return Status::internal("cgroup_add_value " + s.file + ": " + libcgroupError(rc));
      }
    }
    if (!limits.cpuset.empty()) {
      auto mems = readFile(dir("cpuset", path.substr(0, path.rfind('/'))) + "/cpuset.mems");
      std::string m = mems ? mems->substr(0, mems->find('\n')) : "0";
      if (int rc = cgroup_add_value_string(controller("cpuset"), "cpuset.mems", m.c_str()); rc != 0) {
        return Status::internal("cgroup_add_value cpuset.mems: " + libcgroupError(rc));
      }
    }
    // ignore_ownership=1: the cgroup stays root-owned, and libcgroup skips chowning every file of
    // every new directory (a large share of the start latency).
    if (int rc = cgroup_create_cgroup(cg.get(), 1); rc != 0) {
      return Status::internal("create cgroup " + path + ": " + libcgroupError(rc));
    }
  }
  // Devices: deny everything, then allow the standard nodes and `devices`.
  if (auto st = writeFile(dir("devices", path) + "/devices.deny", "a"); !st) return st;
  std::vector<DeviceRule> rules = standardDeviceRules();
  rules.insert(rules.end(), devices.begin(), devices.end());
  return allowDevices(path, rules);
}

Status CgroupManager::adopt(const std::string& spare, const std::string& path, const CgroupLimits& limits,
                            const std::vector<DeviceRule>& devices) {
  if (mode_ != CgroupMode::kV1 || !limits.cpuset.empty()) return Status::invalid("no spare cgroups here");
  // One rename per hierarchy directory; what was renamed goes back if one fails.
  const std::vector<std::string> dirs = hierarchyDirs("", false);
  for (size_t i = 0; i < dirs.size(); ++i) {
    if (std::rename((dirs[i] + "/" + spare).c_str(), (dirs[i] + "/" + path).c_str()) != 0) {
      int err = errno;
      while (i-- > 0) std::rename((dirs[i] + "/" + path).c_str(), (dirs[i] + "/" + spare).c_str());
      return Status::internal("rename cgroup " + spare + " to " + path + ": " + std::strerror(err));
    }
  }
  // The spare has the defaults of a new cgroup: only the other values are written, directly.
  // (libcgroup's cgroup_modify_cgroup re-reads /proc/mounts and walks every hierarchy first: 0.17
  // ms of each start here for one or two values, against 0.02 ms for the writes.)
  for (const auto& s : cgroupSettings(CgroupMode::kV1, limits, memsw_)) {
    if (isNewV1CgroupDefault(s)) continue;
    if (auto st = writeFile(dir(s.controller, path) + "/" + s.file, s.value); !st) return st;
  }
  return allowDevices(path, devices);
}

Status CgroupManager::allowDevices(const std::string& path, const std::vector<DeviceRule>& rules) {
  // devices.allow takes one rule per write and libcgroup keeps one value per file name, so the
  // rules are written directly, each one write() through a single open.
  if (rules.empty()) return Status::ok();
  std::string allow = dir("devices", path) + "/devices.allow";
  int fd = open(allow.c_str(), O_WRONLY | O_CLOEXEC);
  if (fd < 0) return Status::internal("open " + allow + ": " + std::strerror(errno));
  for (const auto& r : rules) {
    std::string rule = r.toString();
    if (write(fd, rule.data(), rule.size()) != static_cast<ssize_t>(rule.size())) {
      int err = errno;
      close(fd);
      return Status::internal("write '" + rule + "' to " + allow + ": " + std::strerror(err));
    }
  }
  close(fd);
  return Status::ok();
}

Status CgroupManager::createV2(const std::string& path, const CgroupLimits& limits,
                               const std::vector<DeviceRule>& devices) {
  // Controllers must be enabled in every ancestor's subtree_control ("no internal processes":
  // the parent itself never holds tasks).
  std::string enable = "+cpu +memory +pids";
  if (!limits.cpuset.empty()) enable += " +cpuset";
  std::string cur = root_;
  size_t pos = 0;
  for (;;) {
    size_t next = path.find('/', pos);
    if (auto st = writeFile(cur + "/cgroup.subtree_control", enable); !st) return st;
    if (next == std::string::npos) break;
    cur = root_ + "/" + path.substr(0, next);
    if (mkdir(cur.c_str(), 0755) < 0 && errno != EEXIST) {
      return Status::internal("mkdir " + cur + ": " + std::strerror(errno));
    }
    pos = next + 1;
  }
  std::string leaf = root_ + "/" + path;
  if (mkdir(leaf.c_str(), 0755) < 0 && errno != EEXIST) {
    return Status::internal("mkdir " + leaf + ": " + std::strerror(errno));
  }
  bool swap = access((leaf + "/memory.swap.max").c_str(), F_OK) == 0;
  for (const auto& s : cgroupSettings(CgroupMode::kV2, limits, swap)) {
    if (auto st = writeFile(leaf + "/" + s.file, s.value); !st) return st;
  }
  // The device allow-list; a fake tree (tests of the file mapping) is no cgroup to attach to.
  if (!deviceFilter_) return Status::ok();
  std::vector<DeviceRule> rules = standardDeviceRules();
  rules.insert(rules.end(), devices.begin(), devices.end());
  return attachDeviceFilterImpl(leaf, rules);
}

Status CgroupManager::attach(const std::string& path, pid_t pid) {
  if (mode_ == CgroupMode::kV2) return writeFile(root_ + "/" + path + "/cgroup.procs", std::to_string(pid));
  std::lock_guard lock(mu_);
  CgroupPtr cg(cgroup_new_cgroup(path.c_str()));
  if (!cg) return Status::internal("cgroup_new_cgroup failed");
  for (const auto& c : controllers_) cgroup_add_controller(cg.get(), c.c_str());
  std::string cpuset = dir("cpuset", path);
  if (!cpuset.empty() && access(cpuset.c_str(), F_OK) == 0) cgroup_add_controller(cg.get(), "cpuset");
  if (int rc = cgroup_attach_task_pid(cg.get(), pid); rc != 0) {
    return Status::internal("attach " + std::to_string(pid) + " to " + path + ": " + libcgroupError(rc));
  }
  return Status::ok();
}

bool CgroupManager::exists(const std::string& path) const {
  std::string d = dir(mode_ == CgroupMode::kV2 || controllers_.empty() ? "" : controllers_.front(), path);
  return !d.empty() && access(d.c_str(), F_OK) == 0;
}

kube::StatusOr<int> CgroupManager::openDirFd(const std::string& path) const {
  std::string d = dir("", path);
  int fd = open(d.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) return Status::internal("open " + d + ": " + std::strerror(errno));
  return fd;
}

std::vector<std::string> CgroupManager::hierarchyDirs(const std::string& path, bool withCpuset) const {
  std::vector<std::string> dirs;
  for (const auto& c : controllers_) dirs.push_back(dir(c, path));
  if (withCpuset) dirs.push_back(dir("cpuset", path));
  std::sort(dirs.begin(), dirs.end());
  dirs.erase(std::unique(dirs.begin(), dirs.end()), dirs.end());  // cpu,cpuacct may be one mount
  dirs.erase(std::remove(dirs.begin(), dirs.end(), std::string()), dirs.end());
  return dirs;
}

std::vector<std::string> CgroupManager::joinPaths(const std::string& path, bool withCpuset) const {
  std::vector<std::string> files;
  for (const auto& d : hierarchyDirs(path, withCpuset)) files.push_back(d + "/tasks");
  return files;
}

std::vector<pid_t> CgroupManager::procs(const std::string& path) const {
  // The pids hierarchy is the one every task process is charged to; memory would do as well.
  std::vector<pid_t> out;
  auto text = readFile(dir("pids", path) + "/cgroup.procs");
  if (!text) return out;
  size_t pos = 0;
  while (pos < text->size()) {
    size_t end = text->find('\n', pos);
    if (end == std::string::npos) end = text->size();
    if (end > pos) out.push_back(static_cast<pid_t>(std::atol(text->substr(pos, end - pos).c_str())));
    pos = end + 1;
  }
  return out;
}

Status CgroupManager::setFrozen(const std::string& path, bool frozen) {
  if (mode_ == CgroupMode::kV2) return writeFile(dir("", path) + "/cgroup.freeze", frozen ? "1" : "0");
  std::string state = dir("freezer", path) + "/freezer.state";
  if (auto st = writeFile(state, frozen ? "FROZEN" : "THAWED"); !st) return st;
  if (!frozen) return Status::ok();
  for (int i = 0; i < 200; ++i) {  // FREEZING -> FROZEN normally takes microseconds
    auto s = readFile(state);
    if (s && s->rfind("FROZEN", 0) == 0) return Status::ok();
    sleepMs(5);
  }
  return Status::internal("cgroup " + path + " did not freeze");
}

Status CgroupManager::killAll(const std::string& path, int timeoutMs) {
  auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeoutMs);
  std::string killFile = dir("", path) + "/cgroup.kill";
  if (mode_ == CgroupMode::kV2 && access(killFile.c_str(), F_OK) == 0) {
    if (auto st = writeFile(killFile, "1"); !st) return st;
  } else {
    // Frozen processes cannot fork between our read of cgroup.procs and the kills.
    while (!procs(path).empty()) {
      if (auto st = setFrozen(path, true); !st) return st;
      for (pid_t p : procs(path)) kill(p, SIGKILL);
      if (auto st = setFrozen(path, false); !st) return st;
      if (std::chrono::steady_clock::now() > deadline) break;
      sleepMs(10);
    }
  }
  while (!procs(path).empty()) {
    if (std::chrono::steady_clock::now() > deadline) {
      return Status::internal("cgroup " + path + " still has processes after SIGKILL");
    }
    sleepMs(10);
  }
  return Status::ok();
}

int64_t CgroupManager::oomKills(const std::string& path) const {
  std::string file = mode_ == CgroupMode::kV1 ? dir("memory", path) + "/memory.oom_control"
                                              : dir("", path) + "/memory.events";
  auto text = readFile(file);
  if (!text) return 0;
  size_t pos = text->find("oom_kill ");
  if (pos == std::string::npos) return 0;
  return std::atoll(text->c_str() + pos + 9);
}

std::vector<std::string> CgroupManager::children(const std::string& parent) const {
  std::vector<std::string> out;
  std::string d = mode_ == CgroupMode::kV1 ? dir("pids", parent) : dir("", parent);
  DIR* dp = opendir(d.c_str());
  if (dp == nullptr) return out;
  while (dirent* e = readdir(dp)) {
    if (e->d_type == DT_DIR && e->d_name[0] != '.') out.emplace_back(e->d_name);
  }
  closedir(dp);
  std::sort(out.begin(), out.end());
  return out;
}

Status CgroupManager::remove(const std::string& path) {
  if (mode_ == CgroupMode::kV2) {
    std::string d = dir("", path);
    if (rmdir(d.c_str()) < 0 && errno != ENOENT) return Status::internal("rmdir " + d + ": " + std::strerror(errno));
    return Status::ok();
  }
  std::lock_guard lock(mu_);
  CgroupPtr cg(cgroup_new_cgroup(path.c_str()));
  if (!cg) return Status::internal("cgroup_new_cgroup failed");
  std::vector<std::string> present;
  for (const auto& [c, mnt] : mounts_) {
    if (access((mnt + "/" + path).c_str(), F_OK) == 0) {
      cgroup_add_controller(cg.get(), c.c_str());
      present.push_back(c);
    }
  }
  if (present.empty()) return Status::ok();
  // IGNORE_MIGRATION: the caller killed everything; nothing should be left to move to the parent.
  if (int rc = cgroup_delete_cgroup_ext(cg.get(), CGFLAG_DELETE_IGNORE_MIGRATION); rc != 0) {
    return Status::internal("delete cgroup " + path + ": " + libcgroupError(rc));
  }
  return Status::ok();
}

}  // namespace nodeagent
