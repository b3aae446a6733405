//! Against the real kube-apiserver (`e2e/kube/start-kube.sh`) and Ceph RGW
//! (`e2e/s3/start-ceph-rgw.sh`): `deletionPolicy: Delete` removes every object version under
//! the tenant's S3 prefixes while `Retain` keeps them; versions under Object Lock keep the
//! Tenant (condition `DataDeletion=False`, reason `ObjectLocked`) until the abandon annotation
//! gives up; and a TLSRoute is applied (and removed) when the Tenant asks for one.

mod common;

use std::time::Duration;

use aws_sdk_s3::primitives::{ByteStream, DateTime};
use aws_sdk_s3::types::{ChecksumAlgorithm, ObjectLockMode};
use common::s3::{count, put, s3_client, s3_env, target, S3Env};
use common::{apply_json, client, drop_namespace, namespace, wait_for, Operator};
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{ApiResource, DeleteParams, DynamicObject, Patch, PatchParams};
use kube::{Api, Client};
use pbs_cloud_operator::controller::ABANDON_ANNOTATION;
use pbs_cloud_operator::crd::{Datastore, Tenant};
use pbs_cloud_operator::purge;
use pbs_cloud_operator::render;
use serde_json::json;

const WAIT: Duration = Duration::from_secs(90);

async fn s3_tenant(client: &Client, ns: &str, name: &str, policy: &str, bucket: &str, e: &S3Env) {
    let secrets: Api<Secret> = Api::namespaced(client.clone(), ns);
    apply_json(
        &secrets,
        json!({
            "apiVersion": "v1", "kind": "Secret",
            "metadata": {"name": "s3-keys", "namespace": ns},
            "stringData": {"access-key-id": e.access, "secret-access-key": e.secret}
        }),
    )
    .await
    .expect("s3 secret");
    let tenants: Api<Tenant> = Api::namespaced(client.clone(), ns);
    apply_json(
        &tenants,
        json!({
            "apiVersion": "pbs.cloud/v1alpha1", "kind": "Tenant",
            "metadata": {"name": name, "namespace": ns},
            "spec": {"deletionPolicy": policy}
        }),
    )
    .await
    .expect("tenant");
    let stores: Api<Datastore> = Api::namespaced(client.clone(), ns);
    apply_json(
        &stores,
        json!({
            "apiVersion": "pbs.cloud/v1alpha1", "kind": "Datastore",
            "metadata": {"name": format!("{name}-store"), "namespace": ns},
            "spec": {"tenant": name, "name": "store1", "s3": {
                "bucket": bucket, "endpoint": e.endpoint, "pathStyle": true,
                "objectLock": bucket == e.lock_bucket,
                "credentialsSecret": {"name": "s3-keys"}}}
        }),
    )
    .await
    .expect("datastore");
}

