//! Console pages through [`handle_buffered`] on a temporary local datastore: the login and its
//! cookie, the security headers, escaping of hostile names, and that a page shows exactly what
//! the API shows its user (another owner's group, another tenant's store).

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{header, Method, Request, StatusCode};
use http_body_util::BodyExt;

use super::dashboard::repository;
use super::handle_buffered;
use crate::auth::{AuthSeed, AuthService};
use crate::backend::{Backend, LocalBackend, PutOptions};
use crate::datastore::layout::snapshot_file_key;
use crate::datastore::Datastore;
use crate::format::manifest::Manifest;
use crate::format::names::{BackupDir, BackupGroup, BackupNamespace, BackupType};
use crate::state::{AppState, DatastoreEntry, NodeIdentity};
use crate::tasks::TaskRegistry;

const HOSTILE: &str = "<script>alert(1)</script>\"'&";

pub(super) struct Env {
    _dir: tempfile::TempDir,
    pub state: Arc<AppState>,
    pub backend: Arc<LocalBackend>,
    pub store: Arc<Datastore>,
}

/// Store `s1` of tenant acme: alice (DatastoreBackup) owns vm/100, carol (DatastorePowerUser)
/// owns vm/200, one snapshot each an hour old; bob is admin of tenant globex, root superuser.
pub(super) async fn env() -> Env {
    let dir = tempfile::tempdir().unwrap();
    let auth = AuthService::open(&dir.path().join("auth"), AuthSeed::default()).unwrap();
    auth.set_failure_delay(Duration::ZERO);
    auth.ensure_tenant("ops", None).unwrap();
    auth.ensure_tenant("acme", None).unwrap();
    auth.ensure_tenant("globex", None).unwrap();
    auth.add_user("root@pam", "ops", "rootpw", true).unwrap();
    auth.add_user("alice@pbs", "acme", "alicepw", false)
        .unwrap();
    auth.add_user("carol@pbs", "acme", "carolpw", false)
        .unwrap();
    auth.add_user("bob@pbs", "globex", "bobpw", false).unwrap();
    // Backup role only: sees the groups it owns, not the others.
    auth.add_acl("/datastore/s1", "alice@pbs", "DatastoreBackup")
        .unwrap();
    auth.add_acl("/datastore/s1", "carol@pbs", "DatastorePowerUser")
        .unwrap();
    auth.add_acl("/", "bob@pbs", "Admin").unwrap();
    let backend = Arc::new(LocalBackend::open(&dir.path().join("s1")).unwrap());
    let store = Datastore::open("s1", backend.clone()).await.unwrap();
    let state = Arc::new(AppState::new(
        auth,
        TaskRegistry::new("testnode"),
        NodeIdentity {
            name: "testnode".into(),
            instance_id: "abcdef0123456789".into(),
        },
    ));
    state.insert_datastore(DatastoreEntry {
        name: "s1".into(),
        tenant: "acme".into(),
        comment: Some(HOSTILE.into()),
        store: store.clone(),
    });
    let ns = BackupNamespace::root();
    for (id, owner) in [("100", "alice@pbs"), ("200", "carol@pbs")] {
        let group = BackupGroup::new(BackupType::Vm, id).unwrap();
        let time = chrono::Utc::now().timestamp() - 3600;
        let dir = BackupDir::new(group.clone(), time).unwrap();
        let manifest = Manifest::new("vm", id, time);
        let key = snapshot_file_key(&ns, &dir, "index.json.blob").unwrap();
        backend
            .put(&key, Bytes::from(manifest.to_blob()), PutOptions::default())
            .await
            .unwrap();
        store
            .tree()
            .set_group_owner(&ns, &group, owner)
            .await
            .unwrap();
        store
            .tree()
            .set_group_notes(&ns, &group, &format!("{HOSTILE} of {owner}"))
            .await
            .unwrap();
    }
    Env {
        _dir: dir,
        state,
        backend,
        store,
    }
}

