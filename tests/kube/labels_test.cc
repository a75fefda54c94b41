#include "kube/labels.h"

#include <doctest/doctest.h>

namespace kube {
namespace {

Json J(const char* text) {
  auto r = parseJson(text);
  REQUIRE(r.isOk());
  return std::move(*r);
}

Selector sel(const char* s) {
  auto r = Selector::parse(s);
  REQUIRE_MESSAGE(r.isOk(), s, ": ", r.status().toString());
  return *r;
}

TEST_CASE("labels: the full string syntax parses and matches") {
  Selector s = sel("a=b,c==d,e!=f,g in (x,y),h notin (z),i,!j");
  CHECK(s.requirements().size() == 7);
  Json yes = J(R"({"a":"b","c":"d","e":"nope","g":"y","h":"w","i":""})");
  CHECK(s.matches(yes));
  Json noI = J(R"({"a":"b","c":"d","g":"x"})");
  CHECK_FALSE(s.matches(noI));  // i missing
  Json withJ = J(R"({"a":"b","c":"d","g":"x","i":"1","j":"1"})");
  CHECK_FALSE(s.matches(withJ));
  Json badG = J(R"({"a":"b","c":"d","g":"q","i":"1"})");
  CHECK_FALSE(s.matches(badG));
  Json hz = J(R"({"a":"b","c":"d","g":"x","i":"1","h":"z"})");
  CHECK_FALSE(s.matches(hz));
  Json ef = J(R"({"a":"b","c":"d","g":"x","i":"1","e":"f"})");
  CHECK_FALSE(s.matches(ef));
  // NotIn / != match when the label is absent.
  CHECK(sel("x!=1").matches(J("{}")));
  CHECK(sel("x notin (1)").matches(J("{}")));
  CHECK_FALSE(sel("x in (1)").matches(J("{}")));
}

TEST_CASE("labels: whitespace, empty values and canonical form") {
  Selector s = sel("  tier in ( web , db ) ,  app = nginx , !legacy ");
  CHECK(s.toString() == "app=nginx,!legacy,tier in (db,web)");  // sorted by key
  CHECK(sel("").isEverything());
  CHECK(sel("").matches(J("{}")));
  CHECK(sel("a=").matches(J(R"({"a":""})")));
  CHECK_FALSE(sel("a=").matches(J(R"({"a":"x"})")));
  CHECK(sel("example.com/role=master").matches(J(R"({"example.com/role":"master"})")));
  // Round trip through toString.
  Selector again = sel(s.toString().c_str());
  CHECK(again.toString() == s.toString());
}

TEST_CASE("labels: syntax errors are reported") {
  for (const char* bad : {"a in ()", "a in (b", "a in b", "=b", "a=b,", ",a", "a b", "a>5", "a<5",
                          "!a=b", "a==b==c", "a=(b)", "a in (b,)", "-bad=x", "a=b c"}) {
    auto r = Selector::parse(bad);
    CHECK_MESSAGE(!r.isOk(), bad);
    if (!r.isOk()) CHECK(r.status().message().find("label selector") != std::string::npos);
  }
}

TEST_CASE("labels: key and value validation") {
  CHECK(validateLabelKey("app").isOk());
  CHECK(validateLabelKey("app.kubernetes.io/name").isOk());
  CHECK(validateLabelKey("a_b-c.d").isOk());
  CHECK_FALSE(validateLabelKey("").isOk());
  CHECK_FALSE(validateLabelKey("/name").isOk());
  CHECK_FALSE(validateLabelKey("Example.com/name").isOk());  // prefix must be lower case
  CHECK_FALSE(validateLabelKey("example.com/").isOk());
  CHECK_FALSE(validateLabelKey("-app").isOk());
  CHECK_FALSE(validateLabelKey(std::string(64, 'a')).isOk());
  CHECK(validateLabelKey(std::string(63, 'a')).isOk());
  Status st = validateLabelKey(std::string(64, 'a'));
  CHECK(st.code() == 422);
  CHECK(st.message().find("63") != std::string::npos);
  CHECK(validateLabelValue("").isOk());
  CHECK(validateLabelValue("v1.2_3-x").isOk());
  CHECK_FALSE(validateLabelValue("has space").isOk());
  CHECK_FALSE(validateLabelValue("trailing-").isOk());
  CHECK_FALSE(validateLabelValue(std::string(64, 'v')).isOk());
  CHECK(validateLabels(J(R"({"app":"web","example.com/tier":"front"})")).isOk());
  CHECK_FALSE(validateLabels(J(R"({"app":"bad value"})")).isOk());
  CHECK_FALSE(validateLabels(J(R"({"app":1})")).isOk());
}

TEST_CASE("labels: metav1.LabelSelector JSON") {
  Json ls = J(R"({"matchLabels":{"app":"web"},"matchExpressions":[
      {"key":"tier","operator":"In","values":["front","back"]},
      {"key":"env","operator":"NotIn","values":["dev"]},
      {"key":"owner","operator":"Exists"},
      {"key":"legacy","operator":"DoesNotExist"}]})");
  auto s = Selector::fromLabelSelector(&ls);
  REQUIRE(s.isOk());
  CHECK(s->matches(J(R"({"app":"web","tier":"front","owner":"me"})")));
  CHECK_FALSE(s->matches(J(R"({"app":"web","tier":"front","owner":"me","env":"dev"})")));
  CHECK_FALSE(s->matches(J(R"({"app":"web","tier":"front"})")));
  CHECK_FALSE(s->matches(J(R"({"app":"web","tier":"front","owner":"me","legacy":"y"})")));
  CHECK(s->toString() == "app=web,env notin (dev),!legacy,owner,tier in (back,front)");

