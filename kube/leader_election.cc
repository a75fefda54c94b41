#include "kube/leader_election.h"

#include <iostream>
#include <random>

#include "kube/timeutil.h"
#include "kube/thread_name.h"

namespace kube {

namespace {
constexpr double kJitterFactor = 1.2;  // client-go's JitterFactor
}

StatusOr<std::unique_ptr<LeaderElector>> LeaderElector::create(RestClientPtr client, LeaderElectionConfig config) {
  if (config.leaseName.empty() || config.leaseNamespace.empty()) {
    return Status::invalid("leader election: lease namespace and name are required");
  }
  if (config.identity.empty()) return Status::invalid("leader election: identity is required");
  if (config.retryPeriod.count() <= 0) return Status::invalid("leader election: retryPeriod must be positive");
  if (config.leaseDuration <= config.renewDeadline) {
    return Status::invalid("leader election: leaseDuration must be greater than renewDeadline");
  }
  if (static_cast<double>(config.renewDeadline.count()) <= kJitterFactor * config.retryPeriod.count()) {
    return Status::invalid("leader election: renewDeadline must be greater than 1.2 * retryPeriod");
  }
  return std::unique_ptr<LeaderElector>(new LeaderElector(std::move(client), std::move(config)));
}

LeaderElector::LeaderElector(RestClientPtr client, LeaderElectionConfig config)
    : client_(std::move(client)),
      config_(std::move(config)),
      leaseRef_{"coordination.k8s.io", "v1", "leases", config_.leaseNamespace, config_.leaseName, ""} {}

LeaderElector::~LeaderElector() { stop(); }

void LeaderElector::start() {
  std::lock_guard<std::mutex> l(mu_);
  if (started_ || stopping_) return;
  started_ = true;
  thread_ = std::thread([this] {
    nameThread("leader-elect");
    run();
  });
}

void LeaderElector::stop() {
  {
    std::lock_guard<std::mutex> l(mu_);
    stopping_ = true;
  }
  cv_.notify_all();
  if (thread_.joinable()) thread_.join();
}

bool LeaderElector::isLeader() const {
  std::lock_guard<std::mutex> l(mu_);
  return leading_;
}

std::string LeaderElector::leader() const {
  std::lock_guard<std::mutex> l(mu_);
  return leader_;
}

bool LeaderElector::finished() const {
  std::lock_guard<std::mutex> l(mu_);
  return finished_;
}

bool LeaderElector::stopping() const {
  std::lock_guard<std::mutex> l(mu_);
  return stopping_;
}

bool LeaderElector::sleep(std::chrono::milliseconds d) {
  std::unique_lock<std::mutex> l(mu_);
  cv_.wait_for(l, d, [this] { return stopping_; });
  return !stopping_;
}

LeaderElector::Record LeaderElector::recordOf(const JsonValue& lease) {
  Record r;
  r.holder = getString(lease, {"spec", "holderIdentity"});
  r.leaseDurationSeconds = getInt(lease, {"spec", "leaseDurationSeconds"}).value_or(0);
  r.acquireTime = getString(lease, {"spec", "acquireTime"});
  r.renewTime = getString(lease, {"spec", "renewTime"});
  r.leaseTransitions = getInt(lease, {"spec", "leaseTransitions"}).value_or(0);
  return r;
}

Json LeaderElector::leaseObject(const Record& r) const {
  Json doc;
  if (haveLease_) {
    doc = cloneJson(lastLease_);  // keeps metadata (resourceVersion, uid, labels)
  } else {
    doc.SetObject();
  }
  auto& a = doc.GetAllocator();
  setString(doc, "apiVersion", "coordination.k8s.io/v1", a);
  setString(doc, "kind", "Lease", a);
  JsonValue& md = ensureObject(doc, "metadata", a);
  setString(md, "name", config_.leaseName, a);
  setString(md, "namespace", config_.leaseNamespace, a);
  JsonValue spec(rapidjson::kObjectType);
  setString(spec, "holderIdentity", r.holder, a);
  setMember(spec, "leaseDurationSeconds", JsonValue(r.leaseDurationSeconds), a);
  setString(spec, "acquireTime", r.acquireTime, a);
  setString(spec, "renewTime", r.renewTime, a);
  setMember(spec, "leaseTransitions", JsonValue(r.leaseTransitions), a);
  setMember(doc, "spec", std::move(spec), a);
  return doc;
}

bool LeaderElector::tryAcquireOrRenew() {
  auto now = std::chrono::steady_clock::now();
  std::string nowText = formatMicroTime(Clock::now());
  int64_t durationSeconds =
      std::max<int64_t>(1, (config_.leaseDuration.count() + 999) / 1000);  // the API counts seconds
  Record mine{config_.identity, durationSeconds, nowText, nowText, 0};

  auto got = client_->get(leaseRef_);
  if (!got) {
    if (got.status().code() != 404) return false;
    haveLease_ = false;
    auto created = client_->create(leaseRef_, leaseObject(mine));
    if (!created) return false;  // e.g. AlreadyExists: another candidate was first
    lastLease_ = std::move(*created);
    haveLease_ = true;
    observed_ = mine;
    observedTime_ = now;
    return true;
  }
  lastLease_ = std::move(*got);
  haveLease_ = true;
  Record old = recordOf(lastLease_);
  if (!(old == observed_)) {
    observed_ = old;
    observedTime_ = now;
  }
  bool heldByUs = old.holder == config_.identity;
  if (!old.holder.empty() && !heldByUs &&
      observedTime_ + std::chrono::seconds(old.leaseDurationSeconds) > now) {
    return false;  // held by someone else and not expired
  }
  if (heldByUs) {
    mine.acquireTime = old.acquireTime;
    mine.leaseTransitions = old.leaseTransitions;
  } else {
    mine.leaseTransitions = old.leaseTransitions + 1;
  }
  // An update with the resourceVersion we read: if anyone wrote in between we get 409 and lose.
  auto updated = client_->update(leaseRef_, leaseObject(mine));
  if (!updated) return false;
  lastLease_ = std::move(*updated);
  observed_ = mine;
  observedTime_ = now;
  return true;
}

void LeaderElector::release() {
  if (!haveLease_ || observed_.holder != config_.identity) return;
  std::string nowText = formatMicroTime(Clock::now());
  Record r{"", 1, nowText, nowText, observed_.leaseTransitions};
  auto updated = client_->update(leaseRef_, leaseObject(r));
  if (!updated) {
    std::cerr << "leader-election lease=" << config_.leaseNamespace << "/" << config_.leaseName
              << ": failed to release: " << updated.status().toString() << "\n";
    return;
  }
  lastLease_ = std::move(*updated);
  observed_ = r;
  observedTime_ = std::chrono::steady_clock::now();
}

void LeaderElector::maybeReportTransition() {
  if (reportedOnce_ && observed_.holder == reportedLeader_) return;
  reportedOnce_ = true;
  reportedLeader_ = observed_.holder;
  {
    std::lock_guard<std::mutex> l(mu_);
    leader_ = reportedLeader_;
  }
  if (config_.onNewLeader) config_.onNewLeader(reportedLeader_);
}

void LeaderElector::run() {
  static thread_local std::mt19937_64 rng{std::random_device{}()};
  bool led = false;
  try {
    // Campaign: retry every retryPeriod * [1, 1 + 1.2) until we hold the lease.
    for (;;) {
      if (stopping()) break;
      bool ok = tryAcquireOrRenew();
      maybeReportTransition();
      if (ok) {
        led = true;
        break;
      }
      std::uniform_real_distribution<double> jitter(0.0, kJitterFactor);
      auto wait = std::chrono::milliseconds(
          static_cast<int64_t>(static_cast<double>(config_.retryPeriod.count()) * (1.0 + jitter(rng))));
      if (!sleep(wait)) break;
    }
    if (led) {
      {
        std::lock_guard<std::mutex> l(mu_);
        leading_ = true;
      }
      if (config_.onStartedLeading) config_.onStartedLeading();
      // Renew: each round retries every retryPeriod until success or renewDeadline has passed.
      for (;;) {
        if (!sleep(config_.retryPeriod)) break;
        auto deadline = std::chrono::steady_clock::now() + config_.renewDeadline;
        bool renewed = false;
        for (;;) {
          renewed = tryAcquireOrRenew();
          maybeReportTransition();
          if (renewed || stopping() || std::chrono::steady_clock::now() + config_.retryPeriod > deadline) break;
          if (!sleep(config_.retryPeriod)) break;
        }
        if (!renewed) break;  // lost (or stopping mid-renewal)
      }
      if (stopping() && config_.releaseOnCancel) release();
      {
        std::lock_guard<std::mutex> l(mu_);
        leading_ = false;
      }
      if (config_.onStoppedLeading) config_.onStoppedLeading();
    }
  } catch (const std::exception& e) {
    std::cerr << "leader-election lease=" << config_.leaseNamespace << "/" << config_.leaseName
              << ": elector thread failed: " << e.what() << "\n";
    std::lock_guard<std::mutex> l(mu_);
    leading_ = false;
  }
  std::lock_guard<std::mutex> l(mu_);
  finished_ = true;
}

}  // namespace kube
