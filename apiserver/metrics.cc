#include "apiserver/metrics.h"

#include <cstdio>

namespace apiserver {

namespace {

// Label values are ours (verbs, resource names from the registry, codes): still escaped, since a
// resource name comes from a CRD.
std::string escape(const std::string& v) {
  std::string out;
  for (char c : v) {
    if (c == '\\' || c == '"') out += '\\';
    if (c == '\n') {
      out += "\\n";
      continue;
    }
    out += c;
  }
  return out;
}

std::string labelText(const RequestMetrics::Labels& l) {
  return "component=\"apiserver\",group=\"" + escape(l.group) + "\",resource=\"" + escape(l.resource) +
         "\",scope=\"" + escape(l.scope) + "\",subresource=\"" + escape(l.subresource) + "\",verb=\"" +
         escape(l.verb) + "\",version=\"" + escape(l.version) + "\"";
}

std::string number(double v) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.9g", v);
  return buf;
}

}  // namespace

void RequestMetrics::record(const Labels& l, int code, double seconds, bool longRunning) {
  std::lock_guard g(mu_);
  ++total_[{l, code}];
  if (longRunning) return;
  Duration& d = duration_[l];
  for (size_t i = 0; i < kBuckets.size(); ++i) {
    if (seconds <= kBuckets[i]) ++d.buckets[i];
  }
  ++d.count;
  d.sum += seconds;
}

std::string RequestMetrics::render() const {
  std::lock_guard g(mu_);
  std::string out =
      "# HELP apiserver_request_total Counter of apiserver requests broken out for each verb, group, version, "
      "resource, scope, component, and HTTP response code.\n"
      "# TYPE apiserver_request_total counter\n";
  for (const auto& [key, n] : total_) {
    out += "apiserver_request_total{code=\"" + std::to_string(key.second) + "\"," + labelText(key.first) + "} " +
           std::to_string(n) + "\n";
  }
  out +=
      "# HELP apiserver_request_duration_seconds Response latency distribution in seconds for each verb, group, "
      "version, resource, subresource, scope and component.\n"
      "# TYPE apiserver_request_duration_seconds histogram\n";
  for (const auto& [l, d] : duration_) {
    std::string lt = labelText(l);
    for (size_t i = 0; i < kBuckets.size(); ++i) {
      out += "apiserver_request_duration_seconds_bucket{" + lt + ",le=\"" + number(kBuckets[i]) + "\"} " +
             std::to_string(d.buckets[i]) + "\n";
    }
    out += "apiserver_request_duration_seconds_bucket{" + lt + ",le=\"+Inf\"} " + std::to_string(d.count) + "\n";
    out += "apiserver_request_duration_seconds_sum{" + lt + "} " + number(d.sum) + "\n";
    out += "apiserver_request_duration_seconds_count{" + lt + "} " + std::to_string(d.count) + "\n";
  }
  return out;
}

}  // namespace apiserver
