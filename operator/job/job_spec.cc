#include "operator/job/job_spec.h"

#include <rapidjson/stringbuffer.h>
#include <rapidjson/writer.h>
#include <sys/stat.h>

#include <algorithm>
#include <charconv>
#include <set>

#include "kube/quantity.h"

namespace op {

using kube::JsonValue;
using kube::Status;

namespace {

int intOr(const JsonValue& v, std::initializer_list<std::string_view> path, int def, int lo, int hi) {
  auto i = kube::getInt(v, path);
  if (!i) return def;
  return static_cast<int>(std::clamp<int64_t>(*i, lo, hi));
}

bool isInteger(std::string_view s) {
  if (!s.empty() && (s[0] == '-' || s[0] == '+')) s.remove_prefix(1);
  if (s.empty() || s.size() > 18) return false;
  return std::all_of(s.begin(), s.end(), [](char c) { return c >= '0' && c <= '9'; });
}

void readUpdate(const JsonValue* u, UpdateStrategy& s) {
  if (u == nullptr || !u->IsObject()) return;
  s.maxParallel = intOr(*u, {"maxParallel"}, s.maxParallel, 0, 1 << 20);
  if (std::string h = kube::getString(*u, {"healthCheck"}); !h.empty()) s.healthCheck = h;
  s.minHealthySeconds = intOr(*u, {"minHealthySeconds"}, s.minHealthySeconds, 0, 1 << 24);
  s.healthyDeadlineSeconds = intOr(*u, {"healthyDeadlineSeconds"}, s.healthyDeadlineSeconds, 1, 1 << 24);
  s.progressDeadlineSeconds = intOr(*u, {"progressDeadlineSeconds"}, s.progressDeadlineSeconds, 0, 1 << 24);
  if (kube::find(*u, {"autoRevert"})) s.autoRevert = kube::getBool(*u, {"autoRevert"});
  s.canary = intOr(*u, {"canary"}, s.canary, 0, 1 << 20);
  if (kube::find(*u, {"autoPromote"})) s.autoPromote = kube::getBool(*u, {"autoPromote"});
}

Status readRequirements(const JsonValue* list, const std::string& field, bool allowDistinct,
                        std::vector<scheduler::Requirement>& out, bool& distinct) {
  if (list == nullptr) return Status::ok();
  if (!list->IsArray()) return Status::invalid(field + ": must be a list");
  int i = 0;
  for (const auto& c : list->GetArray()) {
    std::string at = field + "[" + std::to_string(i++) + "]";
    if (!c.IsObject()) return Status::invalid(at + ": must be an object");
    scheduler::Requirement r;
    r.key = kube::getString(c, {"key"});
    r.op = kube::getString(c, {"operator"});
    if (const JsonValue* vs = kube::find(c, {"values"}); vs && vs->IsArray()) {
      for (const auto& v : vs->GetArray()) {
        if (!v.IsString()) return Status::invalid(at + ".values: must be strings");
        r.values.emplace_back(kube::view(v));
      }
    }
    if (r.op == "DistinctHosts") {
      if (!allowDistinct) return Status::invalid(at + ".operator: DistinctHosts is not allowed here");
      distinct = true;
      out.push_back(std::move(r));
      continue;
    }
    if (r.key.empty()) return Status::invalid(at + ".key: required for operator " + r.op);
    if (r.op == "In" || r.op == "NotIn") {
      if (r.values.empty()) return Status::invalid(at + ": operator " + r.op + " needs at least one value");
    } else if (r.op == "Exists" || r.op == "DoesNotExist") {
      if (!r.values.empty()) return Status::invalid(at + ": operator " + r.op + " takes no values");
    } else if (r.op == "Gt" || r.op == "Lt") {
      if (r.values.size() != 1 || !isInteger(r.values[0])) {
        return Status::invalid(at + ": operator " + r.op + " needs exactly one integer value, got [" +
                               (r.values.empty() ? "" : r.values[0]) + (r.values.size() > 1 ? ", ..." : "") + "]");
      }
    } else {
      return Status::invalid(at + ".operator: unknown operator \"" + r.op + "\"");
    }
    out.push_back(std::move(r));
  }
  return Status::ok();
}

Status readAffinities(const JsonValue* list, const std::string& field, std::vector<scheduler::Affinity>& out) {
  if (list == nullptr) return Status::ok();
  if (!list->IsArray()) return Status::invalid(field + ": must be a list");
  std::vector<scheduler::Requirement> reqs;
  bool distinct = false;
  if (Status st = readRequirements(list, field, false, reqs, distinct); !st) return st;
  size_t i = 0;
  for (const auto& a : list->GetArray()) {
    out.push_back({reqs[i++], intOr(a, {"weight"}, 50, -100, 100)});
  }
  return Status::ok();
}

Status readSpreads(const JsonValue* list, const std::string& field, std::vector<scheduler::Spread>& out) {
  if (list == nullptr) return Status::ok();
  if (!list->IsArray()) return Status::invalid(field + ": must be a list");
  int i = 0;
  for (const auto& s : list->GetArray()) {
    std::string at = field + "[" + std::to_string(i++) + "]";
    if (!s.IsObject()) return Status::invalid(at + ": must be an object");
    scheduler::Spread sp;
    sp.key = kube::getString(s, {"key"});
    if (sp.key.empty()) return Status::invalid(at + ".key: required");
    sp.weight = intOr(s, {"weight"}, 50, 1, 100);
    int total = 0;
    if (const JsonValue* ts = kube::find(s, {"targets"}); ts && ts->IsArray()) {
      for (const auto& t : ts->GetArray()) {
        scheduler::SpreadTarget st{kube::getString(t, {"value"}), intOr(t, {"percent"}, 0, 0, 100)};
        total += st.percent;
        sp.targets.push_back(std::move(st));
      }
    }
    if (total > 100) return Status::invalid(at + ".targets: percentages add up to " + std::to_string(total) + " (> 100)");
    out.push_back(std::move(sp));
  }
  return Status::ok();
}

// Sums one resource over the tasks (request, else limit) in milli-units.
Status taskResource(const JsonValue& task, const std::string& at, const char* res, int64_t& milli) {
  for (const char* kind : {"requests", "limits"}) {
    const JsonValue* q = kube::find(task, {"resources", kind, res});
    if (q == nullptr) continue;
    std::string text = q->IsString() ? std::string(kube::view(*q)) : q->IsInt64() ? std::to_string(q->GetInt64()) : "";
    auto parsed = kube::Quantity::parse(text);
    if (!parsed || parsed->milliValue() < 0) {
      return Status::invalid(at + ".resources." + kind + "." + res + ": invalid quantity \"" + text + "\"");
    }
    milli = parsed->milliValue();
    return Status::ok();  // the request wins; a limit alone sets the request
  }
  return Status::ok();
}

Status readGroup(const JsonValue& g, const std::string& at, const JobSpec& job, GroupSpec& out,
                 const std::vector<WorkerOffer>& workers) {
  if (!g.IsObject()) return Status::invalid(at + ": must be an object");
  out.name = kube::getString(g, {"name"});
  if (out.name.empty()) return Status::invalid(at + ".name: required");
  out.count = intOr(g, {"count"}, 1, 0, 1 << 20);
  out.completions = intOr(g, {"completions"}, out.count, 0, 1 << 20);
  readUpdate(kube::find(g, {"update"}), out.update);
  // Reschedule defaults by type, as Nomad: service/system unlimited exponential 30s..1h; batch
  // one attempt per 24h after 5s.
  if (job.isBatch()) out.reschedule = {1, 86400, 5, "constant", 3600, false};
  if (const JsonValue* r = kube::find(g, {"reschedulePolicy"}); r && r->IsObject()) {
    auto& p = out.reschedule;
    p.attempts = intOr(*r, {"attempts"}, p.attempts, 0, 1 << 20);
    p.intervalSeconds = intOr(*r, {"intervalSeconds"}, p.intervalSeconds, 0, 1 << 30);
    p.delaySeconds = intOr(*r, {"delaySeconds"}, p.delaySeconds, 0, 1 << 24);
    if (std::string f = kube::getString(*r, {"delayFunction"}); !f.empty()) p.delayFunction = f;
    p.maxDelaySeconds = intOr(*r, {"maxDelaySeconds"}, p.maxDelaySeconds, 0, 1 << 24);
    if (kube::find(*r, {"unlimited"})) p.unlimited = kube::getBool(*r, {"unlimited"});
    else if (kube::find(*r, {"attempts"})) p.unlimited = false;
  }
  auto& req = out.request;
  req.group = out.name;
  req.priority = job.priority;
  req.groupCount = job.isSystem() ? 0 : out.count;
  const JsonValue* tasks = kube::find(g, {"tasks"});
  if (tasks == nullptr || !tasks->IsArray() || tasks->Empty()) return Status::invalid(at + ".tasks: at least one task is required");
  std::set<std::string> taskNames;
  bool rawExec = false;
  int i = 0;
  std::set<std::string> portNames;
  if (const JsonValue* ports = kube::find(g, {"ports"}); ports) {
    if (!ports->IsArray()) return Status::invalid(at + ".ports: must be a list");
    std::set<int64_t> statics;
    int pi = 0;
    for (const auto& p : ports->GetArray()) {
      std::string pat = at + ".ports[" + std::to_string(pi++) + "]";
      std::string n = kube::getString(p, {"name"});
      if (n.empty()) return Status::invalid(pat + ".name: required");
      if (!portNames.insert(n).second) return Status::invalid(pat + ".name: duplicate port name \"" + n + "\"");
      int64_t s = kube::getInt(p, {"static"}).value_or(0);
      if (s < 0 || s > 65535) return Status::invalid(pat + ".static: out of range");
      if (s != 0 && !statics.insert(s).second) return Status::invalid(pat + ".static: port " + std::to_string(s) + " used twice");
      req.ports.push_back({n, static_cast<int>(s)});
    }
  }
  std::set<std::string> volumes;
  if (const JsonValue* vs = kube::find(g, {"volumes"}); vs && vs->IsArray()) {
    for (const auto& v : vs->GetArray()) volumes.insert(kube::getString(v, {"name"}));
  }
  for (const auto& t : tasks->GetArray()) {
    std::string tat = at + ".tasks[" + std::to_string(i++) + "]";
    if (!t.IsObject()) return Status::invalid(tat + ": must be an object");
    std::string tn = kube::getString(t, {"name"});
    if (tn.empty()) return Status::invalid(tat + ".name: required");
    if (!taskNames.insert(tn).second) return Status::invalid(tat + ".name: duplicate task name \"" + tn + "\"");
    const JsonValue* cmd = kube::find(t, {"command"});
    if (cmd == nullptr || !cmd->IsArray() || cmd->Empty()) return Status::invalid(tat + ".command: required");
    std::string driver = kube::getString(t, {"driver"}, "exec");
    if (driver != "exec" && driver != "raw_exec") return Status::invalid(tat + ".driver: unknown driver \"" + driver + "\"");
    rawExec |= driver == "raw_exec";
    int64_t cpu = 0, mem = 0, nv = 0, amd = 0;
    if (Status st = taskResource(t, tat, "cpu", cpu); !st) return st;
    if (Status st = taskResource(t, tat, "memory", mem); !st) return st;
    for (auto [res, sum] : {std::pair{"nvidia.com/gpu", &nv}, std::pair{"amd.com/gpu", &amd}}) {
      int64_t m = 0;
      if (Status st = taskResource(t, tat, res, m); !st) return st;
      if (m % 1000 != 0) return Status::invalid(tat + ".resources: " + std::string(res) + " must be a whole number of GPUs");
      *sum += m / 1000;
    }
    if (nv > 0 && amd > 0) return Status::invalid(tat + ".resources: a task cannot ask for both nvidia.com/gpu and amd.com/gpu");
    req.cpuMilli += cpu;
    req.memoryBytes += mem / 1000;
    if (nv > 0 || amd > 0) {
      std::string vendor = nv > 0 ? "nvidia" : "amd";
      if (!req.gpus.vendor.empty() && req.gpus.vendor != vendor) return Status::invalid(at + ": tasks ask for GPUs of two vendors");
      req.gpus.vendor = vendor;
      req.gpus.count += static_cast<int>(nv + amd);
    }
    for (const char* probe : {"livenessProbe", "readinessProbe", "startupProbe"}) {
      for (const char* kind : {"httpGet", "tcpSocket"}) {
        const JsonValue* port = kube::find(t, {probe, kind, "port"});
        if (port && port->IsString() && !isInteger(kube::view(*port)) && !portNames.count(std::string(kube::view(*port)))) {
          return Status::invalid(tat + "." + probe + "." + kind + ".port: \"" + std::string(kube::view(*port)) +
                                 "\" is not one of the group's ports");
        }
      }
    }
    if (const JsonValue* ms = kube::find(t, {"volumeMounts"}); ms && ms->IsArray()) {
      for (const auto& m : ms->GetArray()) {
        std::string vn = kube::getString(m, {"name"});
        if (!volumes.count(vn)) return Status::invalid(tat + ".volumeMounts: no group volume named \"" + vn + "\"");
      }
    }
  }
  req.driver = rawExec ? "raw_exec" : "exec";
  bool distinct = false;
  if (Status st = readRequirements(kube::find(g, {"constraints"}), at + ".constraints", true, req.constraints, distinct); !st) return st;
  if (Status st = readAffinities(kube::find(g, {"affinities"}), at + ".affinities", req.affinities); !st) return st;
  if (Status st = readSpreads(kube::find(g, {"spread"}), at + ".spread", req.spreads); !st) return st;
  // A GPU request that no worker can ever meet: workers with GPUs of that vendor exist, and none
  // of them offers the group's driver.
  if (req.gpus.count > 0 && !workers.empty()) {
    bool anyGpu = false, fits = false;
    for (const auto& w : workers) {
      int have = req.gpus.vendor == "amd" ? w.amdGpus : w.nvidiaGpus;
      if (have <= 0) continue;
      anyGpu = true;
      fits |= std::find(w.drivers.begin(), w.drivers.end(), req.driver) != w.drivers.end();
    }
    if (anyGpu && !fits) {
      return Status::invalid(at + ": asks for " + req.gpus.vendor + " GPUs with driver " + req.driver +
                             ", which no worker with such GPUs offers");
    }
  }
  return Status::ok();
}

void writeCanonical(const JsonValue& v, rapidjson::Writer<rapidjson::StringBuffer>& w) {
  if (v.IsObject()) {
    std::vector<const JsonValue::Member*> ms;
    for (const auto& m : v.GetObject()) ms.push_back(&m);
    std::sort(ms.begin(), ms.end(), [](auto* a, auto* b) { return kube::view(a->name) < kube::view(b->name); });
    w.StartObject();
    for (auto* m : ms) {
      w.Key(m->name.GetString(), m->name.GetStringLength());
      writeCanonical(m->value, w);
    }
    w.EndObject();
  } else if (v.IsArray()) {
    w.StartArray();
    for (const auto& e : v.GetArray()) writeCanonical(e, w);
    w.EndArray();
  } else {
    v.Accept(w);
  }
}

}  // namespace

int64_t ReschedulePolicy::delayFor(size_t n) const {
  int64_t d = delaySeconds;
  int64_t cap = maxDelaySeconds > 0 ? maxDelaySeconds : INT32_MAX;
  if (delayFunction == "exponential") {
    for (size_t i = 0; i < n && d < cap; ++i) d *= 2;
  } else if (delayFunction == "fibonacci") {
    int64_t a = delaySeconds, b = delaySeconds;
    for (size_t i = 0; i < n && b < cap; ++i) {
      int64_t c = a + b;
      a = b;
      b = c;
    }
    d = n == 0 ? delaySeconds : b;
  }
  return std::min(d, cap);
}

const GroupSpec* JobSpec::group(const std::string& n) const {
  for (const auto& g : groups) {
    if (g.name == n) return &g;
  }
  return nullptr;
}

kube::Json templateOf(const JsonValue& spec) {
  kube::Json t(rapidjson::kObjectType);
  auto& a = t.GetAllocator();
  for (const char* f : {"groups", "constraints", "affinities", "spread"}) {
    if (const JsonValue* v = kube::find(spec, {f})) t.AddMember(kube::str(f, a), JsonValue(*v, a), a);
  }
  if (JsonValue* gs = kube::find(t, {"groups"}); gs && gs->IsArray()) {
    for (auto& g : gs->GetArray()) {
      if (!g.IsObject()) continue;
      kube::removeMember(g, "count");
      kube::removeMember(g, "completions");
    }
  }
  return t;
}

std::string canonicalJson(const JsonValue& v) {
  rapidjson::StringBuffer buf;
  rapidjson::Writer<rapidjson::StringBuffer> w(buf);
  writeCanonical(v, w);
  return {buf.GetString(), buf.GetSize()};
}

std::string hashHex(std::string_view s) {
  uint64_t h = 1469598103934665603ULL;
  for (unsigned char c : s) {
    h ^= c;
    h *= 1099511628211ULL;
  }
  char out[17];
  std::snprintf(out, sizeof out, "%016llx", static_cast<unsigned long long>(h));
  return out;
}

kube::StatusOr<JobSpec> parseJobSpec(const JsonValue& job, const std::vector<WorkerOffer>& workers) {
  const JsonValue* spec = kube::find(job, {"spec"});
  if (spec == nullptr || !spec->IsObject()) return Status::invalid("spec: required");
  JobSpec s;
  s.type = kube::getString(*spec, {"type"}, "service");
  if (s.type != "service" && s.type != "batch" && s.type != "system" && s.type != "sysbatch") {
    return Status::invalid("spec.type: unknown type \"" + s.type + "\"");
  }
  s.priority = intOr(*spec, {"priority"}, 50, 0, 100);
  s.suspend = kube::getBool(*spec, {"suspend"});
  s.backoffLimit = intOr(*spec, {"backoffLimit"}, 6, 0, 1 << 20);
  // Durations are clamped to 100 years so that time arithmetic on them cannot overflow.
  constexpr int64_t kCentury = 100LL * 366 * 86400;
  if (auto v = kube::getInt(*spec, {"activeDeadlineSeconds"}); v && *v > 0) s.activeDeadlineSeconds = std::min(*v, kCentury);
  if (auto v = kube::getInt(*spec, {"ttlSecondsAfterFinished"}); v && *v >= 0) s.ttlSecondsAfterFinished = std::min(*v, kCentury);
  s.revisionHistoryLimit = intOr(*spec, {"revisionHistoryLimit"}, 10, 0, 1000);
  if (auto v = kube::getInt(*spec, {"promoteVersion"})) s.promoteVersion = std::clamp<int64_t>(*v, -1, int64_t{1} << 52);
  if (auto v = kube::getInt(*spec, {"rollbackTo", "version"})) s.rollbackTo = std::clamp<int64_t>(*v, -1, int64_t{1} << 52);
  if (const JsonValue* sch = kube::find(*spec, {"schedule"})) {
    if (!sch->IsObject()) return Status::invalid("spec.schedule: must be an object");
    if (!s.isBatch()) return Status::invalid("spec.schedule: only batch and sysbatch jobs can be periodic");
    if (Status st = validateCron(kube::getString(*sch, {"cron"})); !st) return Status::invalid("spec.schedule.cron: " + st.message());
    if (Status st = validateTimeZone(kube::getString(*sch, {"timeZone"}, "UTC")); !st) {
      return Status::invalid("spec.schedule.timeZone: " + st.message());
    }
    s.periodic = true;
  }
  UpdateStrategy jobUpdate;
  readUpdate(kube::find(*spec, {"update"}), jobUpdate);
  scheduler::PlacementRequest jobReq;
  bool jobDistinct = false;
  if (Status st = readRequirements(kube::find(*spec, {"constraints"}), "spec.constraints", true, jobReq.constraints, jobDistinct); !st) return st;
  if (Status st = readAffinities(kube::find(*spec, {"affinities"}), "spec.affinities", jobReq.affinities); !st) return st;
  if (Status st = readSpreads(kube::find(*spec, {"spread"}), "spec.spread", jobReq.spreads); !st) return st;
  // Job-level DistinctHosts applies across groups; it is not a per-worker label test.
  std::erase_if(jobReq.constraints, [](const auto& r) { return r.op == "DistinctHosts"; });

  const JsonValue* groups = kube::find(*spec, {"groups"});
  if (groups == nullptr || !groups->IsArray() || groups->Empty()) return Status::invalid("spec.groups: at least one group is required");
  kube::Json tmpl = templateOf(*spec);
  s.templateHash = hashHex(canonicalJson(tmpl));
  std::string jobParts;
  for (const char* f : {"constraints", "affinities", "spread"}) {
    if (const JsonValue* v = kube::find(tmpl, {f})) jobParts += canonicalJson(*v);
  }
  std::set<std::string> names;
  int i = 0;
  const JsonValue* tgroups = kube::find(tmpl, {"groups"});
  for (const auto& g : groups->GetArray()) {
    std::string at = "spec.groups[" + std::to_string(i) + "]";
    GroupSpec gs;
    gs.update = jobUpdate;
    if (Status st = readGroup(g, at, s, gs, workers); !st) return st;
    if (!names.insert(gs.name).second) return Status::invalid(at + ".name: duplicate group name \"" + gs.name + "\"");
    auto& r = gs.request;
    r.jobKey = kube::ns(job) + "/" + kube::name(job);
    r.constraints.insert(r.constraints.end(), jobReq.constraints.begin(), jobReq.constraints.end());
    r.affinities.insert(r.affinities.end(), jobReq.affinities.begin(), jobReq.affinities.end());
    r.spreads.insert(r.spreads.end(), jobReq.spreads.begin(), jobReq.spreads.end());
    r.distinctHostsJob = jobDistinct;
    if (gs.update.canary > gs.count) gs.update.canary = gs.count;
    gs.hash = hashHex(canonicalJson((*tgroups)[static_cast<rapidjson::SizeType>(i)]) + jobParts);
    s.groups.push_back(std::move(gs));
    ++i;
  }
  return s;
}

// ---- cron ---------------------------------------------------------------------------------

namespace {

int cronName(std::string_view s, bool month) {
  static const char* kMonths[] = {"jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"};
  static const char* kDays[] = {"sun", "mon", "tue", "wed", "thu", "fri", "sat"};
  std::string l;
  for (char c : s) l += static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  if (month) {
    for (int i = 0; i < 12; ++i) if (l == kMonths[i]) return i + 1;
  } else {
    for (int i = 0; i < 7; ++i) if (l == kDays[i]) return i;
  }
  return -1;
}

Status cronValue(std::string_view s, int lo, int hi, int field, int& out) {
  if (s.empty()) return Status::invalid("empty value");
  int v = -1;
  if (isInteger(s) && s[0] != '-' && s[0] != '+') {
    std::from_chars(s.data(), s.data() + s.size(), v);
  } else if (field == 3 || field == 4) {
    v = cronName(s, field == 3);
  }
  if (v < lo || v > hi) return Status::invalid("\"" + std::string(s) + "\" is not in " + std::to_string(lo) + "-" + std::to_string(hi));
  out = v;
  return Status::ok();
}

}  // namespace

Status validateCron(std::string_view cron) {
  static const char* kFields[] = {"minute", "hour", "day of month", "month", "day of week"};
  static const int kLo[] = {0, 0, 1, 1, 0};
  static const int kHi[] = {59, 23, 31, 12, 7};
  if (cron.empty()) return Status::invalid("empty schedule");
  if (cron[0] == '@') {
    for (const char* m : {"@yearly", "@annually", "@monthly", "@weekly", "@daily", "@midnight", "@hourly"}) {
      if (cron == m) return Status::ok();
    }
    return Status::invalid("unknown descriptor \"" + std::string(cron) + "\"");
  }
  std::vector<std::string_view> fields;
  size_t i = 0;
  while (i < cron.size()) {
    while (i < cron.size() && (cron[i] == ' ' || cron[i] == '\t')) ++i;
    size_t j = i;
    while (j < cron.size() && cron[j] != ' ' && cron[j] != '\t') ++j;
    if (j > i) fields.push_back(cron.substr(i, j - i));
    i = j;
  }
  if (fields.size() != 5) return Status::invalid("expected 5 fields (minute hour day-of-month month day-of-week), got " + std::to_string(fields.size()));
  for (int f = 0; f < 5; ++f) {
    std::string_view field = fields[f];
    size_t pos = 0;
    while (pos <= field.size()) {
      size_t comma = field.find(',', pos);
      std::string_view part = field.substr(pos, comma == std::string_view::npos ? std::string_view::npos : comma - pos);
      std::string where = std::string(kFields[f]) + " \"" + std::string(field) + "\": ";
      std::string_view range = part, step;
      if (size_t slash = part.find('/'); slash != std::string_view::npos) {
        range = part.substr(0, slash);
        step = part.substr(slash + 1);
        int sv = 0;
        if (!isInteger(step) || step[0] == '-' || (std::from_chars(step.data(), step.data() + step.size(), sv), sv <= 0)) {
          return Status::invalid(where + "bad step \"" + std::string(step) + "\"");
        }
      }
      if (range != "*" && range != "?") {
        size_t dash = range.find('-', 1);
        int a = 0, b = 0;
        if (Status st = cronValue(range.substr(0, dash), kLo[f], kHi[f], f, a); !st) return Status::invalid(where + st.message());
        if (dash != std::string_view::npos) {
          if (Status st = cronValue(range.substr(dash + 1), kLo[f], kHi[f], f, b); !st) return Status::invalid(where + st.message());
          if (b < a) return Status::invalid(where + "range ends before it starts");
        }
      }
      if (comma == std::string_view::npos) break;
      pos = comma + 1;
    }
  }
  return Status::ok();
}

Status validateTimeZone(std::string_view tz) {
  if (tz.empty() || tz == "UTC" || tz == "Local") return Status::ok();
  if (tz.find("..") != std::string_view::npos || tz[0] == '/') return Status::invalid("invalid time zone \"" + std::string(tz) + "\"");
  struct stat sb{};
  std::string path = "/usr/share/zoneinfo/" + std::string(tz);
  if (stat(path.c_str(), &sb) != 0 || !S_ISREG(sb.st_mode)) return Status::invalid("unknown time zone \"" + std::string(tz) + "\"");
  return Status::ok();
}

}  // namespace op
