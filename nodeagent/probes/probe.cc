#include "nodeagent/probes/probe.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <linux/capability.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <netdb.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <linux/magic.h>
#include <sys/statfs.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <optional>
#include <sstream>

#include "nodeagent/driver/exec_driver.h"

namespace nodeagent {
namespace {

using kube::JsonValue;
using kube::Status;
using kube::StatusOr;
using Clock = std::chrono::steady_clock;

constexpr size_t kMaxRead = 4096;  // of an HTTP response or an exec probe's output
constexpr const char* kDefaultPath = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

// ---------------------------------------------------------------------------------------------
// Parsing

std::string where(const std::string& handler, const std::string& field) {
  return handler.empty() ? field : handler + "." + field;
}

bool isDigit(char c) { return c >= '0' && c <= '9'; }

bool hasBadChars(std::string_view s, bool allowSpace) {
  return std::any_of(s.begin(), s.end(), [&](char c) {
    auto u = static_cast<unsigned char>(c);
    return u < 0x20 || u == 0x7f || (!allowSpace && c == ' ');
  });
}

// An optional integer member: absent reads as `def`; present must be an integer >= min.
StatusOr<int> intField(const JsonValue& obj, const char* name, int def, int min) {
  auto it = obj.FindMember(name);
  if (it == obj.MemberEnd() || it->value.IsNull()) return def;
  const JsonValue& v = it->value;
  if (!v.IsInt64()) return Status::invalid(std::string(name) + " must be an integer");
  int64_t n = v.GetInt64();
  if (n < min || n > 1000000000) {
    return Status::invalid(std::string(name) + " must be " + (min > 0 ? "positive" : "non-negative") +
                           " (got " + std::to_string(n) + ")");
  }
  return static_cast<int>(n);
}

StatusOr<std::string> stringField(const JsonValue& obj, const char* name, const std::string& handler,
                                  std::string def) {
  auto it = obj.FindMember(name);
  if (it == obj.MemberEnd() || it->value.IsNull()) return def;
  if (!it->value.IsString()) return Status::invalid(where(handler, name) + " must be a string");
  return std::string(kube::view(it->value));
}

// IntOrString port: a number in 1..65535, or the name of one of the allocation's ports.
StatusOr<int> portField(const JsonValue& obj, const std::string& handler,
                        const std::map<std::string, int>& ports) {
  auto it = obj.FindMember("port");
  if (it == obj.MemberEnd() || it->value.IsNull()) return Status::invalid(handler + ".port is required");
  const JsonValue& v = it->value;
  int64_t port = 0;
  if (v.IsInt64()) {
    port = v.GetInt64();
  } else if (v.IsString()) {
    std::string name(kube::view(v));
    auto p = ports.find(name);
    if (p == ports.end()) {
      std::string known;
      for (const auto& [n, _] : ports) known += (known.empty() ? "" : ", ") + n;
      return Status::invalid(handler + ".port: unknown named port \"" + name + "\" (known: " +
                             (known.empty() ? "none" : known) + ")");
    }
    port = p->second;
  } else {
    return Status::invalid(handler + ".port must be a number or a port name");
  }
  if (port < 1 || port > 65535) {
    return Status::invalid(handler + ".port " + std::to_string(port) + " is out of range 1-65535");
  }
  return static_cast<int>(port);
}

StatusOr<std::string> hostField(const JsonValue& obj, const std::string& handler) {
  auto host = stringField(obj, "host", handler, "");
  if (!host) return host.status();
  if (host->empty()) return std::string("127.0.0.1");
  if (hasBadChars(*host, false)) return Status::invalid(handler + ".host has invalid characters");
  return host;
}

Status parseHttpGet(const JsonValue& h, const std::map<std::string, int>& ports, ProbeSpec& spec) {
  if (!h.IsObject()) return Status::invalid("httpGet must be an object");
  auto scheme = stringField(h, "scheme", "httpGet", "HTTP");
  if (!scheme) return scheme.status();
  std::string upper = *scheme;
  for (char& c : upper) c = static_cast<char>(toupper(static_cast<unsigned char>(c)));
  if (upper == "HTTPS") return Status::invalid("httpGet.scheme HTTPS is not supported (HTTP only)");
  if (upper != "HTTP") return Status::invalid("httpGet.scheme must be HTTP (got \"" + *scheme + "\")");
  auto port = portField(h, "httpGet", ports);
  if (!port) return port.status();
  auto host = hostField(h, "httpGet");
  if (!host) return host.status();
  auto path = stringField(h, "path", "httpGet", "/");
  if (!path) return path.status();
  // The path goes into the request line verbatim: no spaces or control characters (no header
  // injection). Kubernetes adds a missing leading slash; so do we.
  if (hasBadChars(*path, false)) return Status::invalid("httpGet.path has spaces or control characters");
  spec.path = path->empty() || (*path)[0] != '/' ? "/" + *path : *path;
  spec.port = *port;
  spec.host = *host;
  auto hs = h.FindMember("httpHeaders");
  if (hs != h.MemberEnd() && !hs->value.IsNull()) {
    if (!hs->value.IsArray()) return Status::invalid("httpGet.httpHeaders must be an array");
    for (const auto& e : hs->value.GetArray()) {
      if (!e.IsObject()) return Status::invalid("httpGet.httpHeaders entries must be objects");
      auto name = stringField(e, "name", "httpGet.httpHeaders", "");
      if (!name) return name.status();
      auto value = stringField(e, "value", "httpGet.httpHeaders", "");
      if (!value) return value.status();
      if (name->empty()) return Status::invalid("httpGet.httpHeaders: a header has no name");
      if (hasBadChars(*name, false) || name->find(':') != std::string::npos) {
        return Status::invalid("httpGet.httpHeaders: invalid header name \"" + *name + "\"");
      }
      if (hasBadChars(*value, true)) {
        return Status::invalid("httpGet.httpHeaders: header " + *name + " has control characters");
      }
      spec.headers.push_back({*name, *value});
    }
  }
  spec.kind = ProbeKind::kHttpGet;
  return Status::ok();
}

Status parseTcpSocket(const JsonValue& t, const std::map<std::string, int>& ports, ProbeSpec& spec) {
  if (!t.IsObject()) return Status::invalid("tcpSocket must be an object");
  auto port = portField(t, "tcpSocket", ports);
  if (!port) return port.status();
  auto host = hostField(t, "tcpSocket");
  if (!host) return host.status();
  spec.port = *port;
  spec.host = *host;
  spec.kind = ProbeKind::kTcpSocket;
  return Status::ok();
}

Status parseExec(const JsonValue& e, ProbeSpec& spec) {
  if (!e.IsObject()) return Status::invalid("exec must be an object");
  auto c = e.FindMember("command");
  if (c == e.MemberEnd() || !c->value.IsArray() || c->value.Empty()) {
    return Status::invalid("exec.command must be a non-empty array of strings");
  }
  for (const auto& a : c->value.GetArray()) {
    if (!a.IsString()) return Status::invalid("exec.command must be a non-empty array of strings");
    std::string s(kube::view(a));
    if (s.find('\0') != std::string::npos) return Status::invalid("exec.command has a NUL byte");
    spec.command.push_back(std::move(s));
  }
  if (spec.command[0].empty()) return Status::invalid("exec.command[0] is empty");
  spec.kind = ProbeKind::kExec;
  return Status::ok();
}

// ---------------------------------------------------------------------------------------------
// Shared I/O helpers

class Fd {
 public:
  Fd() = default;
  explicit Fd(int fd) : fd_(fd) {}
  Fd(Fd&& o) noexcept : fd_(o.release()) {}
  Fd& operator=(Fd&& o) noexcept {
    if (this != &o) reset(o.release());
    return *this;
  }
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;
  ~Fd() { reset(); }
  int get() const { return fd_; }
  bool valid() const { return fd_ >= 0; }
  int release() { return std::exchange(fd_, -1); }
  void reset(int fd = -1) {
    if (fd_ >= 0) close(fd_);
    fd_ = fd;
  }

