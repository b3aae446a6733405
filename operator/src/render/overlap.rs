//! S3 locations of Datastores and the rule that two of them never share keys: in one bucket,
//! no datastore's prefix may equal, contain or lie inside another's. Prefixes compare by whole
//! path segments, so `tenants/a` contains `tenants/a/b` but not `tenants/ab`.
//!
//! Whether two objects overlap cannot be checked by the API server (a schema sees one object
//! at a time), so the operator decides: of two overlapping datastores the one that holds the
//! location keeps it (already bound for its current spec, else the older, else by namespace
//! and name) and the other is rejected (`Ready=False`, reason `PrefixOverlap`) and never
//! rendered. The purge of `deletionPolicy: Delete` uses the same rule so it never deletes keys
//! of another datastore (see `controller::cleanup`).

use std::cmp::Ordering;

use kube::ResourceExt;

use super::config;
use crate::crd::{Datastore, Tenant};

/// Bucket and prefix of an S3 datastore, normalized for comparison.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Location {
    /// Endpoint URL without trailing `/`, lower case; empty for the SDK's default (AWS).
    pub endpoint: String,
    pub bucket: String,
    /// The prefix's path segments (no empty ones).
    pub segments: Vec<String>,
}

impl Location {
    /// `prefix` without leading or trailing `/`.
    pub fn prefix(&self) -> String {
        self.segments.join("/")
    }

    fn same_bucket(&self, other: &Location) -> bool {
        self.bucket == other.bucket && self.endpoint == other.endpoint
    }

    /// True when every key under `other` is also under `self` (equal counts).
    pub fn contains(&self, other: &Location) -> bool {
        self.same_bucket(other) && other.segments.starts_with(&self.segments)
    }

    /// True when the two share any key.
    pub fn overlaps(&self, other: &Location) -> bool {
        self.contains(other) || other.contains(self)
    }
}

impl std::fmt::Display for Location {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "s3://{}/{}/", self.bucket, self.prefix())
    }
}

/// The S3 location of `ds`; `tenant` is its Tenant when known (for a `tenantId` in the default
/// prefix). `None` for local datastores.
pub fn location(ds: &Datastore, tenant: Option<&Tenant>) -> Option<Location> {
    let s3 = ds.spec.s3.as_ref()?;
    let prefix = match (tenant, &s3.prefix) {
        (_, Some(p)) => p.clone(),
        (Some(t), None) => config::s3_prefix(t, ds)?,
        (None, None) => format!(
            "{}/{}/{}",
            ds.namespace().unwrap_or_default(),
            ds.spec.tenant,
            ds.store_name()
        ),
    };
    Some(Location {
        endpoint: s3
            .endpoint
            .as_deref()
            .unwrap_or("")
            .trim_end_matches('/')
            .to_ascii_lowercase(),
        bucket: s3.bucket.clone(),
        segments: prefix
            .split('/')
            .filter(|s| !s.is_empty())
            .map(str::to_string)
            .collect(),
    })
}

/// `namespace/name` of a datastore, for messages.
pub fn full_name(ds: &Datastore) -> String {
    format!("{}/{}", ds.namespace().unwrap_or_default(), ds.name_any())
}

/// True when `ds` is bound (Ready=True, reason `Bound`) for its current generation.
fn bound_now(ds: &Datastore) -> bool {
    ds.status.as_ref().is_some_and(|s| {
        s.observed_generation == ds.metadata.generation
            && s.conditions
                .iter()
                .any(|c| c.type_ == "Ready" && c.status == "True" && c.reason == "Bound")
    })
}

/// Which of two overlapping datastores holds the location (`Less`: `a` does).
fn precedence(a: &Datastore, b: &Datastore) -> Ordering {
    let key = |d: &Datastore| {
        (
            !bound_now(d),
            d.metadata.creation_timestamp.as_ref().map(|t| t.0),
            d.namespace().unwrap_or_default(),
            d.name_any(),
        )
    };
    key(a).cmp(&key(b))
}

