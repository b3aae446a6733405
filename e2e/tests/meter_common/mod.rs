//! Helpers of the metering tests: chunk-store figures read from disk, a Prometheus text parser
//! and a small local webhook receiver that checks signatures.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// (bytes, count) of the chunk files below `<store>/.chunks`.
pub fn chunks_on_disk(store: &Path) -> (u64, u64) {
    let mut bytes = 0;
    let mut count = 0;
    let Ok(dirs) = std::fs::read_dir(store.join(".chunks")) else {
        return (0, 0);
    };
    for dir in dirs.flatten() {
        for file in std::fs::read_dir(dir.path())
            .into_iter()
            .flatten()
            .flatten()
        {
            let name = file.file_name().to_string_lossy().into_owned();
            if name.len() == 64 && name.bytes().all(|b| b.is_ascii_hexdigit()) {
                bytes += file.metadata().map(|m| m.len()).unwrap_or(0);
                count += 1;
            }
        }
    }
    (bytes, count)
}

/// Samples of a Prometheus text exposition: `name{labels}` → value. Panics on a line that
/// is not a comment, blank, or `name{...} value`.
pub fn parse_metrics(text: &str) -> BTreeMap<String, f64> {
    let mut out = BTreeMap::new();
    for line in text.lines() {
        if line.is_empty() || line.starts_with('#') {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                let kind = rest.split(' ').nth(1).unwrap_or("");
                assert!(
                    ["gauge", "counter"].contains(&kind),
                    "bad TYPE line: {line}"
                );
            }
            continue;
        }
        let (series, value) = line
            .rsplit_once(' ')
            .unwrap_or_else(|| panic!("bad sample line: {line}"));
        let value: f64 = value
            .parse()
            .unwrap_or_else(|_| panic!("bad value in: {line}"));
        let name_end = series.find('{').unwrap_or(series.len());
        assert!(
            series[..name_end]
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_'),
            "bad metric name in: {line}"
        );
        if name_end < series.len() {
            assert!(series.ends_with('}'), "bad labels in: {line}");
        }
        out.insert(series.to_string(), value);
    }
    out
}

/// One request the receiver got.
#[derive(Clone, Debug)]
pub struct Received {
    pub signature: String,
    pub event: String,
    pub body: Vec<u8>,
}

/// `sha256=<hex>` HMAC of `body` under `key`, computed independently of the server.
pub fn expected_signature(key: &[u8], body: &[u8]) -> String {
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, key);
    format!(
        "sha256={}",
        hex::encode(ring::hmac::sign(&key, body).as_ref())
    )
}

/// A port nobody listens on yet (the receiver is "down" until started on it).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// A minimal HTTP/1.1 receiver on `port` answering 200 to every POST and keeping what it got.
pub async fn start_receiver(port: u16) -> Arc<Mutex<Vec<Received>>> {
    let listener = TcpListener::bind(("127.0.0.1", port))
        .await
        .expect("bind webhook receiver");
    let got = Arc::new(Mutex::new(Vec::new()));
    let store = got.clone();
    tokio::spawn(async move {
        loop {
            let Ok((mut sock, _)) = listener.accept().await else {
                return;
            };
            let store = store.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut tmp = [0u8; 4096];
                let head_end = loop {
                    let n = sock.read(&mut tmp).await.unwrap_or(0);
                    if n == 0 {
                        return;
                    }
                    buf.extend_from_slice(&tmp[..n]);
                    if let Some(p) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                        break p + 4;
                    }
                };
                let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
                let header = |name: &str| {
                    head.lines()
                        .find_map(|l| {
                            let (k, v) = l.split_once(':')?;
                            k.trim()
                                .eq_ignore_ascii_case(name)
                                .then(|| v.trim().to_string())
                        })
                        .unwrap_or_default()
                };
                let len: usize = header("content-length").parse().unwrap_or(0);
                while buf.len() < head_end + len {
                    let n = sock.read(&mut tmp).await.unwrap_or(0);
                    if n == 0 {
                        return;
                    }
                    buf.extend_from_slice(&tmp[..n]);
                }
                store.lock().unwrap().push(Received {
                    signature: header("x-pbs-cloud-signature"),
                    event: header("x-pbs-cloud-event"),
                    body: buf[head_end..head_end + len].to_vec(),
                });
                let _ = sock
                    .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
                    .await;
            });
        }
    });
    got
}

/// Waits up to `secs` for a received event of `event_type`; returns its JSON body.
pub async fn wait_for_event(
    got: &Arc<Mutex<Vec<Received>>>,
    event_type: &str,
    secs: u64,
) -> (Received, serde_json::Value) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(secs);
    loop {
        let found = got
            .lock()
            .unwrap()
            .iter()
            .find(|r| r.event == event_type)
            .cloned();
        if let Some(r) = found {
            let json = serde_json::from_slice(&r.body).expect("event body is JSON");
            return (r, json);
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no '{event_type}' webhook event within {secs} s; got {:?}",
            got.lock()
                .unwrap()
                .iter()
                .map(|r| r.event.clone())
                .collect::<Vec<_>>()
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}
