//! `POST /access/ticket` (protocol.md §2.2): password or ticket-renewal login, JSON or form.

use std::sync::Arc;

use http::{Response, StatusCode};
use serde_json::json;

use crate::net::body::json_response;
use crate::net::{Body, HttpError, Params};
use crate::state::AppState;

/// Issues a ticket and CSRF token. VNC/terminal verification parameters (`path`, `privs`,
/// `port`) and `tfa-challenge` are not supported and ignored.
pub async fn create_ticket(
    state: &Arc<AppState>,
    params: &Params,
) -> Result<Response<Body>, HttpError> {
    let username = params.required_str("username")?;
    let password = params.required_str("password")?;
    let auth_state = state.clone();
    // argon2 is deliberately slow: keep it off the async workers.
    let result = tokio::task::spawn_blocking(move || auth_state.auth.login(&username, &password))
        .await
        .map_err(|e| HttpError::internal(format!("login task failed: {e}")))?;
    match result {
        Ok(login) => Ok(json_response(
            StatusCode::OK,
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
        Err(e) => {
            tracing::info!("login failed: {e}");
            Err(HttpError::unauthorized())
        }
    }
}
