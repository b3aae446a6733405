//! Hostile clients at the network edge and against authentication, each probe answered with a
//! refusal or a bounded cost while normal clients keep being served. Memory claims are checked
//! on the server process itself (`/proc/<pid>/status`).

use std::net::IpAddr;
use std::time::{Duration, Instant};

use http::Method;
use pbs_cloud_e2e::hostile::{
    proc_status_kib, read_response, read_until_closed, reset_peak_rss, tcp_from, tls_from,
    write_request,
};
use pbs_cloud_e2e::{BackupParams, BackupSession, PbsClient, TestServer};
use tokio::io::AsyncWriteExt;

const MIB: u64 = 1024;

fn ip(text: &str) -> IpAddr {
    text.parse().unwrap()
}

async fn start(config: &str) -> TestServer {
    let mut server = TestServer::prepare().unwrap();
    server.set_config(config).unwrap();
    server
        .launch()
        .await
        .expect("start pbs-cloud-server (build it with `cargo build -p pbs-cloud-server`)");
    server
}

/// A complete JSON login request for `user`/`password` (a stock-client-like request head).
fn login_request(user: &str, password: &str) -> String {
    let body = serde_json::json!({ "username": user, "password": password }).to_string();
    format!(
        "POST /api2/json/access/ticket HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
}

/// Small limits, and a head timeout long enough to fill them before the first ones expire.
const FLOOD_LIMITS: &str = "[limits]
max_connections = 48
max_connections_per_source = 12
header_read_timeout_secs = 10
";

/// Short timeouts, and a session keep-alive that pings after one quiet second.
const SHORT_TIMEOUTS: &str = "[limits]
header_read_timeout_secs = 3
tls_handshake_timeout_secs = 2
session_keepalive_secs = 1
session_keepalive_timeout_secs = 10
";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_and_half_requests_are_bounded_while_logins_go_on() {
    let server = start(FLOOD_LIMITS).await;
    let (port, fp) = (server.port(), server.fingerprint.clone());

    // 30 connections from one source, each stopping in the middle of a request head: 12 are
    // held (the per-source limit), the rest refused.
    let attacker = ip("127.0.0.3");
    let mut held = Vec::new();
    for _ in 0..30 {
        let mut s = tls_from(attacker, port, &fp).await.unwrap();
        s.write_all(b"POST /api2/json/access/ticket HTTP/1.1\r\nHost: localhost\r\nContent-Le")
            .await
            .unwrap();
        held.push((s, Instant::now()));
    }
    // a complete request from the same source is told why
    let mut probe = tls_from(attacker, port, &fp).await.unwrap();
    probe
        .write_all(login_request("admin@pbs", "x").as_bytes())
        .await
        .unwrap();
    let (status, body) = read_response(&mut probe, Duration::from_secs(10))
        .await
        .unwrap();
    assert_eq!(status, 503, "{body}");
    assert!(
        body.contains("too many open connections from 127.0.0.3 (limit 12)"),
        "{body}"
    );

    // another client logs in and works meanwhile
    let client = server.admin_client().await.expect("login beside the flood");
    client.get("/api2/json/version", None).await.unwrap();

    // filling the total from more sources refuses new connections from anyone, politely
    for source in ["127.0.0.4", "127.0.0.5", "127.0.0.6"] {
        for _ in 0..12 {
            let mut s = tls_from(ip(source), port, &fp).await.unwrap();
            s.write_all(b"GET /api2/json/version HTTP/1.1\r\nHo")
                .await
                .unwrap();
            held.push((s, Instant::now()));
        }
    }
    let mut late = tls_from(ip("127.0.0.1"), port, &fp).await.unwrap();
    late.write_all(login_request("admin@pbs", "x").as_bytes())
        .await
        .unwrap();
    let (status, body) = read_response(&mut late, Duration::from_secs(10))
        .await
        .unwrap();
    assert_eq!(status, 503, "{body}");
    assert!(
        body.contains("too many open connections (limit 48)"),
        "{body}"
    );

    // every half request is closed by the server once the 10 s head timeout has passed
    for (mut s, since) in held {
        let (_, closed) = read_until_closed(&mut s, Duration::from_secs(25)).await;
        assert!(closed, "a half request was kept open");
        assert!(since.elapsed() < Duration::from_secs(25));
    }
    // and normal service is back for everyone
    let again = server.admin_client().await.expect("login after the flood");
    again.get("/api2/json/version", None).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_connections_are_closed_and_slow_legitimate_clients_are_not() {
    let server = start(SHORT_TIMEOUTS).await;
    let (port, fp) = (server.port(), server.fingerprint.clone());

    // TCP without a TLS handshake: closed after the 2 s handshake timeout
    let mut tcp = tcp_from(ip("127.0.0.7"), port).await.unwrap();
    let start = Instant::now();
    let (_, closed) = read_until_closed(&mut tcp, Duration::from_secs(12)).await;
    assert!(closed, "a connection without a TLS handshake was kept");
    assert!(start.elapsed() >= Duration::from_millis(1500));

    // TLS, then nothing: closed after the 3 s request-head timeout
    let mut tls = tls_from(ip("127.0.0.7"), port, &fp).await.unwrap();
    let start = Instant::now();
    let (_, closed) = read_until_closed(&mut tls, Duration::from_secs(13)).await;
    assert!(closed, "a silent TLS connection was kept");
    assert!(start.elapsed() >= Duration::from_millis(2500));

    // a client whose body arrives slowly (6 s, longer than the head timeout) is still served
    let mut slow = tls_from(ip("127.0.0.8"), port, &fp).await.unwrap();
    let request = login_request("admin@pbs", &server.password);
    let (head, body) = request.split_at(request.find("\r\n\r\n").unwrap() + 4);
    slow.write_all(head.as_bytes()).await.unwrap();
    let mut pace = tokio::time::interval(Duration::from_millis(6000 / body.len() as u64));
    for byte in body.as_bytes() {
        pace.tick().await;
        slow.write_all(&[*byte]).await.unwrap();
    }
    let (status, text) = read_response(&mut slow, Duration::from_secs(10))
        .await
        .unwrap();
    assert_eq!(status, 200, "{text}");

    // an upgraded backup session that stays quiet for longer than the head timeout and the
    // keep-alive interval (it answers the server's PINGs) is not cut, and finishes
    let client = server.admin_client().await.unwrap();
    let mut session = BackupSession::start(
        &client,
        BackupParams::new(server.store(), "host", "quiet", 1),
    )
    .await
    .unwrap();
    session.upload_blob("a.conf", b"before").await.unwrap();
    // the stimulus: six seconds without a request on the session
    tokio::time::sleep(Duration::from_secs(6)).await;
    session.upload_blob("b.conf", b"after").await.unwrap();
    session.finish().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unauthenticated_bodies_are_refused_without_being_read() {
    let server = start("").await;
    let (port, fp, pid) = (
        server.port(),
        server.fingerprint.clone(),
        server.pid().unwrap(),
    );
    let store = server.store().to_string();
    let log_path = format!(
        "/api2/json/admin/datastore/{store}/upload-backup-log?backup-type=host&backup-id=x&backup-time=1"
    );
    let big = 16 * 1024 * 1024 - 1;

    // the head alone decides: 401 arrives although not one body byte was sent
    let mut s = tls_from(ip("127.0.0.1"), port, &fp).await.unwrap();
    let head = format!(
        "PUT {log_path} HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/octet-stream\r\nContent-Length: {big}\r\n\r\n"
    );
    s.write_all(head.as_bytes()).await.unwrap();
    let (status, _) = read_response(&mut s, Duration::from_secs(10))
        .await
        .unwrap();
    assert_eq!(status, 401);
    let (_, closed) = read_until_closed(&mut s, Duration::from_secs(10)).await;
    assert!(closed, "the unread body's connection stays open");

    // 16 clients push 16 MiB - 1 each: the server's memory does not follow
    let rss_before = proc_status_kib(pid, "VmRSS").unwrap();
    reset_peak_rss(pid).unwrap();
    let mut pushes = Vec::new();
    for i in 0..16 {
        let head = head.clone();
        let fp = fp.clone();
        let source = ip(&format!("127.0.1.{}", i + 1));
        pushes.push(tokio::spawn(async move {
            let mut s = tls_from(source, port, &fp).await.unwrap();
            let written = write_request(&mut s, &head, big).await;
            let answer = read_response(&mut s, Duration::from_secs(20)).await;
            (written, answer.map(|(status, _)| status).unwrap_or(0))
        }));
    }
    let mut total_written = 0;
    for push in pushes {
        let (written, status) = push.await.unwrap();
        assert!(status == 401 || status == 0, "status {status}");
        assert!(
            written < big as u64,
            "a whole unauthenticated body was taken"
        );
        total_written += written;
    }
    let peak = proc_status_kib(pid, "VmHWM").unwrap();
    eprintln!(
        "16 unauthenticated 16 MiB bodies: {total_written} body bytes sent in all, RSS {rss_before} KiB, peak {peak} KiB"
    );
    assert!(
        peak < rss_before + 32 * MIB,
        "peak RSS {peak} KiB grew by more than 32 MiB from {rss_before} KiB (bodies: {total_written} bytes sent)"
    );

    // an unauthenticated POST with a 512 KiB body elsewhere: the same
    let mut s = tls_from(ip("127.0.0.1"), port, &fp).await.unwrap();
    let head = format!(
        "POST /api2/json/admin/datastore/{store}/notes HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        512 * 1024
    );
    s.write_all(head.as_bytes()).await.unwrap();
    let (status, _) = read_response(&mut s, Duration::from_secs(10))
        .await
        .unwrap();
    assert_eq!(status, 401);

    // the login itself may not announce a big body either (refused at once, not read)
    let mut s = tls_from(ip("127.0.0.1"), port, &fp).await.unwrap();
    let head = "POST /api2/json/access/ticket HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: 1048576\r\n\r\n";
    s.write_all(head.as_bytes()).await.unwrap();
    let (status, body) = read_response(&mut s, Duration::from_secs(10))
        .await
        .unwrap();
    assert_eq!(status, 400, "{body}");

    // authenticated uploads still work
    let client = server.admin_client().await.unwrap();
    let ok = client
        .raw(Method::GET, "/api2/json/version", None, vec![], &[], true)
        .await
        .unwrap();
    assert_eq!(ok.status, 200);
}

/// Median of a sample (milliseconds).
fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

/// Share of (a, b) pairs where a is slower: 0.5 when the two are inseparable, 1.0 when every
/// `a` is slower than every `b` (the issue measured 1.0 for known vs unknown users).
fn share_slower(a: &[f64], b: &[f64]) -> f64 {
    let mut wins = 0.0;
    for x in a {
        for y in b {
            if x > y {
                wins += 1.0;
            } else if x == y {
                wins += 0.5;
            }
        }
    }
    wins / (a.len() * b.len()) as f64
}

async fn timed_failed_login(client: PbsClient, user: &'static str) -> f64 {
    let start = Instant::now();
    let result = client.login(user, "definitely-wrong").await;
    assert_eq!(result.err().and_then(|e| e.status()), Some(401));
    start.elapsed().as_secs_f64() * 1000.0
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_logins_of_known_and_unknown_users_take_the_same_time() {
    let server = start("[limits]\nauth_hash_workers = 2\n").await;
    // 20 + 20 failed logins, interleaved and in parallel (each answer comes ~3 s after its
    // request: the anti brute-force delay, counted from arrival)
    let mut tasks = Vec::new();
    for i in 0..40 {
        let client = server.client().await.unwrap();
        let user = if i % 2 == 0 {
            "admin@pbs"
        } else {
            "nobody@pbs"
        };
        tasks.push((user, tokio::spawn(timed_failed_login(client, user))));
    }
    let (mut known, mut unknown) = (Vec::new(), Vec::new());
    for (user, task) in tasks {
        let ms = task.await.unwrap();
        match user {
            "admin@pbs" => known.push(ms),
            _ => unknown.push(ms),
        }
    }
    let share = share_slower(&known, &unknown);
    let (mk, mu) = (median(known.clone()), median(unknown.clone()));
    eprintln!("failed logins: known median {mk:.0} ms, unknown median {mu:.0} ms, P(known slower) {share:.2}");
    assert!((2900.0..6000.0).contains(&mk), "known {known:?}");
    assert!((mk - mu).abs() < 150.0, "medians {mk} vs {mu}");
    assert!(
        (0.2..=0.8).contains(&share),
        "known and unknown users are separable by time: {share} (known {known:?}, unknown {unknown:?})"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parallel_wrong_logins_keep_memory_bounded() {
    let server = start("[limits]\nauth_hash_workers = 2\nauth_hash_queue = 64\n").await;
    let pid = server.pid().unwrap();
    // warm up: one failed login starts the two hash workers
    let _ = timed_failed_login(server.client().await.unwrap(), "admin@pbs").await;
    let rss_before = proc_status_kib(pid, "VmRSS").unwrap();
    for round in 0..2 {
        reset_peak_rss(pid).unwrap();
        let mut tasks = Vec::new();
        for _ in 0..50 {
            let client = server.client().await.unwrap();
            tasks.push(tokio::spawn(timed_failed_login(client, "admin@pbs")));
        }
        for task in tasks {
            task.await.unwrap();
        }
        let peak = proc_status_kib(pid, "VmHWM").unwrap();
        let rss = proc_status_kib(pid, "VmRSS").unwrap();
        eprintln!("round {round}: RSS {rss_before} -> {rss} KiB, peak {peak} KiB");
        // two workers x 19 MiB of argon2 memory, which the warm-up already allocated
        assert!(
            peak < rss_before + 48 * MIB,
            "peak RSS {peak} KiB is more than 48 MiB above {rss_before} KiB"
        );
    }
    server
        .admin_client()
        .await
        .expect("login after the attempts");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_token_secrets_do_not_starve_normal_requests() {
    let mut server = TestServer::prepare().unwrap();
    server
        .set_config("[limits]\nauth_hash_workers = 2\nauth_hash_queue = 16\n")
        .unwrap();
    server.launch().await.unwrap();
    let out = server
        .manage(&["token", "add", "admin@pbs!probe"], "")
        .unwrap();
    let secret = out
        .lines()
        .find_map(|l| l.strip_prefix("secret: "))
        .unwrap()
        .trim()
        .to_string();
    server.restart().await.unwrap();
    let pid = server.pid().unwrap();

    let admin = server.admin_client().await.unwrap();
    let token = server
        .client()
        .await
        .unwrap()
        .with_token("admin@pbs!probe", &secret);
    // the correct secret is hashed once, then cached
    token.get("/api2/json/version", None).await.unwrap();

    let rss_before = proc_status_kib(pid, "VmRSS").unwrap();
    reset_peak_rss(pid).unwrap();
    // 100 connections, 3 wrong secrets each
    let mut attackers = Vec::new();
    for i in 0..100 {
        let client = server.client().await.unwrap().with_token(
            "admin@pbs!probe",
            &format!("00000000-0000-4000-8000-{i:012}"),
        );
        attackers.push(tokio::spawn(async move {
            let mut statuses = Vec::new();
            for _ in 0..3 {
                let r = client
                    .raw(Method::GET, "/api2/json/version", None, vec![], &[], true)
                    .await
                    .unwrap();
                statuses.push(r.status);
            }
            statuses
        }));
    }
    // normal requests meanwhile: a ticket and the cached token, 20 each
    let mut worst = Duration::ZERO;
    for _ in 0..20 {
        for client in [&admin, &token] {
            let start = Instant::now();
            client.get("/api2/json/version", None).await.unwrap();
            worst = worst.max(start.elapsed());
        }
    }
    let (mut refused, mut busy) = (0, 0);
    for a in attackers {
        for status in a.await.unwrap() {
            match status {
                401 => refused += 1,
                503 => busy += 1,
                other => panic!("wrong secret answered {other}"),
            }
        }
    }
    let peak = proc_status_kib(pid, "VmHWM").unwrap();
    eprintln!(
        "wrong secrets: {refused} x 401, {busy} x 503; slowest normal request {worst:?}; peak RSS {peak} KiB (from {rss_before})"
    );
    assert!(
        worst < Duration::from_secs(2),
        "normal requests starved: {worst:?}"
    );
    assert!(peak < rss_before + 48 * MIB, "peak RSS {peak} KiB");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_without_credentials_says_only_not_ready() {
    let server = start("").await;
    let client = server.client().await.unwrap();
    let get = |path: &'static str, auth: bool| {
        let client = &client;
        async move {
            client
                .raw(Method::GET, path, None, vec![], &[], auth)
                .await
                .unwrap()
        }
    };
    assert_eq!(get("/readyz", false).await.status, 200);
    assert_eq!(get("/readyz", false).await.text(), "ready\n");

    // the datastore's directory disappears (a lost mount); moved away in one step, since the
    // server may be writing into it meanwhile (a recursive delete races with that)
    let dir = server.data_dir().join("datastores").join(server.store());
    std::fs::rename(&dir, server.data_dir().join("lost-mount")).unwrap();
    let anonymous = get("/readyz", false).await;
    assert_eq!(anonymous.status, 503);
    assert_eq!(anonymous.text(), "not ready\n");
    assert_eq!(get("/healthz", false).await.text(), "ok\n");

    // with the administrator's credentials: which datastore and why
    client
        .login(&server.repository.auth_id, &server.password)
        .await
        .unwrap();
    let detailed = get("/readyz", true).await;
    assert_eq!(detailed.status, 503);
    let text = detailed.text();
    assert!(
        text.starts_with(&format!("not ready: datastore '{}': ", server.store())),
        "{text}"
    );
}
