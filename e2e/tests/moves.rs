//! `group move` and `namespace move` of the 4.2 client on a local datastore: the calls as
//! recorded (JSON body, then the task log with `test-status` and the task status), the log
//! lines PBS writes, byte-identical restores from the new place, and the refusals.

mod common;

use common::moves::*;
use common::*;
use pbs_cloud_e2e::Crypt;
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn group_and_namespace_move_like_the_4_2_client() {
    let (server, client) = start_server().await;
    let store = server.store().to_string();
    create_ns(&client, &store, "", "mv-a").await;
    create_ns(&client, &store, "", "mv-b").await;
    let tree = tempfile::tempdir().unwrap();
    make_tree(tree.path(), 41);
    let image = random_bytes(42, 4 * 1024 * 1024 + 77);
    let conf = b"guest = 1\n".to_vec();
    let content = Content {
        tree: Some(tree.path()),
        image: Some(&image),
        conf: Some(&conf),
    };
    for t in [T0, T0 + 3600] {
        backup(
            &client,
            &store,
            Some("mv-a"),
            "mv",
            t,
            Crypt::None,
            &content,
        )
        .await
        .unwrap();
    }

    // group move host/mv --ns mv-a --target-ns mv-b
    let upid = move_group(&client, &store, "mv", Some("mv-a"), "mv-b", None)
        .await
        .unwrap();
    assert!(upid.contains(":move-group:"), "{upid}");
    let (status, log) = follow_task(&client, &upid).await;
    assert_eq!(status["exitstatus"], "OK", "{status} {log:?}");
    assert_eq!(status["type"], "move-group");
    assert_eq!(status["id"], format!("{store}:mv-a/host/mv:mv-b"));
    assert_eq!(status["user"], server.auth_id());
    assert_eq!(
        log,
        vec![
            "moving group 'host/mv' from 'mv-a' to 'mv-b'".to_string(),
            "removing backup group \"ns/mv-a/host/mv\"".to_string(),
            "TASK OK".to_string(),
        ]
    );
    assert!(group_times(&client, &store, Some("mv-a"), "mv")
        .await
        .is_empty());
    assert_eq!(
        group_times(&client, &store, Some("mv-b"), "mv").await,
        vec![T0, T0 + 3600]
    );

    // namespace move mv-b --target-ns mv-c (mv-c does not exist yet)
    let upid = move_namespace(&client, &store, "mv-b", "mv-c", json!({}))
        .await
        .unwrap();
    let (status, log) = follow_task(&client, &upid).await;
    assert_eq!(status["exitstatus"], "OK", "{status} {log:?}");
    assert_eq!(status["id"], format!("{store}:mv-b:mv-c"));
    assert_eq!(
        log,
        vec![
            "moving namespace 'mv-b' -> 'mv-c': 1 namespace(s)".to_string(),
            "moving group 'host/mv' from 'mv-b' to 'mv-c'".to_string(),
            "removing backup group \"ns/mv-b/host/mv\"".to_string(),
            "moved group 1 ('host/mv' in 'mv-b')".to_string(),
            "TASK OK".to_string(),
        ]
    );
    let names = namespaces(&client, &store).await;
    assert!(names.contains(&"mv-c".to_string()), "{names:?}");
    assert!(
        !names.contains(&"mv-b".to_string()),
        "delete-source: {names:?}"
    );

    // Garbage collection afterwards keeps every chunk the moved snapshots need.
    let gc = client
        .post(&format!("admin/datastore/{store}/gc"), None)
        .await
        .unwrap();
    let (status, _) = follow_task(&client, gc.as_str().unwrap()).await;
    assert_eq!(status["exitstatus"], "OK");
    for t in [T0, T0 + 3600] {
        let session = reader(&client, &store, Some("mv-c"), "mv", t, None)
            .await
            .unwrap();
        assert_eq!(session.restore_archive("disk.img").await.unwrap(), image);
        assert_eq!(session.restore_archive("app.conf").await.unwrap(), conf);
        assert_tree_restores(&session, tree.path()).await;
    }

    // Move tasks are listed, but (like PBS) not under a datastore filter.
    let all = client
        .get(
            "nodes/localhost/tasks",
            Some(&json!({"running": false, "typefilter": "move", "limit": 10})),
        )
        .await
        .unwrap();
    let types: Vec<&str> = all
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["worker_type"].as_str().unwrap())
        .collect();
    assert_eq!(types, vec!["move-namespace", "move-group"]);
    let on_store = client
        .get(
            "nodes/localhost/tasks",
            Some(&json!({"running": false, "store": store, "typefilter": "move"})),
        )
        .await
        .unwrap();
    assert_eq!(on_store, json!([]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nested_namespace_moves_below_another_and_protection_moves_along() {
    let (server, client) = start_server().await;
    let store = server.store().to_string();
    create_ns(&client, &store, "", "src").await;
    create_ns(&client, &store, "src", "kid").await;
    create_ns(&client, &store, "", "dst").await;
    let image = random_bytes(9, 3 * 1024 * 1024);
    let content = Content {
        tree: None,
        image: Some(&image),
        conf: None,
    };
    backup(
        &client,
        &store,
        Some("src"),
        "top",
        T0,
        Crypt::None,
        &content,
    )
    .await
    .unwrap();
    backup(
        &client,
        &store,
        Some("src/kid"),
        "kid",
        T0,
        Crypt::None,
        &content,
    )
    .await
    .unwrap();
    client
        .put(
            &format!("admin/datastore/{store}/protected"),
            Some(
                &json!({"backup-type": "host", "backup-id": "kid", "backup-time": T0,
                         "ns": "src/kid", "protected": true}),
            ),
        )
        .await
        .unwrap();

    let upid = move_namespace(&client, &store, "src", "dst/moved", json!({}))
        .await
        .unwrap();
    let (status, log) = follow_task(&client, &upid).await;
    assert_eq!(status["exitstatus"], "OK", "{log:?}");
    assert_eq!(
        log[0],
        "moving namespace 'src' -> 'dst/moved': 2 namespace(s)"
    );
    let names = namespaces(&client, &store).await;
    assert!(names.contains(&"dst/moved/kid".to_string()), "{names:?}");
    assert!(!names.iter().any(|n| n.starts_with("src")), "{names:?}");
    let protected = client
        .get(
            &format!("admin/datastore/{store}/protected"),
            Some(
                &json!({"backup-type": "host", "backup-id": "kid", "backup-time": T0,
                         "ns": "dst/moved/kid"}),
            ),
        )
        .await
        .unwrap();
    assert_eq!(protected, json!(true), "protection moves with the snapshot");
    let session = reader(&client, &store, Some("dst/moved/kid"), "kid", T0, None)
        .await
        .unwrap();
    assert_eq!(session.restore_archive("disk.img").await.unwrap(), image);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn moves_are_refused_where_pbs_refuses_and_nothing_changes() {
    let (server, client) = start_server().await;
    let store = server.store().to_string();
    for n in ["a", "b"] {
        create_ns(&client, &store, "", n).await;
    }
    let conf = |i: u8| vec![b'x', i];
    for (ns, t) in [("a", T0), ("b", T0), ("b", T0 + 60)] {
        let c = conf(t as u8);
        let content = Content {
            tree: None,
            image: None,
            conf: Some(&c),
        };
        backup(&client, &store, Some(ns), "g", t, Crypt::None, &content)
            .await
            .unwrap();
    }

    // The target group exists and merging was turned off.
    let err = move_group(&client, &store, "g", Some("a"), "b", Some(false))
        .await
        .unwrap_err();
    assert_eq!(err.status(), Some(400), "{err}");
    assert!(err.body().unwrap().contains("already exists"), "{err}");
    // Merging: a snapshot time exists on both sides.
    let err = move_group(&client, &store, "g", Some("a"), "b", None)
        .await
        .unwrap_err();
    assert!(err.body().unwrap().contains("exists in both"), "{err}");
    // Missing target namespace, missing group, same namespace, into itself.
    let err = move_group(&client, &store, "g", Some("a"), "nope", None)
        .await
        .unwrap_err();
    assert_eq!(err.status(), Some(404), "{err}");
    let err = move_group(&client, &store, "none", Some("a"), "b", None)
        .await
        .unwrap_err();
    assert_eq!(err.status(), Some(404), "{err}");
    let err = move_group(&client, &store, "g", Some("a"), "a", None)
        .await
        .unwrap_err();
    assert_eq!(err.status(), Some(400), "{err}");
    let err = move_namespace(&client, &store, "a", "a/inner", json!({}))
        .await
        .unwrap_err();
    assert!(err.body().unwrap().contains("into itself"), "{err}");
    assert!(move_namespace(&client, &store, "", "x", json!({}))
        .await
        .is_err());
    // A running backup of the group.
    let session = {
        let mut params = pbs_cloud_e2e::BackupParams::new(&store, "host", "g", T0 + 120);
        params.ns = Some("a".into());
        pbs_cloud_e2e::BackupSession::start_raw(&client, params)
            .await
            .unwrap()
    };
    let err = move_group(&client, &store, "g", Some("a"), "b", None)
        .await
        .unwrap_err();
    assert!(
        err.body()
            .unwrap()
            .contains("a backup of the group is running"),
        "{err}"
    );
    drop(session);
    // The aborted session's snapshot goes away once the server notices the closed connection.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while group_times(&client, &store, Some("a"), "g").await != vec![T0] {
        assert!(
            std::time::Instant::now() < deadline,
            "aborted backup not cleaned up"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(
        group_times(&client, &store, Some("b"), "g").await,
        vec![T0, T0 + 60]
    );

    // A user with only Datastore.Backup may not move other people's groups.
    let mut server = server;
    server.stop().await;
    server
        .manage(&["user", "add", "eve@pbs"], "eve-pass\n")
        .unwrap();
    server
        .manage(
            &[
                "acl",
                "add",
                "/datastore/store1",
                "eve@pbs",
                "DatastoreBackup",
            ],
            "",
        )
        .unwrap();
    server.launch().await.unwrap();
    let eve = server.client().await.unwrap();
    eve.login("eve@pbs", "eve-pass").await.unwrap();
    let err = move_group(&eve, &store, "g", Some("b"), "a", None)
        .await
        .unwrap_err();
    assert_eq!(err.status(), Some(403), "{err}");
    let admin = server.admin_client().await.unwrap();
    assert_eq!(group_times(&admin, &store, Some("a"), "g").await, vec![T0]);
}
