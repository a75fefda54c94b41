#pragma once
// The server's request metrics, named and labelled as kube-apiserver's so the same dashboards and
// queries work: apiserver_request_total{verb,group,version,resource,subresource,scope,component,
// code} and apiserver_request_duration_seconds (a histogram; watches excluded, as upstream
// excludes long-running requests). Served on /metrics in Prometheus text format to the admin.
//
// Thread safety: record() and render() may be called from any thread.

#include <array>
#include <cstdint>
#include <map>
#include <mutex>
#include <string>
#include <tuple>

namespace apiserver {

class RequestMetrics {
 public:
  struct Labels {
    std::string verb, group, version, resource, subresource, scope;
    auto operator<=>(const Labels&) const = default;
  };
  // One finished request: `code` is the HTTP status it got; `seconds` how long it took.
  void record(const Labels& l, int code, double seconds, bool longRunning);
  std::string render() const;

 private:
  static constexpr std::array<double, 12> kBuckets{0.005, 0.01, 0.025, 0.05, 0.1, 0.2, 0.4, 0.6, 1, 2, 5, 10};
  struct Duration {
    std::array<uint64_t, kBuckets.size()> buckets{};  // counts of requests <= each bound
    uint64_t count = 0;
    double sum = 0;
  };
  mutable std::mutex mu_;
  std::map<std::pair<Labels, int>, uint64_t> total_;  // guarded by mu_
  std::map<Labels, Duration> duration_;               // guarded by mu_
};

}  // namespace apiserver
