//! Tests of `AuthService`: logins, request authentication, privileges and tenant isolation.

use super::*;
use crate::auth::store::{AclSpec, TenantSpec, TokenSpec, UserSpec};
use http::header::{AUTHORIZATION, COOKIE};
use http::HeaderValue;

fn service(dir: &Path) -> AuthService {
    let seed = AuthSeed {
        tenants: vec![TenantSpec {
            id: "ops".into(),
            comment: None,
        }],
        users: vec![UserSpec {
            userid: "root@pam".into(),
            tenant: "ops".into(),
            password_hash: Some(password::hash_password("rootpw").unwrap()),
            superuser: true,
        }],
        tokens: vec![],
        acl: vec![],
    };
    let auth = AuthService::open(&dir.join("auth"), seed).unwrap();
    auth.set_failure_delay(Duration::ZERO);
    auth.ensure_tenant("acme", Some("Acme")).unwrap();
    auth.ensure_tenant("globex", None).unwrap();
    auth.add_user("alice@pbs", "acme", "alicepw", false)
        .unwrap();
    auth.add_user("bob@pbs", "globex", "bobpw", false).unwrap();
    auth.add_acl("/datastore/s1", "alice@pbs", "DatastoreAdmin")
        .unwrap();
    auth.add_acl("/datastore/s2", "bob@pbs", "DatastoreAdmin")
        .unwrap();
    auth
}

fn cookie_headers(ticket: &str, csrf: Option<&str>) -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert(
        COOKIE,
        HeaderValue::from_str(&format!("PBSAuthCookie={ticket}")).unwrap(),
    );
    if let Some(c) = csrf {
        h.insert("CSRFPreventionToken", HeaderValue::from_str(c).unwrap());
    }
    h
}

#[tokio::test]
async fn login_password_and_ticket_renewal() {
    let dir = tempfile::tempdir().unwrap();
    let auth = service(dir.path());
    let res = auth.login("alice@pbs", "alicepw").await.unwrap();
    assert_eq!(res.username, "alice@pbs");
    assert!(res.ticket.starts_with("PBS:alice@pbs:"));
    let renewed = auth.login("alice@pbs", &res.ticket).await.unwrap();
    assert_eq!(renewed.username, "alice@pbs");
    assert!(auth.login("bob@pbs", &res.ticket).await.is_err());
    assert!(matches!(
        auth.login("alice@pbs", "wrong").await,
        Err(AuthError::AuthenticationFailed)
    ));
    assert!(auth.login("nobody@pbs", "x").await.is_err());
    assert!(auth.login("alice", "alicepw").await.is_err());
    let json = serde_json::to_value(&res).unwrap();
    assert!(json.get("CSRFPreventionToken").is_some());
}

#[tokio::test]
async fn password_that_looks_like_a_ticket_still_logs_in() {
    let dir = tempfile::tempdir().unwrap();
    let auth = service(dir.path());
    auth.add_user("carol@pbs", "acme", "PBS:not-a-ticket", false)
        .unwrap();
    assert!(auth.login("carol@pbs", "PBS:not-a-ticket").await.is_ok());
    assert!(auth.login("carol@pbs", "PBS:other").await.is_err());
    // A ticket of another user is neither a renewal nor carol's password.
    let alice = auth.login("alice@pbs", "alicepw").await.unwrap();
    assert!(auth.login("carol@pbs", &alice.ticket).await.is_err());
}

#[tokio::test]
async fn authenticate_cookie_requires_csrf_for_non_get() {
    let dir = tempfile::tempdir().unwrap();
    let auth = service(dir.path());
    let res = auth.login("alice@pbs", "alicepw").await.unwrap();
    let id = auth
        .authenticate(&cookie_headers(&res.ticket, None), &Method::GET)
        .await
        .unwrap();
    assert_eq!(id.authid.to_string(), "alice@pbs");
    assert_eq!(id.tenant, "acme");
    assert!(matches!(
        auth.authenticate(&cookie_headers(&res.ticket, None), &Method::POST)
            .await,
        Err(AuthError::InvalidCsrf)
    ));
    assert!(auth
        .authenticate(&cookie_headers(&res.ticket, Some(&res.csrf)), &Method::POST)
        .await
        .is_ok());
    let bob = auth.login("bob@pbs", "bobpw").await.unwrap();
    assert!(auth
        .authenticate(&cookie_headers(&res.ticket, Some(&bob.csrf)), &Method::PUT)
        .await
        .is_err());
    assert!(matches!(
        auth.authenticate(&HeaderMap::new(), &Method::GET).await,
        Err(AuthError::NoCredentials)
    ));
}

