#pragma once
// The server's own controllers, run on one background thread: owner-reference garbage collection
// (background, foreground and orphan propagation), finalizer bookkeeping for foregroundDeletion
// and orphan, and namespace termination (delete the contents, then finalize the namespace).
//
// Level-triggered: every pass looks at the whole store, so a missed poke only delays work until
// the next periodic pass. Threads: one (`run`); poke() may be called from any thread.

#include <condition_variable>
#include <mutex>
#include <thread>

#include "apiserver/api.h"

namespace apiserver {

class GarbageCollector {
 public:
  GarbageCollector(Storage& storage, Registry& registry, Api& api)
      : storage_(storage), registry_(registry), api_(api) {}
  ~GarbageCollector() { stop(); }
  void start();
  void stop();
  void poke();
  // One full pass; returns how many writes it made (tests call this directly).
  size_t pass();

 private:
  void run();
  Storage& storage_;
  Registry& registry_;
  Api& api_;
  std::mutex mu_;
  std::condition_variable cv_;
  bool poked_ = false;     // guarded by mu_
  bool stopping_ = false;  // guarded by mu_
  std::thread thread_;
};

}  // namespace apiserver
