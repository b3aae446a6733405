//! Prune jobs (docs/formats.md#prune-execution): every group in a namespace subtree that passes the
//! group filters is pruned with the job's keep options; task log lines as PBS writes them
//! (`[would ]keep|keep protected|keep partial|remove <snapshot>`), snapshots removed oldest first,
//! a failed removal logged and skipped.

use regex::Regex;
use serde::Serialize;

use crate::datastore::{
    compute_prune, Datastore, DatastoreError, KeepOptions, PruneCandidate, PruneMark,
};
use crate::format::names::{BackupGroup, BackupNamespace, BackupType};

/// A PBS group filter: `type:<vm|ct|host>`, `group:<type>/<id>`, `regex:<re>` (matched
/// against `<type>/<id>`), each optionally prefixed with `exclude:`.
#[derive(Clone, Debug)]
pub struct GroupFilter {
    exclude: bool,
    rule: Rule,
}

#[derive(Clone, Debug)]
enum Rule {
    Type(BackupType),
    Group(String),
    Regex(Regex),
}

impl GroupFilter {
    /// Parse one filter; the error says what is wrong with it.
    pub fn parse(text: &str) -> Result<Self, String> {
        let (exclude, rest) = match text.strip_prefix("exclude:") {
            Some(rest) => (true, rest),
            None => (false, text),
        };
        let rule = match rest.split_once(':') {
            Some(("type", ty)) => Rule::Type(
                ty.parse()
                    .map_err(|_| format!("'{ty}' is not a backup type (vm, ct, host)"))?,
            ),
            Some(("group", group)) => {
                let (ty, id) = group
                    .split_once('/')
                    .ok_or_else(|| format!("'{group}' is not a group like vm/100"))?;
                let ty: BackupType = ty
                    .parse()
                    .map_err(|_| format!("'{ty}' is not a backup type (vm, ct, host)"))?;
                let group = BackupGroup::new(ty, id).map_err(|e| format!("'{group}': {e}"))?;
                Rule::Group(group.path())
            }
            Some(("regex", re)) => {
                Rule::Regex(Regex::new(re).map_err(|e| format!("bad regex '{re}': {e}"))?)
            }
            _ => {
                return Err(format!(
                "'{text}' is not a group filter (type:, group:, regex:, optionally after exclude:)"
            ))
            }
        };
        Ok(GroupFilter { exclude, rule })
    }

    fn matches(&self, group: &BackupGroup) -> bool {
        match &self.rule {
            Rule::Type(ty) => group.ty == *ty,
            Rule::Group(path) => group.path() == *path,
            Rule::Regex(re) => re.is_match(&group.path()),
        }
    }
}

/// PBS's rule: with include filters a group must match one of them; it must match no exclude
/// filter. No filters: every group.
pub fn group_selected(filters: &[GroupFilter], group: &BackupGroup) -> bool {
    let mut includes = filters.iter().filter(|f| !f.exclude).peekable();
    let included = includes.peek().is_none() || includes.any(|f| f.matches(group));
    included && !filters.iter().any(|f| f.exclude && f.matches(group))
}

/// What a prune job covers and keeps.
#[derive(Clone, Debug)]
pub struct PruneParams {
    pub ns: BackupNamespace,
    pub max_depth: Option<usize>,
    pub filters: Vec<GroupFilter>,
    pub keep: KeepOptions,
}

/// Job-history summary of a prune run.
#[derive(Clone, Debug, Default, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct PruneSummary {
    pub groups: u64,
    /// Labels (`[ns/]type/id/time`) of snapshots removed (or, in a dry run, to be removed).
    pub removed: Vec<String>,
    pub kept: Vec<String>,
    /// Removals that failed (protected by a lock, busy, ...), with the reason.
    pub failed: Vec<String>,
}

fn label(ns: &BackupNamespace, path: &str) -> String {
    match ns.is_root() {
        true => path.to_string(),
        false => format!("{}/{path}", ns.display_path()),
    }
}

