#include "kube/quantity.h"

#include <doctest/doctest.h>

#include <cstdint>

namespace kube {
namespace {

Quantity q(const char* s) {
  auto r = Quantity::parse(s);
  REQUIRE_MESSAGE(r.isOk(), s, ": ", r.status().toString());
  return *r;
}

TEST_CASE("quantity: parses every notation exactly") {
  CHECK(q("500m").milliValue() == 500);
  CHECK(q("1.5Gi").value() == 1610612736);
  CHECK(q("2e3").value() == 2000);
  CHECK(q("128974848").value() == 128974848);
  CHECK(q("129e6").value() == 129000000);
  CHECK(q("123Mi").value() == 128974848);
  CHECK(q("1k").value() == 1000);
  CHECK(q("0.5").milliValue() == 500);
  CHECK(q(".5").milliValue() == 500);
  CHECK(q("1E").value() == 1000000000000000000LL);
  CHECK(q("1Ki").value() == 1024);
  CHECK(q("-1.5").milliValue() == -1500);
  CHECK(q("+3").value() == 3);
  CHECK(q("0.001").milliValue() == 1);
  CHECK(q("100n").nanoValue() == 100);
  CHECK(q("1u").nanoValue() == 1000);
  CHECK(q("1e-3").milliValue() == 1);
  CHECK(q("0.1").milliValue() == 100);  // no float rounding: 0.1 is exact
  CHECK(q("0").isZero());
  // Extremes stay exact or round up, never overflow.
  CHECK(q("12345678901234567890").nanoValue() == static_cast<__int128>(12345678901234567890ULL) * 1000000000);
  CHECK(q("12345678901234567890").value() == INT64_MAX);  // value() saturates
  CHECK(q("1.0000000000000000000Ei").value() == 1152921504606846976LL);
  CHECK(q("1.5Ei").toString() == "1536Pi");
  CHECK(q("1e-9999").nanoValue() == 1);
  CHECK(q("0.00000000000000000000000000000000000000000001").nanoValue() == 1);
  CHECK_FALSE(Quantity::parse("100000000000000000000000000000000000m").isOk());  // 1e32: out of range
}

TEST_CASE("quantity: value() and milliValue() round up like Kubernetes") {
  CHECK(q("1.1").value() == 2);
  CHECK(q("100m").value() == 1);
  CHECK(q("0.0001").milliValue() == 1);
  CHECK(q("-1.5").value() == -1);  // towards +infinity
  CHECK(q("0.5n").nanoValue() == 1);  // below nano precision: rounded up
}

TEST_CASE("quantity: equal values in different notations compare equal") {
  CHECK(q("1Gi") == q("1073741824"));
  CHECK(q("1000m") == q("1"));
  CHECK(q("1k") == q("1e3"));
  CHECK(q("123Mi") == q("128974848"));
  CHECK(q("129e6") == q("129M"));
  CHECK(q("1Mi") > q("1M"));
  CHECK(q("999m") < q("1"));
  CHECK(q("-1") < q("0"));
}

TEST_CASE("quantity: canonical formatting") {
  CHECK(q("1.5").toString() == "1500m");
  CHECK(q("1536Mi").toString() == "1536Mi");
  CHECK(q("1.5Gi").toString() == "1536Mi");
  CHECK(q("1024Mi").toString() == "1Gi");
  CHECK(q("2048").toString() == "2048");
  CHECK(q("2000").toString() == "2k");
  CHECK(q("1500").toString() == "1500");
  CHECK(q("2e3").toString() == "2e3");
  CHECK(q("129e6").toString() == "129e6");
  CHECK(q("0.5Ki").toString() == "512");  // small binary values render as DecimalSI
  CHECK(q("500m").toString() == "500m");
  CHECK(q("0").toString() == "0");
  CHECK(q("0Gi").toString() == "0");
  CHECK(q("-2k").toString() == "-2k");
  CHECK(q("100n").toString() == "100n");
  CHECK(q("1.5u").toString() == "1500n");
  CHECK(q("1000E").toString() == "1e21");  // no SI suffix that large
}

TEST_CASE("quantity: arithmetic keeps exactness and the left format") {
  Quantity a = q("1Gi");
  a += q("512Mi");
  CHECK(a.toString() == "1536Mi");
  Quantity b = q("1") - q("250m");
  CHECK(b.toString() == "750m");
  CHECK((q("100m") + q("100m") + q("100m")) == q("300m"));
  CHECK((-q("5")).value() == -5);
  CHECK(Quantity::fromMilli(1500).toString() == "1500m");
  CHECK(Quantity::fromValue(1048576, Quantity::Format::kBinarySI).toString() == "1Mi");
}

TEST_CASE("quantity: garbage is rejected with a clear error") {
  for (const char* bad : {"", "abc", "1.2.3", "1Qi", "1 Gi", "Gi", "--1", "1e", "1ee3", "1.5x", "12MiB", ".", "-",
                          "1e99999", "1e40", "123456789012345678901", "99999999999999999999Ei"}) {
    auto r = Quantity::parse(bad);
    CHECK_MESSAGE(!r.isOk(), bad);
    if (!r.isOk()) {
      CHECK(r.status().code() == 400);
      CHECK(r.status().message().find("quantity") != std::string::npos);
    }
  }
}

}  // namespace
}  // namespace kube
