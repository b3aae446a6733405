//! The in-memory task registry: spawning jobs under a UPID, their logs, status and abort flags.

use std::collections::VecDeque;
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::Serialize;

use super::upid::{process_start, Upid};

/// How many tasks (finished or not) the registry remembers.
pub const MAX_TASKS: usize = 1000;

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// Local time prefix of a log line: 25 characters, then `": "` (27 in total).
fn timestamp() -> String {
    chrono::Local::now()
        .format("%Y-%m-%dT%H:%M:%S%:z")
        .to_string()
}

#[derive(Default)]
struct TaskState {
    lines: Vec<String>,
    warnings: u64,
    /// `(endtime, exitstatus)` once finished.
    end: Option<(i64, String)>,
}

struct Task {
    upid: Upid,
    upid_text: String,
    state: Mutex<TaskState>,
    abort: AtomicBool,
    /// Wakes tasks that wait for an abort request instead of polling for it.
    abort_notify: tokio::sync::Notify,
    /// Wakes those waiting for the task to end ([`TaskRegistry::finished`]).
    end_notify: tokio::sync::Notify,
}

impl Task {
    fn state(&self) -> std::sync::MutexGuard<'_, TaskState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
    fn push_line(&self, line: &str) {
        let ts = timestamp();
        let mut state = self.state();
        for part in line.split('\n') {
            state.lines.push(format!("{ts}: {part}"));
        }
    }

    /// Writes the final `TASK …` line and the end state (once).
    fn end(&self, result: Result<(), String>) {
        if self.state().end.is_some() {
            return;
        }
        let warnings = self.state().warnings;
        let exit = match result {
            Ok(()) if warnings > 0 => format!("WARNINGS: {warnings}"),
            Ok(()) => "OK".to_string(),
            Err(msg) => format!("ERROR: {msg}"),
        };
        self.push_line(&format!("TASK {exit}"));
        self.state().end = Some((now(), exit));
        self.end_notify.notify_waiters();
    }
}

/// Handle a job uses to write its log and to notice an abort request.
#[derive(Clone)]
pub struct TaskLog {
    task: Arc<Task>,
}

impl TaskLog {
    /// Appends a line (timestamp-prefixed).
    pub fn log(&self, line: impl AsRef<str>) {
        self.task.push_line(line.as_ref());
    }
    /// Appends a `WARN: ` line; warnings turn an `OK` exit status into `WARNINGS: n`.
    pub fn warn(&self, line: impl AsRef<str>) {
        self.task.push_line(&format!("WARN: {}", line.as_ref()));
        self.task.state().warnings += 1;
    }
    /// True once someone asked to abort the task; jobs poll this between steps.
    pub fn is_aborted(&self) -> bool {
        self.task.abort.load(Ordering::Relaxed)
    }
    pub fn upid(&self) -> &str {
        &self.task.upid_text
    }
    /// Resolves once someone asked to abort the task (at once if that already happened).
    pub async fn aborted(&self) {
        loop {
            let notified = self.task.abort_notify.notified();
            if self.is_aborted() {
                return;
            }
            notified.await;
        }
    }
}

/// A task driven by its caller rather than by a spawned future (backup and reader sessions):
/// it runs until [`RunningTask::finish`]; dropping the handle ends it as an error.
pub struct RunningTask {
    log: TaskLog,
}

impl RunningTask {
    /// The task's log (cheap to clone into the code that does the work).
    pub fn log(&self) -> &TaskLog {
        &self.log
    }
    pub fn upid(&self) -> &str {
        self.log.upid()
    }
    /// Ends the task: `Ok` as `OK` (or `WARNINGS: n`), `Err(msg)` as `ERROR: msg`.
    pub fn finish(self, result: Result<(), String>) {
        self.log.task.end(result);
    }
}

impl Drop for RunningTask {
    fn drop(&mut self) {
        self.log
            .task
            .end(Err("task ended without a final state".to_string()));
    }
}

