//! The superuser's tenant overview: every tenant with its usage and quota (from `/tenants` and
//! `/tenants/{id}/usage`; other users get the API's refusal).

use maud::{html, Markup};
use serde_json::Value;

use super::api_client::enc;
use super::format::bytes;
use super::layout::{frame, Nav};
use super::{ConsoleError, Session};

fn u64_of(v: &Value, key: &str) -> Option<u64> {
    v.get(key).and_then(Value::as_u64)
}

/// `GET /console/tenants`.
pub(crate) async fn page(s: &Session) -> Result<Markup, ConsoleError> {
    if !s.id.superuser {
        return Err(ConsoleError::Forbidden(
            "the tenant overview is for superusers",
        ));
    }
    let tenants = s.api.get("tenants").await?;
    let mut rows = Vec::new();
    for t in tenants.as_array().cloned().unwrap_or_default() {
        let id = t
            .get("id")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string();
        let usage = s
            .api
            .get_opt(&format!("tenants/{}/usage", enc(&id)))
            .await?;
        rows.push((t, usage));
    }
    let body = html! {
        h1 { "Tenants" }
        table.tenants {
            thead { tr { th { "Tenant" } th { "Datastores" } th { "Snapshots" } th { "Logical" } th { "Physical" } th { "Quota" } } }
            tbody {
                @for (t, usage) in &rows {
                    @let warn = t.get("quota-warning").and_then(Value::as_bool).unwrap_or(false);
                    tr.warning[warn] {
                        td { (t.get("id").and_then(Value::as_str).unwrap_or("")) }
                        td {
                            @if let Some(u) = usage {
                                @for d in u["datastores"].as_array().cloned().unwrap_or_default() {
                                    @let name = d.get("store").and_then(Value::as_str).unwrap_or("").to_string();
                                    a href={ "/console/datastore/" (enc(&name)) } { (name) } " "
                                }
                            }
                        }
                        td { (usage.as_ref().and_then(|u| u64_of(u, "snapshots")).unwrap_or(0)) }
                        td { (bytes(usage.as_ref().and_then(|u| u64_of(u, "logical-bytes")).unwrap_or(0))) }
                        td { (bytes(u64_of(t, "physical-bytes").unwrap_or(0))) }
                        td {
                            @match u64_of(t, "quota-bytes") {
                                Some(q) => { (bytes(q)) @if warn { " – warning" } }
                                None => { "none" }
                            }
                        }
                    }
                }
            }
        }
    };
    Ok(frame("Tenants", Nav::Tenants, Some(s), body))
}