async fn wait_bound(tenants: &Api<Tenant>, name: &str) {
    wait_for(&format!("Tenant {name} reconciled"), WAIT, || async {
        let t = tenants.get(name).await.ok()?;
        let s = t.status.as_ref()?;
        (!s.datastores.is_empty() && !t.metadata.finalizers.clone()?.is_empty()).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_policy_purges_the_s3_prefix_and_retain_keeps_it() {
    let e = s3_env();
    let client = client().await;
    let ns = namespace(&client, "op-purge").await;
    let s3 = s3_client(&e);
    for (name, policy) in [("keep", "Retain"), ("wipe", "Delete")] {
        s3_tenant(&client, &ns, name, policy, &e.bucket, &e).await;
    }
    // The default prefix is <namespace>/<tenant id>/<store>.
    let (keep, wipe) = (format!("{ns}/keep/store1"), format!("{ns}/wipe/store1"));
    let sibling = format!("{ns}/wipe/store10/not-mine");
    put(&s3, &e.bucket, &format!("{keep}/.chunks/0000/aa")).await;
    for k in [
        ".chunks/0000/aa",
        ".chunks/0001/bb",
        "host/x/2026/index.json.blob",
    ] {
        put(&s3, &e.bucket, &format!("{wipe}/{k}")).await;
    }
    put(&s3, &e.bucket, &sibling).await;
    assert_eq!(count(&e, &e.bucket, &wipe).await, 3);

    let op = Operator::start(&client, &ns).await;
    let tenants: Api<Tenant> = Api::namespaced(client.clone(), &ns);
    for name in ["keep", "wipe"] {
        wait_bound(&tenants, name).await;
        tenants
            .delete(name, &DeleteParams::default())
            .await
            .expect("delete tenant");
    }
    for name in ["keep", "wipe"] {
        wait_for(&format!("Tenant {name} gone"), WAIT, || async {
            tenants.get_opt(name).await.ok()?.is_none().then_some(())
        })
        .await;
    }
    assert_eq!(
        count(&e, &e.bucket, &wipe).await,
        0,
        "Delete removes everything under {wipe}/"
    );
    assert_eq!(count(&e, &e.bucket, &keep).await, 1, "Retain keeps {keep}/");
    assert_eq!(
        count(&e, &e.bucket, &format!("{ns}/wipe/store10")).await,
        1,
        "a sibling prefix is not touched"
    );
    op.stop().await;
    for p in [keep, format!("{ns}/wipe/store10")] {
        purge::purge(&target(&e, &e.bucket, &p))
            .await
            .expect("test cleanup");
    }
    drop_namespace(&client, &ns).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn locked_versions_keep_the_tenant_until_the_abandon_annotation() {
    let e = s3_env();
    let client = client().await;
    let ns = namespace(&client, "op-locked").await;
    let s3 = s3_client(&e);
    s3_tenant(&client, &ns, "worm", "Delete", &e.lock_bucket, &e).await;
    let prefix = format!("{ns}/worm/store1");
    // Two versions of an unlocked object, and one object under a governance lock.
    put(&s3, &e.lock_bucket, &format!("{prefix}/free")).await;
    put(&s3, &e.lock_bucket, &format!("{prefix}/free")).await;
    let until = DateTime::from_secs(chrono::Utc::now().timestamp() + 86_400);
    s3.put_object()
        .bucket(&e.lock_bucket)
        .key(format!("{prefix}/locked"))
        .body(ByteStream::from_static(b"worm"))
        .checksum_algorithm(ChecksumAlgorithm::Sha256)
        .object_lock_mode(ObjectLockMode::Governance)
        .object_lock_retain_until_date(until)
        .send()
        .await
        .unwrap_or_else(|err| {
            panic!(
                "PUT locked object: {}",
                aws_sdk_s3::error::DisplayErrorContext(&err)
            )
        });
    assert_eq!(count(&e, &e.lock_bucket, &prefix).await, 3);

    let op = Operator::start(&client, &ns).await;
    let tenants: Api<Tenant> = Api::namespaced(client.clone(), &ns);
    wait_bound(&tenants, "worm").await;
    tenants
        .delete("worm", &DeleteParams::default())
        .await
        .expect("delete tenant");
    let cond = wait_for("DataDeletion=False ObjectLocked", WAIT, || async {
        let t = tenants.get("worm").await.ok()?;
        t.status?
            .conditions
            .into_iter()
            .find(|c| c.type_ == "DataDeletion" && c.reason == "ObjectLocked")
    })
    .await;
    assert_eq!(cond.status, "False");
    assert!(
        cond.message
            .starts_with("1 object version(s) are under S3 Object Lock"),
        "{}",
        cond.message
    );
    assert!(
        cond.message.contains(ABANDON_ANNOTATION),
        "{}",
        cond.message
    );
    assert_eq!(
        count(&e, &e.lock_bucket, &prefix).await,
        1,
        "every unlocked version is gone, the locked one stays"
    );
    assert!(
        tenants.get_opt("worm").await.expect("get").is_some(),
        "the Tenant stays while data is locked"
    );

    tenants
        .patch(
            "worm",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"annotations": {ABANDON_ANNOTATION: "true"}}})),
        )
        .await
        .expect("annotate");
    wait_for("Tenant worm gone after abandon", WAIT, || async {
        tenants.get_opt("worm").await.ok()?.is_none().then_some(())
    })
    .await;
    assert_eq!(count(&e, &e.lock_bucket, &prefix).await, 1);
    op.stop().await;

    // Test cleanup: a governance lock can be bypassed deliberately.
    let versions = s3
        .list_object_versions()
        .bucket(&e.lock_bucket)
        .prefix(format!("{prefix}/"))
        .send()
        .await
        .expect("list versions");
    for v in versions.versions() {
        let _ = s3
            .delete_object()
            .bucket(&e.lock_bucket)
            .key(v.key().unwrap_or_default())
            .set_version_id(v.version_id().map(str::to_string))
            .bypass_governance_retention(true)
            .send()
            .await;
    }
    drop_namespace(&client, &ns).await;
}

