#include "nodeagent/driver/zygote.h"

#include <fcntl.h>
#include <linux/sched.h>
#include <sched.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstring>
#include <deque>
#include <mutex>
#include <string>
#include <type_traits>
#include <vector>

namespace nodeagent {
namespace {

constexpr size_t kInitStackSize = size_t{256} * 1024;
constexpr size_t kMaxRequest = size_t{192} * 1024;  // below the default SO_SNDBUF of a socketpair
constexpr size_t kMaxFds = 64;
constexpr uint32_t kWireVersion = 2;

// cgroup v2: until the kernel says it has no clone3 (or no CLONE_INTO_CGROUP).
std::atomic<bool> gClone3IntoCgroup{true};

// ---- the InitSpec on the wire ------------------------------------------------------------------
// Plain values are copied as bytes, strings as length + bytes (length 0: nullptr), fds as an index
// into the message's SCM_RIGHTS array (-1: none). encode() and decode() walk the fields in the same
// order; a field added to InitSpec must be added to both.

struct Writer {
  std::string bytes;
  std::vector<int> fds;
  template <class T>
  void put(const T& v) {
    static_assert(std::is_trivially_copyable_v<T>);
    bytes.append(reinterpret_cast<const char*>(&v), sizeof v);
  }
  void str(const char* s) {
    uint32_t n = s == nullptr ? 0 : static_cast<uint32_t>(std::strlen(s) + 1);
    put(n);
    if (n != 0) bytes.append(s, n);
  }
  void fd(int f) {
    int32_t idx = -1;
    if (f >= 0) {
      idx = static_cast<int32_t>(fds.size());
      fds.push_back(f);
    }
    put(idx);
  }
};

struct Reader {
  const char* p;
  const char* end;
  const std::vector<int>& fds;
  std::deque<std::string>& strings;  // owns what str() returns (a deque never moves its elements)
  bool ok = true;
  template <class T>
  T get() {
    T v{};
    if (static_cast<size_t>(end - p) < sizeof v) {
      ok = false;
      return v;
    }
    std::memcpy(&v, p, sizeof v);
    p += sizeof v;
    return v;
  }
  const char* str() {
    auto n = get<uint32_t>();
    if (n == 0) return nullptr;
    if (static_cast<size_t>(end - p) < n || p[n - 1] != '\0') {
      ok = false;
      return nullptr;
    }
    strings.emplace_back(p, n - 1);
    p += n;
    return strings.back().c_str();
  }
  int fd() {
    auto idx = get<int32_t>();
    if (idx < 0) return -1;
    if (static_cast<size_t>(idx) >= fds.size()) {
      ok = false;
      return -1;
    }
    return fds[static_cast<size_t>(idx)];
  }
  size_t count(size_t max) {
    auto n = get<uint32_t>();
    if (n > max) ok = false;
    return ok ? n : 0;
  }
};

void encode(Writer& w, const init::InitSpec& s, uint64_t nsFlags, int cgroupFd, int traceFd) {
  w.put(kWireVersion);
  w.put(nsFlags);
  w.fd(cgroupFd);
  w.fd(traceFd);
  w.put(s.isolate);
  // syncWriteFd / errorReadFd are the agent's ends: never sent, so the init never holds them.
  w.fd(s.syncFd);
  w.fd(s.errorFd);
  w.fd(s.exitDirFd);
  w.fd(s.stdoutFd);
  w.fd(s.stderrFd);
  w.fd(s.devNullFd);
  w.put(s.awaitGo);
  w.put(static_cast<uint32_t>(s.cgroupJoinPathCount));
  for (size_t i = 0; i < s.cgroupJoinPathCount; ++i) w.str(s.cgroupJoinPaths[i]);
  w.fd(s.logDirFd);
  w.put(s.logMaxFiles);
  w.put(s.logMaxFileSize);
  w.str(s.rootDir);
  w.put(static_cast<uint32_t>(s.opCount));
  for (size_t i = 0; i < s.opCount; ++i) {
    const init::MountOp& o = s.ops[i];
    w.put(o.kind);
    w.str(o.src);
    w.str(o.dst);
    w.str(o.fstype);
    w.put(o.flags);
    w.str(o.data);
    w.put(o.mode);
  }
  w.str(s.hostname);
  w.put(static_cast<uint32_t>(s.execCandidateCount));
  for (size_t i = 0; i < s.execCandidateCount; ++i) w.str(s.execCandidates[i]);
  for (char* const* list : {s.argv, s.envp}) {
    uint32_t n = 0;
    while (list != nullptr && list[n] != nullptr) ++n;
    w.put(n);
    for (uint32_t i = 0; i < n; ++i) w.str(list[i]);
  }
  w.str(s.workingDir);
  w.put(s.switchUser);
  w.put(s.uid);
  w.put(s.gid);
  w.put(static_cast<uint32_t>(s.groupCount));
  for (size_t i = 0; i < s.groupCount; ++i) w.put(s.groups[i]);
  w.put(s.dropCapabilities);
  // capState is E=P=I=keepCaps (see exec_driver.cc): the zygote rebuilds it from keepCaps.
  w.put(static_cast<uint32_t>(s.keepCapCount));
  for (size_t i = 0; i < s.keepCapCount; ++i) w.put(s.keepCaps[i]);
  w.put(s.lastCap);
  w.put(s.noNewPrivs);
  uint32_t filterLen = s.seccomp == nullptr ? 0 : s.seccomp->len;
  w.put(filterLen);
  for (uint32_t i = 0; i < filterLen; ++i) w.put(s.seccomp->filter[i]);
}

// An InitSpec decoded in the zygote, with the storage its pointers point into.
struct Decoded {
  init::InitSpec spec;
  uint64_t nsFlags = 0;
  int cgroupFd = -1;
  int traceFd = -1;
  std::deque<std::string> strings;
  std::vector<const char*> joinPaths;
  std::vector<init::MountOp> ops;
  std::vector<const char*> candidates;
  std::vector<char*> argv, envp;
  std::vector<gid_t> groups;
  std::vector<cap_value_t> keepCaps;
  std::vector<sock_filter> filter;
  sock_fprog fprog{};
  cap_t caps = nullptr;
  Decoded() = default;
  Decoded(const Decoded&) = delete;
  Decoded& operator=(const Decoded&) = delete;
  ~Decoded() {
    if (caps != nullptr) cap_free(caps);
  }
};

bool decode(Reader& r, Decoded& d) {
  init::InitSpec& s = d.spec;
  if (r.get<uint32_t>() != kWireVersion) return false;
  d.nsFlags = r.get<uint64_t>();
  d.cgroupFd = r.fd();
  d.traceFd = r.fd();
  s.isolate = r.get<bool>();
  s.syncFd = r.fd();
  s.errorFd = r.fd();
  s.exitDirFd = r.fd();
  s.stdoutFd = r.fd();
  s.stderrFd = r.fd();
  s.devNullFd = r.fd();
  s.awaitGo = r.get<bool>();
  d.joinPaths.resize(r.count(kMaxFds));
  for (const char*& p : d.joinPaths) p = r.str();
  s.cgroupJoinPaths = d.joinPaths.data();
  s.cgroupJoinPathCount = d.joinPaths.size();
  s.logDirFd = r.fd();
  s.logMaxFiles = r.get<uint32_t>();
  s.logMaxFileSize = r.get<uint64_t>();
  s.rootDir = r.str();
  d.ops.resize(r.count(kMaxRequest));
  for (init::MountOp& o : d.ops) {
    o.kind = r.get<init::MountOpKind>();
    o.src = r.str();
    o.dst = r.str();
    o.fstype = r.str();
    o.flags = r.get<unsigned long>();
    o.data = r.str();
    o.mode = r.get<unsigned>();
  }
  s.ops = d.ops.data();
  s.opCount = d.ops.size();
  s.hostname = r.str();
  d.candidates.resize(r.count(kMaxRequest));
  for (const char*& c : d.candidates) c = r.str();
  s.execCandidates = d.candidates.data();
  s.execCandidateCount = d.candidates.size();
  for (auto* list : {&d.argv, &d.envp}) {
    list->resize(r.count(kMaxRequest));
    for (char*& a : *list) a = const_cast<char*>(r.str());
    list->push_back(nullptr);
  }
  s.argv = d.argv.data();
  s.envp = d.envp.data();
  s.workingDir = r.str();
  s.switchUser = r.get<bool>();
  s.uid = r.get<uid_t>();
  s.gid = r.get<gid_t>();
  d.groups.resize(r.count(kMaxRequest));
  for (gid_t& g : d.groups) g = r.get<gid_t>();
  s.groups = d.groups.data();
  s.groupCount = d.groups.size();
  s.dropCapabilities = r.get<bool>();
  d.keepCaps.resize(r.count(1024));
  for (cap_value_t& c : d.keepCaps) c = r.get<cap_value_t>();
  s.keepCaps = d.keepCaps.data();
  s.keepCapCount = d.keepCaps.size();
  s.lastCap = r.get<int>();
  s.noNewPrivs = r.get<bool>();
  d.filter.resize(r.count(BPF_MAXINSNS));
  for (sock_filter& f : d.filter) f = r.get<sock_filter>();
  if (!d.filter.empty()) {
    d.fprog.len = static_cast<unsigned short>(d.filter.size());
    d.fprog.filter = d.filter.data();
    s.seccomp = &d.fprog;
  }
  if (!r.ok || r.p != r.end) return false;
  for (const auto* list : {&d.candidates, &d.joinPaths}) {
    for (const char* c : *list) {
      if (c == nullptr) return false;
    }
  }
  d.caps = cap_init();
  if (d.caps == nullptr) return false;
  if (!d.keepCaps.empty()) {
    for (cap_flag_t flag : {CAP_EFFECTIVE, CAP_PERMITTED, CAP_INHERITABLE}) {
      cap_set_flag(d.caps, flag, static_cast<int>(d.keepCaps.size()), d.keepCaps.data(), CAP_SET);
    }
  }
  s.capState = d.caps;
  return true;
}

struct Reply {
  int32_t pid;
  int32_t err;
  int32_t inCgroup;
  int32_t awaitsGo;
};

// One request: receive, decode, clone, close what was received, reply. False: the agent is gone.
bool serveOne(int sock, char* buf) {
  iovec iov{buf, kMaxRequest};
  alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int) * kMaxFds)];
  msghdr msg{};
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  msg.msg_control = control;
  msg.msg_controllen = sizeof control;
  ssize_t n;
  do n = recvmsg(sock, &msg, MSG_CMSG_CLOEXEC); while (n < 0 && errno == EINTR);
  if (n <= 0) return false;
  timespec tRecv{};
  clock_gettime(CLOCK_MONOTONIC, &tRecv);
  std::vector<int> fds;
  for (cmsghdr* c = CMSG_FIRSTHDR(&msg); c != nullptr; c = CMSG_NXTHDR(&msg, c)) {
    if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS) continue;
    size_t count = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
    const auto* data = reinterpret_cast<const unsigned char*>(CMSG_DATA(c));
    for (size_t i = 0; i < count; ++i) {
      int fd;
      std::memcpy(&fd, data + i * sizeof(int), sizeof fd);
      fds.push_back(fd);
    }
  }
  Reply reply{-1, EPROTO, 0, 0};
  if ((msg.msg_flags & (MSG_TRUNC | MSG_CTRUNC)) == 0) {
    Decoded d;
    Reader r{buf, buf + n, fds, d.strings};
    if (decode(r, d)) {
      void* trace = MAP_FAILED;
      if (d.traceFd >= 0) {
        trace = mmap(nullptr, 4096, PROT_READ | PROT_WRITE, MAP_SHARED, d.traceFd, 0);
        if (trace != MAP_FAILED) d.spec.traceNs = static_cast<uint64_t*>(trace);
      }
      auto nsOf = [](const timespec& t) { return static_cast<uint64_t>(t.tv_sec) * 1000000000ULL + static_cast<uint64_t>(t.tv_nsec); };
      timespec tDecoded{};
      clock_gettime(CLOCK_MONOTONIC, &tDecoded);
      SpawnResult res = spawnInit(d.spec, d.nsFlags, d.cgroupFd, /*cloneParent=*/true);
      timespec tCloned{};
      clock_gettime(CLOCK_MONOTONIC, &tCloned);
      if (d.spec.traceNs != nullptr) {
        d.spec.traceNs[init::kTraceZygoteReceived] = nsOf(tRecv);
        d.spec.traceNs[init::kTraceZygoteDecoded] = nsOf(tDecoded);
        d.spec.traceNs[init::kTraceZygoteCloned] = nsOf(tCloned);
      }
      reply = {res.pid, res.err, res.inCgroup ? 1 : 0, res.awaitsGo ? 1 : 0};
      if (trace != MAP_FAILED) munmap(trace, 4096);
    }
  }
  // The init has its own copies; ours would keep its pipes open (no EOF for the agent).
  for (int fd : fds) close(fd);
  ssize_t w;
  do w = send(sock, &reply, sizeof reply, MSG_NOSIGNAL); while (w < 0 && errno == EINTR);
  return w == static_cast<ssize_t>(sizeof reply);
}

}  // namespace

