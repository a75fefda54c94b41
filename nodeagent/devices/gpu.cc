#include "nodeagent/devices/gpu.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <optional>
#include <set>
#include <sstream>
#include <string_view>
#include <thread>

extern char** environ;

namespace nodeagent {
namespace {

using kube::Status;
using kube::StatusOr;
namespace fs = std::filesystem;

constexpr const char* kNvidiaQuery = "--query-gpu=index,uuid,name,memory.total";
constexpr size_t kMaxOutput = 1 << 20;  // a sane nvidia-smi prints a few hundred bytes

std::string errnoText(int e) { return std::strerror(e); }

std::string trim(std::string_view s) {
  const char* ws = " \t\r\n";
  size_t b = s.find_first_not_of(ws);
  if (b == std::string_view::npos) return "";
  size_t e = s.find_last_not_of(ws);
  return std::string(s.substr(b, e - b + 1));
}

template <class T>
bool parseInt(std::string_view s, T& out, int base = 10) {
  if (s.empty()) return false;
  auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), out, base);
  return ec == std::errc() && p == s.data() + s.size();
}

std::optional<std::string> readSmallFile(const std::string& path) {
  std::ifstream in(path);
  if (!in) return std::nullopt;
  std::ostringstream ss;
  ss << in.rdbuf();
  return trim(ss.str());
}

bool exists(const std::string& path) {
  struct stat st;
  return lstat(path.c_str(), &st) == 0;
}

class Fd {
 public:
  explicit Fd(int fd = -1) : fd_(fd) {}
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;
  ~Fd() { reset(); }
  int get() const { return fd_; }
  void reset() {
    if (fd_ >= 0) close(fd_);
    fd_ = -1;
  }

 private:
  int fd_;
};

// A spawned child in its own process group. Whatever path leaves the runner, the group is killed
// and the child reaped: a hung nvidia-smi (or a script's `sleep` grandchild) must not outlive us.
class ChildGuard {
 public:
  explicit ChildGuard(pid_t pid) : pid_(pid) {}
  ChildGuard(const ChildGuard&) = delete;
  ChildGuard& operator=(const ChildGuard&) = delete;
  ~ChildGuard() {
    if (pid_ <= 0) return;
    kill(-pid_, SIGKILL);
    while (waitpid(pid_, nullptr, 0) < 0 && errno == EINTR) {
    }
  }
  // Once the child has exited: kills what is left of its group, reaps it, returns its wait status.
  // The group is killed before the reap because the zombie is what keeps its pid (the group id)
  // from being reused: after the reap, kill(-pid) could hit an unrelated group.
  std::optional<int> tryReap() {
    siginfo_t info{};
    int r;
    do r = waitid(P_PID, static_cast<id_t>(pid_), &info, WEXITED | WNOHANG | WNOWAIT);
    while (r < 0 && errno == EINTR);
    if (r < 0 || info.si_pid != pid_) return std::nullopt;
    kill(-pid_, SIGKILL);  // grandchildren that kept running in the group
    int ws = 0;
    while (waitpid(pid_, &ws, 0) < 0 && errno == EINTR) {
    }
    pid_ = -1;
    return ws;
  }

 private:
  pid_t pid_;
};

struct ProcessResult {
  bool notFound = false;  // the program does not exist
  int waitStatus = 0;
  std::string out, err;
};

