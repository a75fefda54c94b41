#include "nodeagent/spare_pool.h"
#include "kube/thread_name.h"

#include <utility>

namespace nodeagent {

SparePool::SparePool(size_t size, std::function<bool(size_t)> make, std::chrono::milliseconds refillDelay,
                     std::chrono::milliseconds retryDelay)
    : size_(size), make_(std::move(make)), refillDelay_(refillDelay), retryDelay_(retryDelay) {
  if (size_ > 0) filler_ = std::thread([this] {
    kube::nameThread("spare-pool");
    fill();
  });
}

SparePool::~SparePool() { stop(); }

void SparePool::stop() {
  {
    std::lock_guard l(mu_);
    stopping_ = true;
  }
  cv_.notify_all();
  if (filler_.joinable()) filler_.join();
}

void SparePool::fill() {
  std::unique_lock l(mu_);
  for (;;) {
    cv_.wait(l, [this] { return stopping_ || ready_.size() < size_; });
    if (stopping_) return;
    // Not right after a take: the start that took it is still running.
    if (cv_.wait_for(l, refillDelay_, [this] { return stopping_; })) return;
    size_t n = next_++;
    l.unlock();
    bool ok = make_(n);
    l.lock();
    if (ok) {
      ready_.push_back(n);
    } else if (cv_.wait_for(l, retryDelay_, [this] { return stopping_; })) {
      return;
    }
  }
}

std::optional<size_t> SparePool::take() {
  size_t n;
  {
    std::lock_guard l(mu_);
    if (ready_.empty()) return std::nullopt;
    n = ready_.back();
    ready_.pop_back();
  }
  cv_.notify_all();
  return n;
}

std::vector<size_t> SparePool::drain() {
  std::lock_guard l(mu_);
  return std::exchange(ready_, {});
}

}  // namespace nodeagent