pub(super) struct Answer {
    pub status: StatusCode,
    pub headers: http::HeaderMap,
    pub text: String,
}

pub(super) async fn request(env: &Env, req: Request<Bytes>) -> Answer {
    let resp = handle_buffered(env.state.clone(), req).await;
    let status = resp.status();
    let headers = resp.headers().clone();
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    Answer {
        status,
        headers,
        text: String::from_utf8_lossy(&bytes).into_owned(),
    }
}

pub(super) fn form_post(path: &str, cookie: Option<&str>, body: &str) -> Request<Bytes> {
    let mut req = Request::builder()
        .method(Method::POST)
        .uri(path)
        .header(header::HOST, "pbs.example:8007")
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded");
    if let Some(c) = cookie {
        req = req.header(header::COOKIE, c);
    }
    req.body(Bytes::from(body.to_string())).unwrap()
}

pub(super) fn get(path: &str, cookie: Option<&str>) -> Request<Bytes> {
    let mut req = Request::get(path).header(header::HOST, "pbs.example:8007");
    if let Some(c) = cookie {
        req = req.header(header::COOKIE, c);
    }
    req.body(Bytes::new()).unwrap()
}

/// Logs in through the console form; returns the `Cookie` header value.
pub(super) async fn login(env: &Env, user: &str, pw: &str) -> String {
    let a = request(
        env,
        form_post(
            "/console/login",
            None,
            &format!("username={user}&password={pw}&next=%2F"),
        ),
    )
    .await;
    assert_eq!(a.status, StatusCode::SEE_OTHER, "{}", a.text);
    assert_eq!(a.headers[header::LOCATION], "/");
    let set = a.headers[header::SET_COOKIE].to_str().unwrap().to_string();
    set.split(';').next().unwrap().to_string()
}

pub(super) fn csrf_of(page: &str) -> String {
    let start = page.find("name=\"csrf-token\" content=\"").unwrap() + 27;
    page[start..].split('"').next().unwrap().to_string()
}

