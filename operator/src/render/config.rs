//! The server's TOML configuration file, written key by key in a fixed order so that the same
//! inputs always give the same bytes (no needless reloads) and the unit tests compare text.

use std::fmt::Write as _;

use kube::ResourceExt;

use super::{admin_user, tenant_id, Bound, Credentials, Inputs, CONFIG_DIR, DATA_DIR, SERVER_PORT};
use crate::crd::{Datastore, SyncDirection, Tenant};

/// Key of the config file in the config Secret.
pub const CONFIG_KEY: &str = "config.toml";

/// A TOML basic string (JSON string escapes are a subset TOML accepts).
fn q(s: &str) -> String {
    serde_json::Value::String(s.to_string()).to_string()
}

/// The key prefix of an S3 datastore as written into the config (without a trailing `/`):
/// `spec.s3.prefix`, or `<namespace>/<tenant id>/<store>`. `None` for local datastores.
pub fn s3_prefix(tenant: &Tenant, ds: &Datastore) -> Option<String> {
    let s3 = ds.spec.s3.as_ref()?;
    Some(s3.prefix.clone().unwrap_or_else(|| {
        format!(
            "{}/{}/{}",
            tenant.namespace().unwrap_or_default(),
            tenant_id(tenant),
            ds.store_name()
        )
    }))
}

/// Name of the `[[remote]]` a SyncJob renders: unique (one per SyncJob, whose names are unique
/// in the tenant's namespace) and a safe id (Kubernetes object names are).
pub fn sync_remote_name(job: &str) -> String {
    format!("{job}-remote")
}

/// Where the server reads a SyncJob's password or token secret (relative to [`CONFIG_DIR`]).
pub fn sync_secret_path(job: &str) -> String {
    format!("sync/{job}/secret")
}

