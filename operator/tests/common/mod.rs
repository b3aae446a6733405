//! Shared helpers of the tests against a real kube-apiserver (started by
//! `e2e/kube/start-kube.sh`). A missing API server fails the tests with the how-to; it is never
//! counted as a pass.

#![allow(dead_code)]

pub mod s3;

use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{DeleteParams, ObjectMeta, Patch, PatchParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Api, Client};
use pbs_cloud_operator::controller;
use tokio::sync::oneshot;

const HOWTO: &str = "no kube-apiserver for the operator tests: run `e2e/kube/start-kube.sh` \
(builds kube-apiserver v1.20 from Debian's source package once, ~13 min, then starts etcd + \
apiserver on 127.0.0.1:16443) and export PBS_CLOUD_KUBECONFIG=~/.cache/pbs-cloud/kube-run/kubeconfig";

pub fn kubeconfig_path() -> PathBuf {
    if let Ok(p) = std::env::var("PBS_CLOUD_KUBECONFIG") {
        return PathBuf::from(p);
    }
    let home = std::env::var("HOME").unwrap_or_default();
    PathBuf::from(home).join(".cache/pbs-cloud/kube-run/kubeconfig")
}

/// A client for the test API server; panics with the how-to when there is none.
pub async fn client() -> Client {
    let path = kubeconfig_path();
    let kc = Kubeconfig::read_from(&path)
        .unwrap_or_else(|e| panic!("{HOWTO}\n(reading {}: {e})", path.display()));
    let cfg = kube::Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
        .await
        .unwrap_or_else(|e| panic!("{HOWTO}\n({e})"));
    let client = Client::try_from(cfg).unwrap_or_else(|e| panic!("{HOWTO}\n({e})"));
    let ns: Api<Namespace> = Api::all(client.clone());
    if let Err(e) = ns.get("default").await {
        panic!(
            "{HOWTO}\n(API server at {} does not answer: {e})",
            path.display()
        );
    }
    ensure_crds(&client).await;
    client
}

/// Applies the CRDs (CEL rules stripped: a 1.20 server has no CEL) and waits until Established.
pub async fn ensure_crds(client: &Client) {
    let api: Api<CustomResourceDefinition> = Api::all(client.clone());
    for crd in pbs_cloud_operator::crdgen::all() {
        let crd = pbs_cloud_operator::crdgen::strip_cel(crd);
        let name = crd.metadata.name.clone().unwrap_or_default();
        api.patch(
            &name,
            &PatchParams::apply("pbs-cloud-tests").force(),
            &Patch::Apply(&crd),
        )
        .await
        .unwrap_or_else(|e| panic!("applying CRD {name}: {e}"));
        wait_for(
            &format!("CRD {name} Established"),
            Duration::from_secs(30),
            || async {
                let c = api.get(&name).await.ok()?;
                c.status?
                    .conditions?
                    .iter()
                    .any(|c| c.type_ == "Established" && c.status == "True")
                    .then_some(())
            },
        )
        .await;
    }
}

/// Creates a fresh namespace `prefix-<random>`.
pub async fn namespace(client: &Client, prefix: &str) -> String {
    let name = format!("{prefix}-{:08x}", rand_u32());
    let api: Api<Namespace> = Api::all(client.clone());
    let ns = Namespace {
        metadata: ObjectMeta {
            name: Some(name.clone()),
            ..ObjectMeta::default()
        },
        ..Namespace::default()
    };
    api.create(&PostParams::default(), &ns)
        .await
        .unwrap_or_else(|e| panic!("creating namespace {name}: {e}"));
    name
}

/// Deletes a namespace (best effort; a 1.20 server without kcm leaves it Terminating).
pub async fn drop_namespace(client: &Client, name: &str) {
    let api: Api<Namespace> = Api::all(client.clone());
    let _ = api.delete(name, &DeleteParams::default()).await;
}

fn rand_u32() -> u32 {
    let mut b = [0u8; 4];
    pbs_cloud_server::auth::password::random_bytes(&mut b).expect("random");
    u32::from_le_bytes(b)
}

/// Polls `check` until it yields a value or `timeout` passes (then panics naming `what`).
pub async fn wait_for<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let start = Instant::now();
    loop {
        if let Some(v) = check().await {
            return v;
        }
        if start.elapsed() > timeout {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The operator running in-process for one namespace; stops when dropped or `stop`ped.
pub struct Operator {
    stop: Option<oneshot::Sender<()>>,
    handle: Option<tokio::task::JoinHandle<()>>,
    pub ctx: Arc<controller::Context>,
}

impl Operator {
    pub async fn start(client: &Client, ns: &str) -> Self {
        let settings = controller::Settings::new("pbs-cloud-server:test".into(), Some(ns.into()));
        let controllers = controller::Controllers::new(
            client.clone(),
            settings,
            Arc::new(pbs_cloud_operator::metrics::Metrics::default()),
        );
        let ctx = controllers.ctx.clone();
        let (tx, rx) = oneshot::channel::<()>();
        let handle = tokio::spawn(controllers.run(async move {
            let _ = rx.await;
        }));
        Operator {
            stop: Some(tx),
            handle: Some(handle),
            ctx,
        }
    }

    pub async fn stop(mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(h) = self.handle.take() {
            let _ = tokio::time::timeout(Duration::from_secs(10), h).await;
        }
    }
}

impl Drop for Operator {
    fn drop(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
    }
}

/// Applies a typed object from JSON (server-side, as a user would with kubectl).
pub async fn apply_json<K>(api: &Api<K>, value: serde_json::Value) -> Result<K, kube::Error>
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    let name = value["metadata"]["name"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    api.patch(
        &name,
        &PatchParams::apply("pbs-cloud-tests").force(),
        &Patch::Apply(&value),
    )
    .await
}
