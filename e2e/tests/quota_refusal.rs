//! Tenant quotas on physical bytes: a backup that would pass the limit is refused with an error
//! naming tenant, usage and limit; earlier snapshots stay intact and restorable; a tenant
//! already over its limit gets no new backup; the warning shows in usage and metrics; the
//! billing webhook hears about it.

mod common;
mod meter_common;

use common::*;
use meter_common::*;
use pbs_cloud_e2e::{Crypt, TestServer};

const MIB: u64 = 1024 * 1024;

fn config(quota: u64, receiver_port: u16, secret: &std::path::Path) -> String {
    format!(
        r#"
[[tenant]]
id = "acme"
quota_bytes = {quota}
quota_warn_percent = 50

[[datastore]]
name = "store1"
tenant = "acme"

[webhook]
url = "http://127.0.0.1:{receiver_port}/billing"
secret_file = "{}"
"#,
        secret.display()
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quota_refuses_the_backup_that_would_pass_it_and_keeps_earlier_snapshots() {
    let port = free_port();
    let received = start_receiver(port).await;
    let mut server = TestServer::prepare().unwrap();
    let secret = server.data_dir().join("webhook.secret");
    std::fs::write(&secret, "quota-test-secret\n").unwrap();
    let quota = 3 * MIB / 2;
    server.set_config(&config(quota, port, &secret)).unwrap();
    server.launch().await.expect("start pbs-cloud-server");
    let client = server.admin_client().await.unwrap();

    // 1 MiB of random data fits into the 1.5 MiB quota.
    let tree = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(tree.path().join("etc")).unwrap();
    std::fs::write(tree.path().join("etc/hostname"), b"quota-host\n").unwrap();
    std::fs::write(tree.path().join("data.bin"), random_bytes(3, 100_000)).unwrap();
    let image1 = random_bytes(1, MIB as usize);
    let first = Content {
        tree: Some(tree.path()),
        image: Some(&image1),
        conf: Some(b"one\n"),
    };
    backup(&client, "store1", None, "vm1", T0, Crypt::None, &first)
        .await
        .expect("first backup within quota");
    let usage = client.get("tenants/acme/usage", None).await.unwrap();
    let used = usage["physical-bytes"].as_u64().unwrap();
    assert!(used > MIB && used < quota, "{usage}");
    assert_eq!(usage["quota-bytes"], quota);
    assert_eq!(usage["quota-warning"], true, "over 50 %: {usage}");

    // Another 1 MiB of new data would pass the limit: refused at chunk upload.
    let image2 = random_bytes(2, MIB as usize);
    let second = Content {
        tree: None,
        image: Some(&image2),
        conf: None,
    };
    let err = backup(&client, "store1", None, "vm2", T0, Crypt::None, &second)
        .await
        .expect_err("backup past the quota");
    let text = err.to_string();
    assert!(text.contains("quota exceeded for tenant 'acme'"), "{text}");
    assert!(text.contains(&format!("limit of {quota} bytes")), "{text}");
    assert!(text.contains(" bytes used"), "{text}");

    // Nothing of the refused backup is listed; the first snapshot restores byte for byte.
    assert!(snapshots(&client, "store1", None, "vm2").await.is_empty());
    assert_eq!(snapshots(&client, "store1", None, "vm1").await.len(), 1);
    let session = reader(&client, "store1", None, "vm1", T0, None)
        .await
        .unwrap();
    assert_eq!(session.restore_archive("disk.img").await.unwrap(), image1);
    assert_tree_restores(&session, tree.path()).await;

    // The receiver heard of it, signed.
    let (got, event) = wait_for_event(&received, "quota-exceeded", 30).await;
    assert_eq!(
        got.signature,
        expected_signature(b"quota-test-secret", &got.body)
    );
    assert_eq!(event["type"], "quota-exceeded");
    assert_eq!(event["tenant"], "acme");
    assert_eq!(event["store"], "store1");
    assert_eq!(event["quota-bytes"], quota);

    // Lower the quota below what is stored: no new backup starts at all.
    server.stop().await;
    server.set_config(&config(MIB, port, &secret)).unwrap();
    server.launch().await.unwrap();
    let client = server.admin_client().await.unwrap();
    let tiny = Content {
        tree: None,
        image: None,
        conf: Some(b"tiny\n"),
    };
    let err = backup(&client, "store1", None, "vm3", T0, Crypt::None, &tiny)
        .await
        .expect_err("tenant over quota");
    let text = err.to_string();
    assert!(text.contains("quota exceeded for tenant 'acme'"), "{text}");
    assert!(text.contains("new backup refused"), "{text}");
    assert_eq!(err.status(), Some(400), "{err}");

    let resp = client
        .raw(http::Method::GET, "/metrics", None, Vec::new(), &[], true)
        .await
        .unwrap();
    let metrics = parse_metrics(&resp.text());
    assert_eq!(
        metrics["pbs_cloud_tenant_quota_bytes{tenant=\"acme\"}"],
        MIB as f64
    );
    assert_eq!(
        metrics["pbs_cloud_tenant_quota_warning{tenant=\"acme\"}"],
        1.0
    );
    assert!(metrics["pbs_cloud_tenant_physical_bytes{tenant=\"acme\"}"] > MIB as f64);

    // Still restorable after all that.
    let session = reader(&client, "store1", None, "vm1", T0, None)
        .await
        .unwrap();
    assert_eq!(session.restore_archive("disk.img").await.unwrap(), image1);
}
