//! `/access/...`: ticket login (docs/protocol.md#ticket-login; password or ticket renewal, JSON or
//! form, PBS 4's HttpOnly cookie variant) and logout, the caller's permissions and the user list.

use std::collections::BTreeMap;
use std::sync::Arc;

use bytes::Bytes;
use http::{header, Response, StatusCode};
use serde_json::{json, Value};

use super::context::Ctx;
use crate::auth::{AuthError, Authid, Identity, Privileges};
use crate::format::names::BackupNamespace;
use crate::net::body::{full, json_response, json_response_as, PLAIN_JSON_CONTENT_TYPE};
use crate::net::{json_data, Body, HttpError, Params};
use crate::state::AppState;

/// The cookie PBS 4 sets for `"http-only": true` logins (browsers keep it from scripts).
const HOST_COOKIE: &str = "__Host-PBSAuthCookie";
const COOKIE_ATTRIBUTES: &str = "Secure; SameSite=Lax; HttpOnly; Path=/;";

/// What an HttpOnly login shows instead of the ticket: the ticket without its signature.
fn ticket_info(ticket: &str) -> String {
    match ticket.rsplit_once("::") {
        Some((prefix, _)) => format!("{prefix}::ticketinfo"),
        None => "ticketinfo".to_string(),
    }
}

/// Issues a ticket and CSRF token. With `http-only`, the ticket goes into an HttpOnly
/// `__Host-PBSAuthCookie` and the answer carries only `ticket-info`, as PBS 4 does.
/// VNC/terminal verification parameters (`path`, `privs`, `port`) and `tfa-challenge` are not
/// supported and ignored.
pub async fn create_ticket(
    state: &Arc<AppState>,
    params: &Params,
) -> Result<Response<Body>, HttpError> {
    let username = params.required_str("username")?;
    let password = params.required_str("password")?;
    let http_only = params.bool_or("http-only", false)?;
    // The password hash runs on the auth layer's bounded pool, off the async workers.
    match state.auth.login(&username, &password).await {
        Ok(login) if http_only => {
            let mut resp = json_response_as(
                StatusCode::OK,
                PLAIN_JSON_CONTENT_TYPE,
                &json!({
                    "data": {
                        "username": login.username,
                        "ticket-info": ticket_info(&login.ticket),
                        "CSRFPreventionToken": login.csrf,
                    },
                    "status": 200,
                    "success": true,
                }),
            );
            let cookie = format!("{HOST_COOKIE}={}; {COOKIE_ATTRIBUTES}", login.ticket);
            let value = header::HeaderValue::from_str(&cookie)
                .map_err(|e| HttpError::internal(format!("cannot build the cookie: {e}")))?;
            resp.headers_mut().insert(header::SET_COOKIE, value);
            Ok(resp)
        }
        Ok(login) => Ok(json_response_as(
            StatusCode::OK,
            PLAIN_JSON_CONTENT_TYPE,
            &json!({
                "data": {
                    "username": login.username,
                    "ticket": login.ticket,
                    "CSRFPreventionToken": login.csrf,
                },
                "status": 200,
                "success": true,
            }),
        )),
        Err(AuthError::Unavailable(e)) => Err(HttpError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            e.to_string(),
        )),
        Err(e) => {
            tracing::info!("login failed: {e}");
            // PBS's text for a refused login (other 401s say "authentication failed")
            Err(HttpError::unauthorized_msg("permission check failed."))
        }
    }
}

/// `DELETE /access/ticket`: expires the HttpOnly cookie. Tickets are stateless (signed with a
/// lifetime), so there is nothing to revoke on the server; PBS 4 answers exactly this, without
/// a content type.
pub fn logout() -> Response<Body> {
    Response::builder()
        .status(StatusCode::OK)
        .header(
            header::SET_COOKIE,
            format!("{HOST_COOKIE}=; Expires=Thu, 01 Jan 1970 00:00:00 GMT; {COOKIE_ATTRIBUTES}"),
        )
        .body(full(Bytes::from_static(
            br#"{"data":{},"status":200,"success":true}"#,
        )))
        .expect("static response parts are valid")
}

/// The identity whose data a caller asks about with `auth-id`: itself, a token of its own
/// user, or (with `Sys.Audit` on `/`, within its tenant; superusers everywhere) anybody.
fn subject(ctx: &Ctx) -> Result<Identity, HttpError> {
    let Some(text) = ctx.params.str("auth-id")?.filter(|s| !s.is_empty()) else {
        return Ok(ctx.id.clone());
    };
    let authid: Authid = text
        .parse()
        .map_err(|e| HttpError::bad_param("auth-id", e))?;
    if authid == ctx.id.authid {
        return Ok(ctx.id.clone());
    }
    let own_token =
        authid.is_token() && !ctx.id.authid.is_token() && authid.user() == ctx.id.authid.user();
    let auditor = ctx.id.superuser
        || ctx
            .state
            .auth
            .root_privileges(&ctx.id)
            .contains(Privileges::SYS_AUDIT);
    let target = ctx.state.auth.identity_for(&authid).ok();
    match target {
        Some(t) if own_token || (auditor && ctx.state.auth.can_see_tenant(&ctx.id, &t.tenant)) => {
            Ok(t)
        }
        _ if auditor || own_token => Err(HttpError::bad_param(
            "auth-id",
            format!("user or token '{authid}' does not exist"),
        )),
        _ => Err(HttpError::forbidden()),
    }
}

