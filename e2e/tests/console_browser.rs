//! The web console in a real browser: Debian's headless Chromium driven over WebDriver
//! (chromedriver + fantoccini). Logs in with the printed admin password, finds on the dashboard
//! the backup the protocol test client just made, opens the snapshot, edits its notes, protects
//! it, sees forget refused in the API's words, downloads its config blob and disk image, browses
//! its pxar archive and downloads a file through the page's link, runs the prune simulator and
//! then a prune, starts a GC and follows its log to the end, opens the usage charts, logs out,
//! and checks that a user of another tenant sees none of it. Screenshots go to `e2e/console/` as test artifacts.

mod common;

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use common::{backup, random_bytes, Content, T0};
use fantoccini::{Client, ClientBuilder, Locator};
use pbs_cloud_e2e::{Crypt, TestServer};
use serde_json::json;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

const INSTALL: &str = "apt-get install chromium chromium-driver (e2e/run-tests.sh installs them)";
/// Upper bound for page loads and element waits (the waits end on the element, not the time).
const WAIT: Duration = Duration::from_secs(30);

/// `chromedriver` on a free port; returns the process and its URL once it says it listens.
async fn chromedriver() -> (Child, String) {
    for bin in ["chromedriver", "chromium"] {
        let found = std::process::Command::new("sh")
            .arg("-c")
            .arg(format!("command -v {bin}"))
            .output()
            .map(|o| o.status.success())
            .unwrap_or(false);
        assert!(found, "`{bin}` is not installed: {INSTALL}");
    }
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut child = Command::new("chromedriver")
        .arg(format!("--port={port}"))
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start chromedriver ({e}): {INSTALL}"));
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let ready = tokio::time::timeout(WAIT, async {
        while let Ok(Some(line)) = lines.next_line().await {
            if line.contains("started successfully") {
                return true;
            }
        }
        false
    })
    .await;
    assert_eq!(ready, Ok(true), "chromedriver did not start: {INSTALL}");
    // keep draining its output
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    (child, format!("http://127.0.0.1:{port}"))
}

async fn browser(driver: &str, downloads: &std::path::Path) -> Client {
    let caps = json!({
        "acceptInsecureCerts": true,
        "goog:chromeOptions": {
            "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--window-size=1280,1000"],
            "prefs": {
                "download.default_directory": downloads.to_str().unwrap(),
                "download.prompt_for_download": false,
            },
        },
    });
    let caps = caps.as_object().unwrap().clone();
    let connector = hyper_util::client::legacy::connect::HttpConnector::new();
    ClientBuilder::new(connector)
        .capabilities(caps)
        .connect(driver)
        .await
        .unwrap_or_else(|e| panic!("WebDriver session with Chromium failed ({e}): {INSTALL}"))
}

fn artifact(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("console")
        .join(name)
}

async fn screenshot(c: &Client, name: &str) {
    let png = c.screenshot().await.unwrap();
    assert!(png.starts_with(b"\x89PNG"), "not a PNG");
    let path = artifact(name);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, png).unwrap();
}

async fn wait_for(c: &Client, css: &str) -> fantoccini::elements::Element {
    c.wait()
        .at_most(WAIT)
        .for_element(Locator::Css(css))
        .await
        .unwrap_or_else(|e| panic!("no '{css}' on the page: {e}"))
}

/// Waits until an element matching `css` shows `expected`; the element is found anew each
/// time, so a page that is being replaced (after a form submit) cannot hand back its old one.
async fn wait_for_text(c: &Client, css: &str, expected: &str) {
    let mut last = String::new();
    let found = tokio::time::timeout(WAIT, async {
        let mut tick = tokio::time::interval(Duration::from_millis(50));
        loop {
            tick.tick().await;
            if let Ok(element) = c.find(Locator::Css(css)).await {
                match element.text().await {
                    Ok(text) if text == expected => return,
                    Ok(text) => last = text,
                    Err(_) => {}
                }
            }
        }
    })
    .await;
    assert!(
        found.is_ok(),
        "'{css}' never showed {expected:?} (last: {last:?})"
    );
}

