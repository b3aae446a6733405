//! A SyncJob against a real kube-apiserver (v1.20 from Debian's source package; see
//! `e2e/kube/start-kube.sh`): refused while its Secret is missing, rendered into the tenant's
//! config and mounted into the server pod once the Secret appears (the Secret's creation alone
//! triggers the re-render), removed again when the SyncJob is deleted; the schema refuses a bad
//! fingerprint and too many worker threads.

mod common;

use std::path::Path;
use std::time::Duration;

use common::{apply_json, client, drop_namespace, namespace, wait_for, Operator};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Secret;
use kube::api::DeleteParams;
use kube::{Api, Client};
use pbs_cloud_operator::crd::{Datastore, SyncJob, Tenant};
use serde_json::{json, Value};

const WAIT: Duration = Duration::from_secs(60);
const FP: &str = "ab:cd:ef:01:23:45:67:89:ab:cd:ef:01:23:45:67:89:ab:cd:ef:01:23:45:67:89:ab:cd:ef:01:23:45:67:89";

fn config_text(secret: &Secret) -> Option<String> {
    let v = secret.data.as_ref()?.get("config.toml")?;
    String::from_utf8(v.0.clone()).ok()
}

fn sync_job(ns: &str, name: &str, fingerprint: &str, worker_threads: u32) -> Value {
    json!({
        "apiVersion": "pbs.cloud/v1alpha1", "kind": "SyncJob",
        "metadata": {"name": name, "namespace": ns},
        "spec": {
            "datastore": "acme-store1",
            "remote": {"host": "pbs-a.example.com", "authId": "sync@pbs!mirror",
                       "fingerprint": fingerprint,
                       "secretRef": {"name": "site-a", "key": "token"}},
            "remoteStore": "store1",
            "remoteNamespace": "prod",
            "namespace": "mirror",
            "groupFilter": ["type:vm"],
            "removeVanished": true,
            "rateIn": "20 MiB",
            "workerThreads": worker_threads
        }
    })
}

/// The SyncJob's `Ready` condition as (status, reason).
async fn ready(jobs: &Api<SyncJob>, name: &str) -> Option<(String, String)> {
    let j = jobs.get(name).await.ok()?;
    let c = j
        .status?
        .child
        .conditions
        .into_iter()
        .find(|c| c.type_ == "Ready")?;
    Some((c.status, c.reason))
}

/// The projected source of the config volume that mounts Secret `secret`, if any.
fn mounted(d: &Deployment, secret: &str) -> Option<Value> {
    let v = serde_json::to_value(d).ok()?;
    let sources = v["spec"]["template"]["spec"]["volumes"]
        .as_array()?
        .iter()
        .find(|v| v["name"] == "config")?["projected"]["sources"]
        .as_array()?
        .clone();
    sources.into_iter().find(|s| s["secret"]["name"] == secret)
}

