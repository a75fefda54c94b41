#pragma once
// The daemons' signal set-up: SIGPIPE ignored (a peer that hangs up is an error return from the
// write, not the death of the process); SIGTERM and SIGINT set *stop, which the main loop polls.
// The handler does one lock-free atomic store, which is async-signal-safe.

#include <atomic>

namespace kube {

// Call once, from main(), before starting threads. `stop` must outlive the process's use of it.
void stopOnTerminationSignals(std::atomic<bool>* stop);

}  // namespace kube
