//! `task list` / `task log` / `task stop` and `group forget` of the 4.2 client: backup and
//! reader sessions are tasks with PBS's UPIDs, worker ids and log lines; the list filters and
//! counts like PBS 4.2.3; stopping a running backup aborts it and removes its snapshot; users
//! see their own tasks unless they have `Sys.Audit`.

mod common;

use common::moves::follow_task;
use common::*;
use pbs_cloud_e2e::{BackupParams, BackupSession, Crypt, PbsClient, ReaderParams, ReaderSession};
use serde_json::{json, Value};

fn encoded(upid: &str) -> String {
    percent_encoding::utf8_percent_encode(upid, percent_encoding::NON_ALPHANUMERIC).to_string()
}

/// What the stock client's `task list [--all]` sends.
async fn task_list(client: &PbsClient, user: &str, all: bool, limit: u64) -> (Vec<Value>, u64) {
    let resp = client
        .raw(
            http::Method::GET,
            &format!(
                "/api2/json/nodes/localhost/tasks?limit={limit}&running={}&start=0&store=store1&userfilter={}",
                !all,
                encoded(user)
            ),
            Some("application/x-www-form-urlencoded"),
            Vec::new(),
            &[],
            true,
        )
        .await
        .unwrap();
    assert_eq!(resp.status, 200, "{}", resp.text());
    let body: Value = serde_json::from_slice(&resp.body).unwrap();
    (
        body["data"].as_array().unwrap().clone(),
        body["total"].as_u64().expect("total"),
    )
}

