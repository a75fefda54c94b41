#pragma once
// Table rendering for `kubectl get`: built-in kinds get the columns kube-apiserver prints for them;
// custom resources get Name, their additionalPrinterColumns (evaluated server-side), or Age.

#include <string>
#include <vector>

#include "apiserver/resources.h"

namespace apiserver {

// `items` are object JSON texts. `includeObject`: "None" | "Metadata" (default) | "Object".
std::string renderTable(const ResourceType& rt, const std::vector<std::string>& items,
                        const std::string& resourceVersion, const std::string& continueToken,
                        const std::string& includeObject);

}  // namespace apiserver
