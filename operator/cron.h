#pragma once
// Cron schedules and IANA time zones for periodic Jobs (spec.schedule), independent of the
// process's TZ.
//
//   CronSchedule  5 fields (minute hour day-of-month month day-of-week) with *, ranges, steps,
//                 lists and names (jan..dec, sun..sat; 7 is Sunday too), or @yearly @annually
//                 @monthly @weekly @daily @midnight @hourly. As in Vixie cron and Kubernetes'
//                 CronJob: when both day fields are restricted, a day matches if EITHER does.
//   TimeZone      read from the system's TZif files (/usr/share/zoneinfo, or $ZONEINFO): the
//                 transition table, then the POSIX TZ rule in the file's footer for times past it.
//                 (libstdc++ 12 has no std::chrono::locate_zone.)
//
// Daylight saving: cron fields are wall-clock times in the zone. A wall time that does not exist
// (spring forward: 02:30 in Europe/Berlin on the last Sunday of March) is skipped for that day; a
// wall time that happens twice (fall back) fires once, at its first occurrence.
//
// Thread safety: both types are immutable after parse()/load() and safe to share.

#include <bitset>
#include <chrono>
#include <optional>
#include <string>
#include <vector>

#include "kube/status.h"

namespace op {

using Seconds = std::chrono::sys_seconds;

class TimeZone {
 public:
  // "UTC", "Etc/UTC", "" (UTC), or an IANA name such as "Europe/Berlin".
  [[nodiscard]] static kube::StatusOr<TimeZone> load(const std::string& name);
  static TimeZone utc();
  // Seconds east of UTC at the instant `t`.
  int offsetAt(Seconds t) const;
  const std::string& name() const { return name_; }

  // A POSIX TZ rule ("CET-1CEST,M3.5.0,M10.5.0/3"), used past the last transition. Public for tests.
  struct Rule {
    enum Kind { kMonthWeekDay, kJulian1, kJulian0 };
    Kind kind = kMonthWeekDay;
    int month = 0, week = 0, day = 0;  // Mm.w.d; or the day number for Jn / n
    int time = 7200;                   // seconds after local midnight (may be negative or > 24h)
  };
  struct PosixTz {
    int stdOffset = 0;  // seconds east of UTC
    bool hasDst = false;
    int dstOffset = 0;
    Rule start, end;
  };
  [[nodiscard]] static kube::StatusOr<PosixTz> parsePosix(const std::string& s);
  static int posixOffsetAt(const PosixTz& tz, Seconds t);

 private:
  std::string name_;
  std::vector<int64_t> transitions_;  // UTC seconds, ascending
  std::vector<int> transitionOffset_; // offset in effect from transitions_[i]
  int initialOffset_ = 0;              // before the first transition
  std::optional<PosixTz> footer_;
};

class CronSchedule {
 public:
  [[nodiscard]] static kube::StatusOr<CronSchedule> parse(const std::string& expr);
  // The first scheduled instant strictly after `after`, in zone `tz`; nullopt when none within
  // the next 5 years (e.g. "0 0 30 2 *").
  std::optional<Seconds> next(Seconds after, const TimeZone& tz) const;
  // Whether the wall-clock minute `local` (seconds since the epoch, as if local were UTC) matches.
  bool matchesLocal(int64_t local) const;

 private:
  std::bitset<60> minutes_;
  std::bitset<24> hours_;
  std::bitset<32> doms_;    // 1..31
  std::bitset<13> months_;  // 1..12
  std::bitset<7> dows_;     // 0 = Sunday
  bool domStar_ = false;
  bool dowStar_ = false;
};

}  // namespace op
