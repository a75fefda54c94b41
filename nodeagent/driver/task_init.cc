#include "nodeagent/driver/task_init.h"

#include <fcntl.h>
#include <linux/close_range.h>
#include <linux/seccomp.h>
#include <sched.h>
#include <signal.h>
#include <sys/mount.h>
#include <poll.h>
#include <sys/prctl.h>
#include <sys/signalfd.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <grp.h>

#include "nodeagent/logs/rotator.h"

namespace nodeagent::init {
namespace {

constexpr const char* kStepNames[] = {
    "wait for cgroup attach", "set up stdio", "open log files", "make mounts private", "build root", "pivot_root",
    "remount root read-only", "sethostname", "fork task", "reset signals", "set no_new_privs",
    "drop bounding capabilities", "keep capabilities", "setgroups", "setgid", "setuid",
    "set capabilities", "set ambient capabilities", "chdir", "close fds", "install seccomp filter",
    "execve", "join the task cgroup",
};

// Fixed fds inside the init, so that closing "everything else" is a single close_range.
constexpr int kErrorFd = 3;
constexpr int kExitDirFd = 4;
constexpr int kLogDirFd = 5;

// The init's two output streams (static: 2 x 64 KiB of the agent's BSS, never touched by the
// agent, so they cost nothing until an init copies logs).
logs::LogPipe gStdout;
logs::LogPipe gStderr;

// The signals the init forwards to the task; SIGCHLD tells it to reap.
constexpr int kForwarded[] = {SIGTERM, SIGINT, SIGHUP, SIGQUIT, SIGUSR1, SIGUSR2};

[[noreturn]] void fail(Step step, int err, int index = -1) {
  ErrorRecord rec{static_cast<int>(step), err, index};
  // A short write on a pipe of this size cannot happen; nothing else to do if it fails anyway.
  [[maybe_unused]] ssize_t n = write(kErrorFd, &rec, sizeof rec);
  _exit(127);
}

void mark(const InitSpec& s, TraceMark m) {
  if (s.traceNs == nullptr) return;
  timespec ts{};
  clock_gettime(CLOCK_MONOTONIC, &ts);
  s.traceNs[m] = static_cast<uint64_t>(ts.tv_sec) * 1000000000ULL + static_cast<uint64_t>(ts.tv_nsec);
}

int retryDup2(int from, int to) {
  int rc;
  do rc = dup2(from, to); while (rc < 0 && errno == EINTR);
  return rc;
}

bool isDir(const char* path) {
  struct stat st;
  return stat(path, &st) == 0 && S_ISDIR(st.st_mode);
}

bool exists(const char* path) {
  struct stat st;
  return lstat(path, &st) == 0;
}

// Makes the mount at `path` and everything below it read-only (plus nosuid, nodev) in one call;
// the old MS_REMOUNT|MS_BIND way only touches the top mount and leaves submounts writable.
int makeReadOnly(const char* path, bool recursive) {
  struct mount_attr attr {};
  attr.attr_set = MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV;
  if (syscall(SYS_mount_setattr, AT_FDCWD, path, recursive ? AT_RECURSIVE : 0, &attr, sizeof attr) == 0) {
    return 0;
  }
  if (errno != ENOSYS) return -1;
  return mount(nullptr, path, nullptr, MS_BIND | MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NODEV, nullptr);
}

int runOp(const MountOp& op) {
  switch (op.kind) {
    case MountOpKind::kMkdir:
      if (mkdir(op.dst, op.mode) < 0 && errno != EEXIST) return -1;
      return 0;
    case MountOpKind::kSymlink:
      if (symlink(op.src, op.dst) < 0 && errno != EEXIST) return -1;
      return 0;
    case MountOpKind::kTouch: {
      int fd = open(op.dst, O_WRONLY | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0644);
      if (fd < 0) return -1;
      close(fd);
      return 0;
    }
    case MountOpKind::kMount:
      return mount(op.src, op.dst, op.fstype, op.flags, op.data);
    case MountOpKind::kBindReadOnly:
      if (mount(op.src, op.dst, nullptr, MS_BIND | MS_REC, nullptr) < 0) return -1;
      return makeReadOnly(op.dst, true);
    case MountOpKind::kBindWritable:
      if (mount(op.src, op.dst, nullptr, MS_BIND, nullptr) < 0) return -1;
      return mount(nullptr, op.dst, nullptr, MS_BIND | MS_REMOUNT | MS_NOSUID | MS_NODEV | op.flags, nullptr);
    case MountOpKind::kMaskPath:
      if (!exists(op.dst)) return 0;
      if (isDir(op.dst)) {
        return mount("tmpfs", op.dst, "tmpfs", MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC, "size=0,mode=0555");
      }
      return mount(op.src, op.dst, nullptr, MS_BIND, nullptr);  // src: the new root's /dev/null
    case MountOpKind::kReadOnlyPath:
      if (!exists(op.dst)) return 0;
      if (mount(op.dst, op.dst, nullptr, MS_BIND | MS_REC, nullptr) < 0) return -1;
      return makeReadOnly(op.dst, true);
  }
  errno = EINVAL;
  return -1;
}

// Decimal without snprintf (not async-signal-safe).
size_t formatInt(long value, char* out) {
  char tmp[24];
  size_t n = 0;
  bool neg = value < 0;
  unsigned long v = neg ? static_cast<unsigned long>(-value) : static_cast<unsigned long>(value);
  do {
    tmp[n++] = static_cast<char>('0' + v % 10);
    v /= 10;
  } while (v != 0);
  size_t len = 0;
  if (neg) out[len++] = '-';
  while (n > 0) out[len++] = tmp[--n];
  out[len++] = '\n';
  return len;
}

// `<taskDir>/.foxden/exit` = the raw wait status; written to a temp name and renamed so that a
// reader never sees half a number.
void writeExitFile(int status) {
  char buf[32];
  size_t len = formatInt(status, buf);
  int fd = openat(kExitDirFd, "exit.tmp", O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0644);
  if (fd < 0) return;
  [[maybe_unused]] ssize_t n = write(fd, buf, len);
  fsync(fd);
  close(fd);
  renameat(kExitDirFd, "exit.tmp", kExitDirFd, "exit");
}

[[noreturn]] void runTask(const InitSpec& s, const sigset_t& oldMask) {
  mark(s, kTraceForked);
  // Undo what the agent and the init set up: handlers become default again (SIG_IGN survives
  // execve otherwise) and nothing stays blocked.
  struct sigaction dfl {};
  dfl.sa_handler = SIG_DFL;
  for (int sig = 1; sig < NSIG; ++sig) {
    if (sig == SIGKILL || sig == SIGSTOP) continue;
    sigaction(sig, &dfl, nullptr);  // EINVAL for the glibc-reserved signals is fine
  }
  sigset_t empty;
  sigemptyset(&empty);
  if (sigprocmask(SIG_SETMASK, &empty, nullptr) < 0) fail(Step::kSignals, errno);
  (void)oldMask;
  setsid();

  if (s.noNewPrivs && prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0) fail(Step::kNoNewPrivs, errno);

  if (s.dropCapabilities) {
    // The bounding set first, while we are still root with CAP_SETPCAP.
    for (int cap = 0; cap <= s.lastCap; ++cap) {
      bool keep = false;
      for (size_t i = 0; i < s.keepCapCount; ++i) keep = keep || s.keepCaps[i] == cap;
      if (!keep && cap_drop_bound(static_cast<cap_value_t>(cap)) < 0 && errno != EINVAL) {
        fail(Step::kBoundingSet, errno, cap);
      }
    }
    // Without KEEPCAPS, setuid() away from root clears the permitted set we want to keep.
    if (s.keepCapCount > 0 && prctl(PR_SET_KEEPCAPS, 1, 0, 0, 0) < 0) fail(Step::kKeepCaps, errno);
  }

  if (s.switchUser) {
    // Raw syscalls, not glibc's setgroups/setgid/setuid: those broadcast to "all threads" and take
    // glibc's thread-list lock, which a thread of the (multi-threaded) agent may have held at the
    // moment of our clone: the task would wait on that futex forever (seen under load).
    if (syscall(SYS_setgroups, s.groupCount, s.groups) < 0) fail(Step::kSetGroups, errno);
    if (syscall(SYS_setresgid, s.gid, s.gid, s.gid) < 0) fail(Step::kSetGid, errno);
    if (syscall(SYS_setresuid, s.uid, s.uid, s.uid) < 0) fail(Step::kSetUid, errno);
  }

  if (s.dropCapabilities) {
    if (cap_set_proc(s.capState) < 0) fail(Step::kCapSet, errno);
    // Ambient capabilities are what lets a non-root task keep its allow-list across execve.
    if (cap_reset_ambient() < 0 && errno != EINVAL) fail(Step::kAmbient, errno);
    if (s.uid != 0 || !s.switchUser) {
      for (size_t i = 0; i < s.keepCapCount; ++i) {
        if (cap_set_ambient(s.keepCaps[i], CAP_SET) < 0) fail(Step::kAmbient, errno, s.keepCaps[i]);
      }
    }
  }

  if (s.workingDir != nullptr && chdir(s.workingDir) < 0) fail(Step::kChdir, errno);

  // Only 0, 1, 2 and the error pipe (CLOEXEC) survive; the init's exit dir fd must not leak.
  if (syscall(SYS_close_range, kErrorFd + 1, ~0U, 0) < 0) fail(Step::kCloseFds, errno);

  if (s.seccomp != nullptr &&
      syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, 0, s.seccomp) < 0) {
    fail(Step::kSeccomp, errno);
  }