/// Renders the server configuration of `tenant` from its bound children.
pub fn render_config(
    tenant: &Tenant,
    bound: &Bound,
    inputs: &Inputs,
    creds: &Credentials,
) -> String {
    let mut o = String::new();
    let id = tenant_id(tenant);
    let ns = tenant.namespace().unwrap_or_default();
    let _ = writeln!(
        o,
        "# Rendered by pbs-cloud-operator for Tenant {ns}/{}; edits are overwritten.",
        tenant.name_any()
    );
    let _ = writeln!(o, "listen = {}", q(&format!("0.0.0.0:{SERVER_PORT}")));
    let _ = writeln!(o, "data_dir = {}", q(DATA_DIR));
    let _ = writeln!(o, "\n[tls]");
    let _ = writeln!(o, "cert = {}", q(&format!("{CONFIG_DIR}/tls/tls.crt")));
    let _ = writeln!(o, "key = {}", q(&format!("{CONFIG_DIR}/tls/tls.key")));
    let _ = writeln!(o, "\n[[tenant]]\nid = {}", q(&id));
    if let Some(quota) = &tenant.spec.quota {
        if let Some(b) = quota.bytes {
            let _ = writeln!(o, "quota_bytes = {b}");
        }
        if let Some(p) = quota.warn_percent {
            let _ = writeln!(o, "quota_warn_percent = {p}");
        }
    }
    for ds in &bound.datastores {
        let obj = ds.name_any();
        let _ = writeln!(o, "\n[[datastore]]");
        let _ = writeln!(o, "name = {}", q(&ds.store_name()));
        let _ = writeln!(o, "tenant = {}", q(&id));
        if let Some(c) = &ds.spec.comment {
            let _ = writeln!(o, "comment = {}", q(c));
        }
        if let Some(s) = &ds.spec.gc_schedule {
            let _ = writeln!(o, "gc_schedule = {}", q(s));
        }
        if let Some(b) = ds.spec.quota_bytes {
            let _ = writeln!(o, "quota_bytes = {b}");
        }
        if let Some(d) = ds.spec.lock_generation_days {
            let _ = writeln!(o, "lock_generation_days = {d}");
        }
        let Some(s3) = &ds.spec.s3 else { continue };
        let prefix = s3_prefix(tenant, ds).unwrap_or_default();
        let _ = writeln!(o, "[datastore.s3]");
        let _ = writeln!(o, "bucket = {}", q(&s3.bucket));
        let _ = writeln!(o, "prefix = {}", q(&prefix));
        if let Some(e) = &s3.endpoint {
            let _ = writeln!(o, "endpoint = {}", q(e));
        }
        if let Some(r) = &s3.region {
            let _ = writeln!(o, "region = {}", q(r));
        }
        if s3.path_style {
            let _ = writeln!(o, "path_style = true");
        }
        if s3.credentials_secret.is_some() {
            let key_id = inputs.access_key_ids.get(&obj).cloned().unwrap_or_default();
            let _ = writeln!(o, "access_key_id = {}", q(&key_id));
            let _ = writeln!(
                o,
                "secret_access_key_file = {}",
                q(&format!("{CONFIG_DIR}/s3/{obj}/secret-access-key"))
            );
        } else if let Some(c) = &s3.credentials {
            let _ = writeln!(o, "credentials = {}", q(c));
        }
        if let Some(c) = &s3.storage_class {
            let _ = writeln!(o, "storage_class = {}", q(c));
        }
        if let Some(s) = &s3.sse {
            let _ = writeln!(o, "sse = {}", q(s));
        }
        if let Some(k) = &s3.sse_kms_key_id {
            let _ = writeln!(o, "sse_kms_key_id = {}", q(k));
        }
        if s3.ca_bundle.is_some() {
            let _ = writeln!(
                o,
                "ca_bundle = {}",
                q(&format!("{CONFIG_DIR}/s3/{obj}/ca.crt"))
            );
        }
        if let Some(l) = &ds.spec.lifecycle {
            let _ = writeln!(o, "[datastore.lifecycle]");
            if let Some(d) = l.expire_noncurrent_after_days {
                let _ = writeln!(o, "expire_noncurrent_after_days = {d}");
            }
            if let Some(d) = l.transition_after_days {
                let _ = writeln!(o, "transition_after_days = {d}");
            }
            if let Some(c) = &l.transition_storage_class {
                let _ = writeln!(o, "transition_storage_class = {}", q(c));
            }
        }
    }
    let admin = admin_user(tenant);
    let _ = writeln!(o, "\n[[user]]");
    let _ = writeln!(o, "userid = {}", q(&admin));
    let _ = writeln!(o, "tenant = {}", q(&id));
    let _ = writeln!(o, "password_hash = {}", q(&creds.password_hash));
    let _ = writeln!(o, "\n[[token]]");
    let _ = writeln!(o, "tokenid = {}", q(&creds.tokenid(&admin)));
    let _ = writeln!(o, "secret_hash = {}", q(&creds.token_secret_hash));
    let _ = writeln!(
        o,
        "\n[[acl]]\npath = \"/\"\nauthid = {}\nrole = \"Admin\"",
        q(&admin)
    );
    let _ = writeln!(
        o,
        "\n[[acl]]\npath = \"/\"\nauthid = {}\nrole = \"Admin\"",
        q(&creds.tokenid(&admin))
    );
    let store_of = |obj: &str| {
        bound
            .datastores
            .iter()
            .find(|d| d.name_any() == obj)
            .map(|d| d.store_name())
            .unwrap_or_default()
    };
    for p in &bound.prune_policies {
        let s = &p.spec;
        let _ = writeln!(o, "\n[[prune_job]]");
        let _ = writeln!(o, "id = {}", q(&p.name_any()));
        let _ = writeln!(o, "store = {}", q(&store_of(&s.datastore)));
        if let Some(n) = &s.ns {
            let _ = writeln!(o, "ns = {}", q(n));
        }
        if let Some(d) = s.max_depth {
            let _ = writeln!(o, "max_depth = {d}");
        }
        let _ = writeln!(o, "schedule = {}", q(&s.schedule));
        if !s.group_filter.is_empty() {
            let list: Vec<String> = s.group_filter.iter().map(|g| q(g)).collect();
            let _ = writeln!(o, "group_filter = [{}]", list.join(", "));
        }
        for (key, v) in [
            ("keep_last", s.keep.last),
            ("keep_hourly", s.keep.hourly),
            ("keep_daily", s.keep.daily),
            ("keep_weekly", s.keep.weekly),
            ("keep_monthly", s.keep.monthly),
            ("keep_yearly", s.keep.yearly),
        ] {
            if let Some(v) = v {
                let _ = writeln!(o, "{key} = {v}");
            }
        }
        if s.disable {
            let _ = writeln!(o, "disable = true");
        }
    }
    for l in &bound.retention_locks {
        let s = &l.spec;
        let _ = writeln!(o, "\n[[retention_lock]]");
        let _ = writeln!(o, "id = {}", q(&l.name_any()));
        let _ = writeln!(o, "store = {}", q(&store_of(&s.datastore)));
        if let Some(ns) = s.ns.as_deref().filter(|n| !n.is_empty()) {
            let _ = writeln!(o, "ns = {}", q(ns));
        }
        if !s.groups.is_empty() {
            let list: Vec<String> = s.groups.iter().map(|g| q(g)).collect();
            let _ = writeln!(o, "groups = [{}]", list.join(", "));
        }
        let _ = writeln!(o, "mode = {}", q(s.mode.as_config()));
        let _ = writeln!(o, "days = {}", s.days);
        if s.legal_hold {
            let _ = writeln!(o, "legal_hold = true");
        }
    }
    for j in &bound.sync_jobs {
        let s = &j.spec;
        let name = j.name_any();
        let remote = sync_remote_name(&name);
        let _ = writeln!(o, "\n[[remote]]");
        let _ = writeln!(o, "name = {}", q(&remote));
        let _ = writeln!(o, "host = {}", q(&s.remote.host));
        let _ = writeln!(o, "port = {}", s.remote.port);
        let _ = writeln!(o, "auth_id = {}", q(&s.remote.auth_id));
        let _ = writeln!(o, "fingerprint = {}", q(&s.remote.fingerprint));
        let _ = writeln!(
            o,
            "secret_file = {}",
            q(&format!("{CONFIG_DIR}/{}", sync_secret_path(&name)))
        );
        let _ = writeln!(o, "\n[[sync_job]]");
        let _ = writeln!(o, "id = {}", q(&name));
        if s.direction == SyncDirection::Push {
            let _ = writeln!(o, "direction = \"push\"");
        }
        let _ = writeln!(o, "store = {}", q(&store_of(&s.datastore)));
        if let Some(n) = s.namespace.as_deref().filter(|n| !n.is_empty()) {
            let _ = writeln!(o, "ns = {}", q(n));
        }
        let _ = writeln!(o, "remote = {}", q(&remote));
        let _ = writeln!(o, "remote_store = {}", q(&s.remote_store));
        if let Some(n) = s.remote_namespace.as_deref().filter(|n| !n.is_empty()) {
            let _ = writeln!(o, "remote_ns = {}", q(n));
        }
        if let Some(d) = s.max_depth {
            let _ = writeln!(o, "max_depth = {d}");
        }
        let _ = writeln!(o, "schedule = {}", q(&s.schedule));
        if !s.group_filter.is_empty() {
            let list: Vec<String> = s.group_filter.iter().map(|g| q(g)).collect();
            let _ = writeln!(o, "group_filter = [{}]", list.join(", "));
        }
        if s.remove_vanished {
            let _ = writeln!(o, "remove_vanished = true");
        }
        if let Some(n) = s.transfer_last {
            let _ = writeln!(o, "transfer_last = {n}");
        }
        if let Some(owner) = &s.owner {
            let _ = writeln!(o, "owner = {}", q(owner));
        }
        if s.verified_only {
            let _ = writeln!(o, "verified_only = true");
        }
        if s.encrypted_only {
            let _ = writeln!(o, "encrypted_only = true");
        }
        if let Some(r) = &s.rate_in {
            let _ = writeln!(o, "rate_in = {}", q(r));
        }
        if let Some(r) = &s.rate_out {
            let _ = writeln!(o, "rate_out = {}", q(r));
        }
        if let Some(n) = s.worker_threads {
            let _ = writeln!(o, "worker_threads = {n}");
        }
        if s.disable {
            let _ = writeln!(o, "disable = true");
        }
    }
    o
}
