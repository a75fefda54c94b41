#include "operator/cron.h"

#include <algorithm>
#include <cctype>
#include <cstdlib>
#include <fstream>
#include <iterator>
#include <sstream>

namespace op {
namespace {

using kube::Status;
using kube::StatusOr;

constexpr int64_t kDay = 86400;

// Days since 1970-01-01 of a civil date, and back (Howard Hinnant's algorithms, via <chrono>).
int64_t daysFromCivil(int y, int m, int d) {
  return std::chrono::sys_days{std::chrono::year{y} / m / d}.time_since_epoch().count();
}
std::chrono::year_month_day civil(int64_t days) {
  return std::chrono::year_month_day{std::chrono::sys_days{std::chrono::days{days}}};
}
int64_t floorDiv(int64_t a, int64_t b) { return a / b - ((a % b != 0) && ((a < 0) != (b < 0))); }

bool isLeap(int y) { return std::chrono::year{y}.is_leap(); }

// ---- TZif -------------------------------------------------------------------------------------

int64_t be(const unsigned char* p, int n) {
  uint64_t v = 0;
  for (int i = 0; i < n; ++i) v = (v << 8) | p[i];
  if (n == 4) return static_cast<int32_t>(static_cast<uint32_t>(v));
  return static_cast<int64_t>(v);
}

// The day (days since the epoch) a rule names in `year`.
int64_t ruleDay(const TimeZone::Rule& r, int year) {
  switch (r.kind) {
    case TimeZone::Rule::kJulian1: {  // 1..365, February 29 never counted
      int n = r.month;
      int64_t d = daysFromCivil(year, 1, 1) + n - 1;
      if (isLeap(year) && n >= 60) ++d;
      return d;
    }
    case TimeZone::Rule::kJulian0:  // 0..365, counting February 29
      return daysFromCivil(year, 1, 1) + r.month;
    case TimeZone::Rule::kMonthWeekDay: {
      // Week w (1..5, 5 = last) of month m, weekday d (0 = Sunday).
      int64_t first = daysFromCivil(year, r.month, 1);
      int firstDow = static_cast<int>(((first % 7) + 11) % 7);  // 1970-01-01 was a Thursday (4)
      int64_t d = first + ((r.day - firstDow + 7) % 7) + 7 * static_cast<int64_t>(r.week - 1);
      int next = r.month == 12 ? 1 : r.month + 1;
      int64_t monthEnd = daysFromCivil(r.month == 12 ? year + 1 : year, next, 1);
      while (d >= monthEnd) d -= 7;
      return d;
    }
  }
  return 0;
}

class PosixParser {
 public:
  explicit PosixParser(const std::string& s) : s_(s) {}
  bool name() {
    if (pos_ < s_.size() && s_[pos_] == '<') {
      size_t e = s_.find('>', pos_);
      if (e == std::string::npos) return false;
      pos_ = e + 1;
      return true;
    }
    size_t start = pos_;
    while (pos_ < s_.size() && std::isalpha(static_cast<unsigned char>(s_[pos_]))) ++pos_;
    return pos_ - start >= 3;
  }
  // [+-]hh[:mm[:ss]] as seconds.
  bool hms(int& out) {
    int sign = 1;
    if (pos_ < s_.size() && (s_[pos_] == '+' || s_[pos_] == '-')) sign = s_[pos_++] == '-' ? -1 : 1;
    int parts[3] = {0, 0, 0};
    for (int i = 0; i < 3; ++i) {
      if (i > 0) {
        if (pos_ >= s_.size() || s_[pos_] != ':') break;
        ++pos_;
      }
      size_t start = pos_;
      while (pos_ < s_.size() && std::isdigit(static_cast<unsigned char>(s_[pos_]))) {
        parts[i] = parts[i] * 10 + (s_[pos_++] - '0');
        if (parts[i] > 1000) return false;
      }
      if (pos_ == start) return false;
    }
    out = sign * (parts[0] * 3600 + parts[1] * 60 + parts[2]);
    return true;
  }
  bool number(int& out) {
    size_t start = pos_;
    out = 0;
    while (pos_ < s_.size() && std::isdigit(static_cast<unsigned char>(s_[pos_]))) {
      out = out * 10 + (s_[pos_++] - '0');
      if (out > 1000) return false;
    }
    return pos_ > start;
  }
  bool rule(TimeZone::Rule& r) {
    if (pos_ >= s_.size()) return false;
    if (s_[pos_] == 'M') {
      ++pos_;
      r.kind = TimeZone::Rule::kMonthWeekDay;
      if (!number(r.month) || !eat('.') || !number(r.week) || !eat('.') || !number(r.day)) return false;
      if (r.month < 1 || r.month > 12 || r.week < 1 || r.week > 5 || r.day > 6) return false;
    } else if (s_[pos_] == 'J') {
      ++pos_;
      r.kind = TimeZone::Rule::kJulian1;
      if (!number(r.month) || r.month < 1 || r.month > 365) return false;
    } else {
      r.kind = TimeZone::Rule::kJulian0;
      if (!number(r.month) || r.month > 365) return false;
    }
    r.time = 7200;
    if (pos_ < s_.size() && s_[pos_] == '/') {
      ++pos_;
      if (!hms(r.time)) return false;
    }
    return true;
  }
  bool eat(char c) {
    if (pos_ < s_.size() && s_[pos_] == c) {
      ++pos_;
      return true;
    }
    return false;
  }
  bool done() const { return pos_ == s_.size(); }
  bool at(char c) const { return pos_ < s_.size() && s_[pos_] == c; }
  bool atEnd() const { return pos_ >= s_.size(); }

