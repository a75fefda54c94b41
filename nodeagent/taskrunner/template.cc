#include "nodeagent/taskrunner/template.h"

#include <fcntl.h>
#include <linux/openat2.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <memory>
#include <vector>

namespace nodeagent {
namespace {

using kube::Status;

std::string_view trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.remove_suffix(1);
  return s;
}

void appendEscaped(std::string& out, std::string_view v) {
  for (char c : v) {
    switch (c) {
      case '&': out += "&amp;"; break;
      case '<': out += "&lt;"; break;
      case '>': out += "&gt;"; break;
      case '"': out += "&quot;"; break;
      default: out.push_back(c);
    }
  }
}

bool truthy(const std::map<std::string, std::string>& vars, const std::string& name) {
  auto it = vars.find(name);
  return it != vars.end() && !it->second.empty() && it->second != "false" && it->second != "0";
}

constexpr int kMaxDepth = 32;

// Renders text[pos..) until the end or the closing tag of `section`; returns where it stopped.
Status render(std::string_view text, size_t& pos, const std::map<std::string, std::string>& vars,
              const std::string& section, bool emit, std::string& out, int depth) {
  if (depth > kMaxDepth) return Status::invalid("sections nested deeper than " + std::to_string(kMaxDepth));
  while (pos < text.size()) {
    size_t open = text.find("{{", pos);
    if (open == std::string_view::npos) {
      if (emit) out.append(text.substr(pos));
      pos = text.size();
      break;
    }
    if (emit) out.append(text.substr(pos, open - pos));
    bool triple = text.compare(open, 3, "{{{") == 0;
    size_t close = text.find(triple ? "}}}" : "}}", open + (triple ? 3 : 2));
    if (close == std::string_view::npos) {
      return Status::invalid("unclosed tag at offset " + std::to_string(open));
    }
    std::string_view tag = text.substr(open + (triple ? 3 : 2), close - open - (triple ? 3 : 2));
    pos = close + (triple ? 3 : 2);
    if (triple) {
      if (emit) {
        auto it = vars.find(std::string(trim(tag)));
        if (it != vars.end()) out += it->second;
      }
      continue;
    }
    tag = trim(tag);
    if (tag.empty()) return Status::invalid("empty tag at offset " + std::to_string(open));
    char kind = tag.front();
    std::string name(trim(tag.substr(kind == '#' || kind == '^' || kind == '/' || kind == '&' || kind == '!' ? 1 : 0)));
    switch (kind) {
      case '!':
        break;
      case '#':
      case '^': {
        if (name.empty()) return Status::invalid("section without a name at offset " + std::to_string(open));
        bool show = truthy(vars, name) == (kind == '#');
        if (auto st = render(text, pos, vars, name, emit && show, out, depth + 1); !st) return st;
        break;
      }
      case '/':
        if (name != section) {
          return Status::invalid("{{/" + name + "}} closes " + (section.empty() ? "nothing" : "{{#" + section + "}}"));
        }
        return Status::ok();
      default: {
        if (!emit) break;
        auto it = vars.find(name);
        if (it == vars.end()) break;
        if (kind == '&') {
          out += it->second;
        } else {
          appendEscaped(out, it->second);
        }
      }
    }
  }
  if (!section.empty()) return Status::invalid("section {{#" + section + "}} is not closed");
  return Status::ok();
}

// openat2 beneath `dir`, never through a symlink or a magic link.
int openBeneath(int dir, const std::string& path, uint64_t flags, mode_t mode) {
  open_how how{};
  how.flags = flags | O_CLOEXEC;
  how.mode = (flags & O_CREAT) != 0 ? mode : 0;
  how.resolve = RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS;
  return static_cast<int>(syscall(SYS_openat2, dir, path.c_str(), &how, sizeof how));
}

std::string errnoText(int err) {
  if (err == ELOOP) return "a path component is a symlink (refused)";
  if (err == EXDEV) return "the path escapes the task directory";
  return std::strerror(err);
}

struct Fd {
  int fd = -1;
  explicit Fd(int f) : fd(f) {}
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;
  ~Fd() {
    if (fd >= 0) close(fd);
  }
};

}  // namespace