/// Run a prune job over `store`; `aborted` is polled between groups.
pub async fn run(
    store: &Datastore,
    params: &PruneParams,
    dry_run: bool,
    log: &(dyn Fn(String) + Send + Sync),
    aborted: &(dyn Fn() -> bool + Send + Sync),
) -> Result<PruneSummary, DatastoreError> {
    let mut summary = PruneSummary::default();
    if params.keep.keeps_all() {
        log("no keep options given - keeping every snapshot".to_string());
    }
    let would = if dry_run { "would " } else { "" };
    for ns in store
        .tree()
        .list_namespaces(&params.ns, params.max_depth)
        .await?
    {
        for group in store.tree().list_groups(&ns).await? {
            if !group_selected(&params.filters, &group) {
                continue;
            }
            if aborted() {
                return Err(DatastoreError::Internal("prune job aborted".into()));
            }
            summary.groups += 1;
            log(format!("Pruning group {}", label(&ns, &group.path())));
            let snapshots = store.tree().list_snapshots(&ns, &group).await?;
            let candidates: Vec<PruneCandidate> = snapshots
                .iter()
                .map(|s| PruneCandidate {
                    time: s.dir.time,
                    finished: s.finished,
                    protected: s.protected,
                })
                .collect();
            let marks = match params.keep.keeps_all() {
                true => candidates
                    .iter()
                    .map(|c| match c.protected {
                        true => PruneMark::Protected,
                        false => PruneMark::Keep,
                    })
                    .collect(),
                false => compute_prune(&candidates, &params.keep),
            };
            // Oldest first, like PBS.
            for (info, mark) in snapshots.iter().zip(marks) {
                let name = label(&ns, &info.dir.path());
                // A retention lock keeps what the keep options would remove, in a dry run too.
                let held = match mark.keep() {
                    true => None,
                    false => store.retention().hold(&ns, &info.dir)?,
                };
                if let Some(why) = held {
                    log(format!("{would}keep {name} (retention lock: {why})"));
                    summary.kept.push(name);
                    continue;
                }
                log(format!("{would}{} {name}", mark.as_log_str()));
                if mark.keep() {
                    summary.kept.push(name);
                    continue;
                }
                if dry_run {
                    summary.removed.push(name);
                    continue;
                }
                match store.tree().remove_snapshot(&ns, &info.dir, false).await {
                    Ok(()) => summary.removed.push(name),
                    Err(e) => {
                        log(format!("failed to remove snapshot {name}: {e}"));
                        summary.failed.push(format!("{name}: {e}"));
                    }
                }
            }
        }
    }
    log(format!(
        "{} groups, {} snapshots {}removed, {} kept, {} removals failed",
        summary.groups,
        summary.removed.len(),
        if dry_run { "to be " } else { "" },
        summary.kept.len(),
        summary.failed.len()
    ));
    Ok(summary)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn g(ty: BackupType, id: &str) -> BackupGroup {
        BackupGroup::new(ty, id).unwrap()
    }

    fn filters(list: &[&str]) -> Vec<GroupFilter> {
        list.iter()
            .map(|f| GroupFilter::parse(f).unwrap())
            .collect()
    }

    #[test]
    fn group_filters_select_like_pbs() {
        let vm100 = g(BackupType::Vm, "100");
        let vm200 = g(BackupType::Vm, "200");
        let ct100 = g(BackupType::Ct, "100");
        let host = g(BackupType::Host, "web-1");
        let all = [&vm100, &vm200, &ct100, &host];
        let picked = |list: &[&str]| -> Vec<String> {
            let f = filters(list);
            all.iter()
                .filter(|grp| group_selected(&f, grp))
                .map(|grp| grp.path())
                .collect()
        };
        assert_eq!(picked(&[]), ["vm/100", "vm/200", "ct/100", "host/web-1"]);
        assert_eq!(picked(&["type:vm"]), ["vm/100", "vm/200"]);
        assert_eq!(picked(&["group:vm/100", "type:ct"]), ["vm/100", "ct/100"]);
        assert_eq!(picked(&["regex:^(ct|host)/"]), ["ct/100", "host/web-1"]);
        assert_eq!(picked(&["exclude:type:vm"]), ["ct/100", "host/web-1"]);
        assert_eq!(picked(&["type:vm", "exclude:group:vm/200"]), ["vm/100"]);
        assert_eq!(picked(&["regex:100$", "exclude:regex:^ct"]), ["vm/100"]);
    }

    #[test]
    fn bad_filters_are_refused() {
        for bad in [
            "vm/100",
            "type:disk",
            "group:vm",
            "group:xx/1",
            "regex:(",
            "exclude:",
        ] {
            assert!(GroupFilter::parse(bad).is_err(), "{bad}");
        }
    }
}
