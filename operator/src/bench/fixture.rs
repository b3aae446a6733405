//! Test and benchmark setup against a real API server: CRDs, a namespace full of Tenants (each
//! with an S3 Datastore and a PrunePolicy), and pods marked ready the way a kubelet would.

use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use k8s_openapi::api::core::v1::{Namespace, Pod, Secret};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{ListParams, Patch, PatchParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Api, Client, ResourceExt};
use serde_json::json;

use crate::crd::{Datastore, PrunePolicy, Tenant};

/// Field manager of everything the fixture writes.
const MANAGER: &str = "pbs-cloud-bench";

/// A client for the API server of `kubeconfig`.
pub async fn client(kubeconfig: &std::path::Path) -> anyhow::Result<Client> {
    let kc = Kubeconfig::read_from(kubeconfig)
        .with_context(|| format!("reading {}", kubeconfig.display()))?;
    let cfg = kube::Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default()).await?;
    Ok(Client::try_from(cfg)?)
}

/// Polls `check` every 200 ms until it yields, or fails after `timeout` naming `what`.
pub async fn wait_for<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let start = Instant::now();
    loop {
        if let Some(v) = check().await {
            return Ok(v);
        }
        if start.elapsed() > timeout {
            bail!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Applies the operator's CRDs (without CEL rules on servers older than 1.25, which refuse
/// them) and waits until they are established.
pub async fn ensure_crds(client: &Client) -> anyhow::Result<()> {
    let v = client.apiserver_version().await?;
    let minor: u32 = v.minor.trim_end_matches('+').parse().unwrap_or(99);
    let api: Api<CustomResourceDefinition> = Api::all(client.clone());
    for crd in crate::crdgen::all() {
        let crd = if v.major == "1" && minor < 25 {
            crate::crdgen::strip_cel(crd)
        } else {
            crd
        };
        let name = crd.name_any();
        api.patch(
            &name,
            &PatchParams::apply(MANAGER).force(),
            &Patch::Apply(&crd),
        )
        .await
        .with_context(|| format!("applying CRD {name}"))?;
        wait_for(
            &format!("CRD {name} established"),
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
        .await?;
    }
    Ok(())
}

/// A random hex suffix.
pub fn suffix() -> String {
    let mut b = [0u8; 4];
    let _ = pbs_cloud_server::auth::password::random_bytes(&mut b);
    hex::encode(b)
}

/// Creates namespace `<prefix>-<random>`.
pub async fn namespace(client: &Client, prefix: &str) -> anyhow::Result<String> {
    let name = format!("{prefix}-{}", suffix());
    let api: Api<Namespace> = Api::all(client.clone());
    let mut ns = Namespace::default();
    ns.metadata.name = Some(name.clone());
    api.create(&PostParams::default(), &ns)
        .await
        .with_context(|| format!("creating namespace {name}"))?;
    Ok(name)
}

/// Deletes a namespace (best effort).
pub async fn drop_namespace(client: &Client, name: &str) {
    let api: Api<Namespace> = Api::all(client.clone());
    let _ = api.delete(name, &Default::default()).await;
}

/// Name of tenant `i`.
pub fn tenant_name(i: usize) -> String {
    format!("t{i:03}")
}

async fn apply<K>(api: &Api<K>, v: serde_json::Value) -> anyhow::Result<()>
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    let name = v["metadata"]["name"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    api.patch(
        &name,
        &PatchParams::apply(MANAGER).force(),
        &Patch::Apply(&v),
    )
    .await
    .with_context(|| format!("applying {name}"))?;
    Ok(())
}

/// Creates `n` Tenants in `ns`, each with an S3 Datastore (its own prefix in one bucket) and
/// a PrunePolicy, plus the S3 credentials Secret they share.
pub async fn tenants(client: &Client, ns: &str, n: usize) -> anyhow::Result<()> {
    let secrets: Api<Secret> = Api::namespaced(client.clone(), ns);
    apply(
        &secrets,
        json!({"apiVersion": "v1", "kind": "Secret",
               "metadata": {"name": "bench-s3", "namespace": ns},
               "stringData": {"access-key-id": "AKIABENCH", "secret-access-key": "bench"}}),
    )
    .await?;
    let tenants: Api<Tenant> = Api::namespaced(client.clone(), ns);
    let stores: Api<Datastore> = Api::namespaced(client.clone(), ns);
    let prune: Api<PrunePolicy> = Api::namespaced(client.clone(), ns);
    for i in 0..n {
        let t = tenant_name(i);
        apply(
            &tenants,
            json!({"apiVersion": "pbs.cloud/v1alpha1", "kind": "Tenant",
                   "metadata": {"name": t, "namespace": ns}, "spec": {}}),
        )
        .await?;
        apply(
            &stores,
            json!({"apiVersion": "pbs.cloud/v1alpha1", "kind": "Datastore",
                   "metadata": {"name": format!("{t}-store"), "namespace": ns},
                   "spec": {"tenant": t, "name": "store1", "s3": {
                       "bucket": "bench-bucket", "endpoint": "http://127.0.0.1:9", "pathStyle": true,
                       "credentialsSecret": {"name": "bench-s3"}}}}),
        )
        .await?;
        apply(
            &prune,
            json!({"apiVersion": "pbs.cloud/v1alpha1", "kind": "PrunePolicy",
                   "metadata": {"name": format!("{t}-prune"), "namespace": ns},
                   "spec": {"datastore": format!("{t}-store"), "keep": {"daily": 7}}}),
        )
        .await?;
    }
    Ok(())
}

/// True when the Tenant's status is current and names its datastore.
fn reconciled(t: &Tenant) -> bool {
    t.status
        .as_ref()
        .is_some_and(|s| s.observed_generation == t.metadata.generation && !s.datastores.is_empty())
}

fn condition_is(t: &Tenant, type_: &str, status: &str) -> bool {
    t.status.as_ref().is_some_and(|s| {
        s.conditions
            .iter()
            .any(|c| c.type_ == type_ && c.status == status)
    })
}

/// Waits until all `n` Tenants of `ns` are reconciled.
pub async fn wait_reconciled(
    client: &Client,
    ns: &str,
    n: usize,
    timeout: Duration,
) -> anyhow::Result<()> {
    let api: Api<Tenant> = Api::namespaced(client.clone(), ns);
    wait_for(
        &format!("{n} Tenants reconciled in {ns}"),
        timeout,
        || async {
            let list = api.list(&ListParams::default()).await.ok()?;
            (list.items.iter().filter(|t| reconciled(t)).count() >= n).then_some(())
        },
    )
    .await
}

/// Acting as the kubelet: marks the server pod of every Tenant in `ns` Running and Ready
/// (kube-controller-manager creates the pods; there is no kubelet), then waits until all `n`
/// Tenants report `Ready=True` and the usage poller has written `UsageAvailable` once.
pub async fn make_ready(
    client: &Client,
    ns: &str,
    n: usize,
    timeout: Duration,
) -> anyhow::Result<()> {
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
    let lp = ListParams::default().labels("pbs.cloud/tenant");
    let list = wait_for(
        &format!(
            "{n} server pods in {ns} (kube-controller-manager makes them from the Deployments)"
        ),
        timeout,
        || async {
            let l = pods.list(&lp).await.ok()?;
            (l.items.len() >= n).then_some(l)
        },
    )
    .await?;
    let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    for pod in list.items {
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
        .with_context(|| format!("marking pod {} ready", pod.name_any()))?;
    }
    let api: Api<Tenant> = Api::namespaced(client.clone(), ns);
    wait_for(
        &format!("{n} Tenants Ready with usage polled"),
        timeout,
        || async {
            let list = api.list(&ListParams::default()).await.ok()?;
            let done = list
                .items
                .iter()
                .filter(|t| {
                    condition_is(t, "Ready", "True")
                        && t.status.as_ref().is_some_and(|s| {
                            s.conditions.iter().any(|c| c.type_ == "UsageAvailable")
                        })
                })
                .count();
            (done >= n).then_some(())
        },
    )
    .await
}
