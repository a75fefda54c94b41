#pragma once
// A temporary directory for a unit test, removed with everything in it at the end of its scope.

#include <stdlib.h>

#include <filesystem>
#include <string>
#include <system_error>

namespace foxden_test {

struct TempDir {
  std::string path;
  // `prefix`: the directory's name under /tmp, before a random suffix.
  explicit TempDir(const std::string& prefix) {
    std::string tmpl = "/tmp/" + prefix + ".XXXXXX";
    path = mkdtemp(tmpl.data());
  }
  ~TempDir() {
    std::error_code ec;
    std::filesystem::remove_all(path, ec);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
};

}  // namespace foxden_test
