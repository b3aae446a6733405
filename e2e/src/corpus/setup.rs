//! What a scenario needs on the server before (or between) its recorded exchanges, as the
//! recorder set it up without recording it: the users, tokens and ACLs, snapshots made with
//! our protocol test client, and snapshots rebuilt from what a recorded reader session
//! downloaded (manifest, blobs, index entries, chunk kinds).

use std::collections::HashMap;

use http::Method;
use serde_json::{json, Value};

use super::load::{Body, Exchange, Layer, Scenario};
use super::manifest::rewrite_manifest;
use super::state::{Replayer, ServerAddr};
use super::subst::{query_pairs, SnapRef};
use super::synth::{base64_decode, kind_of_magic, ChunkSpec};
use super::ReplayError;
use crate::backup::{BackupParams, BackupSession};
use crate::http::PbsClient;
use crate::server::TestServer;
use crate::wire::{self, BlobKind};

/// The user every recorded client logged in as (role `Admin` on `/`).
pub const USER: &str = "bench@pbs";
/// Its password on our server: 16 characters like the recorded one, so recorded
/// `content-length` values of login bodies stay right.
pub const PASSWORD: &str = "CorpusReplay2026";
/// The user scenario 7 hands a group to (`change-owner`).
pub const OWNER: &str = "corpus-owner@pbs";
/// The recorded server's superuser (PBS's built-in one, listed with comment `Superuser`);
/// our server's superuser gets its name, so user listings can be compared.
pub const SUPERUSER: &str = "root@pam";
/// First backup time of the corpus (2025-01-01T00:00:00Z).
pub const T0: i64 = 1_735_689_600;

/// An API token with one ACL entry.
#[derive(Debug, Clone)]
pub struct TokenSpec {
    pub tokenid: String,
    pub path: String,
    pub role: String,
}

/// One setup action.
#[derive(Debug, Clone)]
pub enum Step {
    /// A backup with our protocol test client: blobs only (`name` without `.blob`).
    Backup {
        snap: SnapRef,
        blobs: Vec<(String, Vec<u8>)>,
    },
    /// The snapshot as a recorded reader session saw it, with optional notes.
    Materialize {
        snap: SnapRef,
        notes: Option<String>,
    },
    Protect {
        snap: SnapRef,
    },
    CreateNs {
        ns: String,
    },
    Forget {
        snap: SnapRef,
    },
    /// A login of the recorder's own REST client (its ticket is what the next recorded
    /// requests carry).
    Login,
    /// Scenario 9 creates its token and ACL through REST calls; if our server did not
    /// accept them, the token is made with the management CLI so the rest can run.
    EnsureToken(TokenSpec),
    /// A finished garbage collection of `store1` (the recorded datastore had one: its status
    /// shows the task's id).
    Gc,
}

/// Setup of one scenario: tokens made before the server starts, and steps to run right
/// before the exchange with the given `order`.
#[derive(Debug, Clone, Default)]
pub struct Plan {
    /// Users besides [`SUPERUSER`] and [`USER`] that existed on the recorded server.
    pub users: Vec<&'static str>,
    pub tokens: Vec<TokenSpec>,
    pub steps: Vec<(u32, Step)>,
}

fn snap(ns: &str, t: &str, id: &str, time: i64) -> SnapRef {
    SnapRef {
        ns: ns.to_string(),
        backup_type: t.to_string(),
        backup_id: id.to_string(),
        backup_time: time,
    }
}

/// The 5-line guest config the recorder backed up.
pub fn guest_conf(id: &str) -> Vec<u8> {
    format!("# corpus guest config {id}\nname: {id}\ncores: 2\nmemory: 2048\nnet0: virtio=AA:BB:CC:00:11:22\n").into_bytes()
}

