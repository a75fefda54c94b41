#pragma once
// LeaderFence: an HttpClient decorator that refuses every write (anything but GET) once this
// process is no longer the leader, before it reaches the network. Leadership loss is noticed on
// the elector thread; closing the fence there stops all controllers' writes at once, even a
// reconcile that is half way through, while main() exits. The API server's resourceVersion checks
// are the second line: a write computed from a stale read fails with 409 whoever sends it.
//
// Thread safety: all methods are thread-safe.

#include <atomic>
#include <memory>
#include <vector>

#include "kube/http_client.h"

namespace op {

class LeaderFence : public kube::HttpClient {
 public:
  explicit LeaderFence(kube::HttpClientPtr inner) : inner_(std::move(inner)) {}
  void open() { open_.store(true); }
  void close() { open_.store(false); }
  bool isOpen() const { return open_.load(); }

  kube::StatusOr<kube::HttpResponse> send(const kube::HttpRequest& request, kube::Canceller* cancel) override {
    if (kube::Status st = admit(request); !st) return st;
    return inner_->send(request, cancel);
  }
  kube::StatusOr<kube::LineStreamPtr> stream(const kube::HttpRequest& request, kube::Canceller* cancel) override {
    if (kube::Status st = admit(request); !st) return st;
    return inner_->stream(request, cancel);
  }
  // The fence is asked for each request just before it is sent, so closing it stops the rest of a
  // batch that is under way.
  std::vector<kube::StatusOr<kube::HttpResponse>> sendAll(const std::vector<kube::HttpRequest>& requests,
                                                          const kube::SendAllOptions& options) override {
    kube::SendAllOptions o = options;
    o.gate = [this, inner = options.gate](const kube::HttpRequest& r) {
      kube::Status st = admit(r);
      return !st || !inner ? st : inner(r);
    };
    return inner_->sendAll(requests, o);
  }

 private:
  // Reads always pass; a write passes only while this process leads.
  kube::Status admit(const kube::HttpRequest& r) const {
    if (r.method != "GET" && !open_.load()) return kube::Status::unavailable("not the leader: write refused by the leader fence");
    return kube::Status::ok();
  }

  const kube::HttpClientPtr inner_;
  std::atomic<bool> open_{false};
};

}  // namespace op