 private:
  int fd_ = -1;
};

enum class Wait { kReady, kTimeout, kCancelled, kError };

// Waits for `events` on fd until the deadline, or for cancelFd to become readable.
Wait waitFd(int fd, short events, Clock::time_point deadline, int cancelFd) {
  for (;;) {
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now()).count();
    if (left < 0) left = 0;
    pollfd fds[2] = {{fd, events, 0}, {cancelFd, POLLIN, 0}};
    int n = poll(fds, cancelFd >= 0 ? 2 : 1, static_cast<int>(std::min<int64_t>(left, 60000)));
    if (n < 0) {
      if (errno == EINTR) continue;
      return Wait::kError;
    }
    if (cancelFd >= 0 && fds[1].revents != 0) return Wait::kCancelled;
    if (n > 0) return Wait::kReady;
    if (left == 0) return Wait::kTimeout;
  }
}

std::string errnoText(const std::string& what, int err) { return what + ": " + std::strerror(err); }

// Connects to host:port within the deadline (every resolved address in turn).
StatusOr<Fd> connectWithin(const std::string& host, int port, Clock::time_point deadline, int cancelFd) {
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_NUMERICSERV;
  addrinfo* res = nullptr;
  std::string service = std::to_string(port);
  int rc = getaddrinfo(host.c_str(), service.c_str(), &hints, &res);
  if (rc != 0) return Status::unavailable("resolve " + host + ": " + gai_strerror(rc));
  std::unique_ptr<addrinfo, void (*)(addrinfo*)> guard(res, freeaddrinfo);
  std::string last = "no address for " + host;
  for (addrinfo* ai = res; ai != nullptr; ai = ai->ai_next) {
    // Non-blocking only for connect: a blocking connect cannot be given a timeout.
    Fd fd(socket(ai->ai_family, ai->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC, ai->ai_protocol));
    if (!fd.valid()) {
      last = errnoText("socket", errno);
      continue;
    }
    if (connect(fd.get(), ai->ai_addr, ai->ai_addrlen) == 0) return fd;
    if (errno != EINPROGRESS) {
      last = errnoText("connect " + host + ":" + service, errno);
      continue;
    }
    Wait w = waitFd(fd.get(), POLLOUT, deadline, cancelFd);
    if (w == Wait::kCancelled) return Status::unavailable("probe cancelled");
    if (w == Wait::kTimeout) return Status::timeout("connect " + host + ":" + service + ": timed out");
    int err = 0;
    socklen_t len = sizeof err;
    if (w == Wait::kError || getsockopt(fd.get(), SOL_SOCKET, SO_ERROR, &err, &len) < 0) err = errno;
    if (err == 0) return fd;
    last = errnoText("connect " + host + ":" + service, err);
  }
  return Status::unavailable(last);
}

ProbeResult tcpProbe(const ProbeSpec& spec, int cancelFd) {
  auto fd = connectWithin(spec.host, spec.port, Clock::now() + spec.timeout, cancelFd);
  if (!fd) return {false, fd.status().message()};
  return {true, ""};
}

std::string hostHeader(const std::string& host, int port) {
  bool v6 = host.find(':') != std::string::npos;
  return (v6 ? "[" + host + "]" : host) + ":" + std::to_string(port);
}

ProbeResult httpProbe(const ProbeSpec& spec, int cancelFd) {
  auto deadline = Clock::now() + spec.timeout;
  auto fd = connectWithin(spec.host, spec.port, deadline, cancelFd);
  if (!fd) return {false, "HTTP probe: " + fd.status().message()};

  // Kubernetes' defaults; a probe's own Host / User-Agent / Accept header replaces them.
  std::map<std::string, std::string> defaults = {
      {"host", hostHeader(spec.host, spec.port)}, {"user-agent", "foxden-probe/1.0"}, {"accept", "*/*"}};
  std::string custom;
  for (const auto& h : spec.headers) {
    std::string lower = h.name;
    for (char& c : lower) c = static_cast<char>(tolower(static_cast<unsigned char>(c)));
    defaults.erase(lower);
    custom += h.name + ": " + h.value + "\r\n";
  }
  std::string req = "GET " + spec.path + " HTTP/1.1\r\n";
  for (const auto& [name, value] : defaults) {
    std::string pretty = name == "host" ? "Host" : name == "user-agent" ? "User-Agent" : "Accept";
    req += pretty + ": " + value + "\r\n";
  }
  req += custom + "Connection: close\r\n\r\n";

  size_t sent = 0;
  while (sent < req.size()) {
    ssize_t n = send(fd->get(), req.data() + sent, req.size() - sent, MSG_NOSIGNAL);
    if (n > 0) {
      sent += static_cast<size_t>(n);
      continue;
    }
    if (n < 0 && errno != EAGAIN && errno != EINTR) return {false, errnoText("HTTP probe: send", errno)};
    Wait w = waitFd(fd->get(), POLLOUT, deadline, cancelFd);
    if (w == Wait::kCancelled) return {false, "probe cancelled"};
    if (w != Wait::kReady) return {false, "HTTP probe: timed out sending the request"};
  }

  // Read the status line and headers only (at most kMaxRead): the body does not matter.
  std::string buf;
  while (buf.size() < kMaxRead && buf.find("\r\n\r\n") == std::string::npos) {
    char chunk[1024];
    ssize_t n = recv(fd->get(), chunk, std::min(sizeof chunk, kMaxRead - buf.size()), 0);
    if (n > 0) {
      buf.append(chunk, static_cast<size_t>(n));
      continue;
    }
    if (n == 0) break;
    if (errno != EAGAIN && errno != EINTR) return {false, errnoText("HTTP probe: recv", errno)};
    Wait w = waitFd(fd->get(), POLLIN, deadline, cancelFd);
    if (w == Wait::kCancelled) return {false, "probe cancelled"};
    if (w != Wait::kReady) {
      if (buf.find("\r\n") != std::string::npos) break;  // the status line is all we need
      return {false, "HTTP probe: timed out waiting for the response (" +
                         std::to_string(spec.timeout.count()) + " ms)"};
    }
  }
  // "HTTP/1.1 200 OK"
  int code = 0;
  if (buf.compare(0, 5, "HTTP/") == 0) {
    size_t sp = buf.find(' ');
    if (sp != std::string::npos && sp + 4 <= buf.size()) {
      std::string digits = buf.substr(sp + 1, 3);
      if (std::all_of(digits.begin(), digits.end(), isDigit)) code = std::stoi(digits);
    }
  }
  if (code == 0) return {false, "HTTP probe: malformed response"};
  if (code >= 200 && code < 400) return {true, "HTTP " + std::to_string(code)};
  return {false, "HTTP probe failed with statuscode: " + std::to_string(code)};
}

// ---------------------------------------------------------------------------------------------
// exec
//
// Everything the forked children need is computed here, before fork: between fork and execve a
// child of this multi-threaded process may only make async-signal-safe calls (no malloc, no
// locks, no glibc setuid, which synchronises with threads that do not exist in the child).

enum class ExecStep : int { kSetnsMnt, kChroot, kSetnsUts, kSetnsIpc, kSetnsPid, kFork, kStdio,
                            kBoundingSet, kSetGroups, kSetGid, kSetUid, kCapSet, kNoNewPrivs,
                            kSeccomp, kExecve, kCgroup };
const char* const kStepNames[] = {"setns(mnt)", "chroot", "setns(uts)", "setns(ipc)", "setns(pid)",
                                  "fork", "stdio", "drop bounding capabilities", "setgroups",
                                  "setresgid", "setresuid", "capset", "no_new_privs", "seccomp",
                                  "execve", "join the task's cgroup"};

// What the children write to the control pipe: the inner child's pid, or where they failed.
struct ControlRecord {
  int kind;   // 0: pid of the process that execs (host PID namespace); 1: failure
  int value;  // pid, or ExecStep
  int err;
};

struct ExecPlan {
  bool isolate = false;
  int nsFds[4] = {-1, -1, -1, -1};  // mnt (first: it resets root and cwd), uts, ipc, pid
  int rootFd = -1;                  // the task's root and working directory, opened on the host
  int cwdFd = -1;
  int devNull = -1;
  int outFd = -1;                   // write end: the command's stdout and stderr
  int ctlFd = -1;                   // write end, CLOEXEC: ControlRecords
  char* const* argv = nullptr;
  char* const* envp = nullptr;
  const char* const* candidates = nullptr;
  size_t candidateCount = 0;
  bool switchUser = false;
  uid_t uid = 0;
  gid_t gid = 0;
  const gid_t* groups = nullptr;
  size_t groupCount = 0;
  bool dropCaps = false;
  int lastCap = 40;
  uint64_t capBnd = 0, capEff = 0, capPrm = 0, capInh = 0;
  bool noNewPrivs = false;
  const sock_fprog* seccomp = nullptr;
  // The task's cgroup in every hierarchy (v1 `tasks`, v2 `cgroup.procs`): the probe runs there,
  // under the task's limits, like a Kubernetes exec probe in its container.
  int cgroupFds[16] = {};
  size_t cgroupFdCount = 0;
};

// Opens the cgroup files of `pid`'s cgroups for writing "0" (join) into: parsed from
// /proc/PID/cgroup, v1 hierarchies under /sys/fs/cgroup/<controllers>, v2 at /sys/fs/cgroup
// itself when that is the unified mount.
std::vector<int> openCgroupJoinFds(pid_t pid) {
  std::vector<int> fds;
  std::ifstream f("/proc/" + std::to_string(pid) + "/cgroup");
  std::string line;
  struct statfs fs {};
  bool pureV2 = statfs("/sys/fs/cgroup", &fs) == 0 && fs.f_type == CGROUP2_SUPER_MAGIC;
  while (std::getline(f, line) && fds.size() < 16) {
    size_t a = line.find(':'), b = line.find(':', a + 1);
    if (a == std::string::npos || b == std::string::npos) continue;
    std::string controllers = line.substr(a + 1, b - a - 1), path = line.substr(b + 1);
    std::string file;
    if (controllers.empty()) {
      if (!pureV2) continue;  // the unified hierarchy of a v1 host holds no task limits
      file = "/sys/fs/cgroup" + path + "/cgroup.procs";
    } else {
      if (controllers.rfind("name=", 0) == 0) continue;
      file = "/sys/fs/cgroup/" + controllers + path + "/tasks";
    }
    int fd = open(file.c_str(), O_WRONLY | O_CLOEXEC);
    if (fd >= 0) fds.push_back(fd);
  }
  return fds;
}

[[noreturn]] void childFail(const ExecPlan& p, ExecStep step, int err) {
  ControlRecord r{1, static_cast<int>(step), err};
  [[maybe_unused]] ssize_t n = write(p.ctlFd, &r, sizeof r);
  _exit(127);
}

// The process that becomes the command. Async-signal-safe calls only.
[[noreturn]] void execCommand(const ExecPlan& p) {
  // The agent's signal handlers and mask must not leak into the probe.
  struct sigaction dfl {};
  dfl.sa_handler = SIG_DFL;
  for (int sig = 1; sig < NSIG; ++sig) {
    if (sig != SIGKILL && sig != SIGSTOP) sigaction(sig, &dfl, nullptr);
  }
  sigset_t none;
  sigemptyset(&none);
  sigprocmask(SIG_SETMASK, &none, nullptr);
  setsid();  // its own process group: a timeout kills the command's children too

  // Move the fds we keep above 10 before dup2 so that no target clobbers a source.
  int out = fcntl(p.outFd, F_DUPFD_CLOEXEC, 10);
  int nul = fcntl(p.devNull, F_DUPFD_CLOEXEC, 10);
  int ctl = fcntl(p.ctlFd, F_DUPFD_CLOEXEC, 10);
  if (out < 0 || nul < 0 || ctl < 0) childFail(p, ExecStep::kStdio, errno);
  ExecPlan q = p;
  q.ctlFd = 3;
  if (dup2(nul, 0) < 0 || dup2(out, 1) < 0 || dup2(out, 2) < 0 || dup2(ctl, 3) < 0) {
    childFail(p, ExecStep::kStdio, errno);
  }
  fcntl(3, F_SETFD, FD_CLOEXEC);
  // Nothing of the agent's (sockets, the store, other tasks' pipes) reaches the probe.
  syscall(SYS_close_range, 4U, ~0U, 0);

  if (q.dropCaps) {
    // The task's bounding set first, while we still have CAP_SETPCAP.
    for (int cap = 0; cap <= q.lastCap; ++cap) {
      if ((q.capBnd >> cap & 1) == 0 && prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) < 0 && errno != EINVAL) {
        childFail(q, ExecStep::kBoundingSet, errno);
      }
    }
  }
  if (q.switchUser) {
    if (syscall(SYS_setgroups, q.groupCount, q.groups) < 0) childFail(q, ExecStep::kSetGroups, errno);
    if (syscall(SYS_setresgid, q.gid, q.gid, q.gid) < 0) childFail(q, ExecStep::kSetGid, errno);
    // Away from uid 0 this also clears the permitted and effective capabilities.
    if (syscall(SYS_setresuid, q.uid, q.uid, q.uid) < 0) childFail(q, ExecStep::kSetUid, errno);
  }
  if (q.dropCaps && q.uid == 0) {
    // A root task runs with a reduced capability set: the probe gets the same, no more.
    __user_cap_header_struct hdr{_LINUX_CAPABILITY_VERSION_3, 0};
    __user_cap_data_struct data[2] = {
        {static_cast<uint32_t>(q.capEff), static_cast<uint32_t>(q.capPrm), static_cast<uint32_t>(q.capInh)},
        {static_cast<uint32_t>(q.capEff >> 32), static_cast<uint32_t>(q.capPrm >> 32),
         static_cast<uint32_t>(q.capInh >> 32)}};
    if (syscall(SYS_capset, &hdr, data) < 0) childFail(q, ExecStep::kCapSet, errno);
  }
  if (q.noNewPrivs && prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0) childFail(q, ExecStep::kNoNewPrivs, errno);
  if (q.seccomp != nullptr && syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, 0, q.seccomp) < 0) {
    childFail(q, ExecStep::kSeccomp, errno);
  }
  int lastErr = ENOENT;
  for (size_t i = 0; i < q.candidateCount; ++i) {
    execve(q.candidates[i], q.argv, q.envp);
    lastErr = errno;
    if (errno != ENOENT && errno != ENOTDIR) break;
  }
  childFail(q, ExecStep::kExecve, lastErr);
}

