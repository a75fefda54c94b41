#include "kube/files.h"

#include <doctest/doctest.h>
#include <sys/stat.h>

#include <filesystem>
#include <fstream>
#include <sstream>

namespace kube {
namespace {

namespace fs = std::filesystem;

std::string slurp(const fs::path& p) {
  std::ifstream in(p);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

TEST_CASE("writeFileAtomic: 0600, replaces the old contents, leaves no temporary file") {
  std::string tmpl = (fs::temp_directory_path() / "files-test-XXXXXX").string();
  REQUIRE(mkdtemp(tmpl.data()) != nullptr);
  fs::path dir = tmpl;
  fs::path f = dir / "kubeconfig";
  {
    std::ofstream(dir / "kubeconfig.tmp") << "left over by a crash";
    ::chmod((dir / "kubeconfig.tmp").c_str(), 0644);
  }
  REQUIRE(writeFileAtomic(f.string(), "first").isOk());
  REQUIRE(writeFileAtomic(f.string(), "second, longer").isOk());
  CHECK(slurp(f) == "second, longer");
  struct stat st {};
  REQUIRE(::stat(f.c_str(), &st) == 0);
  CHECK((st.st_mode & 0777) == 0600);
  CHECK_FALSE(fs::exists(dir / "kubeconfig.tmp"));

  Status missing = writeFileAtomic((dir / "no-such-dir" / "x").string(), "data");
  CHECK_FALSE(missing.isOk());
  CHECK(missing.message().find("no-such-dir/x") != std::string::npos);
  fs::remove_all(dir);
}

}  // namespace
}  // namespace kube