void runZygote(int sock, pid_t agent) {
  // Die with the agent: the inits we cloned do not inherit this. (Set again after an exec: it
  // survives one, but this is also the entry point of a fork that did not exec.)
  prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0);
  if (getppid() != agent) _exit(0);
  prctl(PR_SET_NAME, "foxden-zygote", 0, 0, 0);
  // Only the socket: every other fd of the agent at this point is closed (0-2 stay, for a crash
  // message; the init replaces them anyway).
  if (sock > 3) syscall(SYS_close_range, 3, sock - 1, 0);
  syscall(SYS_close_range, sock + 1, ~0U, 0);
  sigset_t none;
  sigemptyset(&none);
  sigprocmask(SIG_SETMASK, &none, nullptr);
  static char buf[kMaxRequest];  // touched only as far as the largest request
  while (serveOne(sock, buf)) {
  }
  _exit(0);
}

SpawnResult spawnInit(const init::InitSpec& spec, uint64_t nsFlags, int cgroupFd, bool cloneParent) {
  const uint64_t parentFlag = cloneParent ? CLONE_PARENT : 0;
  // The child runs on a copy of this address space, so a local copy of the spec is valid there.
  init::InitSpec copy = spec;
  init::InitSpec* arg = &copy;
  if (cgroupFd >= 0 && gClone3IntoCgroup) {
    copy.awaitGo = false;  // created inside its cgroup, with its limits
    // Without CLONE_VM and without a stack, clone3 returns twice like fork(): the child runs the
    // init on its copy of this stack.
    clone_args args{};
    args.flags = nsFlags | parentFlag | CLONE_INTO_CGROUP;
    args.exit_signal = SIGCHLD;
    args.cgroup = static_cast<uint64_t>(cgroupFd);
    long rc = syscall(SYS_clone3, &args, sizeof args);
    if (rc == 0) _exit(init::taskInitMain(arg));
    if (rc > 0) return {static_cast<pid_t>(rc), 0, true, false};
    int err = errno;
    if (err != ENOSYS && err != E2BIG && err != EINVAL) return {-1, err, false};
    gClone3IntoCgroup = false;  // an older kernel: clone() and an attach from now on
  }
  copy.awaitGo = spec.awaitGo || cgroupFd >= 0;  // v2 here: the caller attaches it, then says go
  void* stack = mmap(nullptr, kInitStackSize, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_STACK, -1, 0);
  if (stack == MAP_FAILED) return {-1, errno, false};
  pid_t pid = clone(init::taskInitMain, static_cast<char*>(stack) + kInitStackSize,
                    static_cast<int>(nsFlags | parentFlag) | SIGCHLD, arg);
  int err = errno;
  munmap(stack, kInitStackSize);  // the child has its own copy (no CLONE_VM)
  if (pid < 0) return {-1, err, false, false};
  return {pid, 0, cgroupFd < 0, copy.awaitGo};  // v1: the init joins by itself; v2 here: the caller attaches it
}

