//! The operator against a real kube-apiserver (v1.20 built from Debian's source package; see
//! `e2e/kube/start-kube.sh`): CRDs apply, a Tenant with a Datastore yields its owned objects and
//! status, editing a PrunePolicy changes the config, deletion honours `deletionPolicy`, invalid
//! resources are refused with the validation message.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::{apply_json, client, drop_namespace, namespace, wait_for, Operator};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Pod, Secret, Service};
use kube::api::{DeleteParams, ListParams, Patch, PatchParams};
use kube::{Api, Client, ResourceExt};
use pbs_cloud_operator::crd::{Datastore, PrunePolicy, RetentionLock, Tenant};
use serde_json::json;

const WAIT: Duration = Duration::from_secs(60);

fn config_text(secret: &Secret) -> Option<String> {
    let v = secret.data.as_ref()?.get("config.toml")?;
    String::from_utf8(v.0.clone()).ok()
}

async fn create_example(client: &Client, ns: &str) {
    let secrets: Api<Secret> = Api::namespaced(client.clone(), ns);
    apply_json(
        &secrets,
        json!({
            "apiVersion": "v1", "kind": "Secret",
            "metadata": {"name": "acme-s3", "namespace": ns},
            "stringData": {"access-key-id": "AKIATEST", "secret-access-key": "s3cr3t"}
        }),
    )
    .await
    .expect("s3 secret");
    let tenants: Api<Tenant> = Api::namespaced(client.clone(), ns);
    apply_json(
        &tenants,
        json!({
            "apiVersion": "pbs.cloud/v1alpha1", "kind": "Tenant",
            "metadata": {"name": "acme", "namespace": ns},
            "spec": {"storage": {"size": "1Gi"}}
        }),
    )
    .await
    .expect("tenant");
    let stores: Api<Datastore> = Api::namespaced(client.clone(), ns);
    apply_json(
        &stores,
        json!({
            "apiVersion": "pbs.cloud/v1alpha1", "kind": "Datastore",
            "metadata": {"name": "acme-store1", "namespace": ns},
            "spec": {"tenant": "acme", "name": "store1", "s3": {
                "bucket": "pbs-backups", "endpoint": "http://127.0.0.1:7480", "pathStyle": true,
                "objectLock": true, "credentialsSecret": {"name": "acme-s3"}}}
        }),
    )
    .await
    .expect("datastore");
    let prune: Api<PrunePolicy> = Api::namespaced(client.clone(), ns);
    apply_json(
        &prune,
        json!({
            "apiVersion": "pbs.cloud/v1alpha1", "kind": "PrunePolicy",
            "metadata": {"name": "nightly", "namespace": ns},
            "spec": {"datastore": "acme-store1", "keep": {"daily": 7}}
        }),
    )
    .await
    .expect("prune policy");
    let locks: Api<RetentionLock> = Api::namespaced(client.clone(), ns);
    apply_json(
        &locks,
        json!({
            "apiVersion": "pbs.cloud/v1alpha1", "kind": "RetentionLock",
            "metadata": {"name": "worm", "namespace": ns},
            "spec": {"datastore": "acme-store1", "mode": "Compliance", "days": 30}
        }),
    )
    .await
    .expect("retention lock");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tenant_with_datastore_yields_owned_objects_status_and_config_updates() {
    let client = client().await;
    let ns = namespace(&client, "op-tenant").await;
    create_example(&client, &ns).await;
    let op = Operator::start(&client, &ns).await;

    let tenants: Api<Tenant> = Api::namespaced(client.clone(), &ns);
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &ns);
    let deploys: Api<Deployment> = Api::namespaced(client.clone(), &ns);
    let services: Api<Service> = Api::namespaced(client.clone(), &ns);

    // Status filled: observedGeneration, endpoint, fingerprint, conditions, repository.
    let tenant = wait_for("Tenant status", WAIT, || async {
        let t = tenants.get("acme").await.ok()?;
        let s = t.status.as_ref()?;
        (s.observed_generation == t.metadata.generation
            && s.certificate_fingerprint.is_some()
            && !s.datastores.is_empty())
        .then_some(t)
    })
    .await;
    let status = tenant.status.clone().expect("status");
    let uid = tenant.uid().expect("uid");
    assert_eq!(
        status.endpoint.as_deref(),
        Some(format!("acme-pbs.{ns}.svc:8007").as_str())
    );
    assert_eq!(
        status.repository.as_deref(),
        Some(format!("admin@pbs@acme-pbs.{ns}.svc:8007:store1").as_str())
    );
    assert_eq!(status.datastores, vec!["store1"]);
    let cond = |t: &str| {
        status
            .conditions
            .iter()
            .find(|c| c.type_ == t)
            .map(|c| c.status.clone())
    };
    assert_eq!(
        cond("Ready").as_deref(),
        Some("False"),
        "no kubelet yet: not ready"
    );
    assert_eq!(cond("Progressing").as_deref(), Some("True"));
    assert_eq!(cond("Degraded").as_deref(), Some("False"));
    assert!(tenant.finalizers().iter().any(|f| f == "pbs.cloud/cleanup"));

    // Owned objects, with a controller owner reference to the Tenant.
    let owned_by_tenant =
        |refs: Option<Vec<k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference>>| {
            refs.unwrap_or_default()
                .iter()
                .any(|r| r.uid == uid && r.controller == Some(true))
        };
    let deploy = deploys.get("acme-pbs").await.expect("deployment");
    assert!(owned_by_tenant(deploy.metadata.owner_references.clone()));
    let spec = deploy.spec.clone().expect("spec");
    assert_eq!(spec.replicas, Some(1));
    assert_eq!(
        spec.strategy.and_then(|s| s.type_).as_deref(),
        Some("Recreate")
    );
    let svc = services.get("acme-pbs").await.expect("service");
    assert!(owned_by_tenant(svc.metadata.owner_references.clone()));
    for name in ["acme-pbs-credentials", "acme-pbs-tls", "acme-pbs-config"] {
        let s = secrets
            .get(name)
            .await
            .unwrap_or_else(|e| panic!("secret {name}: {e}"));
        assert!(
            owned_by_tenant(s.metadata.owner_references.clone()),
            "{name} owned"
        );
    }
    let pvcs: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), &ns);
    let pvc = pvcs.get("acme-pbs-data").await.expect("pvc");
    assert!(
        pvc.metadata.owner_references.is_none(),
        "Retain: PVC not owned"
    );

    // The rendered config is what the server accepts.
    let cfg = config_text(&secrets.get("acme-pbs-config").await.expect("config")).expect("text");
    let parsed = pbs_cloud_server::config::Config::parse(Path::new("config.toml"), &cfg)
        .expect("server accepts config");
    assert_eq!(parsed.prune_jobs[0].keep_daily, Some(7));
    assert_eq!(*parsed.retention_locks[0].days.get_ref(), 30);
    assert!(cfg.contains("access_key_id = \"AKIATEST\""));

    // Children report Ready.
    let stores: Api<Datastore> = Api::namespaced(client.clone(), &ns);
    wait_for("Datastore Ready", WAIT, || async {
        let d = stores.get("acme-store1").await.ok()?;
        d.status?
            .conditions
            .iter()
            .any(|c| c.type_ == "Ready" && c.status == "True")
            .then_some(())
    })
    .await;

    // Editing a PrunePolicy changes the rendered config.
    let prune: Api<PrunePolicy> = Api::namespaced(client.clone(), &ns);
    prune
        .patch(
            "nightly",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"keep": {"daily": 14}}})),
        )
        .await
        .expect("edit prune policy");
    wait_for("config with keep_daily = 14", WAIT, || async {
        let s = secrets.get("acme-pbs-config").await.ok()?;
        config_text(&s)?.contains("keep_daily = 14\n").then_some(())
    })
    .await;

    // Shortening the lock: a 1.20 server has no CEL, so the operator refuses it itself and
    // keeps rendering the accepted 30 days.
    let locks: Api<RetentionLock> = Api::namespaced(client.clone(), &ns);
    wait_for("accepted-spec annotation", WAIT, || async {
        let l = locks.get("worm").await.ok()?;
        l.annotations()
            .contains_key("pbs.cloud/accepted-spec")
            .then_some(())
    })
    .await;
    locks
        .patch(
            "worm",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"days": 5}})),
        )
        .await
        .expect("patch lock");
    wait_for("RetentionLock WeakeningRefused", WAIT, || async {
        let l = locks.get("worm").await.ok()?;
        l.status?
            .conditions
            .iter()
            .any(|c| c.reason == "WeakeningRefused")
            .then_some(())
    })
    .await;
    let cfg = config_text(&secrets.get("acme-pbs-config").await.expect("config")).expect("text");
    assert!(cfg.contains("days = 30\n"), "{cfg}");

    // Acting as the kubelet: mark the server pod Ready; the Tenant turns Ready.
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
    let pod = wait_for("server pod", WAIT, || async {
        pods.list(&ListParams::default().labels("pbs.cloud/tenant=acme"))
            .await
            .ok()?
            .items
            .into_iter()
            .next()
    })
    .await;
    let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    pods.patch_status(
        &pod.name_any(),
        &PatchParams::default(),
        &Patch::Merge(json!({"status": {
            "phase": "Running",
            "conditions": [{"type": "Ready", "status": "True", "lastTransitionTime": now},
                           {"type": "ContainersReady", "status": "True", "lastTransitionTime": now}]
        }})),
    )
    .await
    .expect("mark pod ready");
    wait_for("Tenant Ready=True", WAIT, || async {
        let t = tenants.get("acme").await.ok()?;
        t.status?
            .conditions
            .iter()
            .any(|c| c.type_ == "Ready" && c.status == "True")
            .then_some(())
    })
    .await;

    op.stop().await;
    drop_namespace(&client, &ns).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deletion_honours_deletion_policy() {
    let client = client().await;
    let ns = namespace(&client, "op-delete").await;
    let op = Operator::start(&client, &ns).await;
    let tenants: Api<Tenant> = Api::namespaced(client.clone(), &ns);
    let pvcs: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), &ns);
    for (name, policy) in [("keep", "Retain"), ("wipe", "Delete")] {
        apply_json(
            &tenants,
            json!({
                "apiVersion": "pbs.cloud/v1alpha1", "kind": "Tenant",
                "metadata": {"name": name, "namespace": ns},
                "spec": {"deletionPolicy": policy, "storage": {"size": "1Gi"}}
            }),
        )
        .await
        .expect("tenant");
    }
    for name in ["keep", "wipe"] {
        let pvc = format!("{name}-pbs-data");
        wait_for(&pvc, WAIT, || async { pvcs.get(&pvc).await.ok() }).await;
        tenants
            .delete(name, &DeleteParams::default())
            .await
            .expect("delete tenant");
        wait_for(&format!("Tenant {name} gone"), WAIT, || async {
            tenants.get_opt(name).await.ok()?.is_none().then_some(())
        })
        .await;
    }
    let kept = pvcs
        .get("keep-pbs-data")
        .await
        .expect("Retain keeps the data PVC");
    assert!(kept.metadata.deletion_timestamp.is_none());
    wait_for("wipe PVC deleted", WAIT, || async {
        match pvcs.get_opt("wipe-pbs-data").await.ok()? {
            None => Some(()),
            Some(p) => p.metadata.deletion_timestamp.map(|_| ()),
        }
    })
    .await;
    op.stop().await;
    drop_namespace(&client, &ns).await;
}

