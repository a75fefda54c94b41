#include "tests/kube/fake_api_server.h"

#include <algorithm>
#include <sstream>
#include <stdexcept>

namespace kube::testing {

namespace {

struct Route {
  std::string collection;  // "/api/v1/pods"
  std::string ns;
  std::string name;
  std::string sub;
};

bool parseRoute(const std::string& path, Route& r) {
  std::vector<std::string> seg;
  std::stringstream ss(path);
  std::string s;
  while (std::getline(ss, s, '/')) {
    if (!s.empty()) seg.push_back(s);
  }
  size_t i = 0;
  std::string prefix;
  if (seg.size() >= 2 && seg[0] == "api") {
    prefix = "/api/" + seg[1];
    i = 2;
  } else if (seg.size() >= 3 && seg[0] == "apis") {
    prefix = "/apis/" + seg[1] + "/" + seg[2];
    i = 3;
  } else {
    return false;
  }
  std::vector<std::string> rest(seg.begin() + static_cast<long>(i), seg.end());
  if (rest.size() >= 3 && rest[0] == "namespaces") {
    r.ns = rest[1];
    rest.erase(rest.begin(), rest.begin() + 2);
  }
  if (rest.empty() || rest.size() > 3) return false;
  r.collection = prefix + "/" + rest[0];
  if (rest.size() >= 2) r.name = rest[1];
  if (rest.size() == 3) r.sub = rest[2];
  return true;
}

std::string decode(const std::string& s) {
  std::string out;
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] == '%' && i + 2 < s.size()) {
      out += static_cast<char>(std::stoi(s.substr(i + 1, 2), nullptr, 16));
      i += 2;
    } else if (s[i] == '+') {
      out += ' ';
    } else {
      out += s[i];
    }
  }
  return out;
}

std::map<std::string, std::string> parseQuery(const std::string& q) {
  std::map<std::string, std::string> out;
  std::stringstream ss(q);
  std::string kv;
  while (std::getline(ss, kv, '&')) {
    size_t eq = kv.find('=');
    if (eq == std::string::npos) {
      out[decode(kv)] = "";
    } else {
      out[decode(kv.substr(0, eq))] = decode(kv.substr(eq + 1));
    }
  }
  return out;
}

std::string statusBody(int code, const std::string& reason, const std::string& message) {
  Json d;
  d.SetObject();
  auto& a = d.GetAllocator();
  setString(d, "kind", "Status", a);
  setString(d, "apiVersion", "v1", a);
  setMember(d, "metadata", JsonValue(rapidjson::kObjectType), a);
  setString(d, "status", "Failure", a);
  setString(d, "message", message, a);
  setString(d, "reason", reason, a);
  setMember(d, "code", JsonValue(code), a);
  return toJson(d);
}

void mergePatch(JsonValue& target, const JsonValue& patch, JsonAlloc& a) {
  if (!patch.IsObject()) {
    target.CopyFrom(patch, a);
    return;
  }
  if (!target.IsObject()) target.SetObject();
  for (const auto& m : patch.GetObject()) {
    if (m.value.IsNull()) {
      removeMember(target, view(m.name));
      continue;
    }
    JsonValue* existing = find(target, {view(m.name)});
    if (existing != nullptr && m.value.IsObject()) {
      mergePatch(*existing, m.value, a);
    } else {
      setMember(target, view(m.name), JsonValue(m.value, a), a);
    }
  }
}

std::string keyOf(const std::string& ns, const std::string& name) { return ns.empty() ? name : ns + "/" + name; }

}  // namespace

FakeApiServer::FakeApiServer() {
  HttpServerOptions o;
  auto s = startHttpServer(o, [this](const ServerRequest& req, ResponseWriter& w) { handle(req, w); });
  if (!s) throw std::runtime_error("FakeApiServer: " + s.status().toString());
  server_ = std::move(*s);
}

FakeApiServer::~FakeApiServer() {
  {
    std::lock_guard<std::mutex> l(mu_);
    stopping_ = true;
  }
  cv_.notify_all();
  server_->stop();
}

void FakeApiServer::emitLocked(const std::string& collection, const std::string& type, const Json& obj) {
  events_.push_back({rv_, collection, type, toJson(obj)});
}

