// RootfsCache: digest checks, the allow-list, one unpack per digest, and hostile tarballs built
// entry by entry with libarchive's writer (GNU tar would sanitise the very names we want to test).
#include "nodeagent/driver/rootfs.h"

#include <archive.h>
#include <archive_entry.h>
#include <doctest/doctest.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include <atomic>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>
#include <thread>
#include <vector>

using nodeagent::RootfsCache;
using nodeagent::RootfsOptions;
using nodeagent::sha256File;

namespace {

struct Entry {
  std::string name;
  mode_t type = AE_IFREG;
  mode_t perm = 0644;
  std::string data;      // regular file contents
  std::string link;      // symlink target
  std::string hardlink;  // hard link target
};

Entry file(std::string name, std::string data = "x", mode_t perm = 0644) {
  Entry e;
  e.name = std::move(name);
  e.data = std::move(data);
  e.perm = perm;
  return e;
}
Entry dir(std::string name) {
  Entry e;
  e.name = std::move(name);
  e.type = AE_IFDIR;
  e.perm = 0755;
  return e;
}
Entry slink(std::string name, std::string target) {
  Entry e;
  e.name = std::move(name);
  e.type = AE_IFLNK;
  e.perm = 0777;
  e.link = std::move(target);
  return e;
}
Entry hardlink(std::string name, std::string target) {
  Entry e = file(std::move(name), "");
  e.hardlink = std::move(target);
  return e;
}
Entry node(std::string name, mode_t type) {
  Entry e;
  e.name = std::move(name);
  e.type = type;
  e.perm = 0666;
  return e;
}

// A scratch tree: <root>/images (allowed), <root>/cache, <root>/outside (must stay empty).
struct Scratch {
  std::string root;
  Scratch() {
    char tmpl[] = "/tmp/foxden-rootfs-test-XXXXXX";
    root = ::mkdtemp(tmpl);
    for (const char* d : {"/images", "/outside"}) std::filesystem::create_directories(root + d);
  }
  ~Scratch() {
    std::error_code ec;
    std::filesystem::remove_all(root, ec);
  }
  Scratch(const Scratch&) = delete;
  Scratch& operator=(const Scratch&) = delete;
  RootfsOptions options() const {
    RootfsOptions o;
    o.cacheDir = root + "/cache";
    o.allowedDirs = {root + "/images"};
    return o;
  }
  std::string tar(const std::string& name, const std::vector<Entry>& entries) const {
    std::string path = root + "/images/" + name;
    struct archive* a = archive_write_new();
    archive_write_set_format_pax_restricted(a);
    archive_write_add_filter_gzip(a);
    REQUIRE(archive_write_open_filename(a, path.c_str()) == ARCHIVE_OK);
    for (const auto& e : entries) {
      struct archive_entry* ae = archive_entry_new();
      archive_entry_set_pathname(ae, e.name.c_str());
      archive_entry_set_filetype(ae, e.type);
      archive_entry_set_perm(ae, e.perm);
      if (!e.link.empty()) archive_entry_set_symlink(ae, e.link.c_str());
      if (!e.hardlink.empty()) archive_entry_set_hardlink(ae, e.hardlink.c_str());
      if (e.type == AE_IFCHR) archive_entry_set_rdev(ae, makedev(1, 3));
      archive_entry_set_size(ae, e.type == AE_IFREG && e.hardlink.empty() ? static_cast<la_int64_t>(e.data.size()) : 0);
      REQUIRE(archive_write_header(a, ae) == ARCHIVE_OK);
      if (!e.data.empty()) archive_write_data(a, e.data.data(), e.data.size());
      archive_entry_free(ae);
    }
    archive_write_close(a);
    archive_write_free(a);
    return path;
  }
  bool outsideEmpty() const { return std::filesystem::is_empty(root + "/outside"); }
  // Nothing but finished entries in the cache: no .tmp- dirs left behind.
  std::vector<std::string> cacheEntries() const {
    std::vector<std::string> out;
    std::error_code ec;
    for (const auto& e : std::filesystem::directory_iterator(root + "/cache", ec)) out.push_back(e.path().filename());
    return out;
  }
};

std::string digest(const std::string& path) {
  auto d = sha256File(path);
  REQUIRE(d);
  return *d;
}

const std::vector<Entry> kGood = {
    dir("./"),
    dir("./bin"),
    file("./bin/tool", "#!/bin/sh\necho hi\n", 04755),
    dir("./etc"),
    file("./etc/hostname", "rootfs\n"),
    hardlink("./etc/alias", "etc/hostname"),
    slink("./abs", "/etc/hostname"),  // resolved inside the task's root, never here
    slink("./lib", "usr/lib"),
};

}  // namespace