/// Many versions over several listing pages (2 entries a page) are all deleted, in the
/// versioned bucket and in the plain one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn purge_walks_every_listing_page() {
    let e = s3_env();
    let s3 = s3_client(&e);
    let run = format!("op-pages-{}", std::process::id());
    for bucket in [e.lock_bucket.clone(), e.bucket.clone()] {
        let prefix = format!("{run}/store");
        for i in 0..4 {
            put(&s3, &bucket, &format!("{prefix}/k{i}")).await;
            put(&s3, &bucket, &format!("{prefix}/k{i}")).await;
        }
        s3.delete_object()
            .bucket(&bucket)
            .key(format!("{prefix}/k0"))
            .send()
            .await
            .expect("delete marker");
        let total = count(&e, &bucket, &prefix).await;
        let expected = if bucket == e.lock_bucket { 9 } else { 3 };
        assert_eq!(total, expected, "{bucket}: versions + delete marker");
        let mut t = target(&e, &bucket, &prefix);
        t.page_size = Some(2);
        let out = purge::purge(&t).await.unwrap_or_else(|err| panic!("{err}"));
        assert_eq!(out.deleted, expected as u64, "{bucket}");
        assert_eq!(out.locked, 0);
        assert_eq!(count(&e, &bucket, &prefix).await, 0, "{bucket}");
    }
}

/// A minimal TLSRoute CRD (no schema checks), as Gateway API installs would provide.
async fn install_tlsroute_crd(client: &Client) {
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    let crd: CustomResourceDefinition = serde_json::from_value(json!({
        "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
        "metadata": {"name": "tlsroutes.gateway.networking.k8s.io",
            "annotations": {"api-approved.kubernetes.io": "https://github.com/kubernetes-sigs/gateway-api/pull/1923"}},
        "spec": {
            "group": "gateway.networking.k8s.io", "scope": "Namespaced",
            "names": {"plural": "tlsroutes", "singular": "tlsroute", "kind": "TLSRoute",
                      "listKind": "TLSRouteList"},
            "versions": [{"name": "v1alpha2", "served": true, "storage": true,
                "schema": {"openAPIV3Schema": {"type": "object",
                    "x-kubernetes-preserve-unknown-fields": true}}}]
        }
    }))
    .expect("crd json");
    crds.patch(
        "tlsroutes.gateway.networking.k8s.io",
        &PatchParams::apply("pbs-cloud-tests").force(),
        &Patch::Apply(&crd),
    )
    .await
    .expect("apply TLSRoute CRD");
    wait_for("TLSRoute CRD Established", WAIT, || async {
        let c = crds.get("tlsroutes.gateway.networking.k8s.io").await.ok()?;
        c.status?
            .conditions?
            .iter()
            .any(|c| c.type_ == "Established" && c.status == "True")
            .then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_route_is_applied_and_removed() {
    let client = client().await;
    install_tlsroute_crd(&client).await;
    let ns = namespace(&client, "op-route").await;
    let tenants: Api<Tenant> = Api::namespaced(client.clone(), &ns);
    apply_json(
        &tenants,
        json!({
            "apiVersion": "pbs.cloud/v1alpha1", "kind": "Tenant",
            "metadata": {"name": "acme", "namespace": ns},
            "spec": {"tlsRoute": {"host": "acme.backup.example.com", "gatewayName": "edge",
                                  "sectionName": "tls"}}
        }),
    )
    .await
    .expect("tenant");
    let op = Operator::start(&client, &ns).await;
    let routes: Api<DynamicObject> = Api::namespaced_with(
        client.clone(),
        &ns,
        &ApiResource::from_gvk(&render::tls_route_gvk()),
    );
    let route = wait_for("TLSRoute acme-pbs", WAIT, || async {
        routes.get("acme-pbs").await.ok()
    })
    .await;
    assert_eq!(
        route.data["spec"]["hostnames"],
        json!(["acme.backup.example.com"])
    );
    assert_eq!(
        route.data["spec"]["rules"][0]["backendRefs"][0],
        json!({"name": "acme-pbs", "port": 8007})
    );
    assert_eq!(route.data["spec"]["parentRefs"][0]["sectionName"], "tls");
    let owners = route.metadata.owner_references.clone().unwrap_or_default();
    assert_eq!(owners.len(), 1);
    assert_eq!(owners[0].kind, "Tenant");
    wait_for("endpoint is the route host", WAIT, || async {
        let t = tenants.get("acme").await.ok()?;
        (t.status?.endpoint.as_deref() == Some("acme.backup.example.com:443")).then_some(())
    })
    .await;

    tenants
        .patch(
            "acme",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"tlsRoute": null}})),
        )
        .await
        .expect("drop tlsRoute");
    wait_for("TLSRoute removed", WAIT, || async {
        routes
            .get_opt("acme-pbs")
            .await
            .ok()?
            .is_none()
            .then_some(())
    })
    .await;
    op.stop().await;
    drop_namespace(&client, &ns).await;
}
