#include "nodeagent/allocrunner/dir_pool.h"

#include <doctest/doctest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <string>
#include <thread>

#include "tests/temp_dir.h"

namespace {

mode_t modeOf(const std::string& p) {
  struct stat st {};
  return ::stat(p.c_str(), &st) == 0 ? st.st_mode & 07777 : 0;
}

// take() until it succeeds (the filler makes the first skeleton 100 ms after starting).
bool takeSoon(nodeagent::DirPool& pool, const std::string& uid, const std::string& task) {
  for (int i = 0; i < 100; ++i) {
    if (pool.take(uid, task)) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  return false;
}

}  // namespace

TEST_CASE("dir pool: a skeleton becomes the allocation's and state directories, with their modes") {
  foxden_test::TempDir d("foxden-dirpool");
  ::umask(022);
  nodeagent::DirPool pool(d.path, 2);
  REQUIRE(takeSoon(pool, "u1", "web"));
  const std::string base = d.path + "/allocs/u1";
  CHECK(modeOf(base + "/alloc") == 01777);
  CHECK(modeOf(base + "/web/local") == 01777);
  CHECK(modeOf(base + "/web/tmp") == 01777);
  CHECK(modeOf(base + "/web/secrets") == 0755);
  CHECK(modeOf(base + "/web/logs") == 0755);
  CHECK(modeOf(base + "/web/.foxden") == 0700);
  CHECK(modeOf(base + "/web/.foxden/root") == 0755);
  CHECK(modeOf(d.path + "/state/u1") == 0700);
  CHECK(::access((base + "/t").c_str(), F_OK) != 0);
}

TEST_CASE("dir pool: size 0 never gives one; an existing state directory is not replaced") {
  foxden_test::TempDir d("foxden-dirpool");
  {
    nodeagent::DirPool none(d.path, 0);
    CHECK_FALSE(none.take("u1", "main"));
  }
  nodeagent::DirPool pool(d.path, 1);
  std::filesystem::create_directories(d.path + "/state/u2/keep");
  // Wait for the skeleton: taken for another uid, it would have been moved.
  for (int i = 0; i < 100 && ::access((d.path + "/spare/0.s").c_str(), F_OK) != 0; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  REQUIRE(::access((d.path + "/spare/0.s").c_str(), F_OK) == 0);
  std::this_thread::sleep_for(std::chrono::milliseconds(100));  // made, then listed as ready
  // The allocation directory moves, the state rename fails (not empty): what moved goes back.
  CHECK_FALSE(pool.take("u2", "main"));
  CHECK(::access((d.path + "/allocs/u2").c_str(), F_OK) != 0);
  CHECK(::access((d.path + "/state/u2/keep").c_str(), F_OK) == 0);
}

TEST_CASE("dir pool: leftovers of an earlier agent are removed when the pool starts") {
  foxden_test::TempDir d("foxden-dirpool");
  std::filesystem::create_directories(d.path + "/spare/7.a/t/local");
  nodeagent::DirPool pool(d.path, 0);
  CHECK(::access((d.path + "/spare").c_str(), F_OK) != 0);
}
