#pragma once
// Metrics: a small Prometheus registry (counters, gauges read at scrape time, histograms) rendered
// in the text exposition format for /metrics. No client library: the operator exports a handful
// of series and this stays ~100 lines.
//
// Thread safety: every method is thread-safe; counters and histograms are lock-free on the hot
// path after the series exists (one mutex guards series creation and rendering).

#include <atomic>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

namespace op {

class Counter {
 public:
  void inc(double v = 1);
  double value() const { return value_.load(); }

 private:
  std::atomic<double> value_{0};
};

class Histogram {
 public:
  explicit Histogram(std::vector<double> bounds);
  void observe(double v);

 private:
  friend class Metrics;
  std::vector<double> bounds_;
  mutable std::mutex mu_;
  std::vector<uint64_t> counts_;  // guarded by mu_; one per bound (non-cumulative), + overflow
  double sum_ = 0;                // guarded by mu_
  uint64_t count_ = 0;            // guarded by mu_
};

class Metrics {
 public:
  // `labels` is the rendered label set without braces, e.g. `controller="job"` ("" for none).
  // The same (name, labels) returns the same series.
  Counter& counter(const std::string& name, const std::string& help, const std::string& labels = "");
  Histogram& histogram(const std::string& name, const std::string& help, std::vector<double> bounds,
                       const std::string& labels = "");
  // A gauge whose value is read when /metrics is scraped (queue depth, cache sizes, leader).
  void gauge(const std::string& name, const std::string& help, const std::string& labels,
             std::function<double()> read);

  // Prometheus text exposition format 0.0.4.
  std::string render() const;

 private:
  struct Family {
    std::string type;
    std::string help;
    std::map<std::string, std::unique_ptr<Counter>> counters;
    std::map<std::string, std::unique_ptr<Histogram>> histograms;
    std::map<std::string, std::function<double()>> gauges;
  };
  mutable std::mutex mu_;
  std::map<std::string, Family> families_;  // guarded by mu_
};

}  // namespace op
