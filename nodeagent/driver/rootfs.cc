#include "nodeagent/driver/rootfs.h"

#include <archive.h>
#include <archive_entry.h>
#include <dirent.h>
#include <dlfcn.h>
#include <fcntl.h>
#include <openssl/evp.h>
#include <sched.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <climits>
#include <cstring>
#include <filesystem>
#include <iostream>
#include <optional>
#include <thread>

#include "kube/timeutil.h"

namespace nodeagent {

using kube::Status;
using kube::StatusOr;

namespace {

constexpr size_t kReadChunk = size_t{1} << 20;

std::string errnoText(int err) { return std::strerror(err); }

class Fd {
 public:
  explicit Fd(int fd) : fd_(fd) {}
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;
  ~Fd() {
    if (fd_ >= 0) ::close(fd_);
  }
  int get() const { return fd_; }

 private:
  int fd_;
};

// EVP_MD_CTX with RAII; update() streams, hex() finishes.
class Sha256 {
 public:
  Sha256() : ctx_(EVP_MD_CTX_new()) { ok_ = ctx_ != nullptr && EVP_DigestInit_ex(ctx_, EVP_sha256(), nullptr) == 1; }
  Sha256(const Sha256&) = delete;
  Sha256& operator=(const Sha256&) = delete;
  ~Sha256() { EVP_MD_CTX_free(ctx_); }
  void update(const void* data, size_t n) { ok_ = ok_ && EVP_DigestUpdate(ctx_, data, n) == 1; }
  StatusOr<std::string> hex() {
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned len = 0;
    if (!ok_ || EVP_DigestFinal_ex(ctx_, md, &len) != 1) return Status::internal("sha256: OpenSSL EVP failed");
    static const char kHex[] = "0123456789abcdef";
    std::string out;
    for (unsigned i = 0; i < len; ++i) {
      out.push_back(kHex[md[i] >> 4]);
      out.push_back(kHex[md[i] & 15]);
    }
    return out;
  }

