#pragma once
// Kubernetes time formats: metav1.Time is RFC 3339 with second precision ("2026-11-22T13:34:44Z");
// metav1.MicroTime (Lease renewTime, Event eventTime) has microseconds ("...44.123456Z").

#include <chrono>
#include <optional>
#include <string>
#include <string_view>

namespace kube {

using Clock = std::chrono::system_clock;
using TimePoint = Clock::time_point;

std::string formatTime(TimePoint t);       // second precision, UTC, trailing Z
std::string formatMicroTime(TimePoint t);  // microsecond precision
std::optional<TimePoint> parseTime(std::string_view s);  // accepts both forms and numeric offsets
inline std::string nowTime() { return formatTime(Clock::now()); }

}  // namespace kube
