//! The console's actions through [`super::handle_buffered`]: every form post needs the CSRF
//! token, reaches the same API operation as a REST client, and shows the API's refusal in its
//! own words (protected snapshot, missing privilege, another tenant's store). Also the prune
//! simulator against the server's selection, GC and task stop, and the streamed image download
//! behind the snapshot page's link.

use bytes::Bytes;
use http::{header, Request, StatusCode};
use http_body_util::BodyExt;

use super::api_client::enc;
use super::tests::{csrf_of, env, form_post, get, login, request, Env};
use crate::backend::{Backend, PutOptions};
use crate::datastore::layout::snapshot_file_key;
use crate::format::blob::encode_blob;
use crate::format::fixed_index::FixedIndex;
use crate::format::manifest::{CryptMode, FileInfo, Manifest};
use crate::format::names::{BackupDir, BackupGroup, BackupNamespace, BackupType};
use crate::format::{digest_to_hex, sha256};

/// Puts a finished snapshot of group `vm/{id}` at `time` with `files` in its manifest.
async fn put_snapshot(env: &Env, id: &str, time: i64, files: Vec<FileInfo>) {
    let group = BackupGroup::new(BackupType::Vm, id).unwrap();
    let dir = BackupDir::new(group, time).unwrap();
    let mut manifest = Manifest::new("vm", id, time);
    manifest.files = files;
    let key = snapshot_file_key(&BackupNamespace::root(), &dir, "index.json.blob").unwrap();
    env.backend
        .put(&key, Bytes::from(manifest.to_blob()), PutOptions::default())
        .await
        .unwrap();
}

/// The time of the only snapshot of `vm/{id}` that `env()` made.
async fn first_time(env: &Env, id: &str) -> i64 {
    let group = BackupGroup::new(BackupType::Vm, id).unwrap();
    let list = env
        .store
        .tree()
        .list_snapshots(&BackupNamespace::root(), &group)
        .await
        .unwrap();
    list[0].dir.time
}

fn snapshot_fields(id: &str, time: i64) -> String {
    format!("backup-type=vm&backup-id={id}&backup-time={time}")
}

/// The UPID of the task page an action redirected to (`/console/tasks/{upid}`).
fn task_of(answer: &super::tests::Answer) -> String {
    let location = answer.headers[header::LOCATION].to_str().unwrap();
    let encoded = location.strip_prefix("/console/tasks/").unwrap();
    percent_encoding::percent_decode_str(encoded)
        .decode_utf8()
        .unwrap()
        .into_owned()
}

/// Posts an action form as `cookie` with `csrf` (`None`: without the token).
async fn act(
    env: &Env,
    cookie: &str,
    csrf: Option<&str>,
    path: &str,
    fields: &str,
) -> super::tests::Answer {
    let body = match csrf {
        Some(t) => format!("CSRFPreventionToken={}&{fields}", enc(t)),
        None => fields.to_string(),
    };
    request(env, form_post(path, Some(cookie), &body)).await
}

