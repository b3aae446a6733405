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

use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Secret};
use kube::api::{ListParams, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use kube::{Api, ResourceExt};

use super::apply::{delete_opt, get_opt};
use super::tenant::{now, publish};
use super::{Context, Error};
use crate::crd::{condition, set_condition, Datastore, DeletionPolicy, Tenant};
use crate::purge::{self, PurgeTarget};
use crate::render::{self, Names};

/// Annotation on a Tenant: `"true"` releases the finalizer even though some backup data could
/// not be deleted (Object Lock, lost credentials).
pub const ABANDON_ANNOTATION: &str = "pbs.cloud/abandon-undeletable-data";
/// Retry interval while Object Lock keeps versions.
const LOCKED_RETRY: Duration = Duration::from_secs(3600);
/// Retry interval after other failures.
const ERROR_RETRY: Duration = Duration::from_secs(300);

fn secret_value(secret: &Secret, key: &str) -> Option<String> {
    secret
        .data
        .as_ref()
        .and_then(|d| d.get(key))
        .and_then(|v| String::from_utf8(v.0.clone()).ok())
        .map(|v| v.trim().to_string())
}

/// The purge target of one S3 datastore, or why it cannot be built.
async fn target(
    ctx: &Context,
    tenant: &Tenant,
    ds: &Datastore,
) -> Result<Option<PurgeTarget>, String> {
    let Some(s3) = &ds.spec.s3 else {
        return Ok(None);
    };
    let ns = tenant.namespace().unwrap_or_default();
    let secrets: Api<Secret> = ctx.api(&ns);
    let prefix = render::s3_prefix(tenant, ds).unwrap_or_default();
    let location = format!("s3://{}/{prefix}/", s3.bucket);
    let keys = match &s3.credentials_secret {
        None => None,
        Some(r) => {
            let secret = get_opt(&secrets, "Secret", &r.name)
                .await
                .map_err(|e| e.to_string())?
                .ok_or_else(|| {
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
        Some(c) => get_opt(&secrets, "Secret", &c.secret_name)
            .await
            .map_err(|e| e.to_string())?
            .and_then(|s| secret_value(&s, &c.key))
            .map(String::into_bytes),
    };
    Ok(Some(PurgeTarget {
        bucket: s3.bucket.clone(),
        prefix,
        endpoint: s3.endpoint.clone(),
        region: s3.region.clone(),
        path_style: s3.path_style,
        keys,
        ca_bundle_pem,
        page_size: None,
    }))
}

/// Finalizer cleanup of a Tenant (see the module doc).
pub(super) async fn cleanup(tenant: &Tenant, ctx: &Context) -> Result<Action, Error> {
    let ns = tenant.namespace().unwrap_or_default();
    if tenant.spec.deletion_policy != DeletionPolicy::Delete {
        publish(
            ctx,
            tenant,
            EventType::Normal,
            "DataRetained",
            "deletionPolicy Retain: backup data kept".into(),
        )
        .await;
        return Ok(Action::await_change());
    }
    let names = Names::of(tenant);
    delete_opt(&ctx.api::<Deployment>(&ns), "Deployment", &names.workload).await?;
    delete_opt(
        &ctx.api::<PersistentVolumeClaim>(&ns),
        "PersistentVolumeClaim",
        &names.data,
    )
    .await?;
    let stores = ctx
        .api::<Datastore>(&ns)
        .list(&ListParams::default())
        .await
        .map_err(Error::kube("list", "Datastore", ns.clone()))?
        .items;
    let mut problems = Vec::new();
    let (mut deleted, mut locked, mut places) = (0u64, 0u64, Vec::new());
    let mut samples = Vec::new();
    for ds in stores.iter().filter(|d| d.spec.tenant == tenant.name_any()) {
        let t = match target(ctx, tenant, ds).await {
            Ok(Some(t)) => t,
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
            }
            Err(e) => problems.push(e.to_string()),
        }
    }
    if problems.is_empty() && locked == 0 {
        let note = if places.is_empty() {
            "deletionPolicy Delete: server and data volume deleted".to_string()
        } else {
            format!(
                "deletionPolicy Delete: server and data volume deleted; {deleted} object version(s) deleted under {}",
                places.join(", ")
            )
        };
        publish(ctx, tenant, EventType::Normal, "DataDeleted", note).await;
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
        publish(
            ctx,
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

/// `DataDeletion=False` condition plus a Warning event (best effort: the error carries it too).
async fn report(ctx: &Context, tenant: &Tenant, reason: &str, message: &str) {
    let mut status = tenant.status.clone().unwrap_or_default();
    set_condition(
        &mut status.conditions,
        condition(
            "DataDeletion",
            false,
            reason,
            message,
            tenant.metadata.generation,
            &now(),
        ),
    );
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
    publish(
        ctx,
        tenant,
        EventType::Warning,
        "DataNotDeleted",
        message.to_string(),
    )
    .await;
}
