//! The S3 backend against the real S3 server started by `e2e/run-tests.sh`.

use std::sync::Arc;

use bytes::Bytes;

use super::*;
use crate::backend::{Backend, BackendError, BackendExt, PutOptions, PutOutcome};
use crate::format::sha256;

/// The backend's counters through the `Backend` trait (as the datastore status reads them).
fn counts(b: &Arc<S3Backend>) -> RequestCounts {
    let dynamic: &dyn Backend = b.as_ref();
    dynamic
        .request_counts()
        .expect("S3 backends count requests")
}

async fn backend(name: &str) -> Arc<S3Backend> {
    Arc::new(
        S3Backend::connect(test_env::settings(name))
            .await
            .expect("connect to the test S3 server"),
    )
}

#[test]
fn prefixes_are_normalised() {
    assert_eq!(normalize_prefix(""), "");
    assert_eq!(normalize_prefix("/"), "");
    assert_eq!(normalize_prefix("a/b"), "a/b/");
    assert_eq!(normalize_prefix("/a/b/"), "a/b/");
}

#[tokio::test]
async fn put_get_head_list_delete() {
    let b = backend("basic").await;
    assert!(
        b.uses_conditional_writes(),
        "Ceph RGW honours If-None-Match"
    );
    let data = Bytes::from_static(b"hello object");
    let out = b
        .put("a/b/one", data.clone(), PutOptions::default())
        .await
        .unwrap();
    assert_eq!(out, PutOutcome::Written);
    b.put("a/two", Bytes::from_static(b"2"), PutOptions::default())
        .await
        .unwrap();
    b.put("a/b/c/three", Bytes::new(), PutOptions::default())
        .await
        .unwrap();
    assert_eq!(b.get("a/b/one").await.unwrap(), data);
    let meta = b.head("a/b/one").await.unwrap().unwrap();
    assert_eq!(meta.size, data.len() as u64);
    assert!(b.head("a/missing").await.unwrap().is_none());
    assert!(b.get("a/missing").await.unwrap_err().is_not_found());

    let all = b.list("a/", None).await.unwrap();
    let keys: Vec<_> = all.objects.iter().map(|o| o.key.as_str()).collect();
    assert_eq!(keys, ["a/b/c/three", "a/b/one", "a/two"]);
    let top = b.list("a/", Some('/')).await.unwrap();
    assert_eq!(top.prefixes, ["a/b/"]);
    assert_eq!(top.objects.len(), 1);
    assert!(b.list("zzz/", None).await.unwrap().objects.is_empty());

    b.delete("a/two").await.unwrap();
    b.delete("a/two").await.unwrap(); // missing is fine
    assert_eq!(b.delete_prefix("a/b/").await.unwrap(), 2);
    assert!(b.list("", None).await.unwrap().objects.is_empty());
    for bad in ["", "/abs", "a//b", "a/../b", "./a"] {
        assert!(
            matches!(
                b.put(bad, Bytes::new(), PutOptions::default()).await,
                Err(BackendError::InvalidKey { .. })
            ),
            "{bad:?}"
        );
    }
}

#[tokio::test]
async fn only_if_absent_and_checksums() {
    let b = backend("cond").await;
    let data = Bytes::from_static(b"chunk bytes");
    let opts = PutOptions {
        if_absent: true,
        sha256: Some(sha256(&data)),
    };
    assert_eq!(
        b.put("k", data.clone(), opts.clone()).await.unwrap(),
        PutOutcome::Written
    );
    let other = Bytes::from_static(b"other bytes");
    let again = PutOptions {
        if_absent: true,
        sha256: Some(sha256(&other)),
    };
    assert_eq!(
        b.put("k", other, again).await.unwrap(),
        PutOutcome::AlreadyExists
    );
    assert_eq!(b.get("k").await.unwrap(), data, "first write kept");

    // A body that does not match its checksum is refused by the store.
    let wrong = PutOptions {
        if_absent: false,
        sha256: Some(sha256(b"something else")),
    };
    let err = b.put("bad", data.clone(), wrong).await.unwrap_err();
    assert!(
        matches!(err, BackendError::ChecksumMismatch { .. }),
        "{err}"
    );
    assert!(b.head("bad").await.unwrap().is_none());

    // Concurrent only-if-absent writers: exactly one wins.
    let mut tasks = Vec::new();
    for i in 0..8u8 {
        let b = b.clone();
        tasks.push(tokio::spawn(async move {
            let body = Bytes::from(vec![i; 100]);
            let opts = PutOptions {
                if_absent: true,
                sha256: None,
            };
            b.put("race", body, opts).await.unwrap()
        }));
    }
    let mut written = 0;
    for t in tasks {
        if t.await.unwrap() == PutOutcome::Written {
            written += 1;
        }
    }
    assert_eq!(written, 1);
    b.delete_prefix("").await.unwrap();
}

