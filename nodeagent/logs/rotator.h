#pragma once
// Size-rotated log files, written by the task's init (nodeagent/driver/task_init.cc).
//
// Files are `<base>.<index>` in one directory (Nomad's naming: stdout.0, stdout.1, ...). The index
// only grows; at most `maxFiles` files are kept, the oldest deleted at each rotation. A line is
// never split across two files unless it is longer than `maxFileSize` on its own (or took longer
// than LogPipe::kHoldMillis to complete). A restarted task continues the numbering: open()
// finds the highest index and appends to it while it has room.
//
// Everything here runs in the init, a child cloned from the multi-threaded agent: only raw
// syscalls and memmove/memchr, no malloc, no locks, no exceptions. Neither class owns its
// directory fd. Not thread-safe (one init thread uses them).

#include <sys/types.h>

#include <cstddef>
#include <cstdint>

namespace nodeagent::logs {

constexpr uint32_t kMinFiles = 1;
constexpr uint32_t kMaxFiles = 1000;
constexpr uint64_t kMinFileSize = 1024;                          // 1Ki
constexpr uint64_t kMaxFileSize = uint64_t{64} * 1024 * 1024 * 1024;  // 64Gi

class Rotator {
 public:
  // `base` is "stdout" or "stderr" (at most 15 characters). Returns 0 or -errno.
  int open(int dirFd, const char* base, uint32_t maxFiles, uint64_t maxFileSize);
  // Writes all of `data`, rotating at line boundaries. Data that cannot be written (disk full) is
  // dropped, never retried: the task must not block on its logs. Returns 0 or the last -errno.
  int write(const char* data, size_t len);
  void close();
  uint64_t index() const { return index_; }
  uint64_t size() const { return size_; }

 private:
  int rotate();
  int openCurrent();
  void nameOf(uint64_t index, char* out) const;  // "<base>.<index>", NUL-terminated
  int writeAll(const char* data, size_t len);

  int dirFd_ = -1;
  int fd_ = -1;
  char base_[16] = {};
  uint32_t maxFiles_ = 10;
  uint64_t maxFileSize_ = uint64_t{10} * 1024 * 1024;
  uint64_t index_ = 0;
  uint64_t size_ = 0;
};

// One output stream of the task: its pipe's read end, a 64 KiB buffer, and the rotator. Holds a
// trailing partial line (up to the buffer) so that block-buffered writers, whose writes end
// anywhere, still rotate on line boundaries; a partial line held for kHoldMillis is written anyway
// (prompts, progress bars redrawn with '\r').
class LogPipe {
 public:
  static constexpr size_t kBufferSize = size_t{64} * 1024;
  static constexpr int kHoldMillis = 200;

  Rotator rotator;
  int fd = -1;  // the pipe's read end; -1 once at EOF

  // One read(): > 0 bytes taken, 0 at EOF (fd closed, buffer flushed), -errno (EAGAIN: nothing).
  // `nowMs` is CLOCK_MONOTONIC in milliseconds.
  ssize_t pump(int64_t nowMs);
  void flush();
  bool holding() const { return len_ > 0; }
  // Milliseconds until the held partial line is due (0: now), -1 when nothing is held.
  int64_t dueInMs(int64_t nowMs) const;

 private:
  char buf_[kBufferSize];
  size_t len_ = 0;
  int64_t heldSinceMs_ = 0;  // when the partial line in buf_ started waiting
};

// CLOCK_MONOTONIC in milliseconds (async-signal-safe).
int64_t monotonicMs();

}  // namespace nodeagent::logs