async fn create_tenant(client: &Client, ns: &str) {
    let tenants: Api<Tenant> = Api::namespaced(client.clone(), ns);
    apply_json(
        &tenants,
        json!({
            "apiVersion": "pbs.cloud/v1alpha1", "kind": "Tenant",
            "metadata": {"name": "acme", "namespace": ns},
            "spec": {}
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
            "spec": {"tenant": "acme", "name": "store1"}
        }),
    )
    .await
    .expect("datastore");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sync_job_is_rendered_and_its_secret_mounted() {
    let client = client().await;
    let ns = namespace(&client, "op-sync").await;
    create_tenant(&client, &ns).await;
    let jobs: Api<SyncJob> = Api::namespaced(client.clone(), &ns);
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &ns);
    let deploys: Api<Deployment> = Api::namespaced(client.clone(), &ns);

    // The schema refuses what it can check.
    for (bad, field) in [
        (sync_job(&ns, "bad-fp", "ab:cd", 1), "fingerprint"),
        (sync_job(&ns, "bad-threads", FP, 33), "workerThreads"),
    ] {
        match apply_json(&jobs, bad).await {
            Err(kube::Error::Api(s)) => {
                assert_eq!(s.code, 422, "{s:?}");
                assert!(s.message.contains(field), "{}", s.message);
            }
            other => panic!("the API server should refuse a bad {field}: {other:?}"),
        }
    }

    // Applied before its Secret exists: refused, nothing rendered or mounted.
    apply_json(&jobs, sync_job(&ns, "mirror-a", FP, 4))
        .await
        .expect("sync job");
    let op = Operator::start(&client, &ns).await;
    wait_for("SyncJob SecretMissing", WAIT, || async {
        let (status, reason) = ready(&jobs, "mirror-a").await?;
        (status == "False" && reason == "SecretMissing").then_some(())
    })
    .await;
    let cfg = wait_for("config Secret", WAIT, || async {
        config_text(&secrets.get("acme-pbs-config").await.ok()?)
    })
    .await;
    assert!(!cfg.contains("[[sync_job]]"), "{cfg}");
    let d = deploys.get("acme-pbs").await.expect("deployment");
    assert_eq!(mounted(&d, "site-a"), None);

    // The Secret appears: the config gets the remote and the job, the pod the file.
    apply_json(
        &secrets,
        json!({
            "apiVersion": "v1", "kind": "Secret",
            "metadata": {"name": "site-a", "namespace": ns},
            "stringData": {"token": "s3cr3t"}
        }),
    )
    .await
    .expect("remote secret");
    let cfg = wait_for("config with [[sync_job]]", WAIT, || async {
        let text = config_text(&secrets.get("acme-pbs-config").await.ok()?)?;
        text.contains("[[sync_job]]").then_some(text)
    })
    .await;
    let parsed = pbs_cloud_server::config::Config::parse(Path::new("config.toml"), &cfg)
        .expect("server accepts config");
    let remote = &parsed.remotes[0];
    assert_eq!(remote.name.get_ref(), "mirror-a-remote");
    assert_eq!(remote.host.get_ref(), "pbs-a.example.com");
    assert_eq!(remote.port, Some(8007), "the CRD default");
    assert_eq!(remote.fingerprint.get_ref(), FP);
    assert_eq!(
        remote.secret_file.get_ref(),
        Path::new("/etc/pbs-cloud/sync/mirror-a/secret")
    );
    let job = &parsed.sync_jobs[0];
    assert_eq!(job.id.get_ref(), "mirror-a");
    assert_eq!(job.store.get_ref(), "store1");
    assert_eq!(job.remote.get_ref(), "mirror-a-remote");
    assert_eq!(job.remote_ns.as_deref(), Some("prod"));
    assert_eq!(job.ns.as_deref(), Some("mirror"));
    assert_eq!(job.schedule.get_ref(), "hourly", "the CRD default");
    assert!(job.remove_vanished);
    assert_eq!(job.worker_threads.as_ref().map(|w| *w.get_ref()), Some(4));

    let source = wait_for("Deployment mounting the remote secret", WAIT, || async {
        mounted(&deploys.get("acme-pbs").await.ok()?, "site-a")
    })
    .await;
    assert_eq!(
        source,
        json!({"secret": {"name": "site-a", "optional": false, "items": [
            {"key": "token", "path": "sync/mirror-a/secret", "mode": 256}
        ]}})
    );
    let d = deploys.get("acme-pbs").await.expect("deployment");
    let mounts = serde_json::to_value(&d).expect("json")["spec"]["template"]["spec"]["containers"]
        [0]["volumeMounts"]
        .clone();
    assert_eq!(
        mounts[0],
        json!({"name": "config", "mountPath": "/etc/pbs-cloud", "readOnly": true})
    );
    wait_for("SyncJob Bound", WAIT, || async {
        let (status, reason) = ready(&jobs, "mirror-a").await?;
        (status == "True" && reason == "Bound").then_some(())
    })
    .await;
    let status = jobs.get("mirror-a").await.expect("sync job").status;
    assert_eq!(status.and_then(|s| s.child.tenant).as_deref(), Some("acme"));

    // Deleting the SyncJob removes the job, the remote and the mount.
    jobs.delete("mirror-a", &DeleteParams::default())
        .await
        .expect("delete sync job");
    wait_for("config without [[sync_job]]", WAIT, || async {
        let text = config_text(&secrets.get("acme-pbs-config").await.ok()?)?;
        (!text.contains("[[sync_job]]") && !text.contains("[[remote]]")).then_some(())
    })
    .await;
    wait_for("Deployment without the remote secret", WAIT, || async {
        mounted(&deploys.get("acme-pbs").await.ok()?, "site-a")
            .is_none()
            .then_some(())
    })
    .await;

    op.stop().await;
    drop_namespace(&client, &ns).await;
}
