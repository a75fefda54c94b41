// probe_check: exec probes against real tasks of the exec driver (needs root and cgroup v1, as on
// the CI host). Checks that a probe runs inside the task's root, mount/pid/uts namespaces and
// credentials, sees files the host puts into the task directory, times out and kills its command,
// and drives a ProbeRunner. Prints one line per check and "N passed, N failed"; exits non-zero on
// any failure. Everything it creates (cgroups under foxden-probe-<pid>, a work dir) is removed.

#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <condition_variable>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <mutex>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "nodeagent/driver/cgroup.h"
#include "nodeagent/driver/exec_driver.h"
#include "nodeagent/probes/probe.h"

#include "tests/integration/check.h"

namespace {

using namespace std::chrono_literals;
using nodeagent::ProbeKind;
using nodeagent::ProbeSpec;
using nodeagent::TaskHandle;
using nodeagent::TaskLaunch;
using Clock = std::chrono::steady_clock;

using integration::check;
using integration::gFailed;
using integration::gPassed;
using integration::slurp;
using integration::trim;


struct Fixture {
  std::string work;
  std::string parent = "foxden-probe-" + std::to_string(getpid());
  nodeagent::ExecDriverOptions opts;

  Fixture() {
    char tmpl[] = "/tmp/foxden-probe-XXXXXX";
    work = mkdtemp(tmpl);
    chmod(work.c_str(), 0755);
    mkdir((work + "/alloc").c_str(), 0777);
    chmod((work + "/alloc").c_str(), 01777);
    opts.cgroupParent = parent;
    opts.stateDir = work + "/state";
  }

  // Kills whatever is left in our cgroups and removes them and the work dir.
  ~Fixture() {
    integration::removeTaskCgroups(parent);
    while (waitpid(-1, nullptr, WNOHANG) > 0) {
    }
    std::error_code ec;
    std::filesystem::remove_all(work, ec);
  }
};

TaskLaunch makeLaunch(Fixture& fix, const std::string& name, const std::string& user) {
  TaskLaunch l;
  std::string dir = fix.work + "/" + name;
  mkdir(dir.c_str(), 0755);
  for (const char* sub : {"/local", "/secrets", "/tmp"}) {
    std::string d = dir + sub;
    mkdir(d.c_str(), 0755);
    if (chown(d.c_str(), 65534, 65534) != 0) perror("chown");
  }
  l.id = "p" + std::to_string(getpid()) + "." + name;
  l.argv = {"/bin/sleep", "600"};  // serves nothing: only exec probes can tell it is ready
  l.user = user;
  l.taskDir = dir;
  l.allocDir = fix.work + "/alloc";
  return l;
}

ProbeSpec execSpec(std::vector<std::string> command, std::chrono::milliseconds timeout = 5000ms) {
  ProbeSpec s;
  s.kind = ProbeKind::kExec;
  s.command = std::move(command);
  s.timeout = timeout;
  return s;
}

std::string capEff(const std::string& status) {
  std::istringstream in(status);
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("CapEff:", 0) == 0) {
      std::string v = trim(line.substr(7));
      return v.substr(std::min(v.size(), v.find_first_not_of(" \t")));
    }
  }
  return "";
}

// Whether any process on the host has exactly this argv.
bool processRuns(const std::vector<std::string>& argv) {
  std::string want;
  for (const auto& a : argv) want += a + '\0';
  std::error_code ec;
  for (const auto& e : std::filesystem::directory_iterator("/proc", ec)) {
    if (slurp(e.path().string() + "/cmdline") == want) return true;
  }
  return false;
}

