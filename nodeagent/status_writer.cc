#include "nodeagent/status_writer.h"
#include "kube/thread_name.h"

#include <chrono>
#include <vector>

namespace nodeagent {

void StatusWriter::start() { thread_ = std::thread([this] {
    kube::nameThread("status-writer");
    run();
  }); }

void StatusWriter::stop() {
  {
    std::lock_guard l(mu_);
    if (stopping_ && !thread_.joinable()) return;
    stopping_ = true;
  }
  cv_.notify_all();
  if (thread_.joinable()) thread_.join();
}

void StatusWriter::set(const std::string& key, std::string statusJson) {
  {
    std::lock_guard l(mu_);
    slots_[key].desired = std::move(statusJson);
  }
  cv_.notify_all();
}

void StatusWriter::forget(const std::string& key) {
  std::lock_guard l(mu_);
  slots_.erase(key);
}

uint64_t StatusWriter::writes() const {
  std::lock_guard l(mu_);
  return writes_;
}

void StatusWriter::run() {
  auto backoff = std::chrono::milliseconds(100);
  for (;;) {
    std::vector<std::pair<std::string, std::string>> todo;
    {
      std::unique_lock l(mu_);
      cv_.wait_for(l, std::chrono::seconds(5), [this] {
        if (stopping_) return true;
        for (auto& [k, s] : slots_) {
          if (s.desired != s.sent) return true;
        }
        return false;
      });
      for (auto& [k, s] : slots_) {
        if (s.desired != s.sent) todo.emplace_back(k, s.desired);
      }
      if (stopping_ && todo.empty()) return;
    }
    bool failed = false;
    for (auto& [key, status] : todo) {
      size_t slash = key.find('/');
      kube::ResourceRef ref{"foxden.io", "v1alpha1", "allocations", key.substr(0, slash),
                            key.substr(slash + 1), ""};
      // A JSON patch "add" replaces the whole status, so fields a runner dropped disappear too.
      auto res = client_->patchStatus(ref, kube::PatchType::kJson,
                                      R"([{"op":"add","path":"/status","value":)" + status + "}]");
      std::lock_guard l(mu_);
      if (res || res.status().code() == 404) {
        auto it = slots_.find(key);
        if (it != slots_.end()) it->second.sent = status;
        if (res) ++writes_;
      } else {
        failed = true;
      }
    }
    if (failed) {
      std::unique_lock l(mu_);
      if (stopping_) return;
      cv_.wait_for(l, backoff, [this] { return stopping_; });
      backoff = std::min(backoff * 2, std::chrono::milliseconds(10000));
    } else {
      backoff = std::chrono::milliseconds(100);
    }
  }
}

}  // namespace nodeagent
