#include "nodeagent/gc.h"

#include <algorithm>

namespace nodeagent {

std::vector<std::string> gcPlan(std::vector<AllocDirInfo> dirs, const GcOptions& options, int64_t now) {
  std::vector<std::string> out;
  std::vector<AllocDirInfo> kept;
  for (auto& d : dirs) {
    if (d.active) continue;
    if (!d.inApi || now - d.finishedAt > options.retentionSeconds) {
      out.push_back(d.uid);
    } else {
      kept.push_back(std::move(d));
    }
  }
  // Past the count limit, the oldest go first.
  std::sort(kept.begin(), kept.end(), [](const AllocDirInfo& a, const AllocDirInfo& b) {
    return a.finishedAt != b.finishedAt ? a.finishedAt < b.finishedAt : a.uid < b.uid;
  });
  size_t limit = static_cast<size_t>(std::max(0, options.maxAllocs));
  for (size_t i = 0; i + limit < kept.size(); ++i) out.push_back(kept[i].uid);
  return out;
}

}  // namespace nodeagent
