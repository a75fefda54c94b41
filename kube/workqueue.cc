#include "kube/workqueue.h"

#include <algorithm>
#include <cmath>

namespace kube {

WorkQueue::WorkQueue(RateLimiterOptions options)
    : options_(options), tokens_(options.burst), lastRefill_(SteadyClock::now()) {}

void WorkQueue::addLocked(const std::string& key) {
  if (shuttingDown_ || dirty_.count(key) != 0) return;
  dirty_.insert(key);
  if (processing_.count(key) != 0) return;  // done() re-queues it
  queue_.push_back(key);
  cv_.notify_one();
}

void WorkQueue::add(const std::string& key) {
  std::lock_guard<std::mutex> l(mu_);
  addLocked(key);
}

void WorkQueue::addAfterLocked(const std::string& key, SteadyClock::time_point when) {
  if (shuttingDown_) return;
  auto it = waitingByKey_.find(key);
  if (it != waitingByKey_.end()) {
    if (it->second <= when) return;  // an earlier delay already pending
    waitingByTime_.erase({it->second, key});
    it->second = when;
  } else {
    waitingByKey_.emplace(key, when);
  }
  waitingByTime_.emplace(when, key);
  cv_.notify_all();  // a getter may need to wait less now
}

void WorkQueue::addAfter(const std::string& key, std::chrono::milliseconds delay) {
  std::lock_guard<std::mutex> l(mu_);
  if (delay <= std::chrono::milliseconds::zero()) {
    addLocked(key);
    return;
  }
  addAfterLocked(key, SteadyClock::now() + delay);
}

std::chrono::nanoseconds WorkQueue::rateLimitDelayLocked(const std::string& key,
                                                         SteadyClock::time_point now) {
  int n = failures_[key]++;
  double perKey = static_cast<double>(
                      std::chrono::duration_cast<std::chrono::nanoseconds>(options_.baseDelay).count()) *
                  std::pow(2.0, std::min(n, 62));
  double cap = static_cast<double>(std::chrono::duration_cast<std::chrono::nanoseconds>(options_.maxDelay).count());
  perKey = std::min(perKey, cap);
  double bucket = 0;
  if (options_.qps > 0) {
    double elapsed = std::chrono::duration<double>(now - lastRefill_).count();
    lastRefill_ = now;
    tokens_ = std::min<double>(options_.burst, tokens_ + elapsed * options_.qps);
    tokens_ -= 1;  // reserve a token; a deficit is paid back by waiting
    if (tokens_ < 0) bucket = -tokens_ / options_.qps * 1e9;
  }
  return std::chrono::nanoseconds(static_cast<int64_t>(std::max(perKey, bucket)));
}

void WorkQueue::addRateLimited(const std::string& key) {
  std::lock_guard<std::mutex> l(mu_);
  if (shuttingDown_) return;
  auto now = SteadyClock::now();
  auto delay = rateLimitDelayLocked(key, now);
  addAfterLocked(key, now + delay);
}

void WorkQueue::forget(const std::string& key) {
  std::lock_guard<std::mutex> l(mu_);
  failures_.erase(key);
}

int WorkQueue::numRequeues(const std::string& key) const {
  std::lock_guard<std::mutex> l(mu_);
  auto it = failures_.find(key);
  return it == failures_.end() ? 0 : it->second;
}

void WorkQueue::promoteDueLocked(SteadyClock::time_point now) {
  while (!waitingByTime_.empty() && waitingByTime_.begin()->first <= now) {
    std::string key = waitingByTime_.begin()->second;
    waitingByTime_.erase(waitingByTime_.begin());
    waitingByKey_.erase(key);
    addLocked(key);
  }
}

std::optional<std::string> WorkQueue::get() { return getFor(std::chrono::milliseconds::max()); }

std::optional<std::string> WorkQueue::getFor(std::chrono::milliseconds timeout) {
  Lock l(mu_);
  auto now = SteadyClock::now();
  // Saturate: "forever" must not overflow the clock.
  auto deadline = timeout >= std::chrono::hours(24 * 365) ? SteadyClock::time_point::max() : now + timeout;
  for (;;) {
    now = SteadyClock::now();
    promoteDueLocked(now);
    if (!queue_.empty()) break;
    if (shuttingDown_) return std::nullopt;
    if (now >= deadline) return std::nullopt;
    auto wakeAt = deadline;
    if (!waitingByTime_.empty()) wakeAt = std::min(wakeAt, waitingByTime_.begin()->first);
    if (wakeAt == SteadyClock::time_point::max()) {
      cv_.wait(l);
    } else {
      cv_.wait_until(l, wakeAt);
    }
  }
  std::string key = std::move(queue_.front());
  queue_.pop_front();
  processing_.insert(key);
  dirty_.erase(key);
  return key;
}

void WorkQueue::done(const std::string& key) {
  std::lock_guard<std::mutex> l(mu_);
  processing_.erase(key);
  if (dirty_.count(key) != 0) {
    queue_.push_back(key);
    cv_.notify_one();
  }
}

void WorkQueue::shutDown() {
  std::lock_guard<std::mutex> l(mu_);
  shuttingDown_ = true;
  cv_.notify_all();
}

bool WorkQueue::shuttingDown() const {
  std::lock_guard<std::mutex> l(mu_);
  return shuttingDown_;
}

size_t WorkQueue::len() const {
  std::lock_guard<std::mutex> l(mu_);
  // Delayed keys that are due count as ready even though no getter has promoted them yet.
  size_t due = 0;
  auto now = SteadyClock::now();
  for (auto it = waitingByTime_.begin(); it != waitingByTime_.end() && it->first <= now; ++it) {
    if (dirty_.count(it->second) == 0 && processing_.count(it->second) == 0) ++due;
  }
  return queue_.size() + due;
}

}  // namespace kube