/// Privileges of `who` at an ACL path as PBS names them (`/datastore/{store}/{ns…}` is
/// evaluated with tenant isolation; a store the caller cannot see has none).
fn privileges_at(ctx: &Ctx, who: &Identity, path: &str) -> Privileges {
    let parts: Vec<String> = path
        .split('/')
        .filter(|p| !p.is_empty())
        .map(str::to_string)
        .collect();
    match parts.as_slice() {
        [first, store, ns @ ..] if first == "datastore" => {
            let Some(entry) = ctx.state.datastore(store) else {
                return Privileges::EMPTY;
            };
            if !ctx.state.auth.can_see_tenant(&ctx.id, &entry.tenant) {
                return Privileges::EMPTY;
            }
            match BackupNamespace::parse(&ns.join("/")) {
                Ok(ns) => ctx
                    .state
                    .auth
                    .privileges(who, &entry.name, &entry.tenant, &ns),
                Err(_) => Privileges::EMPTY,
            }
        }
        _ => ctx.state.auth.privileges_at(who, &parts),
    }
}

/// `GET /access/permissions` (`auth-id`?, `path`?): ACL path → privilege name → propagates.
/// Without `path`, as PBS: `/`, `/access`, `/datastore`, `/remote`, `/system` and every ACL
/// path of the subject (of a token: also of its user), omitting paths without privileges.
/// Our ACL entries propagate, so every value is `true`. `Admin` lists PBS's full set, tape,
/// remote and realm privileges included (see [`Privileges::FOREIGN`]).
pub fn permissions(ctx: &Ctx) -> Result<Response<Body>, HttpError> {
    let who = subject(ctx)?;
    let privs_map = |privs: Privileges| -> Value {
        Value::Object(
            privs
                .names()
                .into_iter()
                .map(|n| (n.to_string(), Value::Bool(true)))
                .collect(),
        )
    };
    let mut out = BTreeMap::new();
    if let Some(path) = ctx.params.str("path")?.filter(|p| !p.is_empty()) {
        if !path.starts_with('/') {
            return Err(HttpError::bad_param("path", "must start with '/'"));
        }
        out.insert(path.clone(), privs_map(privileges_at(ctx, &who, &path)));
        return Ok(json_data(out));
    }
    let mut paths: Vec<String> = ["/", "/access", "/datastore", "/remote", "/system"]
        .iter()
        .map(|p| p.to_string())
        .collect();
    paths.extend(ctx.state.auth.acl_paths_of(&who.authid));
    if who.authid.is_token() {
        paths.extend(
            ctx.state
                .auth
                .acl_paths_of(&Authid::from(who.authid.user().clone())),
        );
    }
    for path in paths {
        let privs = privileges_at(ctx, &who, &path);
        if !privs.is_empty() {
            out.insert(path, privs_map(privs));
        }
    }
    Ok(json_data(out))
}

/// `GET /access/users` (`include_tokens`?): `[{"userid", "comment"?, "tokens"?}]` in the order
/// the users were made, plus a `digest` of the list (PBS hashes its user config file; both are
/// opaque values a client hands back unchanged). Superusers see every user; callers with
/// `Sys.Audit` on `/` the users of their tenant; everybody else only themselves.
pub fn users(ctx: &Ctx) -> Result<Response<Body>, HttpError> {
    let include_tokens = ctx.params.bool_or("include_tokens", false)?;
    let auditor = ctx
        .state
        .auth
        .root_privileges(&ctx.id)
        .contains(Privileges::SYS_AUDIT);
    let tenant = (!ctx.id.superuser).then_some(ctx.id.tenant.as_str());
    let me = ctx.id.authid.user().to_string();
    let items: Vec<Value> = ctx
        .state
        .auth
        .list_users(tenant)
        .into_iter()
        .filter(|u| ctx.id.superuser || auditor || u.userid == me)
        .map(|u| {
            let mut item = json!({ "userid": u.userid });
            if let Some(comment) = &u.comment {
                item["comment"] = json!(comment);
            }
            if include_tokens {
                let tokens: Vec<Value> = u
                    .tokens
                    .iter()
                    .map(|t| json!({ "tokenid": format!("{}!{t}", u.userid) }))
                    .collect();
                item["tokens"] = Value::Array(tokens);
            }
            item
        })
        .collect();
    let data = Value::Array(items);
    let digest = hex::encode(crate::format::sha256(data.to_string().as_bytes()));
    Ok(json_response(
        StatusCode::OK,
        &json!({ "data": data, "digest": digest }),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ticket_info_drops_the_signature() {
        assert_eq!(
            ticket_info("PBS:bench@pbs:6B149C2D::c2lnbmF0dXJl"),
            "PBS:bench@pbs:6B149C2D::ticketinfo"
        );
    }

    #[test]
    fn logout_expires_the_cookie_without_content_type() {
        let resp = logout();
        assert_eq!(resp.status(), StatusCode::OK);
        assert!(resp.headers().get(header::CONTENT_TYPE).is_none());
        assert_eq!(
            resp.headers()[header::SET_COOKIE],
            "__Host-PBSAuthCookie=; Expires=Thu, 01 Jan 1970 00:00:00 GMT; Secure; SameSite=Lax; HttpOnly; Path=/;"
        );
    }
}
