//! The billing webhook loses nothing while its receiver is down, not even across a server
//! crash: events wait in the data dir's outbox and arrive, signed, once the receiver is up.

mod common;
mod meter_common;

use common::*;
use meter_common::*;
use pbs_cloud_e2e::{Crypt, TestServer};
use serde_json::json;

const SECRET: &[u8] = b"billing-key-0123456789";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_survive_a_receiver_outage_and_a_restart() {
    let port = free_port();
    let mut server = TestServer::prepare().unwrap();
    let secret = server.data_dir().join("webhook.secret");
    std::fs::write(&secret, SECRET).unwrap();
    server
        .set_config(&format!(
            r#"
[[tenant]]
id = "acme"

[[datastore]]
name = "store1"
tenant = "acme"

[webhook]
url = "http://127.0.0.1:{port}/hook?source=pbs"
secret_file = "{}"
report_schedule = "hourly"
"#,
            secret.display()
        ))
        .unwrap();
    server.launch().await.expect("start pbs-cloud-server");
    let client = server.admin_client().await.unwrap();

    // Receiver down: a backup and a forget produce two events that stay queued.
    let conf = b"webhook = true\n".to_vec();
    let content = Content {
        tree: None,
        image: Some(&random_bytes(4, 200_000)),
        conf: Some(&conf),
    };
    let summary = backup(&client, "store1", None, "w1", T0, Crypt::None, &content)
        .await
        .unwrap();
    backup(&client, "store1", None, "w2", T0, Crypt::None, &content)
        .await
        .unwrap();
    client
        .delete(
            "admin/datastore/store1/snapshots",
            Some(&json!({"backup-type": "host", "backup-id": "w2", "backup-time": T0})),
        )
        .await
        .unwrap();
    let outbox = server.data_dir().join("webhook-outbox");
    let queued = || {
        std::fs::read_dir(&outbox)
            .map(|d| {
                d.flatten()
                    .filter(|e| e.path().extension().is_some_and(|x| x == "json"))
                    .count()
            })
            .unwrap_or(0)
    };
    // Let the delivery loop fail a few times.
    tokio::time::sleep(std::time::Duration::from_secs(3)).await;
    assert_eq!(
        queued(),
        3,
        "two backups and one removal wait in {}",
        outbox.display()
    );

    // A crash while the receiver is still down loses nothing.
    server.restart().await.unwrap();
    assert_eq!(queued(), 3);

    // Receiver up: everything arrives, in order, signed over the exact body.
    let received = start_receiver(port).await;
    let (finished, event) = wait_for_event(&received, "backup-finished", 60).await;
    assert_eq!(
        finished.signature,
        expected_signature(SECRET, &finished.body)
    );
    assert_eq!(event["tenant"], "acme");
    assert_eq!(event["store"], "store1");
    assert_eq!(event["snapshot"], "host/w1/2026-01-01T00:00:00Z");
    let logical: u64 = summary.manifest.files.iter().map(|f| f.size).sum();
    assert_eq!(event["logical-bytes"], logical);
    let (removed, event) = wait_for_event(&received, "snapshot-removed", 60).await;
    assert_eq!(removed.signature, expected_signature(SECRET, &removed.body));
    assert_eq!(event["snapshot"], "host/w2/2026-01-01T00:00:00Z");

    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while queued() > 0 && std::time::Instant::now() < deadline {
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(queued(), 0, "delivered events are removed from the outbox");
    let got = received.lock().unwrap().clone();
    let kinds: Vec<&str> = got.iter().map(|r| r.event.as_str()).collect();
    assert_eq!(
        kinds,
        ["backup-finished", "backup-finished", "snapshot-removed"]
    );
    let ids: Vec<String> = got
        .iter()
        .map(|r| serde_json::from_slice::<serde_json::Value>(&r.body).unwrap()["id"].to_string())
        .collect();
    let mut unique = ids.clone();
    unique.dedup();
    assert_eq!(ids.len(), unique.len(), "each event once: {ids:?}");
    // A forged body does not match the signature.
    assert_ne!(
        expected_signature(b"wrong key", &got[0].body),
        got[0].signature
    );
}
