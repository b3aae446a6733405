//! Backup → list → restore byte-identical, incremental reuse and encrypted round trip, all
//! through the protocol test client against a real server process.

mod common;

use common::*;
use pbs_cloud_e2e::{Crypt, CryptConfig};
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backup_list_files_and_restore_byte_identical() {
    let (server, client) = start_server().await;
    let store = server.store().to_string();
    let tree = tempfile::tempdir().unwrap();
    make_tree(tree.path(), 1);
    // 3 full chunks plus a 5-byte tail chunk
    let image = random_bytes(2, 3 * 4 * 1024 * 1024 + 5);
    let conf = b"name = e2e\n".to_vec();
    let content = Content {
        tree: Some(tree.path()),
        image: Some(&image),
        conf: Some(&conf),
    };

    let summary = backup(&client, &store, None, "e2e", T0, Crypt::None, &content)
        .await
        .unwrap();
    let names: Vec<_> = summary
        .manifest
        .files
        .iter()
        .map(|f| f.filename.clone())
        .collect();
    for name in [
        "app.conf.blob",
        "root.pxar.didx",
        "disk.img.fidx",
        "catalog.pcat1.didx",
    ] {
        assert!(
            names.contains(&name.to_string()),
            "manifest lacks {name}: {names:?}"
        );
    }

    // `proxmox-backup-client list`
    let groups = client
        .get(&format!("admin/datastore/{store}/groups"), None)
        .await
        .unwrap();
    let groups = groups.as_array().unwrap();
    assert_eq!(groups.len(), 1, "{groups:?}");
    assert_eq!(groups[0]["backup-type"], "host");
    assert_eq!(groups[0]["backup-id"], "e2e");
    assert_eq!(groups[0]["backup-count"], 1);
    assert_eq!(groups[0]["last-backup"], T0);
    assert_eq!(groups[0]["owner"], "admin@pbs");

    // `snapshot list`
    let snaps = snapshots(&client, &store, None, "e2e").await;
    assert_eq!(snaps.len(), 1);
    assert_eq!(snaps[0]["backup-time"], T0);
    let listed: Vec<_> = snaps[0]["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["filename"].as_str().unwrap().to_string())
        .collect();
    assert!(
        listed.contains(&"index.json.blob".to_string()),
        "{listed:?}"
    );
    let image_entry = snaps[0]["files"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["filename"] == "disk.img.fidx")
        .unwrap();
    assert_eq!(image_entry["size"], image.len() as u64);
    assert_eq!(image_entry["crypt-mode"], "none");
    assert!(snaps[0]["size"].as_u64().unwrap() > image.len() as u64);

    // `snapshot files`
    let files = client
        .get(
            &format!("admin/datastore/{store}/files"),
            Some(&json!({"backup-type": "host", "backup-id": "e2e", "backup-time": T0})),
        )
        .await
        .unwrap();
    assert_eq!(files.as_array().unwrap().len(), 5, "{files}");

    // restore every archive
    let session = reader(&client, &store, None, "e2e", T0, None)
        .await
        .unwrap();
    assert_eq!(session.restore_archive("disk.img").await.unwrap(), image);
    assert_eq!(session.restore_archive("app.conf").await.unwrap(), conf);
    assert_tree_restores(&session, tree.path()).await;
    // catalog dump reads the catalog archive through the same reader session
    let catalog = session.restore_archive("catalog.pcat1").await.unwrap();
    assert!(!catalog.is_empty());
    drop(session);

    // `status`
    let status = client
        .get(&format!("admin/datastore/{store}/status"), None)
        .await
        .unwrap();
    assert!(status["total"].as_u64().unwrap() > 0, "{status}");
    assert!(status["used"].as_u64().unwrap() > 0, "{status}");
    assert_eq!(status["backend-type"], "filesystem");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn incremental_backup_reuses_most_chunks() {
    let (server, client) = start_server().await;
    let store = server.store().to_string();
    let tree = tempfile::tempdir().unwrap();
    make_tree(tree.path(), 10);
    let mut image = random_bytes(11, 8 * 4 * 1024 * 1024);
    let first = backup(
        &client,
        &store,
        None,
        "incr",
        T0,
        Crypt::None,
        &Content {
            tree: Some(tree.path()),
            image: Some(&image),
            conf: None,
        },
    )
    .await
    .unwrap();
    let first_image = first
        .archives
        .iter()
        .find(|a| a.name == "disk.img.fidx")
        .unwrap();
    assert!(!first_image.used_previous);
    assert_eq!(first_image.chunks.chunks_uploaded, 8);

    // change one 4 MiB block of the image and one small file
    image[5 * 4 * 1024 * 1024 + 100] ^= 0xff;
    std::fs::write(tree.path().join("etc/hostname"), b"changed\n").unwrap();
    let second = backup(
        &client,
        &store,
        None,
        "incr",
        T0 + 3600,
        Crypt::None,
        &Content {
            tree: Some(tree.path()),
            image: Some(&image),
            conf: None,
        },
    )
    .await
    .unwrap();
    let img = second
        .archives
        .iter()
        .find(|a| a.name == "disk.img.fidx")
        .unwrap();
    assert!(img.used_previous, "previous image index was not used");
    assert_eq!(img.chunks.chunks_uploaded, 1, "{img:?}");
    assert_eq!(img.chunks.chunks_reused, 7, "{img:?}");
    // pxar: only the chunk holding the changed file and the last one (the root directory's
    // goodbye table records the changed size of `etc`) are new
    let pxar = second
        .archives
        .iter()
        .find(|a| a.name == "root.pxar.didx")
        .unwrap();
    assert!(pxar.used_previous, "previous pxar index was not used");
    assert!(pxar.chunks.chunk_count >= 3, "{pxar:?}");
    assert!(
        pxar.chunks.chunks_reused + 2 >= pxar.chunks.chunk_count,
        "only {} of {} pxar chunks reused",
        pxar.chunks.chunks_reused,
        pxar.chunks.chunk_count
    );

    // both snapshots restore to their own content
    let session = reader(&client, &store, None, "incr", T0 + 3600, None)
        .await
        .unwrap();
    assert_eq!(session.restore_archive("disk.img").await.unwrap(), image);
    assert_tree_restores(&session, tree.path()).await;
    let old = reader(&client, &store, None, "incr", T0, None)
        .await
        .unwrap();
    let old_image = old.restore_archive("disk.img").await.unwrap();
    assert_ne!(old_image, image);
    assert_eq!(
        old_image[5 * 4 * 1024 * 1024 + 100],
        image[5 * 4 * 1024 * 1024 + 100] ^ 0xff
    );

    // a backup time that is not newer than the last one is refused
    let err = backup(
        &client,
        &store,
        None,
        "incr",
        T0 + 3600,
        Crypt::None,
        &Content {
            tree: None,
            image: None,
            conf: Some(b"x"),
        },
    )
    .await
    .unwrap_err();
    assert_eq!(err.status(), Some(400), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn encrypted_backup_round_trip() {
    let (server, client) = start_server().await;
    let store = server.store().to_string();
    let key = CryptConfig::random();
    let tree = tempfile::tempdir().unwrap();
    make_tree(tree.path(), 20);
    let image = random_bytes(21, 2 * 4 * 1024 * 1024 + 3);
    let conf = b"secret config\n".to_vec();
    backup(
        &client,
        &store,
        None,
        "enc",
        T0,
        Crypt::Encrypt(key.clone()),
        &Content {
            tree: Some(tree.path()),
            image: Some(&image),
            conf: Some(&conf),
        },
    )
    .await
    .unwrap();

    let snaps = snapshots(&client, &store, None, "enc").await;
    assert_eq!(snaps[0]["fingerprint"], key.fingerprint_hex());
    for file in snaps[0]["files"].as_array().unwrap() {
        match file["filename"].as_str().unwrap() {
            "index.json.blob" => assert_eq!(file["crypt-mode"], "sign-only"),
            _ => assert_eq!(file["crypt-mode"], "encrypt", "{file}"),
        }
    }
    // the server stores ciphertext: the image bytes never appear in any chunk
    let chunk_dir = server.data_dir().join("datastores/store1/.chunks");
    let probe = &image[..64];
    for dir in std::fs::read_dir(&chunk_dir).unwrap() {
        for chunk in std::fs::read_dir(dir.unwrap().path()).unwrap() {
            let bytes = std::fs::read(chunk.unwrap().path()).unwrap();
            assert!(
                !bytes.windows(64).any(|w| w == probe),
                "plain data found in a stored chunk"
            );
        }
    }

    let session = reader(&client, &store, None, "enc", T0, Some(key.clone()))
        .await
        .unwrap();
    assert_eq!(session.restore_archive("disk.img").await.unwrap(), image);
    assert_eq!(session.restore_archive("app.conf").await.unwrap(), conf);
    assert_tree_restores(&session, tree.path()).await;

    // without the key the signed manifest cannot be used
    let keyless = reader(&client, &store, None, "enc", T0, None)
        .await
        .unwrap();
    assert!(keyless.restore_archive("disk.img").await.is_err());
    // with another key neither
    let wrong = reader(
        &client,
        &store,
        None,
        "enc",
        T0,
        Some(CryptConfig::random()),
    )
    .await
    .unwrap();
    assert!(wrong.restore_archive("disk.img").await.is_err());

    // an incremental encrypted backup reuses the encrypted chunks
    let second = backup(
        &client,
        &store,
        None,
        "enc",
        T0 + 60,
        Crypt::Encrypt(key.clone()),
        &Content {
            tree: None,
            image: Some(&image),
            conf: None,
        },
    )
    .await
    .unwrap();
    let img = second
        .archives
        .iter()
        .find(|a| a.name == "disk.img.fidx")
        .unwrap();
    assert_eq!(img.chunks.chunks_uploaded, 0, "{img:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upload_log_is_stored_once() {
    let (server, client) = start_server().await;
    let store = server.store().to_string();
    backup(
        &client,
        &store,
        None,
        "log",
        T0,
        Crypt::None,
        &Content {
            tree: None,
            image: None,
            conf: Some(b"c"),
        },
    )
    .await
    .unwrap();
    let blob = pbs_cloud_e2e::wire::encode_plain_blob(b"task log line 1\ntask log line 2\n", true);
    let params = json!({"backup-type": "host", "backup-id": "log", "backup-time": T0});
    let path = format!("admin/datastore/{store}/upload-backup-log");
    client
        .upload(&path, Some(&params), blob.clone())
        .await
        .unwrap();
    let err = client
        .upload(&path, Some(&params), blob.clone())
        .await
        .unwrap_err();
    assert!(
        err.body()
            .unwrap_or_default()
            .contains("already contains a log"),
        "{err}"
    );
    let files = client
        .get(&format!("admin/datastore/{store}/files"), Some(&params))
        .await
        .unwrap();
    assert!(
        files
            .as_array()
            .unwrap()
            .iter()
            .any(|f| f["filename"] == "client.log.blob"),
        "{files}"
    );
    // a corrupt log blob is refused
    let mut bad = blob;
    bad[8] ^= 1;
    let params2 = json!({"backup-type": "host", "backup-id": "log", "backup-time": T0});
    assert!(client.upload(&path, Some(&params2), bad).await.is_err());
}
