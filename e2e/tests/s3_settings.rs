//! S3 datastore settings against the test Ceph RGW (started by `e2e/run-tests.sh`): the backend
//! health seen while the server runs (revoked credentials, missing bucket) in the datastore
//! status and `/readyz`; a custom CA bundle for an endpoint with a private certificate; and
//! which SSE and storage-class headers reach the store, and SSE-KMS end to end.

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use common::*;
use http::Method;
use pbs_cloud_e2e::fault_proxy::{Fault, FaultProxy, TlsProxy};
use pbs_cloud_e2e::TestServer;
use pbs_cloud_server::backend::s3::{S3Credentials, S3Settings};
use pbs_cloud_server::backend::{Backend, PutOptions, PutOutcome, S3Backend};

fn upstream(s3: &S3Env) -> SocketAddr {
    s3.endpoint
        .trim_start_matches("http://")
        .parse()
        .expect("PBS_TEST_S3_ENDPOINT is http://IP:PORT")
}

fn settings(s3: &S3Env, endpoint: &str, name: &str) -> S3Settings {
    let mut s = S3Settings::new(
        &s3.bucket,
        &unique_prefix(name),
        S3Credentials::Static {
            access_key_id: s3.access_key.clone(),
            secret_access_key: s3.secret_key.clone(),
        },
    );
    s.endpoint = Some(endpoint.to_string());
    s.path_style = true;
    s.max_retries = 1;
    s.request_timeout = Duration::from_secs(10);
    s
}

