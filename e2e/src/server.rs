//! `TestServer`: runs the `pbs-cloud-server` binary on a temporary data directory and a
//! free local port, and reads the connection details it prints on stdout.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

use crate::error::{ClientError, Result};
use crate::http::PbsClient;
use crate::repo::Repository;

const STARTUP_TIMEOUT: Duration = Duration::from_secs(60);

/// A running server process (killed on drop) with its credentials.
pub struct TestServer {
    child: Option<Child>,
    data_dir: tempfile::TempDir,
    port: u16,
    config: Option<PathBuf>,
    pub repository: Repository,
    pub password: String,
    pub fingerprint: String,
    /// Raw stdout lines seen during startup (for diagnostics).
    pub startup_lines: Vec<String>,
    /// Environment variables set for the next start (e.g. fault injection).
    env: Vec<(String, String)>,
    /// Stdout lines of the running process after startup.
    output: std::sync::Arc<Output>,
}

/// Stdout lines of a running server, and a wake-up for each new one.
#[derive(Default)]
pub struct Output {
    lines: std::sync::Mutex<Vec<String>>,
    added: tokio::sync::Notify,
}

impl TestServer {
    /// Starts a server on a fresh data directory.
    pub async fn start() -> Result<TestServer> {
        let mut s = Self::prepare()?;
        s.spawn().await?;
        Ok(s)
    }

    /// A server that is not running yet: data dir and port chosen, so tests can run
    /// [`manage`](Self::manage) commands or write a config before [`launch`](Self::launch).
    pub fn prepare() -> Result<TestServer> {
        let data_dir =
            tempfile::tempdir().map_err(|e| ClientError::io("create temp data dir", e))?;
        let port = free_port()?;
        Ok(TestServer {
            child: None,
            data_dir,
            port,
            config: None,
            repository: Repository::parse("store1")?,
            password: String::new(),
            fingerprint: String::new(),
            startup_lines: Vec::new(),
            env: Vec::new(),
            output: Default::default(),
        })
    }

    /// Writes `text` as the server's `--config` file (in the data dir).
    pub fn set_config(&mut self, text: &str) -> Result<()> {
        let path = self.data_dir.path().join("server.toml");
        std::fs::write(&path, text).map_err(|e| ClientError::io("write config", e))?;
        self.config = Some(path);
        Ok(())
    }

    /// Sets an environment variable for every later start of the server (e.g. the debug
    /// build's fault injection `PBS_CLOUD_FAULT_PAUSE`).
    pub fn set_env(&mut self, key: &str, value: &str) {
        self.env.retain(|(k, _)| k != key);
        self.env.push((key.to_string(), value.to_string()));
    }

    /// Drops every variable set with [`set_env`](Self::set_env).
    pub fn clear_env(&mut self) {
        self.env.clear();
    }

