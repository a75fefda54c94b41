#pragma once
// What every controller of foxden-operator gets, and the shape it has.
//
// main.cc builds one ControllerContext when this process becomes leader: one RestClient (whose
// writes are fenced by leadership, see leader_fence.h), one EventRecorder, the clock, the metrics
// registry, and the shared informers for Jobs, Allocations, Workers and worker Leases, so that
// controllers never open watches of their own. It then constructs the controllers, calls start()
// on each, starts the informers, and serves /readyz once every informer has synced.
//
//   informers (one reflector thread each) ── handlers ──► each controller's WorkQueue
//                                                           └─► its worker threads: reconcile(key)
//
// Contract for a controller (controller-runtime's): handlers only enqueue keys; reconcile(key)
// reads the informer caches (immutable snapshots: copy before editing), computes what should be
// from what is observed (never from memory of past actions), writes with resourceVersion, and is
// idempotent. start() must not block; stop() joins the controller's threads and is idempotent.
//
// Thread safety: the context is built before any controller starts and is read-only afterwards;
// everything it points to is thread-safe.

#include <chrono>
#include <functional>
#include <memory>
#include <string>

#include "kube/event_recorder.h"
#include "kube/informer.h"
#include "kube/rest_client.h"
#include "operator/metrics.h"

namespace op {

using Clock = std::chrono::system_clock;
using TimePoint = Clock::time_point;

// The shared informers; each is started by main.cc after every controller registered its handlers.
struct SharedInformers {
  std::shared_ptr<kube::Informer> jobs;         // foxden.io/v1alpha1 jobs, all namespaces
  std::shared_ptr<kube::Informer> allocations;  // foxden.io/v1alpha1 allocations, all namespaces
  std::shared_ptr<kube::Informer> workers;      // foxden.io/v1alpha1 workers (cluster-scoped)
  std::shared_ptr<kube::Informer> leases;       // coordination.k8s.io/v1 leases in foxden-system

  bool synced() const;
};

struct ControllerContext {
  kube::RestClientPtr client;
  std::shared_ptr<kube::EventRecorder> events;
  // Injectable clock: tests (and the hollow-worker harness) drive time through it.
  std::function<TimePoint()> now = [] { return Clock::now(); };
  std::shared_ptr<Metrics> metrics;
  SharedInformers informers;
  // When this process became leader (for grace periods that start at a restart of the operator).
  TimePoint leaderSince{};
};

class Controller {
 public:
  virtual ~Controller() = default;
  virtual std::string name() const = 0;
  // Registers informer handlers and starts worker threads. Does not block.
  virtual void start(const ControllerContext& ctx) = 0;
  // Stops and joins; idempotent.
  virtual void stop() = 0;
};
using ControllerPtr = std::unique_ptr<Controller>;

// Resource addresses the controllers share.
inline const kube::ResourceRef kJobs{"foxden.io", "v1alpha1", "jobs", "", "", ""};
inline const kube::ResourceRef kAllocations{"foxden.io", "v1alpha1", "allocations", "", "", ""};
inline const kube::ResourceRef kWorkers{"foxden.io", "v1alpha1", "workers", "", "", ""};
inline const kube::ResourceRef kLeases{"coordination.k8s.io", "v1", "leases", "foxden-system", "", ""};

}  // namespace op