/// Poll `f` for up to 20 s.
async fn wait_for(what: &str, mut f: impl FnMut() -> bool) {
    for _ in 0..200 {
        if f() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("timed out waiting for: {what}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backend_health_follows_revoked_credentials_and_a_missing_bucket() {
    let s3 = s3_env();
    let proxy = FaultProxy::start(upstream(&s3)).await.unwrap();
    let mut s = settings(&s3, &proxy.endpoint(), "health");
    s.health_interval = Duration::from_secs(1);
    let backend = S3Backend::connect(s)
        .await
        .expect("connect through the proxy");
    let health = || backend.health().expect("S3 backends report health");
    assert!(health().healthy, "{:?}", health());

    // The key is revoked while the server runs, with no request in flight: the probe sees it.
    proxy.set(Fault::S3Error(403, "InvalidAccessKeyId"));
    wait_for("probe marks the store unhealthy", || !health().healthy).await;
    let report = health();
    let message = report.message.clone().unwrap();
    for part in [
        "InvalidAccessKeyId",
        "HTTP 403",
        &format!("'{}'", s3.bucket),
        &proxy.endpoint(),
    ] {
        assert!(message.contains(part), "{part:?} missing in: {message}");
    }
    assert!(report.since.is_some() && report.last_check.is_some());
    // A request fails with the same clear reason.
    let err = backend
        .put("x", Bytes::from_static(b"x"), PutOptions::default())
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("InvalidAccessKeyId"), "{err}");

    // The key works again: the next probe clears the state.
    proxy.set(Fault::Pass);
    wait_for("probe marks the store healthy", || health().healthy).await;
    assert!(health().message.is_none());

    // The bucket is deleted under the running server.
    proxy.set(Fault::S3Error(404, "NoSuchBucket"));
    let err = backend.get("x").await.unwrap_err();
    assert!(!err.is_not_found(), "a missing bucket is not a missing key");
    let message = health().message.unwrap();
    assert!(message.contains("NoSuchBucket"), "{message}");
    proxy.set(Fault::Pass);
    backend
        .put("x", Bytes::from_static(b"x"), PutOptions::default())
        .await
        .unwrap();
    assert!(health().healthy, "a successful request clears the state");
    backend.delete_prefix("").await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_and_readyz_show_a_store_that_stopped_answering() {
    let s3 = s3_env();
    let proxy = Arc::new(FaultProxy::start(upstream(&s3)).await.unwrap());
    let mut server = TestServer::prepare().unwrap();
    let table = s3.datastore_table_via(
        server.data_dir(),
        &proxy.endpoint(),
        &s3.bucket,
        &unique_prefix("e2e-health"),
    );
    let config = format!(
        "[[datastore]]\nname = \"store1\"\n{table}max_retries = 1\nhealth_check_secs = 1\n"
    );
    server.set_config(&config).unwrap();
    server.launch().await.expect("server with an S3 datastore");
    let client = server.admin_client().await.unwrap();
    let status = client
        .get("admin/datastore/store1/status", None)
        .await
        .unwrap();
    assert_eq!(status["backend-health"]["healthy"], true, "{status}");
    let ready = client
        .raw(Method::GET, "/readyz", None, Vec::new(), &[], false)
        .await
        .unwrap();
    assert_eq!(ready.status, 200);

    proxy.set(Fault::S3Error(403, "InvalidAccessKeyId"));
    let mut last = serde_json::Value::Null;
    for _ in 0..100 {
        last = client
            .get("admin/datastore/store1/status", None)
            .await
            .unwrap();
        if last["backend-health"]["healthy"] == false {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let message = last["backend-health"]["message"]
        .as_str()
        .unwrap_or_else(|| panic!("no unhealthy state in status: {last}"));
    assert!(message.contains("InvalidAccessKeyId"), "{message}");
    assert!(message.contains(&s3.bucket), "{message}");
    // A probe without credentials learns only that the server is not ready: no datastore
    // name, bucket, endpoint or error chain.
    let ready = client
        .raw(Method::GET, "/readyz", None, Vec::new(), &[], false)
        .await
        .unwrap();
    let body = String::from_utf8_lossy(&ready.body);
    assert_eq!(ready.status, 503, "{body}");
    assert_eq!(body, "not ready\n");
    // With credentials: which datastore and why.
    let ready = client
        .raw(Method::GET, "/readyz", None, Vec::new(), &[], true)
        .await
        .unwrap();
    let body = String::from_utf8_lossy(&ready.body);
    assert_eq!(ready.status, 503, "{body}");
    assert!(body.contains("InvalidAccessKeyId"), "{body}");
    assert!(body.contains("store1"), "{body}");
    assert!(body.contains(&s3.bucket), "{body}");

    // Repaired: the next probe (1 s) makes the store ready again.
    proxy.set(Fault::Pass);
    let mut status = 0;
    for _ in 0..100 {
        status = client
            .raw(Method::GET, "/readyz", None, Vec::new(), &[], false)
            .await
            .unwrap()
            .status;
        if status == 200 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(status, 200, "ready again after the repair");
    let status = client
        .get("admin/datastore/store1/status", None)
        .await
        .unwrap();
    assert_eq!(status["backend-health"]["healthy"], true, "{status}");
}

/// A private CA and a server certificate for 127.0.0.1 signed by it.
fn private_ca() -> (
    String,
    Vec<rustls::pki_types::CertificateDer<'static>>,
    rustls::pki_types::PrivateKeyDer<'static>,
) {
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "pbs-cloud test CA");
    let ca_cert = ca_params.self_signed(&ca_key).unwrap();
    let issuer = rcgen::Issuer::new(ca_params, ca_key);
    let leaf_key = rcgen::KeyPair::generate().unwrap();
    let leaf = rcgen::CertificateParams::new(vec!["127.0.0.1".to_string()])
        .unwrap()
        .signed_by(&leaf_key, &issuer)
        .unwrap();
    let key = rustls::pki_types::PrivateKeyDer::Pkcs8(rustls::pki_types::PrivatePkcs8KeyDer::from(
        leaf_key.serialize_der(),
    ));
    (
        ca_cert.pem(),
        vec![leaf.der().clone(), ca_cert.der().clone()],
        key,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ca_bundle_makes_a_private_certificate_trusted() {
    let s3 = s3_env();
    let (ca_pem, chain, key) = private_ca();
    let tls = TlsProxy::start(upstream(&s3), chain, key).await.unwrap();

    // Without the bundle the endpoint's certificate is refused, and the error says so.
    let mut plain = settings(&s3, &tls.endpoint(), "ca-none");
    plain.max_retries = 0;
    let err = S3Backend::connect(plain).await.unwrap_err().to_string();
    let lower = err.to_lowercase();
    assert!(
        lower.contains("certificate") || lower.contains("unknownissuer"),
        "no certificate error: {err}"
    );
    assert!(err.contains(&tls.endpoint()), "names the endpoint: {err}");

    // With it, the datastore works through TLS.
    let mut trusted = settings(&s3, &tls.endpoint(), "ca-bundle");
    trusted.ca_bundle_pem = Some(ca_pem.into_bytes());
    let backend = S3Backend::connect(trusted)
        .await
        .expect("connect with the CA bundle");
    let data = Bytes::from_static(b"over tls");
    backend
        .put("k", data.clone(), PutOptions::default())
        .await
        .unwrap();
    assert_eq!(backend.get("k").await.unwrap(), data);
    backend.delete_prefix("").await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn storage_class_and_sse_headers_reach_the_store() {
    let s3 = s3_env();
    let proxy = FaultProxy::start(upstream(&s3)).await.unwrap();

    // Storage class: the header reaches the store. This RGW has only the STANDARD class
    // configured: STANDARD works end to end, STANDARD_IA is refused with a clear error.
    for (class, accepted) in [("STANDARD", true), ("STANDARD_IA", false)] {
        let mut s = settings(&s3, &proxy.endpoint(), "class");
        s.storage_class = Some(class.into());
        let backend = S3Backend::connect(s).await.unwrap();
        proxy.record();
        let data = Bytes::from_static(b"classy");
        let result = backend.put("k", data.clone(), PutOptions::default()).await;
        let sent = proxy.recorded().to_lowercase();
        assert!(
            sent.contains(&format!("x-amz-storage-class: {}", class.to_lowercase())),
            "storage class header not sent: {sent}"
        );
        if accepted {
            result.unwrap();
            assert_eq!(backend.get("k").await.unwrap(), data);
        } else {
            let err = result.unwrap_err().to_string();
            assert!(err.contains("InvalidArgument (HTTP 400)"), "{err}");
            assert!(err.contains("s3://"), "names the object: {err}");
        }
        backend.delete_prefix("").await.unwrap();
    }

    // SSE-KMS end to end: `start-ceph-rgw.sh` gives RGW its built-in test key store with one
    // key (PBS_TEST_S3_KMS_KEY_ID). A chunk-style put (only-if-absent, with its checksum) and
    // a plain put are stored encrypted under that key: the store says so in its answers to
    // the PUT and to the GET, and the bytes read back are the bytes written.
    let key_id = std::env::var("PBS_TEST_S3_KMS_KEY_ID").unwrap_or_else(|_| {
        panic!(
            "PBS_TEST_S3_KMS_KEY_ID is not set: start the test S3 server with \
             `eval \"$(e2e/s3/start-ceph-rgw.sh)\"`, which configures its test key store"
        )
    });
    let mut s = settings(&s3, &proxy.endpoint(), "sse-kms");
    s.sse = Some("aws:kms".into());
    s.sse_kms_key_id = Some(key_id.clone());
    let backend = S3Backend::connect(s).await.unwrap();
    let data = Bytes::from_static(b"secret chunk bytes");
    let chunk_put = PutOptions {
        if_absent: true,
        sha256: Some(pbs_cloud_server::format::sha256(&data)),
    };
    proxy.record();
    assert_eq!(
        backend
            .put("c", data.clone(), chunk_put.clone())
            .await
            .unwrap(),
        PutOutcome::Written
    );
    backend
        .put("p", data.clone(), PutOptions::default())
        .await
        .unwrap();
    assert_eq!(backend.get("c").await.unwrap(), data);
    assert_eq!(backend.get("p").await.unwrap(), data);
    let sent = proxy.recorded().to_lowercase();
    assert_eq!(
        sent.matches("x-amz-server-side-encryption: aws:kms")
            .count(),
        2,
        "both puts ask for SSE-KMS: {sent}"
    );
    let answers = proxy.recorded_responses().to_lowercase();
    let kms_answer = format!(
        "x-amz-server-side-encryption-aws-kms-key-id: {}",
        key_id.to_lowercase()
    );
    assert!(
        answers
            .matches("x-amz-server-side-encryption: aws:kms")
            .count()
            >= 4
            && answers.matches(&kms_answer).count() >= 4,
        "the store confirms SSE-KMS with our key for 2 puts and 2 gets: {answers}"
    );
    assert_eq!(
        backend.put("c", data.clone(), chunk_put).await.unwrap(),
        PutOutcome::AlreadyExists,
        "only-if-absent still works on encrypted objects"
    );
    backend.delete_prefix("").await.unwrap();

    // A key the store does not know (refused by the store), and SSE-S3 (`AES256`), which
    // this Ceph 16.2 has no key backend for: it answers 200 and stores the object in the
    // clear, without the SSE header in its answer. Both must end in a clear error naming the
    // object, never in an unencrypted object.
    for (mode, kms) in [("AES256", None), ("aws:kms", Some("no-such-key"))] {
        let mut s = settings(&s3, &proxy.endpoint(), "sse");
        s.sse = Some(mode.into());
        s.sse_kms_key_id = kms.map(str::to_string);
        let backend = S3Backend::connect(s).await.unwrap();
        proxy.record();
        let result = backend
            .put("k", Bytes::from_static(b"secret"), PutOptions::default())
            .await;
        let sent = proxy.recorded().to_lowercase();
        assert!(
            sent.contains(&format!(
                "x-amz-server-side-encryption: {}",
                mode.to_lowercase()
            )),
            "SSE header not sent: {sent}"
        );
        if let Some(kms) = kms {
            assert!(
                sent.contains(&format!(
                    "x-amz-server-side-encryption-aws-kms-key-id: {kms}"
                )),
                "KMS key id not sent: {sent}"
            );
        }
        let err = result
            .expect_err("the store must refuse this encryption request")
            .to_string();
        match kms {
            Some(_) => assert!(err.contains("(HTTP 403)"), "{err}"),
            None => assert!(
                err.contains("ServerSideEncryptionNotApplied")
                    && err.contains("reports no encryption")
                    && err.contains("deleted again"),
                "{err}"
            ),
        }
        assert!(err.contains("s3://"), "names the object: {err}");
        assert!(backend.head("k").await.unwrap().is_none(), "nothing stored");
        backend.delete_prefix("").await.unwrap();
    }
}

/// A store that answers `200` at once but sends the body only when it is done, longer than the
/// SDK's default stalled-stream grace period (5 s) later, as RGW does for a DeleteObjects of
/// 1000 keys in a bucket of a million objects: the request must wait for the body up to
/// `request_timeout` instead of failing with "minimum throughput ... 0 B/s" (found by the
/// 1M-chunk GC benchmark, whose sweep failed that way).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_that_sends_its_answer_late_is_waited_for() {
    let s3 = s3_env();
    let proxy = FaultProxy::start(upstream(&s3)).await.unwrap();
    let mut s = settings(&s3, &proxy.endpoint(), "slow");
    // Retries only cover the pooled connections the proxy cuts when its mode changes; a late
    // body would fail every attempt alike.
    s.max_retries = 2;
    s.request_timeout = Duration::from_secs(30);
    let backend = S3Backend::connect(s).await.unwrap();
    let keys: Vec<String> = (0..3).map(|i| format!("k{i}")).collect();
    for k in &keys {
        backend
            .put(k, Bytes::from_static(b"slow"), PutOptions::default())
            .await
            .unwrap();
    }
    proxy.set(Fault::Slow(Duration::from_secs(8)));
    let started = std::time::Instant::now();
    backend
        .delete_many(&keys)
        .await
        .expect("a DeleteObjects answered after 8 s is not an error");
    assert!(
        started.elapsed() >= Duration::from_secs(8),
        "the proxy delayed the answer"
    );
    // A body-less answer (PutObject) and a GET whose body comes late.
    backend
        .put("late", Bytes::from_static(b"late"), PutOptions::default())
        .await
        .expect("a slow PutObject is not an error");
    assert_eq!(
        backend.get("late").await.unwrap(),
        Bytes::from_static(b"late")
    );
    proxy.set(Fault::Pass);
    for k in &keys {
        assert!(backend.head(k).await.unwrap().is_none(), "{k} deleted");
    }
    assert!(backend.head("late").await.unwrap().is_some());
    backend.delete_prefix("").await.unwrap();
}
