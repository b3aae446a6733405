//! `proxmox-backup-client status --output-format=json`, which Proxmox VE runs every 10 s and
//! shows as the storage's size: `total`, `used` and `avail`. `used` is what the datastore
//! stores (its chunks' bytes); with a datastore quota, a `capacity_bytes` or a tenant quota,
//! `avail` is the smallest headroom and `total` = `used` + `avail`; an object-store datastore
//! without any of them reports `total` = `avail` = 0. Tested on a local datastore and on the
//! Ceph RGW the CI starts.

mod common;
mod pve_common;

use std::time::Duration;

use common::*;
use pbs_cloud_e2e::qemu_backup::{qemu_backup, Drive, QemuBackupJob};
use pbs_cloud_e2e::{PbsClient, TestServer};
use pve_common::*;
use serde_json::Value;

const MIB: u64 = 1024 * 1024;
const GIB: u64 = 1024 * MIB;

async fn status(client: &PbsClient, store: &str) -> (u64, u64, u64, Value) {
    let s = client
        .get(&format!("admin/datastore/{store}/status"), None)
        .await
        .unwrap();
    let n = |k: &str| s[k].as_u64().unwrap_or_else(|| panic!("{k} in {s}"));
    (n("total"), n("used"), n("avail"), s)
}

/// Polls the status until `check` accepts it (config reloads are noticed within ~2 s).
async fn wait_status(
    client: &PbsClient,
    store: &str,
    what: &str,
    check: impl Fn(u64, u64, u64) -> bool,
) -> (u64, u64, u64) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let (t, u, a, s) = status(client, store).await;
        if check(t, u, a) {
            return (t, u, a);
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "status never showed {what}: {s}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// A VM disk backup of 3 random 4 MiB blocks (about 12 MiB of chunks).
async fn some_backup(client: &PbsClient, store: &str, vmid: &str) {
    let disk = random_bytes(vmid.parse().unwrap(), 3 * 4 * MIB as usize);
    let conf = qemu_server_conf(vmid);
    qemu_backup(
        client,
        QemuBackupJob {
            store,
            ns: None,
            vmid,
            time: T0,
            key: None,
            master_key: None,
            configs: vec![("qemu-server.conf", &conf)],
            drives: vec![Drive {
                name: "drive-scsi0",
                data: &disk,
                incremental: None,
            }],
        },
    )
    .await
    .unwrap();
}

fn local_chunk_bytes(server: &TestServer, store: &str) -> u64 {
    let chunks = server
        .data_dir()
        .join("datastores")
        .join(store)
        .join(".chunks");
    let mut total = 0;
    for dir in std::fs::read_dir(chunks).unwrap() {
        for f in std::fs::read_dir(dir.unwrap().path()).unwrap() {
            total += f.unwrap().metadata().unwrap().len();
        }
    }
    total
}

const LOCAL: &str =
    "[[tenant]]\nid = \"t1\"\n\n[[datastore]]\nname = \"store1\"\ntenant = \"t1\"\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pve_status_local_datastore_with_capacity_and_quotas() {
    let capacity = format!("{LOCAL}capacity_bytes = {GIB}\n");
    let mut pve = PveServer::start(Some(&capacity)).await;
    let store = pve.store();
    let client = pve.client().await;
    some_backup(&client, &store, "10").await;
    let stored = local_chunk_bytes(&pve.server, &store);
    assert!(stored > 12 * MIB, "{stored}");
    // capacity_bytes: total is the capacity, used what the chunks take
    let (total, used, avail, s) = status(&client, &store).await;
    assert_eq!(used, stored, "{s}");
    assert_eq!((total, avail), (GIB, GIB - used), "{s}");

    // a datastore quota tighter than the capacity
    let quota = used + 5 * MIB;
    pve.server
        .set_config(&format!("{capacity}quota_bytes = {quota}\n"))
        .unwrap();
    let (total, _, _) = wait_status(&client, &store, "the datastore quota", |_, _, a| {
        a == 5 * MIB
    })
    .await;
    assert_eq!(total, quota);

    // the tenant's quota, tighter still
    let tenant_quota = used + 3 * MIB;
    let config = capacity.replacen(
        "id = \"t1\"\n",
        &format!("id = \"t1\"\nquota_bytes = {tenant_quota}\n"),
        1,
    );
    pve.server.set_config(&config).unwrap();
    let (total, _, _) =
        wait_status(&client, &store, "the tenant quota", |_, _, a| a == 3 * MIB).await;
    assert_eq!(total, tenant_quota);

    // without any limit: the filesystem, like PBS
    pve.server.set_config(LOCAL).unwrap();
    let fs = rustix::fs::statvfs(pve.server.data_dir()).unwrap();
    let fs_total = fs.f_blocks * fs.f_frsize;
    wait_status(&client, &store, "the filesystem", |t, _, _| t == fs_total).await;
    pve.server.restart().await.unwrap();
    let client = pve.client().await;
    let (total, _, _, _) = status(&client, &store).await;
    assert_eq!(total, fs_total);
}