#[tokio::test]
async fn token_authentication_and_privileges() {
    let dir = tempfile::tempdir().unwrap();
    let auth = service(dir.path());
    let secret = auth.add_token("alice@pbs!ci").unwrap();
    assert!(auth.add_token("alice@pbs!ci").is_err());
    assert!(auth.add_token("ghost@pbs!ci").is_err());
    let mut h = HeaderMap::new();
    h.insert(
        AUTHORIZATION,
        HeaderValue::from_str(&format!("PBSAPIToken=alice@pbs!ci:{secret}")).unwrap(),
    );
    let id = auth.authenticate(&h, &Method::POST).await.unwrap();
    assert!(id.authid.is_token());
    assert_eq!(id.tenant, "acme");
    // Cached second verification still checks the secret.
    assert!(auth.authenticate(&h, &Method::GET).await.is_ok());
    let mut wrong = HeaderMap::new();
    wrong.insert(
        AUTHORIZATION,
        HeaderValue::from_str("PBSAPIToken alice@pbs!ci:00000000-0000-0000-0000-000000000000")
            .unwrap(),
    );
    assert!(auth.authenticate(&wrong, &Method::GET).await.is_err());

    let root = BackupNamespace::root();
    // Token without own ACL: nothing.
    assert!(auth.privileges(&id, "s1", "acme", &root).is_empty());
    auth.add_acl("/datastore/s1", "alice@pbs!ci", "DatastoreBackup")
        .unwrap();
    let p = auth.privileges(&id, "s1", "acme", &root);
    assert!(p.contains(Privileges::BACKUP));
    assert!(!p.contains(Privileges::MODIFY));
    // Token ACL beyond its user's is cut to the user's.
    auth.add_acl("/datastore/s9", "alice@pbs!ci", "Admin")
        .unwrap();
    assert!(auth.privileges(&id, "s9", "acme", &root).is_empty());
}

#[test]
fn cross_tenant_privileges_are_empty() {
    let dir = tempfile::tempdir().unwrap();
    let auth = service(dir.path());
    let alice = auth.identity_for(&"alice@pbs".parse().unwrap()).unwrap();
    let root_id = auth.identity_for(&"root@pam".parse().unwrap()).unwrap();
    let ns = BackupNamespace::parse("a/b").unwrap();
    assert!(auth
        .privileges(&alice, "s1", "acme", &ns)
        .contains(Privileges::MODIFY));
    // Same store name, but owned by another tenant: nothing, despite the ACL entry.
    assert!(auth.privileges(&alice, "s1", "globex", &ns).is_empty());
    assert!(!auth.store_visible(&alice, "s1", "globex"));
    assert!(auth.store_visible(&alice, "s1", "acme"));
    assert!(!auth.store_visible(&alice, "s2", "acme"));
    assert_eq!(
        auth.privileges(&root_id, "s2", "globex", &ns),
        Privileges::ALL
    );
    assert!(auth.can_see_tenant(&root_id, "acme"));
    assert!(!auth.can_see_tenant(&alice, "globex"));
}

#[tokio::test]
async fn persistence_and_management() {
    let dir = tempfile::tempdir().unwrap();
    {
        let auth = service(dir.path());
        assert!(auth.has_users());
        auth.set_password("alice@pbs", "newpw").unwrap();
        assert!(matches!(
            auth.set_password("root@pam", "x"),
            Err(AuthError::ReadOnly(_))
        ));
        assert!(auth.add_user("carol@pbs", "nope", "pw", false).is_err());
        assert!(auth.add_user("alice@pbs", "acme", "pw", false).is_err());
    }
    let auth = AuthService::open(&dir.path().join("auth"), AuthSeed::default()).unwrap();
    assert!(auth.login("alice@pbs", "newpw").await.is_ok());
    let ids: Vec<String> = auth.tenants().into_iter().map(|t| t.id).collect();
    assert_eq!(ids, vec!["acme", "globex"]);
    let acme = auth.list_users(Some("acme"));
    assert_eq!(acme.len(), 1);
    assert_eq!(acme[0].userid, "alice@pbs");
    assert!(
        auth.login("root@pam", "rootpw").await.is_err(),
        "seed users are not persisted"
    );
}