#[tokio::test]
async fn many_keys_paginate_and_delete_in_batches() {
    let b = backend("many").await;
    let mut tasks = Vec::new();
    for i in 0..1105u32 {
        let b = b.clone();
        tasks.push(tokio::spawn(async move {
            let key = format!("p/{:04x}/{i}", i % 7);
            b.put(&key, Bytes::from(i.to_string()), PutOptions::default())
                .await
                .unwrap();
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let before = counts(&b).list;
    let listed = b.list("p/", None).await.unwrap();
    assert_eq!(listed.objects.len(), 1105);
    let pages = counts(&b).list - before;
    assert!(pages >= 2, "1105 keys need two pages, got {pages}");
    let dirs = b.list("p/", Some('/')).await.unwrap();
    assert_eq!(dirs.prefixes.len(), 7);
    let before = counts(&b).post;
    assert_eq!(b.delete_prefix("p/").await.unwrap(), 1105);
    assert_eq!(counts(&b).post - before, 2, "DeleteObjects batches of 1000");
    assert!(b.list("p/", None).await.unwrap().objects.is_empty());
}

#[tokio::test]
async fn large_objects_use_multipart() {
    let b = backend("multipart").await;
    let len = MULTIPART_THRESHOLD + 3 * 1024 * 1024 + 7;
    let data: Bytes = (0..len).map(|i| (i % 251) as u8).collect::<Vec<_>>().into();
    let before = counts(&b);
    b.put("big", data.clone(), PutOptions::default())
        .await
        .unwrap();
    let sent = counts(&b).since(&before);
    assert_eq!(sent.put, 5, "5 parts of 16 MiB");
    assert_eq!(sent.post, 2, "create and complete");
    assert_eq!(sent.uploaded, len as u64);
    assert_eq!(b.head("big").await.unwrap().unwrap().size, len as u64);
    assert!(b.get("big").await.unwrap() == data);
    b.delete("big").await.unwrap();
}

#[tokio::test]
async fn missing_bucket_and_bad_credentials_are_clear_errors() {
    let mut s = test_env::settings("nobucket");
    s.bucket = "pbs-no-such-bucket".into();
    let err = S3Backend::connect(s).await.unwrap_err().to_string();
    assert!(err.contains("pbs-no-such-bucket"), "{err}");
    assert!(err.contains("does not exist"), "{err}");
    assert!(err.contains("127.0.0.1"), "names the endpoint: {err}");

    let mut s = test_env::settings("badkey");
    s.credentials = S3Credentials::Static {
        access_key_id: "nobody".into(),
        secret_access_key: "wrong".into(),
    };
    s.max_retries = 0;
    let err = S3Backend::connect(s).await.unwrap_err().to_string();
    assert!(err.contains("access denied"), "{err}");
}

#[tokio::test]
async fn request_counts_track_each_kind_and_the_bytes_moved() {
    let b = backend("counts").await;
    let before = counts(&b);
    let body = Bytes::from(vec![7u8; 1000]);
    b.put("c/one", body.clone(), PutOptions::default())
        .await
        .unwrap();
    let again = PutOptions {
        if_absent: true,
        ..PutOptions::default()
    };
    assert_eq!(
        b.put("c/one", body.clone(), again).await.unwrap(),
        PutOutcome::AlreadyExists
    );
    assert_eq!(b.get("c/one").await.unwrap().len(), 1000);
    assert!(b.head("c/one").await.unwrap().is_some());
    b.list("c/", None).await.unwrap();
    b.delete("c/one").await.unwrap();
    b.delete_many(&["c/x".to_string()]).await.unwrap();
    let sent = counts(&b).since(&before);
    assert_eq!(
        sent,
        RequestCounts {
            get: 1,
            put: 2,
            post: 1,
            head: 1,
            delete: 1,
            list: 1,
            uploaded: 2000,
            downloaded: 1000,
        }
    );
    assert_eq!(sent.total(), 7);
    let json = serde_json::to_value(sent).unwrap();
    assert_eq!(json["uploaded"], 2000);
    assert_eq!(json["post"], 1);
}

#[test]
fn local_backends_report_no_request_counts() {
    let dir = tempfile::tempdir().unwrap();
    let local = crate::backend::LocalBackend::open(dir.path()).unwrap();
    assert!(local.request_counts().is_none());
}

#[tokio::test]
async fn head_then_put_mode_and_auto_detection() {
    // "auto" probes the store at open: Ceph RGW honours If-None-Match.
    let auto = backend("cond-auto").await;
    assert!(auto.uses_conditional_writes());

    // "head-then-put": a HEAD before each only-if-absent PUT, no condition header.
    let mut s = test_env::settings("cond-head");
    s.conditional_writes = ConditionalWrites::Off;
    let b = Arc::new(S3Backend::connect(s).await.unwrap());
    assert!(!b.uses_conditional_writes());
    let opts = PutOptions {
        if_absent: true,
        sha256: None,
    };
    let before = counts(&b);
    assert_eq!(
        b.put("k", Bytes::from_static(b"first"), opts.clone())
            .await
            .unwrap(),
        PutOutcome::Written
    );
    assert_eq!(
        b.put("k", Bytes::from_static(b"second"), opts.clone())
            .await
            .unwrap(),
        PutOutcome::AlreadyExists
    );
    let sent = counts(&b).since(&before);
    assert_eq!((sent.head, sent.put), (2, 1), "{sent:?}");
    assert_eq!(b.get("k").await.unwrap(), Bytes::from_static(b"first"));

    // "if-none-match": no probe at open, no HEAD per write.
    let mut s = test_env::settings("cond-inm");
    s.conditional_writes = ConditionalWrites::On;
    let c = Arc::new(S3Backend::connect(s).await.unwrap());
    assert!(c.uses_conditional_writes());
    assert_eq!(counts(&c).put, 0, "no probe object written");
    let before = counts(&c);
    c.put("k", Bytes::from_static(b"a"), opts.clone())
        .await
        .unwrap();
    assert_eq!(
        c.put("k", Bytes::from_static(b"b"), opts).await.unwrap(),
        PutOutcome::AlreadyExists
    );
    let sent = counts(&c).since(&before);
    assert_eq!((sent.head, sent.put), (0, 2), "{sent:?}");
    b.delete_prefix("").await.unwrap();
    c.delete_prefix("").await.unwrap();
}

#[tokio::test]
async fn health_is_reported_and_healthy_after_connect() {
    let b = backend("health").await;
    let dynamic: &dyn Backend = b.as_ref();
    let health = dynamic.health().expect("S3 backends report health");
    assert!(health.healthy, "{health:?}");
    assert!(health.message.is_none());
    assert!(
        crate::backend::LocalBackend::open(tempfile::tempdir().unwrap().path())
            .unwrap()
            .health()
            .is_none()
    );
}

/// An object-store prefix is reserved for the server, data crosses the network, and retention
/// locks need the bucket's Object Lock, which the backend offers.
#[tokio::test]
async fn capabilities_of_an_object_store() {
    let b = backend("capabilities").await;
    let dynamic: &dyn Backend = b.as_ref();
    assert!(dynamic.exclusive_to_server());
    assert!(dynamic.wants_put_checksum());
    assert!(dynamic.retention_needs_object_lock());
    assert!(dynamic.object_lock().is_some());
}
