//! Ceph RGW for the tests that need S3 (`e2e/s3/start-ceph-rgw.sh` prints the environment).

use aws_sdk_s3::config::{BehaviorVersion, Credentials, Region};
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::ChecksumAlgorithm;
use pbs_cloud_operator::purge::{self, PurgeTarget};

pub struct S3Env {
    pub endpoint: String,
    pub access: String,
    pub secret: String,
    pub bucket: String,
    pub lock_bucket: String,
}

pub fn s3_env() -> S3Env {
    let var = |k: &str| {
        std::env::var(k).unwrap_or_else(|_| {
            panic!(
                "{k} is not set: start Ceph RGW with `eval \"$(bash e2e/s3/start-ceph-rgw.sh)\"` \
                 (it prints the PBS_TEST_S3_* variables) and run the test in that shell"
            )
        })
    };
    S3Env {
        endpoint: var("PBS_TEST_S3_ENDPOINT"),
        access: var("PBS_TEST_S3_ACCESS_KEY"),
        secret: var("PBS_TEST_S3_SECRET_KEY"),
        bucket: var("PBS_TEST_S3_BUCKET"),
        lock_bucket: var("PBS_TEST_S3_LOCK_BUCKET"),
    }
}

pub fn s3_client(e: &S3Env) -> aws_sdk_s3::Client {
    let conf = aws_sdk_s3::config::Builder::new()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new("us-east-1"))
        .credentials_provider(Credentials::new(&e.access, &e.secret, None, None, "test"))
        .endpoint_url(&e.endpoint)
        .force_path_style(true)
        .http_client(aws_smithy_http_client::Builder::new().build_http())
        .build();
    aws_sdk_s3::Client::from_conf(conf)
}

pub async fn put(c: &aws_sdk_s3::Client, bucket: &str, key: &str) {
    c.put_object()
        .bucket(bucket)
        .key(key)
        .body(ByteStream::from_static(b"backup data"))
        .checksum_algorithm(ChecksumAlgorithm::Sha256)
        .send()
        .await
        .unwrap_or_else(|e| {
            panic!(
                "PUT s3://{bucket}/{key}: {}",
                aws_sdk_s3::error::DisplayErrorContext(&e)
            )
        });
}

pub fn target(e: &S3Env, bucket: &str, prefix: &str) -> PurgeTarget {
    PurgeTarget {
        bucket: bucket.into(),
        prefix: prefix.into(),
        exclude: Vec::new(),
        endpoint: Some(e.endpoint.clone()),
        region: None,
        path_style: true,
        keys: Some((e.access.clone(), e.secret.clone())),
        ca_bundle_pem: None,
        page_size: None,
    }
}

pub async fn count(e: &S3Env, bucket: &str, prefix: &str) -> usize {
    purge::count(&target(e, bucket, prefix))
        .await
        .unwrap_or_else(|err| panic!("{err}"))
}
