#include "nodeagent/allocrunner/dir_pool.h"

#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <filesystem>

namespace nodeagent {
namespace {

bool makeDir(const std::string& path, mode_t mode, bool sticky) {
  if (::mkdir(path.c_str(), mode) != 0 && errno != EEXIST) return false;
  return !sticky || ::chmod(path.c_str(), 01777) == 0;
}

// Before the pool's thread starts: an earlier agent's skeletons go, the parents are made.
std::string prepared(std::string dataDir, size_t size) {
  std::error_code ec;
  std::filesystem::remove_all(dataDir + "/spare", ec);
  if (size > 0) {
    for (const char* d : {"/spare", "/allocs", "/state"}) std::filesystem::create_directories(dataDir + d, ec);
  }
  return dataDir;
}

}  // namespace

DirPool::DirPool(std::string dataDir, size_t size)
    : dataDir_(prepared(std::move(dataDir), size)), pool_(size, [this](size_t n) { return make(spare(n)); }) {}

bool DirPool::make(const std::string& dir) {
  const std::string a = dir + ".a";
  bool ok = makeDir(a, 0755, false) && makeDir(a + "/alloc", 0755, true) && makeDir(a + "/t", 0755, false) &&
            makeDir(a + "/t/local", 0755, true) && makeDir(a + "/t/secrets", 0755, false) &&
            makeDir(a + "/t/tmp", 0755, true) && makeDir(a + "/t/logs", 0755, false) && makeDir(a + "/t/.foxden", 0700, false) &&
            makeDir(a + "/t/.foxden/root", 0755, false) && makeDir(dir + ".s", 0700, false);
  if (!ok) {
    std::error_code ec;
    std::filesystem::remove_all(a, ec);
    std::filesystem::remove_all(dir + ".s", ec);
  }
  return ok;
}

bool DirPool::take(const std::string& uid, const std::string& task) {
  auto n = pool_.take();
  if (!n) return false;
  const std::string dir = spare(*n);
  // Three renames, no new block. Were one to fail, what moved goes back and the skeleton is
  // dropped (the pool is emptied at the next start anyway).
  const std::string base = dataDir_ + "/allocs/" + uid;
  const std::string state = dataDir_ + "/state/" + uid;
  if (std::rename((dir + ".a").c_str(), base.c_str()) != 0) return false;
  if (std::rename((base + "/t").c_str(), (base + "/" + task).c_str()) != 0) {
    std::rename(base.c_str(), (dir + ".a").c_str());
    return false;
  }
  if (std::rename((dir + ".s").c_str(), state.c_str()) != 0) {
    std::rename((base + "/" + task).c_str(), (base + "/t").c_str());
    std::rename(base.c_str(), (dir + ".a").c_str());
    return false;
  }
  return true;
}

}  // namespace nodeagent