#[tokio::test]
async fn seed_token_from_config() {
    let dir = tempfile::tempdir().unwrap();
    let secret = password::generate_secret().unwrap();
    let seed = AuthSeed {
        tenants: vec![TenantSpec {
            id: "t".into(),
            comment: None,
        }],
        users: vec![UserSpec {
            userid: "svc@pbs".into(),
            tenant: "t".into(),
            password_hash: None,
            superuser: false,
        }],
        tokens: vec![TokenSpec {
            tokenid: "svc@pbs!pve".into(),
            secret_hash: password::hash_password(&secret).unwrap(),
        }],
        acl: vec![AclSpec {
            path: "/".into(),
            authid: "svc@pbs".into(),
            role: "Admin".into(),
        }],
    };
    let auth = AuthService::open(dir.path(), seed).unwrap();
    let mut h = HeaderMap::new();
    h.insert(
        AUTHORIZATION,
        HeaderValue::from_str(&format!("PBSAPIToken svc@pbs!pve:{secret}")).unwrap(),
    );
    let id = auth.authenticate(&h, &Method::GET).await.unwrap();
    assert_eq!(id.tenant, "t");
    assert!(auth.login("svc@pbs", "").await.is_err(), "no password set");
}

#[test]
fn owner_rules() {
    let alice: Authid = "alice@pbs".parse().unwrap();
    let token: Authid = "alice@pbs!ci".parse().unwrap();
    assert!(owner_matches(&alice, "alice@pbs"));
    assert!(owner_matches(&alice, "alice@pbs!ci\n"));
    assert!(owner_matches(&token, "alice@pbs!ci"));
    assert!(!owner_matches(&token, "alice@pbs"));
    assert!(!owner_matches(&token, "alice@pbs!other"));
    assert!(!owner_matches(&alice, "bob@pbs"));
    assert!(!owner_matches(&alice, "bob@pbs!ci"));
    assert!(!owner_matches(&alice, "garbage"));
}

#[tokio::test]
async fn reloaded_seed_replaces_config_users_and_keeps_old_on_error() {
    let dir = tempfile::tempdir().unwrap();
    let seed_with = |users: Vec<UserSpec>| AuthSeed {
        tenants: vec![TenantSpec {
            id: "t".into(),
            comment: None,
        }],
        users,
        tokens: vec![],
        acl: vec![],
    };
    let carol = UserSpec {
        userid: "carol@pbs".into(),
        tenant: "t".into(),
        password_hash: Some(password::hash_password("carolpw").unwrap()),
        superuser: false,
    };
    let auth = AuthService::open(dir.path(), seed_with(vec![carol.clone()])).unwrap();
    auth.set_failure_delay(std::time::Duration::ZERO);
    assert!(auth.login("carol@pbs", "carolpw").await.is_ok());

    // a broken seed (invalid user id) is refused and carol keeps working
    let mut broken = carol.clone();
    broken.userid = "no realm".into();
    assert!(auth.replace_seed(seed_with(vec![broken])).is_err());
    assert!(auth.login("carol@pbs", "carolpw").await.is_ok());

    // a valid seed without carol removes her
    auth.replace_seed(seed_with(vec![])).unwrap();
    assert!(auth.login("carol@pbs", "carolpw").await.is_err());
}

fn token_header(tokenid: &str, secret: &str) -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert(
        AUTHORIZATION,
        HeaderValue::from_str(&format!("PBSAPIToken {tokenid}:{secret}")).unwrap(),
    );
    h
}

