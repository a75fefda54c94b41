#pragma once
// A rate-limited work queue of string keys with client-go's guarantees
// (k8s.io/client-go/util/workqueue):
//  - a key is queued at most once (adding a queued key is a no-op);
//  - a key handed out by get() is never handed out again until done() is called for it, even if
//    it is added meanwhile: such an add marks it dirty and it is re-queued by done();
//  - addAfter() delays an add (the earliest of several pending delays wins);
//  - addRateLimited() delays by a per-key exponential backoff (5ms * 2^failures, capped at 1000s)
//    combined with an overall token bucket (10 qps, burst 100), like DefaultControllerRateLimiter;
//    forget() resets a key's backoff (call it after a successful reconcile);
//  - shutDown() wakes every blocked get(), which returns nullopt once no ready key is left;
//    later adds are ignored.
//
// Threading: every method is thread-safe. get() blocks the calling worker thread. The queue has
// no thread of its own: delayed keys become ready when a getter (or len()) looks at the clock.

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <map>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <unordered_map>
#include <unordered_set>

namespace kube {

struct RateLimiterOptions {
  std::chrono::milliseconds baseDelay{5};
  std::chrono::milliseconds maxDelay{1000 * 1000};
  double qps = 10;  // overall bucket; <= 0 disables it
  int burst = 100;
};

class WorkQueue {
 public:
  using SteadyClock = std::chrono::steady_clock;

  explicit WorkQueue(RateLimiterOptions options = {});
  WorkQueue(const WorkQueue&) = delete;
  WorkQueue& operator=(const WorkQueue&) = delete;

  void add(const std::string& key);
  void addAfter(const std::string& key, std::chrono::milliseconds delay);
  void addRateLimited(const std::string& key);
  // Resets the key's failure count (its next addRateLimited waits baseDelay again).
  void forget(const std::string& key);
  int numRequeues(const std::string& key) const;

  // Blocks until a key is ready. After shutDown() it still hands out keys that were already ready
  // (like client-go) and returns nullopt once none is left.
  std::optional<std::string> get();
  // Like get() but gives up after `timeout` (nullopt).
  std::optional<std::string> getFor(std::chrono::milliseconds timeout);
  // Marks the end of processing of a key returned by get(); re-queues it if it was added since.
  void done(const std::string& key);

  void shutDown();
  bool shuttingDown() const;
  // Keys ready to be handed out (not counting delayed or in-process keys).
  size_t len() const;

 private:
  using Lock = std::unique_lock<std::mutex>;
  void addLocked(const std::string& key);
  void addAfterLocked(const std::string& key, SteadyClock::time_point when);
  void promoteDueLocked(SteadyClock::time_point now);
  std::chrono::nanoseconds rateLimitDelayLocked(const std::string& key, SteadyClock::time_point now);

  const RateLimiterOptions options_;

  mutable std::mutex mu_;
  std::condition_variable cv_;
  // guarded by mu_:
  std::deque<std::string> queue_;
  std::unordered_set<std::string> dirty_;       // queued or to be re-queued after done()
  std::unordered_set<std::string> processing_;  // handed out, done() not yet called
  std::map<std::string, SteadyClock::time_point> waitingByKey_;
  std::set<std::pair<SteadyClock::time_point, std::string>> waitingByTime_;
  std::unordered_map<std::string, int> failures_;
  double tokens_;
  SteadyClock::time_point lastRefill_;
  bool shuttingDown_ = false;
};

}  // namespace kube