/// The setup the recorder did for scenario `sc` (see the corpus README).
pub fn plan(sc: &Scenario) -> Plan {
    let name = sc.name.as_str();
    let client = if name.starts_with("c3-") { "c3" } else { "c4" };
    let conf_backup = |id: &str, time: i64| Step::Backup {
        snap: snap("", "host", id, time),
        blobs: vec![("guest.conf".into(), guest_conf(id))],
    };
    let mut p = Plan::default();
    match name.split_once('-').map(|(_, rest)| rest).unwrap_or("") {
        // listings have something to show (a group the scenario did not create)
        "basic-info" => p.steps.push((1, conf_backup("corpus-setup-listing", T0))),
        "restore-catalog-files" => p.steps.push((
            1,
            Step::Materialize {
                snap: snap("", "host", &format!("corpus-{client}-s2"), T0 + 3600),
                notes: None,
            },
        )),
        "notes-protected-prune-forget" => {
            for t in [T0, T0 + 3600, T0 + 7200] {
                p.steps
                    .push((1, conf_backup(&format!("corpus-{client}-s5"), t)));
            }
        }
        "uploadlog-gc-chown" => {
            p.users.push(OWNER);
            p.steps
                .push((1, conf_backup(&format!("corpus-{client}-s7"), T0)));
        }
        "api-token" => p.steps.extend([
            (1, Step::Login),
            (
                3,
                Step::EnsureToken(TokenSpec {
                    tokenid: format!("{USER}!corpus-{client}"),
                    path: "/datastore/store1".into(),
                    role: "DatastoreAdmin".into(),
                }),
            ),
        ]),
        _ => {}
    }
    match name {
        "s4-rest-monitoring" => {
            // the recorder gave the token PBS's role `Audit` on `/`
            p.tokens.push(TokenSpec {
                tokenid: format!("{USER}!corpus-s4"),
                path: "/".into(),
                role: "Audit".into(),
            });
            p.steps.push((1, Step::Gc));
            p.steps.push((
                1,
                Step::CreateNs {
                    ns: "corpus-s4-rest".into(),
                },
            ));
            p.steps.push((
                1,
                Step::Backup {
                    snap: snap("corpus-s4-rest", "vm", "9001", T0),
                    blobs: vec![("qemu-server.conf".into(), guest_conf("9001"))],
                },
            ));
        }
        "s4-push-sync" => {
            p.steps.push((
                78,
                Step::Protect {
                    snap: snap("corpus-s4-push", "host", "corpus-s4-push", T0 + 3600),
                },
            ));
            p.steps.push((
                105,
                Step::CreateNs {
                    ns: "corpus-s4-push/stale".into(),
                },
            ));
        }
        "s4-pull-sync" => {
            let src = |t| snap("corpus-s4-pull-src", "host", "corpus-s4-pull", t);
            p.steps.push((
                1,
                Step::CreateNs {
                    ns: "corpus-s4-pull-src".into(),
                },
            ));
            p.steps.push((
                1,
                Step::Materialize {
                    snap: src(T0),
                    notes: None,
                },
            ));
            p.steps.push((
                1,
                Step::Materialize {
                    snap: src(T0 + 3600),
                    notes: Some("pulled note".into()),
                },
            ));
            p.steps.push((
                26,
                Step::Materialize {
                    snap: src(T0 + 7200),
                    notes: None,
                },
            ));
            p.steps.push((26, Step::Forget { snap: src(T0) }));
        }
        _ => {}
    }
    p
}

/// The server of one scenario and a setup client logged in as [`USER`].
pub struct Env {
    pub server: TestServer,
    pub password: String,
    /// Secret of the plan's token (the recorded requests call it `<TOKEN_SECRET>`).
    pub token_secret: Option<String>,
    client: Option<PbsClient>,
}

/// The secret `token add` printed.
fn secret_of(out: &str) -> Result<String, ReplayError> {
    out.lines()
        .find_map(|l| l.strip_prefix("secret: "))
        .map(|s| s.trim().to_string())
        .ok_or_else(|| ReplayError::Setup(format!("no secret in {out:?}")))
}

