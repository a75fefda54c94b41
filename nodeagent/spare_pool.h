#pragma once
// Things a start needs, made ahead between starts by one thread and handed out by number: the
// allocation directories (allocrunner/dir_pool.h) and, on cgroup v1, the task cgroups (the exec
// driver). A take never waits: when none is ready (a burst), the caller makes its own, as before.
// After a take the thread waits a while before making the next one, so that it does not compete
// for the CPUs with the start that took it.

#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <functional>
#include <mutex>
#include <optional>
#include <thread>
#include <vector>

namespace nodeagent {

class SparePool {
 public:
  // make(n) makes spare number n (0, 1, 2, ...; never reused) and says whether it did, leaving
  // nothing behind when it did not; it runs on the pool's thread, never under the pool's lock.
  // After a failure the thread waits `retryDelay` (a full disk, say) before trying again.
  // size 0: no thread, take() always says none.
  SparePool(size_t size, std::function<bool(size_t)> make,
            std::chrono::milliseconds refillDelay = std::chrono::milliseconds(100),
            std::chrono::milliseconds retryDelay = std::chrono::seconds(10));
  ~SparePool();  // stop()
  SparePool(const SparePool&) = delete;
  SparePool& operator=(const SparePool&) = delete;

  // The number of a ready spare, now the caller's; nullopt when none is ready.
  std::optional<size_t> take();
  // Stops the thread (a make under way is finished); take() goes on handing out what is ready.
  void stop();
  // The numbers of the spares still ready, now the caller's (to remove them). After stop(), that
  // is every spare the pool made and did not hand out.
  std::vector<size_t> drain();

 private:
  void fill();

  const size_t size_;
  const std::function<bool(size_t)> make_;
  const std::chrono::milliseconds refillDelay_, retryDelay_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::vector<size_t> ready_;  // guarded by mu_
  size_t next_ = 0;            // guarded by mu_
  bool stopping_ = false;      // guarded by mu_
  std::thread filler_;
};

}  // namespace nodeagent