fn same_object(a: &Datastore, b: &Datastore) -> bool {
    a.namespace() == b.namespace() && a.name_any() == b.name_any()
}

/// A datastore that holds a location overlapping another one's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Conflict {
    /// `namespace/name` of the holder.
    pub holder: String,
    pub holder_location: Location,
    pub location: Location,
}

impl Conflict {
    /// The message of the `PrefixOverlap` rejection.
    pub fn message(&self) -> String {
        let how = if self.location == self.holder_location {
            "is the same as"
        } else if self.holder_location.contains(&self.location) {
            "lies inside"
        } else {
            "contains"
        };
        format!(
            "S3 prefix {} {how} {} of Datastore {}, which holds it; give this datastore a prefix that neither contains nor lies inside another datastore's in the same bucket",
            self.location, self.holder_location, self.holder
        )
    }
}

/// The datastore among `all` that keeps a location overlapping `ds`'s, if any (then `ds` is
/// rejected). `tenant_of` finds a datastore's Tenant.
pub fn conflict<'a, T>(
    ds: &Datastore,
    all: impl IntoIterator<Item = &'a Datastore>,
    tenant_of: T,
) -> Option<Conflict>
where
    T: Fn(&Datastore) -> Option<Tenant>,
{
    let own = location(ds, tenant_of(ds).as_ref())?;
    all.into_iter()
        .filter(|o| !same_object(o, ds) && o.spec.s3.is_some())
        .filter(|o| precedence(o, ds) == Ordering::Less)
        .filter_map(|o| {
            let loc = location(o, tenant_of(o).as_ref())?;
            loc.overlaps(&own).then_some((o, loc))
        })
        .min_by(|a, b| precedence(a.0, b.0))
        .map(|(o, loc)| Conflict {
            holder: full_name(o),
            holder_location: loc,
            location: own.clone(),
        })
}

