//! Test access to the real S3 server that `e2e/run-tests.sh` starts (Ceph RGW). S3 tests fail,
//! never skip, when it is not configured.

use super::{ConditionalWrites, S3Credentials, S3Settings};

/// Settings for the test bucket under a fresh `t/<name>-<random>/` prefix. Every S3 test uses
/// a prefix under `t/`, so a test can check that nothing was written elsewhere in the bucket.
pub(crate) fn settings(name: &str) -> S3Settings {
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
    let endpoint = var("PBS_TEST_S3_ENDPOINT");
    let credentials = S3Credentials::Static {
        access_key_id: var("PBS_TEST_S3_ACCESS_KEY"),
        secret_access_key: var("PBS_TEST_S3_SECRET_KEY"),
    };
    let bucket = std::env::var("PBS_TEST_S3_BUCKET").unwrap_or_else(|_| "pbs-test".into());
    let prefix = format!("t/{name}-{}", hex::encode(rand::random::<[u8; 6]>()));
    let mut s = S3Settings::new(&bucket, &prefix, credentials);
    s.endpoint = Some(endpoint);
    s.path_style = true;
    s.max_retries = 3;
    s.conditional_writes = ConditionalWrites::Auto;
    s
}