impl Env {
    /// A fresh server with [`SUPERUSER`], [`USER`] (Admin on `/`), the plan's users and
    /// tokens, made in the order the recorded server's user list shows.
    pub async fn start(plan: &Plan) -> Result<Env, ReplayError> {
        let mut server = TestServer::prepare()?;
        // with a user present, the first start creates no admin of its own
        let superuser_password = "corpus-superuser-password";
        server.manage(
            &[
                "user",
                "add",
                SUPERUSER,
                "--superuser",
                "--comment",
                "Superuser",
            ],
            &format!("{superuser_password}\n"),
        )?;
        server.password = superuser_password.to_string();
        server.manage(&["user", "add", USER], &format!("{PASSWORD}\n"))?;
        server.manage(&["acl", "add", "/", USER, "Admin"], "")?;
        for user in &plan.users {
            server.manage(&["user", "add", user], "corpus-user-password\n")?;
        }
        let mut token_secret = None;
        for t in &plan.tokens {
            token_secret = Some(secret_of(
                &server.manage(&["token", "add", &t.tokenid], "")?,
            )?);
            server.manage(&["acl", "add", &t.path, &t.tokenid, &t.role], "")?;
        }
        server.launch().await?;
        Ok(Env {
            server,
            password: PASSWORD.to_string(),
            token_secret,
            client: None,
        })
    }

    pub fn addr(&self) -> ServerAddr {
        ServerAddr {
            host: self.server.host().to_string(),
            port: self.server.port(),
            fingerprint: self.server.fingerprint.clone(),
        }
    }

    async fn client(&mut self) -> Result<&PbsClient, ReplayError> {
        if self.client.is_none() {
            let c = self.server.client().await?;
            c.login(USER, &self.password).await?;
            self.client = Some(c);
        }
        Ok(self.client.as_ref().expect("set above"))
    }

    pub async fn stop(mut self) {
        self.client = None;
        self.server.stop().await;
    }
}

fn snap_params(s: &SnapRef) -> Value {
    let mut p = json!({
        "backup-type": s.backup_type,
        "backup-id": s.backup_id,
        "backup-time": s.backup_time,
    });
    if !s.ns.is_empty() {
        p["ns"] = json!(s.ns);
    }
    p
}

fn backup_params(s: &SnapRef) -> BackupParams {
    let mut p = BackupParams::new("store1", &s.backup_type, &s.backup_id, s.backup_time);
    p.ns = (!s.ns.is_empty()).then(|| s.ns.clone());
    p
}

/// Runs one setup step.
pub async fn run_step(r: &mut Replayer<'_>, env: &mut Env, step: &Step) -> Result<(), ReplayError> {
    let fail = |what: &str, e: &dyn std::fmt::Display| ReplayError::Setup(format!("{what}: {e}"));
    match step {
        Step::Backup { snap, blobs } => {
            let client = env.client().await?;
            let mut session = BackupSession::start(client, backup_params(snap)).await?;
            for (name, data) in blobs {
                let stats = session.upload_blob(name, data).await?;
                r.vars
                    .blob_sizes
                    .insert((snap.clone(), stats.name.clone()), stats.size);
            }
            session.finish().await?;
        }
        Step::Materialize { snap, notes } => {
            materialize(r, env, snap).await?;
            if let Some(text) = notes {
                let mut p = snap_params(snap);
                p["notes"] = json!(text);
                env.client()
                    .await?
                    .put("admin/datastore/store1/notes", Some(&p))
                    .await
                    .map_err(|e| fail(&format!("notes of {snap}"), &e))?;
            }
        }
        Step::Protect { snap } => {
            let mut p = snap_params(snap);
            p["protected"] = json!(true);
            env.client()
                .await?
                .put("admin/datastore/store1/protected", Some(&p))
                .await
                .map_err(|e| fail(&format!("protect {snap}"), &e))?;
        }
        Step::CreateNs { ns } => {
            let (parent, name) = ns.rsplit_once('/').unwrap_or(("", ns));
            env.client()
                .await?
                .post(
                    "admin/datastore/store1/namespace",
                    Some(&json!({"name": name, "parent": parent})),
                )
                .await
                .map_err(|e| fail(&format!("create namespace {ns}"), &e))?;
        }
        Step::Forget { snap } => {
            env.client()
                .await?
                .delete("admin/datastore/store1/snapshots", Some(&snap_params(snap)))
                .await
                .map_err(|e| fail(&format!("forget {snap}"), &e))?;
        }
        Step::EnsureToken(t) => ensure_token(r, env, t).await?,
        Step::Gc => garbage_collect(env).await?,
        Step::Login => {
            let client = env.server.client().await?;
            let ticket = client.login(USER, &env.password).await?;
            r.vars.ticket = Some(ticket.ticket);
            r.vars.csrf = Some(ticket.csrf);
        }
    }
    Ok(())
}

