//! The seed's quick start on S3: with `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`,
//! `PBS_CLOUD_BUCKET`, `PBS_CLOUD_ENDPOINT` and `PBS_CLOUD_PREFIX` in the environment, a
//! zero-config server keeps its default datastore in that bucket; the seed's `[storage]`
//! config example works too; a missing bucket stops the start with a clear error.
//!
//! One test function: it changes the process environment, which the spawned servers inherit.

mod common;

use common::*;
use pbs_cloud_e2e::{Crypt, TestServer};
use pbs_cloud_server::backend::s3::{ConditionalWrites, S3Credentials, S3Settings};
use pbs_cloud_server::backend::{Backend, S3Backend};

fn var(key: &str) -> String {
    std::env::var(key)
        .ok()
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| {
            panic!(
                "{key} is not set: S3 tests need a real S3 server. Start one with \
                 `eval \"$(e2e/s3/start-ceph-rgw.sh)\"` (e2e/run-tests.sh does this)"
            )
        })
}

async fn keys_under(prefix: &str) -> Vec<String> {
    let mut settings = S3Settings::new(
        &std::env::var("PBS_TEST_S3_BUCKET").unwrap_or_else(|_| "pbs-test".into()),
        prefix,
        S3Credentials::Static {
            access_key_id: var("PBS_TEST_S3_ACCESS_KEY"),
            secret_access_key: var("PBS_TEST_S3_SECRET_KEY"),
        },
    );
    settings.endpoint = Some(var("PBS_TEST_S3_ENDPOINT"));
    settings.path_style = true;
    settings.conditional_writes = ConditionalWrites::On;
    let b = S3Backend::connect(settings).await.unwrap();
    b.list("", None)
        .await
        .unwrap()
        .objects
        .into_iter()
        .map(|o| o.key)
        .collect()
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
    let endpoint = var("PBS_TEST_S3_ENDPOINT");
    let bucket = std::env::var("PBS_TEST_S3_BUCKET").unwrap_or_else(|_| "pbs-test".into());
    let tag = hex::encode(rand::random::<[u8; 6]>());
    std::env::set_var("AWS_ACCESS_KEY_ID", var("PBS_TEST_S3_ACCESS_KEY"));
    std::env::set_var("AWS_SECRET_ACCESS_KEY", var("PBS_TEST_S3_SECRET_KEY"));
    std::env::set_var("AWS_REGION", "us-east-1");

    // 1. Zero-config start with the environment quick start.
    let prefix = format!("t/quick-{tag}");
    std::env::set_var("PBS_CLOUD_BUCKET", &bucket);
    std::env::set_var("PBS_CLOUD_ENDPOINT", &endpoint);
    std::env::set_var("PBS_CLOUD_PREFIX", &prefix);
    let server = TestServer::start().await.expect("zero-config server on S3");
    one_backup(&server, "quick").await;
    let keys = keys_under(&prefix).await;
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
    let keys = keys_under(&prefix).await;
    assert!(keys.iter().any(|k| k.starts_with("host/seed/")), "{keys:?}");
}
