//! Single-file restore through the REST API (`catalog`, `pxar-file-download`) on backups the
//! test client made with real pxar archives, in legacy mode (catalog) and split mode (data and
//! metadata change detection): listings, single files, directories as ZIP and tar.zst compared
//! with the source tree, refusals (encrypted archives, missing privileges, bad paths).

mod common;

use std::collections::BTreeMap;
use std::io::Read;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use base64::Engine;
use common::{backup, random_bytes, Content, T0};
use http::Method;
use pbs_cloud_e2e::{
    BackupParams, BackupSession, Crypt, CryptConfig, PbsClient, PxarMode, TestServer, UploadOptions,
};
use serde_json::{json, Value};

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

/// A tree with nested directories, a large file, a hardlink, a symlink, a FIFO, an empty
/// directory and a file name that is not UTF-8.
fn make_tree(root: &Path) {
    std::fs::create_dir_all(root.join("etc/app")).unwrap();
    std::fs::create_dir_all(root.join("var/lib/empty")).unwrap();
    std::fs::write(root.join("etc/hostname"), b"browse-host\n").unwrap();
    std::fs::write(root.join("etc/app/config.toml"), b"x = 1\n").unwrap();
    std::fs::write(
        root.join("var/lib/big.bin"),
        random_bytes(5, 6 * 1024 * 1024 + 3),
    )
    .unwrap();
    std::fs::write(root.join("var/lib/text.log"), "line\n".repeat(50_000)).unwrap();
    std::fs::hard_link(root.join("etc/hostname"), root.join("var/hostname-link")).unwrap();
    std::os::unix::fs::symlink("../etc/hostname", root.join("var/symlink")).unwrap();
    std::fs::write(
        root.join("var")
            .join(std::ffi::OsStr::from_bytes(b"bad\xff.txt")),
        b"odd name",
    )
    .unwrap();
    nix::unistd::mkfifo(
        &root.join("var/fifo"),
        nix::sys::stat::Mode::from_bits_truncate(0o600),
    )
    .unwrap();
}

async fn start() -> (TestServer, PbsClient) {
    let mut server = TestServer::prepare().unwrap();
    server.launch().await.unwrap();
    server.stop().await;
    for (user, role) in [
        ("auditor@pbs", "DatastoreAudit"),
        ("backupper@pbs", "DatastoreBackup"),
    ] {
        server
            .manage(&["user", "add", user], "user-pass\n")
            .unwrap();
        server
            .manage(&["acl", "add", "/datastore/store1", user, role], "")
            .unwrap();
    }
    server.launch().await.unwrap();
    let client = server.admin_client().await.unwrap();
    (server, client)
}

fn snap(id: &str, time: i64) -> Value {
    json!({ "backup-type": "host", "backup-id": id, "backup-time": time })
}

fn query(params: &Value) -> String {
    let mut ser = form_urlencoded::Serializer::new(String::new());
    for (k, v) in params.as_object().unwrap() {
        let v = match v {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        ser.append_pair(k, &v);
    }
    ser.finish()
}

/// A raw GET below the datastore, answer as it came.
async fn get(client: &PbsClient, op: &str, params: &Value) -> pbs_cloud_e2e::RawResponse {
    let path = format!("/api2/json/admin/datastore/store1/{op}?{}", query(params));
    client
        .raw(Method::GET, &path, None, Vec::new(), &[], true)
        .await
        .unwrap()
}

/// `catalog` listing as (text, type, size, mtime, filepath).
async fn list(client: &PbsClient, params: Value) -> Vec<Value> {
    let r = get(client, "catalog", &params).await;
    assert_eq!(r.status, 200, "{params}: {}", r.text());
    let v: Value = serde_json::from_slice(&r.body).unwrap();
    v["data"].as_array().unwrap().clone()
}

fn with(base: &Value, extra: Value) -> Value {
    let mut v = base.clone();
    for (k, x) in extra.as_object().unwrap() {
        v[k] = x.clone();
    }
    v
}

fn find<'a>(items: &'a [Value], text: &str) -> &'a Value {
    items
        .iter()
        .find(|i| i["text"] == text)
        .unwrap_or_else(|| panic!("{text} not listed in {items:?}"))
}

