//! Helpers of the group/namespace move tests (local and S3): the calls exactly as the stock
//! 4.2 client sends them (JSON body, then the task log with `test-status` and the status).

use pbs_cloud_e2e::{ClientError, PbsClient};
use serde_json::{json, Value};

/// `POST …/move-group` with the client's JSON body; returns the UPID.
pub async fn move_group(
    client: &PbsClient,
    store: &str,
    id: &str,
    ns: Option<&str>,
    target: &str,
    merge: Option<bool>,
) -> Result<String, ClientError> {
    let mut body = json!({"backup-type": "host", "backup-id": id, "target-ns": target});
    if let Some(ns) = ns {
        body["ns"] = ns.into();
    }
    if let Some(merge) = merge {
        body["merge-group"] = merge.into();
    }
    let upid = client
        .post(&format!("admin/datastore/{store}/move-group"), Some(&body))
        .await?;
    Ok(upid
        .as_str()
        .expect("move-group answers a UPID")
        .to_string())
}

/// `POST …/move-namespace`; returns the UPID.
pub async fn move_namespace(
    client: &PbsClient,
    store: &str,
    ns: &str,
    target: &str,
    extra: Value,
) -> Result<String, ClientError> {
    let mut body = json!({"ns": ns, "target-ns": target});
    if let Value::Object(extra) = extra {
        for (k, v) in extra {
            body[k] = v;
        }
    }
    let upid = client
        .post(
            &format!("admin/datastore/{store}/move-namespace"),
            Some(&body),
        )
        .await?;
    Ok(upid
        .as_str()
        .expect("move-namespace answers a UPID")
        .to_string())
}

fn encoded(upid: &str) -> String {
    percent_encoding::utf8_percent_encode(upid, percent_encoding::NON_ALPHANUMERIC).to_string()
}

/// Follows a task like `proxmox-backup-client` does: `log?limit=500&start=N&test-status=true`
/// until `active` is false, then `status`. Returns the status and the log lines without their
/// timestamp prefix.
pub async fn follow_task(client: &PbsClient, upid: &str) -> (Value, Vec<String>) {
    let mut lines = Vec::new();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    loop {
        let start = lines.len() + 1;
        let resp = client
            .raw(
                http::Method::GET,
                &format!(
                    "/api2/json/nodes/localhost/tasks/{}/log?limit=500&start={start}&test-status=true",
                    encoded(upid)
                ),
                Some("application/x-www-form-urlencoded"),
                Vec::new(),
                &[],
                true,
            )
            .await
            .expect("task log request");
        assert_eq!(resp.status, 200, "task log: {}", resp.text());
        assert_eq!(
            resp.headers["content-type"], "application/json",
            "PBS labels the task log without charset"
        );
        let page: Value = serde_json::from_slice(&resp.body).unwrap();
        let data = page["data"].as_array().expect("log data");
        if let Some(first) = data.first() {
            assert_eq!(first["n"], start as u64, "first line number is `start`");
        }
        for line in data {
            let t = line["t"].as_str().unwrap();
            // `2026-01-01T12:00:00+01:00: text`: the client strips 27 characters.
            assert_eq!(&t[25..27], ": ", "timestamp prefix of {t:?}");
            lines.push(t[27..].to_string());
        }
        assert_eq!(page["success"], 1);
        if page["active"] == false {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "task {upid} still active"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let status = client
        .get(
            &format!("nodes/localhost/tasks/{}/status", encoded(upid)),
            None,
        )
        .await
        .expect("task status");
    assert_eq!(status["status"], "stopped", "{status}");
    (status, lines)
}

/// Backup times of group `host/<id>` in namespace `ns` (empty when the group is gone).
pub async fn group_times(client: &PbsClient, store: &str, ns: Option<&str>, id: &str) -> Vec<i64> {
    let mut params = json!({"backup-type": "host", "backup-id": id});
    if let Some(ns) = ns {
        params["ns"] = ns.into();
    }
    match client
        .get(&format!("admin/datastore/{store}/snapshots"), Some(&params))
        .await
    {
        Ok(list) => list
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["backup-time"].as_i64().unwrap())
            .collect(),
        Err(e) if e.status() == Some(404) => Vec::new(),
        Err(e) => panic!("snapshot list of host/{id}: {e}"),
    }
}

/// Namespaces of the store (paths, root as "").
pub async fn namespaces(client: &PbsClient, store: &str) -> Vec<String> {
    client
        .get(&format!("admin/datastore/{store}/namespace"), None)
        .await
        .unwrap()
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["ns"].as_str().unwrap().to_string())
        .collect()
}

/// Creates namespace `name` below `parent` as the client does.
pub async fn create_ns(client: &PbsClient, store: &str, parent: &str, name: &str) {
    client
        .post(
            &format!("admin/datastore/{store}/namespace"),
            Some(&json!({"name": name, "parent": parent})),
        )
        .await
        .unwrap_or_else(|e| panic!("create namespace {parent}/{name}: {e}"));
}
