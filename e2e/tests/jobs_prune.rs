//! Prune jobs with the real server: a job started through `POST /admin/prune/{id}/run`
//! (dry run, then for real) and a job the scheduler starts on its own; both run as `prunejob`
//! tasks, show their state in `GET /admin/prune` and land in the datastore's job history.

mod common;

use std::time::Duration;

use common::*;
use pbs_cloud_e2e::{Crypt, PbsClient, TestServer};
use serde_json::{json, Value};

const CONFIG: &str = r#"
[[prune_job]]
id = "manual"
store = "store1"
schedule = "2099-01-01"
keep_last = 2
group_filter = ["group:host/run"]

[[prune_job]]
id = "sched"
store = "store1"
schedule = "*:*:0/3"
keep_last = 1
group_filter = ["regex:^host/sch", "exclude:type:vm"]
"#;

async fn times(client: &PbsClient, id: &str) -> Vec<i64> {
    snapshots(client, "store1", None, id)
        .await
        .iter()
        .map(|s| s["backup-time"].as_i64().unwrap())
        .collect()
}

async fn three_backups(client: &PbsClient, id: &str) {
    for i in 0..3 {
        let conf = format!("{id} run {i}\n");
        let content = Content {
            tree: None,
            image: None,
            conf: Some(conf.as_bytes()),
        };
        backup(
            client,
            "store1",
            None,
            id,
            T0 + i * 3600,
            Crypt::None,
            &content,
        )
        .await
        .unwrap();
    }
}

