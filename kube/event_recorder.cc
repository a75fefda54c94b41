#include "kube/event_recorder.h"

#include <cstdio>
#include <iostream>

#include "kube/timeutil.h"
#include "kube/thread_name.h"

namespace kube {

namespace {

const char* typeName(EventType t) { return t == EventType::kWarning ? "Warning" : "Normal"; }

const ResourceRef kEvents{"", "v1", "events", "", "", ""};

}  // namespace

EventRecorder::EventRecorder(RestClientPtr client, EventRecorderOptions options)
    : client_(std::move(client)), options_(std::move(options)) {
  thread_ = std::thread([this] {
    nameThread("event-recorder");
    run();
  });
}

EventRecorder::~EventRecorder() { stop(); }

void EventRecorder::event(const JsonValue& object, EventType type, std::string_view reason,
                          std::string_view message) {
  Pending p;
  p.involved.SetObject();
  auto& a = p.involved.GetAllocator();
  setString(p.involved, "apiVersion", getString(object, {"apiVersion"}), a);
  setString(p.involved, "kind", getString(object, {"kind"}), a);
  setString(p.involved, "name", name(object), a);
  std::string objNs = ns(object);
  if (!objNs.empty()) setString(p.involved, "namespace", objNs, a);
  std::string u = uid(object);
  if (!u.empty()) setString(p.involved, "uid", u, a);
  std::string rv = resourceVersion(object);
  if (!rv.empty()) setString(p.involved, "resourceVersion", rv, a);
  p.ns = objNs.empty() ? "default" : objNs;
  p.type = type;
  p.reason = std::string(reason);
  p.message = std::string(message);
  {
    std::lock_guard<std::mutex> l(mu_);
    if (stopping_ || queue_.size() >= options_.queueSize) {
      ++dropped_;
      return;
    }
    queue_.push_back(std::move(p));
  }
  cv_.notify_one();
}

bool EventRecorder::flush(std::chrono::milliseconds timeout) {
  std::unique_lock<std::mutex> l(mu_);
  return idleCv_.wait_for(l, timeout, [this] { return queue_.empty() && !busy_; });
}

void EventRecorder::stop() {
  {
    std::lock_guard<std::mutex> l(mu_);
    stopping_ = true;
  }
  cv_.notify_all();
  if (thread_.joinable()) thread_.join();
}

uint64_t EventRecorder::dropped() const {
  std::lock_guard<std::mutex> l(mu_);
  return dropped_;
}
uint64_t EventRecorder::sent() const {
  std::lock_guard<std::mutex> l(mu_);
  return sent_;
}
uint64_t EventRecorder::failed() const {
  std::lock_guard<std::mutex> l(mu_);
  return failed_;
}

std::string EventRecorder::uniqueName(const std::string& objectName) {
  // client-go uses the creation time in hex; a counter keeps names unique within a process.
  auto nanos = std::chrono::duration_cast<std::chrono::nanoseconds>(Clock::now().time_since_epoch()).count();
  char buf[17];
  std::snprintf(buf, sizeof buf, "%016llx", static_cast<unsigned long long>(nanos) + nameCounter_++);
  return objectName + "." + buf;
}

void EventRecorder::send(Pending& p) {
  std::string key = toJson(p.involved) + "\x1f" + typeName(p.type) + "\x1f" + p.reason + "\x1f" + p.message;
  auto now = std::chrono::steady_clock::now();
  std::string nowText = formatTime(Clock::now());
  bool ok = false;

  auto it = seen_.find(key);
  if (it != seen_.end() && now - it->second.last < options_.dedupWindow) {
    Seen& s = it->second;
    std::string patch = "{\"count\":" + std::to_string(s.count + 1) + ",\"lastTimestamp\":\"" + nowText + "\"}";
    auto r = client_->patch(kEvents.withNamespace(s.ns).withName(s.eventName), PatchType::kMerge, patch);
    if (r) {
      ++s.count;
      s.last = now;
      lru_.splice(lru_.begin(), lru_, s.lru);
      ok = true;
    } else if (r.status().code() != 404) {
      std::lock_guard<std::mutex> l(mu_);
      ++failed_;
      return;
    }
    // 404: the Event was deleted (TTL); fall through and create a new one.
  }
  if (!ok) {
    Json ev;
    ev.SetObject();
    auto& a = ev.GetAllocator();
    std::string evName = uniqueName(getString(p.involved, {"name"}));
    setString(ev, "apiVersion", "v1", a);
    setString(ev, "kind", "Event", a);
    JsonValue& md = ensureObject(ev, "metadata", a);
    setString(md, "name", evName, a);
    setString(md, "namespace", p.ns, a);
    setMember(ev, "involvedObject", JsonValue(p.involved, a), a);
    setString(ev, "reason", p.reason, a);
    setString(ev, "message", p.message, a);
    setString(ev, "type", typeName(p.type), a);
    JsonValue& src = ensureObject(ev, "source", a);
    setString(src, "component", options_.component, a);
    if (!options_.host.empty()) setString(src, "host", options_.host, a);
    setString(ev, "firstTimestamp", nowText, a);
    setString(ev, "lastTimestamp", nowText, a);
    setMember(ev, "count", JsonValue(1), a);
    setString(ev, "reportingComponent", options_.component, a);
    setString(ev, "reportingInstance", options_.host, a);
    auto r = client_->create(kEvents.withNamespace(p.ns), ev);
    if (!r) {
      std::lock_guard<std::mutex> l(mu_);
      ++failed_;
      return;
    }
    if (it != seen_.end()) {
      lru_.erase(it->second.lru);
      seen_.erase(it);
    }
    lru_.push_front(key);
    seen_[key] = Seen{evName, p.ns, 1, nowText, now, lru_.begin()};
    while (seen_.size() > options_.dedupCacheSize) {
      seen_.erase(lru_.back());
      lru_.pop_back();
    }
  }
  std::lock_guard<std::mutex> l(mu_);
  ++sent_;
}

void EventRecorder::run() {
  for (;;) {
    Pending p;
    {
      std::unique_lock<std::mutex> l(mu_);
      busy_ = false;
      idleCv_.notify_all();
      cv_.wait(l, [this] { return stopping_ || !queue_.empty(); });
      if (queue_.empty()) return;  // stopping and drained
      p = std::move(queue_.front());
      queue_.pop_front();
      busy_ = true;
    }
    try {
      send(p);
    } catch (const std::exception& e) {
      std::cerr << "event-recorder component=" << options_.component << ": " << e.what() << "\n";
    }
  }
}

}  // namespace kube
