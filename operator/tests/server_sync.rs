//! A SyncJob end to end on real servers (the `pbs-cloud-server` binary, as in `server_boot.rs`):
//! two tenants' servers boot from configs the operator renders; "acme" has a SyncJob pulling
//! from "site" with site's generated API token, read from the file the pod would mount. After
//! a run, the operator's poller client lists acme's sync jobs with acme's token and pinned
//! certificate, and the status mapping gives `OK`, the run's end as `lastSuccess` and a small
//! lag. Only the pod's mount points are remapped to a temporary directory.

mod server_common;

use std::time::Duration;

use pbs_cloud_e2e::{BackupParams, BackupSession, PbsClient, UploadOptions};
use pbs_cloud_operator::crd::{
    Datastore, DatastoreSpec, SyncJob, SyncJobSpec, SyncRemoteSpec, SyncRunStatus, SyncSecretRef,
    Tenant, TenantSpec,
};
use pbs_cloud_operator::render::{self, Credentials, Inputs};
use pbs_cloud_operator::usage::sync::sync_run_status;
use pbs_cloud_operator::usage::{self, UsageTarget};
use server_common::meta;

/// A tenant's server booted from the rendered config.
struct Booted {
    _child: tokio::process::Child,
    _tmp: tempfile::TempDir,
    etc: std::path::PathBuf,
    port: u16,
    fingerprint: String,
    creds: Credentials,
    admin: PbsClient,
}

/// Renders `name`'s config from `inputs`, writes `files` (paths relative to the config
/// directory) and boots the server; logged in as the tenant's admin.
async fn boot(name: &str, inputs: Inputs, files: &[(String, String)]) -> Booted {
    let tenant = Tenant {
        metadata: meta(name),
        spec: TenantSpec::default(),
        status: None,
    };
    let creds = Credentials::generate(name).expect("credentials");
    let tls = render::generate_self_signed(&tenant).expect("certificate");
    let fingerprint = render::fingerprint(&tenant, &tls.cert_pem).expect("fingerprint");
    let bound = render::bind(&tenant, &inputs);
    assert!(bound.rejected.is_empty(), "{:?}", bound.rejected);
    let config = render::render_config(&tenant, &bound, &inputs, &creds);

    let tmp = tempfile::tempdir().expect("tempdir");
    let etc = tmp.path().join("etc");
    let data = tmp.path().join("data");
    std::fs::create_dir_all(etc.join("tls")).expect("mkdir");
    std::fs::create_dir_all(&data).expect("mkdir");
    std::fs::write(etc.join("tls/tls.crt"), &tls.cert_pem).expect("write cert");
    std::fs::write(etc.join("tls/tls.key"), &tls.key_pem).expect("write key");
    for (path, content) in files {
        let path = etc.join(path);
        std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
        std::fs::write(&path, content).expect("write file");
    }
    let served =
        server_common::serve_rendered(&config, &etc, &data, &fingerprint, &creds.password).await;
    let (child, port, admin) = (served.child, served.port, served.admin);
    Booted {
        _child: child,
        _tmp: tmp,
        etc,
        port,
        fingerprint,
        creds,
        admin,
    }
}

fn store(tenant: &str) -> Datastore {
    Datastore {
        metadata: meta(&format!("{tenant}-store")),
        spec: DatastoreSpec {
            tenant: tenant.into(),
            name: Some("store1".into()),
            ..DatastoreSpec::default()
        },
        status: None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rendered_sync_job_pulls_and_the_poller_reads_its_run() {
    // The remote: tenant "site" with one snapshot.
    let site = boot(
        "site",
        Inputs {
            datastores: vec![store("site")],
            ..Inputs::default()
        },
        &[],
    )
    .await;
    let mut session = BackupSession::start(
        &site.admin,
        BackupParams::new("store1", "host", "web", 1_700_000_000),
    )
    .await
    .expect("backup session");
    let data: Vec<u8> = (0..128 * 1024u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    session
        .upload_dynamic_archive("data.pxar", &data, &UploadOptions::default())
        .await
        .expect("upload archive");
    session.finish().await.expect("finish backup");

    // The tenant with a SyncJob pulling from it with site's generated token.
    let job = SyncJob {
        metadata: meta("mirror-site"),
        spec: SyncJobSpec {
            datastore: "acme-store".into(),
            remote: SyncRemoteSpec {
                host: "127.0.0.1".into(),
                port: site.port,
                auth_id: site.creds.tokenid("admin@pbs"),
                fingerprint: site.fingerprint.clone(),
                secret_ref: SyncSecretRef {
                    name: "site-token".into(),
                    key: "token".into(),
                },
            },
            remote_store: "store1".into(),
            schedule: "2099-01-01".into(),
            owner: Some("admin@pbs".into()),
            ..SyncJobSpec::default()
        },
        status: None,
    };
    let inputs = Inputs {
        datastores: vec![store("acme")],
        sync_secrets: ["mirror-site".to_string()].into(),
        sync_jobs: vec![job],
        ..Inputs::default()
    };
    let secret = render::sync_secret_path("mirror-site");
    let acme = boot(
        "acme",
        inputs,
        &[(secret.clone(), site.creds.token_secret.clone())],
    )
    .await;
    assert!(acme.etc.join(&secret).is_file());

    let target = UsageTarget {
        addr: format!("127.0.0.1:{}", acme.port),
        fingerprint: acme.fingerprint.clone(),
        tokenid: acme.creds.tokenid("admin@pbs"),
        secret: acme.creds.token_secret.clone(),
        tenant_id: "acme".into(),
    };
    // Listed before any run: the next run, nothing else.
    let list = usage::fetch_sync_jobs(&target)
        .await
        .expect("list sync jobs");
    let entry = list
        .iter()
        .find(|e| e.id == "mirror-site")
        .unwrap_or_else(|| panic!("mirror-site not listed: {list:?}"));
    assert_eq!(entry.remote.as_deref(), Some("mirror-site-remote"));
    let before = sync_run_status(&SyncRunStatus::default(), Some(entry), 0);
    assert_eq!(before.next_run.as_deref(), Some("2099-01-01T00:00:00Z"));
    assert_eq!((before.last_run_state, before.lag_seconds), (None, None));

    acme.admin
        .post("admin/sync/mirror-site/run", None)
        .await
        .expect("start the sync job");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let entry = loop {
        let list = usage::fetch_sync_jobs(&target)
            .await
            .expect("list sync jobs");
        let e = list
            .into_iter()
            .find(|e| e.id == "mirror-site")
            .expect("listed");
        if e.last_run_endtime.is_some() && e.last_run_state.as_deref() != Some("running") {
            break e;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "sync job did not finish within 60 s: {e:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let now = chrono::Utc::now().timestamp();
    let status = sync_run_status(&SyncRunStatus::default(), Some(&entry), now);
    assert_eq!(status.last_run_state.as_deref(), Some("OK"), "{entry:?}");
    assert!(status.last_run.is_some());
    assert_eq!(status.last_success, status.last_run);
    assert!(status.lag_seconds.is_some_and(|l| l < 60), "{status:?}");
    assert!(status
        .last_run_upid
        .as_deref()
        .is_some_and(|u| u.contains(":syncjob:")));

    // And the snapshot arrived.
    let groups = acme
        .admin
        .get("admin/datastore/store1/groups", None)
        .await
        .expect("list groups");
    assert_eq!(groups[0]["backup-id"], "web", "{groups}");
}
