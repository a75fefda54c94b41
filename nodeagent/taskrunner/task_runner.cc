#include "nodeagent/taskrunner/task_runner.h"

#include <fcntl.h>
#include <pwd.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cstring>
#include <fstream>
#include <iostream>
#include <sstream>

#include "kube/files.h"
#include "kube/quantity.h"
#include "kube/timeutil.h"
#include "nodeagent/logs/log_files.h"
#include "nodeagent/taskrunner/template.h"

namespace nodeagent {

using kube::Json;
using kube::JsonValue;
using kube::Status;
using kube::StatusOr;

namespace {

constexpr const char* kDefaultPath = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
constexpr int64_t kDefaultPidsMax = 4096;

// Kubernetes' $(VAR) expansion: defined names are replaced, $$ escapes, anything else stays.
std::string expand(const std::string& in, const std::map<std::string, std::string>& env) {
  std::string out;
  for (size_t i = 0; i < in.size(); ++i) {
    if (in[i] == '$' && i + 1 < in.size() && in[i + 1] == '$') {
      out.push_back('$');
      ++i;
    } else if (in[i] == '$' && i + 1 < in.size() && in[i + 1] == '(') {
      size_t close = in.find(')', i + 2);
      if (close == std::string::npos) {
        out.append(in, i, std::string::npos);
        break;
      }
      std::string name = in.substr(i + 2, close - i - 2);
      auto it = env.find(name);
      if (it != env.end()) {
        out += it->second;
      } else {
        out.append(in, i, close - i + 1);
      }
      i = close;
    } else {
      out.push_back(in[i]);
    }
  }
  return out;
}

std::vector<std::string> stringList(const JsonValue* v) {
  std::vector<std::string> out;
  if (v == nullptr || !v->IsArray()) return out;
  for (const auto& s : v->GetArray()) {
    if (s.IsString()) out.emplace_back(kube::view(s));
  }
  return out;
}

StatusOr<int64_t> quantityMilli(const JsonValue& task, const char* kind, const char* res) {
  const JsonValue* q = kube::find(task, {"resources", kind, res});
  if (q == nullptr) return int64_t{0};
  std::string text = q->IsString() ? std::string(kube::view(*q)) : (q->IsNumber() ? kube::toJson(*q) : "");
  auto parsed = kube::Quantity::parse(text);
  if (!parsed) {
    return Status::invalid(std::string("resources.") + kind + "." + res + ": invalid quantity \"" +
                           text + "\": " + parsed.status().message());
  }
  // Schema-valid is not enough: the pattern admits signs and exponents.
  std::string field = std::string("resources.") + kind + "." + res + ": Invalid value: \"" + text + "\": ";
  if (parsed->sign() < 0) return Status::invalid(field + "must be greater than or equal to 0");
  // Past ~9.2e15 units the milli-value saturates int64: no machine has that much of anything.
  constexpr int64_t kMaxMilli = int64_t{1} << 62;
  if (parsed->milliValue() >= kMaxMilli) return Status::invalid(field + "is larger than any worker could provide");
  return parsed->milliValue();
}

// valueFrom.fieldRef on the Allocation: the paths the CRD documents.
StatusOr<std::string> allocField(const kube::Json& a, const std::string& path) {
  for (const char* prefix : {"metadata.labels['", "metadata.annotations['"}) {
    std::string p = prefix;
    if (path.rfind(p, 0) == 0 && path.size() > p.size() + 2 && path.compare(path.size() - 2, 2, "']") == 0) {
      std::string key = path.substr(p.size(), path.size() - p.size() - 2);
      const JsonValue* m = kube::find(a, {"metadata", p.find("labels") != std::string::npos ? "labels" : "annotations"});
      if (m != nullptr && m->IsObject()) {
        auto it = m->FindMember(key.c_str());
        if (it != m->MemberEnd() && it->value.IsString()) return std::string(kube::view(it->value));
      }
      return std::string();
    }
  }
  static const std::pair<const char*, std::pair<const char*, const char*>> kPaths[] = {
      {"metadata.name", {"metadata", "name"}},     {"metadata.namespace", {"metadata", "namespace"}},
      {"metadata.uid", {"metadata", "uid"}},       {"spec.workerName", {"spec", "workerName"}},
      {"spec.jobName", {"spec", "jobName"}},       {"spec.groupName", {"spec", "groupName"}},
      {"spec.index", {"spec", "index"}},           {"spec.jobVersion", {"spec", "jobVersion"}}};
  for (const auto& [name, keys] : kPaths) {
    if (path != name) continue;
    const JsonValue* v = kube::find(a, {keys.first, keys.second});
    if (v == nullptr) return std::string();
    return v->IsString() ? std::string(kube::view(*v)) : kube::toJson(*v);
  }
  return Status::invalid("unsupported fieldPath \"" + path + "\"");
}

// The cgroup limits of a task spec (resources.requests/limits; the default pids limit), or why
// they are invalid.
StatusOr<CgroupLimits> taskCgroupLimits(const JsonValue& task) {
  auto cpuReq = quantityMilli(task, "requests", "cpu");
  auto cpuLim = quantityMilli(task, "limits", "cpu");
  auto memLim = quantityMilli(task, "limits", "memory");
  if (!cpuReq) return cpuReq.status();
  if (!cpuLim) return cpuLim.status();
  if (!memLim) return memLim.status();
  auto memReq = quantityMilli(task, "requests", "memory");
  if (!memReq) return memReq.status();
  // As Kubernetes validates a container: a request may not exceed its limit.
  if (*cpuLim > 0 && *cpuReq > *cpuLim) {
    return Status::invalid("resources.requests.cpu: Invalid value: must be less than or equal to cpu limit");
  }
  if (*memLim > 0 && *memReq > *memLim) {
    return Status::invalid("resources.requests.memory: Invalid value: must be less than or equal to memory limit");
  }
  // Below a page the kernel cannot account, and the task would be OOM-killed before its execve.
  if (*memLim > 0 && *memLim / 1000 < int64_t{1024} * 1024) {
    return Status::invalid("resources.limits.memory: Invalid value: must be at least 1Mi");
  }
  CgroupLimits limits;
  if (*cpuReq > 0) limits.cpuShares = std::max<int64_t>(2, *cpuReq * 1024 / 1000);
  if (*cpuLim > 0) limits.cpuQuotaMicros = std::max<int64_t>(1000, *cpuLim * 100);  // per 100 ms
  if (*memLim > 0) limits.memoryBytes = *memLim / 1000;
  limits.pidsMax = kDefaultPidsMax;
  return limits;
}

}  // namespace

int parseSignal(const std::string& s) {
  static const std::pair<const char*, int> kSignals[] = {
      {"HUP", SIGHUP},   {"INT", SIGINT},   {"QUIT", SIGQUIT}, {"KILL", SIGKILL},
      {"USR1", SIGUSR1}, {"USR2", SIGUSR2}, {"TERM", SIGTERM}, {"STOP", SIGSTOP},
      {"CONT", SIGCONT}, {"WINCH", SIGWINCH}};
  if (s.empty()) return SIGTERM;
  if (std::all_of(s.begin(), s.end(), [](char c) { return std::isdigit(static_cast<unsigned char>(c)); })) {
    int n = s.size() <= 2 ? std::stoi(s) : -1;
    return n > 0 && n < 32 ? n : -1;
  }
  std::string name = s.rfind("SIG", 0) == 0 ? s.substr(3) : s;
  for (const auto& [n, v] : kSignals) {
    if (name == n) return v;
  }
  return -1;
}

TaskRunner::TaskRunner(TaskConfig config, Driver& driver, std::function<void()> onChange)
    : config_(std::move(config)),
      name_(kube::getString(*config_.task, {"name"})),
      driver_(driver),
      onChange_(std::move(onChange)) {
  state_.name = name_;
  state_.restarts = config_.previousRestarts;
}

TaskRunner::~TaskRunner() {
  if (thread_.joinable()) stop();
}

void TaskRunner::start() { thread_ = std::thread([this] {
    excludeStackFromForks();
    run();
  }); }

void TaskRunner::requestStop() {
  {
    std::lock_guard l(mu_);
    stopping_ = true;
  }
  cv_.notify_all();
}

void TaskRunner::stop() {
  requestStop();
  if (thread_.joinable()) thread_.join();
}

void TaskRunner::requestDetach() {
  {
    std::lock_guard l(mu_);
    detaching_ = true;
  }
  cv_.notify_all();
}

void TaskRunner::detachAndJoin() {
  requestDetach();
  if (thread_.joinable()) thread_.join();
}

TaskState TaskRunner::snapshot() const {
  std::lock_guard l(mu_);
  return state_;
}

void TaskRunner::setState(const std::function<void(TaskState&)>& f) {
  {
    std::lock_guard l(mu_);
    f(state_);
  }
  if (onChange_) onChange_();
}

bool TaskRunner::sleepFor(std::chrono::milliseconds d) {
  std::unique_lock l(mu_);
  cv_.wait_for(l, d, [this] { return stopping_.load() || detaching_.load(); });
  return !stopping_ && !detaching_;
}

void TaskRunner::persist(const TaskHandle& h) {
  Json d(rapidjson::kObjectType);
  auto& a = d.GetAllocator();
  TaskState s = snapshot();
  d.AddMember("pid", h.pid, a);
  d.AddMember("startTicks", static_cast<uint64_t>(h.startTicks), a);
  kube::setString(d, "cgroup", h.cgroup, a);
  d.AddMember("restarts", s.restarts, a);
  d.AddMember("running", s.state == "Running", a);
  d.AddMember("done", s.done, a);
  d.AddMember("failed", s.failed, a);
  d.AddMember("exitCode", s.exitCode, a);
  kube::setString(d, "reason", s.reason, a);
  kube::setString(d, "startedAt", s.startedAt, a);
  kube::setString(d, "finishedAt", s.finishedAt, a);
  (void)kube::writeFileAtomic(config_.stateFile, kube::toJson(d));
}

bool TaskRunner::adopt(TaskHandle& h) {
  std::ifstream f(config_.stateFile);
  std::stringstream ss;
  ss << f.rdbuf();
  auto d = kube::parseJson(ss.str());
  if (d && d->IsObject()) {
    int restarts = static_cast<int>(kube::getInt(*d, {"restarts"}).value_or(0));
    setState([&](TaskState& s) { s.restarts = std::max(s.restarts, restarts); });
  }
  if (d && d->IsObject() && kube::getBool(*d, {"done"})) {
    // Finished before the agent restarted (a prestart task, a completed batch task): keep it so.
    setState([&](TaskState& s) {
      s.state = "Terminated";
      s.done = true;
      s.failed = kube::getBool(*d, {"failed"});
      s.exitCode = static_cast<int>(kube::getInt(*d, {"exitCode"}).value_or(0));
      s.reason = kube::getString(*d, {"reason"});
      s.restarts = std::max(s.restarts, static_cast<int>(kube::getInt(*d, {"restarts"}).value_or(0)));
      s.startedAt = kube::getString(*d, {"startedAt"});
      s.finishedAt = kube::getString(*d, {"finishedAt"});
    });
    return true;
  }
  if (d && d->IsObject() && kube::getBool(*d, {"running"})) {
    h.pid = static_cast<pid_t>(kube::getInt(*d, {"pid"}).value_or(-1));
    const JsonValue* ticks = kube::find(*d, {"startTicks"});
    h.startTicks = ticks != nullptr && ticks->IsUint64() ? ticks->GetUint64() : 0;
    h.cgroup = kube::getString(*d, {"cgroup"});
    int restarts = static_cast<int>(kube::getInt(*d, {"restarts"}).value_or(0));
    std::string startedAt = kube::getString(*d, {"startedAt"});
    setState([&](TaskState& s) {
      s.state = "Running";
      s.pid = h.pid;
      s.restarts = std::max(s.restarts, restarts);
      s.startedAt = startedAt;
    });
    return true;  // alive or not: wait() reports how it ended if it is gone
  }
  if (config_.recovered) {
    h = *config_.recovered;
    setState([&](TaskState& s) {
      s.state = "Running";
      s.pid = h.pid;
    });
    persist(h);
    return true;
  }
  return false;
}

StatusOr<TaskLaunch> TaskRunner::buildLaunch() {
  const JsonValue& task = *config_.task;
  TaskLaunch l;
  l.id = config_.allocUid + "." + name_;
  bool raw = kube::getString(task, {"driver"}, "exec") == "raw_exec";
  l.taskDir = config_.taskDir;
  l.allocDir = config_.allocDir;
  l.user = kube::getString(task, {"user"}, raw ? "" : "nobody");
  l.workingDir = kube::getString(task, {"workingDir"}, raw ? config_.taskDir + "/local" : "/local");

  std::map<std::string, std::string> env;
  env["PATH"] = kDefaultPath;
  env["FOXDEN_ALLOC_ID"] = config_.allocUid;
  env["FOXDEN_ALLOC_NAME"] = config_.allocName;
  env["FOXDEN_ALLOC_INDEX"] = std::to_string(config_.index);
  env["FOXDEN_NAMESPACE"] = config_.allocNamespace;
  env["FOXDEN_JOB"] = config_.jobName;
  env["FOXDEN_GROUP"] = config_.groupName;
  env["FOXDEN_TASK"] = name_;
  env["FOXDEN_TASK_DIR"] = raw ? config_.taskDir + "/local" : "/local";
  env["FOXDEN_SECRETS_DIR"] = raw ? config_.taskDir + "/secrets" : "/secrets";
  env["FOXDEN_ALLOC_DIR"] = raw ? config_.allocDir : "/alloc";
  for (const auto& [port, value] : config_.ports) env["FOXDEN_PORT_" + port] = std::to_string(value);
  if (const JsonValue* e = kube::find(task, {"env"}); e != nullptr && e->IsArray()) {
    for (const auto& item : e->GetArray()) {
      std::string n = kube::getString(item, {"name"});
      if (n.empty() || n.find('=') != std::string::npos) {
        return Status::invalid("env: invalid variable name \"" + n + "\"");
      }
      if (const JsonValue* vf = kube::find(item, {"valueFrom"}); vf != nullptr) {
        // The downward API over the Allocation; ConfigMaps and Secrets would need reads a worker's
        // token is not allowed.
        const JsonValue* fr = kube::find(*vf, {"fieldRef"});
        if (fr == nullptr || config_.alloc == nullptr) {
          return Status::invalid("env[" + n + "].valueFrom: only fieldRef is supported by this agent");
        }
        std::string path = kube::getString(*fr, {"fieldPath"});
        auto field = allocField(*config_.alloc, path);
        if (!field) return Status::invalid("env[" + n + "].valueFrom.fieldRef: " + field.status().message());
        env[n] = *field;
        continue;
      }
      env[n] = expand(kube::getString(item, {"value"}), env);
    }
  }
  // GPUs: a task that asks for nvidia.com/gpu or amd.com/gpu gets the allocation's GPUs of that
  // vendor: exactly their device nodes (the driver adds the devices-cgroup rules) and env.
  if (!config_.gpus.empty()) {
    std::vector<std::pair<std::string, int>> wanted;
    for (const auto& [vendor, index] : config_.gpus) {
      std::string res = vendor == "amd" ? "amd.com/gpu" : "nvidia.com/gpu";
      if (kube::find(task, {"resources", "limits", res}) != nullptr ||
          kube::find(task, {"resources", "requests", res}) != nullptr) {
        wanted.emplace_back(vendor, index);
      }
    }
    if (!wanted.empty()) {
      if (config_.inventory == nullptr) return Status::invalid("spec.resources.gpus: this worker has no GPUs");
      auto selected = select(*config_.inventory, wanted);
      if (!selected) return Status::invalid("spec.resources.gpus: " + selected.status().message());
      l.devices = config_.inventory->deviceNodes(*selected);
      for (const auto& [k, v] : config_.inventory->env(*selected)) env[k] = v;
    }
  }
  for (const auto& [k, v] : env) l.env.push_back(k + "=" + v);
  // Templates are rendered before every start, from the same variables the task sees, and are
  // owned by the task's user.
  if (const JsonValue* ts = kube::find(task, {"templates"}); ts != nullptr && ts->IsArray() && !ts->Empty()) {
    uid_t uid = static_cast<uid_t>(-1);
    gid_t gid = static_cast<gid_t>(-1);
    if (!l.user.empty()) {
      passwd pw{};
      passwd* found = nullptr;
      std::vector<char> buf(16384);
      bool numeric = l.user.find_first_not_of("0123456789") == std::string::npos;
      if (numeric) {
        uid = static_cast<uid_t>(std::stoul(l.user.substr(0, 9)));
        gid = uid;
        if (getpwuid_r(uid, &pw, buf.data(), buf.size(), &found) == 0 && found != nullptr) gid = pw.pw_gid;
      } else if (getpwnam_r(l.user.c_str(), &pw, buf.data(), buf.size(), &found) == 0 && found != nullptr) {
        uid = pw.pw_uid;
        gid = pw.pw_gid;
      } else {
        return Status::invalid("user: unknown user \"" + l.user + "\"");
      }
    }
    for (const auto& t : ts->GetArray()) {
      std::string dest = kube::getString(t, {"destination"});
      auto fail = [&](const Status& st) { return Status::invalid("templates[" + dest + "]: " + st.message()); };
      auto mode = parseFileMode(kube::getString(t, {"perms"}, "0644"));
      if (!mode) return fail(mode.status());
      auto text = renderMustache(kube::getString(t, {"data"}), env);
      if (!text) return fail(text.status());
      if (auto st = writeTaskFile(config_.taskDir, config_.allocDir, dest, *text, *mode, uid, gid); !st) {
        return fail(st);
      }
    }
  }
  for (auto [field, slot] : {std::pair{"readinessProbe", &readinessSpec_}, std::pair{"livenessProbe", &livenessSpec_},
                             std::pair{"startupProbe", &startupSpec_}}) {
    slot->reset();
    if (const JsonValue* p = kube::find(task, {field}); p != nullptr && !p->IsNull()) {
      auto spec = parseProbe(*p, config_.ports);
      if (!spec) return Status::invalid(std::string(field) + ": " + spec.status().message());
      *slot = *spec;
    }
  }
  // After the probes: an adopted task needs those even if its root could not be built now.
  if (auto st = applyTaskRoot(task, config_.root, raw, l); !st) return st;
  for (const auto& s : stringList(kube::find(task, {"command"}))) l.argv.push_back(expand(s, env));
  for (const auto& s : stringList(kube::find(task, {"args"}))) l.argv.push_back(expand(s, env));
  if (l.argv.empty()) return Status::invalid("command: Required value: the task has no command");

  auto cgroupLimits = taskCgroupLimits(task);
  if (!cgroupLimits) return cgroupLimits.status();
  l.limits = *cgroupLimits;
  // The task's init writes its output into rotated files there (nodeagent/logs/).
  auto limits = logs::parseLogLimits(kube::find(task, {"logs"}));
  if (!limits) return limits.status();
  l.logDir = config_.logDir;
  l.logMaxFiles = limits->maxFiles;
  l.logMaxFileSize = limits->maxFileSize;
  return l;
}

void TaskRunner::startProbes(pid_t initPid) {
  unhealthy_ = false;
  started_ = !startupSpec_.has_value();
  auto startMain = [this, initPid] {
    if (readinessSpec_) {
      readiness_ = std::make_unique<ProbeRunner>();
      readiness_->start(*readinessSpec_, initPid, [this](bool ok) { setState([ok](TaskState& s) { s.ready = ok; }); });
    } else {
      setState([](TaskState& s) { s.ready = true; });
    }
    if (livenessSpec_) {
      liveness_ = std::make_unique<ProbeRunner>();
      liveness_->start(*livenessSpec_, initPid, [this](bool ok) {
        if (!ok) {
          unhealthy_ = true;
          cv_.notify_all();
        }
      }, true);
    }
  };
  if (startupSpec_) {
    startup_ = std::make_unique<ProbeRunner>();
    startup_->start(*startupSpec_, initPid, [this](bool ok) {
      if (ok) started_ = true;  // readiness and liveness begin (from the wait loop)
    });
  } else {
    startMain();
  }
  probesPending_ = startupSpec_.has_value();
  startMainProbes_ = startMain;
}

void TaskRunner::stopProbes() {
  for (auto* r : {&readiness_, &liveness_, &startup_}) {
    if (*r) (*r)->stop();
    r->reset();
  }
  setState([](TaskState& s) { s.ready = false; });
}

void TaskRunner::run() {
  traceStartPoint("task_runner");
  const JsonValue& task = *config_.task;
  int killSignal = parseSignal(kube::getString(task, {"killSignal"}, "SIGTERM"));
  int killTimeoutMs = static_cast<int>(kube::getInt(task, {"killTimeoutSeconds"}).value_or(5)) * 1000;
  if (killSignal < 0) {
    setState([&](TaskState& s) {
      s.state = "Terminated";
      s.reason = "StartError";
      s.message = "killSignal: unknown signal \"" + kube::getString(task, {"killSignal"}) + "\"";
      s.failed = s.done = true;
    });
    return;
  }
  TaskHandle h;
  bool adopted = adopt(h);
  if (snapshot().done) return;
  for (;;) {
    if (stopping_ || detaching_) break;
    if (!adopted) {
      auto launch = buildLaunch();
      traceStartPoint("launch_built");
      StatusOr<TaskHandle> started = launch ? driver_.start(*launch) : StatusOr<TaskHandle>(launch.status());
      if (launch) {
        // The driver dup'd what it needs; our copies go.
        if (launch->stdoutFd >= 0) ::close(launch->stdoutFd);
        if (launch->stderrFd >= 0) ::close(launch->stderrFd);
      }
      if (!started) {
        bool permanent = !launch;  // a bad spec will not fix itself by retrying
        std::cerr << kube::nowTime() << " foxden-agent: alloc=" << config_.allocNamespace << "/"
                  << config_.allocName << " task=" << name_ << " start failed: "
                  << started.status().message() << std::endl;
        setState([&](TaskState& s) {
          s.state = "Terminated";
          s.reason = "StartError";
          s.message = started.status().message();
          s.finishedAt = kube::nowTime();
          s.pid = 0;
        });
        if (permanent) {
          setState([](TaskState& s) { s.failed = s.done = true; });
          break;
        }
      } else {
        h = *started;
        setState([&](TaskState& s) {
          s.state = "Running";
          s.pid = h.pid;
          s.startedAt = kube::nowTime();
          s.finishedAt.clear();
          s.reason.clear();
          s.message.clear();
          s.exitCode = 0;
          s.signal = 0;
        });
        persist(h);
        if (config_.onStarted) config_.onStarted(h.execAt);
      }
    } else if (h.pid > 0) {
      // Adopted: probes need their specs (and ports) parsed as for a fresh start.
      auto launch = buildLaunch();
      if (launch) {
        if (launch->stdoutFd >= 0) ::close(launch->stdoutFd);
        if (launch->stderrFd >= 0) ::close(launch->stderrFd);
      }
    }
    adopted = false;
    if (h.pid > 0 && snapshot().state == "Running") startProbes(h.pid);
    if (h.pid > 0 && snapshot().state == "Running") {
      bool stopSent = false;
      bool livenessKill = false;
      std::optional<TaskExit> exit;
      while (!(exit = driver_.wait(h, 200))) {
        if (detaching_ && !stopping_) {
          stopProbes();
          return;  // the task keeps running; its state file says so
        }
        if (probesPending_ && started_) {
          probesPending_ = false;
          startMainProbes_();
        }
        if (stopping_ && !stopSent) {
          stopSent = true;
          (void)driver_.stop(h, killSignal, killTimeoutMs);
        } else if (unhealthy_ && !stopSent && !livenessKill) {
          livenessKill = true;
          (void)driver_.stop(h, killSignal, killTimeoutMs);
        }
      }
      std::string probeMessage = livenessKill && liveness_ ? liveness_->lastResult().message : "";
      stopProbes();
      (void)driver_.destroy(h);
      setState([&](TaskState& s) {
        s.state = "Terminated";
        s.pid = 0;
        s.exitCode = exit->exitCode;
        s.signal = exit->signal;
        s.finishedAt = kube::nowTime();
        s.message = exit->message;
        if (exit->oomKilled) {
          s.reason = "OOMKilled";
        } else if (livenessKill) {
          s.reason = "Error";
          s.message = "liveness probe failed" + (probeMessage.empty() ? std::string() : ": " + probeMessage);
        } else if (stopSent) {
          s.reason = "Killed";
        } else if (exit->signal == 0 && exit->exitCode == 0) {
          s.reason = "Completed";
        } else {
          s.reason = "Error";
        }
      });
      persist(h);
      h = TaskHandle{};
    }
    if (stopping_) {
      setState([](TaskState& s) { s.done = true; });
      break;
    }
    TaskState now = snapshot();
    bool batch = config_.jobType.empty() || config_.jobType == "batch" || config_.jobType == "sysbatch";
    if (now.reason == "Completed" && batch) {
      setState([](TaskState& s) { s.done = true; });
      persist(TaskHandle{});
      break;
    }
    // A failure (or a service's exit): count it within the interval.
    auto t = std::chrono::system_clock::now();
    failures_.push_back(t);
    std::erase_if(failures_, [&](auto f) {
      return t - f > std::chrono::seconds(config_.restart.intervalSeconds);
    });
    if (static_cast<int>(failures_.size()) > config_.restart.attempts) {
      if (!config_.restart.modeDelay) {
        setState([](TaskState& s) { s.failed = s.done = true; });
        persist(TaskHandle{});
        break;
      }
      if (!sleepFor(std::chrono::seconds(config_.restart.intervalSeconds))) continue;
      failures_.clear();
    }
    if (!sleepFor(std::chrono::seconds(config_.restart.delaySeconds))) {
      if (detaching_ && !stopping_) return;
      continue;
    }
    setState([](TaskState& s) {
      ++s.restarts;
      s.state = "Waiting";
    });
    persist(TaskHandle{});  // the restart counter survives an agent restart
  }
}

}  // namespace nodeagent
