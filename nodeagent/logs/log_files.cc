#include "nodeagent/logs/log_files.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <charconv>
#include <cstring>

#include "kube/quantity.h"
#include "nodeagent/logs/rotator.h"

namespace nodeagent::logs {

using kube::Status;
using kube::StatusOr;

StatusOr<LogLimits> parseLogLimits(const kube::JsonValue* logs) {
  LogLimits l;
  if (logs == nullptr || logs->IsNull()) return l;
  if (!logs->IsObject()) return Status::invalid("logs: Invalid value: must be an object");
  if (const kube::JsonValue* f = kube::find(*logs, {"maxFiles"}); f != nullptr && !f->IsNull()) {
    if (!f->IsInt64() || f->GetInt64() < kMinFiles || f->GetInt64() > kMaxFiles) {
      return Status::invalid("logs.maxFiles: Invalid value: " + kube::toJson(*f) + ": must be an integer from " +
                             std::to_string(kMinFiles) + " to " + std::to_string(kMaxFiles));
    }
    l.maxFiles = static_cast<uint32_t>(f->GetInt64());
  }
  if (const kube::JsonValue* s = kube::find(*logs, {"maxFileSize"}); s != nullptr && !s->IsNull()) {
    std::string text = s->IsString() ? std::string(kube::view(*s)) : (s->IsNumber() ? kube::toJson(*s) : "");
    auto q = kube::Quantity::parse(text);
    if (!q) {
      return Status::invalid("logs.maxFileSize: Invalid value: " + kube::toJson(*s) + ": " + q.status().message());
    }
    int64_t v = q->value();
    if (v < static_cast<int64_t>(kMinFileSize) || v > static_cast<int64_t>(kMaxFileSize)) {
      return Status::invalid("logs.maxFileSize: Invalid value: \"" + text + "\": must be from 1Ki to 64Gi");
    }
    l.maxFileSize = static_cast<uint64_t>(v);
  }
  return l;
}

std::optional<Cursor> parseCursor(std::string_view text) {
  size_t colon = text.find(':');
  if (colon == std::string_view::npos || colon == 0 || colon + 1 == text.size()) return std::nullopt;
  Cursor c;
  auto parse = [](std::string_view s, uint64_t& out) {
    auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), out);
    return ec == std::errc() && p == s.data() + s.size();
  };
  if (!parse(text.substr(0, colon), c.index) || !parse(text.substr(colon + 1), c.offset)) return std::nullopt;
  return c;
}

std::string formatCursor(const Cursor& c) { return std::to_string(c.index) + ":" + std::to_string(c.offset); }

std::vector<uint64_t> listIndexes(const std::string& dir, const std::string& base) {
  std::vector<uint64_t> out;
  DIR* d = ::opendir(dir.c_str());
  if (d == nullptr) return out;
  std::string prefix = base + ".";
  while (dirent* e = ::readdir(d)) {
    std::string_view n = e->d_name;
    if (n.size() <= prefix.size() || n.compare(0, prefix.size(), prefix) != 0) continue;
    std::string_view digits = n.substr(prefix.size());
    if (digits.size() > 1 && digits[0] == '0') continue;
    uint64_t v = 0;
    auto [p, ec] = std::from_chars(digits.data(), digits.data() + digits.size(), v);
    if (ec == std::errc() && p == digits.data() + digits.size()) out.push_back(v);
  }
  ::closedir(d);
  std::sort(out.begin(), out.end());
  return out;
}

Cursor firstCursor(const std::string& dir, const std::string& base) {
  auto idx = listIndexes(dir, base);
  return idx.empty() ? Cursor{} : Cursor{idx.front(), 0};
}

Cursor tailCursor(const std::string& dir, const std::string& base, uint64_t lines, const Cursor* upTo) {
  auto idx = listIndexes(dir, base);
  if (upTo != nullptr) {
    if (lines == 0) return *upTo;
    idx.erase(std::upper_bound(idx.begin(), idx.end(), upTo->index), idx.end());
  }
  if (idx.empty()) return {};
  bool sawLastByte = false;  // the newest byte ends the last line; its '\n' does not start one
  uint64_t found = 0;
  std::vector<char> buf(size_t{64} * 1024);
  for (auto it = idx.rbegin(); it != idx.rend(); ++it) {
    int fd = ::open((dir + "/" + base + "." + std::to_string(*it)).c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    if (fd < 0) continue;
    struct stat st {};
    ::fstat(fd, &st);
    auto end = static_cast<uint64_t>(st.st_size);
    if (upTo != nullptr && *it == upTo->index) end = std::min(end, upTo->offset);
    if (lines == 0) {
      ::close(fd);
      return {*it, end};
    }
    while (end > 0) {
      uint64_t start = end > buf.size() ? end - buf.size() : 0;
      ssize_t n = ::pread(fd, buf.data(), static_cast<size_t>(end - start), static_cast<off_t>(start));
      if (n <= 0) break;
      for (ssize_t i = n - 1; i >= 0; --i) {
        if (!sawLastByte) {
          sawLastByte = true;
          if (buf[static_cast<size_t>(i)] == '\n') continue;
        }
        if (buf[static_cast<size_t>(i)] == '\n' && ++found == lines) {
          ::close(fd);
          return {*it, start + static_cast<uint64_t>(i) + 1};
        }
      }
      end = start;
    }
    ::close(fd);
  }
  return {idx.front(), 0};
}

LogFollower::LogFollower(std::string dir, std::string base, Cursor start)
    : dir_(std::move(dir)), base_(std::move(base)), cur_(start) {}

LogFollower::~LogFollower() {
  if (fd_ >= 0) ::close(fd_);
}

std::string LogFollower::path(uint64_t index) const { return dir_ + "/" + base_ + "." + std::to_string(index); }

bool LogFollower::exists(uint64_t index) const {
  struct stat st {};
  return ::stat(path(index).c_str(), &st) == 0;
}

Cursor LogFollower::next(std::string& out, size_t max) {
  out.clear();
  for (int hop = 0; hop < 4; ++hop) {
    if (fd_ < 0) {
      fd_ = ::open(path(cur_.index).c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
      if (fd_ < 0) {
        // Rotated away (or not written yet): the oldest file after the cursor's, if any.
        auto idx = listIndexes(dir_, base_);
        auto it = std::upper_bound(idx.begin(), idx.end(), cur_.index);
        if (it == idx.end()) return cur_;
        cur_ = {*it, 0};
        skipped_ = true;
        continue;
      }
    }
    // Checked before reading: if the next file exists, this one was complete before we read it.
    bool complete = exists(cur_.index + 1);
    out.resize(max);
    ssize_t n = ::pread(fd_, out.data(), max, static_cast<off_t>(cur_.offset));
    if (n > 0) {
      out.resize(static_cast<size_t>(n));
      Cursor at = cur_;
      cur_.offset += static_cast<uint64_t>(n);
      return at;
    }
    out.clear();
    if (!complete) return cur_;
    ::close(fd_);
    fd_ = -1;
    cur_ = {cur_.index + 1, 0};
  }
  return cur_;
}

}  // namespace nodeagent::logs
