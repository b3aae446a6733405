//! Calendar events across daylight-saving changes in real time zones (chrono-tz):
//! Europe/Berlin (2026-03-29 02:00 CET -> 03:00 CEST, 2026-10-25 03:00 CEST -> 02:00 CET)
//! and America/New_York (2026-03-08 02:00 EST -> 03:00 EDT, 2026-11-01 02:00 EDT -> 01:00 EST).
//! The rules and where they come from are on [`CalendarEvent::next_after_in`].

use chrono::{NaiveDateTime, TimeZone};
use chrono_tz::America::New_York;
use chrono_tz::Europe::Berlin;
use chrono_tz::Tz;

use super::*;

/// A local wall-clock time with its offset, like `2026-03-29 03:00:00 +02:00`.
fn local(tz: &Tz, t: i64) -> String {
    tz.timestamp_opt(t, 0)
        .single()
        .unwrap()
        .format("%Y-%m-%d %H:%M:%S %:z")
        .to_string()
}

/// Unix time of a local wall-clock time (its first instance when a fall-back repeats it).
fn at(tz: &Tz, text: &str) -> i64 {
    let naive = NaiveDateTime::parse_from_str(text, "%Y-%m-%d %H:%M:%S").unwrap();
    tz.from_local_datetime(&naive)
        .earliest()
        .unwrap()
        .timestamp()
}

/// The next `n` events after the local time `from`.
fn firings(event: &str, tz: &Tz, from: &str, n: usize) -> Vec<String> {
    let parsed = parse(event).unwrap_or_else(|e| panic!("{event}: {e}"));
    let mut t = at(tz, from);
    let mut out = Vec::new();
    for _ in 0..n {
        t = parsed
            .next_after_in(t, tz)
            .unwrap_or_else(|| panic!("{event} after {}: no event", local(tz, t)));
        out.push(local(tz, t));
    }
    out
}

/// (zone, event, after (local; first instance if repeated), the next events as local time).
type Case = (Tz, &'static str, &'static str, &'static [&'static str]);