fn mtime(p: &Path) -> i64 {
    use std::os::unix::fs::MetadataExt;
    std::fs::symlink_metadata(p).unwrap().mtime()
}

/// Checks one directory listing against the source directory.
fn check_listing(items: &[Value], src: &Path) {
    let mut want: Vec<Vec<u8>> = std::fs::read_dir(src)
        .unwrap()
        .map(|e| e.unwrap().file_name().as_bytes().to_vec())
        .collect();
    want.sort();
    let mut got: Vec<Vec<u8>> = items
        .iter()
        .map(|i| {
            let path = B64.decode(i["filepath"].as_str().unwrap()).unwrap();
            path.rsplit(|b| *b == b'/').next().unwrap().to_vec()
        })
        .collect();
    got.sort();
    assert_eq!(got, want, "{items:?}");
    for item in items {
        let path = B64.decode(item["filepath"].as_str().unwrap()).unwrap();
        let name = path.rsplit(|b| *b == b'/').next().unwrap();
        let p = src.join(std::ffi::OsStr::from_bytes(name));
        let m = std::fs::symlink_metadata(&p).unwrap();
        let t = item["type"].as_str().unwrap();
        let expect = if m.is_dir() {
            "d"
        } else if m.file_type().is_symlink() {
            "l"
        } else if m.is_file() {
            if item["type"] == "h" {
                "h"
            } else {
                "f"
            }
        } else {
            "p"
        };
        assert_eq!(t, expect, "{item}");
        assert_eq!(item["leaf"], t != "d");
        if t == "f" {
            assert_eq!(item["size"], m.len(), "{item}");
            assert_eq!(item["mtime"], mtime(&p), "{item}");
        } else {
            assert!(item.get("size").is_none(), "{item}");
        }
    }
}

async fn download(client: &PbsClient, params: Value) -> Vec<u8> {
    let r = get(client, "pxar-file-download", &params).await;
    assert_eq!(r.status, 200, "{params}: {}", r.text());
    assert_eq!(r.headers["content-type"], "application/octet-stream");
    assert_eq!(r.headers["transfer-encoding"], "chunked");
    assert!(r.headers.get("content-length").is_none());
    r.body.to_vec()
}

fn b64(path: &[u8]) -> String {
    B64.encode(path)
}

/// Every regular file, symlink and directory under `root` as member path → content.
fn tree_members(root: &Path, prefix: &str) -> BTreeMap<String, Option<Vec<u8>>> {
    let mut out = BTreeMap::new();
    fn walk(dir: &Path, rel: &str, out: &mut BTreeMap<String, Option<Vec<u8>>>) {
        for e in std::fs::read_dir(dir).unwrap() {
            let e = e.unwrap();
            let name = e.file_name().to_string_lossy().into_owned();
            let path = if rel.is_empty() {
                name
            } else {
                format!("{rel}/{name}")
            };
            let m = std::fs::symlink_metadata(e.path()).unwrap();
            if m.is_dir() {
                out.insert(format!("{path}/"), None);
                walk(&e.path(), &path, out);
            } else if m.is_file() {
                out.insert(path, Some(std::fs::read(e.path()).unwrap()));
            } else if m.file_type().is_symlink() {
                let t = std::fs::read_link(e.path()).unwrap();
                out.insert(path, Some(t.as_os_str().as_bytes().to_vec()));
            }
        }
    }
    walk(root, prefix, &mut out);
    out
}

fn unzip(bytes: &[u8]) -> BTreeMap<String, Option<Vec<u8>>> {
    let mut zip = zip::ZipArchive::new(std::io::Cursor::new(bytes)).unwrap();
    let mut out = BTreeMap::new();
    for i in 0..zip.len() {
        let mut f = zip.by_index(i).unwrap();
        let name = f.name().to_string();
        if f.is_dir() {
            out.insert(name, None);
        } else {
            let mut data = Vec::new();
            f.read_to_end(&mut data).unwrap();
            out.insert(name, Some(data));
        }
    }
    out
}