/// Locations of other tenants' datastores strictly inside `ds`'s location: a purge of `ds`
/// leaves them alone whatever their state.
pub fn nested_foreign<'a, T>(
    ds: &Datastore,
    all: impl IntoIterator<Item = &'a Datastore>,
    tenant_of: T,
) -> Vec<(String, Location)>
where
    T: Fn(&Datastore) -> Option<Tenant>,
{
    let Some(own) = location(ds, tenant_of(ds).as_ref()) else {
        return Vec::new();
    };
    let mut out: Vec<(String, Location)> = all
        .into_iter()
        .filter(|o| o.namespace() != ds.namespace() || o.spec.tenant != ds.spec.tenant)
        .filter_map(|o| {
            let loc = location(o, tenant_of(o).as_ref())?;
            (own.contains(&loc) && loc != own).then(|| (full_name(o), loc))
        })
        .collect();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

#[cfg(test)]
mod tests {
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
    use kube::api::ObjectMeta;

    use super::*;
    use crate::crd::{condition, ChildStatus, DatastoreSpec, S3Spec};

    fn ds(ns: &str, name: &str, tenant: &str, prefix: &str, age: i64) -> Datastore {
        let created = k8s_openapi::jiff::Timestamp::from_second(1_700_000_000 + age).expect("time");
        Datastore {
            metadata: ObjectMeta {
                name: Some(name.into()),
                namespace: Some(ns.into()),
                generation: Some(1),
                creation_timestamp: Some(Time(created)),
                ..ObjectMeta::default()
            },
            spec: DatastoreSpec {
                tenant: tenant.into(),
                s3: Some(S3Spec {
                    bucket: "b".into(),
                    prefix: Some(prefix.into()),
                    endpoint: Some("http://S3:7480/".into()),
                    ..S3Spec::default()
                }),
                ..DatastoreSpec::default()
            },
            status: None,
        }
    }

    fn bound(mut d: Datastore) -> Datastore {
        d.status = Some(ChildStatus {
            observed_generation: Some(1),
            conditions: vec![condition("Ready", true, "Bound", "", Some(1), "t")],
            tenant: Some(d.spec.tenant.clone()),
        });
        d
    }

    fn no_tenant(_: &Datastore) -> Option<Tenant> {
        None
    }

    #[test]
    fn prefixes_compare_by_whole_segments() {
        let loc = |p: &str| location(&ds("n", "x", "t", p, 0), None).expect("s3");
        assert!(loc("tenants/a").contains(&loc("tenants/a/b")));
        assert!(loc("tenants/a").overlaps(&loc("/tenants/a/")));
        assert!(!loc("tenants/a").overlaps(&loc("tenants/ab")));
        assert!(!loc("tenants/a/b").contains(&loc("tenants/a")));
        let mut other_bucket = loc("tenants/a");
        other_bucket.bucket = "c".into();
        assert!(!other_bucket.overlaps(&loc("tenants/a")));
        assert_eq!(loc("tenants/a").to_string(), "s3://b/tenants/a/");
        assert_eq!(loc("x").endpoint, "http://s3:7480");
    }

    #[test]
    fn the_older_datastore_keeps_an_overlapping_prefix() {
        let old = ds("n1", "old", "t1", "tenants/a", 0);
        let new = ds("n2", "new", "t2", "tenants/a/b", 10);
        let apart = ds("n2", "apart", "t2", "tenants/ab", 20);
        let all = [old.clone(), new.clone(), apart.clone()];
        assert_eq!(conflict(&old, &all, no_tenant), None);
        let c = conflict(&new, &all, no_tenant).expect("refused");
        assert_eq!(c.holder, "n1/old");
        assert_eq!(
            c.message(),
            "S3 prefix s3://b/tenants/a/b/ lies inside s3://b/tenants/a/ of Datastore n1/old, which holds it; give this datastore a prefix that neither contains nor lies inside another datastore's in the same bucket"
        );
        assert_eq!(conflict(&apart, &all, no_tenant), None);
    }

    #[test]
    fn a_bound_datastore_keeps_its_prefix_against_an_older_edited_one() {
        // `edited` is older but its spec changed (generation 2, not bound for it).
        let mut edited = bound(ds("n1", "edited", "t1", "tenants/b", 0));
        edited.metadata.generation = Some(2);
        let holder = bound(ds("n2", "holder", "t2", "tenants/b/x", 10));
        let all = [edited.clone(), holder.clone()];
        assert_eq!(conflict(&holder, &all, no_tenant), None);
        let c = conflict(&edited, &all, no_tenant).expect("refused");
        assert!(
            c.message().contains("contains s3://b/tenants/b/x/"),
            "{}",
            c.message()
        );
    }

    #[test]
    fn default_prefixes_use_the_tenant_id() {
        let mut a = ds("n", "a", "t", "", 0);
        let mut t = Tenant::new("t", Default::default());
        t.metadata.namespace = Some("n".into());
        t.spec.tenant_id = Some("acme".into());
        if let Some(s3) = a.spec.s3.as_mut() {
            s3.prefix = None;
        }
        assert_eq!(location(&a, Some(&t)).expect("s3").prefix(), "n/acme/a");
        assert_eq!(location(&a, None).expect("s3").prefix(), "n/t/a");
        a.spec.name = Some("store1".into());
        assert_eq!(location(&a, None).expect("s3").prefix(), "n/t/store1");
    }

    #[test]
    fn nested_datastores_of_other_tenants_are_listed_for_the_purge() {
        let mine = ds("n", "mine", "t", "p/w", 0);
        let sibling = ds("n", "sib", "s", "p/w/nested", 10);
        let same_tenant = ds("n", "mine2", "t", "p/w/own", 10);
        let apart = ds("n", "apart", "s", "p/wx", 10);
        let all = [mine.clone(), sibling, same_tenant, apart];
        let nested = nested_foreign(&mine, &all, no_tenant);
        assert_eq!(nested.len(), 1);
        assert_eq!(nested[0].0, "n/sib");
        assert_eq!(nested[0].1.prefix(), "p/w/nested");
    }
}
