//! Token and ACL management through the API: who may do what, and that the results work.

use http::{Method, StatusCode};

use super::tests::{call, env, login, Env, Session};

const FORM: Option<&str> = Some("application/x-www-form-urlencoded");

async fn form(
    env: &Env,
    who: &Session,
    method: Method,
    uri: &str,
    body: &str,
) -> (StatusCode, serde_json::Value, String) {
    call(env, Some(who), method, uri, FORM, body.as_bytes()).await
}

#[tokio::test]
async fn users_create_their_own_tokens_only() {
    let env = env().await;
    let alice = login(&env, "alice@pbs", "alicepw").await;
    let (status, json, text) = form(
        &env,
        &alice,
        Method::POST,
        "/api2/json/access/users/alice@pbs/token/ci",
        "comment=ci+token",
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{text}");
    assert_eq!(json["data"]["tokenid"], "alice@pbs!ci");
    let secret = json["data"]["value"].as_str().unwrap().to_string();
    // the new token works right away (the recorded stock client format)
    let resp = super::handle_buffered(
        env.state.clone(),
        http::Request::get("/api2/json/version")
            .header(
                "Authorization",
                format!("PBSAPIToken alice@pbs!ci:{secret}"),
            )
            .body(bytes::Bytes::new())
            .unwrap(),
    )
    .await;
    assert_eq!(resp.status(), StatusCode::OK);
    // the same name again, another user's token, nonsense names
    let (status, _, _) = form(
        &env,
        &alice,
        Method::POST,
        "/api2/json/access/users/alice@pbs/token/ci",
        "",
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (status, _, _) = form(
        &env,
        &alice,
        Method::POST,
        "/api2/json/access/users/bob@pbs/token/x",
        "",
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, _, _) = form(
        &env,
        &alice,
        Method::POST,
        "/api2/json/access/users/alice@pbs/token/a%2Fb",
        "",
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (status, _, text) = form(
        &env,
        &alice,
        Method::POST,
        "/api2/json/access/users/alice@pbs/token/exp",
        "expire=100",
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{text}");
    // a superuser may create tokens for anyone
    let root = login(&env, "root@pam", "rootpw").await;
    let (status, json, _) = form(
        &env,
        &root,
        Method::POST,
        "/api2/json/access/users/bob@pbs/token/x",
        "",
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(json["data"]["tokenid"], "bob@pbs!x");
}

#[tokio::test]
async fn acl_changes_need_admin_and_stay_in_the_tenant() {
    let env = env().await;
    let alice = login(&env, "alice@pbs", "alicepw").await;
    let grant = "path=%2Fdatastore%2Fs1&role=DatastoreAdmin&auth-id=alice%40pbs%21ci";
    // no Admin on "/": refused
    let (status, _, _) = form(&env, &alice, Method::PUT, "/api2/json/access/acl", grant).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    // bob is Admin on "/" but of tenant globex: alice's token and store s1 are not his
    let bob = login(&env, "bob@pbs", "bobpw").await;
    let (status, _, _) = form(&env, &bob, Method::PUT, "/api2/json/access/acl", grant).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, _, _) = form(
        &env,
        &bob,
        Method::PUT,
        "/api2/json/access/acl",
        "path=%2Fdatastore%2Fs1&role=DatastoreAdmin&auth-id=bob%40pbs",
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    // within the tenant (root here): grant, the token then may use the store, revoke again
    let root = login(&env, "root@pam", "rootpw").await;
    let (_, json, _) = form(
        &env,
        &alice,
        Method::POST,
        "/api2/json/access/users/alice@pbs/token/ci",
        "",
    )
    .await;
    let secret = json["data"]["value"].as_str().unwrap().to_string();
    let token_get = |uri: &'static str| {
        let state = env.state.clone();
        let secret = secret.clone();
        async move {
            super::handle_buffered(
                state,
                http::Request::get(uri)
                    .header(
                        "Authorization",
                        format!("PBSAPIToken alice@pbs!ci:{secret}"),
                    )
                    .body(bytes::Bytes::new())
                    .unwrap(),
            )
            .await
            .status()
        }
    };
    let (status, json, text) = form(&env, &root, Method::PUT, "/api2/json/access/acl", grant).await;
    assert_eq!(
        (status, &json["data"]),
        (StatusCode::OK, &serde_json::Value::Null),
        "{text}"
    );
    assert_eq!(
        token_get("/api2/json/admin/datastore/s1/groups").await,
        StatusCode::OK
    );
    let (status, _, _) = form(
        &env,
        &root,
        Method::PUT,
        "/api2/json/access/acl",
        &format!("{grant}&delete=1"),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        token_get("/api2/json/admin/datastore/s1/groups").await,
        StatusCode::FORBIDDEN
    );
    // bad input is a clear 400
    let (status, _, text) = form(
        &env,
        &root,
        Method::PUT,
        "/api2/json/access/acl",
        "path=%2Fdatastore%2Fs1&role=NoSuchRole&auth-id=alice%40pbs",
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(text.contains("unknown role"), "{text}");
}
