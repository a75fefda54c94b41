#include "kube/quantity.h"

#include <algorithm>
#include <limits>

namespace kube {

namespace {

constexpr __int128 kNanosPerUnit = 1000000000;
// |value| must stay below 1e27 units = 1e36 nanos, leaving headroom in 128 bits for sums.
constexpr __int128 kMaxNanos = static_cast<__int128>(1000000000000000000LL) * 1000000000000000000LL;
// Digits read before trailing zeros are stripped (keeps the mantissa below 10^36), and significant
// digits kept after: 10^20 * 2^60 ("Ei") still fits in 128 bits before scaling.
constexpr int kMaxDigits = 36;
constexpr int kMaxSignificantDigits = 20;

__int128 pow10(int n) {
  __int128 r = 1;
  for (int i = 0; i < n; ++i) r *= 10;
  return r;
}

std::string int128ToString(__int128 v) {
  if (v == 0) return "0";
  bool neg = v < 0;
  unsigned __int128 u = neg ? static_cast<unsigned __int128>(-(v + 1)) + 1 : static_cast<unsigned __int128>(v);
  std::string s;
  while (u > 0) {
    s.push_back(static_cast<char>('0' + static_cast<int>(u % 10)));
    u /= 10;
  }
  if (neg) s.push_back('-');
  std::reverse(s.begin(), s.end());
  return s;
}

// Ceiling division for a positive divisor.
__int128 ceilDiv(__int128 a, __int128 d) {
  __int128 q = a / d;
  if (a % d != 0 && a > 0) ++q;
  return q;
}

int64_t saturate(__int128 v) {
  if (v > std::numeric_limits<int64_t>::max()) return std::numeric_limits<int64_t>::max();
  if (v < std::numeric_limits<int64_t>::min()) return std::numeric_limits<int64_t>::min();
  return static_cast<int64_t>(v);
}

Status bad(std::string_view s, std::string_view why) {
  return Status::badRequest("quantity \"" + std::string(s) + "\": " + std::string(why) +
                            " (expected e.g. 500m, 1.5Gi, 2e3, 128974848)");
}

// Decimal suffix for a base-10 exponent that is a multiple of 3, or "" when none exists.
const char* decimalSuffix(int exp) {
  switch (exp) {
    case -9: return "n";
    case -6: return "u";
    case -3: return "m";
    case 0: return "";
    case 3: return "k";
    case 6: return "M";
    case 9: return "G";
    case 12: return "T";
    case 15: return "P";
    case 18: return "E";
    default: return nullptr;
  }
}

}  // namespace

StatusOr<Quantity> Quantity::parse(std::string_view s) {
  if (s.empty()) return bad(s, "empty string");
  size_t i = 0;
  bool negative = false;
  if (s[i] == '+' || s[i] == '-') {
    negative = s[i] == '-';
    ++i;
  }
  // Mantissa digits, with an optional decimal point; trailing zeros of the fraction are exact.
  __int128 mantissa = 0;
  int fracDigits = 0;
  int digits = 0;
  bool seenPoint = false;
  bool sawDigit = false;
  for (; i < s.size(); ++i) {
    char c = s[i];
    if (c == '.') {
      if (seenPoint) return bad(s, "more than one decimal point");
      seenPoint = true;
      continue;
    }
    if (c < '0' || c > '9') break;
    sawDigit = true;
    if (mantissa == 0 && c == '0') {
      if (seenPoint) ++fracDigits;
      continue;  // leading zeros carry no precision
    }
    if (++digits > kMaxDigits) return bad(s, "too many digits");
    mantissa = mantissa * 10 + (c - '0');
    if (seenPoint) ++fracDigits;
  }
  if (!sawDigit) return bad(s, "missing number");
  std::string_view suffix = s.substr(i);

  int exp10 = 0;      // value = mantissa * 10^(exp10 - fracDigits) * 2^exp2
  int exp2 = 0;
  Format format = Format::kDecimalSI;
  if (suffix.empty()) {
  } else if (suffix.size() == 2 && suffix[1] == 'i') {
    static constexpr std::string_view kBin = "KMGTPE";
    size_t p = kBin.find(suffix[0]);
    if (p == std::string_view::npos) return bad(s, "unknown suffix \"" + std::string(suffix) + "\"");
    exp2 = 10 * static_cast<int>(p + 1);
    format = Format::kBinarySI;
  } else if ((suffix[0] == 'e' || suffix[0] == 'E') && suffix.size() > 1) {
    std::string_view e = suffix.substr(1);
    bool eneg = false;
    if (e[0] == '+' || e[0] == '-') {
      eneg = e[0] == '-';
      e.remove_prefix(1);
    }
    if (e.empty() || e.size() > 4) return bad(s, "invalid exponent");
    int v = 0;
    for (char c : e) {
      if (c < '0' || c > '9') return bad(s, "invalid exponent");
      v = v * 10 + (c - '0');
    }
    exp10 = eneg ? -v : v;
    format = Format::kDecimalExponent;
  } else if (suffix.size() == 1) {
    switch (suffix[0]) {
      case 'n': exp10 = -9; break;
      case 'u': exp10 = -6; break;
      case 'm': exp10 = -3; break;
      case 'k': exp10 = 3; break;
      case 'M': exp10 = 6; break;
      case 'G': exp10 = 9; break;
      case 'T': exp10 = 12; break;
      case 'P': exp10 = 15; break;
      case 'E': exp10 = 18; break;
      default: return bad(s, "unknown suffix \"" + std::string(suffix) + "\"");
    }
  } else {
    return bad(s, "unknown suffix \"" + std::string(suffix) + "\"");
  }

  // nanos = mantissa * 2^exp2 * 10^(exp10 - fracDigits + 9), rounded up when below 1n.
  if (mantissa == 0) return Quantity(0, format);
  while (mantissa % 10 == 0) {
    mantissa /= 10;
    --fracDigits;
    --digits;
  }
  if (digits > kMaxSignificantDigits) return bad(s, "more than 20 significant digits");
  int scale = exp10 - fracDigits + 9;
  // Bound the magnitude before multiplying: digits + scale + exp2*log10(2) must stay < 36.
  int magnitude = digits + scale + (exp2 * 3 + 9) / 10;
  if (magnitude > 36) return bad(s, "value out of range");
  __int128 v = mantissa;
  for (int k = 0; k < exp2; ++k) v *= 2;
  if (scale >= 0) {
    v *= pow10(scale);
  } else if (-scale > 37) {
    v = 1;  // far below 1n (v < 10^37): round up to the smallest representable amount
  } else {
    v = ceilDiv(v, pow10(-scale));
  }
  if (v >= kMaxNanos) return bad(s, "value out of range");
  return Quantity(negative ? -v : v, format);
}

Quantity Quantity::fromValue(int64_t units, Format format) {
  return Quantity(static_cast<__int128>(units) * kNanosPerUnit, format);
}

Quantity Quantity::fromMilli(int64_t milli, Format format) {
  return Quantity(static_cast<__int128>(milli) * 1000000, format);
}

int64_t Quantity::value() const { return saturate(ceilDiv(nanos_, kNanosPerUnit)); }

int64_t Quantity::milliValue() const { return saturate(ceilDiv(nanos_, 1000000)); }

std::string Quantity::toString() const {
  if (nanos_ == 0) return "0";
  bool neg = nanos_ < 0;
  __int128 mag = neg ? -nanos_ : nanos_;
  std::string sign = neg ? "-" : "";

  Format format = format_;
  if (format == Format::kBinarySI) {
    // Small or fractional binary values would need rounding; Kubernetes shows them as DecimalSI.
    if (mag < 1024 * kNanosPerUnit || mag % kNanosPerUnit != 0) format = Format::kDecimalSI;
  }
  if (format == Format::kBinarySI) {
    __int128 units = mag / kNanosPerUnit;
    int exp = 0;
    while (exp < 60 && units % 1024 == 0) {
      units /= 1024;
      exp += 10;
    }
    static constexpr const char* kBin[] = {"", "Ki", "Mi", "Gi", "Ti", "Pi", "Ei"};
    return sign + int128ToString(units) + kBin[exp / 10];
  }

  // Decimal: mantissa * 10^exp with exp a multiple of 3 and no removable factor of 1000.
  __int128 m = mag;
  int exp = -9;
  while (m % 10 == 0) {
    m /= 10;
    ++exp;
  }
  int rem = ((exp % 3) + 3) % 3;
  for (int k = 0; k < rem; ++k) m *= 10;
  exp -= rem;
  if (format == Format::kDecimalExponent) {
    return sign + int128ToString(m) + (exp == 0 ? "" : "e" + std::to_string(exp));
  }
  const char* suffix = decimalSuffix(exp);
  if (suffix == nullptr) return sign + int128ToString(m) + "e" + std::to_string(exp);
  return sign + int128ToString(m) + suffix;
}

}  // namespace kube