/// Members of a tar.zst: directories (None), files and symlinks (content / target); hard
/// links resolve to the content of the member they name.
fn untar(bytes: &[u8]) -> BTreeMap<String, Option<Vec<u8>>> {
    let raw = zstd::decode_all(bytes).unwrap();
    let mut ar = tar::Archive::new(std::io::Cursor::new(raw));
    let mut out: BTreeMap<String, Option<Vec<u8>>> = BTreeMap::new();
    for e in ar.entries().unwrap() {
        let mut e = e.unwrap();
        let path = e.path().unwrap().to_string_lossy().into_owned();
        match e.header().entry_type() {
            tar::EntryType::Directory => {
                out.insert(format!("{}/", path.trim_end_matches('/')), None);
            }
            tar::EntryType::Regular => {
                let mut data = Vec::new();
                e.read_to_end(&mut data).unwrap();
                out.insert(path, Some(data));
            }
            tar::EntryType::Symlink => {
                let t = e.link_name().unwrap().unwrap();
                out.insert(path, Some(t.as_os_str().as_bytes().to_vec()));
            }
            tar::EntryType::Link => {
                let t = e
                    .link_name()
                    .unwrap()
                    .unwrap()
                    .to_string_lossy()
                    .into_owned();
                let data = out[&t].clone();
                out.insert(path, data);
            }
            _ => {} // FIFOs
        }
    }
    out
}

