// Patch rules: RFC 6902 appendix A, RFC 7386 appendix A, strategic merge directives, error codes,
// and a fixed-seed mutation loop that must never crash.

#include "apiserver/patch.h"

#include <doctest/doctest.h>

#include <random>
#include <string>
#include <vector>

namespace {

using kube::Json;
using kube::JsonValue;

Json parse(const std::string& text) {
  auto r = kube::parseJson(text);
  REQUIRE_MESSAGE(r.isOk(), text);
  return std::move(r).value();
}

// Semantic equality (member order ignored), with a readable failure.
void checkJsonEq(const JsonValue& actual, const std::string& expected) {
  Json want = parse(expected);
  CHECK_MESSAGE(actual == want, kube::toJson(actual), " != ", expected);
}

std::string jsonPatch(const std::string& doc, const std::string& ops, kube::Status* status) {
  Json d = parse(doc);
  Json o = parse(ops);
  *status = apiserver::applyJsonPatch(d, o);
  return kube::toJson(d);
}

void expectJsonPatch(const std::string& doc, const std::string& ops, const std::string& want) {
  Json d = parse(doc);
  Json o = parse(ops);
  kube::Status s = apiserver::applyJsonPatch(d, o);
  REQUIRE_MESSAGE(s.isOk(), s.toString());
  checkJsonEq(d, want);
}

kube::Status expectJsonPatchFails(const std::string& doc, const std::string& ops, int code) {
  Json d = parse(doc);
  Json before = parse(doc);
  Json o = parse(ops);
  kube::Status s = apiserver::applyJsonPatch(d, o);
  CHECK_MESSAGE(s.code() == code, s.toString());
  CHECK_MESSAGE(d == before, "doc changed by a failed patch: ", kube::toJson(d));
  return s;
}

void expectMergePatch(const std::string& target, const std::string& patch,
                      const std::string& want) {
  Json t = parse(target);
  Json p = parse(patch);
  kube::Status s = apiserver::applyMergePatch(t, p, t.GetAllocator());
  REQUIRE(s.isOk());
  checkJsonEq(t, want);
}

std::string smp(const std::string& target, const std::string& patch, std::string_view kind,
                kube::Status* status = nullptr) {
  Json t = parse(target);
  Json p = parse(patch);
  kube::Status s = apiserver::applyStrategicMergePatch(t, p, t.GetAllocator(), kind);
  if (status) {
    *status = s;
  } else {
    REQUIRE_MESSAGE(s.isOk(), s.toString());
  }
  return kube::toJson(t);
}

}  // namespace