/// Runs a garbage collection of `store1` and waits (60 s at most) until its task stopped.
async fn garbage_collect(env: &mut Env) -> Result<(), ReplayError> {
    let fail = |what: &str, e: &dyn std::fmt::Display| ReplayError::Setup(format!("{what}: {e}"));
    let client = env.client().await?;
    let upid = client
        .post("admin/datastore/store1/gc", None)
        .await
        .map_err(|e| fail("start garbage collection", &e))?;
    let upid = upid
        .as_str()
        .ok_or_else(|| ReplayError::Setup(format!("garbage collection answered {upid}")))?;
    let encoded =
        percent_encoding::utf8_percent_encode(upid, percent_encoding::NON_ALPHANUMERIC).to_string();
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let status = client
            .get(&format!("nodes/localhost/tasks/{encoded}/status"), None)
            .await
            .map_err(|e| fail("garbage collection status", &e))?;
        if status["status"] == "stopped" {
            return match status["exitstatus"].as_str() {
                Some("OK") => Ok(()),
                other => Err(ReplayError::Setup(format!(
                    "garbage collection ended with {other:?}"
                ))),
            };
        }
        if tokio::time::Instant::now() > deadline {
            return Err(ReplayError::Setup(format!(
                "garbage collection {upid} still running after 60 s"
            )));
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

/// Makes the token of scenario 9 exist with its ACL, by the management CLI where our
/// server did not accept the recorded REST calls (those stay reported as mismatches).
async fn ensure_token(
    r: &mut Replayer<'_>,
    env: &mut Env,
    t: &TokenSpec,
) -> Result<(), ReplayError> {
    let refused = |needle: &str| {
        r.results.iter().any(|x| {
            x.request_line.contains(needle)
                && x.diffs
                    .iter()
                    .any(|d| d.what == "status" || d.what == "transport")
        })
    };
    let need_token = r.vars.token_secret.is_none();
    let need_acl = need_token || refused("/access/acl");
    if !need_token && !need_acl {
        return Ok(());
    }
    env.client = None;
    env.server.stop().await;
    if need_token {
        let out = env.server.manage(&["token", "add", &t.tokenid], "")?;
        r.vars.token_secret = Some(secret_of(&out)?);
    }
    env.server
        .manage(&["acl", "add", &t.path, &t.tokenid, &t.role], "")?;
    env.server.launch().await?;
    r.conns.clear();
    Ok(())
}

/// What the recorded reader sessions of one snapshot downloaded.
struct Seen<'a> {
    /// file name → recorded answer body (first successful download).
    files: HashMap<String, &'a Body>,
    /// recorded chunk digest → (kind, encoded length) of its download.
    chunks: HashMap<String, (BlobKind, u64)>,
}

fn seen_by_readers<'a>(sc: &'a Scenario, snap: &SnapRef) -> Seen<'a> {
    let mut conns = Vec::new();
    for e in &sc.exchanges {
        if e.layer == Layer::Http1
            && e.request.target.contains("/reader?")
            && SnapRef::from_query(&query_pairs(&e.request.target)).as_ref() == Some(snap)
        {
            conns.push(e.conn);
        }
    }
    let mut seen = Seen {
        files: HashMap::new(),
        chunks: HashMap::new(),
    };
    let mut ordered: Vec<&Exchange> = sc
        .exchanges
        .iter()
        .filter(|e| e.layer == Layer::H2 && conns.contains(&e.conn))
        .collect();
    ordered.sort_by_key(|e| e.order);
    for e in ordered {
        if e.response.status != 200 {
            continue;
        }
        let q = query_pairs(&e.request.target);
        let get = |k: &str| q.iter().find(|(key, _)| key == k).map(|(_, v)| v.clone());
        if e.request.target.starts_with("/download?") {
            if let Some(f) = get("file-name") {
                seen.files.entry(f).or_insert(&e.response.body);
            }
        } else if e.request.target.starts_with("/chunk?") {
            if let (Some(d), Body::Binary(b)) = (get("digest"), &e.response.body) {
                if let Some(kind) = b.magic.as_deref().and_then(kind_of_magic) {
                    seen.chunks.insert(d, (kind, b.len));
                }
            }
        }
    }
    seen
}

