//! How figures read on a page: sizes, times, ages.

use chrono::{TimeZone, Utc};

/// `1.5 GiB`-style sizes.
pub(crate) fn bytes(n: u64) -> String {
    crate::format::human_bytes(n, 1)
}

/// A Unix time as `2026-12-06 07:01:02 UTC`.
pub(crate) fn time(t: i64) -> String {
    match Utc.timestamp_opt(t, 0).single() {
        Some(dt) => dt.format("%Y-%m-%d %H:%M:%S UTC").to_string(),
        None => t.to_string(),
    }
}

/// The UTC day of a Unix time as `2026-12-06`.
pub(crate) fn date(t: i64) -> String {
    match Utc.timestamp_opt(t, 0).single() {
        Some(dt) => dt.format("%Y-%m-%d").to_string(),
        None => t.to_string(),
    }
}

/// A snapshot's time as PBS writes it in paths and parameters (`2026-12-06T07:01:02Z`).
pub(crate) fn rfc3339(t: i64) -> String {
    match Utc.timestamp_opt(t, 0).single() {
        Some(dt) => dt.format("%Y-%m-%dT%H:%M:%SZ").to_string(),
        None => t.to_string(),
    }
}

/// `3 d 4 h`, `5 h 2 min`, `40 s`.
pub(crate) fn age(seconds: i64) -> String {
    let s = seconds.max(0);
    match s {
        s if s >= 86_400 => format!("{} d {} h", s / 86_400, s % 86_400 / 3600),
        s if s >= 3600 => format!("{} h {} min", s / 3600, s % 3600 / 60),
        s if s >= 60 => format!("{} min", s / 60),
        s => format!("{s} s"),
    }
}

pub(crate) fn now() -> i64 {
    Utc::now().timestamp()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_times_and_ages_read_well() {
        assert_eq!(bytes(512), "512 B");
        assert_eq!(bytes(1536), "1.5 KiB");
        assert_eq!(bytes(3 * 1024 * 1024 * 1024), "3.0 GiB");
        assert_eq!(time(0), "1970-01-01 00:00:00 UTC");
        assert_eq!(rfc3339(86_400), "1970-01-02T00:00:00Z");
        assert_eq!(age(90_000), "1 d 1 h");
        assert_eq!(age(3_720), "1 h 2 min");
        assert_eq!(age(-5), "0 s");
    }
}
