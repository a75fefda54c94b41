#pragma once
// Parsing of Kubernetes API request URLs into RequestInfo (as k8s.io/apiserver's requestinfo.go
// does), query parameters, Accept headers and content types.

#include <map>
#include <string>
#include <string_view>
#include <vector>

#include "kube/http_server.h"

namespace apiserver {

struct RequestInfo {
  bool isResource = false;
  std::string verb;  // get list watch create update patch delete deletecollection
  std::string group, version, resource, subresource, ns, name;
  std::vector<std::string> parts;  // path segments after /api or /apis
  std::string labelSelector;       // of list/watch requests (authorisation narrows by it)
};

std::map<std::string, std::string> parseQuery(std::string_view query);
std::string urlDecode(std::string_view s);
std::string urlEncode(std::string_view s);
RequestInfo parseRequestInfo(const std::string& method, const std::string& path,
                             const std::map<std::string, std::string>& query);
// The media type without parameters, lower-cased ("application/json; charset=utf-8" -> ...).
std::string mediaType(std::string_view contentType);
// True when the Accept header asks for a meta.k8s.io Table rendering.
bool wantsTable(std::string_view accept);

std::string newUid();
std::string randomSuffix(size_t n);  // [bcdfghjklmnpqrstvwxz2456789], like generateName

// Name validation as apimachinery's; empty string when valid, else the message. (Label keys and
// values: kube/labels.h.)
std::string validateDnsSubdomain(std::string_view s);
std::string validateDnsLabel(std::string_view s);

}  // namespace apiserver
