//! Prune selection (docs/formats.md#prune-selection): which snapshots of one group to keep.
//!
//! Pure: takes backup times and flags, returns one mark per snapshot. Bucketing uses the
//! server's local time zone like PBS (PVE shows the result, so it must match); tests pass an
//! explicit zone through [`compute_prune_with_tz`].

use std::collections::HashSet;

use chrono::TimeZone;

/// The `keep-*` options; absent or 0 means "rule unused".
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct KeepOptions {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep_last: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep_hourly: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep_daily: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep_weekly: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep_monthly: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep_yearly: Option<u64>,
}

impl KeepOptions {
    /// True when no rule is active: PBS then keeps every snapshot.
    pub fn keeps_all(&self) -> bool {
        self.rules().iter().all(|(n, _)| *n == 0)
    }

    fn rules(&self) -> [(u64, Bucket); 6] {
        [
            (self.keep_last.unwrap_or(0), Bucket::Last),
            (self.keep_hourly.unwrap_or(0), Bucket::Fmt("%Y/%m/%d/%H")),
            (self.keep_daily.unwrap_or(0), Bucket::Fmt("%Y/%m/%d")),
            (self.keep_weekly.unwrap_or(0), Bucket::Fmt("%G/%V")),
            (self.keep_monthly.unwrap_or(0), Bucket::Fmt("%Y/%m")),
            (self.keep_yearly.unwrap_or(0), Bucket::Fmt("%Y")),
        ]
    }
}

/// One snapshot as prune sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PruneCandidate {
    /// Backup time (epoch seconds).
    pub time: i64,
    /// `index.json.blob` present.
    pub finished: bool,
    /// `.protected` marker present.
    pub protected: bool,
}

/// The decision for one snapshot.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PruneMark {
    /// Selected by a keep rule (or keep-all).
    Keep,
    /// The newest snapshot is unfinished (maybe still running): kept.
    KeepPartial,
    /// Protected snapshots are always kept and never count toward a rule.
    Protected,
    Remove,
}

impl PruneMark {
    /// Whether the snapshot survives.
    pub fn keep(self) -> bool {
        self != PruneMark::Remove
    }

    /// The word PBS uses in task logs ("keep", "keep protected", "keep partial", "remove").
    pub fn as_log_str(self) -> &'static str {
        match self {
            PruneMark::Keep => "keep",
            PruneMark::KeepPartial => "keep partial",
            PruneMark::Protected => "keep protected",
            PruneMark::Remove => "remove",
        }
    }
}

#[derive(Clone, Copy)]
enum Bucket {
    /// Every snapshot is its own bucket.
    Last,
    /// strftime pattern applied to the local time.
    Fmt(&'static str),
}

fn bucket_key<Tz: TimeZone>(bucket: Bucket, time: i64, tz: &Tz) -> String
where
    Tz::Offset: std::fmt::Display,
{
    match bucket {
        Bucket::Last => format!("last/{time}"),
        Bucket::Fmt(pattern) => match tz.timestamp_opt(time, 0).single() {
            Some(local) => local.format(pattern).to_string(),
            // Out of chrono's range: its own bucket, so nothing is merged by accident.
            None => format!("out-of-range/{time}"),
        },
    }
}

/// Marks for `snapshots` (same order as the input) using the server's local time zone.
pub fn compute_prune(snapshots: &[PruneCandidate], opts: &KeepOptions) -> Vec<PruneMark> {
    compute_prune_with_tz(snapshots, opts, &chrono::Local)
}

/// Marks for `snapshots` (same order as the input), bucketing in `tz`.
///
/// With [`KeepOptions::keeps_all`] every snapshot is kept (`Keep`, or `Protected`).
pub fn compute_prune_with_tz<Tz: TimeZone>(
    snapshots: &[PruneCandidate],
    opts: &KeepOptions,
    tz: &Tz,
) -> Vec<PruneMark>
where
    Tz::Offset: std::fmt::Display,
{
    if opts.keeps_all() {
        return snapshots
            .iter()
            .map(|s| match s.protected {
                true => PruneMark::Protected,
                false => PruneMark::Keep,
            })
            .collect();
    }

    // Newest first; equal times keep their input order.
    let mut order: Vec<usize> = (0..snapshots.len()).collect();
    order.sort_by(|a, b| snapshots[*b].time.cmp(&snapshots[*a].time));

    let mut marks: Vec<Option<PruneMark>> = vec![None; snapshots.len()];

    // Unfinished snapshots: only the very newest one survives (it may still be running).
    for (pos, &i) in order.iter().enumerate() {
        if !snapshots[i].finished {
            marks[i] = Some(match pos {
                0 => PruneMark::KeepPartial,
                _ => PruneMark::Remove,
            });
        }
    }

    for (count, bucket) in opts.rules() {
        if count == 0 {
            continue;
        }
        let covered: HashSet<String> = order
            .iter()
            .filter(|&&i| marks[i] == Some(PruneMark::Keep))
            .map(|&i| bucket_key(bucket, snapshots[i].time, tz))
            .collect();
        let mut used: HashSet<String> = HashSet::new();
        for &i in &order {
            if marks[i].is_some() {
                continue;
            }
            if snapshots[i].protected {
                marks[i] = Some(PruneMark::Protected);
                continue;
            }
            let key = bucket_key(bucket, snapshots[i].time, tz);
            if covered.contains(&key) {
                continue;
            }
            if used.contains(&key) {
                marks[i] = Some(PruneMark::Remove);
                continue;
            }
            if used.len() as u64 >= count {
                break;
            }
            used.insert(key);
            marks[i] = Some(PruneMark::Keep);
        }
    }

    snapshots
        .iter()
        .zip(marks)
        .map(|(s, m)| match s.protected {
            true => PruneMark::Protected,
            false => m.unwrap_or(PruneMark::Remove),
        })
        .collect()
}

#[cfg(test)]
#[path = "prune_tests.rs"]
mod tests;