 private:
  const std::string& s_;
  size_t pos_ = 0;
};

}  // namespace

StatusOr<TimeZone::PosixTz> TimeZone::parsePosix(const std::string& s) {
  PosixTz tz;
  PosixParser p(s);
  auto bad = [&] { return Status::invalid("unsupported POSIX TZ rule \"" + s + "\""); };
  int off = 0;
  if (!p.name() || !p.hms(off)) return bad();
  tz.stdOffset = -off;  // POSIX offsets are west of UTC
  if (p.done()) return tz;
  if (!p.name()) return bad();
  tz.hasDst = true;
  tz.dstOffset = tz.stdOffset + 3600;
  if (!p.at(',') && !p.atEnd()) {
    if (!p.hms(off)) return bad();
    tz.dstOffset = -off;
  }
  // Without rules POSIX says "implementation-defined"; the US rules are the traditional default.
  if (p.atEnd()) {
    tz.start = Rule{Rule::kMonthWeekDay, 3, 2, 0, 7200};
    tz.end = Rule{Rule::kMonthWeekDay, 11, 1, 0, 7200};
    return tz;
  }
  if (!p.eat(',') || !p.rule(tz.start) || !p.eat(',') || !p.rule(tz.end) || !p.done()) return bad();
  return tz;
}

int TimeZone::posixOffsetAt(const PosixTz& tz, Seconds t) {
  if (!tz.hasDst) return tz.stdOffset;
  int64_t secs = t.time_since_epoch().count();
  int year = static_cast<int>(civil(floorDiv(secs + tz.stdOffset, kDay)).year());
  // Transition instants in UTC: the start is given in standard time, the end in daylight time.
  int64_t start = ruleDay(tz.start, year) * kDay + tz.start.time - tz.stdOffset;
  int64_t end = ruleDay(tz.end, year) * kDay + tz.end.time - tz.dstOffset;
  bool dst = start < end ? (secs >= start && secs < end) : !(secs >= end && secs < start);
  return dst ? tz.dstOffset : tz.stdOffset;
}

TimeZone TimeZone::utc() {
  TimeZone z;
  z.name_ = "UTC";
  return z;
}

StatusOr<TimeZone> TimeZone::load(const std::string& name) {
  if (name.empty() || name == "UTC" || name == "Etc/UTC" || name == "Z") return utc();
  // IANA names: letters, digits, '_', '-', '+', '/'; never "..", never absolute.
  bool ok = name.size() < 128 && name.front() != '/' && name.find("..") == std::string::npos;
  for (char c : name) {
    ok = ok && (std::isalnum(static_cast<unsigned char>(c)) || c == '_' || c == '-' || c == '+' || c == '/');
  }
  if (!ok) return Status::invalid("invalid time zone name \"" + name + "\"");
  const char* dir = std::getenv("ZONEINFO");
  std::string path = std::string(dir != nullptr && *dir != '\0' ? dir : "/usr/share/zoneinfo") + "/" + name;
  std::ifstream in(path, std::ios::binary);
  if (!in) return Status::invalid("unknown time zone \"" + name + "\"");
  std::string data((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  auto bad = [&] { return Status::invalid("time zone \"" + name + "\": not a TZif file"); };
  const auto* u = reinterpret_cast<const unsigned char*>(data.data());
  size_t size = data.size();

  // Header: "TZif", version, 15 reserved, six counts.
  struct Header {
    int64_t isutcnt, isstdcnt, leapcnt, timecnt, typecnt, charcnt;
  };
  auto header = [&](size_t at, Header& h) {
    if (at + 44 > size || data.compare(at, 4, "TZif") != 0) return false;
    const unsigned char* c = u + at + 20;
    h = {be(c, 4), be(c + 4, 4), be(c + 8, 4), be(c + 12, 4), be(c + 16, 4), be(c + 20, 4)};
    return h.isutcnt >= 0 && h.isstdcnt >= 0 && h.leapcnt >= 0 && h.timecnt >= 0 && h.typecnt > 0 &&
           h.charcnt >= 0 && h.timecnt < 100000 && h.typecnt < 256;
  };
  Header h{};
  if (!header(0, h)) return bad();
  char version = data[4];
  int timeSize = 4;
  size_t at = 44;
  auto blockSize = [&](const Header& x, int ts) {
    return x.timecnt * ts + x.timecnt + x.typecnt * 6 + x.charcnt + x.leapcnt * (ts + 4) + x.isstdcnt + x.isutcnt;
  };
  if (version >= '2') {  // skip the 32-bit block; use the 64-bit one
    at += static_cast<size_t>(blockSize(h, 4));
    if (!header(at, h)) return bad();
    at += 44;
    timeSize = 8;
  }
  if (at + static_cast<size_t>(blockSize(h, timeSize)) > size) return bad();
  TimeZone z;
  z.name_ = name;
  const unsigned char* times = u + at;
  const unsigned char* idx = times + h.timecnt * timeSize;
  const unsigned char* types = idx + h.timecnt;
  std::vector<int> offsets;
  std::vector<bool> isDst;
  for (int64_t i = 0; i < h.typecnt; ++i) {
    offsets.push_back(static_cast<int>(be(types + i * 6, 4)));
    isDst.push_back(types[i * 6 + 4] != 0);
  }
  for (int64_t i = 0; i < h.timecnt; ++i) {
    unsigned t = idx[i];
    if (t >= offsets.size()) return bad();
    z.transitions_.push_back(be(times + i * timeSize, timeSize));
    z.transitionOffset_.push_back(offsets[t]);
  }
  // Before the first transition: the first standard-time type (RFC 8536 section 3.2), else type 0.
  z.initialOffset_ = offsets[0];
  for (size_t i = 0; i < offsets.size(); ++i) {
    if (!isDst[i]) {
      z.initialOffset_ = offsets[i];
      break;
    }
  }
  if (timeSize == 8) {
    size_t footer = at + static_cast<size_t>(blockSize(h, timeSize));
    if (footer < size && data[footer] == '\n') {
      size_t e = data.find('\n', footer + 1);
      std::string rule = data.substr(footer + 1, e == std::string::npos ? std::string::npos : e - footer - 1);
      if (!rule.empty()) {
        auto p = parsePosix(rule);
        if (!p) return Status::invalid("time zone \"" + name + "\": " + p.status().message());
        z.footer_ = *p;
      }
    }
  }
  return z;
}

int TimeZone::offsetAt(Seconds t) const {
  int64_t s = t.time_since_epoch().count();
  if (transitions_.empty() || s >= transitions_.back()) {
    if (footer_) return posixOffsetAt(*footer_, t);
    return transitions_.empty() ? initialOffset_ : transitionOffset_.back();
  }
  auto it = std::upper_bound(transitions_.begin(), transitions_.end(), s);
  if (it == transitions_.begin()) return initialOffset_;
  return transitionOffset_[static_cast<size_t>(it - transitions_.begin() - 1)];
}

// ---- cron -------------------------------------------------------------------------------------

namespace {

const char* const kMonthNames[] = {"jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"};
const char* const kDowNames[] = {"sun", "mon", "tue", "wed", "thu", "fri", "sat"};

// One value: a number or (for months and weekdays) a three-letter name.
bool value(const std::string& s, int lo, int names, int& out) {
  if (s.empty()) return false;
  if (std::isalpha(static_cast<unsigned char>(s[0]))) {
    std::string l;
    for (char c : s) l.push_back(static_cast<char>(std::tolower(static_cast<unsigned char>(c))));
    const char* const* table = names == 12 ? kMonthNames : names == 7 ? kDowNames : nullptr;
    if (table == nullptr) return false;
    for (int i = 0; i < names; ++i) {
      if (l == table[i]) {
        out = i + lo;
        return true;
      }
    }
    return false;
  }
  if (s.size() > 4) return false;
  out = 0;
  for (char c : s) {
    if (!std::isdigit(static_cast<unsigned char>(c))) return false;
    out = out * 10 + (c - '0');
  }
  return true;
}

// Parses one field into bits lo..hi. `names`: 12 for months, 7 for weekdays, 0 otherwise.
// Returns an error message, empty on success.
std::string field(const std::string& f, int lo, int hi, int names, std::vector<bool>& bits, bool& star) {
  bits.assign(static_cast<size_t>(hi) + 1, false);
  star = f == "*" || f == "?";
  std::stringstream parts(f);
  std::string part;
  int count = 0;
  while (std::getline(parts, part, ',')) {
    ++count;
    int step = 1;
    size_t slash = part.find('/');
    if (slash != std::string::npos) {
      if (!value(part.substr(slash + 1), 0, 0, step) || step == 0) return "invalid step in \"" + part + "\"";
      part = part.substr(0, slash);
    }
    int a = lo, b = hi;
    if (part == "*" || part == "?") {
      // whole range
    } else if (size_t dash = part.find('-'); dash != std::string::npos) {
      if (!value(part.substr(0, dash), lo, names, a) || !value(part.substr(dash + 1), lo, names, b)) {
        return "invalid range \"" + part + "\"";
      }
    } else {
      if (!value(part, lo, names, a)) return "invalid value \"" + part + "\"";
      if (slash != std::string::npos) b = hi;  // "5/15" = 5-max/15, as Vixie cron
      else b = a;
    }
    if (a < lo || b > hi || a > b) return "\"" + part + "\" is outside " + std::to_string(lo) + "-" + std::to_string(hi);
    for (int v = a; v <= b; v += step) bits[static_cast<size_t>(v)] = true;
  }
  if (count == 0 || f.back() == ',') return "empty list element";
  return "";
}

}  // namespace

StatusOr<CronSchedule> CronSchedule::parse(const std::string& exprIn) {
  std::string expr = exprIn;
  while (!expr.empty() && std::isspace(static_cast<unsigned char>(expr.back()))) expr.pop_back();
  while (!expr.empty() && std::isspace(static_cast<unsigned char>(expr.front()))) expr.erase(0, 1);
  static const std::pair<const char*, const char*> kMacros[] = {
      {"@yearly", "0 0 1 1 *"}, {"@annually", "0 0 1 1 *"}, {"@monthly", "0 0 1 * *"},
      {"@weekly", "0 0 * * 0"}, {"@daily", "0 0 * * *"},    {"@midnight", "0 0 * * *"},
      {"@hourly", "0 * * * *"}};
  if (!expr.empty() && expr[0] == '@') {
    bool found = false;
    for (const auto& [m, e] : kMacros) {
      if (expr == m) {
        expr = e;
        found = true;
      }
    }
    if (!found) return Status::invalid("cron \"" + exprIn + "\": unknown macro");
  }
  std::stringstream ss(expr);
  std::vector<std::string> f{std::istream_iterator<std::string>(ss), std::istream_iterator<std::string>()};
  if (f.size() != 5) {
    return Status::invalid("cron \"" + exprIn + "\": want 5 fields (minute hour day-of-month month day-of-week), got " +
                           std::to_string(f.size()));
  }
  CronSchedule c;
  std::vector<bool> bits;
  bool star = false;
  static const char* const kNames[] = {"minute", "hour", "day-of-month", "month", "day-of-week"};
  static const int kLo[] = {0, 0, 1, 1, 0};
  static const int kHi[] = {59, 23, 31, 12, 7};
  static const int kTable[] = {0, 0, 0, 12, 7};
  for (int i = 0; i < 5; ++i) {
    std::string err = field(f[static_cast<size_t>(i)], kLo[i], kHi[i], kTable[i], bits, star);
    if (!err.empty()) return Status::invalid("cron \"" + exprIn + "\": " + kNames[i] + ": " + err);
    for (size_t v = 0; v < bits.size(); ++v) {
      if (!bits[v]) continue;
      switch (i) {
        case 0: c.minutes_.set(v); break;
        case 1: c.hours_.set(v); break;
        case 2: c.doms_.set(v); c.domStar_ = star; break;
        case 3: c.months_.set(v); break;
        default: c.dows_.set(v % 7); c.dowStar_ = star; break;  // 7 is Sunday too
      }
    }
  }
  return c;
}

bool CronSchedule::matchesLocal(int64_t local) const {
  int64_t days = floorDiv(local, kDay);
  int64_t sod = local - days * kDay;
  auto ymd = civil(days);
  int dow = static_cast<int>(((days % 7) + 11) % 7);
  bool domOk = doms_.test(static_cast<unsigned>(ymd.day()));
  bool dowOk = dows_.test(static_cast<size_t>(dow));
  bool dayOk = (domStar_ || dowStar_) ? (domOk && dowOk) : (domOk || dowOk);
  return months_.test(static_cast<unsigned>(ymd.month())) && dayOk && hours_.test(static_cast<size_t>(sod / 3600)) &&
         minutes_.test(static_cast<size_t>((sod % 3600) / 60));
}

std::optional<Seconds> CronSchedule::next(Seconds after, const TimeZone& tz) const {
  int64_t a = after.time_since_epoch().count();
  // Walk wall-clock minutes from the one after `after`'s local time (one hour back, so that a
  // fall-back hour is revisited), jumping over months, days and hours that cannot match.
  int64_t local = floorDiv(a + tz.offsetAt(after) - 3600, 60) * 60 + 60;
  int64_t limit = local + kDay * 366 * 5;
  while (local < limit) {
    int64_t days = floorDiv(local, kDay);
    auto ymd = civil(days);
    if (!months_.test(static_cast<unsigned>(ymd.month()))) {
      auto nm = ymd.month() == std::chrono::December ? daysFromCivil(static_cast<int>(ymd.year()) + 1, 1, 1)
                                                     : daysFromCivil(static_cast<int>(ymd.year()), static_cast<int>(static_cast<unsigned>(ymd.month())) + 1, 1);
      local = nm * kDay;
      continue;
    }
    int dow = static_cast<int>(((days % 7) + 11) % 7);
    bool domOk = doms_.test(static_cast<unsigned>(ymd.day()));
    bool dowOk = dows_.test(static_cast<size_t>(dow));
    if (!((domStar_ || dowStar_) ? (domOk && dowOk) : (domOk || dowOk))) {
      local = (days + 1) * kDay;
      continue;
    }
    int64_t sod = local - days * kDay;
    if (!hours_.test(static_cast<size_t>(sod / 3600))) {
      local = days * kDay + (sod / 3600 + 1) * 3600;
      continue;
    }
    if (!minutes_.test(static_cast<size_t>((sod % 3600) / 60))) {
      local += 60;
      continue;
    }
    // A matching wall time: the instants that show it are local - offset for an offset in effect
    // around it (offsets change at most once within a day either side).
    std::optional<int64_t> first;
    for (int64_t probe : {local - kDay, local + kDay}) {
      int off = tz.offsetAt(Seconds{std::chrono::seconds{probe}});
      int64_t u = local - off;
      if (tz.offsetAt(Seconds{std::chrono::seconds{u}}) == off && (!first || u < *first)) first = u;
    }
    // Fire once per wall time: at its first occurrence, and not again at a second one.
    if (first && *first > a) return Seconds{std::chrono::seconds{*first}};
    local += 60;
  }
  return std::nullopt;
}

}  // namespace op
