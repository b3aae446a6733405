//! Two servers that sync: one with a user another server logs in as, and one whose config
//! names the first as its remote `site-a` with sync jobs (server/docs/design.md#sync). Used by
//! the sync tests and `pbs-bench sync`.

use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::error::{ClientError, Result};
use crate::{PbsClient, TestServer};

/// Name of the remote in configs made by [`with_remote`].
pub const REMOTE: &str = "site-a";

/// A server with one extra user holding `role` on `/datastore/store1` (added while it is
/// stopped, after a first start made its data directory and admin).
pub async fn with_user(user: &str, password: &str, role: &str) -> Result<(TestServer, PbsClient)> {
    let mut server = TestServer::prepare()?;
    server.launch().await?;
    server.stop().await;
    server.manage(&["user", "add", user], &format!("{password}\n"))?;
    server.manage(&["acl", "add", "/datastore/store1", user, role], "")?;
    server.launch().await?;
    let admin = server.admin_client().await?;
    Ok((server, admin))
}

/// One `[[remote]]` of a config made by [`with_remotes`].
pub struct RemoteLogin<'a> {
    pub name: &'a str,
    pub server: &'a TestServer,
    /// The server's port, or a proxy's in front of it.
    pub port: u16,
    pub user: &'a str,
    pub password: &'a str,
}

/// A server whose remote `site-a` is `remote` reached at `port` (the server itself or a
/// proxy in front of it), logging in as `user` with the password in a file under
/// `secret_dir`, and with `jobs` (TOML) in its config.
pub async fn with_remote(
    remote: &TestServer,
    port: u16,
    (user, password): (&str, &str),
    secret_dir: &Path,
    jobs: &str,
) -> Result<(TestServer, PbsClient)> {
    let login = RemoteLogin {
        name: REMOTE,
        server: remote,
        port,
        user,
        password,
    };
    with_remotes(&[login], secret_dir, jobs).await
}

