//! An operator binary started as a child process (as in a pod), with its own identity, metrics
//! port and log file; for the load benchmark and the leader election tests.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// How to start one operator process.
#[derive(Debug, Clone)]
pub struct Spawn {
    pub binary: PathBuf,
    pub kubeconfig: PathBuf,
    /// `POD_NAME`: the Lease holder identity and User-Agent marker.
    pub identity: String,
    /// Watched namespace (also the Lease's).
    pub namespace: String,
    pub leader_elect: bool,
    /// Extra environment (`PBS_CLOUD_RESYNC_INTERVAL`, ...).
    pub env: Vec<(String, String)>,
    /// Directory for the log file.
    pub log_dir: PathBuf,
}

/// A running operator process; killed when dropped.
pub struct OperatorProcess {
    child: Child,
    pub identity: String,
    pub metrics_addr: String,
    pub log: PathBuf,
}

fn free_port() -> std::io::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

impl OperatorProcess {
    pub fn start(s: &Spawn) -> std::io::Result<Self> {
        let metrics_addr = format!("127.0.0.1:{}", free_port()?);
        let log = s.log_dir.join(format!("{}.log", s.identity));
        let out = std::fs::File::create(&log)?;
        let mut cmd = Command::new(&s.binary);
        cmd.env("KUBECONFIG", &s.kubeconfig)
            .env("POD_NAME", &s.identity)
            .env("POD_NAMESPACE", &s.namespace)
            .env("WATCH_NAMESPACE", &s.namespace)
            .env("METRICS_ADDR", &metrics_addr)
            .env(
                "RUST_LOG",
                std::env::var("PBS_CLOUD_OPERATOR_LOG").unwrap_or_else(|_| "info".into()),
            )
            .envs(s.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out);
        if s.leader_elect {
            cmd.arg("--leader-elect");
        }
        let child = cmd.spawn().map_err(|e| {
            std::io::Error::new(e.kind(), format!("starting {}: {e}", s.binary.display()))
        })?;
        Ok(OperatorProcess {
            child,
            identity: s.identity.clone(),
            metrics_addr,
            log,
        })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends `sig` to the process.
    pub fn signal(&self, sig: Signal) -> nix::Result<()> {
        kill(Pid::from_raw(self.child.id() as i32), sig)
    }

    /// Waits up to `timeout` for the process to exit.
    pub async fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let start = Instant::now();
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            if start.elapsed() > timeout {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// `(status code, body)` of `GET path` on the metrics port; `None` when it does not answer.
    pub async fn http_get(&self, path: &str) -> Option<(u16, String)> {
        let work = async {
            let mut s = tokio::net::TcpStream::connect(&self.metrics_addr)
                .await
                .ok()?;
            let req = format!("GET {path} HTTP/1.0\r\nHost: operator\r\n\r\n");
            s.write_all(req.as_bytes()).await.ok()?;
            let mut buf = Vec::new();
            s.read_to_end(&mut buf).await.ok()?;
            let text = String::from_utf8_lossy(&buf).to_string();
            let code = text.split_whitespace().nth(1)?.parse().ok()?;
            let body = text.split_once("\r\n\r\n").map(|(_, b)| b.to_string())?;
            Some((code, body))
        };
        tokio::time::timeout(Duration::from_secs(5), work)
            .await
            .ok()
            .flatten()
    }

    /// True when `/readyz` answers 200.
    pub async fn ready(&self) -> bool {
        matches!(self.http_get("/readyz").await, Some((200, _)))
    }

    /// A metric's value from `/metrics` (the full line name, labels included).
    pub async fn metric(&self, name: &str) -> Option<f64> {
        let (_, body) = self.http_get("/metrics").await?;
        metric_value(&body, name)
    }

    /// Sum of every series of metric `name` (all label sets).
    pub async fn metric_sum(&self, name: &str) -> Option<f64> {
        let (_, body) = self.http_get("/metrics").await?;
        Some(
            body.lines()
                .filter(|l| {
                    l.strip_prefix(name)
                        .is_some_and(|r| r.starts_with('{') || r.starts_with(' '))
                })
                .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
                .sum(),
        )
    }

    /// The process's log so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn log_path(&self) -> &Path {
        &self.log
    }
}

/// The value of the series `name` (exact, labels included) in a Prometheus text body.
pub fn metric_value(body: &str, name: &str) -> Option<f64> {
    body.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}

impl Drop for OperatorProcess {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}