void checkNobodyTask(nodeagent::Driver& d, Fixture& fix) {
  TaskLaunch l = makeLaunch(fix, "web", "nobody");
  auto h = d.start(l);
  check(h.isOk(), "task starts", h ? "" : h.status().message());
  if (!h) return;
  pid_t init = h->pid;

  auto r = runProbe(execSpec({"test", "-f", "/local/ready"}), init);
  check(!r.success, "exec probe fails before /local/ready exists", r.message);
  std::ofstream(l.taskDir + "/local/ready") << "yes\n";
  r = runProbe(execSpec({"test", "-f", "/local/ready"}), init);
  check(r.success, "exec probe succeeds once the host created <taskDir>/local/ready", r.message);

  r = runProbe(execSpec({"id", "-u"}), init);
  check(r.success && trim(r.message) == "65534", "id -u in the probe is the task's uid", trim(r.message));
  r = runProbe(execSpec({"id", "-g"}), init);
  check(r.success && trim(r.message) == "65534", "id -g in the probe is the task's gid", trim(r.message));
  r = runProbe(execSpec({"grep", "CapEff", "/proc/self/status"}), init);
  check(r.success && capEff(r.message) == "0000000000000000", "a non-root probe has no capabilities",
        trim(r.message));

  // Namespaces: the probe's own links equal the init's as the host sees them.
  for (const char* ns : {"mnt", "pid", "uts", "ipc"}) {
    std::string host = std::filesystem::read_symlink("/proc/" + std::to_string(init) + "/ns/" + ns).string();
    r = runProbe(execSpec({"readlink", std::string("/proc/self/ns/") + ns}), init);
    check(r.success && trim(r.message) == host, std::string("probe is in the task's ") + ns + " namespace",
          trim(r.message) + " vs " + host);
  }
  // The probe runs in the task's cgroup (its limits apply), as an exec probe runs in its container.
  r = runProbe(execSpec({"grep", "pids:", "/proc/self/cgroup"}), init);
  check(r.success && r.message.find("/" + l.id) != std::string::npos, "probe runs in the task's cgroup",
        trim(r.message));
  r = runProbe(execSpec({"cat", "/proc/sys/kernel/hostname"}), init);
  check(r.success && trim(r.message) == l.id, "probe sees the task's hostname", trim(r.message));
  r = runProbe(execSpec({"pwd"}), init);
  check(r.success && trim(r.message) == "/local", "probe runs in the task's working directory", trim(r.message));
  // The task's root, not the host's: the host's work dir does not exist inside.
  r = runProbe(execSpec({"test", "-e", fix.work}), init);
  check(!r.success, "probe does not see the host's filesystem", r.message);
  std::ofstream(fix.work + "/alloc/shared") << "x\n";
  r = runProbe(execSpec({"cat", "/alloc/shared"}), init);
  check(r.success && trim(r.message) == "x", "probe sees the task's /alloc", r.message);
  r = runProbe(execSpec({"touch", "/etc/probe-was-here"}), init);
  check(!r.success, "probe cannot write the read-only root", trim(r.message));

  // Timeout: the command is killed (it is not left running in the task's PID namespace).
  auto t0 = Clock::now();
  r = runProbe(execSpec({"sleep", "4242"}, 500ms), init);
  auto took = std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - t0).count();
  check(!r.success && r.message.find("timed out") != std::string::npos && took < 10000,
        "exec probe past its timeout fails", r.message + " after " + std::to_string(took) + " ms");
  bool gone = false;
  for (int i = 0; i < 100 && !gone; ++i) {
    gone = !processRuns({"sleep", "4242"});
    if (!gone) std::this_thread::sleep_for(50ms);
  }
  check(gone, "the timed-out command was killed");

  r = runProbe(execSpec({"no-such-command"}), init);
  check(!r.success && r.message.find("execve") != std::string::npos, "missing command fails clearly", r.message);

  // A ProbeRunner on the task: ready once the file is there again.
  std::filesystem::remove(l.taskDir + "/local/ready");
  std::mutex mu;
  std::condition_variable cv;
  std::vector<bool> seen;
  nodeagent::ProbeRunner runner;
  ProbeSpec s = execSpec({"test", "-f", "/local/ready"});
  s.period = 100ms;
  s.successThreshold = 2;
  runner.start(s, init, [&](bool healthy) {
    std::lock_guard<std::mutex> lock(mu);
    seen.push_back(healthy);
    cv.notify_all();
  });
  std::this_thread::sleep_for(300ms);
  std::ofstream(l.taskDir + "/local/ready") << "yes\n";
  {
    std::unique_lock<std::mutex> lock(mu);
    cv.wait_for(lock, 20s, [&] { return !seen.empty(); });
  }
  runner.stop();
  check(seen == std::vector<bool>{true}, "ProbeRunner reports ready once the file exists",
        "callbacks: " + std::to_string(seen.size()));

  (void)d.stop(*h, SIGKILL, 0);
  (void)d.wait(*h, 10000);
  r = runProbe(execSpec({"true"}), init);
  check(!r.success, "exec probe of a stopped task fails", r.message);
  (void)d.destroy(*h);
}

void checkRootTask(nodeagent::Driver& d, Fixture& fix) {
  // A root task runs with a reduced capability set: its probe must not get more.
  TaskLaunch l = makeLaunch(fix, "rootish", "root");
  l.capabilities = {"CAP_NET_BIND_SERVICE"};
  auto h = d.start(l);
  check(h.isOk(), "root task starts", h ? "" : h.status().message());
  if (!h) return;
  std::string taskCaps;
  std::istringstream children(slurp("/proc/" + std::to_string(h->pid) + "/task/" + std::to_string(h->pid) + "/children"));
  pid_t task = 0;
  if (children >> task) taskCaps = capEff(slurp("/proc/" + std::to_string(task) + "/status"));
  auto r = runProbe(execSpec({"grep", "CapEff", "/proc/self/status"}), h->pid);
  check(r.success && taskCaps == "0000000000000400" && capEff(r.message) == taskCaps,
        "a root task's probe has the task's capabilities, no more", capEff(r.message) + " vs " + taskCaps);
  r = runProbe(execSpec({"id", "-u"}), h->pid);
  check(r.success && trim(r.message) == "0", "id -u in a root task's probe is 0", trim(r.message));
  (void)d.stop(*h, SIGKILL, 0);
  (void)d.wait(*h, 10000);
  (void)d.destroy(*h);
}

}  // namespace

int main() {
  std::cout.setf(std::ios::unitbuf);
  if (geteuid() != 0) {
    std::cout << "SKIP: probe_check needs root\n0 passed, 0 failed\n";
    return 0;
  }
  if (nodeagent::detectCgroupMode() == nodeagent::CgroupMode::kV2 || access("/sys/fs/cgroup/pids", F_OK) != 0) {
    std::cout << "SKIP: probe_check needs cgroup v1 hierarchies\n0 passed, 0 failed\n";
    return 0;
  }
  signal(SIGPIPE, SIG_IGN);  // as the agent does
  {
    Fixture fix;
    auto d = nodeagent::newExecDriver(fix.opts);
    checkNobodyTask(*d, fix);
    checkRootTask(*d, fix);
  }
  std::cout << gPassed << " passed, " << gFailed << " failed" << std::endl;
  return gFailed == 0 ? 0 : 1;
}