// posix_spawn rather than fork: the agent is multi-threaded and large; posix_spawn is vfork-fast
// and reports exec failures (ENOENT) synchronously.
StatusOr<ProcessResult> runCapture(const std::string& program, const std::vector<std::string>& args,
                                   int timeoutMs) {
  int outPipe[2], errPipe[2];
  if (pipe2(outPipe, O_CLOEXEC) < 0) return Status::internal("pipe: " + errnoText(errno));
  Fd outR(outPipe[0]), outW(outPipe[1]);
  if (pipe2(errPipe, O_CLOEXEC) < 0) return Status::internal("pipe: " + errnoText(errno));
  Fd errR(errPipe[0]), errW(errPipe[1]);

  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
  posix_spawn_file_actions_adddup2(&fa, outW.get(), 1);
  posix_spawn_file_actions_adddup2(&fa, errW.get(), 2);
  posix_spawnattr_t attr;
  posix_spawnattr_init(&attr);
  // Own process group, so the timeout kills the whole tree; default signal dispositions and an
  // empty mask, because agent threads block signals that the child must not inherit blocked.
  sigset_t empty, all;
  sigemptyset(&empty);
  sigfillset(&all);
  posix_spawnattr_setpgroup(&attr, 0);
  posix_spawnattr_setsigmask(&attr, &empty);
  posix_spawnattr_setsigdefault(&attr, &all);
  posix_spawnattr_setflags(&attr,
                           POSIX_SPAWN_SETPGROUP | POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF);

  std::vector<char*> argv;
  argv.push_back(const_cast<char*>(program.c_str()));
  for (const auto& a : args) argv.push_back(const_cast<char*>(a.c_str()));
  argv.push_back(nullptr);
  pid_t pid = -1;
  int rc = posix_spawnp(&pid, program.c_str(), &fa, &attr, argv.data(), environ);
  posix_spawn_file_actions_destroy(&fa);
  posix_spawnattr_destroy(&attr);
  ProcessResult res;
  if (rc == ENOENT) {
    res.notFound = true;
    return res;
  }
  if (rc != 0) return Status::internal("cannot run " + program + ": " + errnoText(rc));
  ChildGuard child(pid);
  outW.reset();
  errW.reset();

  auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeoutMs);
  auto remainingMs = [&] {
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        deadline - std::chrono::steady_clock::now());
    return static_cast<int>(std::max<int64_t>(0, left.count()));
  };
  auto timedOut = [&] {
    return Status::timeout(program + " did not finish within " + std::to_string(timeoutMs) + " ms");
  };
  bool outOpen = true, errOpen = true;
  char buf[4096];
  while (outOpen || errOpen) {
    int left = remainingMs();
    if (left == 0) return timedOut();
    pollfd pfds[2] = {{outOpen ? outR.get() : -1, POLLIN, 0},
                      {errOpen ? errR.get() : -1, POLLIN, 0}};
    int n = poll(pfds, 2, left);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return Status::internal("poll: " + errnoText(errno));
    for (int i = 0; i < 2; ++i) {
      if (pfds[i].fd < 0 || pfds[i].revents == 0) continue;
      ssize_t r = read(pfds[i].fd, buf, sizeof buf);
      if (r < 0 && errno == EINTR) continue;
      std::string& dst = i == 0 ? res.out : res.err;
      if (r <= 0) {
        (i == 0 ? outOpen : errOpen) = false;
      } else if (dst.size() < kMaxOutput) {
        dst.append(buf, static_cast<size_t>(r));
      }
    }
  }
  // Both pipes closed; the child may still linger (it could close stdout and hang).
  for (;;) {
    if (auto ws = child.tryReap()) {
      res.waitStatus = *ws;
      return res;
    }
    if (remainingMs() == 0) return timedOut();
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
}

std::string describeExit(int ws) {
  if (WIFEXITED(ws)) return "exited " + std::to_string(WEXITSTATUS(ws));
  if (WIFSIGNALED(ws)) return "killed by signal " + std::to_string(WTERMSIG(ws));
  return "ended with status " + std::to_string(ws);
}

std::string firstLine(const std::string& s) {
  std::string t = trim(s);
  size_t nl = t.find('\n');
  return trim(nl == std::string::npos ? t : t.substr(0, nl));
}

std::vector<std::string> split(const std::string& s, char sep) {
  std::vector<std::string> parts;
  std::string cur;
  std::istringstream in(s);
  while (std::getline(in, cur, sep)) parts.push_back(cur);
  if (!s.empty() && s.back() == sep) parts.emplace_back();
  return parts;
}

// UUID -> device minor, from /proc/driver/nvidia/gpus/*/information ("GPU UUID:", "Device Minor:").
std::map<std::string, int> nvidiaMinorsByUuid(const std::string& procDriverNvidia) {
  std::map<std::string, int> out;
  std::error_code ec;
  fs::directory_iterator it(procDriverNvidia + "/gpus", ec), end;
  for (; !ec && it != end; it.increment(ec)) {
    std::ifstream in(it->path() / "information");
    std::string line, uuid;
    int minor = -1;
    while (std::getline(in, line)) {
      size_t colon = line.find(':');
      if (colon == std::string::npos) continue;
      std::string key = trim(line.substr(0, colon)), value = trim(line.substr(colon + 1));
      if (key == "GPU UUID") uuid = value;
      if (key == "Device Minor" && !parseInt(value, minor)) minor = -1;
    }
    if (!uuid.empty() && minor >= 0) out[uuid] = minor;
  }
  return out;
}

