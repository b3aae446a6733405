//! Gateway API `TLSRoute` (gateway.networking.k8s.io/v1alpha2) for a per-tenant host name.
//! The Gateway's listener must be in `Passthrough` mode: PBS clients pin the server's own
//! certificate, so TLS ends in the tenant's pod, never at the gateway.

use kube::api::{ApiResource, DynamicObject, GroupVersionKind};

use super::{owned_meta, Names, RenderError, SERVER_PORT};
use crate::crd::Tenant;

/// Group, version and kind of the route.
pub fn tls_route_gvk() -> GroupVersionKind {
    GroupVersionKind::gvk("gateway.networking.k8s.io", "v1alpha2", "TLSRoute")
}

/// The `TLSRoute` named like the workload, or `None` when the Tenant asks for none.
pub fn tls_route(tenant: &Tenant) -> Result<Option<DynamicObject>, RenderError> {
    let Some(spec) = &tenant.spec.tls_route else {
        return Ok(None);
    };
    let names = Names::of(tenant);
    let mut parent = serde_json::json!({
        "group": "gateway.networking.k8s.io",
        "kind": "Gateway",
        "name": spec.gateway_name,
    });
    if let Some(ns) = &spec.gateway_namespace {
        parent["namespace"] = ns.clone().into();
    }
    if let Some(s) = &spec.section_name {
        parent["sectionName"] = s.clone().into();
    }
    let mut obj = DynamicObject::new(&names.workload, &ApiResource::from_gvk(&tls_route_gvk()));
    obj.metadata = owned_meta(tenant, &names.workload)?;
    obj.data = serde_json::json!({
        "spec": {
            "parentRefs": [parent],
            "hostnames": [spec.host],
            "rules": [{
                "backendRefs": [{"name": names.workload, "port": SERVER_PORT}]
            }]
        }
    });
    Ok(Some(obj))
}
