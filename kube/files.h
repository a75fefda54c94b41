#pragma once
// Small file helpers shared by the binaries.

#include <string>

#include "kube/status.h"

namespace kube {

// Replaces `path` with `data` atomically: writes PATH.tmp (mode 0600 from its creation, never
// following a link), fsyncs it and renames it over `path`, so a reader sees the old contents or
// the new, never half, and no other user can read it at any moment. On failure the temporary
// file is removed and `path` is left as it was.
[[nodiscard]] Status writeFileAtomic(const std::string& path, const std::string& data);

}  // namespace kube
