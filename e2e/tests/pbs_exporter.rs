//! The Prometheus exporter `pbs-exporter` (PyPI, 0.2.1), a monitoring tool nobody here wrote,
//! scrapes the server with an API token: every metric it exports must be present and equal to
//! what our API reports. It reads `/nodes/localhost/tasks` (one `pbs_task_status` series per
//! task, labelled with the task's fields) and `/nodes/localhost/status` (CPU, memory, swap,
//! uptime and load). `e2e/run-tests.sh` installs it (`e2e/pbs-exporter/install.sh`).

mod common;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use common::*;
use pbs_cloud_e2e::Crypt;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/python/pbs_exporter_serve.py");

/// The exporter's virtualenv: `PBS_EXPORTER_VENV`, or the install script's default.
fn venv_python() -> PathBuf {
    let venv = std::env::var("PBS_EXPORTER_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|_| {
            PathBuf::from(std::env::var("HOME").unwrap_or_default())
                .join(".cache/pbs-cloud/pbs-exporter-0.2.1")
        });
    let python = venv.join("bin/python");
    let ok = std::process::Command::new(&python)
        .args(["-c", "import pbs_exporter"])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    assert!(
        ok,
        "pbs-exporter is not installed in {}: run `bash e2e/pbs-exporter/install.sh` \
         (e2e/run-tests.sh does) or set PBS_EXPORTER_VENV to a venv that has it",
        venv.display()
    );
    python
}

/// One sample of the Prometheus text format.
#[derive(Debug, Clone, PartialEq)]
struct Sample {
    labels: BTreeMap<String, String>,
    value: f64,
}

/// Label values are escaped with `\\`, `\"` and `\n`.
fn parse_labels(text: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut rest = text;
    while let Some(eq) = rest.find("=\"") {
        let name = rest[..eq].trim_start_matches(',').trim().to_string();
        let mut value = String::new();
        let mut chars = rest[eq + 2..].char_indices();
        let mut end = 0;
        while let Some((i, c)) = chars.next() {
            match c {
                '\\' => match chars.next() {
                    Some((_, 'n')) => value.push('\n'),
                    Some((_, other)) => value.push(other),
                    None => {}
                },
                '"' => {
                    end = eq + 2 + i + 1;
                    break;
                }
                c => value.push(c),
            }
        }
        out.insert(name, value);
        rest = &rest[end..];
    }
    out
}

/// Metric name → samples, for every `pbs_*` metric of a scrape.
fn parse_metrics(text: &str) -> BTreeMap<String, Vec<Sample>> {
    let mut out: BTreeMap<String, Vec<Sample>> = BTreeMap::new();
    for line in text.lines() {
        if line.starts_with('#') || !line.starts_with("pbs_") {
            continue;
        }
        let (series, value) = line.rsplit_once(' ').unwrap();
        let (name, labels) = match series.split_once('{') {
            Some((n, l)) => (n, parse_labels(l.trim_end_matches('}'))),
            None => (series, BTreeMap::new()),
        };
        out.entry(name.to_string()).or_default().push(Sample {
            labels,
            value: value.parse().unwrap_or_else(|_| panic!("value of {line}")),
        });
    }
    out
}

