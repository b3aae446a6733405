use std::os::unix::fs::PermissionsExt;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;

use super::*;
use crate::backend::BackendExt;

fn backend() -> (tempfile::TempDir, LocalBackend) {
    let dir = tempfile::tempdir().expect("tempdir");
    let be = LocalBackend::open(&dir.path().join("store")).expect("open");
    (dir, be)
}

async fn put(be: &LocalBackend, key: &str, data: &'static [u8]) -> PutOutcome {
    be.put(key, Bytes::from_static(data), PutOptions::default())
        .await
        .expect("put")
}

#[tokio::test]
async fn put_get_head_and_permissions() {
    let (_d, be) = backend();
    assert_eq!(put(&be, "a/b/c.blob", b"hello").await, PutOutcome::Written);
    assert_eq!(
        be.get("a/b/c.blob").await.unwrap(),
        Bytes::from_static(b"hello")
    );
    let meta = be.head("a/b/c.blob").await.unwrap().expect("exists");
    assert_eq!(meta.size, 5);
    assert_eq!(meta.key, "a/b/c.blob");
    assert!(
        be.head("a/b").await.unwrap().is_none(),
        "a directory is no object"
    );
    assert!(be.get("a/missing").await.unwrap_err().is_not_found());

    let root_mode = std::fs::metadata(be.root()).unwrap().permissions().mode();
    assert_eq!(root_mode & 0o777, 0o700);
    let dir_mode = std::fs::metadata(be.root().join("a/b"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(dir_mode & 0o777, 0o700);
    let file_mode = std::fs::metadata(be.root().join("a/b/c.blob"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(file_mode & 0o777, 0o600);

    // Overwrite replaces.
    put(&be, "a/b/c.blob", b"world!").await;
    assert_eq!(
        be.get("a/b/c.blob").await.unwrap(),
        Bytes::from_static(b"world!")
    );
}

#[tokio::test]
async fn if_absent_is_exclusive() {
    let (_d, be) = backend();
    let opts = PutOptions {
        if_absent: true,
        sha256: None,
    };
    let first = be
        .put("k", Bytes::from_static(b"1"), opts.clone())
        .await
        .unwrap();
    let second = be
        .put("k", Bytes::from_static(b"2"), opts.clone())
        .await
        .unwrap();
    assert_eq!(first, PutOutcome::Written);
    assert_eq!(second, PutOutcome::AlreadyExists);
    assert_eq!(be.get("k").await.unwrap(), Bytes::from_static(b"1"));

    // Many concurrent writers: exactly one wins, and no temp files are left behind.
    let be = Arc::new(be);
    let mut tasks = Vec::new();
    for i in 0..16u8 {
        let be = be.clone();
        let opts = opts.clone();
        tasks.push(tokio::spawn(async move {
            be.put("race/x", Bytes::from(vec![i]), opts).await.unwrap()
        }));
    }
    let mut written = 0;
    for t in tasks {
        if t.await.unwrap() == PutOutcome::Written {
            written += 1;
        }
    }
    assert_eq!(written, 1);
    let names: Vec<_> = std::fs::read_dir(be.root().join("race"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names.len(), 1, "left-over temp files: {names:?}");
}

#[tokio::test]
async fn checksum_is_checked() {
    let (_d, be) = backend();
    let good = PutOptions {
        if_absent: false,
        sha256: Some(crate::format::sha256(b"data")),
    };
    be.put("x", Bytes::from_static(b"data"), good.clone())
        .await
        .unwrap();
    let err = be
        .put("y", Bytes::from_static(b"other"), good)
        .await
        .unwrap_err();
    assert!(
        matches!(err, BackendError::ChecksumMismatch { .. }),
        "{err}"
    );
    assert!(be.head("y").await.unwrap().is_none());
}

#[tokio::test]
async fn invalid_keys_are_rejected() {
    let (_d, be) = backend();
    for key in [
        "",
        "/abs",
        "a//b",
        "a/../b",
        "..",
        "./a",
        "a/.",
        "a\\b",
        "a\0b",
        "a/",
        ".pbs-cloud-tmp.x",
    ] {
        let err = be
            .put(key, Bytes::from_static(b"x"), PutOptions::default())
            .await
            .unwrap_err();
        assert!(
            matches!(err, BackendError::InvalidKey { .. }),
            "{key:?}: {err}"
        );
        assert!(be.get(key).await.is_err(), "{key:?}");
        assert!(be.delete(key).await.is_err(), "{key:?}");
    }
    assert!(be.list("../", None).await.is_err());
    assert!(be.list("/etc/", None).await.is_err());
}

#[tokio::test]
async fn list_with_and_without_delimiter() {
    let (_d, be) = backend();
    for key in ["a/1", "a/2", "a/sub/3", "b/4", "top", ".hidden/x"] {
        put(&be, key, b"v").await;
    }
    let all = be.list("", None).await.unwrap();
    let keys: Vec<_> = all.objects.iter().map(|o| o.key.as_str()).collect();
    assert_eq!(keys, [".hidden/x", "a/1", "a/2", "a/sub/3", "b/4", "top"]);
    assert!(all.prefixes.is_empty());

    let top = be.list("", Some('/')).await.unwrap();
    let keys: Vec<_> = top.objects.iter().map(|o| o.key.as_str()).collect();
    assert_eq!(keys, ["top"]);
    assert_eq!(top.prefixes, [".hidden/", "a/", "b/"]);

    let a = be.list("a/", Some('/')).await.unwrap();
    let keys: Vec<_> = a.objects.iter().map(|o| o.key.as_str()).collect();
    assert_eq!(keys, ["a/1", "a/2"]);
    assert_eq!(a.prefixes, ["a/sub/"]);

    // Partial name prefix.
    let partial = be.list("a/s", None).await.unwrap();
    let keys: Vec<_> = partial.objects.iter().map(|o| o.key.as_str()).collect();
    assert_eq!(keys, ["a/sub/3"]);

    // Missing prefixes list empty.
    let none = be.list("zzz/", None).await.unwrap();
    assert!(none.objects.is_empty() && none.prefixes.is_empty());
    let none = be.list("top/x/", None).await.unwrap();
    assert!(none.objects.is_empty());
    assert!(be.list("", Some(',')).await.is_err());
}

#[tokio::test]
async fn delete_prunes_empty_dirs_but_keeps_namespaces_and_root() {
    let (_d, be) = backend();
    put(&be, "ns/a/.namespace", b"").await;
    put(&be, "ns/a/vm/100/2020-01-01T00:00:00Z/x.blob", b"v").await;
    put(&be, "only/deep/file", b"v").await;

    be.delete("ns/a/vm/100/2020-01-01T00:00:00Z/x.blob")
        .await
        .unwrap();
    assert!(!be.root().join("ns/a/vm").exists());
    assert!(be.root().join("ns/a").exists(), "namespace dir kept");

    be.delete("only/deep/file").await.unwrap();
    assert!(!be.root().join("only").exists());
    assert!(be.root().exists());

    // Deleting a missing key is fine.
    be.delete("nothing/here").await.unwrap();
    be.delete_many(&["ns/a/.namespace".to_string(), "gone".to_string()])
        .await
        .unwrap();
    assert!(!be.root().join("ns").exists());
    assert!(be.root().exists());
}

#[tokio::test]
async fn delete_prefix_removes_everything_below() {
    let (_d, be) = backend();
    for key in ["g/1/a", "g/1/b", "g/2/c", "h/keep"] {
        put(&be, key, b"v").await;
    }
    std::fs::create_dir_all(be.root().join("g/empty/deeper")).unwrap();
    assert_eq!(be.delete_prefix("g/").await.unwrap(), 3);
    assert!(!be.root().join("g").exists());
    assert_eq!(be.list("", None).await.unwrap().objects.len(), 1);
    assert_eq!(be.delete_prefix("nothing/").await.unwrap(), 0);
}

#[tokio::test]
async fn touch_refreshes_modified_time() {
    let (_d, be) = backend();
    put(&be, "c", b"v").await;
    let old = SystemTime::now() - Duration::from_secs(3600);
    let f = std::fs::File::open(be.root().join("c")).unwrap();
    f.set_times(std::fs::FileTimes::new().set_modified(old))
        .unwrap();
    let before = be.head("c").await.unwrap().unwrap().modified;
    assert!(before <= old + Duration::from_secs(1));
    be.touch("c").await.unwrap();
    let after = be.head("c").await.unwrap().unwrap().modified;
    assert!(after > old + Duration::from_secs(3000));
    assert!(be.touch("missing").await.unwrap_err().is_not_found());
}

#[tokio::test]
async fn capacity_reports_sizes() {
    let (_d, be) = backend();
    let cap = be.capacity().await.unwrap().expect("local capacity");
    assert!(cap.total > 0);
    assert!(cap.avail <= cap.total);
    assert!(cap.used <= cap.total);
    assert_eq!(be.kind(), "filesystem");
}

thread_local! {
    /// Directories fsynced on this thread (see `fsync_dir`).
    static SYNCED: std::cell::RefCell<Vec<std::path::PathBuf>> =
        const { std::cell::RefCell::new(Vec::new()) };
}

pub(super) fn note_dir_sync(dir: &Path) {
    SYNCED.with(|s| s.borrow_mut().push(dir.to_path_buf()));
}

fn take_synced() -> Vec<std::path::PathBuf> {
    SYNCED.with(|s| std::mem::take(&mut *s.borrow_mut()))
}

#[test]
fn new_directories_are_synced_into_their_parents() {
    let (_d, be) = backend();
    let root = be.root().to_path_buf();
    take_synced();
    // A new group and snapshot directory: each new directory's parent is synced, then the
    // directory holding the file.
    put_blocking(
        &root,
        "vm/100/2026-01-01T00:00:00Z/index.json.blob",
        b"m",
        &PutOptions::default(),
    )
    .unwrap();
    assert_eq!(
        take_synced(),
        [
            root.clone(),
            root.join("vm"),
            root.join("vm/100"),
            root.join("vm/100/2026-01-01T00:00:00Z"),
        ]
    );
    // A second file in the existing snapshot syncs only its directory.
    put_blocking(
        &root,
        "vm/100/2026-01-01T00:00:00Z/a.blob",
        b"a",
        &PutOptions::default(),
    )
    .unwrap();
    assert_eq!(take_synced(), [root.join("vm/100/2026-01-01T00:00:00Z")]);
    // A new snapshot of the same group: the group directory is synced for it.
    put_blocking(
        &root,
        "vm/100/2026-01-02T00:00:00Z/a.blob",
        b"a",
        &PutOptions::default(),
    )
    .unwrap();
    assert_eq!(
        take_synced(),
        [
            root.join("vm/100"),
            root.join("vm/100/2026-01-02T00:00:00Z"),
        ]
    );
}

#[tokio::test]
async fn temp_files_older_than_the_start_are_removed() {
    let (_d, be) = backend();
    put(&be, ".chunks/abcd/abcd00", b"chunk").await;
    let dir = be.root().join(".chunks/abcd");
    let stale = dir.join(format!("{TMP_PREFIX}crashed"));
    let deep = be.root().join(format!("vm/1/{TMP_PREFIX}x"));
    std::fs::create_dir_all(deep.parent().unwrap()).unwrap();
    for path in [&stale, &deep] {
        std::fs::write(path, b"half written").unwrap();
        let file = std::fs::File::options().write(true).open(path).unwrap();
        file.set_modified(SystemTime::now() - Duration::from_secs(60))
            .unwrap();
    }
    let start = SystemTime::now() - Duration::from_secs(1);
    // A temp file of a write in progress (newer than the start) stays.
    let busy = dir.join(format!("{TMP_PREFIX}in-progress"));
    std::fs::write(&busy, b"being written").unwrap();
    assert_eq!(be.remove_stale_temp_files(start).await.unwrap(), 2);
    assert!(!stale.exists() && !deep.exists());
    assert!(busy.exists());
    assert!(be.root().join(".chunks/abcd/abcd00").exists());
}

/// A local directory may be changed outside the server, gains nothing from a put checksum and
/// is guarded by the server's own retention check: the datastore acts on these answers.
#[test]
fn capabilities_of_a_local_directory() {
    let (_d, be) = backend();
    let dynamic: &dyn Backend = &be;
    assert!(!dynamic.exclusive_to_server());
    assert!(!dynamic.wants_put_checksum());
    assert!(!dynamic.retention_needs_object_lock());
    assert!(dynamic.object_lock().is_none());
}
