//! Overlapping S3 prefixes against the real kube-apiserver (`e2e/kube/start-kube.sh`) and, for
//! the purge, Ceph RGW (`e2e/s3/start-ceph-rgw.sh`): the API server refuses prefixes that do
//! not compare exactly; the operator refuses a Datastore whose prefix contains or lies inside
//! another's in the same bucket (`Ready=False`, reason `PrefixOverlap`), and a
//! `deletionPolicy: Delete` purge deletes nothing of a misconfigured sibling.

mod common;

use std::time::Duration;

use common::s3::{count, put, s3_client, s3_env};
use common::{apply_json, client, drop_namespace, namespace, wait_for, Operator};
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::api::events::v1::Event;
use kube::api::{DeleteParams, ListParams};
use kube::{Api, Client};
use pbs_cloud_operator::crd::{Condition, Datastore, Tenant};
use pbs_cloud_operator::purge;
use serde_json::json;

const WAIT: Duration = Duration::from_secs(90);

async fn tenant(client: &Client, ns: &str, name: &str, policy: &str) {
    let tenants: Api<Tenant> = Api::namespaced(client.clone(), ns);
    apply_json(
        &tenants,
        json!({"apiVersion": "pbs.cloud/v1alpha1", "kind": "Tenant",
               "metadata": {"name": name, "namespace": ns},
               "spec": {"deletionPolicy": policy}}),
    )
    .await
    .expect("tenant");
}

async fn store(
    client: &Client,
    ns: &str,
    name: &str,
    tenant: &str,
    bucket: &str,
    endpoint: &str,
    prefix: &str,
) -> Result<Datastore, kube::Error> {
    let stores: Api<Datastore> = Api::namespaced(client.clone(), ns);
    apply_json(
        &stores,
        json!({"apiVersion": "pbs.cloud/v1alpha1", "kind": "Datastore",
               "metadata": {"name": name, "namespace": ns},
               "spec": {"tenant": tenant, "name": name, "s3": {
                   "bucket": bucket, "endpoint": endpoint, "pathStyle": true, "prefix": prefix,
                   "credentialsSecret": {"name": "s3-keys"}}}}),
    )
    .await
}

async fn keys(client: &Client, ns: &str, access: &str, secret: &str) {
    let secrets: Api<Secret> = Api::namespaced(client.clone(), ns);
    apply_json(
        &secrets,
        json!({"apiVersion": "v1", "kind": "Secret",
               "metadata": {"name": "s3-keys", "namespace": ns},
               "stringData": {"access-key-id": access, "secret-access-key": secret}}),
    )
    .await
    .expect("s3 secret");
}

