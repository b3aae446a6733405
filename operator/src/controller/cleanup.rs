//! Tenant deletion through the finalizer.
//!
//! * `Retain` (default): nothing is deleted; the data PVC has no owner reference and S3 data
//!   stays where it is.
//! * `Delete`: the server is stopped (its Deployment deleted, so nothing writes any more), the
//!   data PVC is deleted, and every object version under each S3 datastore's prefix is
//!   deleted with the Datastore's credentials. The finalizer is released only when all of it
//!   is gone. Versions under S3 Object Lock cannot be deleted before their retain-until date:
//!   the Tenant then stays (Terminating) with condition `DataDeletion=False`, reason
//!   `ObjectLocked`, and a Warning event, and the purge is retried hourly, so the data goes as
//!   soon as the locks allow. Setting the annotation [`ABANDON_ANNOTATION`] to `"true"` gives up
//!   instead: the finalizer is released and the remaining objects are left (reported in an
//!   event). Other failures (Secret missing, S3 unreachable) retry every 5 minutes, with the
//!   same annotation as the way out.
//! * The purge never leaves a datastore's own prefix: keys under the prefix of another
//!   tenant's datastore nested inside it are left alone, and a datastore whose prefix overlaps
//!   one another datastore holds (it was refused with `PrefixOverlap`, so its server never
//!   wrote there) deletes nothing at all. Both are named in the `DataDeleted` event.