  mark(s, kTraceExec);
  int lastErr = ENOENT;
  for (size_t i = 0; i < s.execCandidateCount; ++i) {
    execve(s.execCandidates[i], s.argv, s.envp);
    lastErr = errno;
    if (errno != ENOENT && errno != ENOTDIR) break;
  }
  fail(Step::kExecve, lastErr);
}

}  // namespace

const char* stepName(Step step) {
  auto i = static_cast<size_t>(step);
  return i < sizeof kStepNames / sizeof kStepNames[0] ? kStepNames[i] : "unknown step";
}

int taskInitMain(void* arg) {
  const InitSpec& s = *static_cast<const InitSpec*>(arg);
  // In ps: not the name of what cloned us (foxden-agent or foxden-zygote).
  prctl(PR_SET_NAME, "foxden-init", 0, 0, 0);

  // clone() gave us copies of the agent's own pipe ends. Holding its write end would keep our
  // read from ever seeing EOF if the agent died before releasing us (we would hang forever, and a
  // restarted agent would adopt a task that never started).
  if (s.syncWriteFd >= 0) close(s.syncWriteFd);
  if (s.errorReadFd >= 0) close(s.errorReadFd);

  // Nothing happens before we are in the task's cgroup: clone3 created us there (v2), or we join
  // it ourselves first thing (v1), or we wait for the agent's go after its attach (v2 without
  // clone3). Waiting for a go in the first two cases would put two more wake-ups (the zygote's
  // reply to the agent, the agent's byte to us) on every start's path for nothing.
  mark(s, kTraceUp);
  if (s.awaitGo) {
    char go = 0;
    ssize_t n;
    do n = read(s.syncFd, &go, 1); while (n < 0 && errno == EINTR);
    if (n != 1) _exit(126);
  }
  mark(s, kTraceGo);
  for (size_t i = 0; i < s.cgroupJoinPathCount; ++i) {
    int fd = open(s.cgroupJoinPaths[i], O_WRONLY | O_CLOEXEC);
    ssize_t w = -1;
    if (fd >= 0) {
      do w = write(fd, "0", 1); while (w < 0 && errno == EINTR);
      int err = errno;
      close(fd);
      errno = err;
    }
    if (w != 1) {
      // The fixed error fd is not set up yet: report on the inherited one.
      ErrorRecord rec{static_cast<int>(Step::kCgroupJoin), errno, static_cast<int>(i)};
      [[maybe_unused]] ssize_t m = write(s.errorFd, &rec, sizeof rec);
      _exit(127);
    }
  }

  mark(s, kTraceJoined);
  // Fixed fd layout: 0 /dev/null, 1/2 the task's output, 3 error pipe, 4 exit dir. Dup everything
  // above 10 first so that no target clobbers a source.
  int out = fcntl(s.stdoutFd >= 0 ? s.stdoutFd : s.devNullFd, F_DUPFD_CLOEXEC, 10);
  int err = fcntl(s.stderrFd >= 0 ? s.stderrFd : s.devNullFd, F_DUPFD_CLOEXEC, 10);
  int nul = fcntl(s.devNullFd, F_DUPFD_CLOEXEC, 10);
  int errPipe = fcntl(s.errorFd, F_DUPFD_CLOEXEC, 10);
  int exitDir = fcntl(s.exitDirFd, F_DUPFD_CLOEXEC, 10);
  int logDir = fcntl(s.logDirFd >= 0 ? s.logDirFd : s.devNullFd, F_DUPFD_CLOEXEC, 10);
  if (errPipe < 0) _exit(126);
  if (retryDup2(errPipe, kErrorFd) < 0) _exit(126);
  fcntl(kErrorFd, F_SETFD, FD_CLOEXEC);
  if (out < 0 || err < 0 || nul < 0 || exitDir < 0 || logDir < 0) fail(Step::kStdio, errno);
  if (retryDup2(nul, 0) < 0 || retryDup2(out, 1) < 0 || retryDup2(err, 2) < 0 ||
      retryDup2(exitDir, kExitDirFd) < 0 || retryDup2(logDir, kLogDirFd) < 0) {
    fail(Step::kStdio, errno);
  }
  fcntl(kExitDirFd, F_SETFD, FD_CLOEXEC);
  fcntl(kLogDirFd, F_SETFD, FD_CLOEXEC);
  // Every other fd of the agent (sockets, the store, other tasks' pipes) is closed here.
  if (syscall(SYS_close_range, kLogDirFd + 1, ~0U, 0) < 0) fail(Step::kCloseFds, errno);

  // The task's stdout/stderr become pipes to us. Their read ends (and the log files) are CLOEXEC
  // and above kErrorFd, so the task's close_range drops them; it keeps only 1 and 2.
  if (s.logDirFd >= 0) {
    int outPipe[2], errPipe2[2];
    if (pipe2(outPipe, O_CLOEXEC) < 0 || pipe2(errPipe2, O_CLOEXEC) < 0) fail(Step::kLogs, errno);
    if (retryDup2(outPipe[1], 1) < 0 || retryDup2(errPipe2[1], 2) < 0) fail(Step::kLogs, errno);
    close(outPipe[1]);
    close(errPipe2[1]);
    gStdout.fd = outPipe[0];
    gStderr.fd = errPipe2[0];
    int rc = gStdout.rotator.open(kLogDirFd, "stdout", s.logMaxFiles, s.logMaxFileSize);
    if (rc == 0) rc = gStderr.rotator.open(kLogDirFd, "stderr", s.logMaxFiles, s.logMaxFileSize);
    if (rc < 0) fail(Step::kLogs, -rc);
  }

  mark(s, kTraceStdio);
  if (s.isolate) {
    // Our mount namespace is a copy of the host's: make it private so nothing propagates back.
    if (mount(nullptr, "/", nullptr, MS_REC | MS_PRIVATE, nullptr) < 0) fail(Step::kMountPrivate, errno);
    for (size_t i = 0; i < s.opCount; ++i) {
      if (runOp(s.ops[i]) < 0) fail(Step::kMountOp, errno, static_cast<int>(i));
    }
    mark(s, kTraceMounts);
    // pivot_root(".", ".") stacks the old root on top of the new one; detaching it leaves no
    // path back to the host tree (unlike chroot).
    if (chdir(s.rootDir) < 0) fail(Step::kPivotRoot, errno);
    if (syscall(SYS_pivot_root, ".", ".") < 0) fail(Step::kPivotRoot, errno);
    if (umount2(".", MNT_DETACH) < 0) fail(Step::kPivotRoot, errno);
    if (chdir("/") < 0) fail(Step::kPivotRoot, errno);
    if (mount(nullptr, "/", nullptr, MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NOSUID | MS_NODEV, nullptr) < 0) {
      fail(Step::kRootReadOnly, errno);
    }
    if (s.hostname != nullptr && sethostname(s.hostname, strlen(s.hostname)) < 0) {
      fail(Step::kHostname, errno);
    }
    mark(s, kTraceRoot);
    // The init runs as root in the task's cgroup; make its /proc entries unreadable to the task.
    prctl(PR_SET_DUMPABLE, 0, 0, 0, 0);
  } else {
    // raw_exec: no PID namespace, so become the reaper of the task's orphans ourselves.
    prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0);
  }

  // Block what we forward before forking so nothing is lost before the signalfd reads it.
  sigset_t waitSet, oldMask;
  sigemptyset(&waitSet);
  for (int sig : kForwarded) sigaddset(&waitSet, sig);
  sigaddset(&waitSet, SIGCHLD);
  if (sigprocmask(SIG_BLOCK, &waitSet, &oldMask) < 0) fail(Step::kSignals, errno);

  // Signals arrive through a signalfd so that one poll() waits for them and the task's output.
  int sigFd = signalfd(-1, &waitSet, SFD_CLOEXEC | SFD_NONBLOCK);
  if (sigFd < 0) fail(Step::kSignals, errno);

  // vfork semantics: the task shares our memory until its execve, so the kernel copies no page
  // tables. Ours are a copy of the agent's, hundreds of thread-stack mappings with many tasks
  // running: a plain fork here measured 4-9 ms. The child touches only its own stack and fds.
  struct TaskArgs {
    const InitSpec* spec;
    const sigset_t* mask;
  } args{&s, &oldMask};
  alignas(16) static char taskStack[64 * 1024];
  pid_t task = clone(
      [](void* a) -> int {
        auto* t = static_cast<TaskArgs*>(a);
        runTask(*t->spec, *t->mask);
      },
      taskStack + sizeof taskStack, CLONE_VM | CLONE_VFORK | SIGCHLD, &args);
  if (task < 0) fail(Step::kFork, errno);
  close(kErrorFd);  // the task's copy is the only one left: EOF at its execve
  // Our copies of the pipes' write ends would keep them from ever reaching EOF.
  retryDup2(0, 1);
  retryDup2(0, 2);

  logs::LogPipe* pipes[2] = {&gStdout, &gStderr};
  int taskStatus = 0;
  bool taskDone = false;
  while (!taskDone) {
    pollfd pfds[3] = {{sigFd, POLLIN, 0}, {gStdout.fd, POLLIN, 0}, {gStderr.fd, POLLIN, 0}};
    // A held partial line (a prompt, a progress bar) goes out when due rather than wait for its end.
    int64_t now = logs::monotonicMs();
    int64_t timeout = -1;
    for (logs::LogPipe* p : pipes) {
      int64_t due = p->dueInMs(now);
      if (due >= 0 && (timeout < 0 || due < timeout)) timeout = due;
    }
    int pr = poll(pfds, 3, static_cast<int>(timeout));
    now = logs::monotonicMs();
    for (int i = 0; i < 2; ++i) {
      if (pr > 0 && pfds[i + 1].revents != 0) (void)pipes[i]->pump(now);
      if (pipes[i]->dueInMs(now) == 0) pipes[i]->flush();
    }
    if (pr <= 0) continue;  // timeout or EINTR
    if (pfds[0].revents == 0) continue;
    signalfd_siginfo si;
    while (read(sigFd, &si, sizeof si) == static_cast<ssize_t>(sizeof si)) {
      int sig = static_cast<int>(si.ssi_signo);
      if (sig != SIGCHLD) {
        kill(task, sig);
        continue;
      }
      for (;;) {
        int st = 0;
        pid_t p = waitpid(-1, &st, WNOHANG);
        if (p <= 0) break;
        if (p == task) {
          taskStatus = st;
          taskDone = true;
        }
      }
    }
  }
  // What the task wrote before it ended is in the pipes: take it (bounded: orphans of a raw_exec
  // task may still be writing), then the held partial lines.
  for (logs::LogPipe* p : pipes) {
    if (p->fd < 0) continue;
    fcntl(p->fd, F_SETFL, O_NONBLOCK);
    for (int i = 0; i < 256 && p->pump(logs::monotonicMs()) > 0; ++i) {
    }
    p->flush();
    p->rotator.close();
  }
  writeExitFile(taskStatus);
  // PID 1 cannot kill itself with the task's signal; the exit file has the real status.
  if (WIFEXITED(taskStatus)) _exit(WEXITSTATUS(taskStatus));
  _exit(128 + WTERMSIG(taskStatus));
}

}  // namespace nodeagent::init
