use chrono::{FixedOffset, NaiveDateTime, TimeZone, Utc};

use super::*;

fn ts(text: &str) -> i64 {
    NaiveDateTime::parse_from_str(text, "%Y-%m-%d %H:%M:%S")
        .unwrap()
        .and_utc()
        .timestamp()
}

fn fmt(t: i64) -> String {
    Utc.timestamp_opt(t, 0)
        .unwrap()
        .format("%Y-%m-%d %H:%M:%S")
        .to_string()
}

/// (event, after, expected next) in UTC.
const TABLE: &[(&str, &str, &str)] = &[
    ("minutely", "2024-03-10 12:00:30", "2024-03-10 12:01:00"),
    ("hourly", "2024-03-10 12:00:00", "2024-03-10 13:00:00"),
    ("daily", "2024-03-10 12:00:00", "2024-03-11 00:00:00"),
    ("daily", "2024-12-31 23:59:59", "2025-01-01 00:00:00"),
    // 2024-03-10 is a Sunday.
    ("weekly", "2024-03-10 12:00:00", "2024-03-11 00:00:00"),
    ("weekly", "2024-03-11 00:00:00", "2024-03-18 00:00:00"),
    ("monthly", "2024-01-31 10:00:00", "2024-02-01 00:00:00"),
    ("yearly", "2024-01-01 00:00:00", "2025-01-01 00:00:00"),
    ("annually", "2024-06-01 00:00:00", "2025-01-01 00:00:00"),
    ("quarterly", "2024-02-15 00:00:00", "2024-04-01 00:00:00"),
    ("quarterly", "2024-11-15 00:00:00", "2025-01-01 00:00:00"),
    ("semiannually", "2024-02-15 00:00:00", "2024-07-01 00:00:00"),
    (
        "semi-annually",
        "2024-07-01 00:00:00",
        "2025-01-01 00:00:00",
    ),
    ("*-*-* 02:00", "2024-03-10 01:59:59", "2024-03-10 02:00:00"),
    ("*-*-* 02:00", "2024-03-10 02:00:00", "2024-03-11 02:00:00"),
    ("02:00", "2024-03-10 03:00:00", "2024-03-11 02:00:00"),
    ("*:0/15", "2024-03-10 12:07:00", "2024-03-10 12:15:00"),
    ("*:0/15", "2024-03-10 12:45:00", "2024-03-10 13:00:00"),
    ("*:*:0/10", "2024-03-10 12:00:05", "2024-03-10 12:00:10"),
    ("*:*:0/10", "2024-03-10 12:59:55", "2024-03-10 13:00:00"),
    ("mon..fri", "2024-03-08 10:00:00", "2024-03-11 00:00:00"),
    (
        "mon..fri 08:30",
        "2024-03-11 08:30:00",
        "2024-03-12 08:30:00",
    ),
    (
        "sat,sun 10:00",
        "2024-03-11 00:00:00",
        "2024-03-16 10:00:00",
    ),
    ("mon..wed,fri", "2024-03-13 01:00:00", "2024-03-15 00:00:00"),
    // First Saturday of the month at 15:00: June 2024 starts on a Saturday.
    (
        "sat *-1..7 15:00",
        "2024-05-05 00:00:00",
        "2024-06-01 15:00:00",
    ),
    (
        "sat *-1..7 15:00",
        "2024-06-01 15:00:00",
        "2024-07-06 15:00:00",
    ),
    (
        "mon..fri 8..17,22:0/15",
        "2024-03-11 17:50:00",
        "2024-03-11 22:00:00",
    ),
    ("12,14,16:5", "2024-03-11 14:05:00", "2024-03-11 16:05:00"),
    ("*/2:05", "2024-03-11 13:00:00", "2024-03-11 14:05:00"),
    ("2025-01-01", "2024-03-11 13:00:00", "2025-01-01 00:00:00"),
    ("2025-01-01", "2025-01-01 00:00:00", ""),
    ("*-02-29", "2025-01-01 00:00:00", "2028-02-29 00:00:00"),
    ("*-*-31", "2024-04-01 00:00:00", "2024-05-31 00:00:00"),
    (
        "01,05..10,12/2:00",
        "2024-03-11 03:30:00",
        "2024-03-11 05:00:00",
    ),
    (
        "*-*-* 23:59:59",
        "2024-02-28 23:59:59",
        "2024-02-29 23:59:59",
    ),
    ("fri *-*-13", "2024-01-01 00:00:00", "2024-09-13 00:00:00"),
    ("*-02-30", "2024-01-01 00:00:00", ""),
];

#[test]
fn next_events_match_the_table() {
    for (event, after, expected) in TABLE {
        let parsed = parse(event).unwrap_or_else(|e| panic!("{event}: {e}"));
        let next = parsed.next_after_in(ts(after), &Utc).map(fmt);
        let want = (!expected.is_empty()).then(|| expected.to_string());
        assert_eq!(next, want, "event '{event}' after {after}");
    }
}

#[test]
fn evaluated_in_the_given_zone() {
    // 02:00 at UTC+2 is 00:00 UTC.
    let tz = FixedOffset::east_opt(2 * 3600).unwrap();
    let next = parse("02:00")
        .unwrap()
        .next_after_in(ts("2024-03-10 01:00:00"), &tz);
    assert_eq!(next.map(fmt), Some("2024-03-11 00:00:00".to_string()));
    // Daily at local midnight, UTC-5.
    let tz = FixedOffset::west_opt(5 * 3600).unwrap();
    let next = parse("daily")
        .unwrap()
        .next_after_in(ts("2024-03-10 04:00:00"), &tz);
    assert_eq!(next.map(fmt), Some("2024-03-10 05:00:00".to_string()));
}

#[test]
fn bad_events_are_refused_with_a_reason() {
    for (bad, needle) in [
        ("", "empty"),
        ("   ", "empty"),
        ("often", "not a weekday"),
        ("mon..funday", "not a weekday"),
        ("fri..mon", "backwards"),
        ("25:00", "hour 25"),
        ("*:60", "minute 60"),
        ("*:*:61", "second 61"),
        ("*-13-01", "month 13"),
        ("*-*-32", "day 32"),
        ("1..10/2:00", "repetition of a range"),
        ("10:00 mon", "weekday 'mon' must come first"),
        ("10:00 *-*-*", "must come before the time"),
        ("1:2:3:4", "not a time"),
        ("1-2-3-4", "not a date"),
        ("*:0/0", "step"),
        ("*:x", "not a valid minute"),
    ] {
        let err = parse(bad).expect_err(bad);
        assert!(
            err.to_string().contains(needle),
            "'{bad}' gave '{err}', expected it to mention '{needle}'"
        );
    }
}

#[test]
fn names_are_case_insensitive_and_full_weekdays_work() {
    assert_eq!(parse("Daily").unwrap(), parse("daily").unwrap());
    assert_eq!(parse("monday..friday").unwrap(), parse("mon..fri").unwrap());
}