/// The timing-equality argument made structural: every failed credential check (known or
/// unknown user, malformed id, known or unknown token) runs exactly one argon2 hash of the same
/// cost, and a cached token secret runs none.
#[tokio::test]
async fn every_credential_check_costs_one_hash_and_a_cached_token_none() {
    let dir = tempfile::tempdir().unwrap();
    let auth = service(dir.path());
    let secret = auth.add_token("alice@pbs!ci").unwrap();
    macro_rules! hashes {
        ($e:expr) => {{
            let before = auth.hashes_done();
            let result = $e;
            (auth.hashes_done() - before, result.is_ok())
        }};
    }
    assert_eq!(hashes!(auth.login("alice@pbs", "wrong").await), (1, false));
    assert_eq!(hashes!(auth.login("nobody@pbs", "wrong").await), (1, false));
    assert_eq!(hashes!(auth.login("not an id", "wrong").await), (1, false));
    assert_eq!(hashes!(auth.login("alice@pbs", "alicepw").await), (1, true));
    let get = Method::GET;
    let wrong = "00000000-0000-4000-8000-000000000000";
    assert_eq!(
        hashes!(
            auth.authenticate(&token_header("ghost@pbs!ci", wrong), &get)
                .await
        ),
        (1, false)
    );
    assert_eq!(
        hashes!(
            auth.authenticate(&token_header("alice@pbs!nope", wrong), &get)
                .await
        ),
        (1, false)
    );
    assert_eq!(
        hashes!(
            auth.authenticate(&token_header("alice@pbs!ci", wrong), &get)
                .await
        ),
        (1, false)
    );
    let good = token_header("alice@pbs!ci", &secret);
    assert_eq!(hashes!(auth.authenticate(&good, &get).await), (1, true));
    assert_eq!(hashes!(auth.authenticate(&good, &get).await), (0, true));
    // a wrong secret is never served from the cache
    assert_eq!(
        hashes!(
            auth.authenticate(&token_header("alice@pbs!ci", wrong), &get)
                .await
        ),
        (1, false)
    );
    assert_eq!(hashes!(auth.authenticate(&good, &get).await), (0, true));
}

/// A token whose secret is replaced (here: in the reloaded config file) no longer accepts the
/// old one, although it was cached (the cache entry is bound to the stored hash it matched).
#[tokio::test]
async fn a_replaced_token_secret_is_not_served_from_the_cache() {
    let dir = tempfile::tempdir().unwrap();
    let seed_with = |secret: &str| AuthSeed {
        tenants: vec![TenantSpec {
            id: "t".into(),
            comment: None,
        }],
        users: vec![UserSpec {
            userid: "svc@pbs".into(),
            tenant: "t".into(),
            password_hash: None,
            superuser: false,
        }],
        tokens: vec![TokenSpec {
            tokenid: "svc@pbs!pve".into(),
            secret_hash: password::hash_password(secret).unwrap(),
        }],
        acl: vec![],
    };
    let auth = AuthService::open(dir.path(), seed_with("old-secret")).unwrap();
    let old = token_header("svc@pbs!pve", "old-secret");
    assert!(auth.authenticate(&old, &Method::GET).await.is_ok());
    assert!(auth.authenticate(&old, &Method::GET).await.is_ok());
    // the config file now holds a new secret; the old one must fail even if cached
    auth.replace_seed(seed_with("new-secret")).unwrap();
    assert!(auth.authenticate(&old, &Method::GET).await.is_err());
    let new = token_header("svc@pbs!pve", "new-secret");
    assert!(auth.authenticate(&new, &Method::GET).await.is_ok());
    // a user without a password never logs in, after the same work as a wrong password
    let before = auth.hashes_done();
    assert!(auth.login("svc@pbs", "").await.is_err());
    assert_eq!(auth.hashes_done() - before, 1);
}

#[test]
fn users_are_listed_in_creation_order_with_comments() {
    let dir = tempfile::tempdir().unwrap();
    let auth = service(dir.path());
    auth.add_user("aaron@pbs", "acme", "pw", false).unwrap();
    auth.set_user_comment("aaron@pbs", Some("ops team"))
        .unwrap();
    let ids: Vec<(String, Option<String>)> = auth
        .list_users(None)
        .into_iter()
        .map(|u| (u.userid, u.comment))
        .collect();
    // the configured superuser first, then in order of creation (not by name, like PBS)
    assert_eq!(
        ids,
        vec![
            ("root@pam".to_string(), None),
            ("alice@pbs".to_string(), None),
            ("bob@pbs".to_string(), None),
            ("aaron@pbs".to_string(), Some("ops team".to_string())),
        ]
    );
    assert!(matches!(
        auth.set_user_comment("root@pam", Some("x")),
        Err(AuthError::ReadOnly(_))
    ));
    auth.set_user_comment("aaron@pbs", Some("")).unwrap();
    assert_eq!(auth.list_users(Some("acme"))[1].comment, None);
}
