//! `crds/` and the chart's `crds/` must be exactly what the Rust types generate, and the
//! RetentionLock transition rules must do what they say (checked with kube's CEL evaluator,
//! since the 1.20 test API server has no CEL).

use std::path::Path;

use kube::core::cel::validate_cel_update;
use kube::CustomResourceExt;
use pbs_cloud_operator::crd::{LockMode, RetentionLock, RetentionLockSpec};

#[test]
fn checked_in_crds_match_the_types() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let stale = pbs_cloud_operator::crdgen::stale_files(&root).expect("render CRDs");
    assert!(
        stale.is_empty(),
        "CRD files differ from the Rust types: {stale:?}\nregenerate with `cargo run -p pbs-cloud-operator --bin crdgen`"
    );
}

#[test]
fn crds_have_columns_short_names_and_status() {
    for crd in pbs_cloud_operator::crdgen::all() {
        let v = &crd.spec.versions[0];
        assert_eq!(crd.spec.group, "pbs.cloud");
        assert_eq!(v.name, "v1alpha1");
        assert_eq!(crd.spec.scope, "Namespaced");
        assert!(crd
            .spec
            .names
            .short_names
            .as_ref()
            .is_some_and(|s| !s.is_empty()));
        assert!(v
            .additional_printer_columns
            .as_ref()
            .is_some_and(|c| c.iter().any(|c| c.name == "Ready")));
        assert!(v
            .subresources
            .as_ref()
            .and_then(|s| s.status.as_ref())
            .is_some());
    }
}

fn lock(days: u64, mode: LockMode, groups: &[&str], legal_hold: bool) -> RetentionLock {
    RetentionLock::new(
        "worm",
        RetentionLockSpec {
            datastore: "store1".into(),
            ns: None,
            groups: groups.iter().map(|g| g.to_string()).collect(),
            mode,
            days,
            legal_hold,
        },
    )
}

fn rejects(old: &RetentionLock, new: &RetentionLock, message: &str) {
    match validate_cel_update(new, old) {
        Ok(()) => panic!("rule should refuse {:?} -> {:?}", old.spec, new.spec),
        Err(errs) => {
            let text = format!("{errs:?}");
            assert!(text.contains(message), "expected '{message}' in {text}");
        }
    }
    assert!(
        pbs_cloud_operator::crd::weakening(&old.spec, &new.spec).is_some(),
        "operator check agrees"
    );
}

fn accepts(old: &RetentionLock, new: &RetentionLock) {
    validate_cel_update(new, old).unwrap_or_else(|e| panic!("rule should accept: {e:?}"));
    assert!(
        pbs_cloud_operator::crd::weakening(&old.spec, &new.spec).is_none(),
        "operator check agrees"
    );
}

#[test]
fn retention_lock_rules_refuse_shortening_and_weakening() {
    let crd = serde_json::to_string(&RetentionLock::crd()).expect("json");
    assert!(crd.contains("x-kubernetes-validations") && crd.contains("oldSelf"));
    let base = lock(30, LockMode::Compliance, &["vm/100"], true);
    rejects(
        &base,
        &lock(29, LockMode::Compliance, &["vm/100"], true),
        "cannot be shortened",
    );
    rejects(
        &base,
        &lock(30, LockMode::Governance, &["vm/100"], true),
        "cannot be weakened",
    );
    rejects(
        &base,
        &lock(30, LockMode::Compliance, &[], true),
        "groups of a retention lock",
    );
    rejects(
        &base,
        &lock(30, LockMode::Compliance, &["vm/100"], false),
        "legal hold",
    );
    let mut moved = base.clone();
    moved.spec.datastore = "other".into();
    rejects(&base, &moved, "immutable");
    accepts(
        &base,
        &lock(60, LockMode::Compliance, &["vm/100", "vm/101"], true),
    );
    let gov = lock(10, LockMode::Governance, &[], false);
    accepts(&gov, &lock(10, LockMode::Compliance, &[], false));
    rejects(
        &gov,
        &lock(10, LockMode::Governance, &["vm/1"], false),
        "groups of a retention lock",
    );
}

#[test]
fn strip_cel_removes_every_rule() {
    let crds: Vec<_> = pbs_cloud_operator::crdgen::all()
        .into_iter()
        .map(pbs_cloud_operator::crdgen::strip_cel)
        .collect();
    let text = serde_json::to_string(&crds).expect("json");
    assert!(!text.contains("x-kubernetes-validations"));
}
