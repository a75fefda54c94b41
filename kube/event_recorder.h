#pragma once
// EventRecorder: records core/v1 Events about objects, like client-go's record.EventRecorder:
//  - involvedObject is taken from the object (apiVersion, kind, name, namespace, uid,
//    resourceVersion); the Event lives in the object's namespace ("default" if cluster-scoped)
//    and is named "<objectName>.<16 hex digits>";
//  - a repeat of the same (object, type, reason, message) within `dedupWindow` does not create
//    a new Event: the existing one is patched with count+1 and a new lastTimestamp (a simplified
//    client-go EventCorrelator);
//  - recording never blocks the caller: events go through a bounded queue to a background
//    thread; when the queue is full the event is dropped and dropped() counts it.
//
// Threads: one sender thread per recorder. event() and dropped() are thread-safe and
// non-blocking. stop() (or the destructor) sends what is queued, then joins.

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <list>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <thread>
#include <unordered_map>

#include "kube/json.h"
#include "kube/rest_client.h"

namespace kube {

enum class EventType { kNormal, kWarning };

struct EventRecorderOptions {
  std::string component;  // source.component / reportingComponent, e.g. "foxden-operator"
  std::string host;       // source.host (optional)
  size_t queueSize = 1000;
  std::chrono::seconds dedupWindow{600};
  size_t dedupCacheSize = 4096;
};

class EventRecorder {
 public:
  EventRecorder(RestClientPtr client, EventRecorderOptions options);
  ~EventRecorder();
  EventRecorder(const EventRecorder&) = delete;
  EventRecorder& operator=(const EventRecorder&) = delete;

  // Queues an Event about `object` (any Kubernetes object with metadata). Never blocks.
  void event(const JsonValue& object, EventType type, std::string_view reason, std::string_view message);

  // Waits until everything queued so far was sent (or failed); false on timeout. For tests and
  // orderly shutdown.
  bool flush(std::chrono::milliseconds timeout);
  void stop();

  uint64_t dropped() const;
  uint64_t sent() const;    // creates + count patches that succeeded
  uint64_t failed() const;  // API errors

 private:
  struct Pending {
    Json involved;  // involvedObject
    std::string ns;
    EventType type = EventType::kNormal;
    std::string reason;
    std::string message;
  };
  struct Seen {
    std::string eventName;
    std::string ns;
    int64_t count = 0;
    std::string firstTimestamp;
    std::chrono::steady_clock::time_point last;
    std::list<std::string>::iterator lru;
  };

  void run();
  void send(Pending& p);
  std::string uniqueName(const std::string& objectName);

  const RestClientPtr client_;
  const EventRecorderOptions options_;

  mutable std::mutex mu_;  // guards the fields below
  std::condition_variable cv_;
  std::condition_variable idleCv_;
  std::deque<Pending> queue_;
  bool stopping_ = false;
  bool busy_ = false;
  uint64_t dropped_ = 0;
  uint64_t sent_ = 0;
  uint64_t failed_ = 0;

  // Owned by the sender thread:
  std::unordered_map<std::string, Seen> seen_;
  std::list<std::string> lru_;  // most recent first
  uint64_t nameCounter_ = 0;

  std::thread thread_;
};

}  // namespace kube
