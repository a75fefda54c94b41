// Structural schema rules: exact k8s error strings per keyword, pruning, defaulting, schema
// definition checks, and a fixed-seed mutation loop.

#include "apiserver/schema.h"

#include <doctest/doctest.h>

#include <functional>
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

struct Result {
  std::vector<std::string> errors;
  std::vector<std::string> unknown;
  std::string object;
};

Result run(const std::string& schema, const std::string& object) {
  Json s = parse(schema);
  Json o = parse(object);
  apiserver::SchemaOutcome out = apiserver::applySchema(o, s, o.GetAllocator());
  Result r;
  for (const auto& e : out.errors) r.errors.push_back(e.toString());
  r.unknown = out.unknownFields;
  r.object = kube::toJson(o);
  return r;
}

// Wraps a property schema as spec.<field> of a root object schema.
std::string specSchema(const std::string& field, const std::string& fieldSchema,
                       const std::string& extra = "") {
  return R"({"type":"object","properties":{"spec":{"type":"object")" + extra +
         R"(,"properties":{")" + field + R"(":)" + fieldSchema + "}}}}";
}

void expectOneError(const std::string& schema, const std::string& object, const std::string& want) {
  Result r = run(schema, object);
  REQUIRE_MESSAGE(r.errors.size() == 1, "errors: ", r.errors.size(),
                  (r.errors.empty() ? std::string() : " first: " + r.errors[0]));
  CHECK(r.errors[0] == want);
}

void expectValid(const std::string& schema, const std::string& object) {
  Result r = run(schema, object);
  CHECK_MESSAGE(r.errors.empty(), (r.errors.empty() ? std::string() : r.errors[0]));
}

}  // namespace