 private:
  EVP_MD_CTX* ctx_;
  bool ok_ = false;
};

// Reads the rest of fd into the hash.
Status hashRest(int fd, Sha256& h, std::vector<char>& buf) {
  for (;;) {
    ssize_t n = ::read(fd, buf.data(), buf.size());
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return Status::internal("read: " + errnoText(errno));
    if (n == 0) return Status::ok();
    h.update(buf.data(), static_cast<size_t>(n));
  }
}

bool validDigest(const std::string& d) {
  return d.size() == 64 && d.find_first_not_of("0123456789abcdef") == std::string::npos;
}

bool isDirectory(const std::string& p) {
  struct stat st;
  return ::lstat(p.c_str(), &st) == 0 && S_ISDIR(st.st_mode);
}

std::optional<std::string> realPath(const std::string& p) {
  char buf[PATH_MAX];
  if (::realpath(p.c_str(), buf) == nullptr) return std::nullopt;
  return std::string(buf);
}

// A tar member name the unpacker accepts: relative, no ".." component. "./x" is fine; "." (the
// tree's own root) is reported as empty so that it is skipped.
StatusOr<std::string> memberName(const char* raw, const char* what) {
  std::string name = raw == nullptr ? "" : raw;
  if (!name.empty() && name[0] == '/') return Status::invalid(std::string(what) + " '" + name + "' is absolute");
  std::string clean;
  size_t pos = 0;
  while (pos <= name.size()) {
    size_t end = name.find('/', pos);
    if (end == std::string::npos) end = name.size();
    std::string part = name.substr(pos, end - pos);
    if (part == "..") return Status::invalid(std::string(what) + " '" + name + "' contains '..'");
    if (!part.empty() && part != ".") clean += (clean.empty() ? "" : "/") + part;
    pos = end + 1;
  }
  return clean;
}

// libarchive is loaded on the first unpack, not linked: it and what it pulls in (libxml2, ICU,
// nettle, lzma, zstd, lz4, bz2, acl) cost every agent 1.5 MiB of resident memory from its start
// (docs/benchmarks.md), for a feature used only when an allocation names a rootfs tarball. The
// header gives the types; the SONAME is libarchive 3's (Debian's libarchive13).
constexpr const char* kLibarchiveSoname = "libarchive.so.13";
// The functions used, once: the struct's members and the loader's dlsym calls are made from it.
#define FOXDEN_LIBARCHIVE_FUNCTIONS(X) \
  X(archive_read_new) \
  X(archive_read_free) \
  X(archive_write_disk_new) \
  X(archive_write_free) \
  X(archive_read_support_format_tar) \
  X(archive_read_support_filter_gzip) \
  X(archive_read_support_filter_bzip2) \
  X(archive_read_support_filter_xz) \
  X(archive_read_support_filter_zstd) \
  X(archive_read_support_filter_lz4) \
  X(archive_write_disk_set_options) \
  X(archive_read_open) \
  X(archive_error_string) \
  X(archive_read_next_header) \
  X(archive_entry_pathname) \
  X(archive_entry_set_pathname) \
  X(archive_entry_hardlink) \
  X(archive_entry_set_hardlink) \
  X(archive_entry_filetype) \
  X(archive_entry_set_perm) \
  X(archive_entry_perm) \
  X(archive_entry_size_is_set) \
  X(archive_entry_size) \
  X(archive_write_header) \
  X(archive_read_data_block) \
  X(archive_write_data_block) \
  X(archive_write_finish_entry) \
  X(archive_write_close) \
  X(archive_set_error)

struct Libarchive {
#define FOXDEN_LA_MEMBER(f) decltype(&::f) f = nullptr;  // NOLINT(bugprone-macro-parentheses): a declaration
  FOXDEN_LIBARCHIVE_FUNCTIONS(FOXDEN_LA_MEMBER)
#undef FOXDEN_LA_MEMBER
};

// Loads libarchive once (thread-safe); after a failure every call returns the same error.
StatusOr<const Libarchive*> loadLibarchive() {
  static const StatusOr<const Libarchive*> loaded = []() -> StatusOr<const Libarchive*> {
    void* h = ::dlopen(kLibarchiveSoname, RTLD_NOW | RTLD_LOCAL);
    if (h == nullptr) return Status::internal(std::string("rootfs tarballs need libarchive: ") + ::dlerror());
    static Libarchive api;
    std::string missing;
#define FOXDEN_LA_LOAD(f)                                                 \
  api.f = reinterpret_cast<decltype(api.f)>(::dlsym(h, #f));              \
  if (api.f == nullptr) missing += std::string(missing.empty() ? "" : ", ") + #f;
    FOXDEN_LIBARCHIVE_FUNCTIONS(FOXDEN_LA_LOAD)
#undef FOXDEN_LA_LOAD
    if (!missing.empty()) return Status::internal(std::string(kLibarchiveSoname) + " lacks " + missing);
    return &api;
  }();
  return loaded;
}

#undef FOXDEN_LIBARCHIVE_FUNCTIONS

// The loaded library, for code that runs only after loadLibarchive() succeeded.
const Libarchive& la() { return **loadLibarchive(); }

struct ReadContext {
  int fd;
  Sha256* hash;
  std::vector<char>* buf;
};

la_ssize_t readCallback(struct archive* a, void* opaque, const void** out) {
  auto* c = static_cast<ReadContext*>(opaque);
  for (;;) {
    ssize_t n = ::read(c->fd, c->buf->data(), c->buf->size());
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      la().archive_set_error(a, errno, "read: %s", std::strerror(errno));
      return -1;
    }
    c->hash->update(c->buf->data(), static_cast<size_t>(n));
    *out = c->buf->data();
    return n;
  }
}

struct ArchiveFree {
  void operator()(struct archive* a) const { la().archive_read_free(a); }
};
struct DiskFree {
  void operator()(struct archive* a) const { la().archive_write_free(a); }
};

struct UnpackStats {
  uint64_t entries = 0;
  uint64_t bytes = 0;
};

// Extracts the archive read from `fd` into the calling thread's cwd. Must run on a thread with
// its own cwd (unshare(CLONE_FS)): libarchive's secure checks work on names relative to it.
Status extractHere(int fd, Sha256& hash, const RootfsOptions& o, UnpackStats& stats) {
  std::vector<char> buf(kReadChunk);
  std::unique_ptr<struct archive, ArchiveFree> in(la().archive_read_new());
  std::unique_ptr<struct archive, DiskFree> out(la().archive_write_disk_new());
  if (!in || !out) return Status::internal("libarchive: out of memory");
  // Tar (ustar, pax, GNU) only, compressed or not; no formats or filters run external programs.
  la().archive_read_support_format_tar(in.get());
  la().archive_read_support_filter_gzip(in.get());
  la().archive_read_support_filter_bzip2(in.get());
  la().archive_read_support_filter_xz(in.get());
  la().archive_read_support_filter_zstd(in.get());
  la().archive_read_support_filter_lz4(in.get());
  // No OWNER (everything stays the agent's), no XATTR (security.capability would grant file
  // capabilities), no ACL/FFLAGS; PERM restores modes after we strip setuid/setgid.
  la().archive_write_disk_set_options(out.get(), ARCHIVE_EXTRACT_SECURE_NODOTDOT | ARCHIVE_EXTRACT_SECURE_SYMLINKS |
                                                ARCHIVE_EXTRACT_SECURE_NOABSOLUTEPATHS | ARCHIVE_EXTRACT_PERM |
                                                ARCHIVE_EXTRACT_TIME);
  ReadContext rc{fd, &hash, &buf};
  if (la().archive_read_open(in.get(), &rc, nullptr, readCallback, nullptr) != ARCHIVE_OK) {
    return Status::invalid(std::string("not a tarball: ") + la().archive_error_string(in.get()));
  }
  for (;;) {
    struct archive_entry* e = nullptr;
    int r = la().archive_read_next_header(in.get(), &e);
    if (r == ARCHIVE_EOF) break;
    if (r < ARCHIVE_WARN) return Status::invalid(std::string("bad tarball: ") + la().archive_error_string(in.get()));
    if (++stats.entries > o.maxEntries) {
      return Status::invalid("tarball has more than " + std::to_string(o.maxEntries) + " entries");
    }
    auto name = memberName(la().archive_entry_pathname(e), "entry");
    if (!name) return name.status();
    if (name->empty()) continue;  // "./": the tree itself
    la().archive_entry_set_pathname(e, name->c_str());
    const char* link = la().archive_entry_hardlink(e);
    if (link != nullptr) {
      auto target = memberName(link, ("hard link " + *name + " ->").c_str());
      if (!target) return target.status();
      if (target->empty()) return Status::invalid("hard link " + *name + " points at the tree's root");
      la().archive_entry_set_hardlink(e, target->c_str());
    } else {
      mode_t type = la().archive_entry_filetype(e);
      if (type != AE_IFREG && type != AE_IFDIR && type != AE_IFLNK) {
        return Status::invalid("entry '" + *name + "': device nodes, FIFOs and sockets are not allowed");
      }
    }
    la().archive_entry_set_perm(e, la().archive_entry_perm(e) & 01777);  // no setuid/setgid
    if (la().archive_entry_size_is_set(e) != 0 && la().archive_entry_size(e) > 0) {
      stats.bytes += static_cast<uint64_t>(la().archive_entry_size(e));
      if (stats.bytes > o.maxBytes) {
        return Status::invalid("tarball unpacks to more than " + std::to_string(o.maxBytes) + " bytes");
      }
    }
    if (la().archive_write_header(out.get(), e) < ARCHIVE_WARN) {
      return Status::invalid("entry '" + *name + "': " + la().archive_error_string(out.get()));
    }
    uint64_t written = 0;
    for (;;) {
      const void* block = nullptr;
      size_t size = 0;
      la_int64_t offset = 0;
      r = la().archive_read_data_block(in.get(), &block, &size, &offset);
      if (r == ARCHIVE_EOF) break;
      if (r < ARCHIVE_WARN) {
        return Status::invalid("entry '" + *name + "': " + la().archive_error_string(in.get()));
      }
      written += size;
      if (written > static_cast<uint64_t>(std::max<la_int64_t>(la().archive_entry_size(e), 0))) {
        return Status::invalid("entry '" + *name + "': more data than its header says");
      }
      if (la().archive_write_data_block(out.get(), block, size, offset) < ARCHIVE_WARN) {
        return Status::invalid("entry '" + *name + "': " + la().archive_error_string(out.get()));
      }
    }
    if (la().archive_write_finish_entry(out.get()) < ARCHIVE_WARN) {
      return Status::invalid("entry '" + *name + "': " + la().archive_error_string(out.get()));
    }
  }
  // Directory modes and times are applied here (libarchive defers them).
  if (la().archive_write_close(out.get()) != ARCHIVE_OK) {
    return Status::internal(std::string("finish unpack: ") + la().archive_error_string(out.get()));
  }
  // Whatever follows the end-of-archive marker is part of the file, hence of the digest.
  return hashRest(fd, hash, buf);
}

void removeTree(const std::string& path) {
  std::error_code ec;
  std::filesystem::remove_all(path, ec);  // removes symlinks, never follows them
}

}  // namespace

StatusOr<std::string> sha256File(const std::string& path) {
  Fd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (fd.get() < 0) return Status::notFound(path + ": " + errnoText(errno));
  Sha256 h;
  std::vector<char> buf(kReadChunk);
  if (auto st = hashRest(fd.get(), h, buf); !st) return st;
  return h.hex();
}

RootfsCache::RootfsCache(RootfsOptions options) : options_(std::move(options)) {
  std::error_code ec;
  std::filesystem::create_directories(options_.cacheDir, ec);
  ::chmod(options_.cacheDir.c_str(), 0700);
  // A crash mid-unpack leaves a .tmp- dir and never a cache entry: clear them out.
  if (DIR* d = ::opendir(options_.cacheDir.c_str())) {
    while (dirent* de = ::readdir(d)) {
      if (std::strncmp(de->d_name, ".tmp-", 5) == 0) removeTree(options_.cacheDir + "/" + de->d_name);
    }
    ::closedir(d);
  }
}

uint64_t RootfsCache::unpacks() const {
  std::lock_guard l(mu_);
  return unpacks_;
}

StatusOr<std::string> RootfsCache::prepare(const std::string& path, const std::string& sha256) {
  if (!validDigest(sha256)) return Status::invalid("rootfs.sha256 must be 64 lowercase hex digits");
  if (path.empty() || path[0] != '/') return Status::invalid("rootfs.path '" + path + "' must be absolute");
  // Resolved first, so that neither ".." nor a symlink leads outside the allowed directories.
  auto resolved = realPath(path);
  if (!resolved) return Status::invalid("rootfs.path " + path + ": " + errnoText(errno));
  bool allowed = false;
  for (const auto& dir : options_.allowedDirs) {
    auto d = realPath(dir);
    if (d && (resolved->rfind(*d + "/", 0) == 0 || *d == "/")) allowed = true;
  }
  if (!allowed) {
    return Status::invalid("rootfs.path " + path + " is not under an allowed rootfs directory (--rootfs-dir)");
  }
  const std::string final = options_.cacheDir + "/" + sha256;
  // Content-addressed: a present entry is exactly what the digest names, whichever file made it.
  if (isDirectory(final)) return final;

  std::shared_ptr<std::mutex> lock;
  {
    std::lock_guard l(mu_);
    auto& slot = digestLocks_[sha256];
    if (!slot) slot = std::make_shared<std::mutex>();
    lock = slot;
  }
  std::lock_guard digestLock(*lock);
  if (isDirectory(final)) return final;  // another start unpacked it while we waited
  if (auto st = unpack(*resolved, sha256, final); !st) return st;
  return final;
}

Status RootfsCache::unpack(const std::string& path, const std::string& sha256, const std::string& final) {
  if (auto lib = loadLibarchive(); !lib) return lib.status();
  auto t0 = std::chrono::steady_clock::now();
  Fd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW));
  if (fd.get() < 0) return Status::invalid("rootfs.path " + path + ": " + errnoText(errno));
  struct stat st;
  if (::fstat(fd.get(), &st) < 0 || !S_ISREG(st.st_mode)) {
    return Status::invalid("rootfs.path " + path + " is not a regular file");
  }
  // Verified before anything is unpacked, so a wrong digest is reported as such.
  {
    Sha256 h;
    std::vector<char> buf(kReadChunk);
    if (auto s = hashRest(fd.get(), h, buf); !s) return Status::invalid("rootfs.path " + path + ": " + s.message());
    auto got = h.hex();
    if (!got) return got.status();
    if (*got != sha256) {
      return Status::invalid("rootfs " + path + ": sha256 mismatch: expected " + sha256 + ", file has " + *got);
    }
  }
  if (::lseek(fd.get(), 0, SEEK_SET) != 0) return Status::internal("lseek " + path + ": " + errnoText(errno));