#[tokio::test]
async fn notes_protection_and_forget_go_through_the_api() {
    let env = env().await;
    let alice = login(&env, "alice@pbs", "alicepw").await;
    let t = first_time(&env, "100").await;
    let snap = format!(
        "/console/datastore/s1/snapshot?{}",
        snapshot_fields("100", t)
    );
    let page = request(&env, get(&snap, Some(&alice))).await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.text);
    let csrf = csrf_of(&page.text);
    for form in [
        "action=\"/console/datastore/s1/notes\"",
        "id=\"protect\"",
        "id=\"forget\"",
    ] {
        assert!(page.text.contains(form), "{form} missing: {}", page.text);
    }

    // Without the CSRF token nothing happens.
    let fields = format!("{}&notes=new", snapshot_fields("100", t));
    let refused = act(&env, &alice, None, "/console/datastore/s1/notes", &fields).await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN);
    let wrong = act(
        &env,
        &alice,
        Some("1:x"),
        "/console/datastore/s1/notes",
        &fields,
    )
    .await;
    assert_eq!(wrong.status, StatusCode::FORBIDDEN);

    // Notes: stored through the API, back on the snapshot page (escaped).
    let fields = format!(
        "{}&notes={}",
        snapshot_fields("100", t),
        enc("<b>weekly</b>")
    );
    let done = act(
        &env,
        &alice,
        Some(&csrf),
        "/console/datastore/s1/notes",
        &fields,
    )
    .await;
    assert_eq!(done.status, StatusCode::SEE_OTHER, "{}", done.text);
    assert_eq!(done.headers[header::LOCATION], snap.as_str());
    let page = request(&env, get(&snap, Some(&alice))).await;
    assert!(
        page.text.contains("&lt;b&gt;weekly&lt;/b&gt;"),
        "{}",
        page.text
    );
    let dir = BackupDir::new(BackupGroup::new(BackupType::Vm, "100").unwrap(), t).unwrap();
    let (manifest, _) = env
        .store
        .tree()
        .load_manifest(&BackupNamespace::root(), &dir)
        .await
        .unwrap();
    assert_eq!(manifest.notes(), Some("<b>weekly</b>"));

    // Protect, then forget is refused in the API's words.
    let fields = format!("{}&protected=1", snapshot_fields("100", t));
    let done = act(
        &env,
        &alice,
        Some(&csrf),
        "/console/datastore/s1/protected",
        &fields,
    )
    .await;
    assert_eq!(done.status, StatusCode::SEE_OTHER, "{}", done.text);
    let page = request(&env, get(&snap, Some(&alice))).await;
    assert!(page.text.contains("id=\"unprotect\""), "{}", page.text);
    let root = login(&env, "root@pam", "rootpw").await;
    let root_csrf = csrf_of(&request(&env, get("/", Some(&root))).await.text);
    let forget = act(
        &env,
        &root,
        Some(&root_csrf),
        "/console/datastore/s1/forget",
        &snapshot_fields("100", t),
    )
    .await;
    assert_eq!(forget.status, StatusCode::BAD_REQUEST);
    assert!(
        forget.text.contains("id=\"action-error\"")
            && forget.text.contains("cannot remove protected snapshot"),
        "{}",
        forget.text
    );
    assert!(env
        .store
        .tree()
        .snapshot_exists(&BackupNamespace::root(), &dir)
        .await
        .unwrap());

    // Permission variant: alice owns the group but lacks Datastore.Prune, so the API refuses
    // her forget even when unprotected; the page says so.
    let fields = format!("{}&protected=0", snapshot_fields("100", t));
    act(
        &env,
        &alice,
        Some(&csrf),
        "/console/datastore/s1/protected",
        &fields,
    )
    .await;
    let forget = act(
        &env,
        &alice,
        Some(&csrf),
        "/console/datastore/s1/forget",
        &snapshot_fields("100", t),
    )
    .await;
    assert_eq!(forget.status, StatusCode::FORBIDDEN, "{}", forget.text);
    assert!(
        forget.text.contains("permission check failed"),
        "{}",
        forget.text
    );
    assert!(env
        .store
        .tree()
        .snapshot_exists(&BackupNamespace::root(), &dir)
        .await
        .unwrap());

    // Alice cannot touch carol's snapshot, and the refusal shows nothing of it.
    let tc = first_time(&env, "200").await;
    let fields = format!("{}&notes=mine", snapshot_fields("200", tc));
    let other = act(
        &env,
        &alice,
        Some(&csrf),
        "/console/datastore/s1/notes",
        &fields,
    )
    .await;
    assert_eq!(other.status, StatusCode::FORBIDDEN, "{}", other.text);
    assert!(!other.text.contains("of carol@pbs"), "{}", other.text);
    // Another tenant's user: the store does not exist for him.
    let bob = login(&env, "bob@pbs", "bobpw").await;
    let bob_csrf = csrf_of(&request(&env, get("/", Some(&bob))).await.text);
    let other = act(
        &env,
        &bob,
        Some(&bob_csrf),
        "/console/datastore/s1/notes",
        &fields,
    )
    .await;
    assert_eq!(other.status, StatusCode::NOT_FOUND, "{}", other.text);
    assert!(other.text.contains("datastore 's1' does not exist"));

    // The superuser forgets the unprotected snapshot: back to the group page.
    let forget = act(
        &env,
        &root,
        Some(&root_csrf),
        "/console/datastore/s1/forget",
        &snapshot_fields("100", t),
    )
    .await;
    assert_eq!(forget.status, StatusCode::SEE_OTHER, "{}", forget.text);
    assert_eq!(
        forget.headers[header::LOCATION],
        "/console/datastore/s1/group?backup-type=vm&backup-id=100"
    );
    assert!(!env
        .store
        .tree()
        .snapshot_exists(&BackupNamespace::root(), &dir)
        .await
        .unwrap());
}