// The first child for a task: enters the task's namespaces and root, forks the command (setns of a
// PID namespace applies to children only) and relays its exit status. Async-signal-safe only.
[[noreturn]] void enterTask(const ExecPlan& p) {
  if (setns(p.nsFds[0], CLONE_NEWNS) < 0) childFail(p, ExecStep::kSetnsMnt, errno);
  // setns(CLONE_NEWNS) puts us at the namespace's root mount, which need not be the task's root
  // (pivot_root stacks it elsewhere): chroot to exactly what the task sees as "/".
  if (fchdir(p.rootFd) < 0 || chroot(".") < 0) childFail(p, ExecStep::kChroot, errno);
  if (p.cwdFd < 0 || fchdir(p.cwdFd) < 0) {
    if (chdir("/") < 0) childFail(p, ExecStep::kChroot, errno);
  }
  if (setns(p.nsFds[1], CLONE_NEWUTS) < 0) childFail(p, ExecStep::kSetnsUts, errno);
  if (setns(p.nsFds[2], CLONE_NEWIPC) < 0) childFail(p, ExecStep::kSetnsIpc, errno);
  if (setns(p.nsFds[3], CLONE_NEWPID) < 0) childFail(p, ExecStep::kSetnsPid, errno);
  // _Fork, not fork: no atfork handlers (they take locks) in this copy of a threaded process.
  pid_t child = _Fork();
  if (child < 0) childFail(p, ExecStep::kFork, errno);
  if (child == 0) {
    // If we (its parent, outside its PID namespace) die, so does the command. getppid() is 0
    // while that parent lives (it is in another namespace); anything else means it is gone.
    prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0);
    if (getppid() != 0) _exit(127);
    execCommand(p);
  }
  ControlRecord r{0, child, 0};
  [[maybe_unused]] ssize_t n = write(p.ctlFd, &r, sizeof r);
  int st = 0;
  while (waitpid(child, &st, 0) < 0) {
    if (errno != EINTR) _exit(127);
  }
  _exit(WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st));
}