TEST_SUITE("json patch (RFC 6902)") {
  TEST_CASE("appendix A examples") {
    expectJsonPatch(R"({"foo":"bar"})", R"([{"op":"add","path":"/baz","value":"qux"}])",
                    R"({"baz":"qux","foo":"bar"})");  // A.1
    expectJsonPatch(R"({"foo":["bar","baz"]})", R"([{"op":"add","path":"/foo/1","value":"qux"}])",
                    R"({"foo":["bar","qux","baz"]})");  // A.2
    expectJsonPatch(R"({"baz":"qux","foo":"bar"})", R"([{"op":"remove","path":"/baz"}])",
                    R"({"foo":"bar"})");  // A.3
    expectJsonPatch(R"({"foo":["bar","qux","baz"]})", R"([{"op":"remove","path":"/foo/1"}])",
                    R"({"foo":["bar","baz"]})");  // A.4
    expectJsonPatch(R"({"baz":"qux","foo":"bar"})",
                    R"([{"op":"replace","path":"/baz","value":"boo"}])",
                    R"({"baz":"boo","foo":"bar"})");  // A.5
    expectJsonPatch(R"({"foo":{"bar":"baz","waldo":"fred"},"qux":{"corge":"grault"}})",
                    R"([{"op":"move","from":"/foo/waldo","path":"/qux/thud"}])",
                    R"({"foo":{"bar":"baz"},"qux":{"corge":"grault","thud":"fred"}})");  // A.6
    expectJsonPatch(R"({"foo":["all","grass","cows","eat"]})",
                    R"([{"op":"move","from":"/foo/1","path":"/foo/3"}])",
                    R"({"foo":["all","cows","eat","grass"]})");  // A.7
    expectJsonPatch(R"({"baz":"qux","foo":["a",2,"c"]})",
                    R"([{"op":"test","path":"/baz","value":"qux"},
                        {"op":"test","path":"/foo/1","value":2}])",
                    R"({"baz":"qux","foo":["a",2,"c"]})");  // A.8
    (void)expectJsonPatchFails(R"({"baz":"qux"})", R"([{"op":"test","path":"/baz","value":"bar"}])",
                               422);  // A.9
    expectJsonPatch(R"({"foo":"bar"})",
                    R"([{"op":"add","path":"/child","value":{"grandchild":{}}}])",
                    R"({"foo":"bar","child":{"grandchild":{}}})");  // A.10
    expectJsonPatch(R"({"foo":"bar"})", R"([{"op":"add","path":"/baz","value":"qux","xyz":123}])",
                    R"({"foo":"bar","baz":"qux"})");  // A.11
    (void)expectJsonPatchFails(R"({"foo":"bar"})",
                               R"([{"op":"add","path":"/baz/bat","value":"qux"}])",
                               422);  // A.12
    expectJsonPatch(R"({"/":9,"~1":10})", R"([{"op":"test","path":"/~01","value":10}])",
                    R"({"/":9,"~1":10})");  // A.14
    (void)expectJsonPatchFails(R"({"/":9,"~1":10})",
                               R"([{"op":"test","path":"/~01","value":"10"}])",
                               422);  // A.15
    expectJsonPatch(R"({"foo":["bar"]})", R"([{"op":"add","path":"/foo/-","value":["abc","def"]}])",
                    R"({"foo":["bar",["abc","def"]]})");  // A.16
  }

  TEST_CASE("pointer escaping and root paths") {
    expectJsonPatch(R"({"a/b":{"m~n":1}})", R"([{"op":"replace","path":"/a~1b/m~0n","value":2}])",
                    R"({"a/b":{"m~n":2}})");
    expectJsonPatch(R"({"a":1})", R"([{"op":"replace","path":"","value":[1,2]}])", R"([1,2])");
    expectJsonPatch(R"({"a":1})", R"([{"op":"add","path":"","value":{"b":2}}])", R"({"b":2})");
    expectJsonPatch(R"({"a":{"b":1}})", R"([{"op":"copy","from":"/a","path":"/c"}])",
                    R"({"a":{"b":1},"c":{"b":1}})");
    expectJsonPatch(R"({"a":[1,2,3]})", R"([{"op":"add","path":"/a/3","value":4}])",
                    R"({"a":[1,2,3,4]})");
    expectJsonPatch(R"({"":{"":5}})", R"([{"op":"test","path":"//","value":5}])", R"({"":{"":5}})");
    expectJsonPatch(R"({"a":1})", R"([{"op":"move","from":"/a","path":"/a"}])", R"({"a":1})");
  }

  TEST_CASE("remove keeps member order") {
    kube::Status s;
    std::string out =
        jsonPatch(R"({"a":1,"b":2,"c":3,"d":4})", R"([{"op":"remove","path":"/b"}])", &s);
    REQUIRE(s.isOk());
    CHECK(out == R"({"a":1,"c":3,"d":4})");
  }

  TEST_CASE("operations that do not apply are 422 with the apiserver's wording") {
    kube::Status s = expectJsonPatchFails(
        R"({"metadata":{"name":"x"}})", R"([{"op":"remove","path":"/metadata/finalizers"}])", 422);
    CHECK(s.reason() == "Invalid");
    CHECK(s.message() ==
          "jsonpatch remove operation does not apply: doc is missing path: /metadata/finalizers");
    s = expectJsonPatchFails(R"({"a":1})", R"([{"op":"replace","path":"/b","value":1}])", 422);
    CHECK(s.message() == "jsonpatch replace operation does not apply: doc is missing path: /b");
    s = expectJsonPatchFails(R"({"a":1})", R"([{"op":"test","path":"/a","value":2}])", 422);
    CHECK(s.message() == "testing value /a failed: test failed");
    s = expectJsonPatchFails(R"({"a":1})", R"([{"op":"move","from":"/x","path":"/y"}])", 422);
    CHECK(s.message() == "jsonpatch move operation does not apply: doc is missing from path: /x");
    (void)expectJsonPatchFails(R"({"a":{"b":1}})", R"([{"op":"move","from":"/a","path":"/a/b/c"}])",
                               422);
    (void)expectJsonPatchFails(R"({"a":[1]})", R"([{"op":"add","path":"/a/2","value":1}])", 422);
    (void)expectJsonPatchFails(R"({"a":[1]})", R"([{"op":"add","path":"/a/01","value":1}])", 422);
    (void)expectJsonPatchFails(R"({"a":[1]})", R"([{"op":"remove","path":"/a/-"}])", 422);
    (void)expectJsonPatchFails(R"({"a":[1]})",
                               R"([{"op":"remove","path":"/a/99999999999999999999999"}])", 422);
    (void)expectJsonPatchFails(R"({"a":[1]})", R"([{"op":"add","path":"/a/-1","value":0}])", 422);
    (void)expectJsonPatchFails(R"({"a":"s"})", R"([{"op":"add","path":"/a/b","value":0}])", 422);
    (void)expectJsonPatchFails(R"({"a":1})", R"([{"op":"copy","from":"/nope","path":"/b"}])", 422);
  }

  TEST_CASE("malformed patches are 400") {
    kube::Status s = expectJsonPatchFails(R"({})", R"({"op":"add"})", 400);
    CHECK(s.reason() == "BadRequest");
    (void)expectJsonPatchFails(R"({})", R"([1])", 400);
    (void)expectJsonPatchFails(R"({})", R"([{"path":"/a","value":1}])", 400);
    (void)expectJsonPatchFails(R"({})", R"([{"op":"add","value":1}])", 400);
    (void)expectJsonPatchFails(R"({})", R"([{"op":"add","path":"/a"}])", 400);
    (void)expectJsonPatchFails(R"({})", R"([{"op":"add","path":7,"value":1}])", 400);
    (void)expectJsonPatchFails(R"({})", R"([{"op":"frobnicate","path":"/a"}])", 400);
    (void)expectJsonPatchFails(R"({})", R"([{"op":"add","path":"a","value":1}])", 400);
    (void)expectJsonPatchFails(R"({})", R"([{"op":"add","path":"/a~2","value":1}])", 400);
    (void)expectJsonPatchFails(R"({})", R"([{"op":"add","path":"/a~","value":1}])", 400);
    (void)expectJsonPatchFails(R"({"a":1})", R"([{"op":"move","path":"/b"}])", 400);
    s = expectJsonPatchFails(R"({})", R"([{"op":"frobnicate","path":"/a"}])", 400);
    CHECK(s.message() == "invalid json patch operation 0: unsupported operation \"frobnicate\"");
  }

  TEST_CASE("a failing operation leaves the document unchanged") {
    (void)expectJsonPatchFails(R"({"a":1,"b":[1,2]})",
                               R"([{"op":"add","path":"/c","value":3},{"op":"remove","path":"/b/0"},
                             {"op":"remove","path":"/zzz"}])",
                               422);
  }
}