/// Waits until the task list (without store filter) shows a stopped task of `worker_type`
/// whose worker id is `id`.
async fn stopped_task(client: &PbsClient, worker_type: &str, id: &str) -> Value {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
    loop {
        let list = client
            .get(
                "nodes/localhost/tasks",
                Some(&json!({"typefilter": worker_type, "limit": 0})),
            )
            .await
            .unwrap();
        if let Some(task) = list
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["worker_id"] == id && t.get("status").is_some())
        {
            return task.clone();
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no stopped {worker_type} task {id}: {list}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backup_and_reader_sessions_are_tasks_with_pbs_logs() {
    let (server, client) = start_server().await;
    let me = server.auth_id().to_string();
    let tree = tempfile::tempdir().unwrap();
    make_tree(tree.path(), 3);
    let image = random_bytes(4, 4 * 1024 * 1024 + 10);
    let content = Content {
        tree: Some(tree.path()),
        image: Some(&image),
        conf: Some(b"c = 1\n"),
    };
    backup(&client, "store1", None, "tk", T0, Crypt::None, &content)
        .await
        .unwrap();

    // The task ends when the server sees the connection close, which may come after the
    // client has its `finish` answer (as with PBS): wait for that event first.
    stopped_task(&client, "backup", "store1:host/tk").await;
    // `task list --all`: the backup, with exactly PBS's item keys.
    let (items, total) = task_list(&client, &me, true, 10).await;
    assert_eq!(total, 1);
    let task = &items[0];
    let mut keys: Vec<&str> = task
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    keys.sort();
    assert_eq!(
        keys,
        vec![
            "endtime",
            "node",
            "pid",
            "pstart",
            "starttime",
            "status",
            "upid",
            "user",
            "worker_id",
            "worker_type"
        ]
    );
    assert_eq!(task["worker_type"], "backup");
    assert_eq!(task["worker_id"], "store1:host/tk");
    assert_eq!(task["user"], me.as_str());
    assert_eq!(task["node"], "localhost");
    assert_eq!(task["status"], "OK");
    let upid = task["upid"].as_str().unwrap();
    assert!(upid.contains(":backup:store1\\x3ahost-tk:"), "{upid}");
    // Nothing runs any more: `task list` (running only) is empty.
    assert_eq!(task_list(&client, &me, false, 50).await, (vec![], 0));

    // `task log <UPID>`: the lines PBS writes, upload statistics included.
    let (status, log) = follow_task(&client, upid).await;
    assert_eq!(status["exitstatus"], "OK");
    assert_eq!(
        log[0],
        "starting new backup on datastore 'store1': \"host/tk/2026-01-01T00:00:00Z\""
    );
    for needle in [
        "Upload statistics for 'root.pxar.didx'",
        "Upload statistics for 'disk.img.fidx'",
        "add blob \"host/tk/2026-01-01T00:00:00Z/app.conf.blob\"",
        "successfully finished backup",
        "backup finished successfully",
    ] {
        assert!(
            log.iter().any(|l| l.starts_with(needle)),
            "missing {needle:?} in {log:#?}"
        );
    }
    assert!(log.iter().any(|l| l.starts_with("Chunk count: ")));
    assert!(
        log.iter()
            .any(|l| l.starts_with("created new dynamic index ")
                && l.ends_with(" (\"host/tk/2026-01-01T00:00:00Z/root.pxar.didx\")")),
        "{log:#?}"
    );
    assert!(
        log.iter()
            .any(|l| l.starts_with("created new fixed index ") && l.ends_with("/disk.img.fidx\")")),
        "{log:#?}"
    );
    assert_eq!(log.last().unwrap(), "TASK OK");
    // Whole log as text, and `limit=0` for all lines.
    let text = client
        .download(
            &format!("nodes/localhost/tasks/{}/log", encoded(upid)),
            Some(&json!({"download": true})),
        )
        .await
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&text).lines().count(), log.len());
    let all = client
        .get(
            &format!("nodes/localhost/tasks/{}/log", encoded(upid)),
            Some(&json!({"limit": 0})),
        )
        .await
        .unwrap();
    assert_eq!(all.as_array().unwrap().len(), log.len());

    // A reader session is a `reader` task (not a datastore task for `store=`).
    let reader_session =
        ReaderSession::open(&client, ReaderParams::new("store1", "host", "tk", T0), None)
            .await
            .unwrap();
    assert_eq!(
        reader_session.restore_archive("disk.img").await.unwrap(),
        image
    );
    drop(reader_session);
    let reader_id = format!("store1:host/tk/{T0:08X}");
    let task = stopped_task(&client, "reader", &reader_id).await;
    assert_eq!(task["status"], "OK");
    let (_, log) = follow_task(&client, task["upid"].as_str().unwrap()).await;
    assert_eq!(
        log[0],
        "starting new backup reader datastore 'store1': \"host/tk/2026-01-01T00:00:00Z\""
    );
    assert!(log.contains(&"register chunks in 'disk.img.fidx' as downloadable.".to_string()));
    assert!(
        log.contains(&"reader finished successfully".to_string()),
        "{log:?}"
    );
    let (items, _) = task_list(&client, &me, true, 10).await;
    assert!(items.iter().all(|t| t["worker_type"] != "reader"));

    // PBS's `total` counts one past a full page.
    backup(
        &client,
        "store1",
        None,
        "tk",
        T0 + 60,
        Crypt::None,
        &content,
    )
    .await
    .unwrap();
    let (items, total) = task_list(&client, &me, true, 1).await;
    assert_eq!((items.len(), total), (1, 2));
    let failed_or_warned = client
        .get(
            "nodes/localhost/tasks",
            Some(&json!({"statusfilter": ["error", "warning"], "limit": 0})),
        )
        .await
        .unwrap();
    assert_eq!(failed_or_warned, json!([]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stopping_a_running_backup_aborts_it_and_removes_its_snapshot() {
    let (server, client) = start_server().await;
    let me = server.auth_id().to_string();
    let good = make_good_snapshot(&client, "store1").await;
    let session = BackupSession::start_raw(&client, BackupParams::new("store1", "host", "bad", T0))
        .await
        .unwrap();
    let (running, total) = task_list(&client, &me, false, 50).await;
    assert_eq!(total, 1, "{running:?}");
    let task = &running[0];
    assert_eq!(task["worker_id"], "store1:host/bad");
    assert!(task.get("status").is_none() && task.get("endtime").is_none());
    let upid = task["upid"].as_str().unwrap().to_string();
    let status = client
        .get(
            &format!("nodes/localhost/tasks/{}/status", encoded(&upid)),
            None,
        )
        .await
        .unwrap();
    assert_eq!(status["status"], "running");
    assert!(status.get("exitstatus").is_none());

    // `task stop`
    let stopped = client
        .delete(&format!("nodes/localhost/tasks/{}", encoded(&upid)), None)
        .await
        .unwrap();
    assert_eq!(stopped, Value::Null);
    let (status, log) = follow_task(&client, &upid).await;
    assert_eq!(status["exitstatus"], "ERROR: task aborted", "{log:?}");
    for needle in [
        "received abort request",
        "backup failed: task aborted",
        "removing failed backup",
    ] {
        assert!(log.contains(&needle.to_string()), "{needle}: {log:?}");
    }
    assert_no_snapshot_left(&server, &client, "bad", std::time::Duration::from_secs(5)).await;
    // The connection is gone: the session cannot go on.
    let (code, _) = session
        .raw_request(
            http::Method::GET,
            "previous_backup_time",
            "application/x-www-form-urlencoded",
            Vec::new(),
        )
        .await
        .unwrap_or((0, Default::default()));
    assert_ne!(code, 200, "the aborted session still answers");
    assert_good_snapshot_intact(&client, "store1", &good).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tasks_are_private_unless_the_caller_has_sys_audit() {
    let (mut server, _) = start_server().await;
    let conf = Content {
        tree: None,
        image: None,
        conf: Some(b"x"),
    };
    // Tasks live in memory: everything below happens after this restart.
    server.stop().await;
    for (user, role, path) in [
        ("bob@pbs", "DatastoreBackup", "/datastore/store1"),
        ("carol@pbs", "Admin", "/"),
    ] {
        server
            .manage(&["user", "add", user], &format!("{user}-pw\n"))
            .unwrap();
        server
            .manage(&["acl", "add", path, user, role], "")
            .unwrap();
    }
    server.launch().await.unwrap();
    let login = |user: &'static str| {
        let server = &server;
        async move {
            let c = server.client().await.unwrap();
            c.login(user, &format!("{user}-pw")).await.unwrap();
            c
        }
    };
    let bob = login("bob@pbs").await;
    let carol = login("carol@pbs").await;
    let admin = server.admin_client().await.unwrap();
    backup(&admin, "store1", None, "adm", T0, Crypt::None, &conf)
        .await
        .unwrap();
    backup(&bob, "store1", None, "bob", T0, Crypt::None, &conf)
        .await
        .unwrap();

    let ids = |list: Value| -> Vec<String> {
        let mut v: Vec<String> = list
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["worker_id"].as_str().unwrap().to_string())
            .collect();
        v.sort();
        v
    };
    let all = json!({"running": false, "typefilter": "backup"});
    let bobs = bob.get("nodes/localhost/tasks", Some(&all)).await.unwrap();
    assert_eq!(ids(bobs), vec!["store1:host/bob"]);
    for who in [&carol, &admin] {
        let seen = who.get("nodes/localhost/tasks", Some(&all)).await.unwrap();
        assert_eq!(ids(seen), vec!["store1:host/adm", "store1:host/bob"]);
    }
    let adm_task = admin
        .get("nodes/localhost/tasks", Some(&all))
        .await
        .unwrap()
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["worker_id"] == "store1:host/adm")
        .unwrap()["upid"]
        .as_str()
        .unwrap()
        .to_string();
    let path = format!("nodes/localhost/tasks/{}", encoded(&adm_task));
    let err = bob.get(&format!("{path}/status"), None).await.unwrap_err();
    assert_eq!(err.status(), Some(403), "{err}");
    let err = bob.get(&format!("{path}/log"), None).await.unwrap_err();
    assert_eq!(err.status(), Some(403), "{err}");
    let err = bob.delete(&path, None).await.unwrap_err();
    assert_eq!(err.status(), Some(403), "{err}");
    carol.get(&format!("{path}/status"), None).await.unwrap();
    let err = bob
        .get("nodes/localhost/tasks/UPID%3Anot%3Aa%3Aupid/status", None)
        .await
        .unwrap_err();
    assert_eq!(err.status(), Some(400), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn group_forget_answers_like_pbs_4_2() {
    let (_server, client) = start_server().await;
    let conf = Content {
        tree: None,
        image: None,
        conf: Some(b"x"),
    };
    for t in [T0, T0 + 60] {
        backup(&client, "store1", None, "gone", t, Crypt::None, &conf)
            .await
            .unwrap();
        backup(&client, "store1", None, "prot", t, Crypt::None, &conf)
            .await
            .unwrap();
    }
    // The client lists the group's snapshots, then deletes the group.
    let group = json!({"backup-id": "gone", "backup-type": "host"});
    let listed = client
        .get("admin/datastore/store1/snapshots", Some(&group))
        .await
        .unwrap();
    assert_eq!(listed.as_array().unwrap().len(), 2);
    let removed = client
        .delete("admin/datastore/store1/groups", Some(&group))
        .await
        .unwrap();
    assert_eq!(
        removed,
        json!({"protected-snapshots": 0, "removed-groups": 1, "removed-snapshots": 2})
    );
    let err = client
        .delete("admin/datastore/store1/groups", Some(&group))
        .await
        .unwrap_err();
    assert!(
        err.body()
            .unwrap()
            .contains("ENOENT: No such file or directory"),
        "{err}"
    );

    client
        .put(
            "admin/datastore/store1/protected",
            Some(&json!({"backup-type": "host", "backup-id": "prot", "backup-time": T0, "protected": true})),
        )
        .await
        .unwrap();
    let group = json!({"backup-id": "prot", "backup-type": "host"});
    let err = client
        .delete("admin/datastore/store1/groups", Some(&group))
        .await
        .unwrap_err();
    assert_eq!(err.status(), Some(400));
    assert!(
        err.body()
            .unwrap()
            .contains("group only partially deleted due to protected snapshots"),
        "{err}"
    );
    let mut lenient = group.clone();
    lenient["error-on-protected"] = false.into();
    let kept = client
        .delete("admin/datastore/store1/groups", Some(&lenient))
        .await
        .unwrap();
    assert_eq!(
        kept,
        json!({"protected-snapshots": 1, "removed-groups": 0, "removed-snapshots": 0})
    );
    let left = snapshots(&client, "store1", None, "prot").await;
    assert_eq!(left.len(), 1);
    assert_eq!(left[0]["backup-time"], T0);
}
