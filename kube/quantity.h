#pragma once
// Kubernetes resource quantities ("500m", "1.5Gi", "2e3", "129e6"): exact parsing, comparison,
// arithmetic and canonical formatting as in apimachinery's resource.Quantity.
//
// Representation: a signed count of nano-units in a 128-bit integer, so every valid quantity down
// to 1n is exact (no floating point). Like Kubernetes, precision below 1n is rounded up. Values
// are limited to |v| < 1e27 units (far above "1Ei") and 20 significant digits; parse() rejects
// anything beyond (Kubernetes' arbitrary precision is not needed for real quantities).
//
// Threading: a Quantity is a plain value type; distinct objects may be used from any thread.

#include <compare>
#include <cstdint>
#include <string>
#include <string_view>

#include "kube/status.h"

namespace kube {

class Quantity {
 public:
  // How toString() renders the value; parse() takes it from the suffix like Kubernetes does.
  enum class Format { kDecimalSI, kBinarySI, kDecimalExponent };

  Quantity() = default;  // zero, DecimalSI

  // Parses a quantity string; garbage, empty strings and out-of-range values are BadRequest.
  [[nodiscard]] static StatusOr<Quantity> parse(std::string_view s);
  static Quantity fromValue(int64_t units, Format format = Format::kDecimalSI);
  static Quantity fromMilli(int64_t milli, Format format = Format::kDecimalSI);

  // Integer units, rounded up (towards +infinity) like Quantity.Value(); saturates at int64 limits.
  int64_t value() const;
  // Milli-units, rounded up like Quantity.MilliValue(); saturates at int64 limits.
  int64_t milliValue() const;
  // Exact value in nano-units.
  __int128 nanoValue() const { return nanos_; }

  bool isZero() const { return nanos_ == 0; }
  int sign() const { return nanos_ > 0 ? 1 : (nanos_ < 0 ? -1 : 0); }
  Format format() const { return format_; }

  // Canonical form as Kubernetes serializes it: "1500m", "1536Mi", "2k", "129e6", "0".
  std::string toString() const;

  // Arithmetic keeps the left operand's format (as Quantity.Add does).
  Quantity& operator+=(const Quantity& o) {
    nanos_ += o.nanos_;
    return *this;
  }
  Quantity& operator-=(const Quantity& o) {
    nanos_ -= o.nanos_;
    return *this;
  }
  friend Quantity operator+(Quantity a, const Quantity& b) { return a += b; }
  friend Quantity operator-(Quantity a, const Quantity& b) { return a -= b; }
  Quantity operator-() const {
    Quantity q = *this;
    q.nanos_ = -q.nanos_;
    return q;
  }

  // Compares values only (format is presentation).
  friend std::strong_ordering operator<=>(const Quantity& a, const Quantity& b) {
    return a.nanos_ <=> b.nanos_;
  }
  friend bool operator==(const Quantity& a, const Quantity& b) { return a.nanos_ == b.nanos_; }

 private:
  Quantity(__int128 nanos, Format format) : nanos_(nanos), format_(format) {}

  __int128 nanos_ = 0;
  Format format_ = Format::kDecimalSI;
};

}  // namespace kube