TEST_CASE("rootfs: unpacked once per digest, setuid dropped, links kept inside the tree") {
  Scratch s;
  std::string tarball = s.tar("good.tar.gz", kGood);
  std::string sha = digest(tarball);
  RootfsCache cache(s.options());
  auto dir = cache.prepare(tarball, sha);
  REQUIRE_MESSAGE(dir, dir.status().message());
  CHECK(*dir == s.root + "/cache/" + sha);
  struct stat st;
  REQUIRE(::stat((*dir + "/bin/tool").c_str(), &st) == 0);
  CHECK((st.st_mode & 07777) == 0755);
  struct stat a, b;
  REQUIRE(::stat((*dir + "/etc/alias").c_str(), &a) == 0);
  REQUIRE(::stat((*dir + "/etc/hostname").c_str(), &b) == 0);
  CHECK(a.st_ino == b.st_ino);
  CHECK(std::filesystem::read_symlink(*dir + "/abs") == "/etc/hostname");
  struct stat before;
  REQUIRE(::stat(dir->c_str(), &before) == 0);

  // The same digest again, also through another cache object (an agent restart): no unpack.
  auto again = cache.prepare(tarball, sha);
  REQUIRE(again);
  CHECK(*again == *dir);
  CHECK(cache.unpacks() == 1);
  RootfsCache restarted(s.options());
  REQUIRE(restarted.prepare(tarball, sha));
  CHECK(restarted.unpacks() == 0);
  struct stat after;
  REQUIRE(::stat(dir->c_str(), &after) == 0);
  CHECK(before.st_ino == after.st_ino);
  CHECK(s.cacheEntries() == std::vector<std::string>{sha});
}

TEST_CASE("rootfs: concurrent starts of one digest unpack it once") {
  Scratch s;
  std::string tarball = s.tar("good.tar.gz", kGood);
  std::string sha = digest(tarball);
  RootfsCache cache(s.options());
  std::vector<std::thread> threads;
  threads.reserve(6);
  std::atomic<int> ok{0};
  for (int i = 0; i < 6; ++i) {
    threads.emplace_back([&] {
      if (cache.prepare(tarball, sha)) ++ok;
    });
  }
  for (auto& t : threads) t.join();
  CHECK(ok == 6);
  CHECK(cache.unpacks() == 1);
  CHECK(s.cacheEntries() == std::vector<std::string>{sha});
}

TEST_CASE("rootfs: a wrong digest, a missing file and paths outside the allowed dirs are refused") {
  Scratch s;
  std::string tarball = s.tar("good.tar.gz", kGood);
  RootfsCache cache(s.options());
  auto wrong = cache.prepare(tarball, std::string(64, 'a'));
  REQUIRE_FALSE(wrong);
  CHECK(wrong.status().message().find("sha256 mismatch") != std::string::npos);
  CHECK(s.cacheEntries().empty());

  auto missing = cache.prepare(s.root + "/images/nope.tar", std::string(64, 'a'));
  REQUIRE_FALSE(missing);
  CHECK(missing.status().message().find("No such file") != std::string::npos);

  CHECK_FALSE(cache.prepare(tarball, "ABC"));  // not a digest

  // Outside the allow-list: directly, through "..", and through a symlink planted inside it.
  std::filesystem::copy_file(tarball, s.root + "/outside/x.tar.gz");
  std::string sha = digest(tarball);
  auto outside = cache.prepare(s.root + "/outside/x.tar.gz", sha);
  REQUIRE_FALSE(outside);
  CHECK(outside.status().message().find("not under an allowed rootfs directory") != std::string::npos);
  CHECK_FALSE(cache.prepare(s.root + "/images/../outside/x.tar.gz", sha));
  std::filesystem::create_symlink(s.root + "/outside/x.tar.gz", s.root + "/images/link.tar.gz");
  CHECK_FALSE(cache.prepare(s.root + "/images/link.tar.gz", sha));
  std::filesystem::remove(s.root + "/outside/x.tar.gz");
  CHECK(cache.unpacks() == 0);
}

