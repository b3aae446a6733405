use chrono::{FixedOffset, TimeZone, Utc};

use super::PruneMark::{Keep, KeepPartial, Protected, Remove};
use super::*;

fn t(y: i32, mo: u32, d: u32, h: u32, mi: u32) -> i64 {
    Utc.with_ymd_and_hms(y, mo, d, h, mi, 0)
        .single()
        .expect("valid test time")
        .timestamp()
}

fn fin(time: i64) -> PruneCandidate {
    PruneCandidate {
        time,
        finished: true,
        protected: false,
    }
}

fn prot(time: i64) -> PruneCandidate {
    PruneCandidate {
        protected: true,
        ..fin(time)
    }
}

fn unfin(time: i64) -> PruneCandidate {
    PruneCandidate {
        finished: false,
        ..fin(time)
    }
}

fn utc(snaps: &[PruneCandidate], opts: &KeepOptions) -> Vec<PruneMark> {
    compute_prune_with_tz(snaps, opts, &Utc)
}

fn dec2019() -> Vec<PruneCandidate> {
    vec![
        fin(t(2019, 12, 2, 11, 59)),
        fin(t(2019, 12, 3, 11, 59)),
        fin(t(2019, 12, 4, 11, 59)),
        fin(t(2019, 12, 4, 12, 59)),
    ]
}

#[test]
fn worked_example_keep_daily() {
    let opts = KeepOptions {
        keep_daily: Some(2),
        ..Default::default()
    };
    assert_eq!(utc(&dec2019(), &opts), [Remove, Keep, Remove, Keep]);
}

#[test]
fn worked_example_last_plus_daily_keeps_all() {
    let opts = KeepOptions {
        keep_last: Some(2),
        keep_daily: Some(2),
        ..Default::default()
    };
    assert_eq!(utc(&dec2019(), &opts), [Keep, Keep, Keep, Keep]);
}

#[test]
fn worked_example_daily_covers_week() {
    let opts = KeepOptions {
        keep_daily: Some(1),
        keep_weekly: Some(5),
        ..Default::default()
    };
    assert_eq!(utc(&dec2019(), &opts), [Remove, Remove, Remove, Keep]);
}

#[test]
fn worked_example_protected_never_counts() {
    let snaps = [
        prot(t(2019, 12, 4, 9, 39)),
        fin(t(2019, 12, 4, 10, 39)),
        fin(t(2019, 12, 4, 10, 49)),
        prot(t(2019, 12, 4, 10, 59)),
    ];
    let opts = KeepOptions {
        keep_last: Some(1),
        ..Default::default()
    };
    assert_eq!(utc(&snaps, &opts), [Protected, Remove, Keep, Protected]);
}

#[test]
fn input_order_is_preserved() {
    let mut snaps = dec2019();
    snaps.reverse();
    let opts = KeepOptions {
        keep_daily: Some(2),
        ..Default::default()
    };
    assert_eq!(utc(&snaps, &opts), [Keep, Remove, Keep, Remove]);
}

#[test]
fn keep_weekly_across_iso_year_boundary() {
    // 2020-12-28 (Mon) … 2021-01-03 (Sun) is ISO week 2020-W53; 2021-01-04 starts 2021-W01.
    let snaps = [
        fin(t(2020, 12, 21, 8, 0)),
        fin(t(2020, 12, 28, 8, 0)),
        fin(t(2021, 1, 1, 8, 0)),
        fin(t(2021, 1, 3, 8, 0)),
        fin(t(2021, 1, 4, 8, 0)),
    ];
    let opts = KeepOptions {
        keep_weekly: Some(2),
        ..Default::default()
    };
    assert_eq!(utc(&snaps, &opts), [Remove, Remove, Remove, Keep, Keep]);
    let opts = KeepOptions {
        keep_weekly: Some(3),
        ..Default::default()
    };
    assert_eq!(utc(&snaps, &opts), [Keep, Remove, Remove, Keep, Keep]);
}

#[test]
fn keep_monthly_and_yearly() {
    let snaps = [
        fin(t(2019, 11, 15, 0, 0)),
        fin(t(2019, 12, 1, 0, 0)),
        fin(t(2019, 12, 20, 0, 0)),
        fin(t(2020, 1, 5, 0, 0)),
        fin(t(2020, 1, 25, 0, 0)),
        fin(t(2020, 2, 10, 0, 0)),
    ];
    let opts = KeepOptions {
        keep_monthly: Some(2),
        keep_yearly: Some(2),
        ..Default::default()
    };
    assert_eq!(
        utc(&snaps, &opts),
        [Remove, Remove, Keep, Remove, Keep, Keep]
    );
    let yearly = KeepOptions {
        keep_yearly: Some(1),
        ..Default::default()
    };
    assert_eq!(
        utc(&snaps, &yearly),
        [Remove, Remove, Remove, Remove, Remove, Keep]
    );
}

