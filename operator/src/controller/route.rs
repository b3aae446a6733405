//! Applying (or removing) the tenant's Gateway API `TLSRoute`.

use kube::api::{ApiResource, DynamicObject, Patch, PatchParams};
use kube::{Api, ResourceExt};

use super::{Context, Error};
use crate::crd::Tenant;
use crate::render::{self, Names};

/// Applies the route the Tenant asks for; when it asks for none but its previous endpoint was
/// a route's host, deletes the old route (404, also for a missing CRD, counts as done).
pub(super) async fn reconcile_route(ctx: &Context, tenant: &Tenant) -> Result<(), Error> {
    let ns = tenant.namespace().unwrap_or_default();
    let name = Names::of(tenant).workload;
    let api: Api<DynamicObject> = Api::namespaced_with(
        ctx.client.clone(),
        &ns,
        &ApiResource::from_gvk(&render::tls_route_gvk()),
    );
    match render::tls_route(tenant)? {
        Some(route) => {
            api.patch(
                &name,
                &PatchParams::apply(render::MANAGER).force(),
                &Patch::Apply(&route),
            )
            .await
            .map_err(Error::kube("apply", "TLSRoute", name.clone()))?;
        }
        None => {
            let old = tenant.status.as_ref().and_then(|s| s.endpoint.clone());
            let was_route = old.is_some_and(|e| {
                e != render::endpoint(tenant)
                    && !e.contains(".svc:")
                    && tenant.spec.ingress.is_none()
            });
            if was_route {
                match api.delete(&name, &Default::default()).await {
                    Ok(_) => {}
                    Err(kube::Error::Api(s)) if s.code == 404 => {}
                    Err(e) => return Err(Error::kube("delete", "TLSRoute", name)(e)),
                }
            }
        }
    }
    Ok(())
}
