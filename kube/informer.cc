#include "kube/informer.h"
#include "kube/thread_name.h"

#include <iostream>
#include <random>

namespace kube {

namespace {

constexpr std::chrono::seconds kShortWatch{1};

JsonPtr snapshot(const JsonValue& v) { return shareJson(cloneJson(v)); }

}  // namespace

Informer::Informer(RestClientPtr client, InformerOptions options)
    : client_(std::move(client)), options_(std::move(options)) {}

Informer::~Informer() { stop(); }

std::string Informer::keyOf(const JsonValue& object) {
  std::string n = ns(object);
  return n.empty() ? name(object) : n + "/" + name(object);
}

void Informer::addEventHandler(InformerHandlers handlers) {
  std::lock_guard<std::mutex> hl(handlersMu_);
  std::vector<JsonPtr> existing = list();  // the reflector cannot change them while we hold handlersMu_
  for (const auto& o : existing) {
    if (handlers.onAdd) handlers.onAdd(o);
  }
  handlers_.push_back(std::move(handlers));
}

void Informer::start() {
  std::lock_guard<std::mutex> l(mu_);
  if (started_ || stopping_) return;
  started_ = true;
  thread_ = std::thread([this] {
    nameThread("informer");
    run();
  });
}

void Informer::stop() {
  {
    std::lock_guard<std::mutex> l(mu_);
    stopping_ = true;
    if (current_) current_->cancel();
  }
  cv_.notify_all();
  if (thread_.joinable()) thread_.join();
}

bool Informer::hasSynced() const {
  std::lock_guard<std::mutex> l(mu_);
  return synced_;
}

bool Informer::waitForSync(std::chrono::milliseconds timeout) const {
  std::unique_lock<std::mutex> l(mu_);
  return cv_.wait_for(l, timeout, [this] { return synced_ || stopping_; }) && synced_;
}

JsonPtr Informer::get(const std::string& key) const {
  std::lock_guard<std::mutex> l(mu_);
  auto it = cache_.find(key);
  return it == cache_.end() ? nullptr : it->second;
}

std::vector<JsonPtr> Informer::list() const {
  std::lock_guard<std::mutex> l(mu_);
  std::vector<JsonPtr> out;
  out.reserve(cache_.size());
  for (const auto& [k, v] : cache_) out.push_back(v);
  return out;
}

size_t Informer::size() const {
  std::lock_guard<std::mutex> l(mu_);
  return cache_.size();
}

std::string Informer::lastSyncResourceVersion() const {
  std::lock_guard<std::mutex> l(mu_);
  return lastRv_;
}

std::string Informer::lastError() const {
  std::lock_guard<std::mutex> l(mu_);
  return lastError_;
}

void Informer::setError(const Status& st) {
  std::lock_guard<std::mutex> l(mu_);
  lastError_ = st.toString();
}

bool Informer::beginRequest(const std::shared_ptr<Canceller>& c) {
  std::lock_guard<std::mutex> l(mu_);
  if (stopping_) return false;
  current_ = c;
  return true;
}

void Informer::endRequest() {
  std::lock_guard<std::mutex> l(mu_);
  current_.reset();
}

bool Informer::backoff(int& attempt) {
  // Exponential with "equal jitter": a random delay in [d/2, d], d = initial * 2^attempt <= max.
  static thread_local std::mt19937_64 rng{std::random_device{}()};
  auto d = options_.initialBackoff * (int64_t{1} << std::min(attempt, 20));
  if (d > options_.maxBackoff) d = options_.maxBackoff;
  ++attempt;
  std::uniform_int_distribution<int64_t> dist(d.count() / 2, d.count());
  std::unique_lock<std::mutex> l(mu_);
  cv_.wait_for(l, std::chrono::milliseconds(dist(rng)), [this] { return stopping_; });
  return !stopping_;
}

void Informer::deliver(const std::vector<Delivery>& events) {
  std::lock_guard<std::mutex> hl(handlersMu_);
  for (const auto& e : events) {
    for (const auto& h : handlers_) {
      try {
        if (e.kind == Delivery::kAdd && h.onAdd) h.onAdd(e.obj);
        if (e.kind == Delivery::kUpdate && h.onUpdate) h.onUpdate(e.oldObj, e.obj);
        if (e.kind == Delivery::kDelete && h.onDelete) h.onDelete(e.obj);
      } catch (const std::exception& ex) {
        std::cerr << "informer resource=" << options_.resource.resource << ": event handler threw: " << ex.what()
                  << "\n";
      }
    }
  }
}

Status Informer::relist() {
  auto canceller = std::make_shared<Canceller>();
  if (!beginRequest(canceller)) return Status(kCanceledCode, "Canceled", "informer stopping");
  ListOptions o;
  o.labelSelector = options_.labelSelector;
  o.fieldSelector = options_.fieldSelector;
  o.limit = options_.pageSize;
  auto listed = client_->listAll(options_.resource, o, canceller.get());
  endRequest();
  ++listCount_;
  if (!listed) return listed.status();
  // List items usually lack kind/apiVersion; restore them so cached objects are self-describing.
  std::string kind = getString(*listed, {"kind"});
  if (kind.size() > 4 && kind.compare(kind.size() - 4, 4, "List") == 0) kind.resize(kind.size() - 4);
  std::string apiVersion = getString(*listed, {"apiVersion"});
  std::map<std::string, JsonPtr> fresh;
  if (const JsonValue* items = find(*listed, {"items"}); items != nullptr && items->IsArray()) {
    for (const auto& it : items->GetArray()) {
      Json doc = cloneJson(it);
      if (!doc.IsObject()) continue;
      if (!doc.HasMember("kind") && !kind.empty()) setString(doc, "kind", kind, doc.GetAllocator());
      if (!doc.HasMember("apiVersion") && !apiVersion.empty()) {
        setString(doc, "apiVersion", apiVersion, doc.GetAllocator());
      }
      std::string key = keyOf(doc);
      fresh[key] = shareJson(std::move(doc));
    }
  }
  std::vector<Delivery> events;
  {
    std::lock_guard<std::mutex> l(mu_);
    for (const auto& [key, obj] : fresh) {
      auto old = cache_.find(key);
      if (old == cache_.end()) {
        events.push_back({Delivery::kAdd, nullptr, obj});
      } else if (resourceVersion(*old->second) != resourceVersion(*obj)) {
        events.push_back({Delivery::kUpdate, old->second, obj});
      }
    }
    for (const auto& [key, obj] : cache_) {
      if (fresh.count(key) == 0) events.push_back({Delivery::kDelete, nullptr, obj});
    }
    cache_ = std::move(fresh);
    lastRv_ = getString(*listed, {"metadata", "resourceVersion"});
  }
  deliver(events);
  {
    // Synced only after the handlers saw the initial state, as in client-go: a controller that
    // waits for sync may rely on having been told about every listed object.
    std::lock_guard<std::mutex> l(mu_);
    synced_ = true;
  }
  cv_.notify_all();
  return Status::ok();
}

Informer::WatchEnd Informer::watchOnce(bool& sawEvents) {
  sawEvents = false;
  auto canceller = std::make_shared<Canceller>();  // declared first: outlives the stream
  if (!beginRequest(canceller)) return WatchEnd::kStopped;
  struct EndRequest {
    Informer* self;
    ~EndRequest() { self->endRequest(); }
  } endGuard{this};

  ListOptions o;
  o.labelSelector = options_.labelSelector;
  o.fieldSelector = options_.fieldSelector;
  o.resourceVersion = lastSyncResourceVersion();
  o.allowWatchBookmarks = true;
  o.timeoutSeconds = options_.watchTimeoutSeconds;
  ++watchCount_;
  auto stream = client_->watch(options_.resource, o, canceller.get());
  if (!stream) {
    if (canceller->cancelled()) return WatchEnd::kStopped;
    setError(stream.status());
    return stream.status().code() == 410 ? WatchEnd::kExpired : WatchEnd::kError;
  }
  std::string line;
  for (;;) {
    auto more = (*stream)->readLine(line);
    if (canceller->cancelled()) return WatchEnd::kStopped;
    if (!more) {
      setError(more.status());
      return WatchEnd::kError;
    }
    if (!*more) return WatchEnd::kEnded;
    if (line.empty()) continue;
    auto ev = parseJson(line);
    if (!ev || !ev->IsObject()) {
      setError(Status::internal("watch: undecodable event: " + line.substr(0, 200)));
      return WatchEnd::kError;
    }
    std::string type = getString(*ev, {"type"});
    const JsonValue* obj = find(*ev, {"object"});
    if (obj == nullptr) {
      setError(Status::internal("watch: event without object"));
      return WatchEnd::kError;
    }
    if (type == "ERROR") {
      Status st = statusFromResponse(500, toJson(*obj));
      setError(st);
      return st.code() == 410 ? WatchEnd::kExpired : WatchEnd::kError;
    }
    std::string rv = resourceVersion(*obj);
    if (type == "BOOKMARK") {
      std::lock_guard<std::mutex> l(mu_);
      if (!rv.empty()) lastRv_ = rv;
      continue;
    }
    std::vector<Delivery> events;
    JsonPtr snap = snapshot(*obj);
    std::string key = keyOf(*snap);
    {
      std::lock_guard<std::mutex> l(mu_);
      auto it = cache_.find(key);
      if (type == "ADDED" || type == "MODIFIED") {
        if (it == cache_.end()) {
          events.push_back({Delivery::kAdd, nullptr, snap});
          cache_.emplace(key, snap);
        } else {
          events.push_back({Delivery::kUpdate, it->second, snap});
          it->second = snap;
        }
      } else if (type == "DELETED") {
        if (it != cache_.end()) cache_.erase(it);
        events.push_back({Delivery::kDelete, nullptr, snap});
      } else {
        continue;  // unknown event type: ignore, like client-go
      }
      if (!rv.empty()) lastRv_ = rv;
    }
    sawEvents = true;
    deliver(events);
  }
}

void Informer::run() {
  int attempt = 0;
  bool needList = true;
  for (;;) {
    try {
      {
        std::lock_guard<std::mutex> l(mu_);
        if (stopping_) return;
      }
      if (needList) {
        Status st = relist();
        if (!st) {
          setError(st);
          if (!backoff(attempt)) return;
          continue;
        }
        attempt = 0;
        needList = false;
      }
      auto started = std::chrono::steady_clock::now();
      bool sawEvents = false;
      WatchEnd end = watchOnce(sawEvents);
      switch (end) {
        case WatchEnd::kStopped:
          return;
        case WatchEnd::kExpired:
          needList = true;  // the resourceVersion is too old: start over from a fresh LIST
          break;
        case WatchEnd::kError:
          if (!backoff(attempt)) return;
          break;
        case WatchEnd::kEnded:
          // A watch that ends at once without events is a symptom (e.g. a proxy cutting it):
          // don't spin.
          if (!sawEvents && std::chrono::steady_clock::now() - started < kShortWatch) {
            if (!backoff(attempt)) return;
          } else {
            attempt = 0;
          }
          break;
      }
    } catch (const std::exception& e) {
      // Nothing should throw here; if something does, report it and keep the informer alive.
      setError(Status::internal(std::string("informer loop: ") + e.what()));
      std::cerr << "informer resource=" << options_.resource.resource << ": " << e.what() << "\n";
      if (!backoff(attempt)) return;
    }
  }
}

}  // namespace kube