kube::StatusOr<std::string> renderMustache(std::string_view text, const std::map<std::string, std::string>& vars) {
  std::string out;
  out.reserve(text.size());
  size_t pos = 0;
  if (auto st = render(text, pos, vars, "", true, out, 0); !st) return st;
  return out;
}

kube::StatusOr<mode_t> parseFileMode(const std::string& perms) {
  std::string p = perms.empty() ? "0644" : perms;
  if (p.size() == 4 && p[0] == '0') p.erase(0, 1);
  if (p.size() != 3) return Status::invalid("perms \"" + perms + "\" is not an octal mode like 0644");
  mode_t m = 0;
  for (char c : p) {
    if (c < '0' || c > '7') return Status::invalid("perms \"" + perms + "\" is not an octal mode like 0644");
    m = m * 8 + static_cast<mode_t>(c - '0');
  }
  return m;
}

kube::Status writeTaskFile(const std::string& taskDir, const std::string& allocDir, const std::string& destination,
                           std::string_view data, mode_t mode, uid_t uid, gid_t gid) {
  auto refuse = [&](const std::string& why) {
    return Status::invalid("destination \"" + destination + "\": " + why);
  };
  if (destination.empty()) return refuse("empty");
  if (destination.find('\0') != std::string::npos) return refuse("contains a NUL byte");
  if (destination.front() == '/') return refuse("must be relative to the task directory, not absolute");
  std::string rel = destination;
  std::string base = taskDir;
  if (rel.rfind("../alloc/", 0) == 0) {
    base = allocDir;
    rel = rel.substr(9);
  }
  // Split into components; ".." anywhere (else) is refused before any file system access.
  std::vector<std::string> parts;
  for (size_t pos = 0; pos <= rel.size();) {
    size_t end = rel.find('/', pos);
    if (end == std::string::npos) end = rel.size();
    std::string c = rel.substr(pos, end - pos);
    if (c == "..") return refuse("\"..\" may not leave the task directory (only ../alloc/ names the shared one)");
    if (!c.empty() && c != ".") parts.push_back(c);
    pos = end + 1;
  }
  if (parts.empty() || rel.back() == '/') return refuse("names a directory, not a file");

  Fd dir(open(base.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC | O_NOFOLLOW));
  if (dir.fd < 0) return Status::internal("open " + base + ": " + std::strerror(errno));
  int cur = dir.fd;
  std::vector<std::unique_ptr<Fd>> chain;
  for (size_t i = 0; i + 1 < parts.size(); ++i) {
    int next = openBeneath(cur, parts[i], O_RDONLY | O_DIRECTORY, 0);
    if (next < 0 && errno == ENOENT) {
      if (mkdirat(cur, parts[i].c_str(), 0755) < 0 && errno != EEXIST) {
        return refuse("mkdir " + parts[i] + ": " + std::strerror(errno));
      }
      next = openBeneath(cur, parts[i], O_RDONLY | O_DIRECTORY, 0);
    }
    if (next < 0) return refuse(parts[i] + ": " + errnoText(errno));
    chain.push_back(std::make_unique<Fd>(next));
    cur = next;
  }
  const std::string& name = parts.back();
  std::string tmp = "." + name + ".foxden-tmp";
  int fd = openBeneath(cur, tmp, O_WRONLY | O_CREAT | O_TRUNC | O_NOFOLLOW, 0600);
  if (fd < 0) return refuse(errnoText(errno));
  Fd file(fd);
  for (size_t off = 0; off < data.size();) {
    ssize_t n = write(fd, data.data() + off, data.size() - off);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      int err = errno;
      unlinkat(cur, tmp.c_str(), 0);
      return Status::internal("write " + destination + ": " + std::strerror(err));
    }
    off += static_cast<size_t>(n);
  }
  if (fchown(fd, uid, gid) < 0 || fchmod(fd, mode) < 0 || renameat(cur, tmp.c_str(), cur, name.c_str()) < 0) {
    int err = errno;
    unlinkat(cur, tmp.c_str(), 0);
    return refuse(std::strerror(err));
  }
  return Status::ok();
}

}  // namespace nodeagent