  std::string tmp;
  {
    std::lock_guard l(mu_);
    tmp = options_.cacheDir + "/.tmp-" + sha256 + "-" + std::to_string(::getpid()) + "-" + std::to_string(++tmpCounter_);
  }
  if (::mkdir(tmp.c_str(), 0755) < 0) return Status::internal("mkdir " + tmp + ": " + errnoText(errno));

  // libarchive's secure checks resolve names against the cwd, which is per process: the unpack
  // runs on a thread of its own that unshares its filesystem context and chdirs into the tree.
  Status result = Status::ok();
  Sha256 again;
  UnpackStats stats;
  std::thread worker([&] {
    if (::unshare(CLONE_FS) < 0 || ::chdir(tmp.c_str()) < 0) {
      result = Status::internal("unshare/chdir for unpack: " + errnoText(errno));
      return;
    }
    ::umask(022);
    result = extractHere(fd.get(), again, options_, stats);
  });
  worker.join();
  if (result) {
    // Hashed again while unpacking: the file must not have changed since it was verified.
    auto got = again.hex();
    if (!got) {
      result = got.status();
    } else if (*got != sha256) {
      result = Status::invalid("rootfs " + path + " changed while it was unpacked");
    }
  }
  if (result) {
    ::chmod(tmp.c_str(), 0755);
    // Durable before it becomes visible: a power cut must not leave a complete-looking entry with
    // empty files.
    Fd dir(::open(tmp.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
    if (dir.get() < 0 || ::syncfs(dir.get()) < 0) result = Status::internal("syncfs " + tmp + ": " + errnoText(errno));
  }
  if (result && ::rename(tmp.c_str(), final.c_str()) < 0) {
    // Another agent process sharing the data dir won the race: its entry is as good as ours.
    if (errno != EEXIST && errno != ENOTEMPTY) result = Status::internal("rename " + tmp + ": " + errnoText(errno));
  }
  removeTree(tmp);  // no-op after a successful rename
  if (!result) {
    return Status::invalid("rootfs " + path + ": " + result.message());
  }
  Fd parent(::open(options_.cacheDir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (parent.get() >= 0) ::fsync(parent.get());
  {
    std::lock_guard l(mu_);
    ++unpacks_;
  }
  auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - t0).count();
  std::cerr << kube::nowTime() << " foxden-agent: rootfs unpacked sha256=" << sha256 << " path=" << path
            << " entries=" << stats.entries << " bytes=" << stats.bytes << " ms=" << ms << std::endl;
  return Status::ok();
}

}  // namespace nodeagent
