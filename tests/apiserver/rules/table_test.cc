// Table rules: JSONPath subset, HumanDuration boundaries, printer cells.

#include "apiserver/table.h"

#include <doctest/doctest.h>

#include <random>
#include <string>
#include <vector>

namespace {

using kube::Json;
using kube::JsonValue;
using namespace std::chrono_literals;

Json parse(const std::string& text) {
  auto r = kube::parseJson(text);
  REQUIRE_MESSAGE(r.isOk(), text);
  return std::move(r).value();
}

const char* kObject = R"({
  "apiVersion":"example.com/v1","kind":"Widget",
  "metadata":{"name":"w1","labels":{"app.kubernetes.io/name":"demo"},
              "creationTimestamp":"2024-05-01T10:00:00Z"},
  "spec":{"replicas":3,"ratio":0.5,"enabled":true,"color":"red",
          "items":[{"name":"a","n":1},{"name":"b","n":2},{"name":"c","n":3}],
          "nested":{"list":[[1,2],[3]]}},
  "status":{"conditions":[{"type":"Progressing","status":"False"},
                          {"type":"Ready","status":"True","lastTransitionTime":"2024-05-01T10:05:00Z"}]}
})";

// Evaluates and renders each result as compact JSON, joined with "|".
std::string eval(const JsonValue& obj, const std::string& path) {
  auto r = apiserver::evalJsonPath(obj, path);
  REQUIRE_MESSAGE(r.isOk(), path, ": ", r.status().toString());
  std::string out;
  for (const JsonValue* v : r.value()) {
    if (!out.empty()) out += "|";
    out += kube::toJson(*v);
  }
  return out;
}

kube::TimePoint at(const char* ts) {
  auto t = kube::parseTime(ts);
  REQUIRE(t.has_value());
  return *t;
}

}  // namespace

TEST_SUITE("jsonpath") {
  TEST_CASE("fields, indices, wildcards") {
    Json o = parse(kObject);
    CHECK(eval(o, ".spec.replicas") == "3");
    CHECK(eval(o, "{.spec.replicas}") == "3");
    CHECK(eval(o, "{$.spec.color}") == "\"red\"");
    CHECK(eval(o, ".spec.items[0].name") == "\"a\"");
    CHECK(eval(o, ".spec.items[-1].name") == "\"c\"");
    CHECK(eval(o, ".spec.items[*].name") == "\"a\"|\"b\"|\"c\"");
    CHECK(eval(o, ".spec.items[0:2].n") == "1|2");
    CHECK(eval(o, ".spec.items[1:].n") == "2|3");
    CHECK(eval(o, ".spec.nested.list[0][1]") == "2");
    CHECK(eval(o, ".metadata.labels['app.kubernetes.io/name']") == "\"demo\"");
    CHECK(eval(o, R"(.metadata.labels["app.kubernetes.io/name"])") == "\"demo\"");
    CHECK(eval(o, ".metadata.labels.*") == "\"demo\"");
    CHECK(eval(o, ".spec.items[*]").find("\"name\":\"b\"") != std::string::npos);
    CHECK(eval(o, "{.}").find("\"kind\":\"Widget\"") != std::string::npos);
  }

  TEST_CASE("missing keys and bad indices give no result") {
    Json o = parse(kObject);
    CHECK(eval(o, ".spec.nope") == "");
    CHECK(eval(o, ".spec.items[7].name") == "");
    CHECK(eval(o, ".spec.items[-9]") == "");
    CHECK(eval(o, ".spec.color[0]") == "");
    CHECK(eval(o, ".spec.replicas.x") == "");
    CHECK(eval(o, ".spec.items[99999999999999]") == "");
  }

  TEST_CASE("filters") {
    Json o = parse(kObject);
    CHECK(eval(o, R"(.status.conditions[?(@.type=="Ready")].status)") == "\"True\"");
    CHECK(eval(o, R"({.status.conditions[?(@.type=='Ready')].lastTransitionTime})") ==
          "\"2024-05-01T10:05:00Z\"");
    CHECK(eval(o, R"(.status.conditions[?(@.type!="Ready")].type)") == "\"Progressing\"");
    CHECK(eval(o, R"(.spec.items[?(@.n>1)].name)") == "\"b\"|\"c\"");
    CHECK(eval(o, R"(.spec.items[?(@.n<=1)].name)") == "\"a\"");
    CHECK(eval(o, R"(.status.conditions[?(@.lastTransitionTime)].type)") == "\"Ready\"");
    CHECK(eval(o, R"(.status.conditions[?(@.type=="Gone")].status)") == "");
  }

  TEST_CASE("malformed paths") {
    for (const char* bad : {"", "{}", "spec.replicas", "{.spec", ".spec[", ".spec[abc]", ".spec..x",
                            ".spec[?(@.a==)]", ".spec[?(.a==1)]", ".spec['x", ".spec[1:2:3]",
                            ".a b", "{.a}{.b}", ".spec[?(@.a=1)]"}) {
      Json o = parse(kObject);
      auto r = apiserver::evalJsonPath(o, bad);
      CHECK_MESSAGE(!r.isOk(), bad);
      CHECK_MESSAGE(apiserver::validateJsonPath(bad).code() == 422, bad);
    }
    CHECK(apiserver::validateJsonPath(".spec.replicas").isOk());
    CHECK(apiserver::validateJsonPath(R"(.status.conditions[?(@.type=="Ready")].status)").isOk());
  }

  TEST_CASE("random paths never crash") {
    std::mt19937 rng(4242u);
    const std::string alphabet = ".[]()?@=!<>'\"*:-0123456789abc{}$ ";
    Json o = parse(kObject);
    for (int i = 0; i < 3000; ++i) {
      std::string p;
      int n = std::uniform_int_distribution<int>(0, 24)(rng);
      for (int k = 0; k < n; ++k) {
        p += alphabet[std::uniform_int_distribution<size_t>(0, alphabet.size() - 1)(rng)];
      }
      auto r = apiserver::evalJsonPath(o, p);
      CHECK((r.isOk() || r.status().code() == 400));
    }
  }
}