  auto nothing = Selector::fromLabelSelector(nullptr);
  REQUIRE(nothing.isOk());
  CHECK(nothing->isNothing());
  CHECK_FALSE(nothing->matches(J("{}")));
  Json empty = J("{}");
  auto everything = Selector::fromLabelSelector(&empty);
  REQUIRE(everything.isOk());
  CHECK(everything->matches(J(R"({"x":"y"})")));

  Json obj = J(R"({"metadata":{"labels":{"app":"web","tier":"back","owner":"x"}}})");
  CHECK(s->matchesObject(obj));

  for (const char* bad : {R"({"matchExpressions":[{"key":"a","operator":"In","values":[]}]})",
                          R"({"matchExpressions":[{"key":"a","operator":"Exists","values":["x"]}]})",
                          R"({"matchExpressions":[{"key":"a","operator":"Gt","values":["1"]}]})",
                          R"({"matchLabels":{"bad key":"x"}})", R"({"matchExpressions":"nope"})"}) {
    Json b = J(bad);
    auto r = Selector::fromLabelSelector(&b);
    CHECK_MESSAGE(!r.isOk(), bad);
  }
}

TEST_CASE("labels: field selectors") {
  auto fs = FieldSelector::parse("metadata.name=x,metadata.namespace!=y,spec.nodeName==n1");
  REQUIRE(fs.isOk());
  REQUIRE(fs->requirements().size() == 3);
  CHECK(fs->requirements()[0].field == "metadata.name");
  CHECK(fs->requirements()[0].op == FieldOp::kEquals);
  CHECK(fs->requirements()[0].value == "x");
  CHECK(fs->requirements()[1].op == FieldOp::kNotEquals);
  CHECK(fs->requirements()[2].op == FieldOp::kEquals);
  CHECK(fs->matches(J(R"({"metadata":{"name":"x","namespace":"z"},"spec":{"nodeName":"n1"}})")));
  CHECK_FALSE(fs->matches(J(R"({"metadata":{"name":"x","namespace":"y"},"spec":{"nodeName":"n1"}})")));

  auto esc = FieldSelector::parse(R"(metadata.name=a\,b\=c)");
  REQUIRE(esc.isOk());
  CHECK(esc->requirements()[0].value == "a,b=c");
  CHECK(esc->toString() == R"(metadata.name=a\,b\=c)");
  auto empty = FieldSelector::parse("");
  REQUIRE(empty.isOk());
  CHECK(empty->isEverything());
  auto emptyValue = FieldSelector::parse("spec.nodeName=");
  REQUIRE(emptyValue.isOk());
  CHECK(emptyValue->matches(J("{}")));
  for (const char* bad : {"metadata.name", "=x", "a=b,,c=d", "a=b=c", R"(a=b\x)"}) {
    CHECK_MESSAGE(!FieldSelector::parse(bad).isOk(), bad);
  }
}

}  // namespace
}  // namespace kube

TEST_CASE("RFC 1123 labels and subdomains") {
  CHECK(kube::isDnsLabel("web-1"));
  CHECK(kube::isDnsSubdomain("web-app-0-1.example"));
  for (const char* bad : {"", "-a", "a-", "A", "a.b", "a_b", ".."}) CHECK_MESSAGE(!kube::isDnsLabel(bad), bad);
  for (const char* bad : {"", ".a", "a.", "a..b", "../x", "a/b"}) CHECK_MESSAGE(!kube::isDnsSubdomain(bad), bad);
  CHECK(!kube::isDnsLabel(std::string(64, 'a')));
  CHECK(!kube::isDnsSubdomain(std::string(254, 'a')));
}