use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Secret};
use kube::api::{Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use kube::{Api, ResourceExt};

use super::apply::delete_opt;
use super::stores::{get, in_namespace};
use super::{Context, Error};
use crate::crd::{self, condition, set_condition, Datastore, DeletionPolicy, Tenant};
use crate::purge::{self, PurgeTarget};
use crate::render::overlap::{self, Location};
use crate::render::{secret_value, Names};

/// Annotation on a Tenant: `"true"` releases the finalizer even though some backup data could
/// not be deleted (Object Lock, lost credentials).
pub const ABANDON_ANNOTATION: &str = "pbs.cloud/abandon-undeletable-data";
/// Retry interval while Object Lock keeps versions.
const LOCKED_RETRY: Duration = Duration::from_secs(3600);
/// Retry interval after other failures.
const ERROR_RETRY: Duration = Duration::from_secs(300);

/// A Secret from the cache, else from the API server (deletion is rare and must not act on
/// a cache that lags).
async fn secret(ctx: &Context, ns: &str, name: &str) -> Result<Option<Secret>, String> {
    if let Some(s) = get(&ctx.stores.secrets, ns, name) {
        return Ok(Some((*s).clone()));
    }
    ctx.api::<Secret>(ns)
        .get_opt(name)
        .await
        .map_err(|e| format!("get Secret {ns}/{name}: {e}"))
}

/// What the purge of one S3 datastore does.
enum Plan {
    /// Delete under the prefix, except under these nested prefixes of other tenants.
    Purge(Box<PurgeTarget>, Vec<(String, Location)>),
    /// Delete nothing: another datastore holds an overlapping prefix, so this one never
    /// held (or wrote) its own.
    Skip(String),
}

/// The purge plan of one datastore, or why it cannot be built.
async fn plan(ctx: &Context, tenant: &Tenant, ds: &Datastore) -> Result<Option<Plan>, String> {
    let Some(s3) = &ds.spec.s3 else {
        return Ok(None);
    };
    let Some(location) = overlap::location(ds, Some(tenant)) else {
        return Ok(None);
    };
    let all = ctx.stores.datastores.state();
    let others = || all.iter().map(|a| &**a);
    let tenant_of = |d: &Datastore| ctx.stores.tenant_of(d);
    if let Some(c) = overlap::conflict(ds, others(), tenant_of) {
        return Ok(Some(Plan::Skip(format!(
            "Datastore {}: nothing deleted under {location}: Datastore {} holds the overlapping {}",
            ds.name_any(),
            c.holder,
            c.holder_location
        ))));
    }
    let nested = overlap::nested_foreign(ds, others(), tenant_of);
    let ns = tenant.namespace().unwrap_or_default();
    let keys = match &s3.credentials_secret {
        None => None,
        Some(r) => {
            let secret = secret(ctx, &ns, &r.name).await?.ok_or_else(|| {
                format!(
                    "Datastore {}: Secret {} is gone, cannot delete {location}",
                    ds.name_any(),
                    r.name
                )
            })?;
            let id = secret_value(&secret, &r.access_key_id_key);
            let key = secret_value(&secret, &r.secret_access_key_key);
            match (id, key) {
                (Some(id), Some(key)) => Some((id, key)),
                _ => {
                    return Err(format!(
                        "Datastore {}: Secret {} lacks '{}' or '{}', cannot delete {location}",
                        ds.name_any(),
                        r.name,
                        r.access_key_id_key,
                        r.secret_access_key_key
                    ))
                }
            }
        }
    };
    let ca_bundle_pem = match &s3.ca_bundle {
        None => None,
        Some(c) => secret(ctx, &ns, &c.secret_name)
            .await?
            .and_then(|s| secret_value(&s, &c.key))
            .map(String::into_bytes),
    };
    let target = PurgeTarget {
        bucket: s3.bucket.clone(),
        prefix: location.prefix(),
        exclude: nested.iter().map(|(_, l)| l.prefix()).collect(),
        endpoint: s3.endpoint.clone(),
        region: s3.region.clone(),
        path_style: s3.path_style,
        keys,
        ca_bundle_pem,
        page_size: None,
    };
    Ok(Some(Plan::Purge(Box::new(target), nested)))
}

/// Finalizer cleanup of a Tenant (see the module doc).
pub(super) async fn cleanup(tenant: &Tenant, ctx: &Context) -> Result<Action, Error> {
    let ns = tenant.namespace().unwrap_or_default();
    if tenant.spec.deletion_policy != DeletionPolicy::Delete {
        ctx.publish(
            tenant,
            EventType::Normal,
            "DataRetained",
            "deletionPolicy Retain: backup data kept".into(),
        )
        .await;
        return Ok(Action::await_change());
    }
    let names = Names::of(tenant);
    // Not from the cache: the server must be stopped even if the cache lags behind.
    delete_opt(&ctx.api::<Deployment>(&ns), "Deployment", &names.workload).await?;
    delete_opt(
        &ctx.api::<PersistentVolumeClaim>(&ns),
        "PersistentVolumeClaim",
        &names.data,
    )
    .await?;
    let stores = in_namespace(&ctx.stores.datastores, &ns);
    let mut problems = Vec::new();
    let (mut deleted, mut locked, mut places) = (0u64, 0u64, Vec::new());
    let mut samples = Vec::new();
    let mut left = Vec::new();
    for ds in stores.iter().filter(|d| d.spec.tenant == tenant.name_any()) {
        let (t, nested) = match plan(ctx, tenant, ds).await {
            Ok(Some(Plan::Purge(t, nested))) => (t, nested),
            Ok(Some(Plan::Skip(why))) => {
                left.push(why);
                continue;
            }
            Ok(None) => continue,
            Err(why) => {
                problems.push(why);
                continue;
            }
        };
        match purge::purge(&t).await {
            Ok(out) => {
                deleted += out.deleted;
                locked += out.locked;
                places.push(t.location());
                if out.locked > 0 {
                    samples.extend(out.locked_sample);
                }
                if out.skipped > 0 {
                    let owners: Vec<String> = nested
                        .iter()
                        .map(|(n, l)| format!("{l} of Datastore {n}"))
                        .collect();
                    left.push(format!(
                        "{} object version(s) under {} left alone: {}",
                        out.skipped,
                        t.location(),
                        owners.join(", ")
                    ));
                }
            }
            Err(e) => problems.push(e.to_string()),
        }
    }
    if problems.is_empty() && locked == 0 {
        let mut note = if places.is_empty() {
            "deletionPolicy Delete: server and data volume deleted".to_string()
        } else {
            format!(
                "deletionPolicy Delete: server and data volume deleted; {deleted} object version(s) deleted under {}",
                places.join(", ")
            )
        };
        for l in &left {
            note.push_str("; ");
            note.push_str(l);
        }
        ctx.publish(tenant, EventType::Normal, "DataDeleted", note)
            .await;
        return Ok(Action::await_change());
    }
    let mut parts = problems.clone();
    if locked > 0 {
        parts.push(format!(
            "{locked} object version(s) are under S3 Object Lock and cannot be deleted before their retain-until date (e.g. {})",
            samples.join(", ")
        ));
    }
    let abandon = tenant
        .annotations()
        .get(ABANDON_ANNOTATION)
        .is_some_and(|v| v == "true");
    if abandon {
        ctx.publish(
            tenant,
            EventType::Warning,
            "DataAbandoned",
            format!(
                "finalizer released as {ABANDON_ANNOTATION} asks; left behind: {}",
                parts.join("; ")
            ),
        )
        .await;
        return Ok(Action::await_change());
    }
    let reason = if problems.is_empty() {
        "ObjectLocked"
    } else {
        "DeleteFailed"
    };
    let message = format!(
        "{}; {deleted} version(s) deleted so far; the Tenant stays until the rest is gone (annotate {ABANDON_ANNOTATION}=true to give up)",
        parts.join("; ")
    );
    report(ctx, tenant, reason, &message).await;
    Err(Error::DataNotDeleted {
        name: tenant.name_any(),
        message,
        retry: if problems.is_empty() {
            LOCKED_RETRY
        } else {
            ERROR_RETRY
        },
    })
}

/// `DataDeletion=False` condition plus a Warning event, written when the condition changed
/// (best effort: the error carries it too).
async fn report(ctx: &Context, tenant: &Tenant, reason: &str, message: &str) {
    let mut status = tenant.status.clone().unwrap_or_default();
    let before = status
        .conditions
        .iter()
        .find(|c| c.type_ == "DataDeletion")
        .cloned();
    let c = condition(
        "DataDeletion",
        false,
        reason,
        message,
        tenant.metadata.generation,
        &crd::now(),
    );
    let same_reason = before
        .as_ref()
        .is_some_and(|b| b.status == c.status && b.reason == c.reason);
    if same_reason && before.as_ref().is_some_and(|b| b.message == c.message) {
        return;
    }
    set_condition(&mut status.conditions, c);
    let api: Api<Tenant> = ctx.api(&tenant.namespace().unwrap_or_default());
    let patch = serde_json::json!({ "status": { "conditions": status.conditions } });
    if let Err(e) = api
        .patch_status(
            &tenant.name_any(),
            &PatchParams::default(),
            &Patch::Merge(patch),
        )
        .await
    {
        tracing::debug!("status of Tenant {}: {e}", tenant.name_any());
    }
    if !same_reason {
        ctx.publish(
            tenant,
            EventType::Warning,
            "DataNotDeleted",
            message.to_string(),
        )
        .await;
    }
}
