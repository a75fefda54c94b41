#include "kube/yaml.h"

#include <yaml-cpp/yaml.h>

#include <cerrno>
#include <cstdlib>
#include <regex>

namespace kube {

namespace {

constexpr int kMaxDepth = 128;

bool convert(const YAML::Node& n, JsonValue& out, JsonAlloc& a, int depth, std::string& err) {
  if (depth > kMaxDepth) {
    err = "document nested too deeply";
    return false;
  }
  switch (n.Type()) {
    case YAML::NodeType::Null:
    case YAML::NodeType::Undefined:
      out.SetNull();
      return true;
    case YAML::NodeType::Sequence:
      out.SetArray();
      for (const auto& item : n) {
        JsonValue v;
        if (!convert(item, v, a, depth + 1, err)) return false;
        out.PushBack(std::move(v), a);
      }
      return true;
    case YAML::NodeType::Map:
      out.SetObject();
      for (const auto& kv : n) {
        if (!kv.first.IsScalar()) {
          err = "mapping keys must be scalars";
          return false;
        }
        const std::string& key = kv.first.Scalar();
        JsonValue v;
        if (!convert(kv.second, v, a, depth + 1, err)) return false;
        auto it = out.FindMember(rapidjson::StringRef(key.data(), key.size()));
        if (it != out.MemberEnd()) {
          err = "duplicate key \"" + key + "\"";
          return false;
        }
        out.AddMember(JsonValue(key.c_str(), static_cast<rapidjson::SizeType>(key.size()), a),
                      std::move(v), a);
      }
      return true;
    case YAML::NodeType::Scalar: {
      const std::string& s = n.Scalar();
      // Quoted or explicitly tagged "!" scalars are strings.
      if (n.Tag() == "!" || n.Tag() == "tag:yaml.org,2002:str") {
        out.SetString(s.c_str(), static_cast<rapidjson::SizeType>(s.size()), a);
        return true;
      }
      if (s == "null" || s == "Null" || s == "NULL" || s == "~" || s.empty()) {
        out.SetNull();
        return true;
      }
      if (s == "true" || s == "True" || s == "TRUE") {
        out.SetBool(true);
        return true;
      }
      if (s == "false" || s == "False" || s == "FALSE") {
        out.SetBool(false);
        return true;
      }
      static const std::regex kInt("[-+]?(0|[1-9][0-9]*)");
      static const std::regex kFloat("[-+]?(\\.[0-9]+|[0-9]+(\\.[0-9]*)?)([eE][-+]?[0-9]+)?");
      if (std::regex_match(s, kInt)) {
        errno = 0;
        long long v = std::strtoll(s.c_str(), nullptr, 10);
        if (errno == 0) {
          out.SetInt64(v);
          return true;
        }
      }
      if (std::regex_match(s, kFloat)) {
        out.SetDouble(std::strtod(s.c_str(), nullptr));
        return true;
      }
      out.SetString(s.c_str(), static_cast<rapidjson::SizeType>(s.size()), a);
      return true;
    }
  }
  return true;
}

StatusOr<Json> fromNode(const YAML::Node& node) {
  Json d;
  std::string err;
  if (!convert(node, d, d.GetAllocator(), 0, err)) return Status::badRequest("invalid YAML: " + err);
  return d;
}

}  // namespace

// yaml-cpp's parser recurses per flow collection: refuse hostile nesting before it runs.
static bool flowTooDeep(std::string_view text) {
  int depth = 0;
  for (char c : text) {
    if (c == '[' || c == '{') {
      if (++depth > kMaxDepth) return true;
    } else if ((c == ']' || c == '}') && depth > 0) {
      --depth;
    }
  }
  return false;
}

StatusOr<Json> yamlToJson(std::string_view text) {
  if (flowTooDeep(text)) return Status::badRequest("invalid YAML: document nested too deeply");
  try {
    return fromNode(YAML::Load(std::string(text)));
  } catch (const std::exception& e) {
    return Status::badRequest(std::string("invalid YAML: ") + e.what());
  }
}

StatusOr<std::vector<Json>> yamlDocumentsToJson(std::string_view text) {
  if (flowTooDeep(text)) return Status::badRequest("invalid YAML: document nested too deeply");
  std::vector<Json> out;
  try {
    for (const auto& node : YAML::LoadAll(std::string(text))) {
      if (node.IsNull()) continue;
      auto j = fromNode(node);
      if (!j) return j.status();
      out.push_back(std::move(*j));
    }
  } catch (const std::exception& e) {
    return Status::badRequest(std::string("invalid YAML: ") + e.what());
  }
  return out;
}

}  // namespace kube
