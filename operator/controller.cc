#include "operator/controller.h"

namespace op {

bool SharedInformers::synced() const {
  for (const auto* i : {&jobs, &allocations, &workers, &leases}) {
    if (*i && !(*i)->hasSynced()) return false;
  }
  return true;
}

}  // namespace op