/// Waits until Datastore `name` has condition Ready with `reason`.
async fn ready_reason(client: &Client, ns: &str, name: &str, reason: &str) -> Condition {
    let stores: Api<Datastore> = Api::namespaced(client.clone(), ns);
    wait_for(
        &format!("Datastore {name} Ready reason {reason}"),
        WAIT,
        || async {
            stores
                .get(name)
                .await
                .ok()?
                .status?
                .conditions
                .into_iter()
                .find(|c| c.type_ == "Ready" && c.reason == reason)
        },
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overlapping_prefixes_are_refused() {
    let client = client().await;
    let ns = namespace(&client, "op-overlap").await;
    // The API server checks the form of a prefix (it must compare exactly).
    for bad in ["a//b", "/a", "a/", "a b"] {
        match store(&client, &ns, "bad", "x", "bkt-one", "http://s3:1", bad).await {
            Err(kube::Error::Api(s)) => {
                assert_eq!(s.code, 422, "{bad}: {s:?}");
                assert!(s.message.contains("spec.s3.prefix"), "{bad}: {}", s.message);
            }
            other => panic!("prefix {bad:?} accepted: {other:?}"),
        }
    }
    keys(&client, &ns, "AKIA", "s").await;
    let op = Operator::start(&client, &ns).await;
    let p = format!("ovl/{ns}");
    tenant(&client, &ns, "first", "Retain").await;
    tenant(&client, &ns, "second", "Retain").await;
    store(
        &client,
        &ns,
        "first-store",
        "first",
        "bkt-one",
        "http://s3:1",
        &format!("{p}/a"),
    )
    .await
    .expect("first");
    ready_reason(&client, &ns, "first-store", "Bound").await;
    store(
        &client,
        &ns,
        "inner-store",
        "second",
        "bkt-one",
        "http://s3:1/",
        &format!("{p}/a/b"),
    )
    .await
    .expect("inner");
    store(
        &client,
        &ns,
        "apart-store",
        "second",
        "bkt-one",
        "http://s3:1",
        &format!("{p}/ab"),
    )
    .await
    .expect("apart");
    store(
        &client,
        &ns,
        "elsewhere",
        "second",
        "bkt-two",
        "http://s3:1",
        &format!("{p}/a"),
    )
    .await
    .expect("other bucket");
    let c = ready_reason(&client, &ns, "inner-store", "PrefixOverlap").await;
    assert_eq!(c.status, "False");
    assert!(
        c.message.contains(&format!(
            "s3://bkt-one/{p}/a/b/ lies inside s3://bkt-one/{p}/a/ of Datastore {ns}/first-store"
        )),
        "{}",
        c.message
    );
    ready_reason(&client, &ns, "apart-store", "Bound").await;
    ready_reason(&client, &ns, "elsewhere", "Bound").await;
    let tenants: Api<Tenant> = Api::namespaced(client.clone(), &ns);
    let t = wait_for("second's status", WAIT, || async {
        let t = tenants.get("second").await.ok()?;
        (t.status.as_ref()?.datastores.len() == 2).then_some(t)
    })
    .await;
    let status = t.status.expect("status");
    assert!(!status.datastores.contains(&"inner-store".to_string()));
    assert!(
        status.conditions.iter().any(|c| c.type_ == "Degraded"
            && c.status == "True"
            && c.message.contains("Datastore inner-store: S3 prefix")),
        "{:?}",
        status.conditions
    );
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &ns);
    let cfg = secrets.get("second-pbs-config").await.expect("config");
    let text = String::from_utf8(cfg.data.expect("data")["config.toml"].0.clone()).expect("utf8");
    assert!(
        !text.contains(&format!("{p}/a/b")),
        "refused prefix rendered:\n{text}"
    );

    // Once the holder is gone, the refused datastore binds.
    let stores: Api<Datastore> = Api::namespaced(client.clone(), &ns);
    stores
        .delete("first-store", &DeleteParams::default())
        .await
        .expect("delete holder");
    ready_reason(&client, &ns, "inner-store", "Bound").await;
    op.stop().await;
    drop_namespace(&client, &ns).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_purge_next_to_misconfigured_siblings_deletes_nothing_of_theirs() {
    let e = s3_env();
    let client = client().await;
    let ns = namespace(&client, "op-sibling").await;
    let s3 = s3_client(&e);
    keys(&client, &ns, &e.access, &e.secret).await;
    let p = format!("{ns}/sib");
    let objects = [
        (format!("{p}/w/.chunks/0000/aa"), "wipe's own"),
        (format!("{p}/w/host/x/index.json.blob"), "wipe's own"),
        (
            format!("{p}/w/nested/.chunks/0000/bb"),
            "inside wipe, claimed by nested-store",
        ),
        (
            format!("{p}/w/nested/vm/1/index.json.blob"),
            "inside wipe, claimed by nested-store",
        ),
        (
            format!("{p}/wx/.chunks/0000/cc"),
            "next to wipe (tenants/a vs tenants/ab)",
        ),
        (
            format!("{p}/o/inner/.chunks/0000/dd"),
            "outer's, enclosed by wipe's refused datastore",
        ),
        (format!("{p}/o/stray"), "under wipe's refused datastore"),
    ];
    for (k, _) in &objects {
        put(&s3, &e.bucket, k).await;
    }
    let op = Operator::start(&client, &ns).await;
    tenant(&client, &ns, "wipe", "Delete").await;
    tenant(&client, &ns, "sib", "Retain").await;
    let ep = e.endpoint.clone();
    store(
        &client,
        &ns,
        "wipe-store",
        "wipe",
        &e.bucket,
        &ep,
        &format!("{p}/w"),
    )
    .await
    .expect("wipe-store");
    store(
        &client,
        &ns,
        "outer-store",
        "sib",
        &e.bucket,
        &ep,
        &format!("{p}/o/inner"),
    )
    .await
    .expect("outer-store");
    store(
        &client,
        &ns,
        "wx-store",
        "sib",
        &e.bucket,
        &ep,
        &format!("{p}/wx"),
    )
    .await
    .expect("wx-store");
    for s in ["wipe-store", "outer-store", "wx-store"] {
        ready_reason(&client, &ns, s, "Bound").await;
    }
    // Two misconfigured datastores, each refused: one inside wipe's prefix (another tenant's),
    // one of wipe's own around outer's prefix.
    store(
        &client,
        &ns,
        "nested-store",
        "sib",
        &e.bucket,
        &ep,
        &format!("{p}/w/nested"),
    )
    .await
    .expect("nested-store");
    store(
        &client,
        &ns,
        "wide-store",
        "wipe",
        &e.bucket,
        &ep,
        &format!("{p}/o"),
    )
    .await
    .expect("wide-store");
    ready_reason(&client, &ns, "nested-store", "PrefixOverlap").await;
    ready_reason(&client, &ns, "wide-store", "PrefixOverlap").await;

    let tenants: Api<Tenant> = Api::namespaced(client.clone(), &ns);
    wait_for("wipe's finalizer", WAIT, || async {
        let t = tenants.get("wipe").await.ok()?;
        (!t.metadata.finalizers.clone()?.is_empty()).then_some(())
    })
    .await;
    tenants
        .delete("wipe", &DeleteParams::default())
        .await
        .expect("delete wipe");
    wait_for("Tenant wipe gone", WAIT, || async {
        tenants.get_opt("wipe").await.ok()?.is_none().then_some(())
    })
    .await;

    let n = |k: String| {
        let e = &e;
        async move { count(e, &e.bucket, &k).await }
    };
    assert_eq!(
        n(format!("{p}/w/nested")).await,
        2,
        "the nested sibling's keys stay"
    );
    assert_eq!(
        n(format!("{p}/w")).await,
        2,
        "only the nested sibling's keys are left of {p}/w/"
    );
    assert_eq!(n(format!("{p}/wx")).await, 1, "{p}/wx/ is not under {p}/w/");
    assert_eq!(
        n(format!("{p}/o")).await,
        2,
        "the refused wide-store deleted nothing"
    );
    let events: Api<Event> = Api::namespaced(client.clone(), &ns);
    let deleted = wait_for("DataDeleted event", WAIT, || async {
        events
            .list(&ListParams::default())
            .await
            .ok()?
            .items
            .into_iter()
            .find(|ev| ev.reason.as_deref() == Some("DataDeleted"))
    })
    .await;
    let note = deleted.note.unwrap_or_default();
    assert!(note.contains("2 object version(s) deleted"), "{note}");
    assert!(
        note.contains("left alone") && note.contains("nested-store"),
        "{note}"
    );
    assert!(
        note.contains("nothing deleted under") && note.contains("outer-store"),
        "{note}"
    );
    op.stop().await;
    for prefix in [format!("{p}/w"), format!("{p}/wx"), format!("{p}/o")] {
        purge::purge(&common::s3::target(&e, &e.bucket, &prefix))
            .await
            .expect("test cleanup");
    }
    drop_namespace(&client, &ns).await;
}
