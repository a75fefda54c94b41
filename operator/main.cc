// foxden-operator: turns Jobs into Allocations placed on Workers and keeps them there.
// See operator/README.md.
//
//   foxden-operator [--kubeconfig FILE] [--metrics-addr HOST:PORT] [--workers N]
//                   [--leader-elect-lease-duration 15s] [--leader-elect-renew-deadline 10s]
//                   [--leader-elect-retry-period 2s] [--id IDENTITY]
//                   [--worker-grace-period 40s] [--worker-monitor-period 5s] [--unhealthy-fraction 0.55]
//                   [--fake-clock-file PATH]
//
// Threads: main (waits for leadership, then builds and starts the controllers; waits for a signal
// or the loss of leadership), the leader elector, the HTTP listener (/healthz /readyz /metrics),
// one reflector per shared informer, the event recorder, and each controller's workers.
//
// Losing leadership closes the LeaderFence at once (no write leaves this process afterwards) and
// exits 1, as kube-controller-manager does: a fresh process campaigns again from a clean slate.

#include <signal.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <atomic>
#include <condition_variable>
#include <iostream>
#include <mutex>
#include <random>
#include <thread>

#include "kube/event_recorder.h"
#include "kube/http_client.h"
#include "kube/http_server.h"
#include "kube/informer.h"
#include "kube/kubeconfig.h"
#include "kube/leader_election.h"
#include "kube/rest_client.h"
#include "kube/signals.h"
#include "operator/controller.h"
#include "operator/drain_controller.h"
#include "operator/job/job_controller.h"
#include "operator/leader_fence.h"
#include "operator/metrics.h"
#include "operator/periodic_controller.h"
#include "operator/worker_controller.h"