/// A server with the given remotes (passwords in files under `secret_dir`) and `jobs`.
pub async fn with_remotes(
    remotes: &[RemoteLogin<'_>],
    secret_dir: &Path,
    jobs: &str,
) -> Result<(TestServer, PbsClient)> {
    let mut config = String::new();
    for remote in remotes {
        let secret = secret_dir.join(format!("{}.secret", remote.name));
        std::fs::write(&secret, format!("{}\n", remote.password))
            .map_err(|e| ClientError::io("write a remote's secret file", e))?;
        config.push_str(&format!(
            "[[remote]]\nname = \"{}\"\nhost = \"127.0.0.1\"\nport = {}\n\
             auth_id = \"{}\"\nfingerprint = \"{}\"\nsecret_file = \"{}\"\n",
            remote.name,
            remote.port,
            remote.user,
            remote.server.fingerprint,
            secret.display(),
        ));
    }
    config.push_str(jobs);
    let mut server = TestServer::prepare()?;
    server.set_config(&config)?;
    server.launch().await?;
    let admin = server.admin_client().await?;
    Ok((server, admin))
}

/// What one run of a sync job did.
pub struct JobRun {
    pub upid: String,
    /// `OK`, or the error.
    pub exitstatus: String,
    pub log: Vec<String>,
    /// From the start request to the task's end, as the caller sees it.
    pub elapsed: Duration,
}

/// Starts sync job `id` now (`POST /admin/sync/{id}/run`) and follows its task to the end
/// (for at most `limit`).
pub async fn run_job(client: &PbsClient, id: &str, limit: Duration) -> Result<JobRun> {
    let started = Instant::now();
    let upid = client.post(&format!("admin/sync/{id}/run"), None).await?;
    let upid = upid
        .as_str()
        .ok_or_else(|| ClientError::Protocol(format!("sync run answered {upid}")))?
        .to_string();
    let status = wait_stopped(client, &upid, limit).await?;
    let elapsed = started.elapsed();
    let log = task_log(client, &upid).await?;
    Ok(JobRun {
        exitstatus: status["exitstatus"]
            .as_str()
            .unwrap_or_default()
            .to_string(),
        upid,
        log,
        elapsed,
    })
}

/// A task's status once it stopped (polled like the stock client follows a task).
pub async fn wait_stopped(client: &PbsClient, upid: &str, limit: Duration) -> Result<Value> {
    let started = Instant::now();
    let encoded =
        percent_encoding::utf8_percent_encode(upid, percent_encoding::NON_ALPHANUMERIC).to_string();
    loop {
        let status = client
            .get(&format!("nodes/localhost/tasks/{encoded}/status"), None)
            .await?;
        if status["status"] == "stopped" {
            return Ok(status);
        }
        if started.elapsed() > limit {
            return Err(ClientError::Protocol(format!(
                "task {upid} did not stop within {limit:?}"
            )));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The lines of a task's log.
pub async fn task_log(client: &PbsClient, upid: &str) -> Result<Vec<String>> {
    let encoded =
        percent_encoding::utf8_percent_encode(upid, percent_encoding::NON_ALPHANUMERIC).to_string();
    let log = client
        .get(
            &format!("nodes/localhost/tasks/{encoded}/log"),
            Some(&json!({ "start": 0, "limit": 100_000 })),
        )
        .await?;
    Ok(log
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|l| l["t"].as_str().map(str::to_string))
        .collect())
}

/// A task that has stopped: its UPID, exit status (`OK` or the error) and log.
#[derive(Debug, Clone)]
pub struct StoppedTask {
    pub upid: String,
    pub exitstatus: String,
    pub log: Vec<String>,
}

/// A server's tasks of type `typefilter` started by `user` and not in `skip`, oldest first,
/// each waited for until it stopped (a session's task ends just after its connection).
pub async fn stopped_tasks(
    client: &PbsClient,
    typefilter: &str,
    user: &str,
    skip: &std::collections::BTreeSet<String>,
) -> Result<Vec<StoppedTask>> {
    let tasks = client
        .get(
            "nodes/localhost/tasks",
            Some(&json!({ "typefilter": typefilter, "limit": 100_000 })),
        )
        .await?;
    let mut stopped = Vec::new();
    for task in tasks.as_array().into_iter().flatten().rev() {
        let Some(upid) = task["upid"].as_str() else {
            continue;
        };
        if task["user"] != user || skip.contains(upid) {
            continue;
        }
        let status = wait_stopped(client, upid, Duration::from_secs(60)).await?;
        stopped.push(StoppedTask {
            upid: upid.to_string(),
            exitstatus: status["exitstatus"]
                .as_str()
                .unwrap_or_default()
                .to_string(),
            log: task_log(client, upid).await?,
        });
    }
    Ok(stopped)
}

/// Chunks a server's reader sessions served to `user` in tasks not in `seen` (which they are
/// added to): the `download chunk` lines a reader opened with `debug=true` logs.
pub async fn chunks_served(
    client: &PbsClient,
    user: &str,
    seen: &mut std::collections::BTreeSet<String>,
) -> Result<usize> {
    let mut served = 0;
    for task in stopped_tasks(client, "reader", user, seen).await? {
        served += task
            .log
            .iter()
            .filter(|l| l.contains(": download chunk "))
            .count();
        seen.insert(task.upid);
    }
    Ok(served)
}

/// The number in `… in N chunks` of a sync job's summary line.
pub fn summary_chunks(log: &[String]) -> Option<usize> {
    let line = log.iter().find(|l| l.contains("Summary: sync job "))?;
    let (_, rest) = line.split_once(" in ")?;
    rest.split(' ').next()?.parse().ok()
}

/// Chunk files in a server's local datastores.
pub fn chunk_files(server: &TestServer) -> usize {
    fn walk(dir: &Path, in_chunks: bool, count: &mut usize) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            let name = entry.file_name().to_string_lossy().to_string();
            if path.is_dir() {
                walk(&path, in_chunks || name == ".chunks", count);
            } else if in_chunks && name.len() == 64 {
                *count += 1;
            }
        }
    }
    let mut count = 0;
    walk(server.data_dir(), false, &mut count);
    count
}