#[tokio::test]
async fn prune_simulator_shows_the_servers_selection_then_runs_it() {
    let env = env().await;
    let t = first_time(&env, "200").await;
    // Two older snapshots of carol's group: keep-last=1 keeps only the newest.
    put_snapshot(&env, "200", t - 86_400, vec![]).await;
    put_snapshot(&env, "200", t - 2 * 86_400, vec![]).await;
    let carol = login(&env, "carol@pbs", "carolpw").await;
    let group = request(
        &env,
        get(
            "/console/datastore/s1/group?backup-type=vm&backup-id=200",
            Some(&carol),
        ),
    )
    .await;
    assert!(group.text.contains("id=\"simulate\""), "{}", group.text);
    let csrf = csrf_of(&group.text);
    let fields = "backup-type=vm&backup-id=200&keep-last=1&keep-daily=&dry-run=1";
    let sim = act(
        &env,
        &carol,
        Some(&csrf),
        "/console/datastore/s1/prune",
        fields,
    )
    .await;
    assert_eq!(sim.status, StatusCode::OK, "{}", sim.text);
    assert!(
        sim.text.contains("2 of 3 snapshots would be removed"),
        "{}",
        sim.text
    );
    assert_eq!(
        sim.text
            .matches("<td class=\"decision\">remove</td>")
            .count(),
        2
    );
    assert_eq!(
        sim.text.matches("<td class=\"decision\">keep</td>").count(),
        1
    );
    assert!(sim.text.contains("id=\"run-prune\""));
    let group_id = BackupGroup::new(BackupType::Vm, "200").unwrap();
    let count = || async {
        env.store
            .tree()
            .list_snapshots(&BackupNamespace::root(), &group_id)
            .await
            .unwrap()
            .len()
    };
    assert_eq!(count().await, 3, "a simulation removed something");

    // Permission variant: alice (no Datastore.Prune, not the owner) is refused by the API.
    let alice = login(&env, "alice@pbs", "alicepw").await;
    let alice_csrf = csrf_of(&request(&env, get("/", Some(&alice))).await.text);
    let refused = act(
        &env,
        &alice,
        Some(&alice_csrf),
        "/console/datastore/s1/prune",
        fields,
    )
    .await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN, "{}", refused.text);
    assert!(refused.text.contains("permission check failed"));

    // Run it: the two older snapshots go.
    let run = "backup-type=vm&backup-id=200&keep-last=1&dry-run=0";
    let done = act(
        &env,
        &carol,
        Some(&csrf),
        "/console/datastore/s1/prune",
        run,
    )
    .await;
    assert_eq!(done.status, StatusCode::OK, "{}", done.text);
    assert!(
        done.text.contains("2 of 3 snapshots removed"),
        "{}",
        done.text
    );
    assert_eq!(count().await, 1);
}

#[tokio::test]
async fn gc_start_follows_to_the_task_and_stop_needs_the_privilege() {
    let env = env().await;
    let alice = login(&env, "alice@pbs", "alicepw").await;
    let csrf = csrf_of(
        &request(&env, get("/console/datastore/s1", Some(&alice)))
            .await
            .text,
    );
    let refused = act(&env, &alice, Some(&csrf), "/console/datastore/s1/gc", "").await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN, "{}", refused.text);
    assert!(refused.text.contains("permission check failed"));

    let root = login(&env, "root@pam", "rootpw").await;
    let store_page = request(&env, get("/console/datastore/s1", Some(&root))).await;
    assert!(store_page.text.contains("id=\"start-gc\""));
    let csrf = csrf_of(&store_page.text);
    let started = act(&env, &root, Some(&csrf), "/console/datastore/s1/gc", "").await;
    assert_eq!(started.status, StatusCode::SEE_OTHER, "{}", started.text);
    let location = started.headers[header::LOCATION]
        .to_str()
        .unwrap()
        .to_string();
    assert!(location.starts_with("/console/tasks/UPID%3A"), "{location}");
    let upid = task_of(&started);
    let task = request(&env, get(&location, Some(&root))).await;
    assert_eq!(task.status, StatusCode::OK, "{}", task.text);
    assert!(task.text.contains("garbage_collection"), "{}", task.text);
    // Stopping: alice may not stop root's task (the API's refusal), root may; stopping a task
    // that has already ended is not an error (PBS answers null).
    let stop = format!("{location}/stop");
    let alice_stop = act(&env, &alice, Some(&csrf_of(&task.text)), &stop, "").await;
    assert_eq!(alice_stop.status, StatusCode::FORBIDDEN);
    let alice_stop = act(
        &env,
        &alice,
        Some(&csrf_of(&request(&env, get("/", Some(&alice))).await.text)),
        &stop,
        "",
    )
    .await;
    assert!(
        alice_stop.status == StatusCode::FORBIDDEN || alice_stop.status == StatusCode::NOT_FOUND,
        "{}: {}",
        alice_stop.status,
        alice_stop.text
    );
    let stopped = act(&env, &root, Some(&csrf), &stop, "").await;
    assert_eq!(stopped.status, StatusCode::SEE_OTHER, "{}", stopped.text);
    assert_eq!(stopped.headers[header::LOCATION], location.as_str());
    // The task ends (stopped or done); its page then has no stop button.
    let status = env.state.tasks.finished(&upid).await;
    assert_eq!(status.map(|s| s.status), Some("stopped".to_string()));
    let task = request(&env, get(&location, Some(&root))).await;
    assert!(!task.text.contains("id=\"stop-task\""), "{}", task.text);
}

