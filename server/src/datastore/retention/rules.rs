//! Which lock a new snapshot gets: the `[[retention_lock]]` rules of a datastore, their scope,
//! and retain-until dates rounded up to generation boundaries (pure).

use crate::backend::lock::LockMode;
use crate::format::names::{BackupGroup, BackupNamespace};

/// Default generation length (days) when the datastore does not set `lock_generation_days`.
pub const DEFAULT_GENERATION_DAYS: u64 = 10;
const DAY: i64 = 86_400;

/// One `[[retention_lock]]` as it applies to a datastore.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LockRule {
    pub id: String,
    /// Namespace the rule covers, with its descendants (root: the whole datastore).
    pub ns: BackupNamespace,
    /// Groups (`vm/100`) the rule covers; every group in scope when empty.
    pub groups: Vec<String>,
    pub mode: LockMode,
    pub days: u64,
    pub legal_hold: bool,
}

impl LockRule {
    /// Whether a snapshot of `group` in `ns` is in this rule's scope.
    pub fn covers(&self, ns: &BackupNamespace, group: &BackupGroup) -> bool {
        let inside = ns.components().starts_with(self.ns.components());
        inside && (self.groups.is_empty() || self.groups.iter().any(|g| *g == group.path()))
    }
}

/// The lock a new snapshot gets: the strongest of the matching rules.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SnapshotLock {
    pub mode: LockMode,
    pub retain_until: i64,
    pub legal_hold: bool,
}

/// `t` rounded up to the next multiple of `generation_days` days since the epoch.
pub fn round_up_to_generation(t: i64, generation_days: u64) -> i64 {
    let g = (generation_days.max(1) as i64).saturating_mul(DAY);
    t.div_euclid(g)
        .saturating_add(i64::from(t.rem_euclid(g) != 0))
        * g
}

/// The lock `rules` give a snapshot taken at `backup_time`, if any covers it.
pub fn lock_for(
    rules: &[LockRule],
    generation_days: u64,
    ns: &BackupNamespace,
    group: &BackupGroup,
    backup_time: i64,
) -> Option<SnapshotLock> {
    let mut found: Option<SnapshotLock> = None;
    for rule in rules.iter().filter(|r| r.covers(ns, group)) {
        let days = i64::try_from(rule.days).unwrap_or(i64::MAX / DAY);
        let until = round_up_to_generation(
            backup_time.saturating_add(days.saturating_mul(DAY)),
            generation_days,
        );
        found = Some(match found {
            None => SnapshotLock {
                mode: rule.mode,
                retain_until: until,
                legal_hold: rule.legal_hold,
            },
            Some(f) => SnapshotLock {
                mode: f.mode.max(rule.mode),
                retain_until: f.retain_until.max(until),
                legal_hold: f.legal_hold || rule.legal_hold,
            },
        });
    }
    found
}

/// A chunk's recorded Object Lock.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ChunkLock {
    pub until: i64,
    pub mode: LockMode,
}

impl ChunkLock {
    /// Whether this record already satisfies a lock of `mode` until `until`.
    pub fn covers(&self, until: i64, mode: LockMode) -> bool {
        self.until >= until && self.mode >= mode
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::names::BackupType;

    #[test]
    fn dates_round_up_to_generation_boundaries() {
        let g = 10 * DAY;
        assert_eq!(round_up_to_generation(0, 10), 0);
        assert_eq!(round_up_to_generation(1, 10), g);
        assert_eq!(round_up_to_generation(g, 10), g);
        assert_eq!(round_up_to_generation(g + 1, 10), 2 * g);
        assert_eq!(round_up_to_generation(5 * DAY + 7, 1), 6 * DAY);
    }

    #[test]
    fn rules_cover_scope_and_the_strongest_wins() {
        let g100 = BackupGroup::new(BackupType::Vm, "100").unwrap();
        let g200 = BackupGroup::new(BackupType::Vm, "200").unwrap();
        let a = BackupNamespace::parse("a").unwrap();
        let ab = BackupNamespace::parse("a/b").unwrap();
        let rules = vec![
            LockRule {
                id: "store".into(),
                ns: BackupNamespace::root(),
                groups: vec![],
                mode: LockMode::Governance,
                days: 30,
                legal_hold: false,
            },
            LockRule {
                id: "vm100".into(),
                ns: a.clone(),
                groups: vec!["vm/100".into()],
                mode: LockMode::Compliance,
                days: 5,
                legal_hold: true,
            },
        ];
        let t = 100 * DAY + 5;
        let l = lock_for(&rules, 10, &ab, &g100, t).unwrap();
        assert_eq!(l.mode, LockMode::Compliance);
        assert!(l.legal_hold);
        assert_eq!(l.retain_until, 140 * DAY);
        let l = lock_for(&rules, 10, &ab, &g200, t).unwrap();
        assert_eq!(l.mode, LockMode::Governance);
        assert!(!l.legal_hold);
        assert!(lock_for(&rules[1..], 10, &BackupNamespace::root(), &g100, t).is_none());
    }

    #[test]
    fn chunk_records_cover_weaker_locks_only() {
        let c = ChunkLock {
            until: 20,
            mode: LockMode::Governance,
        };
        assert!(c.covers(10, LockMode::Governance));
        assert!(!c.covers(30, LockMode::Governance));
        assert!(!c.covers(10, LockMode::Compliance));
    }
}
