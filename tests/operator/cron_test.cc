#include "operator/cron.h"

#include <doctest/doctest.h>

#include "kube/timeutil.h"

namespace op {
namespace {

Seconds at(const char* rfc3339) {
  auto t = kube::parseTime(rfc3339);
  REQUIRE(t.has_value());
  return std::chrono::time_point_cast<std::chrono::seconds>(*t);
}
std::string fmt(std::optional<Seconds> t) { return t ? kube::formatTime(*t) : "none"; }

CronSchedule cron(const char* e) {
  auto c = CronSchedule::parse(e);
  REQUIRE_MESSAGE(c.isOk(), c.status().message());
  return *c;
}
TimeZone zone(const char* name) {
  auto z = TimeZone::load(name);
  REQUIRE_MESSAGE(z.isOk(), z.status().message());
  return *z;
}

TEST_CASE("cron: fields, ranges, steps, lists, names and macros") {
  TimeZone utc = TimeZone::utc();
  CHECK(fmt(cron("*/15 * * * *").next(at("2026-01-01T00:07:00Z"), utc)) == "2026-01-01T00:15:00Z");
  CHECK(fmt(cron("*/15 * * * *").next(at("2026-01-01T00:15:00Z"), utc)) == "2026-01-01T00:30:00Z");
  CHECK(fmt(cron("5/20 * * * *").next(at("2026-01-01T00:26:00Z"), utc)) == "2026-01-01T00:45:00Z");
  CHECK(fmt(cron("0 9-17/4 * * *").next(at("2026-01-01T10:00:00Z"), utc)) == "2026-01-01T13:00:00Z");
  CHECK(fmt(cron("0 0 1,15 * *").next(at("2026-01-02T00:00:00Z"), utc)) == "2026-01-15T00:00:00Z");
  CHECK(fmt(cron("30 6 * jan-mar mon-fri").next(at("2026-03-31T07:00:00Z"), utc)) == "2027-01-01T06:30:00Z");
  CHECK(fmt(cron("0 0 * * SUN").next(at("2026-11-22T00:00:00Z"), utc)) == "2026-11-29T00:00:00Z");  // a Sunday
  CHECK(fmt(cron("0 0 * * 7").next(at("2026-11-23T00:00:00Z"), utc)) == "2026-11-29T00:00:00Z");
  CHECK(fmt(cron("@hourly").next(at("2026-01-01T00:00:00Z"), utc)) == "2026-01-01T01:00:00Z");
  CHECK(fmt(cron("@daily").next(at("2026-01-01T00:00:00Z"), utc)) == "2026-01-02T00:00:00Z");
  CHECK(fmt(cron("@weekly").next(at("2026-11-22T00:00:00Z"), utc)) == "2026-11-29T00:00:00Z");
  CHECK(fmt(cron("@monthly").next(at("2026-02-15T00:00:00Z"), utc)) == "2026-03-01T00:00:00Z");
  CHECK(fmt(cron("@yearly").next(at("2026-02-15T00:00:00Z"), utc)) == "2027-01-01T00:00:00Z");
  CHECK(fmt(cron("0 0 29 2 *").next(at("2026-03-01T00:00:00Z"), utc)) == "2028-02-29T00:00:00Z");
  CHECK(fmt(cron("0 0 30 2 *").next(at("2026-03-01T00:00:00Z"), utc)) == "none");
}

TEST_CASE("cron: both day fields restricted match either (Vixie cron)") {
  TimeZone utc = TimeZone::utc();
  // The 13th, or any Friday: 2026-11-20 is a Friday, before the 13th of December.
  CHECK(fmt(cron("0 0 13 * fri").next(at("2026-11-14T00:00:00Z"), utc)) == "2026-11-20T00:00:00Z");
  // One day field "*": only the other restricts.
  CHECK(fmt(cron("0 0 * * fri").next(at("2026-11-14T00:00:00Z"), utc)) == "2026-11-20T00:00:00Z");
  CHECK(fmt(cron("0 0 13 * *").next(at("2026-11-14T00:00:00Z"), utc)) == "2026-12-13T00:00:00Z");
}

TEST_CASE("cron: malformed expressions say what is wrong") {
  for (const char* bad : {"", "* * * *", "* * * * * *", "60 * * * *", "* 24 * * *", "* * 0 * *", "* * * 13 *",
                          "* * * * 8", "*/0 * * * *", "5-1 * * * *", "a * * * *", "* * * foo *", "1,,2 * * * *",
                          "1, * * * *", "@reboot", "@every 5m"}) {
    auto c = CronSchedule::parse(bad);
    CHECK_MESSAGE(!c.isOk(), bad);
  }
  auto c = CronSchedule::parse("61 * * * *");
  CHECK(c.status().message().find("minute") != std::string::npos);
}

TEST_CASE("time zones: offsets from the system zoneinfo, independent of TZ") {
  TimeZone berlin = zone("Europe/Berlin");
  CHECK(berlin.offsetAt(at("2026-01-15T12:00:00Z")) == 3600);
  CHECK(berlin.offsetAt(at("2026-07-15T12:00:00Z")) == 7200);
  TimeZone sydney = zone("Australia/Sydney");  // southern hemisphere: daylight time in January
  CHECK(sydney.offsetAt(at("2026-01-15T12:00:00Z")) == 11 * 3600);
  CHECK(sydney.offsetAt(at("2026-07-15T12:00:00Z")) == 10 * 3600);
  // Far beyond the file's transition table: the footer's POSIX rule.
  CHECK(berlin.offsetAt(at("2090-07-15T12:00:00Z")) == 7200);
  CHECK(berlin.offsetAt(at("2090-12-15T12:00:00Z")) == 3600);
  CHECK(!TimeZone::load("Mars/Olympus_Mons").isOk());
  CHECK(!TimeZone::load("../../etc/passwd").isOk());
  CHECK(!TimeZone::load("/etc/passwd").isOk());
}

TEST_CASE("POSIX TZ rules") {
  auto cet = TimeZone::parsePosix("CET-1CEST,M3.5.0,M10.5.0/3");
  REQUIRE(cet.isOk());
  CHECK(cet->stdOffset == 3600);
  CHECK(cet->dstOffset == 7200);
  // 2099: last Sunday of March is the 29th; DST starts 01:00 UTC.
  CHECK(TimeZone::posixOffsetAt(*cet, at("2099-03-29T00:59:59Z")) == 3600);
  CHECK(TimeZone::posixOffsetAt(*cet, at("2099-03-29T01:00:00Z")) == 7200);
  auto ny = TimeZone::parsePosix("EST5EDT,M3.2.0,M11.1.0");
  REQUIRE(ny.isOk());
  CHECK(ny->stdOffset == -5 * 3600);
  auto plus = TimeZone::parsePosix("<+0330>-3:30");
  REQUIRE(plus.isOk());
  CHECK(plus->stdOffset == 3 * 3600 + 1800);
  CHECK(!TimeZone::parsePosix("X").isOk());
}

TEST_CASE("cron across DST: spring forward skips the missing wall time, fall back fires once") {
  TimeZone berlin = zone("Europe/Berlin");
  // 2026-03-29: 02:00 CET jumps to 03:00 CEST. 02:30 does not exist that day.
  CronSchedule c = cron("30 2 * * *");
  CHECK(fmt(c.next(at("2026-03-28T00:00:00Z"), berlin)) == "2026-03-28T01:30:00Z");  // 02:30 CET
  CHECK(fmt(c.next(at("2026-03-28T01:30:00Z"), berlin)) == "2026-03-30T00:30:00Z");  // skips the 29th
  // 03:30 exists once, in CEST.
  CHECK(fmt(cron("30 3 * * *").next(at("2026-03-28T12:00:00Z"), berlin)) == "2026-03-29T01:30:00Z");
  // 2026-10-25: 03:00 CEST falls back to 02:00 CET; 02:30 happens twice and fires at the first.
  CHECK(fmt(c.next(at("2026-10-24T12:00:00Z"), berlin)) == "2026-10-25T00:30:00Z");
  CHECK(fmt(c.next(at("2026-10-25T00:30:00Z"), berlin)) == "2026-10-26T01:30:00Z");
  // Every 30 minutes through the repeated hour: the wall clock's minutes, each once.
  CronSchedule half = cron("*/30 * * * *");
  CHECK(fmt(half.next(at("2026-10-25T00:00:00Z"), berlin)) == "2026-10-25T00:30:00Z");  // 02:30 CEST
  CHECK(fmt(half.next(at("2026-10-25T00:30:00Z"), berlin)) == "2026-10-25T02:00:00Z");  // 03:00 CET
  // Hourly in New York on the spring-forward night: 02:00 does not exist, 01:00 EST -> 03:00 EDT.
  TimeZone ny = zone("America/New_York");
  CHECK(fmt(cron("0 * * * *").next(at("2026-03-08T06:00:00Z"), ny)) == "2026-03-08T07:00:00Z");
  // In UTC the same cron is every hour regardless.
  CHECK(fmt(cron("0 * * * *").next(at("2026-03-08T06:00:00Z"), TimeZone::utc())) == "2026-03-08T07:00:00Z");
  // Daily at midnight in Sydney, across its April fall-back.
  TimeZone sydney = zone("Australia/Sydney");
  CHECK(fmt(cron("0 0 * * *").next(at("2026-04-04T12:00:00Z"), sydney)) == "2026-04-04T13:00:00Z");  // AEDT
  CHECK(fmt(cron("0 0 * * *").next(at("2026-04-04T13:00:00Z"), sydney)) == "2026-04-05T14:00:00Z");  // AEST
}

}  // namespace
}  // namespace op
