#include "nodeagent/allocrunner/dir_pool.h"

#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstdio>
#include <filesystem>

namespace nodeagent {
namespace {

// After a take, the filler waits this long before making the next skeleton, so that it does not
// compete for the CPUs and the disk with the start that took one.
constexpr auto kRefillDelay = std::chrono::milliseconds(100);

bool makeDir(const std::string& path, mode_t mode, bool sticky) {
  if (::mkdir(path.c_str(), mode) != 0 && errno != EEXIST) return false;
  return !sticky || ::chmod(path.c_str(), 01777) == 0;
}

}  // namespace

DirPool::DirPool(std::string dataDir, size_t size) : dataDir_(std::move(dataDir)), size_(size) {
  std::error_code ec;
  std::filesystem::remove_all(dataDir_ + "/spare", ec);
  if (size_ == 0) return;
  for (const char* d : {"/spare", "/allocs", "/state"}) std::filesystem::create_directories(dataDir_ + d, ec);
  filler_ = std::thread([this] { fill(); });
}

DirPool::~DirPool() {
  {
    std::lock_guard l(mu_);
    stopping_ = true;
  }
  cv_.notify_all();
  if (filler_.joinable()) filler_.join();
}

bool DirPool::make(const std::string& dir) {
  const std::string a = dir + ".a";
  return makeDir(a, 0755, false) && makeDir(a + "/alloc", 0755, true) && makeDir(a + "/t", 0755, false) &&
         makeDir(a + "/t/local", 0755, true) && makeDir(a + "/t/secrets", 0755, false) &&
         makeDir(a + "/t/tmp", 0755, true) && makeDir(a + "/t/logs", 0755, false) && makeDir(dir + ".s", 0700, false);
}

void DirPool::fill() {
  std::unique_lock l(mu_);
  for (;;) {
    cv_.wait(l, [this] { return stopping_ || ready_.size() < size_; });
    if (stopping_) return;
    // Not right after a take: the start that took it is still running.
    if (cv_.wait_for(l, kRefillDelay, [this] { return stopping_; })) return;
    std::string dir = dataDir_ + "/spare/" + std::to_string(next_++);
    l.unlock();
    bool ok = make(dir);
    if (!ok) {
      std::error_code ec;
      std::filesystem::remove_all(dir + ".a", ec);
      std::filesystem::remove_all(dir + ".s", ec);
    }
    l.lock();
    if (ok) {
      ready_.push_back(dir);
    } else if (cv_.wait_for(l, std::chrono::seconds(10), [this] { return stopping_; })) {
      return;  // a full disk, say: try again later
    }
  }
}

bool DirPool::take(const std::string& uid, const std::string& task) {
  std::string dir;
  {
    std::lock_guard l(mu_);
    if (ready_.empty()) return false;
    dir = ready_.back();
    ready_.pop_back();
  }
  cv_.notify_all();
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