    /// Waits until the running server prints a stdout line containing `needle` (after its
    /// startup banner); returns the line, or an error after `within`.
    pub async fn wait_for_output(&self, needle: &str, within: Duration) -> Result<String> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let added = self.output.added.notified();
            if let Some(line) = self
                .output
                .lines
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .iter()
                .find(|l| l.contains(needle))
            {
                return Ok(line.clone());
            }
            if tokio::time::timeout_at(deadline, added).await.is_err() {
                return Err(ClientError::Server(format!(
                    "the server printed no line with '{needle}' within {within:?}"
                )));
            }
        }
    }

    /// Starts a prepared server.
    pub async fn launch(&mut self) -> Result<()> {
        self.spawn().await
    }

    /// Runs a management sub-command (`user add …`, `token add …`) on this server's data dir
    /// and config, feeding `stdin`; returns its stdout, or an error with its stderr.
    pub fn manage(&self, args: &[&str], stdin: &str) -> Result<String> {
        use std::io::Write;
        let bin = server_binary()?;
        let (command, rest) = args
            .split_first()
            .ok_or_else(|| ClientError::Input("empty management command".into()))?;
        let mut cmd = std::process::Command::new(&bin);
        cmd.arg(command).arg("--data-dir").arg(self.data_dir.path());
        if let Some(config) = &self.config {
            cmd.arg("--config").arg(config);
        }
        let mut child = cmd
            .args(rest)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| ClientError::io(format!("spawn {}", bin.display()), e))?;
        if let Some(mut input) = child.stdin.take() {
            input
                .write_all(stdin.as_bytes())
                .map_err(|e| ClientError::io("write stdin", e))?;
        }
        let out = child
            .wait_with_output()
            .map_err(|e| ClientError::io("wait for management command", e))?;
        if !out.status.success() {
            return Err(ClientError::Server(format!(
                "{args:?} failed: {}",
                String::from_utf8_lossy(&out.stderr)
            )));
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Stops and starts the server again on the same data directory and port.
    pub async fn restart(&mut self) -> Result<()> {
        self.stop().await;
        self.spawn().await
    }

    /// Stops the process the way an orchestrator does (SIGTERM) and waits for it to exit, so
    /// that it closes its datastores cleanly. An error when it does not exit within 60 s (it
    /// is then killed).
    pub async fn shutdown(&mut self) -> Result<()> {
        let Some(mut child) = self.child.take() else {
            return Ok(());
        };
        if let Some(pid) = child.id() {
            let pid = nix::unistd::Pid::from_raw(pid as i32);
            nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM)
                .map_err(|e| ClientError::Server(format!("SIGTERM to the server: {e}")))?;
        }
        match tokio::time::timeout(Duration::from_secs(60), child.wait()).await {
            Ok(Ok(status)) if status.success() => Ok(()),
            Ok(Ok(status)) => Err(ClientError::Server(format!(
                "the server exited with {status} after SIGTERM"
            ))),
            Ok(Err(e)) => Err(ClientError::Server(format!("waiting for the server: {e}"))),
            Err(_) => {
                let _ = child.kill().await;
                Err(ClientError::Server(
                    "the server did not exit within 60 s of SIGTERM".into(),
                ))
            }
        }
    }

    /// Kills the process (data directory stays until drop).
    pub async fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill().await;
        }
    }

    pub fn data_dir(&self) -> &Path {
        self.data_dir.path()
    }

    /// OS process id of the running server, so benchmarks can read `/proc/<pid>/status`.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().and_then(|c| c.id())
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn host(&self) -> &str {
        &self.repository.host
    }

    pub fn store(&self) -> &str {
        &self.repository.store
    }

    pub fn auth_id(&self) -> &str {
        &self.repository.auth_id
    }

    /// A connected client (not logged in).
    pub async fn client(&self) -> Result<PbsClient> {
        PbsClient::connect(
            &self.repository.host,
            self.repository.port,
            &self.fingerprint,
        )
        .await
    }

    /// A connected client logged in as the printed admin user.
    pub async fn admin_client(&self) -> Result<PbsClient> {
        let c = self.client().await?;
        c.login(&self.repository.auth_id, &self.password).await?;
        Ok(c)
    }

    async fn spawn(&mut self) -> Result<()> {
        let bin = server_binary()?;
        let mut command = Command::new(&bin);
        command
            .arg("serve")
            .arg("--data-dir")
            .arg(self.data_dir.path());
        if let Some(config) = &self.config {
            command.arg("--config").arg(config);
        }
        for (key, value) in &self.env {
            command.env(key, value);
        }
        let mut child = command
            .arg("--listen")
            .arg(format!("127.0.0.1:{}", self.port))
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| ClientError::io(format!("spawn {}", bin.display()), e))?;
        let stdout = child
            .stdout
            .take()
            .ok_or_else(|| ClientError::Server("no stdout pipe".into()))?;
        let mut lines = BufReader::new(stdout).lines();
        let (mut repo, mut password, mut fp) = (None, None, None);
        let had_password = !self.password.is_empty();
        let deadline = tokio::time::Instant::now() + STARTUP_TIMEOUT;
        while repo.is_none() || fp.is_none() || (password.is_none() && !had_password) {
            let line = match tokio::time::timeout_at(deadline, lines.next_line()).await {
                Err(_) => {
                    return Err(ClientError::Server(format!(
                        "no PBS_REPOSITORY/PBS_PASSWORD/PBS_FINGERPRINT within {STARTUP_TIMEOUT:?}; stdout so far: {:?}",
                        self.startup_lines
                    )))
                }
                Ok(Err(e)) => return Err(ClientError::io("read server stdout", e)),
                Ok(Ok(None)) => {
                    return Err(ClientError::Server(format!(
                        "server exited during startup; stdout: {:?}",
                        self.startup_lines
                    )))
                }
                Ok(Ok(Some(l))) => l,
            };
            self.startup_lines.push(line.clone());
            if let Some((k, v)) = parse_env_line(&line) {
                match k.as_str() {
                    "PBS_REPOSITORY" => repo = Some(v),
                    "PBS_PASSWORD" => password = Some(v),
                    "PBS_FINGERPRINT" => fp = Some(v),
                    _ => {}
                }
            }
        }
        // Keep draining stdout so the server never blocks on a full pipe; lines are kept for
        // `wait_for_output`.
        let output = std::sync::Arc::new(Output::default());
        self.output = output.clone();
        tokio::spawn(async move {
            while let Ok(Some(line)) = lines.next_line().await {
                output
                    .lines
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .push(line);
                output.added.notify_waiters();
            }
        });
        self.repository = Repository::parse(repo.as_deref().unwrap_or_default())?;
        if let Some(p) = password {
            self.password = p;
        }
        self.fingerprint = fp.unwrap_or_default();
        self.child = Some(child);
        Ok(())
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(c) = self.child.as_mut() {
            let _ = c.start_kill();
        }
    }
}

