#include "kube/signals.h"

#include <signal.h>

namespace kube {

namespace {
std::atomic<std::atomic<bool>*> gStopFlag{nullptr};
}  // namespace

void stopOnTerminationSignals(std::atomic<bool>* stop) {
  static_assert(std::atomic<bool>::is_always_lock_free && std::atomic<std::atomic<bool>*>::is_always_lock_free);
  gStopFlag = stop;
  signal(SIGPIPE, SIG_IGN);
  struct sigaction sa {};
  sa.sa_handler = [](int) {
    if (auto* f = gStopFlag.load()) f->store(true);
  };
  sigemptyset(&sa.sa_mask);
  sigaction(SIGTERM, &sa, nullptr);
  sigaction(SIGINT, &sa, nullptr);
}

}  // namespace kube
