#pragma once
// Rootfs tarballs for the exec driver: verified by SHA-256, unpacked once per digest into a
// content-addressed cache, then bind-mounted read-only by every task that names that digest.
//
//   prepare(path, sha256)
//     path under an allowed dir? ── no ──► invalid
//     <cacheDir>/<sha256>/ exists? ── yes ──► return it (no hashing, no unpack)
//     lock(digest)                      one unpack per digest in this process
//       stream SHA-256 of the file      mismatch ──► invalid
//       unpack into <cacheDir>/.tmp-<sha256>-<n>/  (libarchive, secure flags, own checks,
//                                        hashed again while read: the file may not change meanwhile)
//       syncfs, rename to <cacheDir>/<sha256>/   the only way a cache entry appears: a crash
//                                        leaves a .tmp- dir, removed by the next RootfsCache
//
// Unpacking is safe against hostile tarballs: entries may be directories, regular files, symlinks
// and hard links only (no device nodes, FIFOs, sockets); no absolute names, no "..", nothing
// written through a symlink (ARCHIVE_EXTRACT_SECURE_*), hard links only to entries inside the
// tree; setuid/setgid bits dropped; owners not restored (everything belongs to the agent: the
// tree is read-only to tasks); entry count and unpacked bytes capped.
//
// Thread safety: prepare() may be called from any thread.

#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "kube/status.h"

namespace nodeagent {

struct RootfsOptions {
  std::string cacheDir;                  // <data-dir>/rootfs
  std::vector<std::string> allowedDirs;  // tarballs must lie under one of these (<data-dir>/images)
  uint64_t maxBytes = uint64_t{16} << 30;  // unpacked regular-file bytes per tarball
  uint64_t maxEntries = 500000;            // entries per tarball
};

class RootfsCache {
 public:
  explicit RootfsCache(RootfsOptions options);
  // The unpacked tree of the tarball at `path` whose SHA-256 is `sha256` (64 lowercase hex).
  [[nodiscard]] kube::StatusOr<std::string> prepare(const std::string& path, const std::string& sha256);
  // How many tarballs this cache has unpacked (for tests and metrics).
  uint64_t unpacks() const;

 private:
  kube::Status unpack(const std::string& path, const std::string& sha256, const std::string& into);

  const RootfsOptions options_;
  mutable std::mutex mu_;
  std::map<std::string, std::shared_ptr<std::mutex>> digestLocks_;  // guarded by mu_
  uint64_t unpacks_ = 0;                                              // guarded by mu_
  uint64_t tmpCounter_ = 0;                                           // guarded by mu_
};

// SHA-256 of a file, streamed (OpenSSL EVP), as lowercase hex.
[[nodiscard]] kube::StatusOr<std::string> sha256File(const std::string& path);

}  // namespace nodeagent