TEST_SUITE("schema validation messages") {
  TEST_CASE("FieldError renders like field.Error") {
    CHECK(apiserver::FieldError{"spec.name", "Required value", "", ""}.toString() ==
          "spec.name: Required value");
    CHECK(apiserver::FieldError{"spec.name", "Too long", "\"abcd\"", "may not be longer than 3"}
              .toString() == "spec.name: Too long: may not be longer than 3");
    CHECK(apiserver::FieldError{"spec.x", "Forbidden", "", "nope"}.toString() ==
          "spec.x: Forbidden: nope");
    CHECK(apiserver::FieldError{"spec.x", "Invalid value", "1", "bad"}.toString() ==
          "spec.x: Invalid value: 1: bad");
    CHECK(apiserver::joinFieldErrors(
              {{"a", "Required value", "", ""}, {"b", "Required value", "", ""}}) ==
          "[a: Required value, b: Required value]");
  }

  TEST_CASE("numbers and strings print as Go prints them") {
    CHECK(apiserver::formatGoFloat(0) == "0");
    CHECK(apiserver::formatGoFloat(0.5) == "0.5");
    CHECK(apiserver::formatGoFloat(-2.25) == "-2.25");
    CHECK(apiserver::formatGoFloat(100000) == "100000");
    CHECK(apiserver::formatGoFloat(1e6) == "1e+06");
    CHECK(apiserver::formatGoFloat(1234567) == "1.234567e+06");
    CHECK(apiserver::formatGoFloat(0.0001) == "0.0001");
    CHECK(apiserver::formatGoFloat(0.00001) == "1e-05");
    CHECK(apiserver::formatGoFloat(0.1) == "0.1");
    CHECK(apiserver::goQuote("a\"b\\c\n\x01") == "\"a\\\"b\\\\c\\n\\x01\"");
    CHECK(apiserver::goQuote("h\xc3\xa9") == "\"h\xc3\xa9\"");
    CHECK(apiserver::goQuote("\xff") == "\"\\xff\"");
  }

  TEST_CASE("minimum and maximum") {
    expectOneError(specSchema("count", R"({"type":"integer","minimum":0})"),
                   R"({"spec":{"count":-1}})",
                   "spec.count: Invalid value: -1: spec.count in body should be greater than or "
                   "equal to 0");
    expectOneError(specSchema("count", R"({"type":"integer","minimum":0,"exclusiveMinimum":true})"),
                   R"({"spec":{"count":0}})",
                   "spec.count: Invalid value: 0: spec.count in body should be greater than 0");
    expectOneError(specSchema("count", R"({"type":"integer","maximum":10})"),
                   R"({"spec":{"count":11}})",
                   "spec.count: Invalid value: 11: spec.count in body should be less than or "
                   "equal to 10");
    expectOneError(
        specSchema("count", R"({"type":"integer","maximum":10,"exclusiveMaximum":true})"),
        R"({"spec":{"count":10}})",
        "spec.count: Invalid value: 10: spec.count in body should be less than 10");
    expectOneError(specSchema("ratio", R"({"type":"number","minimum":0.5})"),
                   R"({"spec":{"ratio":0.25}})",
                   "spec.ratio: Invalid value: 0.25: spec.ratio in body should be greater than or "
                   "equal to 0.5");
    expectValid(specSchema("count", R"({"type":"integer","minimum":0,"maximum":10})"),
                R"({"spec":{"count":10}})");
    expectOneError(specSchema("n", R"({"type":"integer","multipleOf":5})"), R"({"spec":{"n":7}})",
                   "spec.n: Invalid value: 7: spec.n in body should be a multiple of 5");
  }

  TEST_CASE("type") {
    expectOneError(specSchema("count", R"({"type":"integer"})"), R"({"spec":{"count":"abc"}})",
                   "spec.count: Invalid value: \"string\": spec.count in body must be of type "
                   "integer: \"string\"");
    expectOneError(specSchema("count", R"({"type":"integer"})"), R"({"spec":{"count":1.5}})",
                   "spec.count: Invalid value: \"number\": spec.count in body must be of type "
                   "integer: \"number\"");
    expectValid(specSchema("ratio", R"({"type":"number"})"), R"({"spec":{"ratio":3}})");
    expectValid(specSchema("ratio", R"({"type":"number"})"), R"({"spec":{"ratio":3.5}})");
    expectOneError(specSchema("on", R"({"type":"boolean"})"), R"({"spec":{"on":"yes"}})",
                   "spec.on: Invalid value: \"string\": spec.on in body must be of type boolean: "
                   "\"string\"");
    expectOneError(specSchema("tags", R"({"type":"array","items":{"type":"string"}})"),
                   R"({"spec":{"tags":{}}})",
                   "spec.tags: Invalid value: \"object\": spec.tags in body must be of type "
                   "array: \"object\"");
    expectOneError(R"({"type":"object","properties":{"spec":{"type":"object"}}})",
                   R"({"spec":[1]})",
                   "spec: Invalid value: \"array\": spec in body must be of type object: "
                   "\"array\"");
  }

  TEST_CASE("nullable and nulls") {
    // A null in a non-nullable field is pruned before validation, as in k8s >= 1.20.
    Result r = run(specSchema("name", R"({"type":"string"})", R"(,"required":["name"])"),
                   R"({"spec":{"name":null}})");
    REQUIRE(r.errors.size() == 1);
    CHECK(r.errors[0] == "spec.name: Required value");
    expectValid(specSchema("name", R"({"type":"string","nullable":true})"),
                R"({"spec":{"name":null}})");
    CHECK(
        run(specSchema("name", R"({"type":"string","nullable":true})"), R"({"spec":{"name":null}})")
            .object == R"({"spec":{"name":null}})");
    expectOneError(specSchema("items", R"({"type":"array","items":{"type":"string"}})"),
                   R"({"spec":{"items":[null]}})",
                   "spec.items[0]: Invalid value: \"null\": spec.items[0] in body must be of type "
                   "string: \"null\"");
  }

  TEST_CASE("int-or-string") {
    std::string s = specSchema("port", R"({"x-kubernetes-int-or-string":true})");
    expectValid(s, R"({"spec":{"port":80}})");
    expectValid(s, R"({"spec":{"port":"http"}})");
    expectOneError(s, R"({"spec":{"port":true}})",
                   "spec.port: Invalid value: \"boolean\": spec.port in body must be of type "
                   "integer,string: \"boolean\"");
  }

  TEST_CASE("enum and required") {
    expectOneError(
        specSchema("type", R"({"type":"string","enum":["service","batch"]})"),
        R"({"spec":{"type":"foo"}})",
        "spec.type: Unsupported value: \"foo\": supported values: \"service\", \"batch\"");
    expectOneError(specSchema("n", R"({"type":"integer","enum":[1,2]})"), R"({"spec":{"n":3}})",
                   "spec.n: Unsupported value: 3: supported values: \"1\", \"2\"");
    expectValid(specSchema("type", R"({"type":"string","enum":["service","batch"]})"),
                R"({"spec":{"type":"batch"}})");
    expectOneError(specSchema("name", R"({"type":"string"})", R"(,"required":["name"])"),
                   R"({"spec":{}})", "spec.name: Required value");
    expectOneError(
        R"({"type":"object","required":["spec"],"properties":{"spec":{"type":"object"}}})",
        R"({"kind":"Widget"})", "spec: Required value");
  }

  TEST_CASE("strings") {
    expectOneError(specSchema("name", R"({"type":"string","pattern":"^[a-z]+$"})"),
                   R"({"spec":{"name":"ABC"}})",
                   "spec.name: Invalid value: \"ABC\": spec.name in body should match '^[a-z]+$'");
    expectValid(specSchema("name", R"({"type":"string","pattern":"^[a-z]+$"})"),
                R"({"spec":{"name":"abc"}})");
    expectOneError(specSchema("name", R"({"type":"string","maxLength":3})"),
                   R"({"spec":{"name":"abcd"}})", "spec.name: Too long: may not be longer than 3");
    // Lengths count unicode characters, not bytes.
    expectValid(specSchema("name", R"({"type":"string","maxLength":5})"),
                R"({"spec":{"name":"h\u00e9llo"}})");
    expectOneError(specSchema("name", R"({"type":"string","minLength":2})"),
                   R"({"spec":{"name":"a"}})",
                   "spec.name: Invalid value: \"a\": spec.name in body should be at least 2 chars "
                   "long");
    // A pattern that does not compile is the definition's problem, not the object's.
    expectValid(specSchema("name", R"({"type":"string","pattern":"("})"),
                R"({"spec":{"name":"a"}})");
    Result r = run(specSchema("name", R"({"type":"string","pattern":"^a*$"})"),
                   R"({"spec":{"name":")" + std::string(5000, 'a') + R"("}})");
    CHECK(r.errors.size() == 1);
    // Long-but-allowed inputs match without exhausting the stack (std::regex recurses per char).
    expectValid(specSchema("name", R"({"type":"string","pattern":"^(a|b)*$"})"),
                R"({"spec":{"name":")" + std::string(apiserver::kMaxPatternInput, 'a') + R"("}})");
  }

  TEST_CASE("formats") {
    expectOneError(specSchema("at", R"({"type":"string","format":"date-time"})"),
                   R"({"spec":{"at":"yesterday"}})",
                   "spec.at: Invalid value: \"yesterday\": spec.at in body must be of type "
                   "date-time: \"yesterday\"");
    expectValid(specSchema("at", R"({"type":"string","format":"date-time"})"),
                R"({"spec":{"at":"2024-01-02T03:04:05Z"}})");
    expectOneError(specSchema("b", R"({"type":"string","format":"byte"})"),
                   R"({"spec":{"b":"abc"}})",
                   "spec.b: Invalid value: \"abc\": spec.b in body must be of type byte: \"abc\"");
    expectValid(specSchema("b", R"({"type":"string","format":"byte"})"),
                R"({"spec":{"b":"YWJj"}})");
    expectValid(specSchema("d", R"({"type":"string","format":"date"})"),
                R"({"spec":{"d":"2024-02-29"}})");
    expectOneError(specSchema("n", R"({"type":"integer","format":"int32"})"),
                   R"({"spec":{"n":3000000000}})",
                   "spec.n: Invalid value: 3000000000: spec.n in body must be of type int32: "
                   "\"3000000000\"");
    expectValid(specSchema("n", R"({"type":"integer","format":"int32"})"),
                R"({"spec":{"n":-2147483648}})");
    expectValid(specSchema("s", R"({"type":"string","format":"something-else"})"),
                R"({"spec":{"s":"anything"}})");
  }

  TEST_CASE("arrays") {
    expectOneError(
        specSchema("items", R"({"type":"array","maxItems":2,"items":{"type":"integer"}})"),
        R"({"spec":{"items":[1,2,3]}})", "spec.items: Too many: 3: must have at most 2 items");
    expectOneError(
        specSchema("items", R"({"type":"array","minItems":1,"items":{"type":"integer"}})"),
        R"({"spec":{"items":[]}})",
        "spec.items: Invalid value: 0: spec.items in body should have at least 1 items");
    expectOneError(
        specSchema("items", R"({"type":"array","uniqueItems":true,"items":{"type":"integer"}})"),
        R"({"spec":{"items":[1,2,1]}})",
        "spec.items: Invalid value: \"\": spec.items in body shouldn't contain "
        "duplicates");
    expectOneError(
        specSchema("tags",
                   R"({"type":"array","x-kubernetes-list-type":"set","items":{"type":"string"}})"),
        R"({"spec":{"tags":["a","b","a"]}})", "spec.tags[2]: Duplicate value: \"a\"");
    expectOneError(
        specSchema(
            "groups",
            R"({"type":"array","x-kubernetes-list-type":"map","x-kubernetes-list-map-keys":["name"],"items":{"type":"object","properties":{"name":{"type":"string"}}}})"),
        R"({"spec":{"groups":[{"name":"a"},{"name":"b"},{"name":"a"}]}})",
        "spec.groups[2]: Duplicate value: map[string]interface {}{\"name\":\"a\"}");
    expectOneError(
        specSchema(
            "groups",
            R"({"type":"array","items":{"type":"object","properties":{"count":{"type":"integer","minimum":0}}}})"),
        R"({"spec":{"groups":[{"count":1},{"count":-1}]}})",
        "spec.groups[1].count: Invalid value: -1: spec.groups[1].count in body should be greater "
        "than or equal to 0");
  }

  TEST_CASE("objects and maps") {
    std::string labels =
        R"({"type":"object","maxProperties":1,"additionalProperties":{"type":"string"}})";
    expectOneError(specSchema("labels", labels), R"({"spec":{"labels":{"a":"1","b":"2"}}})",
                   "spec.labels: Too many: 2: must have at most 1 items");
    expectOneError(
        specSchema(
            "labels",
            R"({"type":"object","minProperties":2,"additionalProperties":{"type":"string"}})"),
        R"({"spec":{"labels":{"a":"1"}}})",
        "spec.labels: Invalid value: 1: spec.labels in body should have at least 2 "
        "properties");
    expectOneError(specSchema("labels", labels), R"({"spec":{"labels":{"k":1}}})",
                   "spec.labels[k]: Invalid value: \"integer\": spec.labels[k] in body must be of "
                   "type string: \"integer\"");
    expectOneError(
        specSchema(
            "x",
            R"({"type":"object","additionalProperties":false,"x-kubernetes-preserve-unknown-fields":true,"properties":{"a":{"type":"string"}}})"),
        R"({"spec":{"x":{"a":"1","b":"2"}}})",
        "spec.x: Invalid value: \"b\": spec.x.b in body is a forbidden property");
  }

  TEST_CASE("allOf, anyOf, oneOf, not") {
    std::string allOf =
        specSchema("n", R"({"type":"integer","allOf":[{"minimum":1},{"maximum":5}]})");
    expectValid(allOf, R"({"spec":{"n":3}})");
    expectOneError(allOf, R"({"spec":{"n":9}})",
                   "spec.n: Invalid value: 9: spec.n in body should be less than or equal to 5");
    std::string anyOf =
        specSchema("n", R"({"type":"integer","anyOf":[{"maximum":1},{"minimum":10}]})");
    expectValid(anyOf, R"({"spec":{"n":12}})");
    Result r = run(anyOf, R"({"spec":{"n":5}})");
    REQUIRE(r.errors.size() == 2);
    CHECK(r.errors[0] ==
          "spec.n: Invalid value: \"\": \"spec.n\" must validate at least one schema (anyOf)");
    std::string oneOf =
        specSchema("n", R"({"type":"integer","oneOf":[{"minimum":1},{"minimum":5}]})");
    expectValid(oneOf, R"({"spec":{"n":3}})");
    r = run(oneOf, R"({"spec":{"n":7}})");
    REQUIRE(r.errors.size() == 1);
    CHECK(r.errors[0] ==
          "spec.n: Invalid value: \"\": \"spec.n\" must validate one and only one "
          "schema (oneOf). Found 2 valid alternatives");
    std::string notS = specSchema("s", R"({"type":"string","not":{"enum":["forbidden"]}})");
    expectValid(notS, R"({"spec":{"s":"fine"}})");
    expectOneError(notS, R"({"spec":{"s":"forbidden"}})",
                   "spec.s: Invalid value: \"\": \"spec.s\" must not validate the schema (not)");
  }

  TEST_CASE("metadata and embedded resources") {
    expectOneError(R"({"type":"object","properties":{}})", R"({"metadata":{"name":5}})",
                   "metadata.name: Invalid value: \"integer\": metadata.name in body must be of "
                   "type string: \"integer\"");
    std::string embedded = specSchema(
        "template",
        R"({"type":"object","x-kubernetes-embedded-resource":true,"x-kubernetes-preserve-unknown-fields":true})");
    expectOneError(embedded, R"({"spec":{"template":{"apiVersion":"v1","metadata":{}}}})",
                   "spec.template.kind: Required value: must not be empty");
    expectValid(embedded, R"({"spec":{"template":{"apiVersion":"v1","kind":"Pod"}}})");
  }

  TEST_CASE("depth is bounded") {
    // A schema and object nested deeper than kMaxSchemaDepth (built directly: parseJson itself
    // refuses such documents).
    Json schema(rapidjson::kObjectType);
    Json object(rapidjson::kObjectType);
    auto& sa = schema.GetAllocator();
    auto& oa = object.GetAllocator();
    JsonValue s(rapidjson::kObjectType);
    s.AddMember("type", "object", sa);
    JsonValue o(1);
    for (int i = 0; i < apiserver::kMaxSchemaDepth + 10; ++i) {
      JsonValue props(rapidjson::kObjectType);
      props.AddMember("a", std::move(s), sa);
      JsonValue outer(rapidjson::kObjectType);
      outer.AddMember("type", "object", sa);
      outer.AddMember("properties", std::move(props), sa);
      s = std::move(outer);
      JsonValue wrap(rapidjson::kObjectType);
      wrap.AddMember("a", std::move(o), oa);
      o = std::move(wrap);
    }
    static_cast<JsonValue&>(schema) = std::move(s);
    static_cast<JsonValue&>(object) = std::move(o);
    apiserver::SchemaOutcome out = apiserver::applySchema(object, schema, oa);
    REQUIRE_FALSE(out.errors.empty());
    CHECK(out.errors[0].detail == "object nesting exceeds 128 levels");
    CHECK(apiserver::validateSchemaDefinition(schema).code() == 422);
  }
}

TEST_SUITE("schema pruning and defaulting") {
  TEST_CASE("unknown fields are pruned and reported") {
    Result r = run(
        R"({"type":"object","properties":{"spec":{"type":"object","properties":{"a":{"type":"string"},"groups":{"type":"array","items":{"type":"object","properties":{"n":{"type":"integer"}}}}}}}})",
        R"({"apiVersion":"example.com/v1","kind":"Widget","metadata":{"name":"w","weird":1},"spec":{"a":"x","foo":1,"groups":[{"n":1,"bar":2}]},"status":{}})");
    CHECK(r.errors.empty());
    CHECK(
        r.object ==
        R"({"apiVersion":"example.com/v1","kind":"Widget","metadata":{"name":"w","weird":1},"spec":{"a":"x","groups":[{"n":1}]}})");
    CHECK(r.unknown == std::vector<std::string>{"spec.foo", "spec.groups[0].bar", "status"});
  }

  TEST_CASE("preserve-unknown-fields and additionalProperties keep fields") {
    Result r = run(
        R"({"type":"object","properties":{"spec":{"type":"object","x-kubernetes-preserve-unknown-fields":true,"properties":{"known":{"type":"object","properties":{}}}},"m":{"type":"object","additionalProperties":true}}})",
        R"({"spec":{"anything":{"deep":1},"known":{"dropped":1}},"m":{"x":1}})");
    CHECK(r.object == R"({"spec":{"anything":{"deep":1},"known":{}},"m":{"x":1}})");
    CHECK(r.unknown == std::vector<std::string>{"spec.known.dropped"});
    // An object schema with neither properties nor preserve-unknown-fields keeps nothing.
    r = run(R"({"type":"object","properties":{"spec":{"type":"object"}}})", R"({"spec":{"a":1}})");
    CHECK(r.object == R"({"spec":{}})");
  }

  TEST_CASE("embedded resources keep apiVersion, kind and metadata") {
    Result r = run(
        specSchema(
            "template",
            R"({"type":"object","x-kubernetes-embedded-resource":true,"properties":{"spec":{"type":"object","properties":{}}}})"),
        R"({"spec":{"template":{"apiVersion":"v1","kind":"Pod","metadata":{"name":"p"},"spec":{"x":1},"junk":1}}})");
    CHECK(
        r.object ==
        R"({"spec":{"template":{"apiVersion":"v1","kind":"Pod","metadata":{"name":"p"},"spec":{}}}})");
  }

  TEST_CASE("defaults") {
    std::string schema =
        R"({"type":"object","properties":{"spec":{"type":"object","properties":{
             "replicas":{"type":"integer","default":1},
             "mode":{"type":"string","default":"fast"},
             "opts":{"type":"object","default":{"a":[1]},"properties":{"a":{"type":"array","items":{"type":"integer"}},"b":{"type":"string","default":"bee"}}},
             "groups":{"type":"array","items":{"type":"object","properties":{"n":{"type":"integer","default":7}}}},
             "absent":{"type":"object","properties":{"z":{"type":"integer","default":3}}}}}}})";
    Result r = run(schema, R"({"spec":{"mode":"slow","groups":[{},{"n":2}]}})");
    CHECK(r.errors.empty());
    Json got = parse(r.object);
    Json want = parse(
        R"({"spec":{"replicas":1,"mode":"slow","opts":{"a":[1],"b":"bee"},"groups":[{"n":7},{"n":2}]}})");
    CHECK_MESSAGE(got == want, r.object);
    // Null in a non-nullable defaulted field takes the default.
    r = run(schema, R"({"spec":{"replicas":null}})");
    CHECK(kube::getInt(parse(r.object), {"spec", "replicas"}) == 1);
    // Defaults are deep copies: editing the result leaves the schema alone.
    Json s = parse(schema);
    Json o = parse(R"({"spec":{}})");
    (void)apiserver::applySchema(o, s, o.GetAllocator());
    o["spec"]["opts"]["a"].PushBack(2, o.GetAllocator());
    CHECK(s["properties"]["spec"]["properties"]["opts"]["default"]["a"].Size() == 1);
    // The root's metadata is never defaulted.
    r = run(
        R"({"type":"object","properties":{"metadata":{"type":"object","properties":{"name":{"type":"string","default":"x"}}}}})",
        R"({"metadata":{}})");
    CHECK(r.object == R"({"metadata":{}})");
  }

  TEST_CASE("defaults then validation") {
    Result r =
        run(specSchema("n", R"({"type":"integer","default":-5,"minimum":0})"), R"({"spec":{}})");
    REQUIRE(r.errors.size() == 1);
    CHECK(r.errors[0] ==
          "spec.n: Invalid value: -5: spec.n in body should be greater than or equal to 0");
  }
}