const CASES: &[Case] = &[
    // Spring forward, Berlin: 02:00..02:59 does not exist on 2026-03-29.
    (
        Berlin,
        "02:30",
        "2026-03-28 12:00:00",
        &["2026-03-30 02:30:00 +02:00", "2026-03-31 02:30:00 +02:00"],
    ),
    (
        Berlin,
        "*:0/15",
        "2026-03-29 01:30:00",
        &[
            "2026-03-29 01:45:00 +01:00",
            "2026-03-29 03:00:00 +02:00",
            "2026-03-29 03:15:00 +02:00",
        ],
    ),
    (
        Berlin,
        "hourly",
        "2026-03-29 00:30:00",
        &[
            "2026-03-29 01:00:00 +01:00",
            "2026-03-29 03:00:00 +02:00",
            "2026-03-29 04:00:00 +02:00",
        ],
    ),
    (
        Berlin,
        "daily",
        "2026-03-28 12:00:00",
        &["2026-03-29 00:00:00 +01:00", "2026-03-30 00:00:00 +02:00"],
    ),
    // 2026-03-23 and 2026-03-30 are Mondays.
    (
        Berlin,
        "weekly",
        "2026-03-22 12:00:00",
        &["2026-03-23 00:00:00 +01:00", "2026-03-30 00:00:00 +02:00"],
    ),
    // Fall back, Berlin: 02:00..02:59 happens twice on 2026-10-25.
    (
        Berlin,
        "02:30",
        "2026-10-24 12:00:00",
        &["2026-10-25 02:30:00 +02:00", "2026-10-26 02:30:00 +01:00"],
    ),
    (
        Berlin,
        "hourly",
        "2026-10-25 00:30:00",
        &[
            "2026-10-25 01:00:00 +02:00",
            "2026-10-25 02:00:00 +02:00",
            "2026-10-25 02:00:00 +01:00",
            "2026-10-25 03:00:00 +01:00",
        ],
    ),
    (
        Berlin,
        "*:0/15",
        "2026-10-25 02:40:00",
        &[
            "2026-10-25 02:45:00 +02:00",
            "2026-10-25 02:00:00 +01:00",
            "2026-10-25 02:15:00 +01:00",
            "2026-10-25 02:30:00 +01:00",
            "2026-10-25 02:45:00 +01:00",
            "2026-10-25 03:00:00 +01:00",
        ],
    ),
    (
        Berlin,
        "daily",
        "2026-10-24 12:00:00",
        &["2026-10-25 00:00:00 +02:00", "2026-10-26 00:00:00 +01:00"],
    ),
    // 2026-10-19 and 2026-10-26 are Mondays.
    (
        Berlin,
        "weekly",
        "2026-10-18 12:00:00",
        &["2026-10-19 00:00:00 +02:00", "2026-10-26 00:00:00 +01:00"],
    ),
    // Spring forward, New York: 02:00..02:59 does not exist on 2026-03-08.
    (
        New_York,
        "02:30",
        "2026-03-07 12:00:00",
        &["2026-03-09 02:30:00 -04:00"],
    ),
    (
        New_York,
        "sun 02:30",
        "2026-03-01 12:00:00",
        &["2026-03-15 02:30:00 -04:00"],
    ),
    (
        New_York,
        "*:0/15",
        "2026-03-08 01:40:00",
        &["2026-03-08 01:45:00 -05:00", "2026-03-08 03:00:00 -04:00"],
    ),
    (
        New_York,
        "daily",
        "2026-03-07 12:00:00",
        &["2026-03-08 00:00:00 -05:00", "2026-03-09 00:00:00 -04:00"],
    ),
    // 2026-03-02 and 2026-03-09 are Mondays.
    (
        New_York,
        "weekly",
        "2026-03-01 12:00:00",
        &["2026-03-02 00:00:00 -05:00", "2026-03-09 00:00:00 -04:00"],
    ),
    // Fall back, New York: 01:00..01:59 happens twice on 2026-11-01.
    (
        New_York,
        "01:30",
        "2026-10-31 12:00:00",
        &["2026-11-01 01:30:00 -04:00", "2026-11-02 01:30:00 -05:00"],
    ),
    (
        New_York,
        "hourly",
        "2026-11-01 00:30:00",
        &[
            "2026-11-01 01:00:00 -04:00",
            "2026-11-01 01:00:00 -05:00",
            "2026-11-01 02:00:00 -05:00",
        ],
    ),
    (
        New_York,
        "*:0/30",
        "2026-11-01 01:10:00",
        &[
            "2026-11-01 01:30:00 -04:00",
            "2026-11-01 01:00:00 -05:00",
            "2026-11-01 01:30:00 -05:00",
            "2026-11-01 02:00:00 -05:00",
        ],
    ),
    (
        New_York,
        "daily",
        "2026-10-31 12:00:00",
        &["2026-11-01 00:00:00 -04:00", "2026-11-02 00:00:00 -05:00"],
    ),
    // 2026-10-26 and 2026-11-02 are Mondays.
    (
        New_York,
        "weekly",
        "2026-10-25 12:00:00",
        &["2026-10-26 00:00:00 -04:00", "2026-11-02 00:00:00 -05:00"],
    ),
];

#[test]
fn events_across_dst_changes_in_real_zones() {
    let mut failures = Vec::new();
    for (tz, event, from, want) in CASES {
        let got = firings(event, tz, from, want.len());
        if got != *want {
            failures.push(format!(
                "{tz} '{event}' after {from}: got {got:?}, want {want:?}"
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn the_repeated_hour_counts_only_for_events_that_repeat_within_the_day() {
    for (event, elapsed) in [
        ("hourly", true),
        ("*:0/15", true),
        ("02:*", true),
        ("02:30", false),
        ("daily", false),
        ("mon..fri 08:30", false),
        ("12,14:05", false),
    ] {
        assert_eq!(
            parse(event).unwrap().runs_on_elapsed_time(),
            elapsed,
            "{event}"
        );
    }
}

#[test]
fn daily_and_weekly_keep_local_midnight_for_a_year() {
    // 53 weeks from 2026-01-05 (a Monday) across both Berlin changes: always local 00:00.
    for (event, n) in [("daily", 365), ("weekly", 53)] {
        for fired in firings(event, &Berlin, "2026-01-04 12:00:00", n) {
            assert!(fired.contains(" 00:00:00 "), "{event}: {fired}");
        }
    }
}
