// exec_driver_check: runs real tasks through the exec and raw_exec drivers (needs root and cgroup
// v1 hierarchies, as on the CI host) and checks isolation, limits, stop, re-attach and devices.
// Prints one line per check and "N passed, N failed"; exits non-zero on any failure. Everything it
// creates (cgroups under foxden-check-<pid>, a canary, fake device nodes, a work dir) is removed at
// the end, also after failed checks.

#include <dirent.h>
#include <dlfcn.h>
#include <elf.h>
#include <libcgroup.h>
#include <link.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <map>
#include <set>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "nodeagent/driver/cgroup.h"
#include "nodeagent/driver/exec_driver.h"
#include "nodeagent/driver/zygote.h"

#include "tests/integration/check.h"

namespace {

using nodeagent::TaskExit;
using nodeagent::TaskHandle;
using nodeagent::TaskLaunch;
using Clock = std::chrono::steady_clock;

using integration::check;
using integration::gFailed;
using integration::gPassed;
using integration::slurp;
using integration::trim;

bool contains(const std::string& hay, const std::string& needle) { return hay.find(needle) != std::string::npos; }

std::map<std::string, std::string> parseKv(const std::string& out) {
  std::map<std::string, std::string> kv;
  std::istringstream in(out);
  std::string line;
  while (std::getline(in, line)) {
    size_t eq = line.find('=');
    if (eq != std::string::npos) kv[line.substr(0, eq)] = trim(line.substr(eq + 1));
  }
  return kv;
}

std::string exitText(const TaskExit& e) {
  return "exit=" + std::to_string(e.exitCode) + " signal=" + std::to_string(e.signal) +
         " oom=" + (e.oomKilled ? "true" : "false") + (e.message.empty() ? "" : " (" + e.message + ")");
}

using integration::kHierarchies;

struct Fixture {
  std::string work;
  std::string parent = "foxden-check-" + std::to_string(getpid());
  std::string rawParent = parent + "-raw";
  std::string canary = "/var/tmp/foxden-canary-" + std::to_string(getpid());
  std::vector<std::string> fakeDevices;
  nodeagent::ExecDriverOptions opts;
  nodeagent::ExecDriverOptions rawOpts;

  Fixture() {
    char tmpl[] = "/tmp/foxden-exec-XXXXXX";
    work = mkdtemp(tmpl);
    chmod(work.c_str(), 0755);
    mkdir((work + "/alloc").c_str(), 0777);
    chmod((work + "/alloc").c_str(), 01777);
    opts.cgroupParent = parent;
    opts.stateDir = work + "/state";
    rawOpts = opts;
    rawOpts.cgroupParent = rawParent;
    rawOpts.stateDir = work + "/state-raw";
    std::ofstream(canary) << "foxden-canary-secret\n";
  }

  ~Fixture() { cleanup(); }

  // Kills whatever is left in our cgroups and removes them, the canary, the fake nodes and work.
  void cleanup() {
    for (const auto& p : {parent, rawParent}) integration::removeTaskCgroups(p);
    while (waitpid(-1, nullptr, WNOHANG) > 0) {
    }
    unlink(canary.c_str());
    for (const auto& d : fakeDevices) unlink(d.c_str());
    std::error_code ec;
    std::filesystem::remove_all(work, ec);
  }