TEST_SUITE("merge patch (RFC 7386)") {
  TEST_CASE("appendix A examples") {
    expectMergePatch(R"({"a":"b"})", R"({"a":"c"})", R"({"a":"c"})");
    expectMergePatch(R"({"a":"b"})", R"({"b":"c"})", R"({"a":"b","b":"c"})");
    expectMergePatch(R"({"a":"b"})", R"({"a":null})", R"({})");
    expectMergePatch(R"({"a":"b","b":"c"})", R"({"a":null})", R"({"b":"c"})");
    expectMergePatch(R"({"a":["b"]})", R"({"a":"c"})", R"({"a":"c"})");
    expectMergePatch(R"({"a":"c"})", R"({"a":["b"]})", R"({"a":["b"]})");
    expectMergePatch(R"({"a":{"b":"c"}})", R"({"a":{"b":"d","c":null}})", R"({"a":{"b":"d"}})");
    expectMergePatch(R"({"a":[{"b":"c"}]})", R"({"a":[1]})", R"({"a":[1]})");
    expectMergePatch(R"(["a","b"])", R"(["c","d"])", R"(["c","d"])");
    expectMergePatch(R"({"a":"b"})", R"(["c"])", R"(["c"])");
    expectMergePatch(R"({"a":"foo"})", R"(null)", R"(null)");
    expectMergePatch(R"({"a":"foo"})", R"("bar")", R"("bar")");
    expectMergePatch(R"({"e":null})", R"({"a":1})", R"({"e":null,"a":1})");
    expectMergePatch(R"([1,2])", R"({"a":"b","c":null})", R"({"a":"b"})");
    expectMergePatch(R"({})", R"({"a":{"bb":{"ccc":null}}})", R"({"a":{"bb":{}}})");
  }

  TEST_CASE("kubectl label patch keeps other labels") {
    expectMergePatch(R"({"metadata":{"name":"w1","labels":{"a":"1","b":"2"}},"spec":{"x":1}})",
                     R"({"metadata":{"labels":{"b":null,"c":"3"}}})",
                     R"({"metadata":{"name":"w1","labels":{"a":"1","c":"3"}},"spec":{"x":1}})");
  }
}

