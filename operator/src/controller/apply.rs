//! Writes of owned objects: server-side apply with the operator as field manager, sent only
//! when the cached object differs from the rendered one (see [`super::diff`]).

use std::fmt::Debug;
use std::sync::Arc;

use k8s_openapi::NamespaceResourceScope;
use kube::api::{ApiResource, DynamicObject, Patch, PatchParams};
use kube::{Api, Resource, ResourceExt};
use serde::de::DeserializeOwned;
use serde::Serialize;

use super::diff::{needs_apply, stamp, DIGEST_ANNOTATION};
use super::{Context, Error};
use crate::render::MANAGER;

/// Applies `obj` (server-side, forced: the operator owns these fields) and returns the result.
pub async fn apply<K>(api: &Api<K>, kind: &'static str, obj: &K) -> Result<K, Error>
where
    K: Resource<Scope = NamespaceResourceScope> + Serialize + DeserializeOwned + Clone + Debug,
{
    let name = obj.meta().name.clone().unwrap_or_default();
    api.patch(
        &name,
        &PatchParams::apply(MANAGER).force(),
        &Patch::Apply(obj),
    )
    .await
    .map_err(Error::kube("apply", kind, name))
}

/// What [`ensure`] found or did.
pub struct Ensured<K> {
    /// The object as it is now (the apply's answer, or the cached object).
    pub object: K,
    /// True when an apply was sent.
    pub applied: bool,
    /// True when there was no object before.
    pub created: bool,
}

/// Applies `desired` unless the cached `live` object already matches it.
pub async fn ensure<K>(
    ctx: &Context,
    kind: &'static str,
    desired: K,
    live: Option<Arc<K>>,
) -> Result<Ensured<K>, Error>
where
    K: Resource<Scope = NamespaceResourceScope, DynamicType = ()>
        + Serialize
        + DeserializeOwned
        + Clone
        + Debug,
{
    let desired = stamp(desired);
    if !needs_apply(&desired, live.as_deref()) {
        if let Some(live) = live {
            return Ok(Ensured {
                object: (*live).clone(),
                applied: false,
                created: false,
            });
        }
    }
    let ns = desired.namespace().unwrap_or_default();
    let object = apply(&ctx.api::<K>(&ns), kind, &desired).await?;
    Ok(Ensured {
        object,
        applied: true,
        created: live.is_none(),
    })
}

/// Applies an object of an optional kind (cert-manager `Certificate`, Gateway API
/// `TLSRoute`), which is not cached: only when it differs from what this process last
/// applied, so it is written once per change (and once after a restart).
pub async fn ensure_dynamic(
    ctx: &Context,
    kind: &'static str,
    resource: &ApiResource,
    desired: DynamicObject,
) -> Result<(), Error> {
    let desired = stamp(desired);
    let ns = desired.namespace().unwrap_or_default();
    let name = desired.name_any();
    let key = format!("{kind}/{ns}/{name}");
    let digest = desired
        .annotations()
        .get(DIGEST_ANNOTATION)
        .cloned()
        .unwrap_or_default();
    if !ctx.unapplied(&key, &digest) {
        return Ok(());
    }
    let api: Api<DynamicObject> = Api::namespaced_with(ctx.client.clone(), &ns, resource);
    api.patch(
        &name,
        &PatchParams::apply(MANAGER).force(),
        &Patch::Apply(&desired),
    )
    .await
    .map_err(Error::kube("apply", kind, name))?;
    ctx.remember(key, Some(digest));
    Ok(())
}

/// Deletes an object of an optional kind (404, also for a missing CRD, counts as done).
pub async fn delete_dynamic(
    ctx: &Context,
    kind: &'static str,
    resource: &ApiResource,
    ns: &str,
    name: &str,
) -> Result<(), Error> {
    let api: Api<DynamicObject> = Api::namespaced_with(ctx.client.clone(), ns, resource);
    match api.delete(name, &Default::default()).await {
        Ok(_) => {}
        Err(kube::Error::Api(s)) if s.code == 404 => {}
        Err(e) => return Err(Error::kube("delete", kind, name)(e)),
    }
    ctx.remember(format!("{kind}/{ns}/{name}"), None);
    Ok(())
}

/// DELETE that treats 404 as done.
pub async fn delete_opt<K>(api: &Api<K>, kind: &'static str, name: &str) -> Result<(), Error>
where
    K: Resource + Clone + DeserializeOwned + Debug,
{
    match api.delete(name, &Default::default()).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
        Err(e) => Err(Error::kube("delete", kind, name)(e)),
    }
}
