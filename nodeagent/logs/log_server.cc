#include "nodeagent/logs/log_server.h"

#include <openssl/evp.h>

#include <algorithm>
#include <charconv>
#include <thread>

#include "kube/labels.h"
#include "nodeagent/logs/log_files.h"

namespace nodeagent::logs {

using kube::Status;
using kube::StatusOr;

namespace {

constexpr const char* kJson = "application/json";
constexpr size_t kChunkBytes = size_t{64} * 1024;
const kube::ResourceRef kTokenReviews{"authentication.k8s.io", "v1", "tokenreviews", "", "", ""};

std::string sha256(const std::string& s) {
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  EVP_Digest(s.data(), s.size(), md, &len, EVP_sha256(), nullptr);
  return std::string(reinterpret_cast<const char*>(md), len);
}

std::string statusJson(const Status& st) {
  kube::Json d(rapidjson::kObjectType);
  auto& a = d.GetAllocator();
  kube::setString(d, "kind", "Status", a);
  kube::setString(d, "apiVersion", "v1", a);
  d.AddMember("metadata", kube::JsonValue(rapidjson::kObjectType), a);
  kube::setString(d, "status", "Failure", a);
  kube::setString(d, "message", st.message(), a);
  kube::setString(d, "reason", st.reason(), a);
  d.AddMember("code", st.code(), a);
  return kube::toJson(d);
}

int hexValue(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

StatusOr<std::string> percentDecode(std::string_view s) {
  std::string out;
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] == '+') {
      out.push_back(' ');
    } else if (s[i] == '%') {
      if (i + 2 >= s.size() || hexValue(s[i + 1]) < 0 || hexValue(s[i + 2]) < 0) {
        return Status::badRequest("malformed percent-encoding in the query string");
      }
      int hi = hexValue(s[i + 1]);
      int lo = hexValue(s[i + 2]);
      out.push_back(static_cast<char>(hi * 16 + lo));
      i += 2;
    } else {
      out.push_back(s[i]);
    }
  }
  return out;
}

struct LogQuery {
  std::string stream = "stdout";
  std::optional<uint64_t> tail;
  bool follow = false;
  std::optional<Cursor> from;
  bool frames = false;
};

StatusOr<bool> parseBool(const std::string& name, const std::string& v) {
  if (v == "true" || v == "1" || v.empty()) return true;
  if (v == "false" || v == "0") return false;
  return Status::badRequest(name + ": invalid value \"" + v + "\": must be true or false");
}

StatusOr<LogQuery> parseLogQuery(std::string_view raw) {
  LogQuery q;
  std::map<std::string, std::string> seen;
  if (raw.size() > 4096) return Status::badRequest("query string too long");
  size_t pos = 0;
  while (pos < raw.size()) {
    size_t amp = raw.find('&', pos);
    std::string_view item = raw.substr(pos, amp == std::string_view::npos ? std::string_view::npos : amp - pos);
    pos = amp == std::string_view::npos ? raw.size() : amp + 1;
    if (item.empty()) continue;
    size_t eq = item.find('=');
    auto key = percentDecode(item.substr(0, eq));
    if (!key) return key.status();
    auto value = percentDecode(eq == std::string_view::npos ? std::string_view() : item.substr(eq + 1));
    if (!value) return value.status();
    if (!seen.emplace(*key, *value).second) return Status::badRequest("parameter \"" + *key + "\" given twice");
  }
  for (const auto& [k, v] : seen) {
    if (k == "stream") {
      if (v != "stdout" && v != "stderr") {
        return Status::badRequest("stream: unsupported value \"" + v + "\": supported values: \"stdout\", \"stderr\"");
      }
      q.stream = v;
    } else if (k == "tail") {
      uint64_t n = 0;
      auto [p, ec] = std::from_chars(v.data(), v.data() + v.size(), n);
      if (v.empty() || ec != std::errc() || p != v.data() + v.size() || n > (uint64_t{1} << 62)) {
        return Status::badRequest("tail: invalid value \"" + v + "\": must be a non-negative integer");
      }
      q.tail = n;
    } else if (k == "follow") {
      auto b = parseBool(k, v);
      if (!b) return b.status();
      q.follow = *b;
    } else if (k == "frames") {
      auto b = parseBool(k, v);
      if (!b) return b.status();
      q.frames = *b;
    } else if (k == "from") {
      q.from = parseCursor(v);
      if (!q.from) return Status::badRequest("from: invalid cursor \"" + v + "\": must be <index>:<offset>");
    } else {
      return Status::badRequest("unknown parameter \"" + k + "\": supported: stream, tail, follow, from, frames");
    }
  }
  if (q.tail && q.from) return Status::badRequest("tail and from are mutually exclusive");
  return q;
}

}  // namespace