async fn call(
    session: &BackupSession,
    method: Method,
    pq: &str,
    ct: &str,
    body: Vec<u8>,
) -> Result<Value, ReplayError> {
    let (status, bytes) = session.raw_request(method.clone(), pq, ct, body).await?;
    if status != 200 {
        return Err(ReplayError::Setup(format!(
            "{method} {pq}: HTTP {status}: {}",
            String::from_utf8_lossy(&bytes)
        )));
    }
    Ok(serde_json::from_slice::<Value>(&bytes).unwrap_or(Value::Null)["data"].take())
}

/// Rebuilds `snap` from the recorded reader sessions of it: the manifest's files in order,
/// blobs with the recorded bytes (or stand-ins), indexes with stand-in chunks of the recorded
/// sizes and kinds, then the manifest with our checksums; a downloaded `client.log.blob` is
/// uploaded afterwards like `upload-log` does.
async fn materialize(
    r: &mut Replayer<'_>,
    env: &mut Env,
    snap: &SnapRef,
) -> Result<(), ReplayError> {
    let seen = seen_by_readers(r.sc, snap);
    let setup = |m: String| ReplayError::Setup(format!("rebuilding {snap}: {m}"));
    let Some(Body::Binary(mb)) = seen.files.get("index.json.blob") else {
        return Err(setup("no recorded download of its manifest".into()));
    };
    let manifest = mb
        .decoded
        .as_ref()
        .and_then(|d| d.get("payload_json"))
        .cloned()
        .ok_or_else(|| setup("the recorded manifest has no payload".into()))?;
    let client = env.client().await?;
    let session = BackupSession::start_raw(client, backup_params(snap)).await?;
    let files: Vec<Value> = manifest["files"].as_array().cloned().unwrap_or_default();
    for f in &files {
        let name = f["filename"].as_str().unwrap_or("").to_string();
        let encrypted = f["crypt-mode"] == "encrypt";
        if name.ends_with(".blob") {
            let bytes = match seen.files.get(&name) {
                Some(Body::Binary(b)) => match &b.b64 {
                    Some(b64) => base64_decode(b64)?,
                    None => {
                        let kind = b
                            .magic
                            .as_deref()
                            .and_then(kind_of_magic)
                            .unwrap_or(BlobKind::Zstd);
                        r.synth.blob(&b.sha256, kind, b.len)?
                    }
                },
                _ => {
                    let kind = if encrypted {
                        BlobKind::EncryptedZstd
                    } else {
                        BlobKind::Zstd
                    };
                    r.synth.blob(
                        f["csum"].as_str().unwrap_or(""),
                        kind,
                        f["size"].as_u64().unwrap_or(64),
                    )?
                }
            };
            if let Some(c) = f["csum"].as_str() {
                r.vars.learn(c, &wire::hex(&wire::sha256(&bytes)));
            }
            r.vars
                .blob_sizes
                .insert((snap.clone(), name.clone()), bytes.len() as u64);
            let pq = format!("blob?encoded-size={}&file-name={name}", bytes.len());
            call(
                &session,
                Method::POST,
                &pq,
                "application/octet-stream",
                bytes,
            )
            .await?;
            continue;
        }
        let Some(Body::Binary(ib)) = seen.files.get(&name) else {
            return Err(setup(format!("no recorded download of {name}")));
        };
        let idx = ib
            .index
            .as_ref()
            .ok_or_else(|| setup(format!("{name}: download without index data")))?;
        let fixed = idx.is_fixed();
        let prefix = if fixed { "fixed" } else { "dynamic" };
        let open = if fixed {
            format!(
                "fixed_index?archive-name={name}&size={}",
                idx.size.unwrap_or(0)
            )
        } else {
            format!("dynamic_index?archive-name={name}")
        };
        let wid = call(
            &session,
            Method::POST,
            &open,
            "application/x-www-form-urlencoded",
            Vec::new(),
        )
        .await?
        .as_u64()
        .ok_or_else(|| setup(format!("{name}: no writer id")))?;
        let mut start = 0u64;
        let mut digests = Vec::new();
        let mut offsets = Vec::new();
        let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
        for (end, digest) in idx.entries() {
            let size = end - start;
            let (kind, hint) = seen.chunks.get(&digest).copied().unwrap_or(if encrypted {
                (BlobKind::EncryptedZstd, size / 3 + 44)
            } else {
                (BlobKind::Zstd, size / 3 + 12)
            });
            let ours = r.synth.chunk(
                &digest,
                ChunkSpec {
                    size,
                    kind,
                    encoded_hint: hint,
                },
            )?;
            r.vars.learn(&digest, &ours.hex);
            let pq = format!(
                "{prefix}_chunk?digest={}&encoded-size={}&size={size}&wid={wid}",
                ours.hex,
                ours.encoded.len()
            );
            call(
                &session,
                Method::POST,
                &pq,
                "application/octet-stream",
                ours.encoded.to_vec(),
            )
            .await?;
            if !fixed {
                ctx.update(&end.to_le_bytes());
            }
            ctx.update(&ours.digest);
            digests.push(ours.hex.clone());
            offsets.push(start);
            start = end;
        }
        let append = json!({"digest-list": digests, "offset-list": offsets, "wid": wid});
        call(
            &session,
            Method::PUT,
            &format!("{prefix}_index"),
            "application/json",
            append.to_string().into_bytes(),
        )
        .await?;
        let csum = wire::hex(ctx.finish().as_ref());
        r.vars.learn(&idx.index_csum, &csum);
        if let Some(c) = f["csum"].as_str() {
            r.vars.learn(c, &csum);
        }
        let close = format!(
            "{prefix}_close?chunk-count={}&csum={csum}&size={start}&wid={wid}",
            digests.len()
        );
        call(
            &session,
            Method::POST,
            &close,
            "application/x-www-form-urlencoded",
            Vec::new(),
        )
        .await?;
    }
    let ours = rewrite_manifest(&mut r.vars, &r.synth, snap, &manifest, true)?;
    let blob = r.synth.manifest_blob(&ours, BlobKind::Zstd)?;
    r.vars.learn(&mb.sha256, &wire::hex(&wire::sha256(&blob)));
    let pq = format!("blob?encoded-size={}&file-name=index.json.blob", blob.len());
    call(
        &session,
        Method::POST,
        &pq,
        "application/octet-stream",
        blob,
    )
    .await?;
    call(
        &session,
        Method::POST,
        "finish",
        "application/x-www-form-urlencoded",
        Vec::new(),
    )
    .await?;
    drop(session);
    // a client log is not in the manifest; `upload-log` adds it to the finished snapshot
    if let Some(Body::Binary(b)) = seen.files.get("client.log.blob") {
        let kind = b
            .magic
            .as_deref()
            .and_then(kind_of_magic)
            .unwrap_or(BlobKind::Zstd);
        let blob = r.synth.blob(&b.sha256, kind, b.len)?;
        r.vars.learn(&b.sha256, &wire::hex(&wire::sha256(&blob)));
        r.vars
            .blob_sizes
            .insert((snap.clone(), "client.log.blob".into()), blob.len() as u64);
        env.client()
            .await?
            .upload(
                "admin/datastore/store1/upload-backup-log",
                Some(&snap_params(snap)),
                blob,
            )
            .await?;
    }
    Ok(())
}