#[tokio::test]
async fn login_page_has_strict_security_headers_and_no_inline_script() {
    let env = env().await;
    let a = request(&env, get("/", None)).await;
    assert_eq!(a.status, StatusCode::OK);
    assert!(a.text.contains("action=\"/console/login\""), "{}", a.text);
    let csp = a.headers[header::CONTENT_SECURITY_POLICY].to_str().unwrap();
    assert!(csp.contains("script-src 'self'") && !csp.contains("unsafe-inline"));
    assert!(csp.contains("frame-ancestors 'none'"));
    assert_eq!(a.headers[header::X_FRAME_OPTIONS], "DENY");
    assert_eq!(a.headers[header::X_CONTENT_TYPE_OPTIONS], "nosniff");
    // every script element loads a file; none has inline code
    for part in a.text.split("<script").skip(1) {
        let (tag, rest) = part.split_once('>').unwrap();
        assert!(tag.contains("src="), "{tag}");
        assert!(rest.starts_with("</script>"), "{rest}");
    }
    let js = request(&env, get("/console/assets/console.js", None)).await;
    assert_eq!(js.status, StatusCode::OK);
    assert!(js.headers[header::CONTENT_TYPE]
        .to_str()
        .unwrap()
        .starts_with("text/javascript"));
    let missing = request(&env, get("/console/assets/x.js", None)).await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn console_login_sets_a_strict_host_cookie_and_refuses_bad_passwords() {
    let env = env().await;
    let a = request(
        &env,
        form_post(
            "/console/login",
            None,
            "username=alice@pbs&password=alicepw",
        ),
    )
    .await;
    assert_eq!(a.status, StatusCode::SEE_OTHER);
    let set = a.headers[header::SET_COOKIE].to_str().unwrap();
    assert!(
        set.starts_with("__Host-PBSAuthCookie=PBS:alice@pbs:"),
        "{set}"
    );
    for attr in ["Secure", "SameSite=Strict", "HttpOnly", "Path=/"] {
        assert!(set.contains(attr), "{set} lacks {attr}");
    }
    let bad = request(
        &env,
        form_post("/console/login", None, "username=alice@pbs&password=nope"),
    )
    .await;
    assert_eq!(bad.status, StatusCode::UNAUTHORIZED);
    assert!(bad.headers.get(header::SET_COOKIE).is_none());
    assert!(bad.text.contains("Login failed"));
    // A form posted from another site is refused.
    let mut cross = form_post(
        "/console/login",
        None,
        "username=alice@pbs&password=alicepw",
    );
    cross
        .headers_mut()
        .insert(header::ORIGIN, "https://evil.example".parse().unwrap());
    assert_eq!(request(&env, cross).await.status, StatusCode::FORBIDDEN);
    // Only console pages are redirect targets.
    let open = request(
        &env,
        form_post(
            "/console/login",
            None,
            "username=alice@pbs&password=alicepw&next=https%3A%2F%2Fevil.example%2F",
        ),
    )
    .await;
    assert_eq!(open.headers[header::LOCATION], "/");
}

#[tokio::test]
async fn hostile_names_are_escaped() {
    let env = env().await;
    let cookie = login(&env, "alice@pbs", "alicepw").await;
    for page in ["/", "/console/datastore/s1"] {
        let a = request(&env, get(page, Some(&cookie))).await;
        assert_eq!(a.status, StatusCode::OK, "{page}: {}", a.text);
        assert!(!a.text.contains("<script>alert"), "{page}: {}", a.text);
        assert!(
            a.text
                .contains("&lt;script&gt;alert(1)&lt;/script&gt;&quot;'&amp;"),
            "{page}: {}",
            a.text
        );
    }
}

#[tokio::test]
async fn pages_show_what_the_api_shows_their_user() {
    let env = env().await;
    let alice = login(&env, "alice@pbs", "alicepw").await;
    let dash = request(&env, get("/", Some(&alice))).await;
    assert_eq!(dash.status, StatusCode::OK, "{}", dash.text);
    assert!(dash.text.contains("vm/100"), "{}", dash.text);
    assert!(
        !dash.text.contains("vm/200"),
        "carol's group shown to alice"
    );
    assert!(dash
        .text
        .contains("export PBS_REPOSITORY='alice@pbs@pbs.example:8007:s1'"));
    let carols = request(
        &env,
        get(
            "/console/datastore/s1/group?backup-type=vm&backup-id=200",
            Some(&alice),
        ),
    )
    .await;
    assert!(!carols.text.contains("of carol@pbs"));
    let store = request(&env, get("/console/datastore/s1", Some(&alice))).await;
    assert!(store.text.contains("of alice@pbs") && !store.text.contains("of carol@pbs"));
    // Another tenant's admin sees no trace of the store.
    let bob = login(&env, "bob@pbs", "bobpw").await;
    let dash = request(&env, get("/", Some(&bob))).await;
    assert_eq!(dash.status, StatusCode::OK);
    assert!(!dash.text.contains("data-store=\"s1\"") && !dash.text.contains("vm/100"));
    let refused = request(&env, get("/console/datastore/s1", Some(&bob))).await;
    assert_eq!(refused.status, StatusCode::NOT_FOUND);
    assert!(refused.text.contains("datastore 's1' does not exist"));
    assert!(!refused.text.contains("vm/100"));
    // Tenants page: superusers only.
    let t = request(&env, get("/console/tenants", Some(&bob))).await;
    assert_eq!(t.status, StatusCode::FORBIDDEN);
    let root = login(&env, "root@pam", "rootpw").await;
    let t = request(&env, get("/console/tenants", Some(&root))).await;
    assert_eq!(t.status, StatusCode::OK, "{}", t.text);
    assert!(t.text.contains("acme") && t.text.contains("globex"));
    let dash = request(&env, get("/", Some(&root))).await;
    assert!(dash.text.contains("vm/100") && dash.text.contains("vm/200"));
}

#[tokio::test]
async fn logout_and_renewal_need_the_csrf_token() {
    let env = env().await;
    let cookie = login(&env, "alice@pbs", "alicepw").await;
    let page = request(&env, get("/", Some(&cookie))).await;
    let csrf = csrf_of(&page.text);
    let refused = request(&env, form_post("/console/logout", Some(&cookie), "")).await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN);
    let mut renew = form_post("/console/renew", Some(&cookie), "");
    renew
        .headers_mut()
        .insert("CSRFPreventionToken", csrf.parse().unwrap());
    let renewed = request(&env, renew).await;
    assert_eq!(renewed.status, StatusCode::OK, "{}", renewed.text);
    assert!(renewed.headers[header::SET_COOKIE]
        .to_str()
        .unwrap()
        .contains("SameSite=Strict"));
    assert!(renewed.text.contains("CSRFPreventionToken"));
    let out = request(
        &env,
        form_post(
            "/console/logout",
            Some(&cookie),
            &format!("CSRFPreventionToken={}", super::api_client::enc(&csrf)),
        ),
    )
    .await;
    assert_eq!(out.status, StatusCode::SEE_OTHER);
    assert!(out.headers[header::SET_COOKIE]
        .to_str()
        .unwrap()
        .contains("Expires=Thu, 01 Jan 1970"));
}