std::string FakeApiServer::put(const std::string& collection, Json obj, bool emit) {
  std::lock_guard<std::mutex> l(mu_);
  auto& a = obj.GetAllocator();
  JsonValue& md = ensureObject(obj, "metadata", a);
  std::string key = keyOf(getString(md, {"namespace"}), getString(md, {"name"}));
  auto& coll = store_[collection];
  bool existed = coll.count(key) != 0;
  if (uid(obj).empty()) setString(md, "uid", "uid-" + key, a);
  setString(md, "resourceVersion", std::to_string(++rv_), a);
  if (emit) emitLocked(collection, existed ? "MODIFIED" : "ADDED", obj);
  std::string rv = std::to_string(rv_);
  coll[key] = std::move(obj);
  touch();
  return rv;
}

void FakeApiServer::erase(const std::string& collection, const std::string& ns, const std::string& name,
                          bool emit) {
  std::lock_guard<std::mutex> l(mu_);
  auto& coll = store_[collection];
  auto it = coll.find(keyOf(ns, name));
  if (it == coll.end()) return;
  setString(ensureObject(it->second, "metadata", it->second.GetAllocator()), "resourceVersion",
            std::to_string(++rv_), it->second.GetAllocator());
  if (emit) emitLocked(collection, "DELETED", it->second);
  coll.erase(it);
  touch();
}

JsonPtr FakeApiServer::object(const std::string& collection, const std::string& ns, const std::string& name) const {
  std::lock_guard<std::mutex> l(mu_);
  auto c = store_.find(collection);
  if (c == store_.end()) return nullptr;
  auto it = c->second.find(keyOf(ns, name));
  return it == c->second.end() ? nullptr : shareJson(cloneJson(it->second));
}

void FakeApiServer::compact() {
  std::lock_guard<std::mutex> l(mu_);
  compactedThrough_ = ++rv_;
  events_.clear();
  ++compactGeneration_;
  touch();
}

void FakeApiServer::setExpiredAsErrorEvent(bool v) {
  std::lock_guard<std::mutex> l(mu_);
  expiredAsErrorEvent_ = v;
}

void FakeApiServer::endWatches() {
  std::lock_guard<std::mutex> l(mu_);
  ++watchGeneration_;
  touch();
}

void FakeApiServer::bookmark() {
  std::lock_guard<std::mutex> l(mu_);
  ++rv_;  // bookmarks carry a resourceVersion newer than any object
  ++bookmarkGeneration_;
  touch();
}

void FakeApiServer::failNext(const std::string& method, int n, int code) {
  std::lock_guard<std::mutex> l(mu_);
  failMethod_ = method;
  failCount_ = n;
  failCode_ = code;
}

std::vector<RecordedRequest> FakeApiServer::requests() const {
  std::lock_guard<std::mutex> l(mu_);
  return requests_;
}

int FakeApiServer::countRequests(const std::string& method, const std::string& q) const {
  std::lock_guard<std::mutex> l(mu_);
  return static_cast<int>(std::count_if(requests_.begin(), requests_.end(), [&](const RecordedRequest& r) {
    return r.method == method && r.query.find(q) != std::string::npos;
  }));
}

int FakeApiServer::openWatches() const {
  std::lock_guard<std::mutex> l(mu_);
  return openWatches_;
}

