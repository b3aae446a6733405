//! The allowlist of intended differences and the per-exchange verdict.
//!
//! An entry names scenarios, exchanges and differences by pattern (`*` matches any run of
//! characters) and says why the difference is acceptable. `Volatile` entries cover values
//! that differ between two recordings of PBS itself (clock, random ids, disk usage); `Intended`
//! entries are differences we chose (e.g. the version string, answering like PBS 4.2.3 where
//! PBS 3.2.4 answered differently).

use super::compare::Diff;

/// Why a difference is allowed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AllowKind {
    /// Varies between recordings of the same PBS release too; not a difference of ours.
    Volatile,
    /// A difference we chose; the reason says which.
    Intended,
}

/// One allowlist entry.
#[derive(Debug, Clone, Copy)]
pub struct Allow {
    /// Scenario file stem pattern (`c4-*`, `*`).
    pub scenario: &'static str,
    /// Exchange seqs (empty: all).
    pub seqs: &'static [u32],
    /// Pattern on the recorded request line (`GET /api2/json/version`).
    pub request: &'static str,
    /// Pattern on [`Diff::what`].
    pub what: &'static str,
    pub kind: AllowKind,
    pub reason: &'static str,
}

/// `*`-wildcard match over the whole text; `a|b` matches either alternative.
pub fn glob(pattern: &str, text: &str) -> bool {
    pattern.split('|').any(|alt| glob_one(alt, text))
}

fn glob_one(pattern: &str, text: &str) -> bool {
    let parts: Vec<&str> = pattern.split('*').collect();
    if parts.len() == 1 {
        return pattern == text;
    }
    let mut rest = text;
    for (i, part) in parts.iter().enumerate() {
        if i == 0 {
            match rest.strip_prefix(part) {
                Some(r) => rest = r,
                None => return false,
            }
        } else if i == parts.len() - 1 {
            return rest.ends_with(part);
        } else {
            match rest.find(part) {
                Some(pos) => rest = &rest[pos + part.len()..],
                None => return false,
            }
        }
    }
    true
}

impl Allow {
    pub fn covers(&self, scenario: &str, seq: u32, request: &str, diff: &Diff) -> bool {
        glob(self.scenario, scenario)
            && (self.seqs.is_empty() || self.seqs.contains(&seq))
            && glob(self.request, request)
            && glob(self.what, &diff.what)
    }
}

/// A difference with the entry that allows it, if any.
#[derive(Debug, Clone)]
pub struct Judged {
    pub diff: Diff,
    pub allowed_by: Option<Allow>,
}

/// The verdict on one exchange.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Same answer (volatile values compared by shape only).
    Matched,
    /// Differs only where the allowlist names an intended difference.
    Allowlisted,
    Mismatched,
}

/// Classifies `diffs` of one exchange.
pub fn judge(
    list: &[Allow],
    scenario: &str,
    seq: u32,
    request: &str,
    diffs: Vec<Diff>,
) -> (Verdict, Vec<Judged>) {
    let judged: Vec<Judged> = diffs
        .into_iter()
        .map(|diff| {
            let allowed_by = list
                .iter()
                .find(|a| a.covers(scenario, seq, request, &diff))
                .copied();
            Judged { diff, allowed_by }
        })
        .collect();
    let verdict = if judged.iter().any(|j| j.allowed_by.is_none()) {
        Verdict::Mismatched
    } else if judged
        .iter()
        .any(|j| j.allowed_by.is_some_and(|a| a.kind == AllowKind::Intended))
    {
        Verdict::Allowlisted
    } else {
        Verdict::Matched
    };
    (verdict, judged)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globbing() {
        assert!(glob("c4-*", "c4-basic-info"));
        assert!(!glob("c4-*", "s4-c4-x"));
        assert!(glob("*", ""));
        assert!(glob("body:data.*", "body:data.repoid"));
        assert!(glob(
            "GET */status",
            "GET /api2/json/admin/datastore/store1/status"
        ));
        assert!(!glob(
            "GET */status",
            "GET /api2/json/admin/datastore/store1/status?x"
        ));
        assert!(glob("a*b*c", "axxbyyc"));
        assert!(glob("body:data.used|body:data.avail", "body:data.avail"));
    }
}
