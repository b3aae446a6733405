//! Token and ACL management through the REST API, as Proxmox VE and scripts use it:
//! `POST /access/users/{userid}/token/{name}` creates an API token and answers its secret
//! once; `PUT /access/acl` grants (or with `delete`, revokes) a role on a path.
//!
//! Who may do it: a user creates tokens for itself (a token may not create tokens); a
//! superuser for anyone. Changing ACLs needs `Sys.Modify` on `/` (role `Admin` there), and a
//! non-superuser can only name users, tokens and datastores of its own tenant.

use http::Response;
use serde_json::json;

use super::context::Ctx;
use crate::auth::ids::Authid;
use crate::auth::AuthError;
use crate::auth::Privileges;
use crate::net::{json_data, Body, HttpError};

fn auth_error(e: AuthError) -> HttpError {
    match e {
        AuthError::UnknownUser(_) => HttpError::not_found(e.to_string()),
        _ => HttpError::bad_request(e.to_string()),
    }
}

/// `POST /access/users/{userid}/token/{name}`: `{"tokenid", "value"}`.
pub fn create_token(ctx: &Ctx, userid: &str, name: &str) -> Result<Response<Body>, HttpError> {
    let tokenid = format!("{userid}!{name}");
    let parsed: Authid = tokenid
        .parse()
        .map_err(|e: AuthError| HttpError::bad_request(e.to_string()))?;
    let own = !ctx.id.authid.is_token() && ctx.id.authid.user() == parsed.user();
    if !own && !ctx.id.superuser {
        return Err(HttpError::forbidden());
    }
    if !ctx.params.bool_or("enable", true)? {
        return Err(HttpError::bad_param(
            "enable",
            "disabled tokens are not supported",
        ));
    }
    if ctx.params.u64("expire")?.unwrap_or(0) != 0 {
        return Err(HttpError::bad_param(
            "expire",
            "expiring tokens are not supported",
        ));
    }
    let comment = ctx.params.str("comment")?;
    let value = ctx
        .state
        .auth
        .add_token_with_comment(&tokenid, comment.as_deref())
        .map_err(auth_error)?;
    tracing::info!("{} created API token {tokenid}", ctx.id.authid);
    Ok(json_data(json!({ "tokenid": tokenid, "value": value })))
}

/// `PUT /access/acl` with `path`, `role`, `auth-id`, optional `propagate` (default true) and
/// `delete`. Groups (`group`) do not exist here.
pub fn update_acl(ctx: &Ctx) -> Result<Response<Body>, HttpError> {
    let auth = &ctx.state.auth;
    if !auth
        .root_privileges(&ctx.id)
        .contains(Privileges::SYS_MODIFY)
    {
        return Err(HttpError::forbidden());
    }
    if ctx.params.str("group")?.is_some() {
        return Err(HttpError::bad_param("group", "groups are not supported"));
    }
    let path = ctx.params.required_str("path")?;
    let role = ctx.params.required_str("role")?;
    let authid = ctx.params.required_str("auth-id")?;
    let target: Authid = authid
        .parse()
        .map_err(|e: AuthError| HttpError::bad_param("auth-id", e))?;
    if !ctx.id.superuser {
        // only within the caller's tenant: its users and tokens, its datastores
        if auth.tenant_of(&target).as_deref() != Some(ctx.id.tenant.as_str()) {
            return Err(HttpError::forbidden());
        }
        let store = path
            .split('/')
            .filter(|p| !p.is_empty())
            .nth(1)
            .map(str::to_string);
        if let Some(store) = store {
            let own = ctx
                .state
                .datastore(&store)
                .is_some_and(|e| e.tenant == ctx.id.tenant);
            if !own {
                return Err(HttpError::forbidden());
            }
        }
    }
    if ctx.params.bool_or("delete", false)? {
        auth.remove_acl(&path, &authid, &role).map_err(auth_error)?;
    } else {
        let propagate = ctx.params.bool_or("propagate", true)?;
        auth.add_acl_entry(&path, &authid, &role, propagate)
            .map_err(auth_error)?;
    }
    tracing::info!("{} changed ACL: {path} {authid} {role}", ctx.id.authid);
    Ok(json_data(serde_json::Value::Null))
}