/// A fixed index of two chunks (4 KiB chunk size) of a 6000-byte image, its chunks stored.
async fn put_image(env: &Env, id: &str, time: i64) -> (Vec<u8>, FileInfo) {
    let image: Vec<u8> = (0..6000u32).map(|i| (i * 7 % 251) as u8).collect();
    let mut digests = Vec::new();
    for chunk in image.chunks(4096) {
        let digest = sha256(chunk);
        env.store
            .insert_chunk(&digest, Bytes::from(encode_blob(chunk, true)), false)
            .await
            .unwrap();
        digests.push(digest);
    }
    let index = FixedIndex {
        uuid: [7; 16],
        ctime: time,
        size: image.len() as u64,
        chunk_size: 4096,
        digests,
    };
    let group = BackupGroup::new(BackupType::Vm, id).unwrap();
    let dir = BackupDir::new(group, time).unwrap();
    let key = snapshot_file_key(&BackupNamespace::root(), &dir, "drive-scsi0.img.fidx").unwrap();
    env.backend
        .put(&key, Bytes::from(index.to_bytes()), PutOptions::default())
        .await
        .unwrap();
    let info = FileInfo {
        filename: "drive-scsi0.img.fidx".into(),
        crypt_mode: CryptMode::None,
        size: image.len() as u64,
        csum: digest_to_hex(&index.csum()),
    };
    (image, info)
}

async fn api_get(env: &Env, cookie: &str, uri: &str) -> (StatusCode, Option<u64>, Vec<u8>) {
    let req = Request::get(uri)
        .header(header::COOKIE, cookie)
        .body(Bytes::new())
        .unwrap();
    let resp = crate::api::handle_buffered(env.state.clone(), req).await;
    let status = resp.status();
    let length = hyper::body::Body::size_hint(resp.body()).exact();
    let body = resp
        .into_body()
        .collect()
        .await
        .unwrap()
        .to_bytes()
        .to_vec();
    (status, length, body)
}

#[tokio::test]
async fn image_archives_download_whole_and_streamed() {
    let env = env().await;
    let t = first_time(&env, "100").await + 60;
    let (image, info) = put_image(&env, "100", t).await;
    put_snapshot(&env, "100", t, vec![info.clone()]).await;
    let alice = login(&env, "alice@pbs", "alicepw").await;
    let page = request(
        &env,
        get(
            &format!(
                "/console/datastore/s1/snapshot?{}",
                snapshot_fields("100", t)
            ),
            Some(&alice),
        ),
    )
    .await;
    assert!(
        page.text.contains("download=\"drive-scsi0.img\""),
        "{}",
        page.text
    );
    let at = page.text.find("download=\"drive-scsi0.img\"").unwrap();
    let href = page.text[..at].rfind("href=\"").unwrap() + 6;
    let link = page.text[href..]
        .split('"')
        .next()
        .unwrap()
        .replace("&amp;", "&");
    assert!(link.contains("file-name=drive-scsi0.img.fidx"), "{link}");
    let (status, length, body) = api_get(&env, &alice, &link).await;
    assert_eq!(status, StatusCode::OK, "{}", String::from_utf8_lossy(&body));
    assert_eq!(
        length, None,
        "an image download is streamed, not sized in memory"
    );
    assert_eq!(body, image);
    // Another tenant's user gets nothing.
    let bob = login(&env, "bob@pbs", "bobpw").await;
    let (status, _, body) = api_get(&env, &bob, &link).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(!body.windows(4).any(|w| w == &image[..4]));
    // An index that does not match its manifest entry is refused before any byte is sent.
    let mut wrong = info;
    wrong.size += 1;
    put_snapshot(&env, "100", t, vec![wrong]).await;
    let (status, _, body) = api_get(&env, &alice, &link).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(String::from_utf8_lossy(&body).contains("does not match the manifest"));
}

