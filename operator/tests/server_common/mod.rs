//! What the tests that boot the server binary on a rendered config share (`server_boot`,
//! `server_sync`): object metadata, a free port, and the boot itself.

#![allow(dead_code)] // each test binary uses a different subset

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use kube::api::ObjectMeta;
use pbs_cloud_e2e::PbsClient;
use pbs_cloud_operator::render;

pub fn meta(name: &str) -> ObjectMeta {
    ObjectMeta {
        name: Some(name.into()),
        namespace: Some("ns1".into()),
        uid: Some(format!("uid-{name}")),
        ..ObjectMeta::default()
    }
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// A server process (killed on drop) on a rendered config, and its admin logged in.
pub struct Served {
    pub child: tokio::process::Child,
    pub port: u16,
    pub admin: PbsClient,
}

/// Writes the rendered `config` with its config and data directories moved to `etc` and
/// `data` (the server must accept it), starts the server binary on it, waits until it listens
/// (30 s at most; its exit fails the test with the config) and logs in as `admin@pbs`.
pub async fn serve_rendered(
    config: &str,
    etc: &Path,
    data: &Path,
    fingerprint: &str,
    password: &str,
) -> Served {
    let text = config
        .replace(render::CONFIG_DIR, &etc.display().to_string())
        .replace(render::DATA_DIR, &data.display().to_string());
    pbs_cloud_server::config::Config::parse(Path::new("config.toml"), &text).expect("valid config");
    let config_path = etc.join("config.toml");
    std::fs::write(&config_path, &text).expect("write config");

    let bin = pbs_cloud_e2e::server::server_binary()
        .unwrap_or_else(|e| panic!("{e} (build it with `cargo build -p pbs-cloud-server`)"));
    let port = free_port();
    let mut child = tokio::process::Command::new(&bin)
        .args(["serve", "--config"])
        .arg(&config_path)
        .arg("--data-dir")
        .arg(data)
        .arg("--listen")
        .arg(format!("127.0.0.1:{port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {}: {e}", bin.display()));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let admin = loop {
        if let Ok(c) = PbsClient::connect("127.0.0.1", port, fingerprint).await {
            break c;
        }
        if let Ok(Some(status)) = child.try_wait() {
            panic!("server exited with {status} on the rendered config:\n{text}");
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "server did not listen within 30 s"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    admin
        .login("admin@pbs", password)
        .await
        .expect("login with generated password");
    Served { child, port, admin }
}
