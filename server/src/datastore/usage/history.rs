//! Daily usage samples of one datastore, for the usage charts of the console and the
//! `usage-history` API: one sample per UTC day holding the day's last figures, at most
//! [`HISTORY_DAYS`] of them. They are kept in the counters object (`persist.rs`), so they
//! survive restarts and move with the datastore, and cost no request of their own.
//!
//! A sample is taken whenever the counters are written. A day without any change writes
//! nothing and has no sample: its figures are those of the sample before it.

use serde::{Deserialize, Serialize};

use crate::backend::RequestCounts;

/// Days of history kept (a bit more than a year; about 60 KiB of JSON at most).
pub const HISTORY_DAYS: usize = 400;

const DAY: i64 = 86_400;

/// The figures of one datastore at the end of a UTC day (or at the last write that day).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct DailySample {
    /// Start of the UTC day, Unix seconds.
    pub day: i64,
    pub physical_bytes: u64,
    pub logical_bytes: u64,
    pub chunks: u64,
    pub snapshots: u64,
    /// S3 requests of every server run up to this sample (all kinds; 0 on a local store). The
    /// requests of one day are the difference to the sample before.
    pub s3_requests: u64,
}

/// Requests of every kind in `counts`.
pub fn total_requests(counts: &RequestCounts) -> u64 {
    counts.get + counts.put + counts.post + counts.head + counts.delete + counts.list
}

/// Start of the UTC day holding `unix` (seconds).
pub fn day_of(unix: i64) -> i64 {
    unix.div_euclid(DAY) * DAY
}

/// The samples, oldest first, one per day, at most [`HISTORY_DAYS`].
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct UsageHistory {
    samples: Vec<DailySample>,
}

impl UsageHistory {
    /// Takes `sample` as its day's figures: replaces a sample of the same day, appends a new
    /// day, and drops the oldest days beyond [`HISTORY_DAYS`]. A sample older than the newest
    /// day (a clock set back) is ignored, so that the days stay in order.
    pub fn record(&mut self, sample: DailySample) {
        match self.samples.last_mut() {
            Some(last) if last.day == sample.day => *last = sample,
            Some(last) if last.day > sample.day => {}
            _ => self.samples.push(sample),
        }
        let excess = self.samples.len().saturating_sub(HISTORY_DAYS);
        self.samples.drain(..excess);
    }

    pub fn samples(&self) -> &[DailySample] {
        &self.samples
    }

    /// Keeps a history read from storage within the rules of [`Self::record`]: sorted by
    /// day, one sample per day, at most [`HISTORY_DAYS`].
    pub fn normalized(self) -> Self {
        let mut out = UsageHistory::default();
        let mut samples = self.samples;
        samples.sort_by_key(|s| s.day);
        for s in samples {
            out.record(DailySample {
                day: day_of(s.day),
                ..s
            });
        }
        out
    }

    /// S3 requests per day: for each sample after the first, the difference to the one before
    /// (a counter that went back, as after restoring an old counters object, counts as 0).
    pub fn requests_per_day(&self) -> Vec<(i64, u64)> {
        self.samples
            .windows(2)
            .map(|w| (w[1].day, w[1].s3_requests.saturating_sub(w[0].s3_requests)))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(day: i64, physical: u64) -> DailySample {
        DailySample {
            day: day * DAY,
            physical_bytes: physical,
            s3_requests: physical * 10,
            ..DailySample::default()
        }
    }

    #[test]
    fn one_sample_per_day_holding_its_last_figures() {
        let mut h = UsageHistory::default();
        h.record(sample(1, 5));
        h.record(sample(1, 7));
        h.record(sample(3, 9));
        assert_eq!(h.samples(), &[sample(1, 7), sample(3, 9)]);
    }

    #[test]
    fn a_clock_set_back_does_not_reorder_the_days() {
        let mut h = UsageHistory::default();
        h.record(sample(5, 1));
        h.record(sample(4, 2));
        assert_eq!(h.samples(), &[sample(5, 1)]);
    }

    #[test]
    fn at_most_the_bound_of_days_is_kept_dropping_the_oldest() {
        let mut h = UsageHistory::default();
        for day in 0..(HISTORY_DAYS as i64 + 25) {
            h.record(sample(day, day as u64));
        }
        assert_eq!(h.samples().len(), HISTORY_DAYS);
        assert_eq!(h.samples()[0], sample(25, 25));
        assert_eq!(
            h.samples().last(),
            Some(&sample(HISTORY_DAYS as i64 + 24, HISTORY_DAYS as u64 + 24))
        );
    }

    #[test]
    fn requests_per_day_are_differences_and_never_negative() {
        let mut h = UsageHistory::default();
        h.record(sample(1, 1)); // 10 requests so far
        h.record(sample(2, 4)); // 40
        h.record(sample(4, 3)); // 30: the counter went back
        assert_eq!(h.requests_per_day(), vec![(2 * DAY, 30), (4 * DAY, 0)]);
    }

    #[test]
    fn a_stored_history_is_sorted_deduplicated_and_bounded_when_read() {
        let unsorted = UsageHistory {
            samples: (0..HISTORY_DAYS as i64 + 3)
                .rev()
                .map(|d| DailySample {
                    day: d * DAY + 3600,
                    ..sample(d, d as u64)
                })
                .chain([sample(7, 70)])
                .collect(),
        };
        let h = unsorted.normalized();
        assert_eq!(h.samples().len(), HISTORY_DAYS);
        assert!(h.samples().windows(2).all(|w| w[0].day < w[1].day));
        assert!(h.samples().iter().all(|s| s.day % DAY == 0));
    }

    #[test]
    fn days_start_at_utc_midnight_also_before_1970() {
        assert_eq!(day_of(DAY + 5), DAY);
        assert_eq!(day_of(-1), -DAY);
    }

    #[test]
    fn the_history_is_a_plain_json_array() {
        let mut h = UsageHistory::default();
        h.record(sample(2, 3));
        let json = serde_json::to_value(&h).unwrap();
        assert_eq!(json[0]["physical-bytes"], 3);
        assert_eq!(json[0]["s3-requests"], 30);
        let back: UsageHistory = serde_json::from_value(json).unwrap();
        assert_eq!(back, h);
    }
}