std::string slurp(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// The task process: the init's child (the init is the task's PID 1 and forks exactly one).
pid_t findTaskProcess(pid_t init) {
  std::string base = "/proc/" + std::to_string(init);
  std::istringstream children(slurp(base + "/task/" + std::to_string(init) + "/children"));
  pid_t child = 0;
  if (children >> child) return child;
  // Without CONFIG_PROC_CHILDREN: scan for a process whose parent is the init.
  std::error_code ec;
  for (const auto& e : std::filesystem::directory_iterator("/proc", ec)) {
    std::string name = e.path().filename().string();
    if (name.empty() || !std::all_of(name.begin(), name.end(), isDigit)) continue;
    std::string stat = slurp("/proc/" + name + "/stat");
    size_t close = stat.rfind(')');
    if (close == std::string::npos) continue;
    std::istringstream rest(stat.substr(close + 2));
    std::string state;
    pid_t ppid = 0;
    if (rest >> state >> ppid && ppid == init) return static_cast<pid_t>(std::stoi(name));
  }
  return 0;
}

struct Credentials {
  uid_t uid = 0;
  gid_t gid = 0;
  std::vector<gid_t> groups;
  uint64_t capBnd = ~0ULL, capEff = ~0ULL, capPrm = ~0ULL, capInh = 0;
  bool noNewPrivs = false;
  bool seccomp = false;
};

StatusOr<Credentials> readCredentials(pid_t pid) {
  std::istringstream in(slurp("/proc/" + std::to_string(pid) + "/status"));
  Credentials c;
  bool haveUid = false, haveGid = false;
  std::string line;
  while (std::getline(in, line)) {
    size_t colon = line.find(':');
    if (colon == std::string::npos) continue;
    std::string key = line.substr(0, colon);
    std::istringstream v(line.substr(colon + 1));
    auto hex = [&](uint64_t& out) {
      std::string s;
      if (v >> s) out = std::stoull(s, nullptr, 16);
    };
    if (key == "Uid") {
      haveUid = static_cast<bool>(v >> c.uid);
    } else if (key == "Gid") {
      haveGid = static_cast<bool>(v >> c.gid);
    } else if (key == "Groups") {
      gid_t g;
      while (v >> g) c.groups.push_back(g);
    } else if (key == "CapBnd") {
      hex(c.capBnd);
    } else if (key == "CapEff") {
      hex(c.capEff);
    } else if (key == "CapPrm") {
      hex(c.capPrm);
    } else if (key == "CapInh") {
      hex(c.capInh);
    } else if (key == "NoNewPrivs") {
      int n = 0;
      c.noNewPrivs = (v >> n) && n != 0;
    } else if (key == "Seccomp") {
      int n = 0;
      c.seccomp = (v >> n) && n == 2;
    }
  }
  if (!haveUid || !haveGid) return Status::notFound("task process " + std::to_string(pid) + " is gone");
  return c;
}

// The task's environment (NUL-separated), so that the probe sees the task's PATH and variables.
std::vector<std::string> readEnviron(pid_t pid) {
  std::string raw = slurp("/proc/" + std::to_string(pid) + "/environ");
  std::vector<std::string> env;
  size_t start = 0;
  while (start < raw.size()) {
    size_t end = raw.find('\0', start);
    if (end == std::string::npos) end = raw.size();
    if (end > start) env.push_back(raw.substr(start, end - start));
    start = end + 1;
  }
  return env;
}

// The default seccomp program, built once (libseccomp allocates: never in a forked child).
const std::vector<sock_filter>* seccompFilter() {
  static const std::optional<std::vector<sock_filter>> filter = []() -> std::optional<std::vector<sock_filter>> {
    auto bytes = buildSeccompProgram();
    if (!bytes) return std::nullopt;
    std::vector<sock_filter> f(bytes->size() / sizeof(sock_filter));
    std::memcpy(f.data(), bytes->data(), f.size() * sizeof(sock_filter));
    return f;
  }();
  return filter ? &*filter : nullptr;
}

int lastCap() {
  std::istringstream in(slurp("/proc/sys/kernel/cap_last_cap"));
  int n = 40;
  in >> n;
  return n;
}

void killAndReap(pid_t pid, pid_t group) {
  if (group > 0) kill(-group, SIGKILL);
  if (group > 0) kill(group, SIGKILL);
  kill(pid, SIGKILL);
  while (waitpid(pid, nullptr, 0) < 0 && errno == EINTR) {
  }
}

ProbeResult execProbe(const ProbeSpec& spec, pid_t initPid, int cancelFd) {
  auto deadline = Clock::now() + spec.timeout;
  ExecPlan plan;
  std::vector<Fd> owned;
  auto keep = [&](int fd) {
    owned.emplace_back(fd);
    return fd;
  };

  std::vector<std::string> env;
  Credentials cred;
  sock_fprog fprog{};
  if (initPid > 0) {
    pid_t task = findTaskProcess(initPid);
    // Not the init as a fallback: it runs as root with every capability, which would give the
    // probe more power in the task's namespaces than the task itself has.
    if (task <= 0) return {false, "exec probe: no task process under init " + std::to_string(initPid)};
    auto c = readCredentials(task);
    if (!c) return {false, "exec probe: " + c.status().message()};
    cred = *c;
    env = readEnviron(task);
    for (int fd : openCgroupJoinFds(task)) plan.cgroupFds[plan.cgroupFdCount++] = keep(fd);
    std::string init = "/proc/" + std::to_string(initPid);
    const char* names[] = {"mnt", "uts", "ipc", "pid"};
    for (int i = 0; i < 4; ++i) {
      int fd = open((init + "/ns/" + names[i]).c_str(), O_RDONLY | O_CLOEXEC);
      if (fd < 0) return {false, errnoText("exec probe: open " + init + "/ns/" + names[i], errno)};
      plan.nsFds[i] = keep(fd);
    }
    std::string proc = "/proc/" + std::to_string(task);
    int root = open((proc + "/root").c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC);
    if (root < 0) return {false, errnoText("exec probe: open " + proc + "/root", errno)};
    plan.rootFd = keep(root);
    int cwd = open((proc + "/cwd").c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC);
    if (cwd >= 0) plan.cwdFd = keep(cwd);
    plan.isolate = true;
    plan.switchUser = true;
    plan.uid = cred.uid;
    plan.gid = cred.gid;
    plan.groups = cred.groups.data();
    plan.groupCount = cred.groups.size();
    plan.dropCaps = true;
    plan.lastCap = lastCap();
    plan.capBnd = cred.capBnd;
    plan.capEff = cred.capEff;
    plan.capPrm = cred.capPrm;
    plan.capInh = cred.capInh;
    plan.noNewPrivs = cred.noNewPrivs;
    if (cred.seccomp) {
      const auto* f = seccompFilter();
      if (f == nullptr) return {false, "exec probe: cannot build the seccomp filter the task runs under"};
      fprog.len = static_cast<unsigned short>(f->size());
      fprog.filter = const_cast<sock_filter*>(f->data());
      plan.seccomp = &fprog;
    }
  }
  std::string path = kDefaultPath;
  for (const auto& e : env) {
    if (e.rfind("PATH=", 0) == 0) path = e.substr(5);
  }
  if (env.empty()) env.push_back("PATH=" + path);

  // argv[0] without a slash: every PATH entry in order (resolved inside the task's root).
  std::vector<std::string> candidates;
  if (spec.command[0].find('/') != std::string::npos) {
    candidates.push_back(spec.command[0]);
  } else {
    std::istringstream dirs(path);
    std::string dir;
    while (std::getline(dirs, dir, ':')) candidates.push_back((dir.empty() ? "." : dir) + "/" + spec.command[0]);
  }
  auto pointers = [](std::vector<std::string>& v) {
    std::vector<char*> p;
    p.reserve(v.size() + 1);
    for (auto& s : v) p.push_back(s.data());
    p.push_back(nullptr);
    return p;
  };
  std::vector<std::string> argvStore = spec.command;
  auto argv = pointers(argvStore);
  auto envp = pointers(env);
  auto cands = pointers(candidates);
  plan.argv = argv.data();
  plan.envp = envp.data();
  plan.candidates = cands.data();
  plan.candidateCount = candidates.size();

  int devNull = open("/dev/null", O_RDWR | O_CLOEXEC);
  if (devNull < 0) return {false, errnoText("exec probe: open /dev/null", errno)};
  plan.devNull = keep(devNull);
  int out[2], ctl[2];
  if (pipe2(out, O_CLOEXEC) < 0) return {false, errnoText("exec probe: pipe", errno)};
  Fd outRead(out[0]), outWrite(out[1]);
  if (pipe2(ctl, O_CLOEXEC) < 0) return {false, errnoText("exec probe: pipe", errno)};
  Fd ctlRead(ctl[0]), ctlWrite(ctl[1]);
  fcntl(outRead.get(), F_SETFL, O_NONBLOCK);
  fcntl(ctlRead.get(), F_SETFL, O_NONBLOCK);
  plan.outFd = outWrite.get();
  plan.ctlFd = ctlWrite.get();

  // _Fork, not fork: fork()'s child walks every thread's descriptor, which lives in thread stacks
  // the agent marks MADV_DONTFORK (see excludeStackFromForks), and runs atfork handlers.
  pid_t child = _Fork();
  if (child < 0) return {false, errnoText("exec probe: fork", errno)};
  if (child == 0) {
    for (size_t i = 0; i < plan.cgroupFdCount; ++i) {
      if (write(plan.cgroupFds[i], "0", 1) != 1) childFail(plan, ExecStep::kCgroup, errno);
    }
    if (plan.isolate) enterTask(plan);
    execCommand(plan);
  }
  outWrite.reset();
  ctlWrite.reset();
  owned.clear();

  // The child's exit shows on a pidfd; its output may stay open in its own children.
  Fd pidfd(static_cast<int>(syscall(SYS_pidfd_open, child, 0)));
  std::string output;
  pid_t group = plan.isolate ? 0 : child;  // host mode: the child leads its own group
  std::optional<ControlRecord> failure;
  auto readControl = [&] {
    ControlRecord r;
    while (read(ctlRead.get(), &r, sizeof r) == static_cast<ssize_t>(sizeof r)) {
      if (r.kind == 0) group = r.value;
      else failure = r;
    }
  };
  auto drain = [&] {
    char buf[1024];
    ssize_t n;
    while ((n = read(outRead.get(), buf, sizeof buf)) > 0) {
      if (output.size() < kMaxRead) output.append(buf, std::min(static_cast<size_t>(n), kMaxRead - output.size()));
    }
    return n == 0;  // EOF
  };

  bool outOpen = true;
  int status = 0;
  bool exited = false;
  std::string aborted;
  while (!exited) {
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now()).count();
    if (left <= 0) {
      aborted = "timed out after " + std::to_string(spec.timeout.count()) + " ms";
      break;
    }
    pollfd fds[3] = {{pidfd.get(), POLLIN, 0}, {outOpen ? outRead.get() : -1, POLLIN, 0}, {cancelFd, POLLIN, 0}};
    // Without a pidfd (old kernel), look at the child every 10 ms.
    int wait = pidfd.valid() ? static_cast<int>(left) : static_cast<int>(std::min<int64_t>(left, 10));
    int n = poll(fds, 3, wait);
    if (n < 0 && errno != EINTR) {
      aborted = errnoText("poll", errno);
      break;
    }
    if (fds[2].revents != 0) {
      aborted = "probe cancelled";
      break;
    }
    if (fds[1].revents != 0) outOpen = !drain();
    if (!pidfd.valid() || fds[0].revents != 0) {
      pid_t w = waitpid(child, &status, WNOHANG);
      exited = w == child;
    }
  }
  readControl();
  if (!exited) {
    killAndReap(child, group);
    drain();
    return {false, "exec probe " + aborted + (output.empty() ? "" : ": " + output)};
  }
  drain();
  readControl();
  if (failure) {
    auto step = static_cast<size_t>(failure->value);
    std::string what = step < std::size(kStepNames) ? kStepNames[step] : "?";
    if (step == static_cast<size_t>(ExecStep::kExecve)) what += " " + spec.command[0];
    return {false, "exec probe: " + errnoText(what, failure->err)};
  }
  int code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  if (code == 0) return {true, output};
  return {false, "exec probe exited with status " + std::to_string(code) + (output.empty() ? "" : ": " + output)};
}

}  // namespace