async fn scrape(port: u16) -> String {
    let mut tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    tcp.write_all(b"GET /metrics HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
        .await
        .unwrap();
    let mut buf = Vec::new();
    tcp.read_to_end(&mut buf).await.unwrap();
    let text = String::from_utf8_lossy(&buf).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").expect("HTTP answer");
    assert!(
        head.starts_with("HTTP/1.0 200") || head.starts_with("HTTP/1.1 200"),
        "{head}\n{body}"
    );
    body.to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pbs_exporter_metrics_match_the_api() {
    let python = venv_python();
    let (mut server, _) = start_server().await;

    // A monitoring user with an Audit token, like a PBS admin would set it up.
    server.stop().await;
    server
        .manage(&["user", "add", "mon@pbs"], "mon-pw\n")
        .unwrap();
    let out = server
        .manage(&["token", "add", "mon@pbs!exporter"], "")
        .unwrap();
    let secret = out
        .lines()
        .find_map(|l| l.strip_prefix("secret: "))
        .unwrap()
        .to_string();
    for who in ["mon@pbs", "mon@pbs!exporter"] {
        server
            .manage(&["acl", "add", "/", who, "Audit"], "")
            .unwrap();
    }
    server.launch().await.unwrap();
    // Tasks are kept in memory: they are made after the restart.
    let admin = server.admin_client().await.unwrap();
    let image = random_bytes(11, 2 * 1024 * 1024);
    let content = Content {
        tree: None,
        image: Some(&image),
        conf: Some(b"x"),
    };
    backup(&admin, "store1", None, "exp", T0, Crypt::None, &content)
        .await
        .unwrap();
    let gc = admin.post("admin/datastore/store1/gc", None).await.unwrap();
    wait_task(&admin, gc.as_str().unwrap()).await;
    let api = server
        .client()
        .await
        .unwrap()
        .with_token_pve("mon@pbs!exporter", &secret);

    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let mut exporter = tokio::process::Command::new(&python)
        .args([
            SCRIPT,
            &format!("https://127.0.0.1:{}", server.port()),
            &format!("mon@pbs!exporter:{secret}"),
            &port.to_string(),
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("start pbs-exporter");
    let deadline = Instant::now() + Duration::from_secs(30);
    while tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .is_err()
    {
        assert!(
            Instant::now() < deadline,
            "pbs-exporter did not start listening"
        );
        if let Ok(Some(status)) = exporter.try_wait() {
            panic!("pbs-exporter exited: {status}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // Node figures are sampled at most every few seconds, and a backup's task ends when the
    // server sees its connection close: a scrape between two identical API answers saw the
    // same sample and the same tasks.
    let mut attempt = 0;
    let (node, tasks, metrics) = loop {
        attempt += 1;
        let before = api.get("nodes/localhost/status", None).await.unwrap();
        let tasks = api.get("nodes/localhost/tasks", None).await.unwrap();
        let metrics = parse_metrics(&scrape(port).await);
        let after = api.get("nodes/localhost/status", None).await.unwrap();
        let tasks_after = api.get("nodes/localhost/tasks", None).await.unwrap();
        if before == after && tasks == tasks_after {
            break (before, tasks, metrics);
        }
        assert!(
            attempt < 10,
            "node status or tasks changed during every scrape"
        );
    };
    let _ = exporter.kill().await;

    let node_expect = [
        ("pbs_node_cpu", node["cpu"].as_f64().unwrap()),
        (
            "pbs_node_memory_total",
            node["memory"]["total"].as_f64().unwrap(),
        ),
        (
            "pbs_node_memory_used",
            node["memory"]["used"].as_f64().unwrap(),
        ),
        (
            "pbs_node_memory_free",
            node["memory"]["free"].as_f64().unwrap(),
        ),
        (
            "pbs_node_swap_total",
            node["swap"]["total"].as_f64().unwrap(),
        ),
        ("pbs_node_swap_used", node["swap"]["used"].as_f64().unwrap()),
        ("pbs_node_swap_free", node["swap"]["free"].as_f64().unwrap()),
        ("pbs_node_uptime", node["uptime"].as_f64().unwrap()),
        ("pbs_node_loadavg_1", node["loadavg"][0].as_f64().unwrap()),
        ("pbs_node_loadavg_5", node["loadavg"][1].as_f64().unwrap()),
        ("pbs_node_loadavg_15", node["loadavg"][2].as_f64().unwrap()),
    ];
    let localhost: BTreeMap<String, String> =
        [("node".to_string(), "localhost".to_string())].into();
    for (name, want) in node_expect {
        let samples = metrics
            .get(name)
            .unwrap_or_else(|| panic!("{name} not exported: {metrics:?}"));
        assert_eq!(
            samples,
            &vec![Sample {
                labels: localhost.clone(),
                value: want
            }],
            "{name}"
        );
    }
    assert!(node["memory"]["total"].as_f64().unwrap() > 0.0);

    // One series per listed task, labelled with its fields, value 1 (the exporter's registry
    // is fresh, so nothing else is there).
    let listed = tasks.as_array().unwrap();
    let kinds: Vec<&str> = listed
        .iter()
        .map(|t| t["worker_type"].as_str().unwrap())
        .collect();
    assert!(
        kinds.contains(&"backup") && kinds.contains(&"garbage_collection"),
        "{kinds:?}"
    );
    let want: Vec<Sample> = listed
        .iter()
        .map(|t| {
            let text = |k: &str| match &t[k] {
                Value::String(s) => s.clone(),
                Value::Null => String::new(),
                other => other.to_string(),
            };
            Sample {
                labels: [
                    ("upid", text("upid")),
                    ("node", text("node")),
                    ("pid", text("pid")),
                    ("worker_type", text("worker_type")),
                    ("user", text("user")),
                    ("worker_id", text("worker_id")),
                    ("status", text("status")),
                ]
                .into_iter()
                .map(|(k, v)| (k.to_string(), v))
                .collect(),
                value: 1.0,
            }
        })
        .collect();
    let mut got = metrics.get("pbs_task_status").cloned().unwrap_or_default();
    let key = |s: &Sample| s.labels["upid"].clone();
    got.sort_by_key(key);
    let mut want = want;
    want.sort_by_key(key);
    assert_eq!(got, want);
    // Every exported metric family was checked above.
    let families: Vec<&String> = metrics.keys().collect();
    let mut known: Vec<String> = node_expect.iter().map(|(n, _)| n.to_string()).collect();
    known.push("pbs_task_status".into());
    for family in families {
        assert!(known.contains(family), "unchecked metric {family}");
    }
}