TokenReviewer::TokenReviewer(kube::RestClientPtr client, std::chrono::milliseconds ttl, size_t maxEntries)
    : client_(std::move(client)), ttl_(ttl), maxEntries_(maxEntries) {}

StatusOr<std::optional<Caller>> TokenReviewer::review(const std::string& token) {
  std::string key = sha256(token);
  auto now = std::chrono::steady_clock::now();
  {
    std::lock_guard l(mu_);
    auto it = cache_.find(key);
    if (it != cache_.end() && it->second.expires > now) return it->second.caller;
  }
  kube::Json body(rapidjson::kObjectType);
  auto& a = body.GetAllocator();
  kube::setString(body, "apiVersion", "authentication.k8s.io/v1", a);
  kube::setString(body, "kind", "TokenReview", a);
  kube::JsonValue spec(rapidjson::kObjectType);
  kube::setString(spec, "token", token, a);
  body.AddMember("spec", std::move(spec), a);
  auto r = client_->create(kTokenReviews, body);
  if (!r) return Status::unavailable("cannot review the token with the API server: " + r.status().message());
  std::optional<Caller> caller;
  const kube::JsonValue* authenticated = kube::find(*r, {"status", "authenticated"});
  if (authenticated != nullptr && authenticated->IsBool() && authenticated->GetBool()) {
    Caller c;
    c.user = kube::getString(*r, {"status", "user", "username"});
    if (const kube::JsonValue* g = kube::find(*r, {"status", "user", "groups"}); g != nullptr && g->IsArray()) {
      for (const auto& v : g->GetArray()) {
        if (v.IsString()) c.groups.emplace_back(kube::view(v));
      }
    }
    caller = std::move(c);
  }
  std::lock_guard l(mu_);
  if (cache_.size() >= maxEntries_) {
    std::erase_if(cache_, [&](const auto& e) { return e.second.expires <= now; });
    if (cache_.size() >= maxEntries_) cache_.clear();  // a flood of distinct tokens: start over
  }
  cache_[key] = Entry{caller, now + ttl_};
  return caller;
}

StatusOr<std::unique_ptr<LogServer>> LogServer::start(LogServerOptions options) {
  std::unique_ptr<LogServer> s(new LogServer(std::move(options)));
  kube::HttpServerOptions ho;
  ho.host = s->options_.host;
  ho.port = s->options_.port;
  ho.certFile = s->options_.certFile;
  ho.keyFile = s->options_.keyFile;
  ho.maxBodyBytes = size_t{64} * 1024;  // requests are GETs
  ho.maxConnections = 256;
  LogServer* self = s.get();
  auto http = kube::startHttpServer(ho, [self](const kube::ServerRequest& r, kube::ResponseWriter& w) {
    try {
      self->handle(r, w);
    } catch (const std::exception& e) {
      w.respond(500, kJson, statusJson(Status::internal(std::string("internal error: ") + e.what())));
    }
  });
  if (!http) return http.status();
  s->http_ = std::move(*http);
  return s;
}

LogServer::~LogServer() { stop(); }

uint16_t LogServer::port() const { return http_ ? http_->port() : 0; }

void LogServer::stop() {
  stopping_ = true;
  if (http_) http_->stop();
}