/// `GET …/tasks/{upid}/status`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct TaskStatus {
    pub upid: String,
    pub node: String,
    pub pid: u32,
    pub pstart: u64,
    pub starttime: i64,
    #[serde(rename = "type")]
    pub worker_type: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// The user part of the task's auth id.
    pub user: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tokenid: Option<String>,
    /// `running` or `stopped`.
    pub status: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exitstatus: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub endtime: Option<i64>,
    /// Full auth id that started the task (for permission checks; not sent).
    #[serde(skip)]
    pub authid: String,
}

/// One entry of `GET /nodes/localhost/tasks`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct TaskListItem {
    pub upid: String,
    pub node: String,
    pub pid: u32,
    pub pstart: u64,
    pub starttime: i64,
    pub worker_type: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub worker_id: Option<String>,
    pub user: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub endtime: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
    #[serde(skip)]
    pub authid: String,
}

/// A page of a task log: lines numbered from 1.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TaskLogPage {
    pub lines: Vec<(u64, String)>,
    pub total: u64,
    pub active: bool,
}

/// All tasks of this server process.
pub struct TaskRegistry {
    node: String,
    pid: u32,
    pstart: u64,
    counter: AtomicU64,
    tasks: Mutex<VecDeque<Arc<Task>>>,
}

fn split_authid(authid: &str) -> (String, Option<String>) {
    // The realm cannot contain '!', so a '!' after the last '@' starts the token name.
    match authid
        .rfind('@')
        .and_then(|at| authid[at..].find('!').map(|i| at + i))
    {
        Some(i) => (authid[..i].to_string(), Some(authid[i + 1..].to_string())),
        None => (authid.to_string(), None),
    }
}

impl TaskRegistry {
    /// A registry for node name `node` (appears in every UPID).
    pub fn new(node: &str) -> Self {
        Self {
            node: node.to_string(),
            pid: std::process::id(),
            pstart: process_start(),
            counter: AtomicU64::new(0),
            tasks: Mutex::new(VecDeque::new()),
        }
    }

    fn tasks(&self) -> std::sync::MutexGuard<'_, VecDeque<Arc<Task>>> {
        self.tasks.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn find(&self, upid: &str) -> Option<Arc<Task>> {
        self.tasks().iter().find(|t| t.upid_text == upid).cloned()
    }

    /// Registers a task whose progress the caller reports through the returned handle.
    pub fn start(&self, worker_type: &str, worker_id: Option<&str>, authid: &str) -> RunningTask {
        let upid = Upid {
            node: self.node.clone(),
            pid: self.pid,
            pstart: self.pstart,
            task_id: self.counter.fetch_add(1, Ordering::Relaxed),
            starttime: now(),
            worker_type: worker_type.to_string(),
            worker_id: worker_id.map(str::to_string),
            authid: authid.to_string(),
        };
        let task = Arc::new(Task {
            upid_text: upid.to_string(),
            upid,
            state: Mutex::new(TaskState::default()),
            abort: AtomicBool::new(false),
            abort_notify: tokio::sync::Notify::new(),
            end_notify: tokio::sync::Notify::new(),
        });
        {
            let mut tasks = self.tasks();
            tasks.push_back(task.clone());
            while tasks.len() > MAX_TASKS {
                match tasks.iter().position(|t| t.state().end.is_some()) {
                    Some(i) => {
                        tasks.remove(i);
                    }
                    None => break,
                }
            }
        }
        RunningTask {
            log: TaskLog { task },
        }
    }

    /// Starts `job` on the tokio runtime and returns its UPID. `Ok(())` ends as `OK` (or
    /// `WARNINGS: n`), `Err(msg)` as `ERROR: msg`; a panic counts as an error.
    pub fn spawn<F, Fut>(
        &self,
        worker_type: &str,
        worker_id: Option<&str>,
        authid: &str,
        job: F,
    ) -> String
    where
        F: FnOnce(TaskLog) -> Fut,
        Fut: Future<Output = Result<(), String>> + Send + 'static,
    {
        let running = self.start(worker_type, worker_id, authid);
        let upid_text = running.upid().to_string();
        let handle = tokio::spawn(job(running.log().clone()));
        tokio::spawn(async move {
            let result = match handle.await {
                Ok(result) => result,
                Err(err) if err.is_panic() => Err("task panicked".to_string()),
                Err(_) => Err("task was cancelled".to_string()),
            };
            running.finish(result);
        });
        upid_text
    }