// A node that exists as a real character device must carry the major the kernel registered; a
// stale node from an older module load would make tasks fail with ENXIO. Plain files (fake trees)
// are not checked.
void checkMajor(const std::string& node, int major, std::vector<std::string>& warnings) {
  struct stat st;
  if (major < 0 || stat(node.c_str(), &st) < 0 || !S_ISCHR(st.st_mode)) return;
  if (static_cast<int>(::major(st.st_rdev)) != major) {
    warnings.push_back(node + " has major " + std::to_string(::major(st.st_rdev)) +
                       " but /proc/devices says " + std::to_string(major) + ": recreate the node");
  }
}

bool isNvidiaShared(const std::string& node) {
  return fs::path(node).filename().string().rfind("nvidia", 0) == 0;
}

}  // namespace

std::map<std::string, int> parseProcDevices(const std::string& text) {
  std::map<std::string, int> out;
  std::istringstream in(text);
  std::string line;
  bool character = false;
  while (std::getline(in, line)) {
    std::string t = trim(line);
    if (t == "Character devices:") {
      character = true;
      continue;
    }
    if (t == "Block devices:") {
      character = false;
      continue;
    }
    if (!character || t.empty()) continue;
    std::istringstream ls(t);
    int major = -1;
    std::string name;
    if (ls >> major >> name) out.emplace(name, major);
  }
  return out;
}

std::vector<Gpu> parseNvidiaSmiCsv(const std::string& text, std::vector<std::string>& warnings) {
  std::vector<Gpu> out;
  std::set<int> seen;
  std::istringstream in(text);
  std::string line;
  while (std::getline(in, line)) {
    std::string t = trim(line);
    if (t.empty()) continue;
    auto fields = split(t, ',');
    auto bad = [&](const std::string& why) {
      warnings.push_back("nvidia-smi: skipped line '" + t + "': " + why);
    };
    // Index, uuid first and memory last; the model sits between, and may itself contain commas.
    if (fields.size() < 4) {
      bad("want 4 fields");
      continue;
    }
    Gpu g;
    g.vendor = "nvidia";
    if (!parseInt(trim(fields[0]), g.index) || g.index < 0) {
      bad("bad index");
      continue;
    }
    g.uuid = trim(fields[1]);
    if (g.uuid.empty() || g.uuid.find(' ') != std::string::npos) {
      bad("bad uuid");
      continue;
    }
    for (size_t i = 2; i + 1 < fields.size(); ++i) g.model += (i > 2 ? "," : "") + fields[i];
    g.model = trim(g.model);
    std::string mem = trim(fields.back());
    int64_t mib = 0;
    if (parseInt(mem, mib) && mib >= 0) {
      g.memoryBytes = mib * 1024 * 1024;
    } else if (mem.find("N/A") == std::string::npos &&
               mem.find("Not Supported") == std::string::npos) {
      bad("bad memory.total '" + mem + "'");  // a known "unknown" keeps the GPU with 0 bytes
      continue;
    }
    if (!seen.insert(g.index).second) {
      bad("duplicate index");
      continue;
    }
    out.push_back(std::move(g));
  }
  return out;
}

