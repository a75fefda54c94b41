#include "operator/metrics.h"

#include <charconv>
#include <sstream>

namespace op {

void Counter::inc(double v) {
  double cur = value_.load();
  while (!value_.compare_exchange_weak(cur, cur + v)) {
  }
}

Histogram::Histogram(std::vector<double> bounds) : bounds_(std::move(bounds)), counts_(bounds_.size() + 1, 0) {}

void Histogram::observe(double v) {
  size_t i = 0;
  while (i < bounds_.size() && v > bounds_[i]) ++i;
  std::lock_guard l(mu_);
  counts_[i]++;
  sum_ += v;
  count_++;
}

Counter& Metrics::counter(const std::string& name, const std::string& help, const std::string& labels) {
  std::lock_guard l(mu_);
  Family& f = families_[name];
  f.type = "counter";
  f.help = help;
  auto& c = f.counters[labels];
  if (!c) c = std::make_unique<Counter>();
  return *c;
}

Histogram& Metrics::histogram(const std::string& name, const std::string& help, std::vector<double> bounds,
                              const std::string& labels) {
  std::lock_guard l(mu_);
  Family& f = families_[name];
  f.type = "histogram";
  f.help = help;
  auto& h = f.histograms[labels];
  if (!h) h = std::make_unique<Histogram>(std::move(bounds));
  return *h;
}

void Metrics::gauge(const std::string& name, const std::string& help, const std::string& labels,
                    std::function<double()> read) {
  std::lock_guard l(mu_);
  Family& f = families_[name];
  f.type = "gauge";
  f.help = help;
  f.gauges[labels] = std::move(read);
}

namespace {
std::string num(double v) {
  char buf[64];
  auto r = std::to_chars(buf, buf + sizeof buf, v);  // shortest form that reads back the same
  return std::string(buf, r.ptr);
}
std::string braces(const std::string& labels, const std::string& extra = "") {
  std::string all = labels;
  if (!extra.empty()) all += (all.empty() ? "" : ",") + extra;
  return all.empty() ? "" : "{" + all + "}";
}
}  // namespace

std::string Metrics::render() const {
  std::ostringstream out;
  std::lock_guard l(mu_);
  for (const auto& [name, f] : families_) {
    out << "# HELP " << name << " " << f.help << "\n# TYPE " << name << " " << f.type << "\n";
    for (const auto& [labels, c] : f.counters) out << name << braces(labels) << " " << num(c->value()) << "\n";
    for (const auto& [labels, g] : f.gauges) out << name << braces(labels) << " " << num(g()) << "\n";
    for (const auto& [labels, h] : f.histograms) {
      std::lock_guard hl(h->mu_);
      uint64_t cum = 0;
      for (size_t i = 0; i < h->bounds_.size(); ++i) {
        cum += h->counts_[i];
        out << name << "_bucket" << braces(labels, "le=\"" + num(h->bounds_[i]) + "\"") << " " << cum << "\n";
      }
      cum += h->counts_.back();
      out << name << "_bucket" << braces(labels, "le=\"+Inf\"") << " " << cum << "\n";
      out << name << "_sum" << braces(labels) << " " << num(h->sum_) << "\n";
      out << name << "_count" << braces(labels) << " " << h->count_ << "\n";
    }
  }
  return out.str();
}

}  // namespace op