namespace {

std::atomic<bool> gStop{false};

void log(const std::string& msg) { std::cerr << "foxden-operator: " << msg << std::endl; }

// Parses "15s", "1500ms", "2m" or a plain number of seconds.
bool parseDuration(const std::string& s, std::chrono::milliseconds& out) {
  try {
    size_t n = 0;
    double v = std::stod(s, &n);
    std::string unit = s.substr(n);
    double ms = unit == "ms" ? v : unit == "m" ? v * 60000 : (unit == "s" || unit.empty()) ? v * 1000 : -1;
    if (ms <= 0) return false;
    out = std::chrono::milliseconds(static_cast<int64_t>(ms));
    return true;
  } catch (...) {
    return false;
  }
}

// THE place where controllers are constructed, in start order. A new controller (worker
// lifecycle, periodic, drain, ...) is one more line here.
// Options of the controllers beside the job controller, from flags.
struct ExtraOptions {
  op::WorkerMonitorOptions worker;
  op::PeriodicOptions periodic;
  op::DrainOptions drain;
};

std::vector<op::ControllerPtr> buildControllers(const op::ControllerContext&, int workers, const ExtraOptions& extra) {
  std::vector<op::ControllerPtr> cs;
  op::JobControllerOptions jo;
  jo.workers = workers;
  cs.push_back(std::make_unique<op::JobController>(jo));
  cs.push_back(std::make_unique<op::WorkerController>(extra.worker));
  cs.push_back(std::make_unique<op::PeriodicController>(extra.periodic));
  cs.push_back(std::make_unique<op::DrainController>(extra.drain));
  return cs;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"foxden-operator: places Jobs as Allocations on Workers and keeps them there"};
  std::string kubeconfig, metricsAddr = "127.0.0.1:8383", identity;
  std::string leaseDuration = "15s", renewDeadline = "10s", retryPeriod = "2s";
  int workers = 4;
  app.add_option("--kubeconfig", kubeconfig, "kubeconfig (default: in-cluster service account)");
  app.add_option("--metrics-addr", metricsAddr, "HOST:PORT of /healthz, /readyz and /metrics (port 0: any)")
      ->capture_default_str();
  app.add_option("--workers", workers, "Concurrent reconciles per controller")->capture_default_str()->check(CLI::Range(1, 64));
  app.add_option("--id", identity, "Leader election identity (default: hostname_pid)");
  app.add_option("--leader-elect-lease-duration", leaseDuration, "Lease duration")->capture_default_str();
  app.add_option("--leader-elect-renew-deadline", renewDeadline, "Renew deadline")->capture_default_str();
  app.add_option("--leader-elect-retry-period", retryPeriod, "Retry period")->capture_default_str();
  std::string workerGrace = "40s", workerMonitor = "5s", fakeClockFile;
  double unhealthyFraction = 0.55;
  app.add_option("--worker-grace-period", workerGrace,
                 "A worker whose Lease is not renewed for this long is NotReady and its allocations Lost "
                 "(Kubernetes' node-monitor-grace-period)")
      ->capture_default_str();
  app.add_option("--worker-monitor-period", workerMonitor, "How often worker Leases are checked")->capture_default_str();
  app.add_option("--unhealthy-fraction", unhealthyFraction,
                 "When more than this fraction of workers are dark at once, mark them NotReady but evict nothing "
                 "(Kubernetes' unhealthy-zone-threshold)")
      ->capture_default_str()
      ->check(CLI::Range(0.0, 1.0));
  app.add_option("--fake-clock-file", fakeClockFile,
                 "Tests: the periodic controller reads the time (RFC 3339) from this file instead of the clock");
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  }
  kube::LeaderElectionConfig le;
  ExtraOptions extra;
  extra.worker.stormFraction = unhealthyFraction;
  if (!fakeClockFile.empty()) {
    extra.periodic.clock = op::fileClock(fakeClockFile);
    extra.periodic.fakeClock = true;
  }
  if (!parseDuration(workerGrace, extra.worker.gracePeriod) || !parseDuration(workerMonitor, extra.worker.monitorPeriod)) {
    log("bad --worker-grace-period or --worker-monitor-period (use e.g. 40s, 500ms)");
    return 2;
  }
  if (!parseDuration(leaseDuration, le.leaseDuration) || !parseDuration(renewDeadline, le.renewDeadline) ||
      !parseDuration(retryPeriod, le.retryPeriod)) {
    log("bad --leader-elect-* duration (use e.g. 15s, 500ms)");
    return 2;
  }
  if (identity.empty()) {
    char host[256] = {0};
    gethostname(host, sizeof host - 1);
    identity = std::string(host) + "_" + std::to_string(getpid());
  }
  size_t colon = metricsAddr.rfind(':');
  if (colon == std::string::npos) {
    log("--metrics-addr must be HOST:PORT");
    return 2;
  }

  auto cfg = kubeconfig.empty() ? kube::loadInClusterConfig() : kube::loadKubeconfig(kubeconfig);
  if (!cfg) {
    log(cfg.status().message());
    return 2;
  }
  kube::trustOnlyConfigCa(*cfg);  // while this is the only thread
  // Two pool threads: cpprest's requests are asynchronous inside, so the pool only runs I/O
  // completions, and every extra thread is one more hand-off per request (8 threads cost 0.36 ms
  // of operator CPU per placement in bench/operator_bench.sh, 2 threads 0.26-0.30 ms).
  kube::initHttpClientThreads(2);
  auto http = kube::newHttpClient(*cfg, {.userAgent = "foxden-operator"});
  if (!http) {
    log(http.status().message());
    return 2;
  }
  kube::stopOnTerminationSignals(&gStop);

  // The elector writes its Lease through the raw client; everything else through the fence.
  auto fence = std::make_shared<op::LeaderFence>(*http);
  auto electorClient = std::make_shared<kube::RestClient>(*http);
  auto client = std::make_shared<kube::RestClient>(fence);
  auto metrics = std::make_shared<op::Metrics>();

  std::mutex mu;
  std::condition_variable cv;
  bool startLeading = false, lost = false;  // guarded by mu
  std::atomic<bool> leading{false};
  op::SharedInformers informers;
  std::mutex informersMu;  // guards `informers` while main builds them; /readyz reads under it

  metrics->gauge("foxden_operator_leader", "1 while this process is the leader.", "",
                 [&] { return leading.load() ? 1.0 : 0.0; });
  kube::HttpServerOptions ho;
  ho.host = metricsAddr.substr(0, colon);
  ho.port = static_cast<uint16_t>(std::stoi(metricsAddr.substr(colon + 1)));
  auto server = kube::startHttpServer(ho, [&](const kube::ServerRequest& req, kube::ResponseWriter& w) {
    if (req.path == "/healthz" || req.path == "/livez") {
      w.respond(200, "text/plain", "ok");
    } else if (req.path == "/readyz") {
      bool synced = false;
      {
        std::lock_guard l(informersMu);
        synced = informers.jobs && informers.synced();
      }
      if (leading.load() && synced) {
        w.respond(200, "text/plain", "ok");
      } else {
        w.respond(503, "text/plain", leading.load() ? "caches not synced" : "not the leader");
      }
    } else if (req.path == "/metrics") {
      w.respond(200, "text/plain; version=0.0.4", metrics->render());
    } else {
      w.respond(404, "text/plain", "not found");
    }
  });
  if (!server) {
    log("metrics listener: " + server.status().message());
    return 2;
  }
  log("serving /healthz /readyz /metrics on " + ho.host + ":" + std::to_string((*server)->port()));

  le.leaseNamespace = "foxden-system";
  le.leaseName = "foxden-operator";
  le.identity = identity;
  le.onStartedLeading = [&] {
    fence->open();
    leading = true;
    std::lock_guard l(mu);
    startLeading = true;
    cv.notify_all();
  };
  le.onStoppedLeading = [&] {
    fence->close();  // before anything else: no write leaves this process from now on
    leading = false;
    std::lock_guard l(mu);
    lost = true;
    cv.notify_all();
  };
  le.onNewLeader = [&](const std::string& h) { log("leader is now \"" + h + "\""); };
  auto elector = kube::LeaderElector::create(electorClient, le);
  if (!elector) {
    log(elector.status().message());
    return 2;
  }
  log("campaigning for Lease foxden-system/foxden-operator as \"" + identity + "\"");
  (*elector)->start();

  std::vector<op::ControllerPtr> controllers;
  op::ControllerContext ctx;
  int rc = 0;
  while (true) {
    std::unique_lock l(mu);
    // Wakes for a new leadership, its loss, or (every 200 ms) to notice a stop signal. Once the
    // controllers run, `startLeading` stays true, so it must not end the wait by itself: that
    // would spin this thread on a whole core.
    cv.wait_for(l, std::chrono::milliseconds(200),
                [&] { return (startLeading && controllers.empty()) || lost || gStop; });
    if (lost) {
      log("lost leadership: exiting");
      rc = 1;
      break;
    }
    if (gStop) break;
    if (!startLeading || !controllers.empty()) continue;
    l.unlock();
    log("became leader; starting controllers");
    ctx.client = client;
    ctx.metrics = metrics;
    ctx.leaderSince = op::Clock::now();
    kube::EventRecorderOptions eo;
    eo.component = "foxden-operator";
    eo.host = identity;
    ctx.events = std::make_shared<kube::EventRecorder>(client, eo);
    {
      std::lock_guard il(informersMu);
      auto informer = [&](const kube::ResourceRef& r, const std::string& selector) {
        kube::InformerOptions o;
        o.resource = r;
        o.labelSelector = selector;
        return std::make_shared<kube::Informer>(client, o);
      };
      informers.jobs = informer(op::kJobs, "");
      // Only allocations a Job owns (hand-made ones without the label are not ours).
      informers.allocations = informer(op::kAllocations, "foxden.io/job");
      informers.workers = informer(op::kWorkers, "");
      informers.leases = informer(op::kLeases, "");
      ctx.informers = informers;
    }
    controllers = buildControllers(ctx, workers, extra);
    for (auto& c : controllers) c->start(ctx);
    for (auto* inf : {&informers.jobs, &informers.allocations, &informers.workers, &informers.leases}) (*inf)->start();
  }
  if (rc != 0) {
    // As kube-controller-manager: leave at once; the fence already refuses writes, and a clean
    // shutdown could block on the API for as long as it is unreachable.
    std::cerr.flush();
    std::_Exit(rc);
  }
  log("stopping");
  for (auto& c : controllers) c->stop();
  for (auto* inf : {&informers.jobs, &informers.allocations, &informers.workers, &informers.leases}) {
    if (*inf) (*inf)->stop();
  }
  if (ctx.events) ctx.events->stop();
  (*elector)->stop();  // releases the Lease so a successor need not wait for it to expire
  (*server)->stop();
  return 0;
}