std::string defaultZygoteBinary() {
  char self[4096];
  ssize_t n = readlink("/proc/self/exe", self, sizeof self - 1);
  if (n <= 0) return "";
  std::string path(self, static_cast<size_t>(n));
  path = path.substr(0, path.rfind('/') + 1) + "foxden-zygote";
  return access(path.c_str(), X_OK) == 0 ? path : "";
}

int startZygote(pid_t* zygotePid, const std::string& binary) {
  int sv[2];
  if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) < 0) return -1;
  pid_t agent = getpid();
  // What the child needs, made before the fork (it only calls async-signal-safe functions).
  const std::string agentArg = std::to_string(agent);
  const char* const argv[] = {"foxden-zygote", "3", agentArg.c_str(), nullptr};
  const char* const envp[] = {nullptr};
  pid_t pid = fork();
  if (pid < 0) {
    close(sv[0]);
    close(sv[1]);
    return -1;
  }
  if (pid == 0) {
    close(sv[0]);
    if (!binary.empty()) {
      prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0);  // kept across the exec
      // fd 3 without CLOEXEC; every other fd of the agent is CLOEXEC or closed by runZygote.
      if (sv[1] == 3 ? fcntl(3, F_SETFD, 0) == 0 : dup2(sv[1], 3) == 3) {
        execve(binary.c_str(), const_cast<char* const*>(argv), const_cast<char* const*>(envp));
      }
      if (sv[1] != 3) close(3);
    }
    runZygote(sv[1], agent);  // no binary, or it would not exec: serve from this copy
  }
  close(sv[1]);
  if (zygotePid != nullptr) *zygotePid = pid;
  return sv[0];
}

