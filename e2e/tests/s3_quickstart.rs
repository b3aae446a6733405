//! The seed's quick start on S3: with `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`,
//! `PBS_CLOUD_BUCKET`, `PBS_CLOUD_ENDPOINT` and `PBS_CLOUD_PREFIX` in the environment, a
//! zero-config server keeps its default datastore in that bucket; the seed's `[storage]`
//! config example works too; a missing bucket stops the start with a clear error.
//!
//! One test function: it changes the process environment, which the spawned servers inherit.

mod common;

use common::*;
use pbs_cloud_e2e::{Crypt, TestServer};
use pbs_cloud_server::backend::Backend;

/// Every key below `prefix/` in the test bucket, relative to the prefix.
async fn keys_under(s3: &S3Env, prefix: &str) -> Vec<String> {
    let below = s3.backend(&s3.bucket, prefix).await;
    let listed = below.list("", None).await.unwrap();
    listed.objects.into_iter().map(|o| o.key).collect()
}

async fn one_backup(server: &TestServer, id: &str) {
    let client = server.admin_client().await.unwrap();
    let conf = b"quick start\n".to_vec();
    let content = Content {
        tree: None,
        image: None,
        conf: Some(&conf),
    };
    backup(&client, server.store(), None, id, T0, Crypt::None, &content)
        .await
        .unwrap();
    assert_eq!(snapshots(&client, server.store(), None, id).await.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn env_quick_start_and_seed_storage_section_use_the_bucket() {
    let s3 = s3_env();
    let (endpoint, bucket) = (s3.endpoint.clone(), s3.bucket.clone());
    let tag = hex::encode(rand::random::<[u8; 6]>());
    std::env::set_var("AWS_ACCESS_KEY_ID", &s3.access_key);
    std::env::set_var("AWS_SECRET_ACCESS_KEY", &s3.secret_key);
    std::env::set_var("AWS_REGION", "us-east-1");

    // 1. Zero-config start with the environment quick start.
    let prefix = format!("t/quick-{tag}");
    std::env::set_var("PBS_CLOUD_BUCKET", &bucket);
    std::env::set_var("PBS_CLOUD_ENDPOINT", &endpoint);
    std::env::set_var("PBS_CLOUD_PREFIX", &prefix);
    let server = TestServer::start().await.expect("zero-config server on S3");
    one_backup(&server, "quick").await;
    let keys = keys_under(&s3, &prefix).await;
    assert!(
        keys.iter().any(|k| k.starts_with("host/quick/")),
        "{keys:?}"
    );
    assert!(
        !server.data_dir().join("datastores").exists(),
        "no local datastore directory"
    );
    drop(server);

    // 2. A missing bucket stops the start with an error naming bucket and endpoint.
    std::env::set_var("PBS_CLOUD_BUCKET", "pbs-missing-bucket");
    let mut server = TestServer::prepare().unwrap();
    let err = server.launch().await.unwrap_err().to_string();
    assert!(err.contains("exited"), "{err}");
    for v in ["PBS_CLOUD_BUCKET", "PBS_CLOUD_ENDPOINT", "PBS_CLOUD_PREFIX"] {
        std::env::remove_var(v);
    }

    // 3. The seed's config example: listen_addr and a top-level [storage] section.
    let prefix = format!("t/seed-{tag}");
    let mut server = TestServer::prepare().unwrap();
    server
        .set_config(&format!(
            "listen_addr = \"127.0.0.1:0\"\n\n[storage]\ntype = \"s3\"\nbucket = \"{bucket}\"\n\
             region = \"us-east-1\"\nendpoint = \"{endpoint}\"\nprefix = \"{prefix}\"\n\
             path_style = true\n"
        ))
        .unwrap();
    server.launch().await.expect("server from the seed config");
    one_backup(&server, "seed").await;
    let keys = keys_under(&s3, &prefix).await;
    assert!(keys.iter().any(|k| k.starts_with("host/seed/")), "{keys:?}");
}