Status GpuDetector::detectNvidia(GpuInventory& inv,
                                 const std::map<std::string, int>& majors) const {
  const std::string& dev = options_.devRoot;
  if (auto it = majors.find("nvidia-uvm"); it != majors.end()) inv.nvidiaUvmMajor = it->second;

  auto run = runCapture(options_.nvidiaSmi, {kNvidiaQuery, "--format=csv,noheader,nounits"},
                        options_.timeoutMs);
  if (!run) return run.status();
  if (run->notFound) {
    if (exists(dev + "/nvidiactl") || exists(dev + "/nvidia0")) {
      inv.warnings.push_back("NVIDIA device nodes exist but " + options_.nvidiaSmi +
                             " was not found: NVIDIA GPUs are not offered");
    }
    return Status::ok();
  }
  std::string all = run->out + run->err;
  // nvidia-smi exits non-zero with this message on a machine with the driver but no GPU.
  if (all.find("No devices were found") != std::string::npos) return Status::ok();
  if (!WIFEXITED(run->waitStatus) || WEXITSTATUS(run->waitStatus) != 0) {
    std::string why = firstLine(run->err.empty() ? run->out : run->err);
    return Status::unavailable(options_.nvidiaSmi + " " + describeExit(run->waitStatus) +
                               (why.empty() ? "" : ": " + why));
  }
  std::vector<Gpu> gpus = parseNvidiaSmiCsv(run->out, inv.warnings);
  if (gpus.empty() && !trim(run->out).empty()) {
    return Status::unavailable(options_.nvidiaSmi + " printed no GPU line that parses: '" +
                               firstLine(run->out) + "'");
  }

  auto minors = nvidiaMinorsByUuid(options_.procDriverNvidia);
  for (auto& g : gpus) {
    auto m = minors.find(g.uuid);
    int minor = m != minors.end() ? m->second : g.index;
    std::string node = dev + "/nvidia" + std::to_string(minor);
    if (!exists(node)) {
      inv.warnings.push_back("NVIDIA GPU " + std::to_string(g.index) + " (" + g.uuid + ") has no " +
                             node + ": not offered");
      continue;
    }
    g.deviceNodes = {node};
    inv.gpus.push_back(std::move(g));
  }
  if (inv.gpus.empty()) return Status::ok();

  for (const char* name : {"nvidiactl", "nvidia-uvm", "nvidia-uvm-tools", "nvidia-modeset"}) {
    std::string node = dev + "/" + name;
    if (exists(node)) inv.sharedNodes.push_back(node);
  }
  if (!exists(dev + "/nvidiactl"))
    inv.warnings.push_back(dev + "/nvidiactl is missing: CUDA cannot open the GPUs");
  if (!exists(dev + "/nvidia-uvm")) {
    inv.warnings.push_back(dev + "/nvidia-uvm is missing: CUDA tasks will fail to initialise" +
                           (inv.nvidiaUvmMajor >= 0
                                ? " (create it: mknod -m 666 " + dev + "/nvidia-uvm c " +
                                      std::to_string(inv.nvidiaUvmMajor) + " 0)"
                                : " (the nvidia-uvm module is not loaded)"));
  }
  checkMajor(dev + "/nvidia-uvm", inv.nvidiaUvmMajor, inv.warnings);
  return Status::ok();
}

void GpuDetector::detectAmd(GpuInventory& inv, const std::map<std::string, int>& majors) const {
  const std::string& dev = options_.devRoot;
  if (auto it = majors.find("kfd"); it != majors.end()) inv.kfdMajor = it->second;

  // Render nodes by minor; card* nodes are for display and not needed for compute.
  std::vector<int> minors;
  std::error_code ec;
  fs::directory_iterator it(dev + "/dri", ec), end;
  for (; !ec && it != end; it.increment(ec)) {
    std::string name = it->path().filename().string();
    int n = 0;
    if (name.rfind("renderD", 0) == 0 && parseInt(std::string_view(name).substr(7), n))
      minors.push_back(n);
  }
  std::sort(minors.begin(), minors.end());

  std::vector<Gpu> found;
  for (int n : minors) {
    std::string name = "renderD" + std::to_string(n);
    std::string sys = options_.sysRoot + "/class/drm/" + name + "/device";
    if (readSmallFile(sys + "/vendor").value_or("") != "0x1002")
      continue;  // Intel, NVIDIA, virtio...
    Gpu g;
    g.vendor = "amd";
    g.index = static_cast<int>(found.size());
    g.model = readSmallFile(sys + "/product_name").value_or("");
    if (g.model.empty()) g.model = "AMD GPU " + readSmallFile(sys + "/device").value_or("unknown");
    int64_t vram = 0;
    if (parseInt(readSmallFile(sys + "/mem_info_vram_total").value_or(""), vram))
      g.memoryBytes = vram;
    if (auto id = readSmallFile(sys + "/unique_id"); id && !id->empty()) g.uuid = "GPU-" + *id;
    g.deviceNodes = {dev + "/dri/" + name};
    found.push_back(std::move(g));
  }
  if (found.empty()) return;
  // Without kfd (amdkfd not loaded) ROCm cannot use the GPUs at all.
  if (!exists(dev + "/kfd")) {
    inv.warnings.push_back(std::to_string(found.size()) + " AMD GPU(s) found but " + dev +
                           "/kfd is missing: AMD GPUs are not offered");
    return;
  }
  checkMajor(dev + "/kfd", inv.kfdMajor, inv.warnings);
  inv.sharedNodes.push_back(dev + "/kfd");
  for (auto& g : found) inv.gpus.push_back(std::move(g));
}