TEST_SUITE("strategic merge patch") {
  TEST_CASE("kubectl client-side apply of a ConfigMap") {
    std::string out = smp(
        R"({"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"demo","annotations":{"x":"y"}},"data":{"a":"1","c":"3"}})",
        R"({"data":{"b":"2","a":null},"metadata":{"annotations":{"kubectl.kubernetes.io/last-applied-configuration":"{\"data\":{\"b\":\"2\"}}\n"}}})",
        "ConfigMap");
    Json got = parse(out);
    checkJsonEq(
        got,
        R"({"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"demo","annotations":{"x":"y","kubectl.kubernetes.io/last-applied-configuration":"{\"data\":{\"b\":\"2\"}}\n"}},"data":{"c":"3","b":"2"}})");
  }

  TEST_CASE("finalizers merge as a set; lists without a rule are replaced") {
    CHECK(smp(R"({"metadata":{"finalizers":["a","b"]}})",
              R"({"metadata":{"finalizers":["b","c"]}})",
              "ConfigMap") == R"({"metadata":{"finalizers":["a","b","c"]}})");
    CHECK(smp(R"({"spec":{"finalizers":["a","b"]}})", R"({"spec":{"finalizers":["c"]}})",
              "Namespace") == R"({"spec":{"finalizers":["c"]}})");
    CHECK(smp(R"({"endpoints":[{"addresses":["1"]},{"addresses":["2"]}],"ports":[{"port":1}]})",
              R"({"endpoints":[{"addresses":["3"]}]})",
              "EndpointSlice") == R"({"endpoints":[{"addresses":["3"]}],"ports":[{"port":1}]})");
  }

  TEST_CASE("maps in lists merge by their merge key") {
    CHECK(
        smp(R"({"metadata":{"ownerReferences":[{"uid":"1","name":"a"},{"uid":"2","name":"b"}]}})",
            R"({"metadata":{"ownerReferences":[{"uid":"2","name":"B","controller":true}]}})",
            "ConfigMap") ==
        R"({"metadata":{"ownerReferences":[{"uid":"1","name":"a"},{"uid":"2","name":"B","controller":true}]}})");
    CHECK(
        smp(R"({"spec":{"ports":[{"port":80,"name":"http"}]}})",
            R"({"spec":{"ports":[{"port":443,"name":"https"},{"port":80,"targetPort":8080}]}})",
            "Service") ==
        R"({"spec":{"ports":[{"port":443,"name":"https"},{"port":80,"name":"http","targetPort":8080}]}})");
    // A null inside a merged element deletes that field.
    CHECK(smp(R"({"spec":{"ports":[{"port":80,"name":"http","nodePort":30000}]}})",
              R"({"spec":{"ports":[{"port":80,"nodePort":null}]}})",
              "Service") == R"({"spec":{"ports":[{"port":80,"name":"http"}]}})");
  }

  TEST_CASE("$patch directives") {
    // delete one element by merge key
    CHECK(smp(R"({"metadata":{"ownerReferences":[{"uid":"1"},{"uid":"2"}]}})",
              R"({"metadata":{"ownerReferences":[{"uid":"1","$patch":"delete"}]}})",
              "Secret") == R"({"metadata":{"ownerReferences":[{"uid":"2"}]}})");
    // replace the whole list
    CHECK(smp(R"({"metadata":{"ownerReferences":[{"uid":"1"},{"uid":"2"}]}})",
              R"({"metadata":{"ownerReferences":[{"$patch":"replace"},{"uid":"3"}]}})",
              "Secret") == R"({"metadata":{"ownerReferences":[{"uid":"3"}]}})");
    // replace a map
    CHECK(smp(R"({"data":{"a":"1","b":"2"}})", R"({"data":{"$patch":"replace","x":"9"}})",
              "ConfigMap") == R"({"data":{"x":"9"}})");
    // delete a map's contents
    CHECK(smp(R"({"data":{"a":"1"},"kind":"ConfigMap"})", R"({"data":{"$patch":"delete"}})",
              "ConfigMap") == R"({"data":{},"kind":"ConfigMap"})");
    // explicit merge of a map is the default
    CHECK(smp(R"({"data":{"a":"1"}})", R"({"data":{"$patch":"merge","b":"2"}})", "ConfigMap") ==
          R"({"data":{"a":"1","b":"2"}})");
    // replace at the root
    CHECK(smp(R"({"a":1,"b":2})", R"({"$patch":"replace","c":3})", "ConfigMap") == R"({"c":3})");
  }

  TEST_CASE("$retainKeys drops fields not listed") {
    CHECK(smp(R"({"spec":{"type":"NodePort","ports":[{"port":1}],"externalName":"x"}})",
              R"({"spec":{"$retainKeys":["type","ports"],"type":"ClusterIP"}})",
              "Service") == R"({"spec":{"type":"ClusterIP","ports":[{"port":1}]}})");
  }

  TEST_CASE("$setElementOrder orders merged lists") {
    CHECK(smp(R"({"metadata":{"finalizers":["a","b","c"]}})",
              R"({"metadata":{"$setElementOrder/finalizers":["c","a","b"]}})",
              "ConfigMap") == R"({"metadata":{"finalizers":["c","a","b"]}})");
    CHECK(
        smp(R"({"spec":{"ports":[{"port":80,"name":"http"},{"port":443,"name":"https"}]}})",
            R"({"spec":{"$setElementOrder/ports":[{"port":443},{"port":80}],"ports":[{"port":443,"name":"tls"}]}})",
            "Service") ==
        R"({"spec":{"ports":[{"port":443,"name":"tls"},{"port":80,"name":"http"}]}})");
    // Server-only elements keep their place relative to the live order (k8s mergeSortedSlice:
    // "s" preceded "b" on the server, so it still precedes it).
    CHECK(smp(R"({"metadata":{"finalizers":["a","s","b"]}})",
              R"({"metadata":{"$setElementOrder/finalizers":["b","a"]}})",
              "ConfigMap") == R"({"metadata":{"finalizers":["s","b","a"]}})");
    // A list the object does not have yet.
    CHECK(smp(R"({"metadata":{}})",
              R"({"metadata":{"$setElementOrder/finalizers":["x","y"],"finalizers":["y","x"]}})",
              "ConfigMap") == R"({"metadata":{"finalizers":["x","y"]}})");
  }

  TEST_CASE("$deleteFromPrimitiveList removes values") {
    CHECK(smp(R"({"metadata":{"finalizers":["a","b","c"]}})",
              R"({"metadata":{"$deleteFromPrimitiveList/finalizers":["b","zzz"]}})",
              "ConfigMap") == R"({"metadata":{"finalizers":["a","c"]}})");
    CHECK(smp(R"({"metadata":{}})", R"({"metadata":{"$deleteFromPrimitiveList/finalizers":["b"]}})",
              "ConfigMap") == R"({"metadata":{}})");
  }

  TEST_CASE("directives never leak into stored objects") {
    CHECK(smp(R"({})", R"({"data":{"$patch":"replace","a":"1","b":null}})", "ConfigMap") ==
          R"({"data":{"a":"1"}})");
    CHECK(smp(R"({"metadata":{}})",
              R"({"metadata":{"ownerReferences":[{"$patch":"replace"},{"uid":"1","x":null}]}})",
              "ConfigMap") == R"({"metadata":{"ownerReferences":[{"uid":"1"}]}})");
  }

  TEST_CASE("errors are 400 and leave the target unchanged") {
    const std::string orig = R"({"metadata":{"ownerReferences":[{"uid":"1"}]}})";
    kube::Status s;
    CHECK(smp(orig, R"({"metadata":{"ownerReferences":[{"name":"no-uid"}]}})", "ConfigMap", &s) ==
          orig);
    CHECK(s.code() == 400);
    CHECK(s.message() == "map: {\"name\":\"no-uid\"} does not contain declared merge key: uid");
    CHECK(smp(orig, R"({"metadata":{"$patch":"bogus"}})", "ConfigMap", &s) == orig);
    CHECK(s.code() == 400);
    CHECK(smp(orig, R"({"metadata":{"ownerReferences":[{"uid":"1","$patch":"merge"}]}})",
              "ConfigMap", &s) == orig);
    CHECK(s.code() == 400);
    CHECK(smp(orig, R"({"metadata":{"ownerReferences":["x"]}})", "ConfigMap", &s) == orig);
    CHECK(s.code() == 400);
    CHECK(smp(orig, R"([1])", "ConfigMap", &s) == orig);
    CHECK(s.code() == 400);
    CHECK(smp(orig, R"({"metadata":{"$retainKeys":"x"}})", "ConfigMap", &s) == orig);
    CHECK(s.code() == 400);
  }

  TEST_CASE("table-driven kinds") {
    CHECK(apiserver::supportsStrategicMerge("ConfigMap"));
    CHECK(apiserver::supportsStrategicMerge("CustomResourceDefinition"));
    CHECK_FALSE(apiserver::supportsStrategicMerge("Widget"));
    REQUIRE(apiserver::findListMergeRule("Service", "spec.ports") != nullptr);
    CHECK(apiserver::findListMergeRule("Service", "spec.ports")->mergeKey == "port");
    CHECK(apiserver::findListMergeRule("Widget", "metadata.ownerReferences") != nullptr);
    CHECK(apiserver::findListMergeRule("EndpointSlice", "endpoints") == nullptr);
  }
}

