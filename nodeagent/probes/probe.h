#pragma once
// Kubernetes-style task probes (liveness, readiness, startup): parse a probe object, run one probe,
// and keep probing on a thread with the kubelet's threshold semantics.
//
//   httpGet    GET http://host:port/path over a plain socket; success on a 200..399 status.
//   tcpSocket  success when a TCP connect completes within the timeout.
//   exec       the command inside the task's namespaces (mnt, uts, ipc, pid), root, working
//              directory and credentials; success on exit status 0 within the timeout.
//
// Threads: parseProbe and runProbe are reentrant. A ProbeRunner owns one thread from start() to
// stop(); its callback runs on that thread.

#include <sys/types.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <functional>
#include <map>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "kube/json.h"
#include "kube/status.h"

namespace nodeagent {

enum class ProbeKind { kHttpGet, kTcpSocket, kExec };

struct HttpHeader {
  std::string name;
  std::string value;
};

struct ProbeSpec {
  ProbeKind kind = ProbeKind::kExec;
  // httpGet and tcpSocket.
  std::string host = "127.0.0.1";  // tasks share the host's network: their ports are local
  int port = 0;                     // resolved: a named port is looked up at parse time
  // httpGet.
  std::string path = "/";
  std::vector<HttpHeader> headers;
  // exec: argv; argv[0] without a '/' is searched in the task's PATH.
  std::vector<std::string> command;
  // Milliseconds rather than the API's seconds so tests can probe quickly.
  std::chrono::milliseconds initialDelay{0};
  std::chrono::milliseconds period{10000};
  std::chrono::milliseconds timeout{1000};
  int successThreshold = 1;
  int failureThreshold = 3;
};

// `probe` is one Kubernetes Probe object (e.g. a task's `livenessProbe`); `ports` maps the
// allocation's port names to numbers, for httpGet/tcpSocket `port: "http"`.
[[nodiscard]] kube::StatusOr<ProbeSpec> parseProbe(const kube::JsonValue& probe,
                                                  const std::map<std::string, int>& ports);

struct ProbeResult {
  bool success = false;
  std::string message;  // why it failed, or the exec probe's output (at most a few KB)
};

// Runs the probe once, blocking at most about spec.timeout. For exec, `taskInitPid` is the task's
// init in the host PID namespace (TaskHandle::pid); <= 0 runs the command on the host (raw_exec,
// tests). `cancelFd`, when >= 0, ends the probe early (as a failure) once it becomes readable.
ProbeResult runProbe(const ProbeSpec& spec, pid_t taskInitPid, int cancelFd = -1);

// Probes periodically like the kubelet's prober worker: nothing during initialDelay, then one
// probe every period (start to start); the reported state changes only after successThreshold
// consecutive successes or failureThreshold consecutive failures, and the callback runs on those
// changes only. The initial state is not reported: readiness starts unhealthy, liveness healthy.
//
// The callback must not call stop() on its own runner (stop joins the thread that runs it).
class ProbeRunner {
 public:
  using Callback = std::function<void(bool healthy)>;

  ProbeRunner();
  ~ProbeRunner();  // stop()
  ProbeRunner(const ProbeRunner&) = delete;
  ProbeRunner& operator=(const ProbeRunner&) = delete;

  // Starts probing; a runner already started is stopped first. `initiallyHealthy`: false for
  // readiness (not ready until proven), true for liveness (alive until proven dead).
  void start(ProbeSpec spec, pid_t taskInitPid, Callback callback, bool initiallyHealthy = false);
  // Returns promptly: wakes the wait between probes and cancels a probe in flight.
  void stop();

  bool healthy() const { return healthy_.load(); }
  ProbeResult lastResult() const;

 private:
  void run(const ProbeSpec& spec, pid_t pid, const Callback& callback);
  // Waits until `deadline` or stop(); false when stopping.
  bool waitUntil(std::chrono::steady_clock::time_point deadline);

  std::thread thread_;
  mutable std::mutex mu_;
  std::condition_variable cv_;
  bool stopping_ = false;          // guarded by mu_
  ProbeResult last_;               // guarded by mu_
  std::atomic<bool> healthy_{false};
  // Self-pipe: stop() writes a byte so that a probe blocked in poll() returns at once.
  int cancelRead_ = -1;
  int cancelWrite_ = -1;
};

}  // namespace nodeagent