TEST_CASE("rootfs: hostile tarballs are refused and nothing lands outside the cache") {
  Scratch s;
  struct Case {
    const char* what;
    std::vector<Entry> entries;
    const char* reason;
  };
  std::string outside = s.root + "/outside";
  std::vector<Case> cases = {
      {"dot-dot entry", {file("ok"), file("../outside/pwned")}, "'..'"},
      {"nested dot-dot", {file("a/../../outside/pwned")}, "'..'"},
      {"absolute entry", {file(outside + "/pwned")}, "absolute"},
      {"write through a symlink", {slink("esc", outside), file("esc/pwned")}, "symlink"},
      {"write through a relative symlink", {slink("esc", "../../outside"), file("esc/pwned")}, "symlink"},
      {"hard link to a host file", {hardlink("passwd", "/etc/passwd")}, "absolute"},
      {"hard link out of the tree", {hardlink("x", "../outside/f")}, "'..'"},
      {"hard link through a symlink", {slink("esc", outside), hardlink("h", "esc/f")}, "symlink"},
      {"character device", {node("dev/mem", AE_IFCHR)}, "device nodes"},
      {"fifo", {node("fifo", AE_IFIFO)}, "device nodes"},
  };
  std::ofstream(outside + "/f") << "host file\n";
  for (const auto& c : cases) {
    CAPTURE(c.what);
    std::string tarball = s.tar("hostile.tar.gz", c.entries);
    RootfsCache cache(s.options());
    auto r = cache.prepare(tarball, digest(tarball));
    REQUIRE_FALSE(r);
    CHECK_MESSAGE(r.status().message().find(c.reason) != std::string::npos, r.status().message());
    CHECK(s.cacheEntries().empty());
    CHECK(std::filesystem::directory_iterator(outside)->path().filename() == "f");
    CHECK(!std::filesystem::exists(outside + "/pwned"));
    CHECK(!std::filesystem::exists(s.root + "/pwned"));
    CHECK(std::filesystem::hard_link_count(outside + "/f") == 1);
  }
}

TEST_CASE("rootfs: garbage, entry and size limits") {
  Scratch s;
  std::string junk = s.root + "/images/junk.tar";
  std::ofstream(junk) << "this is not a tarball at all, not even close\n";
  RootfsCache cache(s.options());
  auto bad = cache.prepare(junk, digest(junk));
  REQUIRE_FALSE(bad);
  CHECK(s.cacheEntries().empty());

  RootfsOptions small = s.options();
  small.maxEntries = 3;
  RootfsCache fewEntries(small);
  std::string many = s.tar("many.tar.gz", kGood);
  auto r = fewEntries.prepare(many, digest(many));
  REQUIRE_FALSE(r);
  CHECK(r.status().message().find("more than 3 entries") != std::string::npos);

  small = s.options();
  small.maxBytes = 1000;
  RootfsCache fewBytes(small);
  std::string big = s.tar("big.tar.gz", {file("big", std::string(5000, 'z'))});
  r = fewBytes.prepare(big, digest(big));
  REQUIRE_FALSE(r);
  CHECK(r.status().message().find("more than 1000 bytes") != std::string::npos);
  CHECK(s.cacheEntries().empty());
}

TEST_CASE("rootfs: a crash mid-unpack leaves only a .tmp- dir, which the next cache removes") {
  Scratch s;
  std::filesystem::create_directories(s.root + "/cache/.tmp-deadbeef-1-1/usr");
  RootfsCache cache(s.options());
  CHECK(s.cacheEntries().empty());
}
