//! Applying (or removing) the tenant's Gateway API `TLSRoute`.

use kube::api::ApiResource;
use kube::ResourceExt;

use super::apply::{delete_dynamic, ensure_dynamic};
use super::{Context, Error};
use crate::crd::Tenant;
use crate::render::{self, Names};

/// Applies the route the Tenant asks for (when it changed); when it asks for none but its
/// previous endpoint was a route's host, deletes the old route.
pub(super) async fn reconcile_route(ctx: &Context, tenant: &Tenant) -> Result<(), Error> {
    let ns = tenant.namespace().unwrap_or_default();
    let name = Names::of(tenant).workload;
    let resource = ApiResource::from_gvk(&render::tls_route_gvk());
    match render::tls_route(tenant)? {
        Some(route) => ensure_dynamic(ctx, "TLSRoute", &resource, route).await,
        None => {
            let old = tenant.status.as_ref().and_then(|s| s.endpoint.clone());
            let was_route = old.is_some_and(|e| {
                e != render::endpoint(tenant)
                    && !e.contains(".svc:")
                    && tenant.spec.ingress.is_none()
            });
            if was_route {
                delete_dynamic(ctx, "TLSRoute", &resource, &ns, &name).await?;
            }
            Ok(())
        }
    }
}
