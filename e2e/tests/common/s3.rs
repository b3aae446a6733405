//! The test S3 server (the Ceph RGW that `e2e/run-tests.sh` starts) as the S3 tests use it:
//! its address and keys from the environment, a datastore's `[datastore.s3]` table, unique
//! prefixes, and a backend for reading back what the server stored.

use std::path::Path;

use pbs_cloud_server::backend::s3::{ConditionalWrites, S3Credentials, S3Settings};
use pbs_cloud_server::backend::{Backend, S3Backend};

/// The test S3 server from the environment; fails (never skips) when it is not configured.
pub struct S3Env {
    pub endpoint: String,
    pub access_key: String,
    pub secret_key: String,
    pub bucket: String,
}

pub fn s3_env() -> S3Env {
    let var = |key: &str| {
        std::env::var(key)
            .ok()
            .filter(|v| !v.is_empty())
            .unwrap_or_else(|| {
                panic!(
                    "{key} is not set: S3 tests need a real S3 server. Start one with \
                     `eval \"$(e2e/s3/start-ceph-rgw.sh)\"` (e2e/run-tests.sh does this)"
                )
            })
    };
    S3Env {
        endpoint: var("PBS_TEST_S3_ENDPOINT"),
        access_key: var("PBS_TEST_S3_ACCESS_KEY"),
        secret_key: var("PBS_TEST_S3_SECRET_KEY"),
        bucket: std::env::var("PBS_TEST_S3_BUCKET").unwrap_or_else(|_| "pbs-test".into()),
    }
}

/// A prefix no other test run uses, below `t/` (every S3 test writes only below `t/`).
pub fn unique_prefix(name: &str) -> String {
    format!("t/{name}-{}", hex::encode(rand::random::<[u8; 6]>()))
}

impl S3Env {
    /// The `[datastore.s3]` table of a datastore in `bucket` under `prefix`, reached at
    /// `endpoint` (the S3 server, or a fault proxy in front of it). The secret key goes into
    /// a file in `secret_dir` (usually the server's data dir), as an operator would keep it:
    /// the config names the file, never the key.
    pub fn datastore_table_via(
        &self,
        secret_dir: &Path,
        endpoint: &str,
        bucket: &str,
        prefix: &str,
    ) -> String {
        let secret = secret_dir.join("s3-secret");
        std::fs::write(&secret, format!("{}\n", self.secret_key)).unwrap();
        format!(
            r#"
[datastore.s3]
bucket = "{bucket}"
prefix = "{prefix}"
endpoint = "{endpoint}"
region = "us-east-1"
path_style = true
access_key_id = "{ak}"
secret_access_key_file = "{secret}"
"#,
            ak = self.access_key,
            secret = secret.display(),
        )
    }

    /// [`Self::datastore_table_via`] the S3 server itself.
    pub fn datastore_table(&self, secret_dir: &Path, bucket: &str, prefix: &str) -> String {
        self.datastore_table_via(secret_dir, &self.endpoint, bucket, prefix)
    }

    /// A backend on `bucket` below `prefix` ("" for the whole bucket), for reading back what
    /// a server stored.
    pub async fn backend(&self, bucket: &str, prefix: &str) -> S3Backend {
        let mut settings = S3Settings::new(
            bucket,
            prefix,
            S3Credentials::Static {
                access_key_id: self.access_key.clone(),
                secret_access_key: self.secret_key.clone(),
            },
        );
        settings.endpoint = Some(self.endpoint.clone());
        settings.path_style = true;
        settings.conditional_writes = ConditionalWrites::On;
        S3Backend::connect(settings)
            .await
            .unwrap_or_else(|e| panic!("connect to bucket {bucket} at {prefix:?}: {e}"))
    }

    /// Every key below `prefix/` in the test bucket, with its size.
    pub async fn objects_below(&self, prefix: &str) -> Vec<(String, u64)> {
        let backend = self.backend(&self.bucket, "").await;
        let listed = backend
            .list(&format!("{prefix}/"), None)
            .await
            .unwrap_or_else(|e| panic!("list {prefix}/: {e}"));
        listed
            .objects
            .into_iter()
            .map(|o| (o.key, o.size))
            .collect()
    }

    /// (bytes, count) of the chunk objects (`.chunks/<4 hex>/<64 hex>`) under `prefix`; the
    /// server's own bookkeeping objects beside them are not stored data.
    pub async fn chunks_below(&self, prefix: &str) -> (u64, u64) {
        let chunks: Vec<u64> = self
            .objects_below(&format!("{prefix}/.chunks"))
            .await
            .into_iter()
            .filter(|(key, _)| {
                let name = key.rsplit('/').next().unwrap_or("");
                name.len() == 64 && name.bytes().all(|b| b.is_ascii_hexdigit())
            })
            .map(|(_, size)| size)
            .collect();
        (chunks.iter().sum(), chunks.len() as u64)
    }
}
