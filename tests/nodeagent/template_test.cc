#include "nodeagent/taskrunner/template.h"

#include <doctest/doctest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>

namespace fs = std::filesystem;
using nodeagent::renderMustache;
using nodeagent::writeTaskFile;

namespace {

const std::map<std::string, std::string> kVars = {
    {"NAME", "web"}, {"PORT", "8080"}, {"HTML", "<a&b>"}, {"EMPTY", ""}, {"OFF", "false"}};

std::string render(const std::string& t) {
  auto r = renderMustache(t, kVars);
  REQUIRE_MESSAGE(r.isOk(), r.status().message());
  return *r;
}

std::string slurp(const fs::path& p) {
  std::ifstream f(p);
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

struct TempAlloc {
  fs::path base;
  TempAlloc() {
    char tmpl[] = "/tmp/foxden-template-test.XXXXXX";
    base = mkdtemp(tmpl);
    fs::create_directories(base / "main" / "local");
    fs::create_directories(base / "alloc");
  }
  ~TempAlloc() { fs::remove_all(base); }
  std::string task() const { return (base / "main").string(); }
  std::string alloc() const { return (base / "alloc").string(); }
};

}  // namespace

TEST_CASE("mustache: variables, escaping, sections, comments") {
  CHECK(render("listen {{PORT}};") == "listen 8080;");
  CHECK(render("{{ NAME }}-{{MISSING}}-") == "web--");
  CHECK(render("{{HTML}}") == "&lt;a&amp;b&gt;");
  CHECK(render("{{{HTML}}}|{{& HTML}}") == "<a&b>|<a&b>");
  CHECK(render("{{#PORT}}port={{PORT}}{{/PORT}}{{#EMPTY}}never{{/EMPTY}}{{#OFF}}never{{/OFF}}") == "port=8080");
  CHECK(render("{{^EMPTY}}default{{/EMPTY}}{{^NAME}}never{{/NAME}}") == "default");
  CHECK(render("a{{! a comment }}b") == "ab");
  CHECK(render("{{#NAME}}{{#PORT}}{{NAME}}:{{PORT}}{{/PORT}}{{/NAME}}") == "web:8080");
  CHECK(render("no tags at all\n") == "no tags at all\n");
}

TEST_CASE("mustache: malformed templates are errors, not crashes") {
  for (const char* bad : {"{{NAME", "{{#NAME}}open", "{{/NAME}}", "{{#A}}{{/B}}", "{{}}", "{{{NAME}}"}) {
    auto r = renderMustache(bad, kVars);
    CHECK_MESSAGE(!r.isOk(), bad);
  }
  std::string deep;
  for (int i = 0; i < 100; ++i) deep += "{{#NAME}}";
  CHECK(!renderMustache(deep, kVars).isOk());
}

TEST_CASE("file modes") {
  CHECK(*nodeagent::parseFileMode("0644") == 0644);
  CHECK(*nodeagent::parseFileMode("600") == 0600);
  for (const char* bad : {"0999", "64", "rwx", "07777", "-644"}) CHECK(!nodeagent::parseFileMode(bad).isOk());
}

TEST_CASE("task files land under the task or alloc directory only") {
  TempAlloc a;
  REQUIRE(writeTaskFile(a.task(), a.alloc(), "local/conf/app.conf", "x=1\n", 0640).isOk());
  CHECK(slurp(a.base / "main/local/conf/app.conf") == "x=1\n");
  struct stat st {};
  REQUIRE(stat((a.base / "main/local/conf/app.conf").c_str(), &st) == 0);
  CHECK((st.st_mode & 0777) == 0640);
  REQUIRE(writeTaskFile(a.task(), a.alloc(), "../alloc/shared.txt", "s", 0644).isOk());
  CHECK(slurp(a.base / "alloc/shared.txt") == "s");
  // Rewriting replaces the file (templates render before every start).
  REQUIRE(writeTaskFile(a.task(), a.alloc(), "local/conf/app.conf", "x=2\n", 0640).isOk());
  CHECK(slurp(a.base / "main/local/conf/app.conf") == "x=2\n");

  const std::string canary = "foxden-escape-" + a.base.filename().string();
  for (const std::string& bad : {std::string("/etc/passwd"), std::string("../../etc/passwd"), "local/../../" + canary,
                                 "../other/" + canary, std::string(".."), std::string(""), std::string("local/"),
                                 "../alloc/../../" + canary, "/tmp/" + canary}) {
    auto st = writeTaskFile(a.task(), a.alloc(), bad, "evil", 0644);
    CHECK_MESSAGE(!st.isOk(), bad);
  }
  CHECK(!fs::exists(a.base / canary));
  CHECK(!fs::exists(a.base.parent_path() / canary));
}

TEST_CASE("a planted symlink is refused, never followed") {
  TempAlloc a;
  fs::path outside = a.base / "outside";
  fs::create_directories(outside);
  fs::create_symlink(outside, a.base / "alloc/evil");          // a directory symlink in the path
  fs::create_symlink(outside / "target", a.base / "main/local/link");  // a symlink as the file
  auto st = writeTaskFile(a.task(), a.alloc(), "../alloc/evil/pwned", "evil", 0644);
  CHECK(!st.isOk());
  CHECK(st.message().find("symlink") != std::string::npos);
  CHECK(!fs::exists(outside / "pwned"));
  // Writing over a symlink replaces the link itself; its target is untouched.
  REQUIRE(writeTaskFile(a.task(), a.alloc(), "local/link", "mine", 0644).isOk());
  CHECK(!fs::exists(outside / "target"));
  CHECK(fs::is_regular_file(fs::symlink_status(a.base / "main/local/link")));
}
