#pragma once
// A few allocation-directory skeletons made ahead, between starts, and renamed into place by a
// start. Making an allocation's directories is a dozen mkdir/chmod; on a filesystem that must find
// new blocks for them (ext4 mounted with `discard` where much was just deleted, an SD card) that
// took 1-3 ms of every start here, while a rename takes no new block. In a burst the pool runs dry
// and starts make their directories as before.
//
// A skeleton, in <dataDir>/spare/: <n>.a (the allocation directory: alloc/ 01777 and t/, a task
// directory with local/ 01777, secrets/, tmp/ 01777, logs/, and .foxden/ 0700 with root/, the exec
// driver's) and <n>.s (its state directory, 0700).
// Nothing else reads <dataDir>/spare: it is emptied when the pool starts.

#include <cstddef>
#include <string>

#include "nodeagent/spare_pool.h"

namespace nodeagent {

class DirPool {
 public:
  // Starts the thread that keeps `size` skeletons ready (0: none; take() then always says no).
  DirPool(std::string dataDir, size_t size);

  // Moves a ready skeleton to <dataDir>/allocs/<uid> (its task directory named `task`) and
  // <dataDir>/state/<uid>, which must not exist. False when none is ready or a rename failed (the
  // caller makes the directories itself; nothing of the skeleton is left at the destination).
  bool take(const std::string& uid, const std::string& task);

 private:
  bool make(const std::string& dir);
  std::string spare(size_t n) const { return dataDir_ + "/spare/" + std::to_string(n); }

  const std::string dataDir_;
  SparePool pool_;  // last: its thread uses the members above
};

}  // namespace nodeagent
