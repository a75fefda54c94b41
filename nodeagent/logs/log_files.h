#pragma once
// Reading a task's rotated log files (written by the task's init, rotator.h): cursors, tail,
// and a follower that moves across rotations. Used by the agent's log endpoint (log_server.h).
//
// A cursor is `<index>:<offset>`: byte `offset` of file `<base>.<index>`. Rotation closes file N
// before it creates N+1, so once N+1 exists N is complete: the follower reads N to its end and
// moves on. A file deleted while it is read stays readable through the open descriptor.
//
// Thread safety: free functions are; a LogFollower belongs to one thread.

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "kube/json.h"
#include "kube/status.h"

namespace nodeagent::logs {

struct LogLimits {
  uint32_t maxFiles = 10;
  uint64_t maxFileSize = uint64_t{10} * 1024 * 1024;  // Nomad's defaults: 10 files of 10 MB
};

// The task spec's `logs: {maxFiles, maxFileSize}` (null or absent: defaults). maxFileSize is a
// Kubernetes quantity; out-of-range or malformed values are an Invalid status naming the field.
[[nodiscard]] kube::StatusOr<LogLimits> parseLogLimits(const kube::JsonValue* logs);

struct Cursor {
  uint64_t index = 0;
  uint64_t offset = 0;
  bool operator==(const Cursor&) const = default;
};
std::optional<Cursor> parseCursor(std::string_view text);
std::string formatCursor(const Cursor& c);

// The indexes of `<base>.<N>` in `dir`, ascending (empty if the directory is missing).
std::vector<uint64_t> listIndexes(const std::string& dir, const std::string& base);

// Where the last `lines` lines begin (a final line without '\n' counts); the start of the oldest
// file when there are fewer; the end of the newest when lines == 0. With `upTo`, the lines are
// those before that cursor: what is written after it (while a reader answers) is not counted.
Cursor tailCursor(const std::string& dir, const std::string& base, uint64_t lines, const Cursor* upTo = nullptr);
// The start of the oldest file (0:0 when there is none yet).
Cursor firstCursor(const std::string& dir, const std::string& base);

class LogFollower {
 public:
  LogFollower(std::string dir, std::string base, Cursor start);
  ~LogFollower();
  LogFollower(const LogFollower&) = delete;
  LogFollower& operator=(const LogFollower&) = delete;

  // Up to `max` bytes from the cursor into `out` (cleared first), crossing into the next file
  // when the current one is complete. Returns the cursor of out's first byte. Empty `out`: no
  // new data for now. When the cursor's file was rotated away before it could be opened, the
  // follower jumps to the oldest file still there (the bytes in between are gone).
  Cursor next(std::string& out, size_t max);
  Cursor cursor() const { return cur_; }
  // True once after next() had to skip bytes that were rotated away (then clears).
  bool takeSkipped() { return std::exchange(skipped_, false); }

 private:
  std::string path(uint64_t index) const;
  bool exists(uint64_t index) const;

  const std::string dir_;
  const std::string base_;
  Cursor cur_;
  int fd_ = -1;
  bool skipped_ = false;
};

}  // namespace nodeagent::logs