#[tokio::test]
async fn jobs_page_lists_what_the_api_lists_and_runs_a_job_now() {
    use crate::datastore::KeepOptions;
    use crate::jobs::prune_job::PruneParams;
    use crate::jobs::{calendar, JobBody, JobSpec, JobType};

    let env = env().await;
    env.state.jobs.configure(
        None,
        vec![JobSpec {
            kind: JobType::Prune,
            id: "nightly".into(),
            store: "s1".into(),
            schedule: "daily".into(),
            event: calendar::parse("daily").unwrap(),
            disable: false,
            body: JobBody::Prune(PruneParams {
                ns: BackupNamespace::root(),
                max_depth: None,
                filters: Vec::new(),
                keep: KeepOptions {
                    keep_last: Some(5),
                    ..KeepOptions::default()
                },
            }),
        }],
    );
    let root = login(&env, "root@pam", "rootpw").await;
    let page = request(&env, get("/console/jobs", Some(&root))).await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.text);
    assert!(
        page.text.contains("<td class=\"job\">nightly</td>") && page.text.contains("daily"),
        "{}",
        page.text
    );
    assert!(page.text.contains("No verify jobs visible."));
    // Alice may not audit the store's root: the API lists nothing, and refuses the run.
    let alice = login(&env, "alice@pbs", "alicepw").await;
    let alice_page = request(&env, get("/console/jobs", Some(&alice))).await;
    assert!(
        alice_page.text.contains("No prune jobs visible."),
        "{}",
        alice_page.text
    );
    let refused = act(
        &env,
        &alice,
        Some(&csrf_of(&alice_page.text)),
        "/console/jobs/prune/nightly/run",
        "",
    )
    .await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN, "{}", refused.text);
    // Another tenant's admin does not see the job either.
    let bob = login(&env, "bob@pbs", "bobpw").await;
    let bob_page = request(&env, get("/console/jobs", Some(&bob))).await;
    assert!(!bob_page.text.contains("nightly"));

    let run = act(
        &env,
        &root,
        Some(&csrf_of(&page.text)),
        "/console/jobs/prune/nightly/run",
        "",
    )
    .await;
    assert_eq!(run.status, StatusCode::SEE_OTHER, "{}", run.text);
    let upid = task_of(&run);
    let status = env.state.tasks.finished(&upid).await.unwrap();
    assert_eq!(status.exitstatus.as_deref(), Some("OK"), "{status:?}");
    let page = request(&env, get("/console/jobs", Some(&root))).await;
    assert!(
        page.text.contains(&enc(&upid)),
        "last run not linked: {}",
        page.text
    );
}

#[tokio::test]
async fn gc_jobs_are_listed_and_run_now_like_the_others() {
    use crate::jobs::{calendar, JobBody, JobSpec, JobType};

    let env = env().await;
    env.state.jobs.configure(
        None,
        vec![JobSpec {
            kind: JobType::GarbageCollection,
            id: "s1".into(),
            store: "s1".into(),
            schedule: "daily".into(),
            event: calendar::parse("daily").unwrap(),
            disable: false,
            body: JobBody::GarbageCollection,
        }],
    );
    let root = login(&env, "root@pam", "rootpw").await;
    let page = request(&env, get("/console/jobs", Some(&root))).await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.text);
    assert!(
        page.text.contains("data-kind=\"gc\"") && page.text.contains("<td class=\"job\">s1</td>"),
        "{}",
        page.text
    );
    // A user without Modify on the store may not start it.
    let alice = login(&env, "alice@pbs", "alicepw").await;
    let alice_page = request(&env, get("/console/jobs", Some(&alice))).await;
    let refused = act(
        &env,
        &alice,
        Some(&csrf_of(&alice_page.text)),
        "/console/jobs/gc/s1/run",
        "",
    )
    .await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN, "{}", refused.text);

    let run = act(
        &env,
        &root,
        Some(&csrf_of(&page.text)),
        "/console/jobs/gc/s1/run",
        "",
    )
    .await;
    assert_eq!(run.status, StatusCode::SEE_OTHER, "{}", run.text);
    let upid = task_of(&run);
    assert!(upid.contains(":garbage_collection:"), "{upid}");
    let status = env.state.tasks.finished(&upid).await.unwrap();
    assert_eq!(status.exitstatus.as_deref(), Some("OK"), "{status:?}");
}