void FakeApiServer::handle(const ServerRequest& req, ResponseWriter& w) {
  auto reply = [&](int code, const std::string& body) { w.respond(code, "application/json", body); };
  auto fail = [&](int code, const std::string& reason, const std::string& msg) {
    reply(code, statusBody(code, reason, msg));
  };
  int injected = 0;
  {
    std::lock_guard<std::mutex> l(mu_);
    requests_.push_back({req.method, req.path, req.query, req.header("content-type"), req.header("authorization"),
                         req.body});
    touch();
    if (failCount_ > 0 && req.method == failMethod_) {
      --failCount_;
      injected = failCode_;
    }
  }
  if (injected != 0) {
    std::string reason = injected == 410 ? "Expired" : injected == 409 ? "Conflict" : "InternalError";
    return fail(injected, reason, "injected failure");
  }
  Route r;
  if (!parseRoute(req.path, r)) return fail(404, "NotFound", "no route for " + req.path);
  auto q = parseQuery(req.query);

  if (req.method == "GET" && r.name.empty() && q.count("watch") != 0 && q["watch"] != "false") {
    return serveWatch(r.collection, req, w);
  }

  std::unique_lock<std::mutex> l(mu_);
  auto& coll = store_[r.collection];
  std::string key = keyOf(r.ns, r.name);

  if (req.method == "GET" && r.name.empty()) {
    auto sel = Selector::parse(q["labelSelector"]);
    if (!sel) return fail(400, "BadRequest", sel.status().message());
    int64_t limit = q.count("limit") ? std::stoll(q["limit"]) : 0;
    std::string after = q["continue"];
    Json list;
    list.SetObject();
    auto& a = list.GetAllocator();
    std::string kind;
    JsonValue items(rapidjson::kArrayType);
    std::string lastKey;
    bool more = false;
    for (const auto& [k, obj] : coll) {
      if (!r.ns.empty() && ns(obj) != r.ns) continue;
      if (!after.empty() && k <= after) continue;
      if (!sel->matchesObject(obj)) continue;
      if (limit > 0 && static_cast<int64_t>(items.Size()) >= limit) {
        more = true;
        break;
      }
      if (kind.empty()) kind = getString(obj, {"kind"});
      JsonValue item(obj, a);
      removeMember(item, "kind");  // like a real server's typed lists
      removeMember(item, "apiVersion");
      items.PushBack(std::move(item), a);
      lastKey = k;
    }
    setString(list, "kind", kind.empty() ? "List" : kind + "List", a);
    setString(list, "apiVersion", "v1", a);
    JsonValue& md = ensureObject(list, "metadata", a);
    setString(md, "resourceVersion", std::to_string(rv_), a);
    if (more) setString(md, "continue", lastKey, a);
    setMember(list, "items", std::move(items), a);
    return reply(200, toJson(list));
  }

  auto it = coll.find(key);
  if (req.method == "GET") {
    if (it == coll.end()) return fail(404, "NotFound", r.collection + " \"" + r.name + "\" not found");
    return reply(200, toJson(it->second));
  }

  auto body = parseJson(req.body.empty() ? "{}" : req.body);
  if (!body) return fail(400, "BadRequest", body.status().message());

  if (req.method == "POST") {
    std::string n = name(*body);
    std::string objNs = r.ns.empty() ? ns(*body) : r.ns;
    key = keyOf(objNs, n);
    if (n.empty()) return fail(422, "Invalid", "metadata.name: Required value");
    if (coll.count(key) != 0) return fail(409, "AlreadyExists", r.collection + " \"" + n + "\" already exists");
    Json obj = std::move(*body);
    auto& a = obj.GetAllocator();
    JsonValue& md = ensureObject(obj, "metadata", a);
    if (!objNs.empty()) setString(md, "namespace", objNs, a);
    setString(md, "uid", "uid-" + key, a);
    setString(md, "resourceVersion", std::to_string(++rv_), a);
    emitLocked(r.collection, "ADDED", obj);
    std::string out = toJson(obj);
    coll[key] = std::move(obj);
    touch();
    return reply(201, out);
  }

  if (it == coll.end()) return fail(404, "NotFound", r.collection + " \"" + r.name + "\" not found");
  Json& cur = it->second;
  auto& a = cur.GetAllocator();

  if (req.method == "PUT") {
    std::string want = resourceVersion(*body);
    if (!want.empty() && want != resourceVersion(cur)) {
      return fail(409, "Conflict",
                  "Operation cannot be fulfilled on " + r.collection + " \"" + r.name +
                      "\": the object has been modified; please apply your changes to the latest version and try again");
    }
    if (r.sub == "status") {
      if (const JsonValue* st = find(*body, {"status"})) setMember(cur, "status", JsonValue(*st, a), a);
    } else {
      Json next = cloneJson(*body);
      JsonValue& md = ensureObject(next, "metadata", next.GetAllocator());
      setString(md, "uid", uid(cur), next.GetAllocator());
      if (!r.ns.empty()) setString(md, "namespace", r.ns, next.GetAllocator());
      cur = std::move(next);
    }
  } else if (req.method == "PATCH") {
    if (req.header("content-type") != "application/json-patch+json") {
      if (r.sub == "status") {
        if (const JsonValue* st = find(*body, {"status"})) {
          JsonValue& target = ensureObject(cur, "status", a);
          mergePatch(target, *st, a);
        }
      } else {
        mergePatch(cur, *body, a);
      }
    }
  } else if (req.method == "DELETE") {
    std::string preUid = getString(*body, {"preconditions", "uid"});
    std::string preRv = getString(*body, {"preconditions", "resourceVersion"});
    if ((!preUid.empty() && preUid != uid(cur)) || (!preRv.empty() && preRv != resourceVersion(cur))) {
      return fail(409, "Conflict", "Precondition failed for " + r.collection + " \"" + r.name + "\"");
    }
    setString(ensureObject(cur, "metadata", a), "resourceVersion", std::to_string(++rv_), a);
    emitLocked(r.collection, "DELETED", cur);
    std::string out = toJson(cur);
    coll.erase(it);
    touch();
    return reply(200, out);
  } else {
    return fail(405, "MethodNotAllowed", req.method);
  }
  setString(ensureObject(cur, "metadata", a), "resourceVersion", std::to_string(++rv_), a);
  emitLocked(r.collection, "MODIFIED", cur);
  touch();
  reply(200, toJson(cur));
}