#[test]
fn keep_hourly() {
    let snaps = [
        fin(t(2020, 5, 1, 10, 5)),
        fin(t(2020, 5, 1, 10, 55)),
        fin(t(2020, 5, 1, 11, 5)),
        fin(t(2020, 5, 1, 13, 0)),
    ];
    let opts = KeepOptions {
        keep_hourly: Some(2),
        ..Default::default()
    };
    assert_eq!(utc(&snaps, &opts), [Remove, Remove, Keep, Keep]);
}

#[test]
fn partial_snapshots() {
    let opts = KeepOptions {
        keep_last: Some(1),
        ..Default::default()
    };
    // Newest unfinished is kept and does not count toward keep-last.
    let snaps = [fin(1000), fin(2000), unfin(3000)];
    assert_eq!(utc(&snaps, &opts), [Remove, Keep, KeepPartial]);
    // Only the very newest unfinished survives.
    let snaps = [fin(1000), unfin(2000), unfin(3000)];
    assert_eq!(utc(&snaps, &opts), [Keep, Remove, KeepPartial]);
    // An unfinished snapshot older than a finished one is removed even with a big quota.
    let opts = KeepOptions {
        keep_last: Some(10),
        ..Default::default()
    };
    let snaps = [unfin(1000), fin(2000)];
    assert_eq!(utc(&snaps, &opts), [Remove, Keep]);
    // Protection wins over everything.
    let snaps = [
        PruneCandidate {
            protected: true,
            ..unfin(1000)
        },
        fin(2000),
    ];
    assert_eq!(utc(&snaps, &opts), [Protected, Keep]);
}

#[test]
fn keep_all_when_no_rule() {
    let snaps = [fin(1), prot(2), unfin(3)];
    assert!(KeepOptions::default().keeps_all());
    assert_eq!(
        utc(&snaps, &KeepOptions::default()),
        [Keep, Protected, Keep]
    );
    let zeros = KeepOptions {
        keep_last: Some(0),
        keep_daily: Some(0),
        ..Default::default()
    };
    assert!(zeros.keeps_all());
    assert!(utc(&snaps, &zeros).iter().all(|m| m.keep()));
    assert!(!KeepOptions {
        keep_yearly: Some(1),
        ..Default::default()
    }
    .keeps_all());
}

#[test]
fn local_day_differs_from_utc_day() {
    // 21:30Z and 22:30Z are the same UTC day but different days at UTC+02:00.
    let snaps = [fin(t(2020, 6, 1, 21, 30)), fin(t(2020, 6, 1, 22, 30))];
    let opts = KeepOptions {
        keep_daily: Some(2),
        ..Default::default()
    };
    assert_eq!(utc(&snaps, &opts), [Remove, Keep]);
    let plus2 = FixedOffset::east_opt(2 * 3600).expect("offset");
    assert_eq!(compute_prune_with_tz(&snaps, &opts, &plus2), [Keep, Keep]);
}

