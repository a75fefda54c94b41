// Log rotation (the init's writer) and reading (the agent's follower, tail, cursors) on a real
// temporary directory.

#include <doctest/doctest.h>
#include <fcntl.h>
#include <stdlib.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <sstream>

#include "nodeagent/logs/log_files.h"
#include "nodeagent/logs/rotator.h"

namespace nodeagent::logs {
namespace {

namespace fs = std::filesystem;

struct TempDir {
  TempDir() {
    std::string tmpl = (fs::temp_directory_path() / "foxden-logs-XXXXXX").string();
    path = mkdtemp(tmpl.data());
    fd = ::open(path.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  }
  ~TempDir() {
    ::close(fd);
    fs::remove_all(path);
  }
  std::string read(const std::string& name) const {
    std::ifstream f(path + "/" + name);
    std::stringstream ss;
    ss << f.rdbuf();
    return ss.str();
  }
  std::string path;
  int fd = -1;
};

std::string numbered(int from, int to) {
  std::string s;
  for (int i = from; i < to; ++i) s += "line " + std::to_string(i) + "\n";
  return s;
}

// Everything the follower yields from `c` until no more data.
std::string drain(LogFollower& f) {
  std::string all, chunk;
  for (;;) {
    f.next(chunk, 1000);
    if (chunk.empty()) return all;
    all += chunk;
  }
}

TEST_CASE("rotator: files rotate on line boundaries, index grows, old files are deleted") {
  TempDir d;
  Rotator r;
  REQUIRE(r.open(d.fd, "stdout", 3, 1024) == 0);
  std::string all = numbered(0, 1000);  // ~9 KB: about 9 rotations
  for (size_t pos = 0; pos < all.size(); pos += 37) CHECK(r.write(all.data() + pos, std::min<size_t>(37, all.size() - pos)) == 0);
  r.close();
  auto idx = listIndexes(d.path, "stdout");
  REQUIRE(idx.size() == 3);
  CHECK(idx[2] == r.index());
  CHECK(idx[0] + 2 == idx[2]);
  std::string kept;
  for (uint64_t i : idx) {
    std::string f = d.read("stdout." + std::to_string(i));
    CHECK(f.size() <= 1024);
    // The writes were 37 bytes at a time, yet rotation happens between lines... except where a
    // line straddles two writes: only whole writes are placed, so check that files end in '\n'
    // for the complete ones.
    if (i != idx[2]) CHECK(f.back() == '\n');
    kept += f;
  }
  CHECK(all.size() >= kept.size());
  CHECK(all.compare(all.size() - kept.size(), kept.size(), kept) == 0);  // a suffix, no loss inside
}

TEST_CASE("rotator: a restarted writer continues the numbering and appends while there is room") {
  TempDir d;
  {
    Rotator r;
    REQUIRE(r.open(d.fd, "stderr", 10, 1024) == 0);
    std::string s = numbered(0, 150);
    REQUIRE(r.write(s.data(), s.size()) == 0);
    r.close();
  }
  auto before = listIndexes(d.path, "stderr");
  Rotator r;
  REQUIRE(r.open(d.fd, "stderr", 10, 1024) == 0);
  CHECK(r.index() == before.back());
  std::string more = "again\n";
  REQUIRE(r.write(more.data(), more.size()) == 0);
  r.close();
  std::string last = d.read("stderr." + std::to_string(before.back()));
  CHECK(last.ends_with("line 149\nagain\n"));
  // A smaller maxFiles on restart trims the old files.
  Rotator small;
  REQUIRE(small.open(d.fd, "stderr", 2, 1024) == 0);
  small.close();
  CHECK(listIndexes(d.path, "stderr").size() == 2);
}

TEST_CASE("rotator: a line longer than a file is split; bad limits are refused") {
  TempDir d;
  Rotator r;
  REQUIRE(r.open(d.fd, "stdout", 5, 1024) == 0);
  std::string big(3000, 'x');
  big += "\n";
  REQUIRE(r.write(big.data(), big.size()) == 0);
  r.close();
  auto idx = listIndexes(d.path, "stdout");
  std::string joined;
  for (uint64_t i : idx) joined += d.read("stdout." + std::to_string(i));
  CHECK(joined == big);
  Rotator bad;
  CHECK(bad.open(d.fd, "stdout", 0, 1024) == -EINVAL);
  CHECK(bad.open(d.fd, "stdout", 3, 10) == -EINVAL);
  CHECK(bad.open(-1, "stdout", 3, 4096) == -EINVAL);
}

TEST_CASE("log pipe: partial lines are held until their end, so rotation keeps lines whole") {
  TempDir d;
  int p[2];
  REQUIRE(pipe(p) == 0);
  static LogPipe lp;  // 64 KiB buffer: not on the test's stack
  lp = LogPipe();
  lp.fd = p[0];
  REQUIRE(lp.rotator.open(d.fd, "stdout", 100, 1024) == 0);
  std::string all = numbered(0, 600);
  // Block-buffered writer: 100-byte writes that end anywhere.
  for (size_t pos = 0; pos < all.size(); pos += 100) {
    size_t n = std::min<size_t>(100, all.size() - pos);
    REQUIRE(::write(p[1], all.data() + pos, n) == static_cast<ssize_t>(n));
    REQUIRE(lp.pump(0) > 0);
  }
  ::close(p[1]);
  CHECK(lp.pump(0) == 0);  // EOF flushes
  lp.rotator.close();
  std::string joined;
  for (uint64_t i : listIndexes(d.path, "stdout")) {
    std::string f = d.read("stdout." + std::to_string(i));
    CHECK(f.back() == '\n');
    CHECK(f.size() <= 1024);
    joined += f;
  }
  CHECK(joined == all);
}

TEST_CASE("log pipe: a partial line is due kHoldMillis after it started waiting") {
  TempDir d;
  int p[2];
  REQUIRE(pipe(p) == 0);
  static LogPipe lp;
  lp.fd = p[0];
  REQUIRE(lp.rotator.open(d.fd, "stderr", 3, 4096) == 0);
  CHECK(lp.dueInMs(1000) == -1);
  REQUIRE(::write(p[1], "50%\r", 4) == 4);  // a progress bar: no newline, redrawn in place
  REQUIRE(lp.pump(1000) == 4);
  CHECK(lp.dueInMs(1000) == LogPipe::kHoldMillis);
  REQUIRE(::write(p[1], "60%\r", 4) == 4);
  REQUIRE(lp.pump(1100) == 4);
  CHECK(lp.dueInMs(1100) == LogPipe::kHoldMillis - 100);  // still since the first byte held
  CHECK(lp.dueInMs(5000) == 0);
  lp.flush();
  CHECK(d.read("stderr.0") == "50%\r60%\r");
  REQUIRE(::write(p[1], "done\nnext", 9) == 9);
  REQUIRE(lp.pump(2000) == 9);
  CHECK(d.read("stderr.0") == "50%\r60%\rdone\n");
  CHECK(lp.dueInMs(2000) == LogPipe::kHoldMillis);  // "next" waits from now
  ::close(p[1]);
  CHECK(lp.pump(2001) == 0);
  CHECK(d.read("stderr.0") == "50%\r60%\rdone\nnext");
  lp.rotator.close();
}

TEST_CASE("reader: cursors, tail and a follower across rotations") {
  TempDir d;
  Rotator r;
  REQUIRE(r.open(d.fd, "stdout", 4, 1024) == 0);
  std::string first = numbered(0, 100);
  REQUIRE(r.write(first.data(), first.size()) == 0);

  CHECK(parseCursor("3:17") == Cursor{3, 17});
  CHECK_FALSE(parseCursor("3"));
  CHECK_FALSE(parseCursor(":1"));
  CHECK_FALSE(parseCursor("1:"));
  CHECK_FALSE(parseCursor("-1:0"));
  CHECK_FALSE(parseCursor("1:2x"));
  CHECK_FALSE(parseCursor("99999999999999999999999:0"));
  CHECK(formatCursor({7, 9}) == "7:9");

  // tail: the last 3 lines, whichever file they are in.
  LogFollower t(d.path, "stdout", tailCursor(d.path, "stdout", 3));
  CHECK(drain(t) == "line 97\nline 98\nline 99\n");
  LogFollower none(d.path, "stdout", tailCursor(d.path, "stdout", 0));
  CHECK(drain(none).empty());
  LogFollower everything(d.path, "stdout", tailCursor(d.path, "stdout", 100000));
  CHECK(drain(everything) == first);
  // Counted back from an end taken earlier: lines written since (a rotation too) are not counted.
  {
    Cursor end = tailCursor(d.path, "stdout", 0);
    std::string more = numbered(100, 140);
    REQUIRE(r.write(more.data(), more.size()) == 0);
    REQUIRE(r.index() > end.index);
    Cursor from = tailCursor(d.path, "stdout", 3, &end);
    CHECK(tailCursor(d.path, "stdout", 0, &end) == end);
    LogFollower upTo(d.path, "stdout", from);
    std::string got;
    for (std::string chunk; upTo.cursor() != end;) {
      Cursor c = upTo.cursor();
      size_t max = c.index == end.index ? static_cast<size_t>(end.offset - c.offset) : 65536;
      upTo.next(chunk, max);
      if (chunk.empty()) break;
      got += chunk;
    }
    CHECK(got == "line 97\nline 98\nline 99\n");
    first += more;
  }

  // Follow from the start while more is written and several rotations happen.
  LogFollower f(d.path, "stdout", firstCursor(d.path, "stdout"));
  std::string got = drain(f);
  std::string second = numbered(100, 200);
  REQUIRE(r.write(second.data(), second.size()) == 0);
  got += drain(f);
  CHECK(got == first + second);

  // A cursor whose file was rotated away jumps to the oldest file left (the rest is gone).
  std::string third = numbered(200, 600);
  REQUIRE(r.write(third.data(), third.size()) == 0);
  LogFollower old(d.path, "stdout", Cursor{0, 5});
  std::string tailEnd = drain(old);
  CHECK(old.takeSkipped());
  CHECK_FALSE(old.takeSkipped());
  CHECK_FALSE(f.takeSkipped());
  CHECK(tailEnd.size() > 0);
  CHECK((first + second + third).ends_with(tailEnd));
  r.close();
}

TEST_CASE("log limits: defaults, quantities and clear errors") {
  auto parse = [](const char* json) {
    auto doc = kube::parseJson(json);
    REQUIRE(doc);
    return parseLogLimits(&*doc);
  };
  auto def = parseLogLimits(nullptr);
  REQUIRE(def);
  CHECK(def->maxFiles == 10);
  CHECK(def->maxFileSize == 10 * 1024 * 1024);
  auto ok = parse(R"({"maxFiles":3,"maxFileSize":"4Ki"})");
  REQUIRE(ok);
  CHECK(ok->maxFiles == 3);
  CHECK(ok->maxFileSize == 4096);
  CHECK(parse(R"({"maxFileSize":2048})")->maxFileSize == 2048);
  for (const char* bad : {R"({"maxFiles":0})", R"({"maxFiles":1001})", R"({"maxFiles":"3"})", R"({"maxFiles":2.5})",
                          R"({"maxFileSize":"10"})", R"({"maxFileSize":"100Ti"})", R"({"maxFileSize":"lots"})",
                          R"({"maxFileSize":"-4Ki"})", R"({"maxFileSize":true})", R"([1])"}) {
    auto r = parse(bad);
    CHECK_MESSAGE(!r, bad);
    if (!r) CHECK(r.status().message().rfind("logs", 0) == 0);
  }
}

}  // namespace
}  // namespace nodeagent::logs