#[test]
fn repository_lines() {
    assert_eq!(
        repository("alice@pbs", "pbs.example:8007", "s1"),
        "alice@pbs@pbs.example:8007:s1"
    );
    assert_eq!(
        repository("alice@pbs", "pbs.example", "s1"),
        "alice@pbs@pbs.example:443:s1"
    );
    assert_eq!(
        repository("alice@pbs", "[::1]:8007", "s1"),
        "alice@pbs@[::1]:8007:s1"
    );
    assert_eq!(
        repository("alice@pbs", "[::1]", "s1"),
        "alice@pbs@[::1]:443:s1"
    );
}

#[tokio::test]
async fn usage_page_charts_the_daily_samples_for_whoever_sees_store_figures() {
    let env = env().await;
    env.store.usage_rescan().await.unwrap();
    env.store.usage().flush(true).await.unwrap();
    let root = login(&env, "root@pam", "rootpw").await;
    let dash = request(&env, get("/", Some(&root))).await;
    assert!(
        dash.text.contains("href=\"/console/datastore/s1/usage\""),
        "the dashboard links the usage page: {}",
        dash.text
    );
    let page = request(&env, get("/console/datastore/s1/usage", Some(&root))).await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.text);
    for part in [
        "id=\"chart-bytes\"",
        "id=\"chart-chunks\"",
        "<svg",
        "usage-history",
    ] {
        assert!(page.text.contains(part), "{part} missing: {}", page.text);
    }
    assert!(
        !page.text.contains("chart-requests"),
        "a local store has no S3 request chart"
    );
    // A backup-only user sees no store-wide figures: no link, and the API's refusal.
    let alice = login(&env, "alice@pbs", "alicepw").await;
    let dash = request(&env, get("/", Some(&alice))).await;
    assert!(!dash.text.contains("/console/datastore/s1/usage"));
    let refused = request(&env, get("/console/datastore/s1/usage", Some(&alice))).await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN, "{}", refused.text);
    assert!(!refused.text.contains("<svg"));
    // Another tenant's admin: the store does not exist for them.
    let bob = login(&env, "bob@pbs", "bobpw").await;
    let hidden = request(&env, get("/console/datastore/s1/usage", Some(&bob))).await;
    assert_eq!(hidden.status, StatusCode::NOT_FOUND);
}
