#pragma once
// ReconcileLoop: the worker side of a controller: threads taking keys from a WorkQueue and
// calling reconcile(key), with controller-runtime's outcome rules: an error requeues with backoff,
// success forgets the key's backoff and requeues after `requeueAfter` if asked. Keys wait until
// every shared informer has synced (a partial view must not drive writes). Counts reconciles and
// errors in the shared metrics under controller="<name>".
//
// Threads: `workers` threads between start() and stop(); reconcile runs on them, never two for
// one key at a time (the WorkQueue's promise).

#include <chrono>
#include <functional>
#include <iostream>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "kube/status.h"
#include "kube/timeutil.h"
#include "kube/workqueue.h"
#include "operator/controller.h"
#include "kube/thread_name.h"

namespace op {

class ReconcileLoop {
 public:
  using Reconcile = std::function<kube::StatusOr<std::optional<std::chrono::milliseconds>>(const std::string& key)>;

  ReconcileLoop(std::string name, Reconcile reconcile)
      : name_(std::move(name)),
        reconcile_(std::move(reconcile)),
        queue_(kube::RateLimiterOptions{.baseDelay = std::chrono::milliseconds(500),
                                        .maxDelay = std::chrono::milliseconds(60000),
                                        .qps = 0}) {}
  ~ReconcileLoop() { stop(); }

  kube::WorkQueue& queue() { return queue_; }

  void start(const ControllerContext& ctx, int workers) {
    informers_ = ctx.informers;
    std::string l = "controller=\"" + name_ + "\"";
    reconciles_ = &ctx.metrics->counter("foxden_operator_reconciles_total", "Reconciles run.", l);
    errors_ = &ctx.metrics->counter("foxden_operator_reconcile_errors_total",
                                    "Reconciles that failed (requeued with backoff).", l);
    kube::WorkQueue* q = &queue_;
    ctx.metrics->gauge("foxden_operator_workqueue_depth", "Keys waiting in the work queue.", l,
                       [q] { return static_cast<double>(q->len()); });
    for (int i = 0; i < workers; ++i) threads_.emplace_back([this] {
      kube::nameThread(name_);
      run();
    });
  }

  void stop() {
    queue_.shutDown();
    for (auto& t : threads_) {
      if (t.joinable()) t.join();
    }
    threads_.clear();
  }

 private:
  void run() {
    while (auto key = queue_.get()) {
      if (!informers_.synced()) {
        queue_.done(*key);
        queue_.addAfter(*key, std::chrono::milliseconds(200));
        continue;
      }
      reconciles_->inc();
      kube::StatusOr<std::optional<std::chrono::milliseconds>> r = kube::Status::internal("not run");
      try {
        r = reconcile_(*key);
      } catch (const std::exception& e) {
        r = kube::Status::internal(std::string("reconcile threw: ") + e.what());
      }
      queue_.done(*key);
      if (!r) {
        errors_->inc();
        if (r.status().code() != 409) {
          std::cerr << kube::nowTime() << " foxden-operator: " << name_ << ": " << *key << ": " << r.status().toString()
                    << std::endl;
        }
        queue_.addRateLimited(*key);
        continue;
      }
      queue_.forget(*key);
      if (*r) queue_.addAfter(*key, **r);
    }
  }

  const std::string name_;
  const Reconcile reconcile_;
  kube::WorkQueue queue_;
  SharedInformers informers_;
  Counter* reconciles_ = nullptr;
  Counter* errors_ = nullptr;
  std::vector<std::thread> threads_;
};

}  // namespace op