TEST_SUITE("schema definitions") {
  kube::Status check(const std::string& schema) {
    return apiserver::validateSchemaDefinition(parse(schema));
  }

  TEST_CASE("usable schemas pass") {
    CHECK(check(R"({"type":"object","properties":{"spec":{"type":"object","properties":{
                  "replicas":{"type":"integer","minimum":0,"format":"int32"},
                  "port":{"x-kubernetes-int-or-string":true},
                  "raw":{"x-kubernetes-preserve-unknown-fields":true},
                  "tags":{"type":"array","x-kubernetes-list-type":"set","items":{"type":"string","pattern":"^[a-z]+$"}},
                  "labels":{"type":"object","additionalProperties":{"type":"string"}},
                  "n":{"type":"integer","anyOf":[{"minimum":1}],"not":{"enum":[3]}}},
                  "required":["replicas"]}}})")
              .isOk());
  }

  TEST_CASE("problems are 422 with field errors") {
    kube::Status s = check(R"({"type":"string"})");
    CHECK(s.code() == 422);
    CHECK(s.message() ==
          "openAPIV3Schema.type: Invalid value: \"string\": must be object at the root");
    s = check(R"({"properties":{}})");
    CHECK(s.message() == "openAPIV3Schema.type: Required value: must not be empty at the root");
    s = check(R"({"type":"object","properties":{"spec":{"properties":{}}}})");
    CHECK(s.message() ==
          "openAPIV3Schema.properties[spec].type: Required value: must not be "
          "empty for specified object fields");
    s = check(R"({"type":"object","properties":{"spec":{"type":"strin"}}})");
    CHECK(s.message() ==
          "openAPIV3Schema.properties[spec].type: Unsupported value: \"strin\": "
          "supported values: \"array\", \"boolean\", \"integer\", \"number\", "
          "\"object\", \"string\"");
    CHECK(
        check(R"({"type":"object","properties":{"a":{"type":"string","minLength":"x"}}})").code() ==
        422);
    CHECK(
        check(R"({"type":"object","properties":{"a":{"type":"string","maxLength":-1}}})").code() ==
        422);
    CHECK(check(R"({"type":"object","properties":{"a":{"type":"string","pattern":"("}}})").code() ==
          422);
    CHECK(
        check(
            R"({"type":"object","properties":{"a":{"type":"array","items":[{"type":"string"}]}}})")
            .code() == 422);
    CHECK(check(R"({"type":"object","properties":{"a":{"type":"array"}}})").code() == 422);
    CHECK(
        check(
            R"({"type":"object","properties":{"a":{"type":"array","x-kubernetes-list-type":"map","items":{"type":"object"}}}})")
            .code() == 422);
    CHECK(
        check(
            R"({"type":"object","properties":{"a":{"type":"object","properties":{},"additionalProperties":{"type":"string"}}}})")
            .code() == 422);
    CHECK(check(R"({"type":"object","required":"spec"})").code() == 422);
    CHECK(check(R"({"type":"object","properties":[]})").code() == 422);
    CHECK(check(R"({"type":"object","nullable":"yes"})").code() == 422);
    CHECK(
        check(R"({"type":"object","properties":{"a":{"type":"integer","minimum":"0"}}})").code() ==
        422);
    CHECK(check(R"([])").code() == 422);
    s = check(R"({"type":"object","properties":{"a":{},"b":{}}})");
    CHECK(s.message().front() == '[');
  }
}

