//! Polling each ready tenant's usage into its status (at most once per usage interval).

use kube::runtime::events::EventType;
use kube::ResourceExt;

use super::Context;
use crate::crd::{condition, set_condition, Tenant, TenantStatus};
use crate::render::{self, Credentials, Names, SERVER_PORT};
use crate::usage::{self, UsageTarget};

/// `host:port` of the tenant's Service inside the cluster (what the operator dials).
pub fn usage_addr(tenant: &Tenant) -> String {
    let ns = tenant.namespace().unwrap_or_else(|| "default".into());
    format!("{}.{ns}.svc:{SERVER_PORT}", Names::of(tenant).workload)
}

/// True when the last read is older than the interval (or there is none).
fn due(
    status: &TenantStatus,
    interval: std::time::Duration,
    now: chrono::DateTime<chrono::Utc>,
) -> bool {
    let Some(read) = status.usage.as_ref().map(|u| u.read_at.as_str()) else {
        return true;
    };
    match chrono::DateTime::parse_from_rfc3339(read) {
        Ok(t) => {
            let age = now.signed_duration_since(t.with_timezone(&chrono::Utc));
            age.to_std().map(|a| a >= interval).unwrap_or(false)
        }
        Err(_) => true,
    }
}

/// Reads usage when due and folds it into `status`; failures become the `UsageAvailable`
/// condition (the last figures stay).
pub(super) async fn refresh(
    ctx: &Context,
    tenant: &Tenant,
    status: &mut TenantStatus,
    creds: &Credentials,
    fingerprint: &str,
) {
    let now_t = chrono::Utc::now();
    if !due(status, ctx.usage_interval, now_t) {
        return;
    }
    let now = now_t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let gen = tenant.metadata.generation;
    let target = UsageTarget {
        addr: usage_addr(tenant),
        fingerprint: fingerprint.to_string(),
        tokenid: creds.tokenid(&render::admin_user(tenant)),
        secret: creds.token_secret.clone(),
        tenant_id: render::tenant_id(tenant),
    };
    match usage::fetch(&target).await {
        Ok(report) => {
            set_condition(
                &mut status.conditions,
                condition(
                    "UsageAvailable",
                    true,
                    "UsageRead",
                    "usage read from the server",
                    gen,
                    &now,
                ),
            );
            if let Some(ev) = usage::apply_usage(status, report.to_status(&now), gen, &now) {
                let t = if ev.warning {
                    EventType::Warning
                } else {
                    EventType::Normal
                };
                super::tenant::publish(ctx, tenant, t, ev.reason, ev.note).await;
            }
        }
        Err(e) => {
            tracing::debug!("{e}");
            set_condition(
                &mut status.conditions,
                condition(
                    "UsageAvailable",
                    false,
                    "UsageUnavailable",
                    e.to_string(),
                    gen,
                    &now,
                ),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usage_is_read_again_only_after_the_interval() {
        let now = chrono::DateTime::parse_from_rfc3339("2026-01-01T00:10:00Z")
            .map(|t| t.with_timezone(&chrono::Utc))
            .expect("time");
        let mut s = TenantStatus::default();
        let minute = std::time::Duration::from_secs(60);
        assert!(due(&s, minute, now));
        s.usage = Some(crate::crd::UsageStatus {
            read_at: "2026-01-01T00:09:30Z".into(),
            ..Default::default()
        });
        assert!(!due(&s, minute, now));
        if let Some(u) = s.usage.as_mut() {
            u.read_at = "2026-01-01T00:09:00Z".into();
        }
        assert!(due(&s, minute, now));
        if let Some(u) = s.usage.as_mut() {
            u.read_at = "garbage".into();
        }
        assert!(due(&s, minute, now));
    }
}