StatusOr<GpuInventory> GpuDetector::detect() const {
  GpuInventory inv;
  std::map<std::string, int> majors;
  if (auto text = readSmallFile(options_.procDevices)) majors = parseProcDevices(*text);
  if (auto st = detectNvidia(inv, majors); !st) return st;
  detectAmd(inv, majors);
  return inv;
}

std::vector<std::string> GpuInventory::deviceNodes(const std::vector<const Gpu*>& assigned) const {
  std::vector<std::string> out;
  auto add = [&](const std::string& n) {
    if (std::find(out.begin(), out.end(), n) == out.end()) out.push_back(n);
  };
  bool nvidia = false, amd = false;
  for (const Gpu* g : assigned) {
    for (const auto& n : g->deviceNodes) add(n);
    nvidia |= g->vendor == "nvidia";
    amd |= g->vendor == "amd";
  }
  for (const auto& n : sharedNodes) {
    if (isNvidiaShared(n) ? nvidia : amd) add(n);
  }
  return out;
}

std::map<std::string, std::string> GpuInventory::env(
    const std::vector<const Gpu*>& assigned) const {
  std::vector<const Gpu*> nv, amd;
  for (const Gpu* g : assigned) (g->vendor == "nvidia" ? nv : amd).push_back(g);
  auto join = [](const std::vector<std::string>& v) {
    std::string s;
    for (const auto& x : v) s += (s.empty() ? "" : ",") + x;
    return s;
  };
  std::map<std::string, std::string> out;
  if (!nv.empty()) {
    std::vector<std::string> ids;
    ids.reserve(nv.size());
    for (const Gpu* g : nv) ids.push_back(g->uuid.empty() ? std::to_string(g->index) : g->uuid);
    out["NVIDIA_VISIBLE_DEVICES"] = join(ids);
    out["CUDA_VISIBLE_DEVICES"] = join(ids);
  }
  if (!amd.empty()) {
    bool allUuids =
        std::all_of(amd.begin(), amd.end(), [](const Gpu* g) { return !g->uuid.empty(); });
    std::vector<std::string> rocr, hip;
    for (size_t i = 0; i < amd.size(); ++i) {
      rocr.push_back(allUuids ? amd[i]->uuid : std::to_string(i));
      hip.push_back(std::to_string(i));
    }
    out["ROCR_VISIBLE_DEVICES"] = join(rocr);
    out["HIP_VISIBLE_DEVICES"] = join(hip);
  }
  return out;
}

StatusOr<std::vector<const Gpu*>> select(
    const GpuInventory& inventory, const std::vector<std::pair<std::string, int>>& vendorIndex) {
  std::vector<const Gpu*> out;
  for (const auto& [vendor, index] : vendorIndex) {
    if (vendor != "nvidia" && vendor != "amd") {
      return Status::invalid("unknown GPU vendor '" + vendor + "' (want nvidia or amd)");
    }
    const Gpu* hit = nullptr;
    std::string have;
    for (const Gpu& g : inventory.gpus) {
      if (g.vendor != vendor) continue;
      have += (have.empty() ? "" : ", ") + std::to_string(g.index);
      if (g.index == index) hit = &g;
    }
    std::string name = vendor + " GPU " + std::to_string(index);
    if (!hit) {
      return Status::notFound("this worker has no " + name + " (" + vendor +
                              " GPUs here: " + (have.empty() ? "none" : have) + ")");
    }
    if (std::find(out.begin(), out.end(), hit) != out.end()) {
      return Status::invalid(name + " is named twice");
    }
    out.push_back(hit);
  }
  return out;
}

}  // namespace nodeagent