StatusOr<ProbeSpec> parseProbe(const JsonValue& probe, const std::map<std::string, int>& ports) {
  if (!probe.IsObject()) return Status::invalid("a probe must be an object");
  ProbeSpec spec;
  const char* handlers[] = {"httpGet", "tcpSocket", "exec", "grpc"};
  std::vector<std::string> present;
  for (const char* h : handlers) {
    auto it = probe.FindMember(h);
    if (it != probe.MemberEnd() && !it->value.IsNull()) present.push_back(h);
  }
  if (present.empty()) return Status::invalid("a probe needs one handler: httpGet, tcpSocket or exec");
  if (present.size() > 1) {
    return Status::invalid("a probe may have only one handler (got " + present[0] + " and " + present[1] + ")");
  }
  const JsonValue& h = probe[present[0].c_str()];
  Status st;
  if (present[0] == "httpGet") st = parseHttpGet(h, ports, spec);
  else if (present[0] == "tcpSocket") st = parseTcpSocket(h, ports, spec);
  else if (present[0] == "exec") st = parseExec(h, spec);
  else st = Status::invalid("grpc probes are not supported (use httpGet, tcpSocket or exec)");
  if (!st) return st;

  auto delay = intField(probe, "initialDelaySeconds", 0, 0);
  if (!delay) return delay.status();
  auto period = intField(probe, "periodSeconds", 10, 1);
  if (!period) return period.status();
  auto timeout = intField(probe, "timeoutSeconds", 1, 1);
  if (!timeout) return timeout.status();
  auto success = intField(probe, "successThreshold", 1, 1);
  if (!success) return success.status();
  auto failure = intField(probe, "failureThreshold", 3, 1);
  if (!failure) return failure.status();
  spec.initialDelay = std::chrono::seconds(*delay);
  spec.period = std::chrono::seconds(*period);
  spec.timeout = std::chrono::seconds(*timeout);
  spec.successThreshold = *success;
  spec.failureThreshold = *failure;
  return spec;
}