    /// Resolves with the status of a task once it has ended (at once if it has); `None` if
    /// unknown.
    pub async fn finished(&self, upid: &str) -> Option<TaskStatus> {
        let task = self.find(upid)?;
        loop {
            let notified = task.end_notify.notified();
            tokio::pin!(notified);
            // Registered before the check, so an end between check and await is not missed.
            notified.as_mut().enable();
            if task.state().end.is_some() {
                return self.status(upid);
            }
            notified.await;
        }
    }

    /// Status of a task, `None` if unknown.
    pub fn status(&self, upid: &str) -> Option<TaskStatus> {
        let task = self.find(upid)?;
        let end = task.state().end.clone();
        let (user, tokenid) = split_authid(&task.upid.authid);
        Some(TaskStatus {
            upid: task.upid_text.clone(),
            node: task.upid.node.clone(),
            pid: task.upid.pid,
            pstart: task.upid.pstart,
            starttime: task.upid.starttime,
            worker_type: task.upid.worker_type.clone(),
            id: task.upid.worker_id.clone(),
            user,
            tokenid,
            status: if end.is_some() { "stopped" } else { "running" }.to_string(),
            exitstatus: end.as_ref().map(|(_, s)| s.clone()),
            endtime: end.map(|(t, _)| t),
            authid: task.upid.authid.clone(),
        })
    }

    /// Log lines numbered `n >= start` (1-based), at most `limit` of them.
    pub fn log(&self, upid: &str, start: u64, limit: u64) -> Option<TaskLogPage> {
        let task = self.find(upid)?;
        let state = task.state();
        let lines = state
            .lines
            .iter()
            .enumerate()
            .map(|(i, l)| (i as u64 + 1, l))
            .filter(|(n, _)| *n >= start)
            .take(usize::try_from(limit).unwrap_or(usize::MAX))
            .map(|(n, l)| (n, l.clone()))
            .collect();
        Some(TaskLogPage {
            lines,
            total: state.lines.len() as u64,
            active: state.end.is_none(),
        })
    }

    /// The whole log as text, one line per line (for `download=1`).
    pub fn log_text(&self, upid: &str) -> Option<String> {
        let task = self.find(upid)?;
        let state = task.state();
        let mut text = state.lines.join("\n");
        if !text.is_empty() {
            text.push('\n');
        }
        Some(text)
    }

    /// Asks a task to stop. `None` if unknown, `Some(false)` if it had already finished.
    pub fn abort(&self, upid: &str) -> Option<bool> {
        let task = self.find(upid)?;
        let running = task.state().end.is_none();
        if running && !task.abort.swap(true, Ordering::Relaxed) {
            task.push_line("received abort request");
            task.abort_notify.notify_waiters();
        }
        Some(running)
    }

