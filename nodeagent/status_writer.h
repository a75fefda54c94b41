#pragma once
// StatusWriter: the one writer of Allocation status on this worker, like the kubelet's status
// manager. Runners set the latest status per allocation; a single thread sends only changes
// (replacing .status through the status subresource), coalescing bursts and retrying with backoff.
//
// Threads: one sender thread; set()/forget() from any thread.

#include <condition_variable>
#include <map>
#include <mutex>
#include <string>
#include <thread>

#include "kube/rest_client.h"

namespace nodeagent {

class StatusWriter {
 public:
  explicit StatusWriter(kube::RestClientPtr client) : client_(std::move(client)) {}
  ~StatusWriter() { stop(); }
  void start();
  void stop();
  // `key` is "namespace/name"; `statusJson` the whole status object.
  void set(const std::string& key, std::string statusJson);
  void forget(const std::string& key);
  uint64_t writes() const;

 private:
  struct Slot {
    std::string desired;
    std::string sent;
  };
  void run();
  kube::RestClientPtr client_;
  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::map<std::string, Slot> slots_;  // guarded by mu_
  bool stopping_ = false;              // guarded by mu_
  uint64_t writes_ = 0;                // guarded by mu_
  std::thread thread_;
};

}  // namespace nodeagent