ProbeResult runProbe(const ProbeSpec& spec, pid_t taskInitPid, int cancelFd) {
  switch (spec.kind) {
    case ProbeKind::kHttpGet:
      return httpProbe(spec, cancelFd);
    case ProbeKind::kTcpSocket:
      return tcpProbe(spec, cancelFd);
    case ProbeKind::kExec:
      if (spec.command.empty()) return {false, "exec probe: no command"};
      return execProbe(spec, taskInitPid, cancelFd);
  }
  return {false, "unknown probe kind"};
}

// ---------------------------------------------------------------------------------------------
// ProbeRunner

ProbeRunner::ProbeRunner() {
  int p[2];
  if (pipe2(p, O_CLOEXEC | O_NONBLOCK) == 0) {
    cancelRead_ = p[0];
    cancelWrite_ = p[1];
  }
}

ProbeRunner::~ProbeRunner() {
  stop();
  if (cancelRead_ >= 0) close(cancelRead_);
  if (cancelWrite_ >= 0) close(cancelWrite_);
}

void ProbeRunner::start(ProbeSpec spec, pid_t taskInitPid, Callback callback, bool initiallyHealthy) {
  stop();
  {
    std::lock_guard<std::mutex> lock(mu_);
    stopping_ = false;
    last_ = {};
  }
  healthy_ = initiallyHealthy;
  thread_ = std::thread([this, spec = std::move(spec), taskInitPid, cb = std::move(callback)] {
    run(spec, taskInitPid, cb);
  });
}

