//! Usage metering with the datastore in S3 (the Ceph RGW of `e2e/run-tests.sh`): figures equal
//! what the bucket holds, S3 requests are counted by type and kept across restarts, and a crash
//! is followed by an exact recount.

mod common;

use common::*;
use pbs_cloud_e2e::{Crypt, TestServer};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn usage_on_s3_matches_the_bucket_and_counts_requests_across_restarts() {
    let s3 = s3_env();
    let prefix = unique_prefix("meter");
    let mut server = TestServer::prepare().unwrap();
    let table = s3.datastore_table(server.data_dir(), &s3.bucket, &prefix);
    let config = format!(
        "[[tenant]]\nid = \"acme\"\n\n[[datastore]]\nname = \"store1\"\ntenant = \"acme\"\n{table}"
    );
    server.set_config(&config).unwrap();
    server.launch().await.expect("server with an S3 datastore");
    let client = server.admin_client().await.unwrap();

    let image = random_bytes(41, 9 * 1024 * 1024 + 3);
    let conf = b"s3 = true\n".to_vec();
    let content = Content {
        tree: None,
        image: Some(&image),
        conf: Some(&conf),
    };
    let summary = backup(&client, "store1", None, "s3vm", T0, Crypt::None, &content)
        .await
        .expect("backup to S3");
    let logical: u64 = summary.manifest.files.iter().map(|f| f.size).sum();

    let (bytes, count) = s3.chunks_below(&prefix).await;
    assert_eq!(count, 3, "a 9 MiB image is three fixed chunks");
    let u = client.get("tenants/acme/usage", None).await.unwrap();
    assert_eq!(u["physical-bytes"], bytes, "{u:#}");
    assert_eq!(u["chunks"], count);
    assert_eq!(u["logical-bytes"], logical);
    assert_eq!(
        (u["snapshots"].as_u64(), u["groups"].as_u64()),
        (Some(1), Some(1))
    );
    let req = &u["datastores"][0]["s3-requests"];
    assert!(
        req["put"].as_u64().unwrap() >= 4,
        "3 chunks, an index, a blob, a manifest: {req}"
    );
    assert!(req["get"].is_u64() && req["head"].is_u64() && req["list"].is_u64());

    // Crash and restart: the recount from the bucket gives the same figures.
    server.restart().await.unwrap();
    let client = server.admin_client().await.unwrap();
    let again = counted_usage(&client, "acme").await;
    for key in [
        "physical-bytes",
        "chunks",
        "logical-bytes",
        "snapshots",
        "groups",
    ] {
        assert_eq!(again[key], u[key], "{key} after restart: {again:#}");
    }

    // A clean stop persists the request counts; the next run continues from them instead of
    // starting at zero (they are billed).
    let before = client.get("tenants/acme/usage", None).await.unwrap()["datastores"][0]
        ["s3-requests"]
        .clone();
    server.shutdown().await.expect("clean shutdown on SIGTERM");
    server.launch().await.unwrap();
    let client = server.admin_client().await.unwrap();
    let after = client.get("tenants/acme/usage", None).await.unwrap()["datastores"][0]
        ["s3-requests"]
        .clone();
    for kind in ["get", "put", "post", "head", "delete", "list"] {
        let (b, a) = (before[kind].as_u64(), after[kind].as_u64());
        assert!(
            a >= b && b.is_some(),
            "{kind} requests went from {b:?} to {a:?} over a restart: {before} -> {after}"
        );
    }
    // Opening again needs at least a GET of the persisted counters and a PUT marking them
    // in use, so the new run's counts were added, not just the old ones reported.
    assert!(after["put"].as_u64() > before["put"].as_u64(), "{after}");
    assert!(after["get"].as_u64() > before["get"].as_u64(), "{after}");
}