TEST_SUITE("patch robustness") {
  // Builds {"a":{"a":...}} `depth` levels deep without recursion.
  JsonValue nested(int depth, kube::JsonAlloc& a) {
    JsonValue v(1);
    for (int i = 0; i < depth; ++i) {
      JsonValue outer(rapidjson::kObjectType);
      outer.AddMember("a", std::move(v), a);
      v = std::move(outer);
    }
    return v;
  }

  TEST_CASE("hostile nesting is refused, not recursed into") {
    Json doc = parse(R"({"a":1})");
    JsonValue deep = nested(100000, doc.GetAllocator());
    CHECK(apiserver::applyMergePatch(doc, deep, doc.GetAllocator()).code() == 400);
    CHECK(apiserver::applyStrategicMergePatch(doc, deep, doc.GetAllocator(), "ConfigMap").code() ==
          400);
    Json ops(rapidjson::kArrayType);
    JsonValue op(rapidjson::kObjectType);
    op.AddMember("op", "add", ops.GetAllocator());
    op.AddMember("path", "/x", ops.GetAllocator());
    op.AddMember("value", nested(100000, ops.GetAllocator()), ops.GetAllocator());
    ops.PushBack(std::move(op), ops.GetAllocator());
    CHECK(apiserver::applyJsonPatch(doc, ops).code() == 400);
    checkJsonEq(doc, R"({"a":1})");
    // Within the limit everything works.
    JsonValue ok = nested(200, doc.GetAllocator());
    CHECK(apiserver::applyMergePatch(doc, ok, doc.GetAllocator()).isOk());
  }

  // Random JSON values from a small alphabet so that patches often hit existing paths.
  class Gen {
   public:
    explicit Gen(uint32_t seed) : rng_(seed) {}
    int pick(int n) { return std::uniform_int_distribution<int>(0, n - 1)(rng_); }

    JsonValue value(kube::JsonAlloc& a, int depth) {
      static const char* kKeys[] = {"a",
                                    "b",
                                    "uid",
                                    "port",
                                    "name",
                                    "finalizers",
                                    "metadata",
                                    "$patch",
                                    "$retainKeys",
                                    "$setElementOrder/a",
                                    "$deleteFromPrimitiveList/finalizers",
                                    "ports",
                                    "spec"};
      static const char* kStrings[] = {"replace", "delete", "merge", "x", "1", "", "a"};
      int kind = depth <= 0 ? pick(5) : pick(8);
      switch (kind) {
        case 0:
          return JsonValue();
        case 1:
          return JsonValue(pick(4) - 1);
        case 2:
          return JsonValue(pick(2) == 0);
        case 3:
          return kube::str(kStrings[pick(7)], a);
        case 4:
          return JsonValue(static_cast<double>(pick(100)) / 7.0);
        case 5:
        case 6: {
          JsonValue o(rapidjson::kObjectType);
          int n = pick(4);
          for (int i = 0; i < n; ++i) {
            o.AddMember(kube::str(kKeys[pick(13)], a), value(a, depth - 1), a);
          }
          return o;
        }
        default: {
          JsonValue arr(rapidjson::kArrayType);
          int n = pick(4);
          for (int i = 0; i < n; ++i) arr.PushBack(value(a, depth - 1), a);
          return arr;
        }
      }
    }

    std::string pointer() {
      static const char* kTokens[] = {"a", "b",   "0",           "1",  "-",        "~0", "~1",
                                      "",  "uid", "99999999999", "01", "metadata", "~",  "-1"};
      std::string p;
      int n = pick(4);
      for (int i = 0; i < n; ++i) p += std::string("/") + kTokens[pick(14)];
      if (pick(20) == 0) p = "bad";
      return p;
    }

    JsonValue op(kube::JsonAlloc& a) {
      static const char* kOps[] = {"add", "remove", "replace", "move", "copy", "test", "nope"};
      JsonValue o(rapidjson::kObjectType);
      if (pick(15) != 0) o.AddMember("op", kube::str(kOps[pick(7)], a), a);
      if (pick(15) != 0) o.AddMember("path", kube::str(pointer(), a), a);
      if (pick(2) == 0) o.AddMember("from", kube::str(pointer(), a), a);
      if (pick(4) != 0) o.AddMember("value", value(a, 2), a);
      if (pick(30) == 0) return value(a, 1);  // not even an object
      return o;
    }

   private:
    std::mt19937 rng_;
  };

  TEST_CASE("mutation loop: thousands of random patches never crash") {
    Gen gen(20240611u);
    static const char* kKinds[] = {"ConfigMap", "Service", "EndpointSlice", "Widget"};
    int ok = 0;
    for (int iter = 0; iter < 3000; ++iter) {
      Json doc;
      static_cast<JsonValue&>(doc) = gen.value(doc.GetAllocator(), 4);

      Json ops(rapidjson::kArrayType);
      int n = gen.pick(4);
      for (int i = 0; i < n; ++i) ops.PushBack(gen.op(ops.GetAllocator()), ops.GetAllocator());
      kube::Status s = apiserver::applyJsonPatch(doc, ops);
      CHECK((s.isOk() || s.code() == 400 || s.code() == 422));
      ok += s.isOk();

      Json patch;
      static_cast<JsonValue&>(patch) = gen.value(patch.GetAllocator(), 4);
      CHECK(apiserver::applyMergePatch(doc, patch, doc.GetAllocator()).isOk());

      Json smpPatch;
      static_cast<JsonValue&>(smpPatch) = gen.value(smpPatch.GetAllocator(), 4);
      s = apiserver::applyStrategicMergePatch(doc, smpPatch, doc.GetAllocator(),
                                              kKinds[gen.pick(4)]);
      CHECK((s.isOk() || s.code() == 400));
      // The result is always serializable JSON.
      CHECK(kube::parseJson(kube::toJson(doc)).isOk());
    }
    CHECK(ok > 0);
  }
}
