//! ACL paths and their evaluation. Paths are `/`, `/datastore`, `/datastore/{store}` and
//! `/datastore/{store}/{ns1}/{ns2}…`; the deepest path level with entries for an auth id decides
//! its privileges there (entries on a parent apply below it only when they propagate).

use serde::{Deserialize, Serialize};

use super::ids::Authid;
use super::privileges::{Privileges, Role};
use super::AuthError;

/// One access-control entry.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AclEntry {
    /// Normalised path (see [`normalize_path`]).
    pub path: String,
    pub authid: Authid,
    pub role: Role,
    #[serde(default = "default_true")]
    pub propagate: bool,
}

fn default_true() -> bool {
    true
}

/// Validates an ACL path and returns it without duplicate or trailing slashes.
pub fn normalize_path(path: &str) -> Result<String, AuthError> {
    let parts: Vec<&str> = path.split('/').filter(|p| !p.is_empty()).collect();
    let invalid = |why: &str| AuthError::Invalid(format!("invalid ACL path '{path}': {why}"));
    if !path.starts_with('/') {
        return Err(invalid("must start with '/'"));
    }
    if let Some(first) = parts.first() {
        if *first != "datastore" {
            return Err(invalid("only '/' and '/datastore/...' are supported"));
        }
    }
    if parts.len() > 2 + 7 {
        return Err(invalid("namespace is deeper than 7 levels"));
    }
    if parts.iter().skip(1).any(|p| !super::ids::is_safe_id(p)) {
        return Err(invalid("store and namespace components must be safe-ids"));
    }
    Ok(format!("/{}", parts.join("/")))
}

/// The path components of `/datastore/{store}/{ns…}`.
pub fn datastore_path(store: &str, ns: &[String]) -> Vec<String> {
    let mut parts = vec!["datastore".to_string(), store.to_string()];
    parts.extend(ns.iter().cloned());
    parts
}

/// Privileges of `authid` itself (no token/user combination) at the path `target`.
pub fn evaluate<'a>(
    entries: impl Iterator<Item = &'a AclEntry> + Clone,
    authid: &Authid,
    target: &[String],
) -> Privileges {
    let mut current = Privileges::EMPTY;
    for depth in 0..=target.len() {
        let path = format!("/{}", target[..depth].join("/"));
        let exact = depth == target.len();
        let mut found = false;
        let mut privs = Privileges::EMPTY;
        for entry in entries.clone() {
            if &entry.authid == authid && entry.path == path && (exact || entry.propagate) {
                found = true;
                privs |= entry.role.privileges();
            }
        }
        if found {
            current = privs;
        }
    }
    current
}

/// True when `authid` has a non-`NoAccess` entry at or below `/datastore/{store}`.
pub fn has_entry_below<'a>(
    mut entries: impl Iterator<Item = &'a AclEntry>,
    authid: &Authid,
    store: &str,
) -> bool {
    let base = format!("/datastore/{store}");
    let below = format!("{base}/");
    entries.any(|e| {
        &e.authid == authid
            && e.role != Role::NoAccess
            && (e.path == base || e.path.starts_with(&below))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(path: &str, authid: &str, role: Role, propagate: bool) -> AclEntry {
        AclEntry {
            path: normalize_path(path).unwrap(),
            authid: authid.parse().unwrap(),
            role,
            propagate,
        }
    }

    fn path(store: &str, ns: &[&str]) -> Vec<String> {
        datastore_path(store, &ns.iter().map(|s| s.to_string()).collect::<Vec<_>>())
    }

    #[test]
    fn paths_normalise() {
        assert_eq!(normalize_path("/").unwrap(), "/");
        assert_eq!(normalize_path("/datastore/s1/").unwrap(), "/datastore/s1");
        assert!(normalize_path("datastore").is_err());
        assert!(normalize_path("/system").is_err());
        assert!(normalize_path("/datastore/a b").is_err());
    }

    #[test]
    fn deepest_level_wins_and_propagation() {
        let alice: Authid = "alice@pbs".parse().unwrap();
        let acl = [
            entry("/datastore/s1", "alice@pbs", Role::DatastoreAdmin, true),
            entry("/datastore/s1/locked", "alice@pbs", Role::NoAccess, true),
            entry("/datastore/s2", "alice@pbs", Role::DatastoreBackup, false),
        ];
        let at = |store, ns: &[&str]| evaluate(acl.iter(), &alice, &path(store, ns));
        assert!(at("s1", &[]).contains(Privileges::MODIFY));
        assert!(at("s1", &["a", "b"]).contains(Privileges::MODIFY));
        assert!(at("s1", &["locked"]).is_empty());
        assert!(at("s1", &["locked", "x"]).is_empty());
        assert!(at("s2", &[]).contains(Privileges::BACKUP));
        assert!(at("s2", &["ns"]).is_empty());
        assert!(at("s3", &[]).is_empty());
        let bob: Authid = "bob@pbs".parse().unwrap();
        assert!(evaluate(acl.iter(), &bob, &path("s1", &[])).is_empty());
        assert!(has_entry_below(acl.iter(), &alice, "s2"));
        assert!(!has_entry_below(acl.iter(), &alice, "s3"));
    }
}
