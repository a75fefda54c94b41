#pragma once
// The task init: the code that runs between clone() (by the zygote, or the agent) and execve() of
// the task.
//
// Everything here may run in a child of a multi-threaded process, so it may only make
// async-signal-safe calls: raw syscalls and libcap/prctl wrappers on structures built before the
// clone. No malloc, no stdio, no locks, no C++ exceptions. The agent therefore pre-computes every
// path, argv/envp array, the mount plan, the seccomp BPF program and the capability state into an
// InitSpec of plain pointers; the child sees a copy-on-write snapshot (of the agent's memory, or of
// the zygote's copy: a field added to InitSpec must be added to encode() and decode() in
// zygote.cc too).

#include <linux/filter.h>
#include <sys/capability.h>
#include <sys/types.h>

#include <cstddef>
#include <cstdint>

namespace nodeagent::init {

// One step of building the task's root, executed in order by the init.
enum class MountOpKind : int {
  kMkdir,        // mkdir(dst, mode); EEXIST is fine
  kSymlink,      // symlink(src, dst)
  kTouch,        // create an empty file dst (a bind-mount target)
  kMount,        // mount(src, dst, fstype, flags, data)
  kBindReadOnly, // bind src on dst (recursively), then make the whole subtree read-only
  kBindWritable, // bind src on dst, nosuid+nodev
  kMaskPath,     // if dst exists: /dev/null over a file, empty read-only tmpfs over a directory
  kReadOnlyPath, // if dst exists: bind it on itself read-only
};

struct MountOp {
  MountOpKind kind;
  const char* src = nullptr;
  const char* dst = nullptr;
  const char* fstype = nullptr;
  unsigned long flags = 0;
  const char* data = nullptr;
  unsigned mode = 0755;
};

// Where a start failed: index into kStepNames (in the .cc), reported through the error pipe.
enum class Step : int {
  kSyncRead, kStdio, kLogs, kMountPrivate, kMountOp, kPivotRoot, kRootReadOnly, kHostname, kFork,
  kSignals, kNoNewPrivs, kBoundingSet, kKeepCaps, kSetGroups, kSetGid, kSetUid, kCapSet,
  kAmbient, kChdir, kCloseFds, kSeccomp, kExecve, kCgroupJoin,
};
const char* stepName(Step step);

// Points of the start the init timestamps when tracing (InitSpec::traceNs[mark]).
enum TraceMark : int { kTraceUp, kTraceGo, kTraceJoined, kTraceStdio, kTraceMounts, kTraceRoot, kTraceForked, kTraceExec,
                       kTraceMarkCount };
// The zygote's marks, in the same page: request received, decoded, init cloned.
enum ZygoteTraceMark : int { kTraceZygoteReceived = 16, kTraceZygoteDecoded, kTraceZygoteCloned };

// What the error pipe carries: the failing step, its errno, and for kMountOp the op's index.
struct ErrorRecord {
  int step;
  int err;
  int index;
};

struct InitSpec {
  bool isolate = true;        // exec (namespaces, new root) or raw_exec (cgroup only)
  int syncFd = -1;            // read end: the agent's "go" byte, when awaitGo
  // Wait for the go before anything else: set by spawnInit where the agent must attach us (v2
  // without clone3). EOF instead of the byte: the agent gave up or died, and we exit.
  bool awaitGo = false;
  int syncWriteFd = -1;       // the agent's write end, inherited through clone: closed first thing,
                              // so an agent that dies before "go" means EOF, not a hang
  int errorReadFd = -1;       // the agent's read end of the error pipe, likewise not ours to keep
  int errorFd = -1;           // write end (CLOEXEC): an ErrorRecord on failure, EOF after execve
  int exitDirFd = -1;         // <taskDir>/.foxden: where the init writes `exit`
  int stdoutFd = -1;          // -1: /dev/null
  int stderrFd = -1;
  int devNullFd = -1;         // the host's /dev/null, opened by the agent
  // cgroup v1: the task's `tasks` file in every hierarchy. First thing the init writes "0"
  // (itself) to each: a thread moving itself skips the kernel's global threadgroup lock and the RCU
  // grace period the agent's write of a pid would wait for (milliseconds per start).
  const char* const* cgroupJoinPaths = nullptr;
  size_t cgroupJoinPathCount = 0;
  // --trace-starts: CLOCK_MONOTONIC nanoseconds at each TraceMark, in memory shared with the agent.
  uint64_t* traceNs = nullptr;
  // Logs written by the init itself: when logDirFd >= 0 the task's stdout/stderr are pipes whose
  // read ends only the init holds, copied into size-rotated files in that directory
  // (nodeagent/logs/rotator.h); stdoutFd/stderrFd are then ignored. The agent is never in the data
  // path, so it can die without the task losing output or seeing SIGPIPE.
  int logDirFd = -1;
  uint32_t logMaxFiles = 10;
  uint64_t logMaxFileSize = uint64_t{10} * 1024 * 1024;

  const char* rootDir = nullptr;       // host path of the new root (exec)
  const MountOp* ops = nullptr;
  size_t opCount = 0;
  const char* hostname = nullptr;

  // The task process.
  const char* const* execCandidates = nullptr;  // argv[0] resolved against a fixed PATH, in order
  size_t execCandidateCount = 0;
  char* const* argv = nullptr;
  char* const* envp = nullptr;
  const char* workingDir = nullptr;  // nullptr: leave the cwd alone (raw_exec)
  bool switchUser = false;
  uid_t uid = 0;
  gid_t gid = 0;
  const gid_t* groups = nullptr;
  size_t groupCount = 0;

  bool dropCapabilities = true;       // exec: bounding/ambient/E/P/I to keepCaps
  const cap_value_t* keepCaps = nullptr;
  size_t keepCapCount = 0;
  int lastCap = 40;                   // cap_max_bits() - 1, read by the agent
  cap_t capState = nullptr;           // E=P=I=keepCaps, built by the agent
  bool noNewPrivs = true;
  const sock_fprog* seccomp = nullptr;  // nullptr: no filter
};

// The clone() entry point; `arg` is an InitSpec*. Never returns.
int taskInitMain(void* arg);

}  // namespace nodeagent::init