void FakeApiServer::serveWatch(const std::string& collection, const ServerRequest& req, ResponseWriter& w) {
  Route r;
  parseRoute(req.path, r);
  auto q = parseQuery(req.query);
  std::string rvText = q["resourceVersion"];
  int timeoutSeconds = q.count("timeoutSeconds") ? std::stoi(q["timeoutSeconds"]) : 3600;
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(timeoutSeconds);
  auto expiredEvent = [](int64_t asked, int64_t oldest) {
    return "{\"type\":\"ERROR\",\"object\":" +
           statusBody(410, "Expired",
                      "too old resource version: " + std::to_string(asked) + " (" + std::to_string(oldest) + ")") +
           "}\n";
  };

  std::unique_lock<std::mutex> l(mu_);
  int64_t since = rvText.empty() || rvText == "0" ? -1 : std::stoll(rvText);
  if (since >= 0 && since < compactedThrough_) {
    int64_t oldest = compactedThrough_;
    bool asEvent = expiredAsErrorEvent_;
    l.unlock();
    if (asEvent) {
      if (w.beginStream(200, "application/json")) w.write(expiredEvent(since, oldest));
    } else {
      w.respond(410, "application/json", statusBody(410, "Expired", "too old resource version"));
    }
    return;
  }
  std::vector<std::string> pending;
  if (since < 0) {
    // No resourceVersion: synthetic ADDED events for the current state, then live events.
    for (const auto& [k, obj] : store_[collection]) {
      if (!r.ns.empty() && ns(obj) != r.ns) continue;
      pending.push_back("{\"type\":\"ADDED\",\"object\":" + toJson(obj) + "}\n");
    }
    since = rv_;
  }
  const int generation = watchGeneration_;
  const int compactGen = compactGeneration_;
  int bookmarkGen = bookmarkGeneration_;
  ++openWatches_;
  touch();
  l.unlock();
  bool ok = w.beginStream(200, "application/json");
  l.lock();
  while (ok) {
    for (const auto& e : events_) {
      if (e.rv <= since || e.collection != collection) continue;
      auto obj = parseJson(e.object);
      if (!r.ns.empty() && ns(*obj) != r.ns) continue;
      pending.push_back("{\"type\":\"" + e.type + "\",\"object\":" + e.object + "}\n");
    }
    if (!events_.empty()) since = std::max(since, events_.back().rv);
    bool sendBookmark = bookmarkGen != bookmarkGeneration_;
    bookmarkGen = bookmarkGeneration_;
    if (sendBookmark) {
      pending.push_back(R"({"type":"BOOKMARK","object":{"kind":"Bookmark","apiVersion":"v1","metadata":{"resourceVersion":")" +
                        std::to_string(rv_) + "\"}}}\n");
    }
    bool compacted = compactGen != compactGeneration_;
    bool asEvent = expiredAsErrorEvent_;
    int64_t oldest = compactedThrough_;
    l.unlock();
    for (const auto& line : pending) ok = ok && w.write(line);
    pending.clear();
    if (compacted && asEvent && ok) w.write(expiredEvent(since, oldest));
    l.lock();
    if (compacted || stopping_ || generation != watchGeneration_) break;
    if (std::chrono::steady_clock::now() >= deadline) break;
    cv_.wait_for(l, std::chrono::milliseconds(50));
    if (w.peerClosed()) break;
  }
  --openWatches_;
  touch();
}

}  // namespace kube::testing
