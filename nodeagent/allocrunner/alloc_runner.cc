#include "nodeagent/allocrunner/alloc_runner.h"

#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <set>

#include "kube/timeutil.h"
#include "nodeagent/allocrunner/dir_pool.h"
#include "nodeagent/status_writer.h"

namespace nodeagent {

using kube::Json;
using kube::JsonValue;

namespace {

// mkdir -p, from the leaf up: one mkdir when the parent exists (the common case: an allocation's
// directories all sit under the agent's existing data directory), instead of one per component.
bool mkdirs(const std::string& path, mode_t mode) {
  if (::mkdir(path.c_str(), mode) == 0 || errno == EEXIST) return true;
  if (errno != ENOENT) return false;
  size_t slash = path.find_last_of('/');
  if (slash == std::string::npos || slash == 0) return false;
  if (!mkdirs(path.substr(0, slash), mode)) return false;
  return ::mkdir(path.c_str(), mode) == 0 || errno == EEXIST;
}

std::string hook(const JsonValue& task) { return kube::getString(task, {"lifecycle", "hook"}); }
bool sidecar(const JsonValue& task) { return kube::getBool(task, {"lifecycle", "sidecar"}); }

// Task names become directory names: only DNS labels are accepted (no "..", no "/").
bool validTaskName(const std::string& n) {
  if (n.empty() || n.size() > 63) return false;
  for (char c : n) {
    if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-')) return false;
  }
  return n.front() != '-' && n.back() != '-';
}

}  // namespace

AllocRunner::AllocRunner(kube::JsonPtr alloc, const AllocContext& ctx)
    : ctx_(ctx),
      uid_(kube::uid(*alloc)),
      key_(kube::ns(*alloc) + "/" + kube::name(*alloc)),
      alloc_(std::move(alloc)) {}

AllocRunner::~AllocRunner() {
  if (thread_.joinable()) detach();
}

void AllocRunner::detach() {
  detaching_ = true;
  {
    std::lock_guard l(mu_);
    for (auto& r : runners_) r->requestDetach();
  }
  if (thread_.joinable()) thread_.join();
}

void AllocRunner::start() { thread_ = std::thread([this] {
    excludeStackFromForks();
    run();
  }); }

void AllocRunner::update(kube::JsonPtr alloc) {
  bool stopWanted = kube::getString(*alloc, {"spec", "desiredState"}, "run") == "stop" ||
                    kube::find(*alloc, {"metadata", "deletionTimestamp"}) != nullptr;
  {
    std::lock_guard l(mu_);
    alloc_ = std::move(alloc);
  }
  if (stopWanted) {
    stopping_ = true;
    std::lock_guard l(mu_);
    for (auto& r : runners_) r->requestStop();  // the runner's own thread joins them
  }
}

void AllocRunner::stop() {
  stopping_ = true;
  {
    std::lock_guard l(mu_);
    for (auto& r : runners_) r->requestStop();
  }
  if (thread_.joinable()) thread_.join();
}

kube::Status AllocRunner::validateTasks(const Json& alloc) {
  const JsonValue* tasks = kube::find(alloc, {"spec", "tasks"});
  if (tasks == nullptr || !tasks->IsArray() || tasks->Empty()) {
    return kube::Status::invalid("spec.tasks: Required value: the allocation has no tasks");
  }
  std::set<std::string> seen;
  for (const auto& t : tasks->GetArray()) {
    std::string n = kube::getString(t, {"name"});
    if (!validTaskName(n)) return kube::Status::invalid("spec.tasks: invalid task name \"" + n + "\"");
    if (!seen.insert(n).second) return kube::Status::invalid("spec.tasks: duplicate task name \"" + n + "\"");
    std::string driver = kube::getString(t, {"driver"}, "exec");
    if (driver != "exec" && driver != "raw_exec") {
      return kube::Status::invalid("spec.tasks[" + n + "].driver: unsupported driver \"" + driver + "\"");
    }
    if (driver == "raw_exec" && ctx_.rawExecDriver == nullptr) {
      return kube::Status::invalid("spec.tasks[" + n + "].driver: raw_exec is not enabled on this worker");
    }
  }
  return kube::Status::ok();
}

kube::Status AllocRunner::prepareDirs(const Json& alloc) {
  std::string base = ctx_.dataDir + "/allocs/" + uid_;
  const auto& tasks = kube::find(alloc, {"spec", "tasks"})->GetArray();
  // A new allocation takes a skeleton made ahead, with its first task's directory, if one is ready.
  std::string pooled;
  if (ctx_.dirPool != nullptr && ::access(base.c_str(), F_OK) != 0 &&
      ::access((ctx_.dataDir + "/state/" + uid_).c_str(), F_OK) != 0) {
    std::string first = kube::getString(tasks[0], {"name"});
    if (ctx_.dirPool->take(uid_, first)) pooled = first;
  }
  if (pooled.empty()) {
    if (!mkdirs(base + "/alloc", 0755)) return kube::Status::internal("cannot create " + base + "/alloc");
    ::chmod((base + "/alloc").c_str(), 01777);
    if (!mkdirs(ctx_.dataDir + "/state/" + uid_, 0700)) {
      return kube::Status::internal("cannot create the state directory");
    }
  }
  for (const auto& t : tasks) {
    std::string n = kube::getString(t, {"name"});
    if (n == pooled) continue;
    for (const char* d : {"local", "secrets", "tmp", "logs"}) {
      std::string p = base + "/" + n + "/" + d;
      if (!mkdirs(p, 0755)) return kube::Status::internal("cannot create " + p);
      if (std::string(d) == "local" || std::string(d) == "tmp") ::chmod(p.c_str(), 01777);
    }
  }
  return kube::Status::ok();
}

std::unique_ptr<TaskRunner> AllocRunner::makeRunner(const Json& a, const JsonValue& task, const std::string& jobType) {
  TaskConfig c;
  c.allocUid = uid_;
  c.allocName = kube::name(a);
  c.allocNamespace = kube::ns(a);
  c.jobName = kube::getString(a, {"spec", "jobName"});
  c.groupName = kube::getString(a, {"spec", "groupName"});
  c.jobType = jobType;
  c.index = static_cast<int>(kube::getInt(a, {"spec", "index"}).value_or(0));
  c.task = kube::shareJson(kube::cloneJson(task));
  c.alloc = kube::shareJson(kube::cloneJson(a));
  std::string name = kube::getString(task, {"name"});
  if (const JsonValue* ports = kube::find(a, {"spec", "resources", "ports"}); ports && ports->IsArray()) {
    for (const auto& p : ports->GetArray()) {
      c.ports[kube::getString(p, {"name"})] = static_cast<int>(kube::getInt(p, {"value"}).value_or(0));
    }
  }
  std::string base = ctx_.dataDir + "/allocs/" + uid_;
  c.taskDir = base + "/" + name;
  c.allocDir = base + "/alloc";
  c.logDir = c.taskDir + "/logs";
  c.stateFile = ctx_.dataDir + "/state/" + uid_ + "/" + name + ".json";
  c.restart.attempts = static_cast<int>(kube::getInt(a, {"spec", "restartPolicy", "attempts"}).value_or(2));
  c.restart.intervalSeconds =
      static_cast<int>(kube::getInt(a, {"spec", "restartPolicy", "intervalSeconds"}).value_or(300));
  c.restart.delaySeconds = static_cast<int>(kube::getInt(a, {"spec", "restartPolicy", "delaySeconds"}).value_or(5));
  c.restart.modeDelay = kube::getString(a, {"spec", "restartPolicy", "mode"}, "Fail") == "Delay";
  if (const JsonValue* st = kube::find(a, {"status", "tasks"}); st && st->IsArray()) {
    for (const auto& s : st->GetArray()) {
      if (kube::getString(s, {"name"}) == name) {
        c.previousRestarts = static_cast<int>(kube::getInt(s, {"restarts"}).value_or(0));
      }
    }
  }
  if (ctx_.onTaskStarted) {
    c.onStarted = [this](std::chrono::steady_clock::time_point execAt) { ctx_.onTaskStarted(key_, execAt); };
  }
  c.inventory = ctx_.gpus;
  if (const JsonValue* gpus = kube::find(a, {"spec", "resources", "gpus"}); gpus && gpus->IsArray()) {
    for (const auto& g : gpus->GetArray()) {
      c.gpus.emplace_back(kube::getString(g, {"vendor"}, "nvidia"),
                          static_cast<int>(kube::getInt(g, {"index"}).value_or(-1)));
    }
  }
  c.root = ctx_.root;
  c.root.volumeDir = base + "/volumes";
  if (const JsonValue* vols = kube::find(a, {"spec", "volumes"}); vols && vols->IsArray()) {
    c.root.groupVolumes = kube::shareJson(kube::cloneJson(*vols));
  }
  auto rec = ctx_.recovered.find(uid_ + "." + name);
  if (rec != ctx_.recovered.end()) c.recovered = rec->second;
  bool raw = kube::getString(task, {"driver"}, "exec") == "raw_exec";
  Driver& driver = raw ? *ctx_.rawExecDriver : *ctx_.execDriver;
  return std::make_unique<TaskRunner>(std::move(c), driver, [this] { report(); });
}

void AllocRunner::run() {
  // One snapshot of the object for the whole run: update() replaces alloc_ whenever the agent's
  // own status write comes back through the watch, and the task pointers below point into it.
  traceStartPoint("alloc_runner");
  kube::JsonPtr doc;
  {
    std::lock_guard l(mu_);
    doc = alloc_;
    startedAt_ = kube::getString(*doc, {"status", "startedAt"}, kube::nowTime());
  }
  kube::Status st = validateTasks(*doc);
  std::vector<const JsonValue*> prestart, main, poststop;
  if (st) {
    for (const auto& t : kube::find(*doc, {"spec", "tasks"})->GetArray()) {
      std::string h = hook(t);
      (h == "prestart" ? prestart : h == "poststop" ? poststop : main).push_back(&t);
    }
    st = prepareDirs(*doc);
  }
  if (!st) {
    {
      std::lock_guard l(mu_);
      phase_ = "Failed";
      message_ = st.message();
      finishedAt_ = kube::nowTime();
    }
    report();
    finished_ = true;
    return;
  }
  traceStartPoint("dirs_ready");
  std::string jobType = kube::getString(*doc, {"spec", "jobType"}, "batch");
  // Runs `tasks` and waits until every non-sidecar among them is done; false if one failed.
  auto phase = [&](const std::vector<const JsonValue*>& tasks, bool waitAll) {
    std::vector<TaskRunner*> waitFor;
    for (const JsonValue* t : tasks) {
      auto r = makeRunner(*doc, *t, sidecar(*t) ? "service" : jobType);
      TaskRunner* raw = r.get();
      {
        std::lock_guard l(mu_);
        runners_.push_back(std::move(r));
      }
      raw->start();
      if (!sidecar(*t)) waitFor.push_back(raw);
    }
    // The runners report their tasks (and with them the phase) once they ran: no status write
    // goes out while the starts are under way.
    if (!waitAll) return true;
    for (;;) {
      bool allDone = true, anyFailed = false;
      for (TaskRunner* r : waitFor) {
        TaskState s = r->snapshot();
        allDone &= s.done;
        anyFailed |= s.failed;
      }
      if (allDone || anyFailed || stopping_ || detaching_) return !anyFailed;
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
  };
  bool ok = phase(prestart, true) && !stopping_;
  if (ok && !detaching_) ok = phase(main, true);
  if (detaching_ && !stopping_) {
    std::vector<TaskRunner*> all;
    {
      std::lock_guard l(mu_);
      for (auto& r : runners_) all.push_back(r.get());
    }
    for (TaskRunner* r : all) r->detachAndJoin();
    return;
  }
  // Sidecars and anything still running stop now; then poststop tasks run.
  std::vector<TaskRunner*> toStop;
  {
    std::lock_guard l(mu_);
    for (auto& r : runners_) toStop.push_back(r.get());
  }
  for (TaskRunner* r : toStop) r->requestStop();  // all at once: kill timeouts overlap
  for (TaskRunner* r : toStop) r->stop();
  if (!stopping_ && !poststop.empty()) phase(poststop, true);
  bool failed = false, allCompleted = true;
  {
    std::lock_guard l(mu_);
    for (auto& r : runners_) {
      TaskState s = r->snapshot();
      failed |= s.failed;
      allCompleted &= s.reason == "Completed";
    }
    phase_ = failed || !ok ? "Failed" : (allCompleted ? "Succeeded" : (stopping_ ? "Failed" : "Succeeded"));
    if (stopping_ && !failed) message_ = "stopped on request";
    finishedAt_ = kube::nowTime();
  }
  {
    std::lock_guard l(mu_);
    for (auto& r : runners_) r->requestStop();
  }
  std::vector<TaskRunner*> all;
  {
    std::lock_guard l(mu_);
    for (auto& r : runners_) all.push_back(r.get());
  }
  for (TaskRunner* r : all) r->stop();
  report();
  finished_ = true;
}

void AllocRunner::report() {
  Json st(rapidjson::kObjectType);
  auto& a = st.GetAllocator();
  std::lock_guard l(mu_);
  std::vector<TaskState> states;
  for (auto& r : runners_) {
    states.push_back(r->snapshot());
    // Running once a task has run (or failed to start), as a Pod is once a container has started.
    if (phase_ == "Pending" && states.back().state != "Waiting") phase_ = "Running";
  }
  kube::setString(st, "phase", phase_, a);
  if (!message_.empty()) kube::setString(st, "message", message_, a);
  if (!startedAt_.empty()) kube::setString(st, "startedAt", startedAt_, a);
  if (!finishedAt_.empty()) kube::setString(st, "finishedAt", finishedAt_, a);
  if (auto g = kube::getInt(*alloc_, {"metadata", "generation"})) st.AddMember("observedGeneration", *g, a);
  JsonValue tasks(rapidjson::kArrayType);
  std::set<std::string> reported;
  for (const TaskState& s : states) {
    reported.insert(s.name);
    JsonValue t(rapidjson::kObjectType);
    kube::setString(t, "name", s.name, a);
    kube::setString(t, "state", s.state, a);
    if (s.pid > 0) t.AddMember("pid", s.pid, a);
    t.AddMember("restarts", s.restarts, a);
    if (s.state == "Terminated") {
      t.AddMember("exitCode", s.exitCode, a);
      if (s.signal != 0) t.AddMember("signal", s.signal, a);
    }
    if (!s.reason.empty()) kube::setString(t, "reason", s.reason, a);
    if (!s.message.empty()) kube::setString(t, "message", s.message, a);
    if (!s.startedAt.empty()) kube::setString(t, "startedAt", s.startedAt, a);
    if (!s.finishedAt.empty()) kube::setString(t, "finishedAt", s.finishedAt, a);
    t.AddMember("ready", s.ready && s.state == "Running", a);
    tasks.PushBack(std::move(t), a);
  }
  if (const JsonValue* spec = kube::find(*alloc_, {"spec", "tasks"}); spec && spec->IsArray()) {
    for (const auto& t : spec->GetArray()) {
      std::string n = kube::getString(t, {"name"});
      if (reported.count(n)) continue;
      JsonValue w(rapidjson::kObjectType);
      kube::setString(w, "name", n, a);
      kube::setString(w, "state", "Waiting", a);
      w.AddMember("restarts", 0, a);
      w.AddMember("ready", false, a);
      tasks.PushBack(std::move(w), a);
    }
  }
  st.AddMember("tasks", std::move(tasks), a);
  if (ctx_.status != nullptr) ctx_.status->set(key_, kube::toJson(st));
}

}  // namespace nodeagent
