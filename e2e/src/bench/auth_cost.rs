//! `pbs-bench auth-cost`: what one credential check costs the server, by kind, measured on the
//! server's own `AuthService` (its bounded hash pool included) in this process. Failed logins
//! of known and unknown users, malformed ids and wrong token secrets should cost the same (one
//! argon2 hash each); a cached token secret should cost no hash. The kinds are interleaved
//! round by round so that machine noise hits them alike; the report gives medians and the
//! number of hashes each check ran.

use std::time::Instant;

use anyhow::{Context, Result};
use http::{HeaderMap, HeaderValue, Method};
use pbs_cloud_server::auth::{AuthSeed, AuthService};
use serde::Serialize;

use super::median;

#[derive(Serialize)]
pub struct KindResult {
    pub kind: &'static str,
    pub median_ms: f64,
    pub hashes_per_check: f64,
}

#[derive(Serialize)]
pub struct Report {
    pub rounds: usize,
    pub kinds: Vec<KindResult>,
}

const KINDS: [&str; 5] = [
    "login, known user, wrong password",
    "login, unknown user",
    "login, malformed user id",
    "token, wrong secret",
    "token, cached correct secret",
];

fn token_headers(tokenid: &str, secret: &str) -> Result<HeaderMap> {
    let mut h = HeaderMap::new();
    h.insert(
        http::header::AUTHORIZATION,
        HeaderValue::from_str(&format!("PBSAPIToken {tokenid}:{secret}"))?,
    );
    Ok(h)
}

pub async fn run(rounds: usize) -> Result<Report> {
    let dir = tempfile::tempdir().context("temp dir")?;
    let auth = AuthService::open(dir.path(), AuthSeed::default())?;
    auth.ensure_tenant("bench", None)?;
    auth.add_user("alice@pbs", "bench", "correct horse", false)?;
    let secret = auth.add_token("alice@pbs!bench")?;
    let good = token_headers("alice@pbs!bench", &secret)?;
    let wrong = token_headers("alice@pbs!bench", "00000000-0000-4000-8000-000000000000")?;
    // warm up: starts the pool and caches the token
    let _ = auth.login("alice@pbs", "x").await;
    auth.authenticate(&good, &Method::GET).await?;

    let mut times: Vec<Vec<f64>> = vec![Vec::new(); KINDS.len()];
    let mut hashes = vec![0u64; KINDS.len()];
    for _ in 0..rounds {
        for (i, samples) in times.iter_mut().enumerate() {
            let before = auth.hashes_done();
            let start = Instant::now();
            let ok = match i {
                0 => auth.login("alice@pbs", "wrong").await.is_ok(),
                1 => auth.login("nobody@pbs", "wrong").await.is_ok(),
                2 => auth.login("no realm", "wrong").await.is_ok(),
                3 => auth.authenticate(&wrong, &Method::GET).await.is_ok(),
                _ => auth.authenticate(&good, &Method::GET).await.is_ok(),
            };
            samples.push(start.elapsed().as_secs_f64() * 1000.0);
            hashes[i] += auth.hashes_done() - before;
            anyhow::ensure!(ok == (i == 4), "check '{}' gave {ok}", KINDS[i]);
        }
    }
    Ok(Report {
        rounds,
        kinds: KINDS
            .iter()
            .zip(times)
            .zip(hashes)
            .map(|((kind, samples), h)| KindResult {
                kind,
                median_ms: median(samples),
                hashes_per_check: h as f64 / rounds.max(1) as f64,
            })
            .collect(),
    })
}

pub fn render(r: &Report) -> String {
    let mut out = format!("credential checks, {} rounds (medians)\n", r.rounds);
    for k in &r.kinds {
        out.push_str(&format!(
            "{:<36} {:>9.2} ms {:>5.2} hashes\n",
            k.kind, k.median_ms, k.hashes_per_check
        ));
    }
    out
}
