#pragma once
// Informer: a reflector plus a keyed cache, after client-go's Reflector/SharedInformer.
//
//   LIST (paged)  ->  replace cache  ->  WATCH from the list's resourceVersion
//        ^                                   | ADDED/MODIFIED/DELETED: update cache, call handlers
//        |                                   | BOOKMARK: remember its resourceVersion
//        +---- ERROR 410 / HTTP 410 ---------+ stream end (timeoutSeconds): re-WATCH from last RV
//                                              other errors: back off (200ms..30s, jitter), retry
//
// A re-LIST after 410 replaces the cache and emits only the difference: onAdd for new keys,
// onUpdate for keys whose resourceVersion changed, onDelete for vanished keys.
// The cache holds immutable shared snapshots (JsonPtr): copy before editing. Keys are
// "namespace/name", or "name" for cluster-scoped objects.
//
// Threads: one reflector thread per informer (start() .. stop()). Handlers run on it, in event
// order, after the cache was updated and without the cache lock held; they must be quick (enqueue
// a key into a WorkQueue) and may read the cache. get()/list()/hasSynced() are thread-safe.
// stop() cancels the open LIST/WATCH and joins the thread; it must not be called from a handler.

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "kube/json.h"
#include "kube/rest_client.h"

namespace kube {

struct InformerOptions {
  ResourceRef resource;  // collection; resource.ns "" = all namespaces
  std::string labelSelector;
  std::string fieldSelector;
  int64_t pageSize = 500;
  int watchTimeoutSeconds = 300;  // server ends each watch after this; we re-watch
  std::chrono::milliseconds initialBackoff{200};
  std::chrono::milliseconds maxBackoff{30000};
};

struct InformerHandlers {
  std::function<void(const JsonPtr& obj)> onAdd;
  std::function<void(const JsonPtr& oldObj, const JsonPtr& newObj)> onUpdate;
  std::function<void(const JsonPtr& lastKnown)> onDelete;
};

class Informer {
 public:
  Informer(RestClientPtr client, InformerOptions options);
  ~Informer();  // stop()s
  Informer(const Informer&) = delete;
  Informer& operator=(const Informer&) = delete;

  // May be called before or after start(). A handler added after objects were cached first
  // receives onAdd for each of them (like client-go), then live events; an object that arrived
  // during registration may be added twice (harmless for level-triggered reconcilers).
  void addEventHandler(InformerHandlers handlers);
  void start();
  void stop();

  // True once the first LIST is in the cache and its onAdd calls have returned.
  bool hasSynced() const;
  bool waitForSync(std::chrono::milliseconds timeout) const;

  JsonPtr get(const std::string& key) const;  // nullptr when absent
  std::vector<JsonPtr> list() const;
  size_t size() const;
  // The resourceVersion of the last LIST, watch event or bookmark seen.
  std::string lastSyncResourceVersion() const;
  // Counters for metrics and tests.
  uint64_t listCount() const { return listCount_.load(); }
  uint64_t watchCount() const { return watchCount_.load(); }
  std::string lastError() const;

  static std::string keyOf(const JsonValue& object);

 private:
  enum class WatchEnd { kEnded, kExpired, kError, kStopped };
  struct Delivery {
    enum Kind { kAdd, kUpdate, kDelete } kind;
    JsonPtr oldObj;
    JsonPtr obj;
  };

  void run();
  Status relist();
  WatchEnd watchOnce(bool& sawEvents);
  void deliver(const std::vector<Delivery>& events);
  // Registers a new in-flight request's canceller; false if stopping.
  bool beginRequest(const std::shared_ptr<Canceller>& c);
  void endRequest();
  // Sleeps for the next backoff step; returns false when stopping.
  bool backoff(int& attempt);
  void setError(const Status& st);

  const RestClientPtr client_;
  const InformerOptions options_;

  mutable std::mutex mu_;  // guards the fields below
  mutable std::condition_variable cv_;
  std::map<std::string, JsonPtr> cache_;
  std::string lastRv_;
  bool synced_ = false;
  bool stopping_ = false;
  bool started_ = false;
  std::shared_ptr<Canceller> current_;
  std::string lastError_;

  std::mutex handlersMu_;  // held while delivering; serialises delivery and registration
  std::vector<InformerHandlers> handlers_;

  std::atomic<uint64_t> listCount_{0};
  std::atomic<uint64_t> watchCount_{0};
  std::thread thread_;
};

}  // namespace kube