void LogServer::handle(const kube::ServerRequest& req, kube::ResponseWriter& w) {
  auto fail = [&](const Status& st) { w.respond(st.code(), kJson, statusJson(st)); };
  if (req.path == "/healthz") {
    w.respond(200, "text/plain; charset=utf-8", "ok");
    return;
  }
  // Authentication first: callers without a valid token learn nothing, not even 404s.
  std::string auth = req.header("authorization");
  constexpr std::string_view kBearer = "Bearer ";
  if (auth.size() <= kBearer.size() || auth.compare(0, kBearer.size(), kBearer) != 0) {
    fail(Status::unauthorized("Unauthorized"));
    return;
  }
  std::string token = auth.substr(kBearer.size());
  if (token.size() > 8192) {
    fail(Status::unauthorized("Unauthorized"));
    return;
  }
  auto caller = options_.authenticate(token);
  if (!caller) {
    fail(caller.status());
    return;
  }
  if (!*caller) {
    fail(Status::unauthorized("Unauthorized"));
    return;
  }
  const Caller& who = **caller;
  if (std::find(who.groups.begin(), who.groups.end(), "system:masters") == who.groups.end()) {
    fail(Status::forbidden("User \"" + who.user + "\" cannot get resource \"allocations/log\" in API group \"foxden.io\": "
                           "only the cluster admin (group system:masters) may read task logs"));
    return;
  }
  if (req.method != "GET") {
    fail(Status::methodNotAllowed("the server does not allow this method on the requested resource"));
    return;
  }
  // The path is percent-decoded by the server: an encoded '/' becomes a separator and makes the
  // path malformed rather than reaching a file name.
  constexpr std::string_view kPrefix = "/logs/";
  if (req.path.compare(0, kPrefix.size(), kPrefix) != 0) {
    fail(Status::notFound("the server could not find the requested resource (GET /logs/<namespace>/<allocation>/<task>)"));
    return;
  }
  std::vector<std::string> parts;
  size_t pos = kPrefix.size();
  while (pos <= req.path.size()) {
    size_t slash = req.path.find('/', pos);
    if (slash == std::string::npos) slash = req.path.size();
    parts.push_back(req.path.substr(pos, slash - pos));
    pos = slash + 1;
  }
  if (parts.size() != 3) {
    fail(Status::badRequest("the path must be /logs/<namespace>/<allocation>/<task>"));
    return;
  }
  const std::string &ns = parts[0], &name = parts[1], &task = parts[2];
  if (!kube::isDnsLabel(ns)) {
    fail(Status::badRequest("invalid namespace \"" + ns + "\": must be a DNS-1123 label"));
    return;
  }
  if (!kube::isDnsSubdomain(name)) {
    fail(Status::badRequest("invalid allocation name \"" + name + "\": must be a DNS-1123 subdomain"));
    return;
  }
  if (!kube::isDnsLabel(task)) {
    fail(Status::badRequest("invalid task name \"" + task + "\": must be a DNS-1123 label"));
    return;
  }
  auto q = parseLogQuery(req.query);
  if (!q) {
    fail(q.status());
    return;
  }
  if (options_.ready && !options_.ready()) {
    fail(Status::unavailable("the agent is starting: its allocation cache is not synced yet"));
    return;
  }
  std::string key = ns + "/" + name;
  kube::JsonPtr alloc = options_.allocation(key);
  if (!alloc) {
    fail(Status::notFound("allocations.foxden.io \"" + name + "\" not found on this worker"));
    return;
  }
  std::string uid = kube::uid(*alloc);
  std::vector<std::string> tasks;
  if (const kube::JsonValue* ts = kube::find(*alloc, {"spec", "tasks"}); ts != nullptr && ts->IsArray()) {
    for (const auto& t : ts->GetArray()) tasks.push_back(kube::getString(t, {"name"}));
  }
  if (std::find(tasks.begin(), tasks.end(), task) == tasks.end()) {
    std::string list;
    for (const auto& t : tasks) list += (list.empty() ? "" : ", ") + t;
    fail(Status::notFound("task \"" + task + "\" not found in allocation " + key + " (tasks: " + list + ")"));
    return;
  }
  if (uid.empty() || uid.find('/') != std::string::npos || uid.find("..") != std::string::npos) {
    fail(Status::internal("allocation " + key + " has an unusable uid"));
    return;
  }
  std::string dir = options_.dataDir + "/allocs/" + uid + "/" + task + "/logs";
  // Without follow the answer is the log as of now: what is written meanwhile is not included, and
  // --tail N counts back from that same end (so it gives N lines even while the task writes).
  const Cursor end = tailCursor(dir, q->stream, 0);
  Cursor start =
      q->from ? *q->from : q->tail ? tailCursor(dir, q->stream, *q->tail, &end) : firstCursor(dir, q->stream);
  LogFollower follower(dir, q->stream, start);
  auto atEnd = [&](const Cursor& c) { return c.index > end.index || (c.index == end.index && c.offset >= end.offset); };
  w.setHeader("X-Foxden-Log-Cursor", formatCursor(start));
  if (!w.beginStream(200, q->frames ? "application/vnd.foxden.log-frames" : "text/plain; charset=utf-8")) return;
  std::string chunk;
  auto lastCheck = std::chrono::steady_clock::now();
  while (!stopping_) {
    size_t max = kChunkBytes;
    if (!q->follow) {
      Cursor c = follower.cursor();
      if (atEnd(c)) return;
      if (c.index == end.index) max = static_cast<size_t>(std::min<uint64_t>(max, end.offset - c.offset));
    }
    Cursor at = follower.next(chunk, max);
    if (follower.takeSkipped() && q->frames) {
      // A zero-length frame: "resumed here; what came before it is gone".
      if (!w.write(formatCursor(at) + " 0\n")) return;
    }
    if (!chunk.empty()) {
      if (q->frames) chunk.insert(0, formatCursor(at) + " " + std::to_string(chunk.size()) + "\n");
      if (!w.write(chunk)) return;
      continue;
    }
    if (!q->follow) return;
    if (w.peerClosed()) return;
    auto now = std::chrono::steady_clock::now();
    if (now - lastCheck >= std::chrono::seconds(1)) {
      lastCheck = now;
      kube::JsonPtr cur = options_.allocation(key);
      if (!cur || kube::uid(*cur) != uid) return;  // the allocation is gone: the stream ends
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(options_.pollMillis));
  }
}

}  // namespace nodeagent::logs