async fn login(c: &Client, base: &str, user: &str, password: &str) {
    c.goto(&format!("{base}/")).await.unwrap();
    wait_for(c, "#username")
        .await
        .send_keys(user)
        .await
        .unwrap();
    c.find(Locator::Id("password"))
        .await
        .unwrap()
        .send_keys(password)
        .await
        .unwrap();
    c.find(Locator::Id("login"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    let who = match c
        .wait()
        .at_most(WAIT)
        .for_element(Locator::Css("#whoami"))
        .await
    {
        Ok(e) => e.text().await.unwrap(),
        Err(e) => panic!("not signed in ({e}): {}", c.source().await.unwrap()),
    };
    assert_eq!(who, user);
}

/// Opens a group page, runs the prune simulator with keep-last=1 and returns its summary.
async fn simulate_keep_last_1(c: &Client, group_page: &str) -> String {
    c.goto(group_page).await.unwrap();
    wait_for(c, "#keep-last")
        .await
        .send_keys("1")
        .await
        .unwrap();
    c.find(Locator::Id("simulate"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    wait_for(c, "#prune-summary").await.text().await.unwrap()
}

/// The bytes of a finished download. Chromium writes `name.crdownload` and renames it when
/// done, so the wait ends when the final name appears (bounded by [`WAIT`]).
async fn downloaded(dir: &std::path::Path, name: &str) -> Vec<u8> {
    let path = dir.join(name);
    tokio::time::timeout(WAIT, async {
        let mut tick = tokio::time::interval(Duration::from_millis(50));
        loop {
            tick.tick().await;
            if let Ok(b) = std::fs::read(&path) {
                return b;
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("the download of {name} did not finish"))
}

#[tokio::test]
async fn console_in_headless_chromium() {
    let mut server = TestServer::prepare().unwrap();
    server.launch().await.unwrap();
    server.stop().await;
    server.manage(&["tenant", "add", "other"], "").unwrap();
    server
        .manage(
            &["user", "add", "eve@pbs", "--tenant", "other"],
            "eve-pass\n",
        )
        .unwrap();
    server
        .manage(&["user", "add", "tina@pbs"], "tina-pass\n")
        .unwrap();
    let acl_path = format!("/datastore/{}", server.store());
    server
        .manage(&["acl", "add", &acl_path, "tina@pbs", "DatastoreAdmin"], "")
        .unwrap();
    server.launch().await.unwrap();
    let client = server.admin_client().await.unwrap();
    let tree = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(tree.path().join("etc")).unwrap();
    std::fs::write(tree.path().join("etc/hostname"), b"console-host\n").unwrap();
    let image = random_bytes(13, 4 * 1024 * 1024 + 333);
    let content = Content {
        tree: Some(tree.path()),
        image: Some(&image),
        conf: Some(b"setting = 1\n"),
    };
    backup(
        &client,
        server.store(),
        None,
        "webhost",
        T0,
        Crypt::None,
        &content,
    )
    .await
    .unwrap();
    // A group with one snapshot too many for keep-last=1, for "Run prune".
    let small = Content {
        tree: None,
        image: None,
        conf: Some(b"scratch = 1\n"),
    };
    for time in [T0 + 60, T0 + 120] {
        backup(
            &client,
            server.store(),
            None,
            "zz-scratch",
            time,
            Crypt::None,
            &small,
        )
        .await
        .unwrap();
    }

    let (_driver, driver_url) = chromedriver().await;
    let downloads = tempfile::tempdir().unwrap();
    let c = browser(&driver_url, downloads.path()).await;
    let base = format!("https://127.0.0.1:{}", server.port());

    // Login page first; every page is behind it.
    c.goto(&format!("{base}/console/tasks")).await.unwrap();
    wait_for(&c, "#username").await;
    screenshot(&c, "login.png").await;
    login(&c, &base, server.auth_id(), &server.password).await;

    // Dashboard: connection lines, the store, the group of the backup just made.
    let fp = wait_for(&c, "#fingerprint").await.text().await.unwrap();
    assert!(fp.contains(&server.fingerprint), "{fp}");
    let repo = c
        .find(Locator::Css("pre.repository"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(
        repo,
        format!(
            "export PBS_REPOSITORY='{}@127.0.0.1:{}:{}'",
            server.auth_id(),
            server.port(),
            server.store()
        )
    );
    let group = wait_for(&c, "table.groups a.group").await;
    assert_eq!(group.text().await.unwrap(), "host/webhost");
    screenshot(&c, "dashboard.png").await;

    // Group → snapshot → files.
    group.click().await.unwrap();
    wait_for(&c, "table.snapshots a.snapshot")
        .await
        .click()
        .await
        .unwrap();
    let title = wait_for(&c, "#snapshot-title").await.text().await.unwrap();
    assert_eq!(title, "Snapshot host/webhost/2026-01-01T00:00:00Z");
    let files: Vec<String> = {
        let mut out = Vec::new();
        for f in c.find_all(Locator::Css("td.filename")).await.unwrap() {
            out.push(f.text().await.unwrap());
        }
        out
    };
    assert!(files.contains(&"app.conf.blob".to_string()), "{files:?}");
    assert!(files.contains(&"disk.img.fidx".to_string()), "{files:?}");

    // Notes, protection, and forget refused in the API's words.
    wait_for(&c, "#notes-input")
        .await
        .send_keys("weekly <b>keep</b>")
        .await
        .unwrap();
    c.find(Locator::Id("save-notes"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    let notes = wait_for(&c, "pre#notes").await.text().await.unwrap();
    assert_eq!(notes, "weekly <b>keep</b>");
    wait_for(&c, "#protect").await.click().await.unwrap();
    wait_for(&c, "#unprotect").await;
    let protected = wait_for(&c, "#protected").await.text().await.unwrap();
    assert_eq!(protected, "yes");
    c.find(Locator::Id("forget"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    let refusal = wait_for(&c, "#action-error").await.text().await.unwrap();
    assert_eq!(refusal, "cannot remove protected snapshot");
    screenshot(&c, "snapshot.png").await;

    // The config blob and the whole disk image, decoded, through the page's links.
    for (file, name, expect) in [
        ("app.conf.blob", "app.conf", b"setting = 1\n".to_vec()),
        ("disk.img.fidx", "disk.img", image.clone()),
    ] {
        let css = format!("a.download[download=\"{name}\"]");
        c.find(Locator::Css(&css))
            .await
            .unwrap_or_else(|e| panic!("no download link of {file}: {e}"))
            .click()
            .await
            .unwrap();
        assert!(
            downloaded(downloads.path(), name).await == expect,
            "{file} differs"
        );
    }

    // Browse the pxar archive and download one file; its bytes must match.
    c.find(Locator::Css("a.browse"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    wait_for(&c, "table.catalog a.dir")
        .await
        .click()
        .await
        .unwrap();
    let file = wait_for(&c, "table.catalog a.file").await;
    assert_eq!(file.text().await.unwrap(), "hostname");
    screenshot(&c, "browse.png").await;
    file.click().await.unwrap();
    assert_eq!(
        downloaded(downloads.path(), "hostname").await,
        b"console-host\n"
    );

    // Prune simulator on the group: keep-last=1 keeps the one (protected) snapshot.
    let webhost = format!(
        "{base}/console/datastore/{}/group?backup-type=host&backup-id=webhost",
        server.store()
    );
    let summary = simulate_keep_last_1(&c, &webhost).await;
    assert_eq!(summary, "0 of 1 snapshots would be removed.");
    let row = wait_for(&c, "table.prune tbody tr")
        .await
        .text()
        .await
        .unwrap();
    assert!(row.contains("keep") && row.contains("protected"), "{row}");
    screenshot(&c, "prune.png").await;

    // Run prune: simulate on the scratch group, then run exactly what the simulation showed.
    let scratch = format!(
        "{base}/console/datastore/{}/group?backup-type=host&backup-id=zz-scratch",
        server.store()
    );
    let summary = simulate_keep_last_1(&c, &scratch).await;
    assert_eq!(summary, "1 of 2 snapshots would be removed.");
    wait_for(&c, "#run-prune").await.click().await.unwrap();
    wait_for_text(&c, "#prune-summary", "1 of 2 snapshots removed.").await;
    c.goto(&scratch).await.unwrap();
    wait_for(&c, "table.snapshots a.snapshot").await;
    let left = c
        .find_all(Locator::Css("table.snapshots a.snapshot"))
        .await
        .unwrap();
    assert_eq!(left.len(), 1, "the pruned snapshot is gone");

    // GC from the datastore page; its log is followed until the task ends.
    c.goto(&format!("{base}/console/datastore/{}", server.store()))
        .await
        .unwrap();
    wait_for(&c, "#start-gc").await.click().await.unwrap();
    wait_for(&c, "#task-log[data-running=\"false\"]").await;
    let status = wait_for(&c, "#task-status").await.text().await.unwrap();
    assert!(status.starts_with("stopped OK"), "{status}");
    let log = c
        .find(Locator::Id("task-log"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(log.trim_end().ends_with("TASK OK"), "{log}");
    let lines: Vec<&str> = log.lines().collect();
    assert!(
        lines.windows(2).all(|w| w[0] != w[1]),
        "a followed line was shown twice: {log}"
    );
    // The stop button is gone with the task (hidden by console.js, or never rendered).
    if let Ok(stop) = c.find(Locator::Id("stop-task-form")).await {
        assert!(
            !stop.is_displayed().await.unwrap(),
            "stop shown after the end"
        );
    }
    screenshot(&c, "gc-task.png").await;

    // Tasks page lists the GC (newest first) and the backup task.
    c.goto(&format!("{base}/console/tasks")).await.unwrap();
    wait_for(&c, "table.tasks tbody tr").await;
    let mut rows = Vec::new();
    for row in c
        .find_all(Locator::Css("table.tasks tbody tr"))
        .await
        .unwrap()
    {
        rows.push(row.text().await.unwrap());
    }
    assert!(rows[0].contains("garbage_collection"), "{rows:?}");
    assert!(rows.iter().any(|r| r.contains("backup")), "{rows:?}");

    // Usage over time: GC's recount wrote today's sample, which the page charts and lists.
    c.goto(&format!("{base}/")).await.unwrap();
    wait_for(&c, "a.usage-link").await.click().await.unwrap();
    let chart = wait_for(&c, "#chart-bytes svg").await;
    assert!(chart.is_displayed().await.unwrap(), "chart hidden");
    let snapshots = wait_for(&c, "table.usage-history tbody tr td:nth-child(5)")
        .await
        .text()
        .await
        .unwrap();
    assert_eq!(
        snapshots, "2",
        "today's sample counts the backups left after the prune"
    );
    screenshot(&c, "usage.png").await;

    // Logout: the cookie is gone, the next page is the login form again.
    c.goto(&format!("{base}/")).await.unwrap();
    wait_for(&c, "#logout").await.click().await.unwrap();
    wait_for(&c, "#username").await;
    c.goto(&format!("{base}/")).await.unwrap();
    wait_for(&c, "#username").await;

    // A user of the store's tenant who is no superuser: the store and its groups, no tenants.
    login(&c, &base, "tina@pbs", "tina-pass").await;
    let group = wait_for(&c, "table.groups a.group").await;
    assert_eq!(group.text().await.unwrap(), "host/webhost");
    let page = c.source().await.unwrap();
    assert!(
        !page.contains("/console/tenants"),
        "the tenants page offered to a tenant user"
    );
    screenshot(&c, "tenant-user.png").await;
    wait_for(&c, "#logout").await.click().await.unwrap();
    wait_for(&c, "#username").await;

    // A user of another tenant sees none of it.
    login(&c, &base, "eve@pbs", "eve-pass").await;
    let page = c.source().await.unwrap();
    assert!(!page.contains("webhost"), "another tenant's group shown");
    assert!(page.contains("No datastore is visible to you"));
    c.goto(&format!("{base}/console/datastore/{}", server.store()))
        .await
        .unwrap();
    let page = c.source().await.unwrap();
    assert!(page.contains("does not exist") && !page.contains("webhost"));
    c.goto(&format!(
        "{base}/console/datastore/{}/snapshot?backup-type=host&backup-id=webhost&backup-time={T0}",
        server.store()
    ))
    .await
    .unwrap();
    let page = c.source().await.unwrap();
    assert!(page.contains("does not exist") && !page.contains("weekly"));
    screenshot(&c, "other-tenant.png").await;
    c.close().await.unwrap();
}
