//! `pbs-cloud-server onboard` (issue 18): a customer's PBS (here another instance of ours)
//! brought into a stopped server's datastore, every namespace under one owner, and resumable.

mod common;

use common::sync::*;
use common::*;
use pbs_cloud_e2e::{Crypt, TestServer};
use serde_json::Value;

/// The JSON document a command printed last (its summary), after its progress lines.
fn last_json(stdout: &str) -> Value {
    let start = stdout
        .rfind("\n[")
        .map(|i| i + 1)
        .or_else(|| stdout.starts_with('[').then_some(0))
        .unwrap_or_else(|| panic!("no JSON summary in {stdout}"));
    serde_json::from_str(&stdout[start..]).unwrap_or_else(|e| panic!("{e}: {stdout}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn onboard_brings_every_namespace_under_one_owner_and_resumes() {
    let (a, a_admin) = source().await;
    create_ns(&a_admin, "prod", None).await;
    create_ns(&a_admin, "child", Some("prod")).await;
    let image = random_bytes(61, 2 * IMAGE_CHUNK);
    for (ns, id, time) in [
        (None, "root-group", T0),
        (Some("prod"), "web", T0),
        (Some("prod"), "web", T0 + 3600),
        (Some("prod/child"), "db", T0),
    ] {
        let content = Content {
            tree: None,
            image: Some(&image),
            conf: Some(id.as_bytes()),
        };
        backup(&a_admin, "store1", ns, id, time, Crypt::None, &content)
            .await
            .unwrap();
    }
    let secrets = tempfile::tempdir().unwrap();
    let secret = secrets.path().join("customer.secret");
    std::fs::write(&secret, format!("{SYNC_PASSWORD}\n")).unwrap();

    // The target runs the command while it is stopped, then serves what came over.
    let mut b = TestServer::prepare().unwrap();
    let from = format!("127.0.0.1:{}", a.port());
    let secret_path = secret.display().to_string();
    let args = [
        "onboard",
        "--from",
        &from,
        "--auth-id",
        SYNC_USER,
        "--fingerprint",
        &a.fingerprint,
        "--secret-file",
        &secret_path,
        "--owner",
        "tina@pbs",
    ];
    let first = b.manage(&args, "").expect("onboard");
    assert!(
        first.contains("onboarding datastore 'store1' of 127.0.0.1:"),
        "{first}"
    );
    let summary = last_json(&first);
    assert_eq!(summary[0]["remote-store"], "store1", "{summary}");
    assert_eq!(summary[0]["namespaces"], 3, "{summary}");
    assert_eq!(summary[0]["snapshots-pulled"], 4, "{summary}");
    assert_eq!(summary[0]["errors"], 0, "{summary}");

    // Again: nothing left to fetch.
    let again = last_json(&b.manage(&args, "").expect("onboard again"));
    assert_eq!(again[0]["chunks-pulled"], 0, "{again}");
    assert_eq!(again[0]["snapshots-pulled"], 0, "{again}");

    b.launch().await.unwrap();
    let b_admin = b.admin_client().await.unwrap();
    for (ns, id, count) in [
        (None, "root-group", 1),
        (Some("prod"), "web", 2),
        (Some("prod/child"), "db", 1),
    ] {
        let list = snapshots(&b_admin, "store1", ns, id).await;
        assert_eq!(list.len(), count, "{ns:?} {id}: {list:?}");
        assert!(list.iter().all(|s| s["owner"] == "tina@pbs"), "{list:?}");
    }
    assert_restores(&b_admin, Some("prod"), "web", T0 + 3600, None, &image).await;
}