#[test]
fn keep_options_serde_is_kebab_case() {
    let opts: KeepOptions =
        serde_json::from_str(r#"{"keep-last":3,"keep-weekly":2}"#).expect("parse");
    assert_eq!(opts.keep_last, Some(3));
    assert_eq!(opts.keep_weekly, Some(2));
    let text = serde_json::to_string(&opts).expect("serialise");
    assert_eq!(text, r#"{"keep-last":3,"keep-weekly":2}"#);
    assert_eq!(PruneMark::Protected.as_log_str(), "keep protected");
}

/// One row of the PBS selection table: snapshots in input order, the zone buckets are
/// computed in (seconds east of UTC), the keep options and the expected marks.
struct Case {
    name: &'static str,
    snaps: Vec<PruneCandidate>,
    east: i32,
    opts: KeepOptions,
    want: Vec<PruneMark>,
}

fn keep(last: u64, hourly: u64, daily: u64, weekly: u64, monthly: u64, yearly: u64) -> KeepOptions {
    let opt = |n: u64| (n > 0).then_some(n);
    KeepOptions {
        keep_last: opt(last),
        keep_hourly: opt(hourly),
        keep_daily: opt(daily),
        keep_weekly: opt(weekly),
        keep_monthly: opt(monthly),
        keep_yearly: opt(yearly),
    }
}

fn table() -> Vec<Case> {
    // 2020-12-27 is Sunday of ISO week 2020-W52; 2020-12-31 and 2021-01-03 are in 2020-W53;
    // 2021-01-04 starts 2021-W01.
    let year_end = vec![
        fin(t(2020, 12, 27, 10, 0)),
        fin(t(2020, 12, 31, 10, 0)),
        fin(t(2021, 1, 3, 10, 0)),
        fin(t(2021, 1, 4, 10, 0)),
    ];
    // Around midnight UTC: the local day decides the daily buckets.
    let midnight = vec![
        fin(t(2024, 3, 10, 20, 0)),
        fin(t(2024, 3, 10, 23, 30)),
        fin(t(2024, 3, 11, 0, 30)),
    ];
    let combined = vec![
        fin(t(2024, 1, 15, 12, 0)),
        prot(t(2024, 2, 10, 12, 0)),
        fin(t(2024, 2, 20, 12, 0)),
        fin(t(2024, 3, 1, 8, 0)),
        fin(t(2024, 3, 1, 9, 0)),
        unfin(t(2024, 3, 2, 10, 0)),
    ];
    vec![
        Case {
            name: "weekly uses ISO weeks across the year boundary",
            snaps: year_end.clone(),
            east: 0,
            opts: keep(0, 0, 0, 2, 0, 0),
            want: vec![Remove, Remove, Keep, Keep],
        },
        Case {
            name: "yearly uses the calendar year, not the ISO year",
            snaps: year_end.clone(),
            east: 0,
            opts: keep(0, 0, 0, 0, 0, 2),
            want: vec![Remove, Keep, Remove, Keep],
        },
        Case {
            name: "daily picks cover their weeks",
            snaps: year_end,
            east: 0,
            opts: keep(0, 0, 2, 2, 0, 0),
            want: vec![Keep, Remove, Keep, Keep],
        },
        Case {
            name: "daily in UTC",
            snaps: midnight.clone(),
            east: 0,
            opts: keep(0, 0, 2, 0, 0, 0),
            want: vec![Remove, Keep, Keep],
        },
        Case {
            name: "daily at UTC+2 moves 23:30 UTC into the next day",
            snaps: midnight.clone(),
            east: 2 * 3600,
            opts: keep(0, 0, 2, 0, 0, 0),
            want: vec![Keep, Remove, Keep],
        },
        Case {
            name: "daily at UTC-5 puts all three on one day",
            snaps: midnight,
            east: -5 * 3600,
            opts: keep(0, 0, 2, 0, 0, 0),
            want: vec![Remove, Remove, Keep],
        },
        Case {
            name: "hourly in UTC: 20:10 and 20:40 share an hour",
            snaps: vec![fin(t(2024, 3, 10, 20, 10)), fin(t(2024, 3, 10, 20, 40))],
            east: 0,
            opts: keep(0, 2, 0, 0, 0, 0),
            want: vec![Remove, Keep],
        },
        Case {
            name: "hourly at UTC+5:30 splits them (01:40 and 02:10)",
            snaps: vec![fin(t(2024, 3, 10, 20, 10)), fin(t(2024, 3, 10, 20, 40))],
            east: 5 * 3600 + 1800,
            opts: keep(0, 2, 0, 0, 0, 0),
            want: vec![Keep, Keep],
        },
        Case {
            name: "last, daily and monthly combined with protected and partial",
            snaps: combined,
            east: 0,
            opts: keep(1, 0, 2, 0, 2, 0),
            want: vec![Keep, Protected, Keep, Remove, Keep, KeepPartial],
        },
        Case {
            name: "protected snapshots do not use up daily buckets",
            snaps: vec![
                prot(t(2024, 5, 1, 10, 0)),
                fin(t(2024, 5, 2, 10, 0)),
                prot(t(2024, 5, 3, 10, 0)),
            ],
            east: 0,
            opts: keep(0, 0, 1, 0, 0, 0),
            want: vec![Protected, Keep, Protected],
        },
        Case {
            name: "an older unfinished snapshot goes even with room to keep it",
            snaps: vec![
                fin(t(2024, 5, 1, 10, 0)),
                unfin(t(2024, 5, 2, 10, 0)),
                fin(t(2024, 5, 3, 10, 0)),
            ],
            east: 0,
            opts: keep(3, 0, 0, 0, 0, 0),
            want: vec![Keep, Remove, Keep],
        },
    ]
}

#[test]
fn selection_matches_pbs_table() {
    for case in table() {
        let tz = FixedOffset::east_opt(case.east).expect("offset");
        let got = compute_prune_with_tz(&case.snaps, &case.opts, &tz);
        assert_eq!(got, case.want, "{}", case.name);
    }
}