fn job<'a>(list: &'a Value, id: &str) -> &'a Value {
    list.as_array()
        .unwrap()
        .iter()
        .find(|j| j["id"] == id)
        .unwrap_or_else(|| panic!("job {id} not listed: {list}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prune_jobs_run_now_and_on_schedule() {
    let mut server = TestServer::prepare().unwrap();
    server.set_config(CONFIG).unwrap();
    server
        .launch()
        .await
        .expect("start pbs-cloud-server (build it with `cargo build -p pbs-cloud-server`)");
    let client = server.admin_client().await.unwrap();
    three_backups(&client, "run").await;
    three_backups(&client, "other").await;

    // Dry run: the log says what would go, nothing goes.
    let upid = client
        .post("admin/prune/manual/run", Some(&json!({"dry-run": true})))
        .await
        .unwrap();
    let upid = upid.as_str().unwrap().to_string();
    assert!(upid.contains(":prunejob:store1\\x3amanual:"), "{upid}");
    let (status, log) = wait_task(&client, &upid).await;
    assert_eq!(status["exitstatus"], "OK", "{log:?}");
    let oldest = format!("host/run/{}", pbs_cloud_e2e::timefmt::epoch_to_rfc3339(T0));
    assert!(
        log.iter()
            .any(|l| l.ends_with(&format!("would remove {oldest}"))),
        "{log:?}"
    );
    assert_eq!(times(&client, "run").await.len(), 3);

    // For real: keep-last 2 of host/run only.
    let upid = client.post("admin/prune/manual/run", None).await.unwrap();
    let upid = upid.as_str().unwrap().to_string();
    let (status, log) = wait_task(&client, &upid).await;
    assert_eq!(status["exitstatus"], "OK", "{log:?}");
    assert_eq!(status["type"], "prunejob");
    assert!(
        log.iter().any(|l| l.ends_with(&format!("remove {oldest}"))),
        "{log:?}"
    );
    assert_eq!(times(&client, "run").await, vec![T0 + 3600, T0 + 7200]);
    assert_eq!(times(&client, "other").await.len(), 3, "filtered out");

    let jobs = client.get("admin/prune", None).await.unwrap();
    let manual = job(&jobs, "manual");
    assert_eq!(manual["last-run-upid"], upid.as_str());
    assert_eq!(manual["last-run-state"], "OK");
    assert_eq!(manual["keep-last"], 2);
    assert!(manual["next-run"].as_i64().unwrap() > 4_000_000_000);
    assert_eq!(job(&jobs, "sched")["schedule"], "*:*:0/3");
    let err = client.post("admin/prune/nope/run", None).await.unwrap_err();
    assert!(err.to_string().contains("no prune job 'nope'"), "{err}");

    // The scheduler prunes host/sch* to its newest snapshot within a few seconds.
    three_backups(&client, "sched").await;
    let mut left = Vec::new();
    for _ in 0..150 {
        left = times(&client, "sched").await;
        if left == [T0 + 7200] {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(left, vec![T0 + 7200], "scheduled prune did not run");
    let tasks = client.get("nodes/localhost/tasks", None).await.unwrap();
    let scheduled: Vec<&Value> = tasks
        .as_array()
        .unwrap()
        .iter()
        .filter(|t| {
            t["upid"]
                .as_str()
                .unwrap()
                .contains(":prunejob:store1\\x3asched:")
        })
        .collect();
    assert!(!scheduled.is_empty(), "{tasks}");
    assert!(
        scheduled.iter().all(|t| t["user"] == "root@pam"),
        "{scheduled:?}"
    );

    // History: the dry run, the real run and scheduled runs, with what they removed.
    let history = client
        .get(
            "admin/datastore/store1/job-history",
            Some(&json!({"kind": "prune"})),
        )
        .await
        .unwrap();
    let runs = history.as_array().unwrap();
    let manual: Vec<&Value> = runs.iter().filter(|r| r["job-id"] == "manual").collect();
    assert_eq!(manual.len(), 2, "{history}");
    // Both may finish within one second: tell them apart by the flag.
    let dry = manual
        .iter()
        .find(|r| r["dry-run"] == true)
        .expect("dry run");
    let real = manual
        .iter()
        .find(|r| r["dry-run"] == false)
        .expect("real run");
    assert_eq!(dry["summary"]["removed"], json!([oldest]));
    assert_eq!(real["upid"], upid.as_str());
    assert_eq!(real["summary"]["removed"], json!([oldest]));
    let removed_by_schedule: usize = runs
        .iter()
        .filter(|r| r["job-id"] == "sched")
        .map(|r| r["summary"]["removed"].as_array().map_or(0, Vec::len))
        .sum();
    assert_eq!(removed_by_schedule, 2, "{history}");
    assert_eq!(times(&client, "other").await.len(), 3);
}

/// A daily job whose last run was two days ago (the server was down at its event) runs once
/// right after the server starts, as PBS does, and not again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missed_run_happens_once_after_start() {
    let mut server = TestServer::prepare().unwrap();
    server
        .set_config(
            "[[prune_job]]\nid = \"nightly\"\nstore = \"store1\"\nschedule = \"daily\"\nkeep_last = 1\n",
        )
        .unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let states = server.data_dir().join("jobstates");
    std::fs::create_dir_all(&states).unwrap();
    let state = json!({"created": now - 5 * 86_400, "last-start": now - 2 * 86_400});
    std::fs::write(states.join("prunejob-nightly.json"), state.to_string()).unwrap();
    server
        .launch()
        .await
        .expect("start pbs-cloud-server (build it with `cargo build -p pbs-cloud-server`)");
    let client = server.admin_client().await.unwrap();
    let mut runs = Vec::new();
    for _ in 0..50 {
        let tasks = client.get("nodes/localhost/tasks", None).await.unwrap();
        runs = tasks
            .as_array()
            .unwrap()
            .iter()
            .filter(|t| t["worker_type"] == "prunejob")
            .cloned()
            .collect();
        if !runs.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(runs.len(), 1, "the missed run starts after start");
    tokio::time::sleep(Duration::from_secs(3)).await;
    let tasks = client.get("nodes/localhost/tasks", None).await.unwrap();
    let count = tasks
        .as_array()
        .unwrap()
        .iter()
        .filter(|t| t["worker_type"] == "prunejob")
        .count();
    assert_eq!(count, 1, "and only once: {tasks}");
    let jobs = client.get("admin/prune", None).await.unwrap();
    let nightly = job(&jobs, "nightly");
    assert_eq!(nightly["last-run-upid"], runs[0]["upid"]);
    assert!(nightly["next-run"].as_i64().unwrap() > now);
}