    /// All remembered tasks, newest first.
    pub fn list(&self) -> Vec<TaskListItem> {
        let tasks: Vec<Arc<Task>> = self.tasks().iter().rev().cloned().collect();
        tasks
            .into_iter()
            .map(|task| {
                let end = task.state().end.clone();
                TaskListItem {
                    upid: task.upid_text.clone(),
                    node: task.upid.node.clone(),
                    pid: task.upid.pid,
                    pstart: task.upid.pstart,
                    starttime: task.upid.starttime,
                    worker_type: task.upid.worker_type.clone(),
                    worker_id: task.upid.worker_id.clone(),
                    user: task.upid.authid.clone(),
                    endtime: end.as_ref().map(|(t, _)| *t),
                    status: end.map(|(_, s)| s),
                    authid: task.upid.authid.clone(),
                }
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    async fn wait_done(reg: &TaskRegistry, upid: &str) -> TaskStatus {
        for _ in 0..200 {
            let s = reg.status(upid).unwrap();
            if s.status == "stopped" {
                return s;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        panic!("task {upid} did not finish");
    }

    #[tokio::test]
    async fn spawn_log_and_status() {
        let reg = TaskRegistry::new("node1");
        let upid = reg.spawn(
            "garbage_collection",
            Some("s1"),
            "alice@pbs!t",
            |log| async move {
                log.log("starting");
                log.warn("something odd");
                log.log("two\nlines");
                Ok(())
            },
        );
        let parsed: Upid = upid.parse().unwrap();
        assert_eq!(parsed.node, "node1");
        assert_eq!(parsed.pid, std::process::id());
        assert!(upid.ends_with(":garbage_collection:s1:alice@pbs!t:"));
        let status = wait_done(&reg, &upid).await;
        assert_eq!(status.exitstatus.as_deref(), Some("WARNINGS: 1"));
        assert_eq!(status.user, "alice@pbs");
        assert_eq!(status.tokenid.as_deref(), Some("t"));
        assert!(status.endtime.is_some());

        let page = reg.log(&upid, 1, 500).unwrap();
        assert_eq!(page.total, 5);
        assert!(!page.active);
        assert_eq!(page.lines[0].0, 1);
        assert_eq!(&page.lines[0].1[25..27], ": ");
        assert!(page.lines[0].1.ends_with(": starting"));
        assert!(page.lines[1].1.ends_with(": WARN: something odd"));
        assert!(page.lines[4].1.ends_with(": TASK WARNINGS: 1"));
        let page = reg.log(&upid, 2, 2).unwrap();
        assert_eq!(
            page.lines.iter().map(|l| l.0).collect::<Vec<_>>(),
            vec![2, 3]
        );
        assert!(reg.log(&upid, 0, 0).unwrap().lines.is_empty());
        assert_eq!(reg.log_text(&upid).unwrap().lines().count(), 5);
        assert_eq!(reg.list().len(), 1);
        assert!(reg.status("UPID:nope").is_none());
    }

    #[tokio::test]
    async fn errors_and_abort() {
        let reg = TaskRegistry::new("n");
        let failed = reg.spawn("prune", None, "root@pam", |_log| async {
            Err("boom".into())
        });
        assert_eq!(
            wait_done(&reg, &failed).await.exitstatus.as_deref(),
            Some("ERROR: boom")
        );
        let looping = reg.spawn("verify", Some("s"), "root@pam", |log| async move {
            while !log.is_aborted() {
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            Err("aborted".into())
        });
        assert_eq!(reg.status(&looping).unwrap().status, "running");
        assert!(reg.log(&looping, 1, 10).unwrap().active);
        assert_eq!(reg.abort(&looping), Some(true));
        let st = wait_done(&reg, &looping).await;
        assert_eq!(st.exitstatus.as_deref(), Some("ERROR: aborted"));
        assert_eq!(reg.abort(&looping), Some(false));
        assert_eq!(reg.abort("UPID:x"), None);
        let ok = reg.spawn("x", None, "root@pam", |_| async { Ok(()) });
        assert_eq!(wait_done(&reg, &ok).await.exitstatus.as_deref(), Some("OK"));
        assert_eq!(reg.list()[0].upid, ok, "newest first");
    }

    #[tokio::test]
    async fn running_task_handle_wakes_on_abort_and_ends_once() {
        let reg = TaskRegistry::new("n");
        let running = reg.start("backup", Some("s1:host/a"), "alice@pbs");
        let upid = running.upid().to_string();
        let log = running.log().clone();
        let waiter = tokio::spawn(async move { log.aborted().await });
        assert_eq!(reg.status(&upid).unwrap().status, "running");
        assert_eq!(reg.abort(&upid), Some(true));
        tokio::time::timeout(Duration::from_secs(5), waiter)
            .await
            .expect("abort wakes the waiter")
            .unwrap();
        // A second abort request is not logged twice.
        assert_eq!(reg.abort(&upid), Some(true));
        running.log().log("backup failed: task aborted");
        running.finish(Err("task aborted".into()));
        let st = reg.status(&upid).unwrap();
        assert_eq!(st.exitstatus.as_deref(), Some("ERROR: task aborted"));
        let text = reg.log_text(&upid).unwrap();
        assert_eq!(text.matches("received abort request").count(), 1);
        assert!(text.trim_end().ends_with(": TASK ERROR: task aborted"));

        let dropped = reg.start("reader", None, "alice@pbs");
        let upid = dropped.upid().to_string();
        drop(dropped);
        let st = reg.status(&upid).unwrap();
        assert_eq!(st.status, "stopped");
        assert!(st.exitstatus.unwrap().starts_with("ERROR: "));
    }
}