async fn backup_split(client: &PbsClient, tree: &Path, id: &str, time: i64, mode: PxarMode) {
    let params = BackupParams::new("store1", "host", id, time);
    let mut session = BackupSession::start(client, params).await.unwrap();
    let stats = session
        .upload_pxar_dir_mode(client, "root", tree, &UploadOptions::default(), mode)
        .await
        .unwrap();
    if mode == PxarMode::Metadata && time > T0 {
        let reuse = stats
            .reuse
            .as_ref()
            .expect("metadata mode read the previous snapshot");
        assert!(reuse.reused_files > 0, "{stats:?}");
        assert!(reuse.reused_chunks > 0, "{stats:?}");
    }
    session.finish().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn legacy_catalog_listing_and_downloads() {
    let (server, client) = start().await;
    let src = tempfile::tempdir().unwrap();
    let tree = src.path();
    make_tree(tree);
    let content = Content {
        tree: Some(tree),
        image: None,
        conf: None,
    };
    backup(&client, "store1", None, "legacy", T0, Crypt::None, &content)
        .await
        .unwrap();
    let base = snap("legacy", T0);

    // the UI starts at "/", then follows the returned filepath values
    let root = list(&client, with(&base, json!({ "filepath": "/" }))).await;
    assert_eq!(root.len(), 1, "{root:?}");
    assert_eq!(root[0]["text"], "root.pxar.didx");
    assert_eq!(root[0]["filepath"], b64(b"/root.pxar.didx"));
    assert_eq!(root[0]["type"], "d");
    assert_eq!(
        list(&client, with(&base, json!({ "filepath": "root" }))).await,
        root
    );
    let top = list(
        &client,
        with(&base, json!({ "filepath": root[0]["filepath"] })),
    )
    .await;
    check_listing(&top, tree);
    let var = find(&top, "var");
    assert_eq!(var["filepath"], b64(b"root.pxar.didx/var"));
    let var_items = list(&client, with(&base, json!({ "filepath": var["filepath"] }))).await;
    check_listing(&var_items, &tree.join("var"));
    assert_eq!(find(&var_items, "hostname-link")["type"], "h");
    assert_eq!(find(&var_items, "bad\u{fffd}.txt")["type"], "f");
    let lib = find(&var_items, "lib");
    let lib_items = list(&client, with(&base, json!({ "filepath": lib["filepath"] }))).await;
    check_listing(&lib_items, &tree.join("var/lib"));
    // unpadded base64 is accepted too
    let unpadded =
        base64::engine::general_purpose::STANDARD_NO_PAD.encode(b"root.pxar.didx/var/lib");
    assert_eq!(
        list(&client, with(&base, json!({ "filepath": unpadded }))).await,
        lib_items
    );
    for (path, want) in [
        (&b"root.pxar.didx/nope"[..], "not found in catalog"),
        (b"root.pxar.didx/var/", "not found in catalog"),
        (b"root.pxar.didx/etc/hostname", "not a directory"),
    ] {
        let r = get(
            &client,
            "catalog",
            &with(&base, json!({ "filepath": b64(path) })),
        )
        .await;
        assert_eq!(r.status, 400, "{}", r.text());
        assert!(r.text().contains(want), "{}", r.text());
    }
    let r = get(
        &client,
        "catalog",
        &with(&base, json!({ "filepath": "%%%" })),
    )
    .await;
    assert_eq!(r.status, 400);
    assert!(r.text().contains("base64"), "{}", r.text());

    // single files: the filepath of a listing, with or without the leading slash
    let big = find(&lib_items, "big.bin");
    let bytes = download(&client, with(&base, json!({ "filepath": big["filepath"] }))).await;
    assert_eq!(bytes, std::fs::read(tree.join("var/lib/big.bin")).unwrap());
    let bytes = download(
        &client,
        with(
            &base,
            json!({ "filepath": b64(b"/root.pxar/etc/app/config.toml") }),
        ),
    )
    .await;
    assert_eq!(bytes, b"x = 1\n");
    // a hardlink gives its target's bytes
    let link = find(&var_items, "hostname-link");
    let bytes = download(
        &client,
        with(&base, json!({ "filepath": link["filepath"] })),
    )
    .await;
    assert_eq!(bytes, b"browse-host\n");
    let bytes = download(
        &client,
        with(
            &base,
            json!({ "filepath": b64(b"root.pxar.didx/var/bad\xff.txt") }),
        ),
    )
    .await;
    assert_eq!(bytes, b"odd name");

    // directories: ZIP by default, tar.zst with tar=1; members under the directory's name
    let etc = find(&top, "etc");
    let zip = download(&client, with(&base, json!({ "filepath": etc["filepath"] }))).await;
    let mut want = tree_members(&tree.join("etc"), "etc");
    want.insert("etc/".into(), None);
    assert_eq!(unzip(&zip), want);
    let tar = download(
        &client,
        with(&base, json!({ "filepath": var["filepath"], "tar": "1" })),
    )
    .await;
    let mut want = tree_members(&tree.join("var"), "var");
    want.insert("var/".into(), None);
    let mut got = untar(&tar);
    // the non-UTF-8 name is compared lossily on both sides
    got = got.into_iter().collect();
    assert_eq!(got, want);
    // the whole archive: members at the top level
    let zip = download(
        &client,
        with(&base, json!({ "filepath": b64(b"/root.pxar.didx") })),
    )
    .await;
    assert_eq!(unzip(&zip), tree_members(tree, ""));

    // refusals
    for (path, status, want) in [
        (
            &b"root.pxar.didx/var/symlink"[..],
            400,
            "cannot download file of type Symlink",
        ),
        (
            b"root.pxar.didx/var/fifo",
            400,
            "cannot download file of type Fifo",
        ),
        (
            b"root.pxar.didx/etc/../var",
            400,
            "cannot enter parent directory",
        ),
        (b"root.pxar.didx/missing", 400, "error opening"),
        (b"other.pxar.didx/x", 400, "not found in manifest"),
        (b"//x", 400, "invalid archive name"),
    ] {
        let r = get(
            &client,
            "pxar-file-download",
            &with(&base, json!({ "filepath": b64(path) })),
        )
        .await;
        assert_eq!(r.status, status, "{}", r.text());
        assert!(r.text().contains(want), "{path:?}: {}", r.text());
    }

    // privileges: audit only → 403; backup privilege without owning the group → 403
    for user in ["auditor@pbs", "backupper@pbs"] {
        let other = server.client().await.unwrap();
        other.login(user, "user-pass").await.unwrap();
        for op in ["catalog", "pxar-file-download"] {
            let r = get(
                &other,
                op,
                &with(
                    &base,
                    json!({ "filepath": b64(b"/root.pxar.didx/etc/hostname") }),
                ),
            )
            .await;
            assert_eq!(r.status, 403, "{user} {op}: {}", r.text());
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn split_archives_browse_through_the_metadata_archive() {
    let (_server, client) = start().await;
    let src = tempfile::tempdir().unwrap();
    let tree = src.path();
    make_tree(tree);
    for i in 0..30 {
        std::fs::write(
            tree.join(format!("etc/app/file{i:02}")),
            random_bytes(i, 40_000),
        )
        .unwrap();
    }
    backup_split(&client, tree, "split", T0, PxarMode::Data).await;
    std::fs::write(tree.join("etc/app/file15"), b"changed").unwrap();
    backup_split(&client, tree, "split", T0 + 3600, PxarMode::Metadata).await;

    for time in [T0, T0 + 3600] {
        let base = snap("split", time);
        // no catalog in split snapshots
        let r = get(&client, "catalog", &with(&base, json!({ "filepath": "/" }))).await;
        assert_eq!(r.status, 400, "{}", r.text());
        assert!(r.text().contains("catalog.pcat1.didx"), "{}", r.text());

        let meta = json!({ "archive-name": "root.mpxar.didx" });
        let top = list(
            &client,
            with(&base, with(&meta, json!({ "filepath": "/" }))),
        )
        .await;
        check_listing(&top, tree);
        let etc = find(&top, "etc");
        assert_eq!(etc["filepath"], b64(b"/etc"));
        let app = list(
            &client,
            with(&base, with(&meta, json!({ "filepath": b64(b"/etc/app") }))),
        )
        .await;
        if time == T0 + 3600 {
            check_listing(&app, &tree.join("etc/app"));
        }
        let r = get(
            &client,
            "catalog",
            &with(
                &base,
                with(&meta, json!({ "filepath": b64(b"/etc/hostname") })),
            ),
        )
        .await;
        assert_eq!(r.status, 400);
        assert!(
            r.text().contains("expected directory entry"),
            "{}",
            r.text()
        );

        // files: by archive-name + inner path, or the legacy-style name falling back to .mpxar
        let want15: Vec<u8> = if time == T0 {
            random_bytes(15, 40_000)
        } else {
            b"changed".to_vec()
        };
        let bytes = download(
            &client,
            with(
                &base,
                with(&meta, json!({ "filepath": b64(b"/etc/app/file15") })),
            ),
        )
        .await;
        assert_eq!(bytes, want15);
        let bytes = download(
            &client,
            with(
                &base,
                json!({ "filepath": b64(b"/root.pxar.didx/var/lib/big.bin") }),
            ),
        )
        .await;
        assert_eq!(bytes, std::fs::read(tree.join("var/lib/big.bin")).unwrap());
        let bytes = download(
            &client,
            with(
                &base,
                with(&meta, json!({ "filepath": b64(b"/var/hostname-link") })),
            ),
        )
        .await;
        assert_eq!(bytes, b"browse-host\n");
        let bytes = download(
            &client,
            with(
                &base,
                json!({ "filepath": b64(b"root.ppxar.didx/etc/app/file03") }),
            ),
        )
        .await;
        assert_eq!(bytes, random_bytes(3, 40_000));

        if time == T0 + 3600 {
            let tar = download(
                &client,
                with(
                    &base,
                    with(&meta, json!({ "filepath": b64(b"/etc"), "tar": true })),
                ),
            )
            .await;
            let mut want = tree_members(&tree.join("etc"), "etc");
            want.insert("etc/".into(), None);
            assert_eq!(untar(&tar), want);
            let zip = download(
                &client,
                with(&base, with(&meta, json!({ "filepath": b64(b"/") }))),
            )
            .await;
            assert_eq!(unzip(&zip), tree_members(tree, ""));
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn encrypted_archives_are_refused() {
    let (_server, client) = start().await;
    let src = tempfile::tempdir().unwrap();
    make_tree(src.path());
    let key = CryptConfig::random();
    let content = Content {
        tree: Some(src.path()),
        image: None,
        conf: None,
    };
    backup(
        &client,
        "store1",
        None,
        "enc",
        T0,
        Crypt::Encrypt(key),
        &content,
    )
    .await
    .unwrap();
    let base = snap("enc", T0);
    let r = get(&client, "catalog", &with(&base, json!({ "filepath": "/" }))).await;
    assert_eq!(r.status, 400);
    assert!(
        r.text()
            .contains("cannot decode 'catalog.pcat1.didx' - is encrypted"),
        "{}",
        r.text()
    );
    let r = get(
        &client,
        "pxar-file-download",
        &with(
            &base,
            json!({ "filepath": b64(b"/root.pxar.didx/etc/hostname") }),
        ),
    )
    .await;
    assert_eq!(r.status, 400);
    assert!(
        r.text()
            .contains("cannot decode 'root.pxar.didx' - is encrypted"),
        "{}",
        r.text()
    );
}
