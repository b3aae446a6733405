//! The REST API as seen by proxmoxer (Debian's python3-proxmoxer), a client nobody here wrote.
//! `e2e/run-tests.sh` installs it; without it this test fails and says how to get it.

mod common;

use common::*;
use pbs_cloud_e2e::Crypt;

const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/python/proxmoxer_check.py");

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxmoxer_reads_the_rest_api() {
    let probe = std::process::Command::new("/usr/bin/python3")
        .args(["-c", "import proxmoxer"])
        .output()
        .expect("run /usr/bin/python3");
    assert!(
        probe.status.success(),
        "python3-proxmoxer is missing: run e2e/run-tests.sh (it installs it) or `apt-get install python3-proxmoxer`"
    );
    let (server, client) = start_server().await;
    let image = random_bytes(7, 4 * 1024 * 1024 + 9);
    backup(
        &client,
        server.store(),
        None,
        "pyclient",
        T0,
        Crypt::None,
        &Content {
            tree: None,
            image: Some(&image),
            conf: Some(b"c"),
        },
    )
    .await
    .unwrap();
    let port = server.port().to_string();
    let out = tokio::process::Command::new("/usr/bin/python3")
        .args([
            SCRIPT,
            "127.0.0.1",
            &port,
            "admin@pbs",
            &server.password,
            server.store(),
            "pyclient",
        ])
        .output()
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "proxmoxer check failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