fn api_error(res: Result<impl std::fmt::Debug, kube::Error>) -> String {
    match res {
        Err(kube::Error::Api(s)) => {
            assert_eq!(s.code, 422, "expected 422 Invalid, got {s:?}");
            s.message.clone()
        }
        other => panic!("expected the API server to refuse, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_resources_are_rejected_with_the_validation_message() {
    let client = client().await;
    let ns = namespace(&client, "op-invalid").await;
    let locks: Api<RetentionLock> = Api::namespaced(client.clone(), &ns);
    let lock = |spec: serde_json::Value| {
        json!({
            "apiVersion": "pbs.cloud/v1alpha1", "kind": "RetentionLock",
            "metadata": {"name": "bad", "namespace": ns}, "spec": spec
        })
    };
    let msg = api_error(
        apply_json(
            &locks,
            lock(json!({"datastore": "x", "mode": "Compliance", "days": 0})),
        )
        .await,
    );
    assert!(
        msg.contains("spec.days") && msg.contains("greater than or equal to 1"),
        "{msg}"
    );
    let msg = api_error(
        apply_json(
            &locks,
            lock(json!({"datastore": "x", "mode": "Weak", "days": 3})),
        )
        .await,
    );
    assert!(
        msg.contains("spec.mode") && msg.contains("Compliance"),
        "{msg}"
    );
    let msg = api_error(apply_json(&locks, lock(json!({"datastore": "x", "days": 3}))).await);
    assert!(
        msg.contains("spec.mode") && msg.contains("Required"),
        "{msg}"
    );

    let stores: Api<Datastore> = Api::namespaced(client.clone(), &ns);
    let msg = api_error(
        apply_json(
            &stores,
            json!({
                "apiVersion": "pbs.cloud/v1alpha1", "kind": "Datastore",
                "metadata": {"name": "bad", "namespace": ns},
                "spec": {"tenant": "t", "s3": {"bucket": "Not_A_Bucket"}}
            }),
        )
        .await,
    );
    assert!(msg.contains("spec.s3.bucket"), "{msg}");
    let msg = api_error(
        apply_json(
            &stores,
            json!({
                "apiVersion": "pbs.cloud/v1alpha1", "kind": "Datastore",
                "metadata": {"name": "bad", "namespace": ns},
                "spec": {"tenant": "t", "name": "x"}
            }),
        )
        .await,
    );
    assert!(msg.contains("spec.name"), "{msg}");

    let tenants: Api<Tenant> = Api::namespaced(client.clone(), &ns);
    let msg = api_error(
        apply_json(
            &tenants,
            json!({
                "apiVersion": "pbs.cloud/v1alpha1", "kind": "Tenant",
                "metadata": {"name": "bad", "namespace": ns},
                "spec": {"deletionPolicy": "Sometimes"}
            }),
        )
        .await,
    );
    assert!(
        msg.contains("spec.deletionPolicy") && msg.contains("Retain"),
        "{msg}"
    );
    drop_namespace(&client, &ns).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn child_without_parent_reports_not_found() {
    let client = client().await;
    let ns = namespace(&client, "op-orphan").await;
    let op = Operator::start(&client, &ns).await;
    let prune: Api<PrunePolicy> = Api::namespaced(client.clone(), &ns);
    apply_json(
        &prune,
        json!({
            "apiVersion": "pbs.cloud/v1alpha1", "kind": "PrunePolicy",
            "metadata": {"name": "lonely", "namespace": ns},
            "spec": {"datastore": "missing", "keep": {"last": 1}}
        }),
    )
    .await
    .expect("prune policy");
    let stores: Api<Datastore> = Api::namespaced(client.clone(), &ns);
    apply_json(
        &stores,
        json!({
            "apiVersion": "pbs.cloud/v1alpha1", "kind": "Datastore",
            "metadata": {"name": "lonely", "namespace": ns},
            "spec": {"tenant": "nobody"}
        }),
    )
    .await
    .expect("datastore");
    wait_for("PrunePolicy DatastoreNotFound", WAIT, || async {
        prune
            .get("lonely")
            .await
            .ok()?
            .status?
            .conditions
            .iter()
            .any(|c| c.reason == "DatastoreNotFound")
            .then_some(())
    })
    .await;
    wait_for("Datastore TenantNotFound", WAIT, || async {
        stores
            .get("lonely")
            .await
            .ok()?
            .status?
            .conditions
            .iter()
            .any(|c| c.reason == "TenantNotFound")
            .then_some(())
    })
    .await;
    op.stop().await;
    drop_namespace(&client, &ns).await;
}

/// Reconciles 100 tenants (each with a datastore) from scratch and prints how long it took.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hundred_tenants_reconcile_time() {
    const N: usize = 100;
    let client = client().await;
    let ns = namespace(&client, "op-bench").await;
    let tenants: Api<Tenant> = Api::namespaced(client.clone(), &ns);
    let stores: Api<Datastore> = Api::namespaced(client.clone(), &ns);
    for i in 0..N {
        apply_json(
            &tenants,
            json!({
                "apiVersion": "pbs.cloud/v1alpha1", "kind": "Tenant",
                "metadata": {"name": format!("t{i:03}"), "namespace": ns}, "spec": {}
            }),
        )
        .await
        .expect("tenant");
        apply_json(
            &stores,
            json!({
                "apiVersion": "pbs.cloud/v1alpha1", "kind": "Datastore",
                "metadata": {"name": format!("t{i:03}-store"), "namespace": ns},
                "spec": {"tenant": format!("t{i:03}"), "name": "store1"}
            }),
        )
        .await
        .expect("datastore");
    }
    let start = Instant::now();
    let op = Operator::start(&client, &ns).await;
    wait_for(
        "100 tenants reconciled",
        Duration::from_secs(600),
        || async {
            let list = tenants.list(&ListParams::default()).await.ok()?;
            let done = list
                .items
                .iter()
                .filter(|t| {
                    t.status.as_ref().is_some_and(|s| {
                        s.observed_generation == t.metadata.generation && s.datastores.len() == 1
                    })
                })
                .count();
            (done == N).then_some(())
        },
    )
    .await;
    let elapsed = start.elapsed();
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &ns);
    let configs = secrets
        .list(&ListParams::default().labels("app.kubernetes.io/managed-by=pbs-cloud-operator"))
        .await
        .expect("list");
    assert_eq!(
        configs
            .items
            .iter()
            .filter(|s| s.name_any().ends_with("-pbs-config"))
            .count(),
        N
    );
    let m = &op.ctx.metrics;
    eprintln!(
        "BENCH: {N} tenants (each with a datastore, 3 Secrets, Deployment, Service, status) reconciled from scratch in {:.2} s ({:.1} ms per tenant; {} reconciles, {:.2} s inside reconcile)",
        elapsed.as_secs_f64(),
        elapsed.as_secs_f64() * 1000.0 / N as f64,
        m.reconciles.get("controller=\"tenant\""),
        m.reconcile_micros.load(std::sync::atomic::Ordering::Relaxed) as f64 / 1e6,
    );
    assert!(
        elapsed < Duration::from_secs(300),
        "100 tenants took {elapsed:?}"
    );
    op.stop().await;
    drop_namespace(&client, &ns).await;
}