  bool cgroupsGone() {
    for (const auto& p : {parent, rawParent}) {
      for (const char* h : kHierarchies) {
        std::string base = std::string("/sys/fs/cgroup/") + h + "/" + p;
        std::error_code ec;
        if (!std::filesystem::exists(base, ec)) continue;
        for (const auto& e : std::filesystem::directory_iterator(base, ec)) {
          if (e.is_directory()) return false;
        }
      }
    }
    return true;
  }
};

Fixture* gFix = nullptr;

struct Launched {
  TaskLaunch launch;
  std::string outPath;
};

Launched makeLaunch(const std::string& name, std::vector<std::string> argv) {
  Launched l;
  std::string dir = gFix->work + "/" + name;
  mkdir(dir.c_str(), 0755);
  for (const char* sub : {"/local", "/secrets", "/tmp"}) {
    std::string d = dir + sub;
    mkdir(d.c_str(), 0755);
    if (chown(d.c_str(), 65534, 65534) != 0) perror("chown");
  }
  l.launch.id = "t" + std::to_string(getpid()) + "." + name;
  l.launch.argv = std::move(argv);
  l.launch.taskDir = dir;
  l.launch.allocDir = gFix->work + "/alloc";
  l.outPath = gFix->work + "/" + name + ".out";
  return l;
}

struct Result {
  bool started = false;
  std::string startError;
  TaskHandle handle;
  TaskExit exit;
  std::string out;
};

// Starts the task with stdout+stderr to a file, optionally waits for it and destroys it.
Result run(nodeagent::Driver& d, Launched& l, int waitMs = 20000, bool finish = true) {
  Result r;
  int fd = open(l.outPath.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  l.launch.stdoutFd = fd;
  l.launch.stderrFd = fd;
  auto h = d.start(l.launch);
  close(fd);  // the driver dup'ed it into the task
  if (!h) {
    r.startError = h.status().message();
    return r;
  }
  r.started = true;
  r.handle = *h;
  if (!finish) return r;
  auto e = d.wait(r.handle, waitMs);
  if (!e) {
    (void)d.stop(r.handle, SIGKILL, 0);
    e = d.wait(r.handle, 5000);
    r.startError = "timed out";
  }
  if (e) r.exit = *e;
  r.out = slurp(l.outPath);
  if (auto st = d.destroy(r.handle); !st) std::cout << "  destroy: " << st.message() << "\n";
  return r;
}

std::vector<std::string> sh(const std::string& script) { return {"/bin/sh", "-c", script}; }

uint64_t readU64(const std::string& path) { return std::strtoull(slurp(path).c_str(), nullptr, 10); }

// ---- checks ----------------------------------------------------------------------------------

void checkBasics(nodeagent::Driver& d) {
  auto l = makeLaunch("hello", sh("echo hello; echo to-stderr >&2"));
  auto r = run(d, l);
  check(r.started && r.exit.exitCode == 0 && r.exit.signal == 0 && contains(r.out, "hello\n") &&
            contains(r.out, "to-stderr"),
        "exit 0 with stdout captured", exitText(r.exit) + " out=" + trim(r.out) + " " + r.startError);

  auto l3 = makeLaunch("exit3", sh("exit 3"));
  auto r3 = run(d, l3);
  check(r3.started && r3.exit.exitCode == 3, "exit code 3 reported", exitText(r3.exit));

  auto lm = makeLaunch("missing", {"/no/such/binary"});
  auto rm = run(d, lm);
  check(!rm.started && contains(rm.startError, "execve") && contains(rm.startError, "No such file"),
        "missing binary is a start error", rm.startError);

  auto lu = makeLaunch("baduser", sh("true"));
  lu.launch.user = "no-such-user-foxden";
  auto ru = run(d, lu);
  check(!ru.started && contains(ru.startError, "unknown user"), "bad user is a start error", ru.startError);

  auto lc = makeLaunch("badcwd", sh("true"));
  lc.launch.workingDir = "/no/such/dir";
  auto rc = run(d, lc);
  check(!rc.started && contains(rc.startError, "chdir"), "bad working dir is a start error", rc.startError);

  auto lp = makeLaunch("proccwd", sh("true"));
  lp.launch.workingDir = "/proc/self/fd/4";
  auto rp = run(d, lp);
  check(!rp.started && contains(rp.startError, "outside /proc"), "cwd under /proc rejected", rp.startError);
}

const char* kBattery = R"SH(
echo "ROOT=$(ls / | tr '\n' ' ')"
echo "CANARY=$(cat CANARY_PATH 2>&1)"
echo "VAR=$(ls /var 2>&1)"
echo "PROCS=$(ls /proc | grep -E '^[0-9]+$' | tr '\n' ' ')"
grep -E '^(NoNewPrivs|Seccomp|CapInh|CapPrm|CapEff|CapBnd|CapAmb):' /proc/self/status | tr -d '\t ' | sed 's/:/=/'
touch /usr/foxden-x 2>/dev/null && echo USRWRITE=yes || echo USRWRITE=no
touch /foxden-x 2>/dev/null && echo ROOTWRITE=yes || echo ROOTWRITE=no
mknod /tmp/n c 1 3 2>/dev/null && echo MKNOD=yes || echo MKNOD=no
mount -t tmpfs none /tmp 2>/dev/null && echo MOUNT=yes || echo MOUNT=no
unshare -m true 2>/dev/null && echo UNSHARE=yes || echo UNSHARE=no
unshare -mrpf sh -c 'mount -t proc none /proc && echo h > /proc/sysrq-trigger' 2>/dev/null && echo UNSHARE_PROC=yes || echo UNSHARE_PROC=no
chroot / true 2>/dev/null && echo CHROOT=yes || echo CHROOT=no
echo 1 > /proc/sys/kernel/sysrq 2>/dev/null && echo PROCSYS=yes || echo PROCSYS=no
echo "UID=$(id -u)"
echo "HOST=$(cat /proc/sys/kernel/hostname)"
M=""; for f in /proc/kcore /proc/keys /proc/timer_list /proc/sched_debug /proc/sysrq-trigger; do [ -e $f ] || continue; [ -c $f ] && M="$M $f:masked" || M="$M $f:OPEN"; done
echo "MASKED=$M"
echo "KEYS=$(wc -c < /proc/keys)"
echo "ACPI=$(ls -A /proc/acpi 2>&1)"
echo "PROCSYS_MNT=$(awk '$5=="/proc/sys"{print $6}' /proc/self/mountinfo)"
echo "FDS=$(ls /proc/self/fd | tr '\n' ' ')"
touch /local/x 2>/dev/null && echo LOCALW=yes || echo LOCALW=no
touch /tmp/x 2>/dev/null && echo TMPW=yes || echo TMPW=no
/usr/bin/python3 -c '
import ctypes, os
libc = ctypes.CDLL(None, use_errno=True)
def t(name, nr, *a):
    r = libc.syscall(nr, *[ctypes.c_long(x) for x in a])
    print(name + "=" + ("ok" if r >= 0 else os.strerror(ctypes.get_errno())))
t("KEYCTL", 250, 0, 0, 0, 0, 0)
t("CLONE3", 435, 0, 0)
t("BPF", 321, 0, 0, 0)
t("UNSHARE_RAW", 272, 0x20000)
t("PTRACE", 101, 0, 0, 0, 0)
t("IOURING", 425, 1, 0)
t("OPEN_BY_HANDLE", 304, 0, 0, 0)
t("PERF", 298, 0, 0, 0, 0, 0)
' 2>&1
)SH";

void checkIsolation(nodeagent::Driver& d, const std::string& user) {
  std::string script = kBattery;
  script.replace(script.find("CANARY_PATH"), 11, gFix->canary);
  auto l = makeLaunch("battery-" + user, sh(script));
  l.launch.user = user;
  if (user == "root") {  // the task dirs belong to the task's user (root has no CAP_DAC_OVERRIDE here)
    for (const char* sub : {"/local", "/tmp"}) {
      if (chown((l.launch.taskDir + sub).c_str(), 0, 0) != 0) perror("chown");
    }
  }
  auto r = run(d, l);
  auto kv = parseKv(r.out);
  std::string p = "[" + user + "] ";
  check(r.started && r.exit.exitCode == 0, p + "battery ran", exitText(r.exit) + " " + r.startError);
  check(kv["ROOT"] == "alloc bin dev etc lib lib64 local proc sbin secrets tmp usr", p + "ls / shows only the task root",
        kv["ROOT"]);
  check(!contains(r.out, "foxden-canary-secret") && contains(kv["CANARY"], "No such file") &&
            contains(kv["VAR"], "No such file"),
        p + "host canary unreachable", kv["CANARY"]);
  std::istringstream procs(kv["PROCS"]);
  int pid, count = 0, maxPid = 0;
  bool hasInit = false;
  while (procs >> pid) {
    ++count;
    maxPid = std::max(maxPid, pid);
    hasInit = hasInit || pid == 1;
  }
  check(hasInit && count <= 6 && maxPid < 100, p + "/proc lists only the task's processes", kv["PROCS"]);
  check(kv["NoNewPrivs"] == "1" && kv["Seccomp"] == "2", p + "no_new_privs and seccomp",
        "NoNewPrivs=" + kv["NoNewPrivs"] + " Seccomp=" + kv["Seccomp"]);
  const std::string zero = "0000000000000000";
  check(kv["CapEff"] == zero && kv["CapBnd"] == zero && kv["CapPrm"] == zero && kv["CapAmb"] == zero &&
            kv["CapInh"] == zero,
        p + "capabilities empty", "CapEff=" + kv["CapEff"] + " CapBnd=" + kv["CapBnd"] + " CapPrm=" + kv["CapPrm"]);
  check(kv["USRWRITE"] == "no" && kv["ROOTWRITE"] == "no" && kv["LOCALW"] == "yes" && kv["TMPW"] == "yes",
        p + "/usr and / read-only, /local and /tmp writable",
        "usr=" + kv["USRWRITE"] + " root=" + kv["ROOTWRITE"] + " local=" + kv["LOCALW"] + " tmp=" + kv["TMPW"]);
  check(kv["MKNOD"] == "no" && kv["MOUNT"] == "no" && kv["UNSHARE"] == "no" && kv["UNSHARE_PROC"] == "no" &&
            kv["CHROOT"] == "no" && kv["PROCSYS"] == "no",
        p + "mknod, mount, unshare, chroot, /proc/sys write fail",
        "mknod=" + kv["MKNOD"] + " mount=" + kv["MOUNT"] + " unshare=" + kv["UNSHARE"] +
            " unshare-proc=" + kv["UNSHARE_PROC"] + " chroot=" + kv["CHROOT"] + " procsys=" + kv["PROCSYS"]);
  std::string eperm = "Operation not permitted";
  check(kv["KEYCTL"] == eperm && kv["BPF"] == eperm && kv["UNSHARE_RAW"] == eperm && kv["PTRACE"] == eperm &&
            kv["IOURING"] == eperm && kv["OPEN_BY_HANDLE"] == eperm && kv["PERF"] == eperm &&
            kv["CLONE3"] == "Function not implemented",
        p + "seccomp denies keyctl/bpf/unshare/ptrace/io_uring/open_by_handle_at/perf, clone3 ENOSYS",
        "keyctl=" + kv["KEYCTL"] + " clone3=" + kv["CLONE3"] + " io_uring=" + kv["IOURING"]);
  check(kv["UID"] == (user == "root" ? "0" : "65534"), p + "runs as " + user, "uid=" + kv["UID"]);
  check(kv["HOST"] == l.launch.id, p + "hostname is the task id", kv["HOST"]);
  check(contains(kv["MASKED"], "/proc/keys:masked") && contains(kv["MASKED"], "/proc/timer_list:masked") &&
            !contains(kv["MASKED"], "OPEN") && kv["KEYS"] == "0" && kv["ACPI"].empty(),
        p + "masked /proc paths (those this kernel has)", kv["MASKED"] + " acpi='" + kv["ACPI"] + "'");
  check(kv["PROCSYS_MNT"].rfind("ro,", 0) == 0, p + "/proc/sys mounted read-only", kv["PROCSYS_MNT"]);
  check(kv["FDS"] == "0 1 2 3", p + "only fds 0-2 inherited (3 = ls's own)", kv["FDS"]);
}

void checkCapabilities(nodeagent::Driver& d) {
  auto l = makeLaunch("caps", sh("grep -E '^Cap(Eff|Bnd|Amb)' /proc/self/status | tr -d '\\t ' | sed 's/:/=/'"));
  l.launch.capabilities = {"CAP_NET_BIND_SERVICE"};
  auto r = run(d, l);
  auto kv = parseKv(r.out);
  const std::string bind = "0000000000000400";
  check(kv["CapEff"] == bind && kv["CapBnd"] == bind && kv["CapAmb"] == bind,
        "configured capability set is exactly CAP_NET_BIND_SERVICE",
        "CapEff=" + kv["CapEff"] + " CapBnd=" + kv["CapBnd"] + " CapAmb=" + kv["CapAmb"] + " " + r.startError);
}

void checkLimits(nodeagent::Driver& d) {
  // Memory: tail buffers its whole (newline-free) input.
  auto lm = makeLaunch("oom", sh("head -c 200M /dev/zero | tail"));
  lm.launch.limits.memoryBytes = 32 << 20;
  auto rm = run(d, lm, 60000);
  check(rm.started && rm.exit.oomKilled && rm.exit.exitCode == 128 + SIGKILL, "memory hog OOM-killed at 32Mi",
        exitText(rm.exit));

  // No CPU request, no pids limit: the driver writes nothing and the kernel's defaults hold, even
  // over a leftover cgroup of the same id with other values (an agent that died before removing it).
  {
    auto ld = makeLaunch("defaults", {"/bin/sleep", "30"});
    std::string left = "/sys/fs/cgroup/cpu/" + gFix->parent + "/" + ld.launch.id;
    mkdir(("/sys/fs/cgroup/cpu/" + gFix->parent).c_str(), 0755);
    bool leftover = mkdir(left.c_str(), 0755) == 0 && nodeagent::writeFile(left + "/cpu.shares", "512").isOk() &&
                    nodeagent::writeFile(left + "/cpu.cfs_quota_us", "50000").isOk();
    check(leftover, "a leftover cgroup with cpu.shares 512 and a quota is in place", left);
    auto rd = run(d, ld, 20000, false);
    std::string cpu = "/sys/fs/cgroup/cpu/" + rd.handle.cgroup, pids = "/sys/fs/cgroup/pids/" + rd.handle.cgroup;
    std::string got = rd.started ? trim(slurp(cpu + "/cpu.shares")) + " " + trim(slurp(cpu + "/cpu.cfs_quota_us")) + " " +
                                       trim(slurp(cpu + "/cpu.cfs_period_us")) + " " + trim(slurp(pids + "/pids.max"))
                                 : rd.startError;
    if (rd.started) {
      (void)d.stop(rd.handle, SIGKILL, 0);
      (void)d.wait(rd.handle, 5000);
      (void)d.destroy(rd.handle);
    }
    check(got == "1024 -1 100000 max", "a new cgroup without limits has the defaults libcgroup is not asked to write", got);
  }

  // Spare cgroups (v1): an earlier agent's spare is removed; a start renames a ready spare into
  // place and writes its limits; the spares left go with the driver.
  if (nodeagent::detectCgroupMode() == nodeagent::CgroupMode::kV1) {
    auto spares = []() {
      std::map<ino_t, std::string> out;  // inode -> name, in the pids hierarchy
      std::error_code ec;
      for (const auto& e : std::filesystem::directory_iterator("/sys/fs/cgroup/pids/" + gFix->parent, ec)) {
        std::string n = e.path().filename();
        struct stat st {};
        if (n.rfind(nodeagent::kSparePrefix, 0) == 0 && stat(e.path().c_str(), &st) == 0) out[st.st_ino] = n;
      }
      return out;
    };
    std::string stale = gFix->parent + "/" + nodeagent::kSparePrefix + "7";
    bool staleMade = true;
    for (const char* h : kHierarchies) {
      std::string dir = std::string("/sys/fs/cgroup/") + h + "/" + gFix->parent;
      mkdir(dir.c_str(), 0755);
      staleMade = staleMade && mkdir((dir + "/" + nodeagent::kSparePrefix + "7").c_str(), 0755) == 0;
    }
    auto o = gFix->opts;
    o.spareCgroups = 2;
    auto pooled = nodeagent::newExecDriver(o);
    bool staleGone = access(("/sys/fs/cgroup/pids/" + stale).c_str(), F_OK) != 0;
    for (int i = 0; i < 500 && spares().size() < 2; ++i) usleep(10000);
    auto before = spares();
    auto ls = makeLaunch("spare", {"/bin/sleep", "30"});
    ls.launch.limits.pidsMax = 77;
    ls.launch.limits.cpuQuotaMicros = 20000;
    ls.launch.limits.memoryBytes = 48 << 20;
    auto rs = run(*pooled, ls, 20000, false);
    std::string cg = gFix->parent + "/" + ls.launch.id;
    struct stat st {};
    bool renamed = rs.started && stat(("/sys/fs/cgroup/pids/" + cg).c_str(), &st) == 0 && before.count(st.st_ino) == 1;
    std::string got = trim(slurp("/sys/fs/cgroup/pids/" + cg + "/pids.max")) + " " +
                      trim(slurp("/sys/fs/cgroup/cpu/" + cg + "/cpu.cfs_quota_us")) + " " +
                      trim(slurp("/sys/fs/cgroup/cpu/" + cg + "/cpu.shares")) + " " +
                      trim(slurp("/sys/fs/cgroup/memory/" + cg + "/memory.limit_in_bytes"));
    std::string devs = slurp("/sys/fs/cgroup/devices/" + cg + "/devices.list");
    bool inCgroup = rs.started && readU64("/sys/fs/cgroup/pids/" + cg + "/pids.current") >= 1;
    if (rs.started) {
      (void)pooled->stop(rs.handle, SIGKILL, 0);
      (void)pooled->wait(rs.handle, 5000);
      (void)pooled->destroy(rs.handle);
    }
    pooled.reset();
    bool sparesGone = true;
    for (const char* h : kHierarchies) {
      std::error_code ec;
      for (const auto& e : std::filesystem::directory_iterator(std::string("/sys/fs/cgroup/") + h + "/" + gFix->parent, ec)) {
        if (e.path().filename().string().rfind(nodeagent::kSparePrefix, 0) == 0) sparesGone = false;
      }
    }
    check(staleMade && staleGone, "an earlier agent's empty spare cgroup is removed when the driver starts", stale);
    check(before.size() == 2, "the driver keeps two spare cgroups ready", std::to_string(before.size()));
    check(renamed && inCgroup, "a start renames a ready spare into place and its task runs there", rs.startError);
    check(got == "77 20000 1024 50331648", "the spare gets the task's limits (pids, quota, shares, memory)", got);
    check(devs.find("c 1:3 rwm") != std::string::npos && devs.find("a *:* rwm") == std::string::npos,
          "the spare has the standard device allow-list", devs);
    check(sparesGone, "the spares left are removed with the driver");
  }

  // pids: fork until the limit refuses.
  auto lp = makeLaunch("forkbomb", {"/usr/bin/python3", "-c", R"PY(
import os, time
ok = failed = 0
for i in range(300):
    try:
        if os.fork() == 0:
            time.sleep(30)
            os._exit(0)
        ok += 1
    except OSError:
        failed += 1
print("forked", ok, "failed", failed, flush=True)
time.sleep(30)
)PY"});
  lp.launch.limits.pidsMax = 20;
  auto rp = run(d, lp, 20000, false);
  if (rp.started) {
    std::this_thread::sleep_for(std::chrono::milliseconds(500));
    std::string dir = "/sys/fs/cgroup/pids/" + rp.handle.cgroup;
    uint64_t current = readU64(dir + "/pids.current");
    std::string events = trim(slurp(dir + "/pids.events"));
    pid_t child = fork();
    if (child == 0) {
      execl("/bin/true", "true", nullptr);
      _exit(127);
    }
    int st = 0;
    bool hostFork = child > 0 && waitpid(child, &st, 0) == child && WIFEXITED(st) && WEXITSTATUS(st) == 0;
    (void)d.stop(rp.handle, SIGKILL, 0);
    auto e = d.wait(rp.handle, 5000);
    (void)d.destroy(rp.handle);
    std::string out = trim(slurp(lp.outPath));
    uint64_t maxHits = std::strtoull(events.substr(events.find(' ') + 1).c_str(), nullptr, 10);
    check(current >= 15 && current <= 20 && maxHits > 0 && hostFork && contains(out, "failed"),
          "fork bomb stops at pids.max=20, host unaffected",
          "task says '" + out + "', pids.current=" + std::to_string(current) + " pids.events='" + events +
              "' host fork ok=" + (hostFork ? "yes" : "no"));
  } else {
    check(false, "fork bomb task started", rp.startError);
  }

  // cpu: 500m of a busy loop, measured by cpuacct.usage.
  auto lc = makeLaunch("busy", sh("while :; do :; done"));
  lc.launch.limits.cpuQuotaMicros = 50000;
  auto rc = run(d, lc, 0, false);
  if (rc.started) {
    std::string usage = "/sys/fs/cgroup/cpuacct/" + rc.handle.cgroup + "/cpuacct.usage";
    std::this_thread::sleep_for(std::chrono::milliseconds(300));
    uint64_t u0 = readU64(usage);
    auto t0 = Clock::now();
    std::string stat = "/sys/fs/cgroup/cpu/" + rc.handle.cgroup + "/cpu.stat";
    auto throttled = [&stat] {  // periods in which the task used up its quota
      auto text = nodeagent::readFile(stat);
      size_t at = text ? text->find("nr_throttled ") : std::string::npos;
      return at == std::string::npos ? uint64_t{0} : std::stoull(text->substr(at + 13));
    };
    uint64_t th0 = throttled();
    std::this_thread::sleep_for(std::chrono::seconds(2));
    uint64_t u1 = readU64(usage);
    uint64_t th1 = throttled();
    double wall = std::chrono::duration<double>(Clock::now() - t0).count();
    double frac = static_cast<double>(u1 - u0) / 1e9 / wall;
    (void)d.stop(rc.handle, SIGTERM, 1000);
    (void)d.wait(rc.handle, 5000);
    (void)d.destroy(rc.handle);
    char buf[128];
    snprintf(buf, sizeof buf, "%.3f of a core over %.2f s, throttled in %llu periods", frac, wall,
             static_cast<unsigned long long>(th1 - th0));
    // Never above the quota; at about half a core, unless other processes took the CPU (then the
    // quota still shows: the task hit it in some periods).
    check(frac < 0.6 && (frac > 0.4 || th1 > th0), "cpu limit 500m", buf);
  } else {
    check(false, "busy task started", rc.startError);
  }
}

void checkStop(nodeagent::Driver& d) {
  auto lg = makeLaunch("graceful", sh("sleep 100"));
  auto rg = run(d, lg, 0, false);
  auto t0 = Clock::now();
  Result dummy;
  if (rg.started) {
    auto st = d.stop(rg.handle, SIGTERM, 5000);
    double s = std::chrono::duration<double>(Clock::now() - t0).count();
    auto e = d.wait(rg.handle, 5000);
    (void)d.destroy(rg.handle);
    check(st.isOk() && e && e->signal == SIGTERM && s < 2.5, "SIGTERM forwarded through the init",
          (e ? exitText(*e) : "no exit") + " after " + std::to_string(s) + " s");
  }

  auto l = makeLaunch("stubborn", sh("trap '' TERM; while :; do sleep 1; done"));
  auto r = run(d, l, 0, false);
  if (!r.started) {
    check(false, "stubborn task started", r.startError);
    return;
  }
  std::this_thread::sleep_for(std::chrono::milliseconds(200));
  t0 = Clock::now();
  auto st = d.stop(r.handle, SIGTERM, 700);
  double s = std::chrono::duration<double>(Clock::now() - t0).count();
  auto procs = trim(slurp("/sys/fs/cgroup/pids/" + r.handle.cgroup + "/cgroup.procs"));
  auto e = d.wait(r.handle, 5000);
  bool aliveAfter = d.alive(r.handle);
  (void)d.destroy(r.handle);
  check(st.isOk() && s >= 0.6 && procs.empty() && !aliveAfter && e.has_value(),
        "task ignoring SIGTERM is SIGKILLed after killTimeout, cgroup empty",
        "stop took " + std::to_string(s) + " s, procs='" + procs + "', " + (e ? exitText(*e) : "no exit"));
}

// The agent calls the driver from several threads; start four tasks at once.
void checkConcurrentStarts(nodeagent::Driver& d) {
  constexpr int kTasks = 4;
  std::vector<Launched> ls;
  ls.reserve(kTasks);
  for (int i = 0; i < kTasks; ++i) ls.push_back(makeLaunch("par" + std::to_string(i), sh("echo task-" + std::to_string(i))));
  std::vector<Result> rs(kTasks);
  std::vector<std::thread> threads;
  threads.reserve(kTasks);
  for (int i = 0; i < kTasks; ++i) threads.emplace_back([&, i] { rs[i] = run(d, ls[i]); });
  for (auto& t : threads) t.join();
  bool ok = true;
  std::string detail;
  for (int i = 0; i < kTasks; ++i) {
    ok = ok && rs[i].started && rs[i].exit.exitCode == 0 && trim(rs[i].out) == "task-" + std::to_string(i);
    detail += trim(rs[i].out) + (rs[i].startError.empty() ? "" : "(" + rs[i].startError + ")") + " ";
  }
  check(ok, "4 tasks started concurrently from 4 threads", detail);
}

// libcgroup's mount table after the driver's first use of libcgroup (nodeagent/driver/cgroup.cc
// hands back its all-zero pages): still answers every mounted controller, and only the pages that
// hold data are resident.
void checkLibcgroupTable() {
  bool intact = true;
  std::string detail;
  for (const char* c : {"cpu", "memory", "pids", "devices", "freezer"}) {
    char* mnt = nullptr;
    const std::string want = std::string("/sys/fs/cgroup/") + c;
    if (access(want.c_str(), F_OK) != 0) continue;
    const bool ok = cgroup_get_subsys_mount_point(const_cast<char*>(c), &mnt) == 0 && mnt != nullptr &&
                    std::filesystem::equivalent(mnt, want);
    if (!ok) {
      intact = false;
      detail += std::string(c) + "=" + (mnt != nullptr ? mnt : "none") + " ";
    }
    free(mnt);
  }
  check(intact, "libcgroup's mount table answers every controller after its zero pages were handed back", detail);
  void* table = dlsym(RTLD_DEFAULT, "cg_mount_table");
  Dl_info info{};
  void* entry = nullptr;
  if (table == nullptr || dladdr1(table, &info, &entry, RTLD_DL_SYMENT) == 0 || entry == nullptr) {
    std::cout << "  (no cg_mount_table symbol in this libcgroup: residency not checked)\n";
    return;
  }
  const size_t size = static_cast<const ElfW(Sym)*>(entry)->st_size;
  const auto page = static_cast<uintptr_t>(sysconf(_SC_PAGESIZE));
  const uintptr_t begin = (reinterpret_cast<uintptr_t>(table) + page - 1) / page * page;
  const uintptr_t end = (reinterpret_cast<uintptr_t>(table) + size) / page * page;
  std::vector<unsigned char> resident((end - begin) / page);
  size_t inCore = 0;
  if (mincore(reinterpret_cast<void*>(begin), end - begin, resident.data()) == 0) {
    for (unsigned char r : resident) inCore += r & 1;
  }
  check(inCore * 4 < resident.size(), "libcgroup's mount table is mostly not resident after init",
        std::to_string(inCore) + " of " + std::to_string(resident.size()) + " pages resident");
}

void checkReattach() {
  auto a = nodeagent::newExecDriver(gFix->opts);
  auto l = makeLaunch("reattach", sh("sleep 1; exit 7"));
  auto r = run(*a, l, 0, false);
  if (!r.started) {
    check(false, "reattach task started", r.startError);
    return;
  }
  auto b = nodeagent::newExecDriver(gFix->opts);  // as after an agent restart
  auto found = b->recover();
  std::optional<TaskHandle> h;
  for (auto& [id, handle] : found) {
    if (id == l.launch.id) h = handle;
  }
  check(h && h->pid == r.handle.pid && h->startTicks == r.handle.startTicks && h->cgroup == r.handle.cgroup &&
            b->alive(*h),
        "recover() finds the running task with the same pid",
        h ? "pid " + std::to_string(h->pid) + " vs " + std::to_string(r.handle.pid) : "not found");
  if (!h) {
    (void)a->stop(r.handle, SIGKILL, 0);
    (void)a->destroy(r.handle);
    return;
  }
  auto e = b->wait(*h, 10000);
  check(e && e->exitCode == 7, "wait() on the recovered handle reports exit 7", e ? exitText(*e) : "timeout");
  (void)b->destroy(*h);
  check(b->recover().empty(), "nothing left to recover after destroy");
}

void checkRawExec() {
  auto d = nodeagent::newRawExecDriver(gFix->rawOpts);
  auto l = makeLaunch("raw", sh("cat /proc/self/cgroup; ls /"));
  l.launch.user = "";
  auto r = run(*d, l);
  check(r.started && r.exit.exitCode == 0 && contains(r.out, "pids:/" + gFix->rawParent + "/" + l.launch.id) &&
            contains(r.out, "work\n"),
        "raw_exec runs on the host in its cgroup", exitText(r.exit) + " " + r.startError);
}

void checkDevices(nodeagent::Driver& d) {
  if (contains(slurp("/proc/devices"), "\n195 ")) {
    check(false, "devices", "major 195 is in use on this host; fake nodes would be real");
    return;
  }
  std::string fake0 = "/dev/foxden-fake-nvidia0", fake1 = "/dev/foxden-fake-nvidia1";
  for (int i = 0; i < 2; ++i) {
    std::string path = i == 0 ? fake0 : fake1;
    unlink(path.c_str());
    if (mknod(path.c_str(), S_IFCHR | 0666, makedev(195, i)) != 0) {
      check(false, "mknod " + path, std::strerror(errno));
      return;
    }
    gFix->fakeDevices.push_back(path);
  }
  auto l = makeLaunch("devices", sh(
      "echo \"DEV=$(ls /dev | tr '\\n' ' ')\"\n"
      "echo \"OPEN0=$(cat /dev/foxden-fake-nvidia0 2>&1)\"\n"
      "mknod /tmp/fake1 c 195 1 2>/dev/null && echo MKNOD=yes || echo MKNOD=no\n"
      "echo \"OPEN1=$(cat /local/fake1 2>&1)\"\n"));
  l.launch.devices = {fake0};
  // A node smuggled into the task's writable dir by the host: nodev must stop it.
  mknod((l.launch.taskDir + "/local/fake1").c_str(), S_IFCHR | 0666, makedev(195, 1));
  auto r = run(d, l);
  auto kv = parseKv(r.out);
  check(contains(kv["DEV"], "foxden-fake-nvidia0") && !contains(kv["DEV"], "foxden-fake-nvidia1"),
        "/dev holds the standard nodes plus exactly the assigned fake GPU", kv["DEV"] + " " + r.startError);
  check(contains(kv["OPEN0"], "No such device or address"), "assigned fake0 opens past the device cgroup (ENXIO)",
        kv["OPEN0"]);
  check(kv["MKNOD"] == "no" && !contains(kv["OPEN1"], "No such device"), "mknod denied, smuggled fake1 unusable",
        "mknod=" + kv["MKNOD"] + " open=" + kv["OPEN1"]);

  // The device cgroup on its own (raw_exec sees the host /dev): fake1 is EPERM, fake0 ENXIO.
  auto raw = nodeagent::newRawExecDriver(gFix->rawOpts);
  auto lr = makeLaunch("devices-raw", sh("echo \"A=$(cat " + fake0 + " 2>&1)\"; echo \"B=$(cat " + fake1 +
                                         " 2>&1)\"; echo \"N=$(head -c 1 /dev/null 2>&1; echo ok)\""));
  lr.launch.user = "";
  lr.launch.devices = {fake0};
  auto rr = run(*raw, lr);
  auto kr = parseKv(rr.out);
  check(contains(kr["A"], "No such device or address") && contains(kr["B"], "Operation not permitted") &&
            kr["N"] == "ok",
        "device cgroup: assigned 195:0 allowed, 195:1 EPERM, /dev/null allowed",
        "fake0: " + kr["A"] + " | fake1: " + kr["B"]);
}

void checkV2Mapping() {
  std::string root = gFix->work + "/fake-cgroup2";
  mkdir(root.c_str(), 0755);
  nodeagent::CgroupManager m(nodeagent::CgroupMode::kV2, root);
  nodeagent::CgroupLimits lim;
  lim.cpuShares = 512;
  lim.cpuQuotaMicros = 50000;
  lim.memoryBytes = 64 << 20;
  lim.pidsMax = 16;
  auto st = m.create("foxden/t1", lim, {});
  auto f = [&](const std::string& rel) { return trim(slurp(root + "/" + rel)); };
  std::string got = "cpu.max='" + f("foxden/t1/cpu.max") + "' cpu.weight=" + f("foxden/t1/cpu.weight") +
                    " memory.max=" + f("foxden/t1/memory.max") + " pids.max=" + f("foxden/t1/pids.max");
  check(st.isOk() && f("cgroup.subtree_control") == "+cpu +memory +pids" &&
            f("foxden/cgroup.subtree_control") == "+cpu +memory +pids" && f("foxden/t1/cpu.max") == "50000 100000" &&
            f("foxden/t1/cpu.weight") == "20" && f("foxden/t1/memory.max") == "67108864" &&
            f("foxden/t1/pids.max") == "16" && !std::filesystem::exists(root + "/foxden/t1/memory.limit_in_bytes"),
        "cgroup v2 file mapping (fake tree)", got + " " + st.message());
  auto a = m.attach("foxden/t1", 4242);
  std::ofstream(root + "/foxden/t1/memory.events") << "low 0\nhigh 0\nmax 3\noom 1\noom_kill 2\n";
  auto procs = m.procs("foxden/t1");
  check(a.isOk() && procs.size() == 1 && procs[0] == 4242 && m.oomKills("foxden/t1") == 2,
        "cgroup v2 attach via cgroup.procs, oom_kill from memory.events");
  nodeagent::CgroupLimits none;
  auto s = nodeagent::cgroupSettings(nodeagent::CgroupMode::kV2, none, true);
  bool unlimited = false;
  for (const auto& x : s) unlimited = unlimited || (x.file == "cpu.max" && x.value == "max 100000");
  auto v1 = nodeagent::cgroupSettings(nodeagent::CgroupMode::kV1, lim, true);
  size_t li = 0, mi = 0;
  for (size_t i = 0; i < v1.size(); ++i) {
    if (v1[i].file == "memory.limit_in_bytes") li = i;
    if (v1[i].file == "memory.memsw.limit_in_bytes") mi = i;
  }
  check(unlimited && li < mi && li > 0, "no quota -> cpu.max 'max'; v1 memsw written after limit_in_bytes");
}

}  // namespace

// The cgroup v2 device filter (a BPF program), on this host's cgroup2 mount: the unified hierarchy
// of a hybrid v1 host, or the root of a v2 host. A child moved into the cgroup opens what the rules
// allow and gets EPERM for the rest, even as root.
void checkV2DeviceFilter() {
  std::string base;
  for (const char* m : {"/sys/fs/cgroup/unified", "/sys/fs/cgroup"}) {
    if (nodeagent::detectCgroupMode(m) == nodeagent::CgroupMode::kV2) {
      base = m;
      break;
    }
  }
  if (base.empty()) {
    std::cout << "SKIP: no cgroup2 mount: the v2 device filter is not checked here\n";
    return;
  }
  std::string dir = base + "/foxden-devfilter-" + std::to_string(getpid());
  mkdir(dir.c_str(), 0755);
  auto rules = nodeagent::standardDeviceRules();  // null zero full random urandom tty ptmx pts
  auto st = nodeagent::attachDeviceFilter(dir, rules);
  check(st.isOk(), "v2 device filter (BPF) loads and attaches", st.message());
  int res[2];
  if (pipe(res) < 0) return;
  pid_t child = fork();
  if (child == 0) {
    std::string me = "0";
    int fd = open((dir + "/cgroup.procs").c_str(), O_WRONLY);
    bool moved = fd >= 0 && write(fd, me.data(), me.size()) == 1;
    int nullFd = open("/dev/null", O_RDONLY);
    int kmsgFd = open("/dev/kmsg", O_RDONLY);  // c 1:11: not in the rules
    int kmsgErr = errno;
    char out[2] = {static_cast<char>(moved && nullFd >= 0), static_cast<char>(kmsgFd < 0 && kmsgErr == EPERM)};
    (void)!write(res[1], out, 2);
    _exit(0);
  }
  close(res[1]);
  char got[2] = {0, 0};
  (void)!read(res[0], got, 2);
  close(res[0]);
  waitpid(child, nullptr, 0);
  check(got[0] == 1, "v2 device filter: an allowed node (/dev/null) opens", "");
  check(got[1] == 1, "v2 device filter: a node outside the rules (/dev/kmsg) is EPERM even for root", "");
  rmdir(dir.c_str());
}

// The zygote (nodeagent/driver/zygote.h): its inits are this process's children, as if cloned here;
// once it is gone, starts clone from here.
std::string exeOf(pid_t pid) {
  char buf[4096];
  ssize_t n = readlink(("/proc/" + std::to_string(pid) + "/exe").c_str(), buf, sizeof buf - 1);
  return n > 0 ? std::string(buf, static_cast<size_t>(n)) : "";
}

// forkZygote: a zygote started without the foxden-zygote binary (it serves from a fork of us).
void checkZygote(pid_t zygote, int forkZygote, pid_t forkZygotePid) {
  std::string exe = exeOf(zygote);
  check(exe.size() > 14 && exe.substr(exe.size() - 14) == "/foxden-zygote",
        "the zygote is the small foxden-zygote binary next to ours", exe);
  {
    auto opts = gFix->opts;
    opts.zygoteFd = forkZygote;
    auto fd = nodeagent::newExecDriver(opts);
    auto l = makeLaunch("fork-zygote", sh("echo from-fork-zygote"));
    auto r = run(*fd, l);
    check(forkZygote >= 0 && exeOf(forkZygotePid) == exeOf(getpid()) && r.started && r.exit.exitCode == 0 &&
              contains(r.out, "from-fork-zygote"),
          "without the binary, a zygote forked from the agent clones the inits",
          exeOf(forkZygotePid) + " " + exitText(r.exit) + " " + r.startError);
  }
  auto d = nodeagent::newExecDriver(gFix->opts);
  auto l = makeLaunch("zygote-child", {"/bin/sleep", "1000"});
  auto r = run(*d, l, 0, false);
  std::string ppid;
  if (r.started) {
    std::istringstream status(slurp("/proc/" + std::to_string(r.handle.pid) + "/status"));
    std::string line;
    while (std::getline(status, line)) {
      if (line.rfind("PPid:", 0) == 0) ppid = line.substr(line.find_first_not_of(" \t", 5));
    }
    (void)d->stop(r.handle, SIGTERM, 5000);
    auto e = d->wait(r.handle, 10000);  // waitid on a pidfd: only a child can be waited for
    check(e.has_value() && e->signal == SIGTERM, "an init cloned by the zygote is waited for as our child",
          e ? exitText(*e) : "no exit");
    (void)d->destroy(r.handle);
  }
  check(r.started && ppid == std::to_string(getpid()), "the zygote's init has the driver's process as parent",
        "PPid " + ppid + " " + r.startError);

  if (zygote > 0) {
    kill(zygote, SIGKILL);
    waitpid(zygote, nullptr, 0);
  }
  auto l2 = makeLaunch("no-zygote", sh("echo still-starts"));
  auto r2 = run(*d, l2);
  check(r2.started && r2.exit.exitCode == 0 && contains(r2.out, "still-starts"),
        "with the zygote killed, starts clone from the driver's process", exitText(r2.exit) + " " + r2.startError);
}

int main() {
  std::cout.setf(std::ios::unitbuf);
  if (geteuid() != 0) {
    std::cout << "SKIP: exec_driver_check needs root\n0 passed, 0 failed\n";
    return 0;
  }
  if (nodeagent::detectCgroupMode() == nodeagent::CgroupMode::kV2 || access("/sys/fs/cgroup/pids", F_OK) != 0) {
    // The battery reads v1 files directly; on a v2 host only the file mapping is checked.
    Fixture fix;
    gFix = &fix;
    std::cout << "SKIP: no cgroup v1 hierarchies here; running the v2 mapping checks only\n";
    checkV2Mapping();
    checkV2DeviceFilter();
    std::cout << gPassed << " passed, " << gFailed << " failed" << std::endl;
    return gFailed == 0 ? 0 : 1;
  }
  signal(SIGPIPE, SIG_IGN);  // as the agent would; the driver must reset it for tasks
  // As in foxden-agent: inits are cloned by a zygote forked while this process has one thread.
  pid_t zygotePid = -1;
  const int zygote = nodeagent::startZygote(&zygotePid);
  check(zygote >= 0, "zygote started", std::strerror(errno));
  pid_t forkZygotePid = -1;
  const int forkZygote = nodeagent::startZygote(&forkZygotePid, "");
  Fixture fix;
  gFix = &fix;
  fix.opts.zygoteFd = zygote;
  fix.rawOpts.zygoteFd = zygote;
  auto seccomp = nodeagent::buildSeccompProgram();
  check(seccomp.isOk() && !seccomp->empty(), "seccomp profile compiles",
        seccomp ? std::to_string(seccomp->size() / 8) + " BPF instructions" : seccomp.status().message());
  {
    auto d = nodeagent::newExecDriver(fix.opts);
    checkBasics(*d);
    checkIsolation(*d, "nobody");
    checkIsolation(*d, "root");
    checkCapabilities(*d);
    checkLimits(*d);
    checkStop(*d);
    checkDevices(*d);
    checkConcurrentStarts(*d);
  }
  checkLibcgroupTable();
  checkReattach();
  checkRawExec();
  checkZygote(zygotePid, forkZygote, forkZygotePid);  // last: it kills the zygote
  checkV2Mapping();
  checkV2DeviceFilter();
  check(fix.cgroupsGone(), "every task cgroup removed by destroy()");
  fix.cleanup();
  std::cout << gPassed << " passed, " << gFailed << " failed" << std::endl;
  return gFailed == 0 ? 0 : 1;
}