void ProbeRunner::stop() {
  if (!thread_.joinable()) return;
  {
    std::lock_guard<std::mutex> lock(mu_);
    stopping_ = true;
  }
  cv_.notify_all();
  if (cancelWrite_ >= 0) {
    char b = 1;
    [[maybe_unused]] ssize_t n = write(cancelWrite_, &b, 1);
  }
  thread_.join();
  // Empty the self-pipe for the next start().
  char buf[64];
  while (cancelRead_ >= 0 && read(cancelRead_, buf, sizeof buf) > 0) {
  }
}

ProbeResult ProbeRunner::lastResult() const {
  std::lock_guard<std::mutex> lock(mu_);
  return last_;
}

bool ProbeRunner::waitUntil(Clock::time_point deadline) {
  std::unique_lock<std::mutex> lock(mu_);
  return !cv_.wait_until(lock, deadline, [this] { return stopping_; });
}

void ProbeRunner::run(const ProbeSpec& spec, pid_t pid, const Callback& callback) {
  // The kubelet's prober worker: count consecutive equal results; the reported state flips only
  // when the run reaches the threshold for that result.
  bool reported = healthy_.load();
  std::optional<bool> previous;
  int runLength = 0;
  auto next = Clock::now() + spec.initialDelay;
  while (waitUntil(next)) {
    auto started = Clock::now();
    ProbeResult r = runProbe(spec, pid, cancelRead_);
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (stopping_) return;  // a cancelled probe is no result
      last_ = r;
    }
    if (previous == r.success) {
      ++runLength;
    } else {
      previous = r.success;
      runLength = 1;
    }
    int threshold = r.success ? spec.successThreshold : spec.failureThreshold;
    if (runLength >= threshold && r.success != reported) {
      reported = r.success;
      healthy_ = reported;
      if (callback) callback(reported);
    }
    // Start to start, like the kubelet's ticker; a probe longer than the period runs again at once.
    next = std::max(started + spec.period, Clock::now());
  }
}

}  // namespace nodeagent