/// A server whose only datastore `store1` lives in the test bucket under `prefix`.
async fn s3_server(s3: &S3Env, prefix: &str, tenant_quota: Option<u64>, extra: &str) -> TestServer {
    let mut server = TestServer::prepare().unwrap();
    let config = s3_config(&server, s3, prefix, tenant_quota, extra);
    server.set_config(&config).unwrap();
    server.launch().await.expect("server with an S3 datastore");
    server
}

/// Tenant `t1` (with `tenant_quota`) owning datastore `store1` in the test bucket under
/// `prefix`; `extra` goes into the datastore's table.
fn s3_config(
    server: &TestServer,
    s3: &S3Env,
    prefix: &str,
    tenant_quota: Option<u64>,
    extra: &str,
) -> String {
    let quota = tenant_quota
        .map(|q| format!("quota_bytes = {q}\n"))
        .unwrap_or_default();
    let table = s3.datastore_table(server.data_dir(), &s3.bucket, prefix);
    format!("[[tenant]]\nid = \"t1\"\n{quota}\n[[datastore]]\nname = \"store1\"\ntenant = \"t1\"\n{extra}{table}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pve_status_s3_datastore_reports_stored_bytes_and_limits() {
    let s3 = s3_env();
    let prefix = unique_prefix("pve-status");
    let mut server = s3_server(&s3, &prefix, None, "").await;
    let client = server.admin_client().await.unwrap();
    let store = server.store().to_string();
    let (total, used, avail, s) = status(&client, &store).await;
    assert_eq!((total, used, avail), (0, 0, 0), "{s}");
    assert_eq!(s["backend-type"], "s3");

    some_backup(&client, &store, "20").await;
    let (stored, _) = s3.chunks_below(&prefix).await;
    assert!(stored > 12 * MIB, "{stored}");
    // no quota, no capacity: what is stored, and no size to report
    let (total, used, avail, s) = status(&client, &store).await;
    assert_eq!((total, used, avail), (0, stored, 0), "{s}");

    // capacity_bytes gives the bucket a size
    let config = s3_config(
        &server,
        &s3,
        &prefix,
        None,
        &format!("capacity_bytes = {GIB}\n"),
    );
    server.set_config(&config).unwrap();
    let (_, used, avail) = wait_status(&client, &store, "the capacity", |t, _, _| t == GIB).await;
    assert_eq!((used, avail), (stored, GIB - stored));

    // the tenant's quota is tighter; it survives a restart with the same figures
    let quota = stored + 7 * MIB;
    let config = s3_config(
        &server,
        &s3,
        &prefix,
        Some(quota),
        &format!("capacity_bytes = {GIB}\n"),
    );
    server.set_config(&config).unwrap();
    wait_status(&client, &store, "the tenant quota", |t, _, a| {
        t == quota && a == 7 * MIB
    })
    .await;
    server.shutdown().await.unwrap();
    server.launch().await.unwrap();
    let client = server.admin_client().await.unwrap();
    let (total, used, avail, s) = status(&client, &store).await;
    assert_eq!((total, used, avail), (quota, stored, 7 * MIB), "{s}");

    // and the PVE user of the tenant reads the same numbers
    drop(client);
    server.stop().await;
    server
        .manage(&["user", "add", PVE_USER], &format!("{PVE_PASSWORD}\n"))
        .unwrap();
    server
        .manage(
            &[
                "acl",
                "add",
                "/datastore/store1",
                PVE_USER,
                "DatastoreBackup",
            ],
            "",
        )
        .unwrap();
    server.launch().await.unwrap();
    let pve_client = server.client().await.unwrap();
    pve_client.login(PVE_USER, PVE_PASSWORD).await.unwrap();
    wait_status(&pve_client, &store, "the same figures", |t, u, a| {
        (t, u, a) == (quota, stored, 7 * MIB)
    })
    .await;
}
