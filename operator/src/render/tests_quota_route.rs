//! Exact-output tests of the tenant quota, the lifecycle and lock-generation settings, and the
//! Gateway API TLSRoute.

use std::path::Path;

use super::tests::{creds, inputs, s3_store, tenant};
use super::*;
use crate::crd::{LifecycleSpec, QuotaSpec, TlsRouteSpec};

#[test]
fn quota_lifecycle_and_lock_generation_render_and_parse() {
    let mut t = tenant();
    t.spec.quota = Some(QuotaSpec {
        bytes: Some(5_000_000_000),
        warn_percent: Some(80),
    });
    let mut inputs = inputs();
    inputs.datastores[0].spec.lock_generation_days = Some(7);
    inputs.datastores[0].spec.lifecycle = Some(LifecycleSpec {
        expire_noncurrent_after_days: Some(3),
        transition_after_days: Some(30),
        transition_storage_class: Some("STANDARD_IA".into()),
    });
    let bound = bind(&t, &inputs);
    assert!(bound.rejected.is_empty(), "{:?}", bound.rejected);
    let text = render_config(&t, &bound, &inputs, &creds());
    let head = "[[tenant]]\nid = \"acme\"\nquota_bytes = 5000000000\nquota_warn_percent = 80\n\n\
[[datastore]]\nname = \"store1\"\ntenant = \"acme\"\ngc_schedule = \"daily\"\nlock_generation_days = 7\n\
[datastore.s3]\nbucket = \"backups\"\nprefix = \"team-a/acme/store1\"\n\
endpoint = \"http://rgw.storage:7480\"\npath_style = true\naccess_key_id = \"AKIA1\"\n\
secret_access_key_file = \"/etc/pbs-cloud/s3/store1/secret-access-key\"\n\
[datastore.lifecycle]\nexpire_noncurrent_after_days = 3\ntransition_after_days = 30\n\
transition_storage_class = \"STANDARD_IA\"\n\n[[user]]";
    assert!(text.contains(head), "{text}");
    let parsed = pbs_cloud_server::config::Config::parse(Path::new("config.toml"), &text)
        .expect("server accepts the rendered config");
    assert_eq!(parsed.tenants[0].quota_bytes, Some(5_000_000_000));
    assert_eq!(parsed.tenants[0].quota_warn_percent, Some(80));
    let ds = &parsed.datastores[0];
    assert_eq!(ds.lock_generation_days, Some(7));
    let l = ds.lifecycle.as_ref().expect("lifecycle");
    assert_eq!(l.expire_noncurrent_after_days, Some(3));
    assert_eq!(l.transition_after_days, Some(30));
    assert_eq!(
        l.transition_storage_class
            .as_ref()
            .map(|c| c.get_ref().as_str()),
        Some("STANDARD_IA")
    );
}

#[test]
fn lifecycle_on_a_local_datastore_is_rejected() {
    let t = tenant();
    let mut inputs = inputs();
    let mut local = s3_store("local1", false);
    local.spec.s3 = None;
    local.spec.lifecycle = Some(LifecycleSpec {
        expire_noncurrent_after_days: Some(1),
        ..LifecycleSpec::default()
    });
    inputs.datastores.push(local);
    let bound = bind(&t, &inputs);
    assert_eq!(bound.datastores.len(), 1);
    assert_eq!(bound.rejected.len(), 1);
    assert_eq!(bound.rejected[0].reason, "LifecycleNeedsS3");
    assert_eq!(bound.rejected[0].name, "local1");
}

#[test]
fn s3_prefix_defaults_and_overrides() {
    let t = tenant();
    let mut ds = s3_store("store1", false);
    assert_eq!(s3_prefix(&t, &ds).as_deref(), Some("team-a/acme/store1"));
    if let Some(s3) = ds.spec.s3.as_mut() {
        s3.prefix = Some("custom/p".into());
    }
    assert_eq!(s3_prefix(&t, &ds).as_deref(), Some("custom/p"));
    ds.spec.s3 = None;
    assert_eq!(s3_prefix(&t, &ds), None);
}

#[test]
fn tls_route_renders_exactly_and_sets_the_endpoint() {
    let mut t = tenant();
    assert!(tls_route(&t).expect("render").is_none());
    t.spec.tls_route = Some(TlsRouteSpec {
        host: "acme.backup.example.com".into(),
        gateway_name: "edge".into(),
        gateway_namespace: Some("gateways".into()),
        section_name: Some("tls-passthrough".into()),
        port: None,
    });
    let route = tls_route(&t).expect("render").expect("route");
    let v = serde_json::to_value(&route).expect("json");
    assert_eq!(
        v,
        serde_json::json!({
            "apiVersion": "gateway.networking.k8s.io/v1alpha2",
            "kind": "TLSRoute",
            "metadata": {
                "name": "acme-pbs",
                "namespace": "team-a",
                "labels": {
                    "app.kubernetes.io/instance": "acme",
                    "app.kubernetes.io/managed-by": "pbs-cloud-operator",
                    "app.kubernetes.io/name": "pbs-cloud-server",
                    "pbs.cloud/tenant": "acme"
                },
                "ownerReferences": [{
                    "apiVersion": "pbs.cloud/v1alpha1",
                    "kind": "Tenant",
                    "name": "acme",
                    "uid": "uid-acme",
                    "controller": true
                }]
            },
            "spec": {
                "parentRefs": [{
                    "group": "gateway.networking.k8s.io",
                    "kind": "Gateway",
                    "name": "edge",
                    "namespace": "gateways",
                    "sectionName": "tls-passthrough"
                }],
                "hostnames": ["acme.backup.example.com"],
                "rules": [{"backendRefs": [{"name": "acme-pbs", "port": 8007}]}]
            }
        })
    );
    assert_eq!(endpoint(&t), "acme.backup.example.com:443");
    assert_eq!(
        repository(&t, "store1"),
        "admin@pbs@acme.backup.example.com:443:store1"
    );
    assert!(dns_names(&t).contains(&"acme.backup.example.com".to_string()));
    if let Some(r) = t.spec.tls_route.as_mut() {
        r.port = Some(8443);
    }
    assert_eq!(endpoint(&t), "acme.backup.example.com:8443");
}