TEST_SUITE("schema robustness") {
  TEST_CASE("mutation loop: random objects and schemas never crash") {
    std::mt19937 rng(777u);
    auto pick = [&](int n) { return std::uniform_int_distribution<int>(0, n - 1)(rng); };
    static const char* kKeys[] = {"type",
                                  "properties",
                                  "items",
                                  "required",
                                  "enum",
                                  "minimum",
                                  "maxLength",
                                  "pattern",
                                  "additionalProperties",
                                  "default",
                                  "nullable",
                                  "x-kubernetes-preserve-unknown-fields",
                                  "format",
                                  "x-kubernetes-list-type",
                                  "x-kubernetes-list-map-keys",
                                  "anyOf",
                                  "not",
                                  "a",
                                  "spec",
                                  "metadata",
                                  "uniqueItems"};
    static const char* kStrings[] = {"object",    "array", "string", "integer", "map", "set",
                                     "date-time", "byte",  "int32",  "[",       "^a",  "a"};
    std::function<JsonValue(kube::JsonAlloc&, int)> gen = [&](kube::JsonAlloc& a, int depth) {
      int kind = depth <= 0 ? pick(5) : pick(8);
      switch (kind) {
        case 0:
          return JsonValue();
        case 1:
          return JsonValue(pick(7) - 3);
        case 2:
          return JsonValue(pick(2) == 0);
        case 3:
          return kube::str(kStrings[pick(12)], a);
        case 4:
          return JsonValue(pick(50) / 3.0);
        case 5:
        case 6: {
          JsonValue o(rapidjson::kObjectType);
          int n = pick(5);
          for (int i = 0; i < n; ++i)
            o.AddMember(kube::str(kKeys[pick(21)], a), gen(a, depth - 1), a);
          return o;
        }
        default: {
          JsonValue arr(rapidjson::kArrayType);
          int n = pick(4);
          for (int i = 0; i < n; ++i) arr.PushBack(gen(a, depth - 1), a);
          return arr;
        }
      }
    };
    int errors = 0;
    for (int iter = 0; iter < 3000; ++iter) {
      Json schema;
      static_cast<JsonValue&>(schema) = gen(schema.GetAllocator(), 5);
      Json object;
      static_cast<JsonValue&>(object) = gen(object.GetAllocator(), 5);
      kube::Status s = apiserver::validateSchemaDefinition(schema);
      CHECK((s.isOk() || s.code() == 422));
      apiserver::SchemaOutcome out = apiserver::applySchema(object, schema, object.GetAllocator());
      errors += static_cast<int>(out.errors.size());
      for (const auto& e : out.errors) CHECK_FALSE(e.toString().empty());
      CHECK(kube::parseJson(kube::toJson(object)).isOk());
    }
    CHECK(errors > 0);
  }
}