/// Parses `export NAME='value'`, `NAME=value`, `NAME="value"`.
pub fn parse_env_line(line: &str) -> Option<(String, String)> {
    let l = line.trim();
    let l = l.strip_prefix("export ").unwrap_or(l).trim();
    let (k, v) = l.split_once('=')?;
    if k.is_empty()
        || !k
            .bytes()
            .all(|b| b.is_ascii_uppercase() || b == b'_' || b.is_ascii_digit())
    {
        return None;
    }
    let v = v.trim();
    let v = v
        .strip_prefix('\'')
        .and_then(|s| s.strip_suffix('\''))
        .or_else(|| v.strip_prefix('"').and_then(|s| s.strip_suffix('"')))
        .unwrap_or(v);
    Some((k.to_string(), v.to_string()))
}

fn free_port() -> Result<u16> {
    let l = std::net::TcpListener::bind("127.0.0.1:0")
        .map_err(|e| ClientError::io("bind free port", e))?;
    l.local_addr()
        .map(|a| a.port())
        .map_err(|e| ClientError::io("free port address", e))
}

/// `PBS_CLOUD_SERVER_BIN`, else `<target>/{debug,release}/pbs-cloud-server` of this workspace.
pub fn server_binary() -> Result<PathBuf> {
    if let Ok(p) = std::env::var("PBS_CLOUD_SERVER_BIN") {
        return Ok(PathBuf::from(p));
    }
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"));
    let candidates = [
        target.join("debug/pbs-cloud-server"),
        target.join("release/pbs-cloud-server"),
    ];
    candidates
        .iter()
        .filter(|p| p.is_file())
        .max_by_key(|p| std::fs::metadata(p).and_then(|m| m.modified()).ok())
        .cloned()
        .ok_or_else(|| {
            ClientError::Server(format!(
                "pbs-cloud-server binary not found in {}; run `cargo build -p pbs-cloud-server` or set PBS_CLOUD_SERVER_BIN",
                target.display()
            ))
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_lines() {
        assert_eq!(
            parse_env_line("export PBS_REPOSITORY='admin@pbs@127.0.0.1:8007:store1'"),
            Some((
                "PBS_REPOSITORY".into(),
                "admin@pbs@127.0.0.1:8007:store1".into()
            ))
        );
        assert_eq!(
            parse_env_line("PBS_PASSWORD=abc"),
            Some(("PBS_PASSWORD".into(), "abc".into()))
        );
        assert_eq!(
            parse_env_line(" PBS_FINGERPRINT=\"aa:bb\" "),
            Some(("PBS_FINGERPRINT".into(), "aa:bb".into()))
        );
        assert_eq!(parse_env_line("listening on 127.0.0.1"), None);
    }
}