std::optional<SpawnResult> zygoteSpawn(int zygoteFd, const init::InitSpec& spec, uint64_t nsFlags, int cgroupFd,
                                       int traceFd) {
  Writer w;
  encode(w, spec, nsFlags, cgroupFd, traceFd);
  if (w.bytes.size() > kMaxRequest || w.fds.size() > kMaxFds) return std::nullopt;
  iovec iov{w.bytes.data(), w.bytes.size()};
  alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int) * kMaxFds)] = {};
  msghdr msg{};
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  msg.msg_control = control;
  msg.msg_controllen = CMSG_SPACE(sizeof(int) * w.fds.size());
  cmsghdr* c = CMSG_FIRSTHDR(&msg);
  c->cmsg_level = SOL_SOCKET;
  c->cmsg_type = SCM_RIGHTS;
  c->cmsg_len = CMSG_LEN(sizeof(int) * w.fds.size());
  std::memcpy(CMSG_DATA(c), w.fds.data(), sizeof(int) * w.fds.size());

  static std::mutex mu;  // one request in flight: replies carry no request id
  static bool dead = false;
  std::lock_guard lock(mu);
  if (dead) return std::nullopt;
  ssize_t n;
  do n = sendmsg(zygoteFd, &msg, MSG_NOSIGNAL); while (n < 0 && errno == EINTR);
  if (n < 0 && errno == EMSGSIZE) return std::nullopt;  // this spec only: clone from the agent
  Reply reply{};
  if (n == static_cast<ssize_t>(w.bytes.size())) {
    do n = recv(zygoteFd, &reply, sizeof reply, 0); while (n < 0 && errno == EINTR);
  }
  if (n != static_cast<ssize_t>(sizeof reply)) {
    dead = true;  // every later start clones from the agent
    return std::nullopt;
  }
  if (reply.pid < 0) return SpawnResult{-1, reply.err, false, false};
  return SpawnResult{reply.pid, 0, reply.inCgroup != 0, reply.awaitsGo != 0};
}

}  // namespace nodeagent
