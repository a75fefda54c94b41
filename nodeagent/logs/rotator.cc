#include "nodeagent/logs/rotator.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <ctime>

namespace nodeagent::logs {
namespace {

// What getdents64 returns (glibc has no struct for the raw syscall).
struct LinuxDirent64 {
  uint64_t ino;
  int64_t off;
  unsigned short reclen;
  unsigned char type;
  char name[];
};

// "<base>.<digits>" -> the index; false for anything else (including leading zeros).
bool parseIndex(const char* name, const char* base, size_t baseLen, uint64_t& out) {
  if (std::strncmp(name, base, baseLen) != 0 || name[baseLen] != '.') return false;
  const char* p = name + baseLen + 1;
  if (*p == '\0' || (*p == '0' && p[1] != '\0')) return false;
  uint64_t v = 0;
  for (; *p != '\0'; ++p) {
    if (*p < '0' || *p > '9' || v > (UINT64_MAX - 9) / 10) return false;
    v = v * 10 + static_cast<uint64_t>(*p - '0');
  }
  out = v;
  return true;
}

}  // namespace

void Rotator::nameOf(uint64_t index, char* out) const {
  size_t n = std::strlen(base_);
  std::memcpy(out, base_, n);
  out[n++] = '.';
  char digits[24];
  size_t d = 0;
  do {
    digits[d++] = static_cast<char>('0' + index % 10);
    index /= 10;
  } while (index != 0);
  while (d > 0) out[n++] = digits[--d];
  out[n] = '\0';
}

int Rotator::open(int dirFd, const char* base, uint32_t maxFiles, uint64_t maxFileSize) {
  size_t baseLen = std::strlen(base);
  if (dirFd < 0 || baseLen == 0 || baseLen >= sizeof base_ || maxFiles < kMinFiles || maxFiles > kMaxFiles ||
      maxFileSize < kMinFileSize || maxFileSize > kMaxFileSize) {
    return -EINVAL;
  }
  std::memcpy(base_, base, baseLen + 1);
  dirFd_ = dirFd;
  maxFiles_ = maxFiles;
  maxFileSize_ = maxFileSize;

  // Scan for the highest index (a restarted task continues it) and the lowest still present.
  int scan = openat(dirFd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (scan < 0) return -errno;
  bool any = false;
  uint64_t highest = 0, lowest = UINT64_MAX;
  alignas(8) char buf[4096];
  for (;;) {
    long n = syscall(SYS_getdents64, scan, buf, sizeof buf);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    for (long pos = 0; pos < n;) {
      const auto* d = reinterpret_cast<const LinuxDirent64*>(buf + pos);
      uint64_t idx = 0;
      if (parseIndex(d->name, base_, baseLen, idx)) {
        any = true;
        if (idx > highest) highest = idx;
        if (idx < lowest) lowest = idx;
      }
      pos += d->reclen;
    }
  }
  ::close(scan);
  index_ = highest;
  if (any && highest >= maxFiles_) {
    // Files left over from a run with a larger maxFiles (or a crash between open and unlink).
    char name[48];
    for (uint64_t i = lowest; i <= highest - maxFiles_; ++i) {
      nameOf(i, name);
      unlinkat(dirFd_, name, 0);
    }
  }
  int rc = openCurrent();
  if (rc < 0) return rc;
  return size_ >= maxFileSize_ ? rotate() : 0;
}

int Rotator::openCurrent() {
  char name[48];
  nameOf(index_, name);
  // O_NOFOLLOW: the directory is the agent's, but never write through a planted link.
  int fd;
  do fd = openat(dirFd_, name, O_WRONLY | O_CREAT | O_APPEND | O_NOFOLLOW | O_CLOEXEC, 0640);
  while (fd < 0 && errno == EINTR);
  if (fd < 0) return -errno;
  struct stat st;
  size_ = fstat(fd, &st) == 0 ? static_cast<uint64_t>(st.st_size) : 0;
  fd_ = fd;
  return 0;
}

int Rotator::rotate() {
  // The old file is complete before the next one exists: a reader that sees index+1 may read
  // index to its end and move on.
  if (fd_ >= 0) ::close(fd_);
  fd_ = -1;
  ++index_;
  int rc = openCurrent();
  if (index_ >= maxFiles_) {
    char name[48];
    nameOf(index_ - maxFiles_, name);
    unlinkat(dirFd_, name, 0);
  }
  return rc;
}

int Rotator::writeAll(const char* data, size_t len) {
  int rc = 0;
  while (len > 0) {
    if (fd_ < 0) return -EBADF;
    ssize_t n = ::write(fd_, data, len);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return n < 0 ? -errno : -EIO;  // dropped: ENOSPC, EIO, ...
    size_ += static_cast<uint64_t>(n);
    data += n;
    len -= static_cast<size_t>(n);
  }
  return rc;
}

int Rotator::write(const char* data, size_t len) {
  int rc = 0;
  while (len > 0) {
    if (fd_ < 0) {
      // A rotation failed earlier (e.g. EMFILE, ENOSPC on create): try again, else drop.
      int o = openCurrent();
      if (o < 0) return o;
    }
    uint64_t room = size_ < maxFileSize_ ? maxFileSize_ - size_ : 0;
    if (len <= room) {
      int w = writeAll(data, len);
      return w < 0 ? w : rc;
    }
    // The largest prefix that fits and ends a line.
    const void* nl = room > 0 ? memrchr(data, '\n', static_cast<size_t>(room)) : nullptr;
    size_t take = 0;
    if (nl != nullptr) {
      take = static_cast<size_t>(static_cast<const char*>(nl) - data) + 1;
    } else if (size_ == 0) {
      take = static_cast<size_t>(room);  // one line longer than a whole file: split it
    }
    if (take > 0) {
      int w = writeAll(data, take);
      if (w < 0) rc = w;
      data += take;
      len -= take;
    }
    int r = rotate();
    if (r < 0) return r;
  }
  return rc;
}

void Rotator::close() {
  if (fd_ >= 0) ::close(fd_);
  fd_ = -1;
}

int64_t monotonicMs() {
  timespec ts{};
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<int64_t>(ts.tv_sec) * 1000 + ts.tv_nsec / 1000000;
}

int64_t LogPipe::dueInMs(int64_t nowMs) const {
  if (len_ == 0) return -1;
  int64_t due = heldSinceMs_ + kHoldMillis - nowMs;
  return due > 0 ? due : 0;
}

ssize_t LogPipe::pump(int64_t nowMs) {
  if (fd < 0) return 0;
  ssize_t n;
  do n = ::read(fd, buf_ + len_, kBufferSize - len_);
  while (n < 0 && errno == EINTR);
  if (n < 0) return -errno;
  if (n == 0) {
    ::close(fd);
    fd = -1;
    flush();
    return 0;
  }
  bool wasHolding = len_ > 0;
  len_ += static_cast<size_t>(n);
  // Complete lines go out now; a trailing partial line waits for its end (or kHoldMillis),
  // unless it fills the whole buffer.
  const void* nl = memrchr(buf_, '\n', len_);
  if (nl == nullptr) {
    if (len_ == kBufferSize) {
      flush();
    } else if (!wasHolding) {
      heldSinceMs_ = nowMs;
    }
    return n;
  }
  size_t whole = static_cast<size_t>(static_cast<const char*>(nl) - buf_) + 1;
  (void)rotator.write(buf_, whole);
  std::memmove(buf_, buf_ + whole, len_ - whole);
  len_ -= whole;
  heldSinceMs_ = nowMs;  // what is left is a new partial line
  return n;
}

void LogPipe::flush() {
  if (len_ == 0) return;
  (void)rotator.write(buf_, len_);
  len_ = 0;
}

}  // namespace nodeagent::logs