TEST_SUITE("human duration") {
  using apiserver::humanDuration;

  TEST_CASE("boundaries match duration.HumanDuration") {
    CHECK(humanDuration(-2s) == "<invalid>");
    CHECK(humanDuration(-1500ms) == "0s");
    CHECK(humanDuration(-1s) == "0s");
    CHECK(humanDuration(0s) == "0s");
    CHECK(humanDuration(999ms) == "0s");
    CHECK(humanDuration(59s) == "59s");
    CHECK(humanDuration(119s) == "119s");
    CHECK(humanDuration(120s) == "2m");
    CHECK(humanDuration(121s) == "2m1s");
    CHECK(humanDuration(5min) == "5m");
    CHECK(humanDuration(9min + 59s) == "9m59s");
    CHECK(humanDuration(10min) == "10m");
    CHECK(humanDuration(10min + 59s) == "10m");
    CHECK(humanDuration(179min) == "179m");
    CHECK(humanDuration(3h) == "3h");
    CHECK(humanDuration(3h + 2min) == "3h2m");
    CHECK(humanDuration(7h + 59min) == "7h59m");
    CHECK(humanDuration(8h) == "8h");
    CHECK(humanDuration(47h + 59min) == "47h");
    CHECK(humanDuration(48h) == "2d");
    CHECK(humanDuration(51h) == "2d3h");
    CHECK(humanDuration(24h * 7 + 23h) == "7d23h");
    CHECK(humanDuration(24h * 8) == "8d");
    CHECK(humanDuration(24h * 729) == "729d");
    CHECK(humanDuration(24h * 730) == "2y");
    CHECK(humanDuration(24h * (365 * 3 + 45)) == "3y45d");
    CHECK(humanDuration(24h * (365 * 8 - 1)) == "7y364d");
    CHECK(humanDuration(24h * 365 * 8) == "8y");
    CHECK(humanDuration(24h * 365 * 100) == "100y");
  }

  TEST_CASE("translateTimestampSince") {
    kube::TimePoint now = at("2024-05-01T10:05:00Z");
    Json ts = parse(R"(["2024-05-01T10:00:00Z","garbage",5])");
    CHECK(apiserver::translateTimestampSince(&ts[0], now) == "5m");
    CHECK(apiserver::translateTimestampSince(&ts[1], now) == "<unknown>");
    CHECK(apiserver::translateTimestampSince(&ts[2], now) == "<unknown>");
    CHECK(apiserver::translateTimestampSince(nullptr, now) == "<unknown>");
  }
}

TEST_SUITE("printer cells") {
  std::string cell(const JsonValue& obj, const std::string& path, const char* type,
                   kube::TimePoint now = kube::TimePoint{}) {
    auto r = apiserver::evalJsonPath(obj, path);
    REQUIRE(r.isOk());
    Json holder;
    JsonValue c = apiserver::printerCell(r.value(), type, "", now, holder.GetAllocator());
    return kube::toJson(c);
  }

  TEST_CASE("typed cells follow the tableconvertor") {
    Json o = parse(kObject);
    CHECK(cell(o, ".spec.replicas", "integer") == "3");
    CHECK(cell(o, ".spec.ratio", "integer") == "0");
    CHECK(cell(o, ".spec.replicas", "number") == "3.0");
    CHECK(cell(o, ".spec.ratio", "number") == "0.5");
    CHECK(cell(o, ".spec.enabled", "boolean") == "true");
    CHECK(cell(o, ".spec.color", "string") == "\"red\"");
    CHECK(cell(o, ".spec.replicas", "string") == "\"3\"");
    CHECK(cell(o, ".spec.ratio", "string") == "\"0.5\"");
    CHECK(cell(o, ".spec.enabled", "string") == "\"true\"");
    CHECK(cell(o, ".spec.items[0]", "string") == R"("{\"name\":\"a\",\"n\":1}")");
    // Only the first result counts, as upstream.
    CHECK(cell(o, ".spec.items[*].name", "string") == "\"a\"");
    // Wrong type for the column, unknown column types and absent values are null (<none>).
    CHECK(cell(o, ".spec.color", "integer") == "null");
    CHECK(cell(o, ".spec.color", "boolean") == "null");
    CHECK(cell(o, ".spec.replicas", "date") == "null");
    CHECK(cell(o, ".spec.color", "object") == "null");
    CHECK(cell(o, ".spec.missing", "string") == "null");
  }

  TEST_CASE("date cells render ages") {
    Json o = parse(kObject);
    kube::TimePoint now = at("2024-05-01T13:07:00Z");
    CHECK(cell(o, ".metadata.creationTimestamp", "date", now) == "\"3h7m\"");
    CHECK(cell(o, R"(.status.conditions[?(@.type=="Ready")].lastTransitionTime)", "date", now) ==
          "\"3h2m\"");
    CHECK(cell(o, ".spec.color", "date", now) == "\"<invalid>\"");
    Json empty = parse(R"({"t":""})");
    CHECK(cell(empty, ".t", "date", now) == "\"<unknown>\"");
  }
}
