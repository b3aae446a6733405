//! The server's one configuration file (docs/design.md#configuration): TOML, validated completely
//! at load. A bad file is refused with the file, line and field at fault; nothing is half-applied.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use toml::Spanned;

use crate::format::names::is_safe_id;

mod jobs;
mod limits;
mod storage;
mod sync;
mod upload_limits;

pub use jobs::{
    LifecycleConfig, PruneJobConfig, RetentionLockConfig, VerifyJobConfig, WebhookConfig,
    LOCK_MODES, VERIFY_MODES,
};
pub use limits::LimitsConfig;
pub use storage::{S3Config, StorageConfig, ARCHIVE_STORAGE_CLASSES};
pub use sync::{parse_rate, RemoteConfig, SyncJobConfig, SYNC_DIRECTIONS};
pub use upload_limits::UploadLimitsConfig;

/// Default listen address: all IPv4 interfaces on PBS's port.
pub const DEFAULT_LISTEN: &str = "0.0.0.0:8007";
/// Default data directory, relative to the working directory.
pub const DEFAULT_DATA_DIR: &str = "pbs-cloud-data";
/// The tenant and datastore a zero-configuration start creates.
pub const DEFAULT_TENANT: &str = "default";
pub const DEFAULT_DATASTORE: &str = "store1";

/// A configuration file that cannot be used; the message names file, line and field.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("unable to read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config file {path}, line {line}, column {column}: {message}")]
    Syntax {
        path: PathBuf,
        line: usize,
        column: usize,
        message: String,
    },
    #[error("config file {path}, line {line}: {field}: {message}")]
    Invalid {
        path: PathBuf,
        line: usize,
        field: String,
        message: String,
    },
}

/// The whole file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// `host:port` to listen on (`listen_addr` is accepted too).
    #[serde(alias = "listen_addr")]
    pub listen: Option<Spanned<String>>,
    pub data_dir: Option<PathBuf>,
    #[serde(default)]
    pub tls: TlsConfig,
    /// The seed-style backend of the default datastore (when no `[[datastore]]` is given).
    pub storage: Option<StorageConfig>,
    #[serde(default, rename = "tenant")]
    pub tenants: Vec<TenantConfig>,
    #[serde(default, rename = "datastore")]
    pub datastores: Vec<DatastoreConfig>,
    #[serde(default, rename = "user")]
    pub users: Vec<UserConfig>,
    #[serde(default, rename = "token")]
    pub tokens: Vec<TokenConfig>,
    #[serde(default)]
    pub acl: Vec<AclConfig>,
    #[serde(default, rename = "prune_job")]
    pub prune_jobs: Vec<PruneJobConfig>,
    #[serde(default, rename = "retention_lock")]
    pub retention_locks: Vec<RetentionLockConfig>,
    #[serde(default, rename = "verify_job")]
    pub verify_jobs: Vec<VerifyJobConfig>,
    /// Other PBS-compatible servers sync jobs pull from.
    #[serde(default, rename = "remote")]
    pub remotes: Vec<RemoteConfig>,
    #[serde(default, rename = "sync_job")]
    pub sync_jobs: Vec<SyncJobConfig>,
    /// Billing webhook: usage reports and events, HMAC-signed.
    pub webhook: Option<WebhookConfig>,
    /// Memory budget of backup sessions (needs a restart to change).
    pub upload_limits: Option<Spanned<UploadLimitsConfig>>,
    /// Connection timeouts and limits, and the cost of authentication.
    #[serde(default)]
    pub limits: LimitsConfig,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TenantConfig {
    pub id: Spanned<String>,
    pub comment: Option<String>,
    /// Physical bytes (unique stored chunks) over all the tenant's datastores; a backup that
    /// would pass it is refused.
    pub quota_bytes: Option<u64>,
    /// Share of the quota, in percent, from which status and metrics warn (default 90).
    pub quota_warn_percent: Option<u8>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatastoreConfig {
    pub name: Spanned<String>,
    /// Owning tenant; defaults to the only tenant, or `default`.
    pub tenant: Option<Spanned<String>>,
    /// Local directory; defaults to `<data_dir>/datastores/<name>` (unless `s3` is given).
    pub path: Option<PathBuf>,
    pub comment: Option<String>,
    /// Keep the datastore under an S3 bucket prefix instead of a local directory.
    pub s3: Option<S3Config>,
    /// PBS calendar event for garbage collection, e.g. `daily`.
    pub gc_schedule: Option<Spanned<String>>,
    /// Physical-bytes quota of this datastore (bytes); backups past it are refused.
    pub quota_bytes: Option<u64>,
    /// Nominal size (bytes) the status reports as `total` (= `used` + `avail`) when no quota
    /// is tighter; for object-store datastores, which have no size of their own.
    pub capacity_bytes: Option<u64>,
    /// Hours after which the objects of a snapshot that never got a manifest (an abandoned
    /// backup) are removed by GC (default 24).
    pub abandoned_after_hours: Option<u64>,
    /// Minimum age in minutes of an unreferenced chunk before GC removes it (PBS's datastore
    /// tuning `gc-atime-cutoff`: 1..=2880, default 1445 = 24 h 5 min). Running backups stay
    /// protected by their writer leases whatever the value.
    pub gc_atime_cutoff_minutes: Option<u64>,
    /// Object Lock retain-until dates are rounded up to multiples of this many days, so a
    /// reused chunk is extended at most once per generation (default 10).
    pub lock_generation_days: Option<u64>,
    /// Bucket lifecycle rules the server installs for this datastore's prefix (S3 only).
    pub lifecycle: Option<LifecycleConfig>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserConfig {
    pub userid: Spanned<String>,
    pub tenant: Option<Spanned<String>>,
    /// PHC string (argon2), as `pbs-cloud-server hash-password` prints it.
    pub password_hash: Option<String>,
    #[serde(default)]
    pub superuser: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenConfig {
    pub tokenid: Spanned<String>,
    pub secret_hash: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AclConfig {
    pub path: Spanned<String>,
    pub authid: Spanned<String>,
    pub role: Spanned<String>,
}

impl Config {
    /// Reads and validates a file.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Self::parse(path, &text)
    }

    /// Parses and validates file contents; `path` is only used in messages.
    pub fn parse(path: &Path, text: &str) -> Result<Self, ConfigError> {
        let config: Config = toml::from_str(text).map_err(|err| {
            let (line, column) = err
                .span()
                .map(|span| line_col(text, span.start))
                .unwrap_or((1, 1));
            ConfigError::Syntax {
                path: path.to_path_buf(),
                line,
                column,
                message: err.message().to_string(),
            }
        })?;
        Validator { path, text }.validate(&config)?;
        Ok(config)
    }

    /// The listen address, if configured.
    pub fn listen_addr(&self) -> Option<SocketAddr> {
        self.listen.as_ref().and_then(|l| l.get_ref().parse().ok())
    }

    /// The tenant a datastore or user without an explicit tenant belongs to.
    pub fn default_tenant(&self) -> String {
        match self.tenants.as_slice() {
            [only] => only.id.get_ref().clone(),
            _ => DEFAULT_TENANT.to_string(),
        }
    }
}

/// 1-based line and column of a byte offset.
fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let column = before.len() - before.rfind('\n').map(|i| i + 1).unwrap_or(0) + 1;
    (line, column)
}

struct Validator<'a> {
    path: &'a Path,
    text: &'a str,
}

impl Validator<'_> {
    fn error<T>(&self, at: &Spanned<T>, field: &str, message: impl Into<String>) -> ConfigError {
        ConfigError::Invalid {
            path: self.path.to_path_buf(),
            line: line_col(self.text, at.span().start).0,
            field: field.to_string(),
            message: message.into(),
        }
    }

    fn validate(&self, config: &Config) -> Result<(), ConfigError> {
        if let Some(listen) = &config.listen {
            if listen.get_ref().parse::<SocketAddr>().is_err() {
                return Err(self.error(
                    listen,
                    "listen",
                    format!("'{}' is not an address like 0.0.0.0:8007", listen.get_ref()),
                ));
            }
        }
        let mut tenants = BTreeSet::new();
        for (i, tenant) in config.tenants.iter().enumerate() {
            let field = format!("tenant[{i}].id");
            let id = tenant.id.get_ref();
            if !is_safe_id(id) || id.len() > 32 {
                return Err(self.error(&tenant.id, &field, format!("'{id}' is not a valid tenant id (letters, digits, '_', '-', '.', at most 32)")));
            }
            if !tenants.insert(id.clone()) {
                return Err(self.error(
                    &tenant.id,
                    &field,
                    format!("tenant '{id}' is defined twice"),
                ));
            }
        }
        let default_tenant = config.default_tenant();
        let check_tenant =
            |value: &Option<Spanned<String>>, field: &str| -> Result<(), ConfigError> {
                if let Some(tenant) = value {
                    let known = tenants.contains(tenant.get_ref())
                        || (tenants.is_empty() && tenant.get_ref() == DEFAULT_TENANT);
                    if !known {
                        return Err(self.error(
                            tenant,
                            field,
                            format!("unknown tenant '{}'", tenant.get_ref()),
                        ));
                    }
                }
                Ok(())
            };
        let _ = &default_tenant;
        let mut stores = BTreeSet::new();
        for (i, store) in config.datastores.iter().enumerate() {
            let name = store.name.get_ref();
            let field = format!("datastore[{i}].name");
            if !is_safe_id(name) || name.len() < 3 || name.len() > 32 {
                return Err(self.error(&store.name, &field, format!("'{name}' is not a valid datastore name (3 to 32 letters, digits, '_', '-', '.')")));
            }
            if !stores.insert(name.clone()) {
                return Err(self.error(
                    &store.name,
                    &field,
                    format!("datastore '{name}' is defined twice"),
                ));
            }
            check_tenant(&store.tenant, &format!("datastore[{i}].tenant"))?;
            if let Some(s3) = &store.s3 {
                if store.path.is_some() {
                    return Err(self.error(
                        &store.name,
                        &format!("datastore[{i}].path"),
                        "a datastore has either a path or an [s3] section, not both",
                    ));
                }
                storage::check_s3(s3).map_err(|(field, message, at)| {
                    self.error_at(at, &format!("datastore[{i}].s3.{field}"), message)
                })?;
            }
            if let Some(schedule) = &store.gc_schedule {
                self.check_schedule(schedule, &format!("datastore[{i}].gc_schedule"))?;
            }
            if let Some(m) = store
                .gc_atime_cutoff_minutes
                .filter(|m| !(1..=2880).contains(m))
            {
                return Err(self.error(
                    &store.name,
                    &format!("datastore[{i}].gc_atime_cutoff_minutes"),
                    format!("{m} is not 1..2880 minutes"),
                ));
            }
            if let Some(path) = &store.path {
                if !path.is_absolute() {
                    return Err(self.error(
                        &store.name,
                        &format!("datastore[{i}].path"),
                        format!("'{}' must be an absolute path", path.display()),
                    ));
                }
            }
        }
        let mut users = BTreeSet::new();
        for (i, user) in config.users.iter().enumerate() {
            let userid = user.userid.get_ref();
            let field = format!("user[{i}].userid");
            if !valid_userid(userid) {
                return Err(self.error(
                    &user.userid,
                    &field,
                    format!("'{userid}' is not a user id like name@pbs"),
                ));
            }
            if !users.insert(userid.clone()) {
                return Err(self.error(
                    &user.userid,
                    &field,
                    format!("user '{userid}' is defined twice"),
                ));
            }
            check_tenant(&user.tenant, &format!("user[{i}].tenant"))?;
            if let Some(hash) = &user.password_hash {
                if !hash.starts_with("$argon2") {
                    return Err(self.error(
                        &user.userid,
                        &format!("user[{i}].password_hash"),
                        "expected an argon2 PHC string ($argon2id$...)",
                    ));
                }
            }
        }
        for (i, token) in config.tokens.iter().enumerate() {
            let tokenid = token.tokenid.get_ref();
            let field = format!("token[{i}].tokenid");
            let Some((user, name)) = tokenid.split_once('!') else {
                return Err(self.error(
                    &token.tokenid,
                    &field,
                    format!("'{tokenid}' is not a token id like name@pbs!token"),
                ));
            };
            if !users.contains(user) {
                return Err(self.error(
                    &token.tokenid,
                    &field,
                    format!("token '{tokenid}' belongs to unknown user '{user}'"),
                ));
            }
            if !is_safe_id(name) {
                return Err(self.error(
                    &token.tokenid,
                    &field,
                    format!("'{name}' is not a valid token name"),
                ));
            }
            if !token.secret_hash.starts_with("$argon2") {
                return Err(self.error(
                    &token.tokenid,
                    &format!("token[{i}].secret_hash"),
                    "expected an argon2 PHC string ($argon2id$...)",
                ));
            }
        }
        for (i, acl) in config.acl.iter().enumerate() {
            let path = acl.path.get_ref();
            if !(path == "/" || path.starts_with("/datastore/")) {
                return Err(self.error(
                    &acl.path,
                    &format!("acl[{i}].path"),
                    format!("'{path}' is not '/' or '/datastore/<store>[/<ns>...]'"),
                ));
            }
            if !KNOWN_ROLES.contains(&acl.role.get_ref().as_str()) {
                return Err(self.error(
                    &acl.role,
                    &format!("acl[{i}].role"),
                    format!(
                        "unknown role '{}' (one of {})",
                        acl.role.get_ref(),
                        KNOWN_ROLES.join(", ")
                    ),
                ));
            }
            let authid = acl.authid.get_ref();
            let user = authid.split('!').next().unwrap_or_default();
            if !users.contains(user) {
                return Err(self.error(
                    &acl.authid,
                    &format!("acl[{i}].authid"),
                    format!("unknown user '{user}'"),
                ));
            }
        }
        if let Some(storage) = &config.storage {
            match storage.kind.get_ref().as_str() {
                "filesystem" => {}
                "s3" => {
                    let has_bucket = storage.bucket.is_some();
                    if !has_bucket {
                        return Err(self.error(
                            &storage.kind,
                            "storage.bucket",
                            "type = \"s3\" needs a bucket",
                        ));
                    }
                }
                other => {
                    return Err(self.error(
                        &storage.kind,
                        "storage.type",
                        format!("'{other}' is not 'filesystem' or 's3'"),
                    ))
                }
            }
        }
        for (i, job) in config.prune_jobs.iter().enumerate() {
            if !is_safe_id(job.id.get_ref()) {
                return Err(self.error(
                    &job.id,
                    &format!("prune_job[{i}].id"),
                    format!("'{}' is not a valid job id", job.id.get_ref()),
                ));
            }
            self.check_store_ref(config, &job.store, &format!("prune_job[{i}].store"))?;
            self.check_schedule(&job.schedule, &format!("prune_job[{i}].schedule"))?;
            for filter in &job.group_filter {
                if let Err(e) = crate::format::group_filter::GroupFilter::parse(filter) {
                    return Err(self.error(&job.id, &format!("prune_job[{i}].group_filter"), e));
                }
            }
        }
        for (i, lock) in config.retention_locks.iter().enumerate() {
            if !is_safe_id(lock.id.get_ref()) {
                return Err(self.error(
                    &lock.id,
                    &format!("retention_lock[{i}].id"),
                    format!("'{}' is not a valid lock id", lock.id.get_ref()),
                ));
            }
            self.check_store_ref(config, &lock.store, &format!("retention_lock[{i}].store"))?;
            if !LOCK_MODES.contains(&lock.mode.get_ref().as_str()) {
                return Err(self.error(
                    &lock.mode,
                    &format!("retention_lock[{i}].mode"),
                    format!(
                        "'{}' is not 'governance' or 'compliance'",
                        lock.mode.get_ref()
                    ),
                ));
            }
            if *lock.days.get_ref() == 0 {
                return Err(self.error(
                    &lock.days,
                    &format!("retention_lock[{i}].days"),
                    "must be at least 1",
                ));
            }
        }
        for (i, job) in config.verify_jobs.iter().enumerate() {
            if !is_safe_id(job.id.get_ref()) {
                return Err(self.error(
                    &job.id,
                    &format!("verify_job[{i}].id"),
                    format!("'{}' is not a valid job id", job.id.get_ref()),
                ));
            }
            self.check_store_ref(config, &job.store, &format!("verify_job[{i}].store"))?;
            self.check_schedule(&job.schedule, &format!("verify_job[{i}].schedule"))?;
            if let Some(mode) = &job.mode {
                if !VERIFY_MODES.contains(&mode.get_ref().as_str()) {
                    return Err(self.error(
                        mode,
                        &format!("verify_job[{i}].mode"),
                        format!("'{}' is not 'cheap' or 'deep'", mode.get_ref()),
                    ));
                }
            }
        }
        self.check_sync(config)?;
        if let Some(limits) = &config.upload_limits {
            limits.get_ref().check().map_err(|(field, message)| {
                self.error(limits, &format!("upload_limits.{field}"), message)
            })?;
        }
        config.limits.check().map_err(|(field, message, at)| {
            self.error_at(at, &format!("limits.{field}"), message)
        })?;
        if let Some(hook) = &config.webhook {
            let url = hook.url.get_ref();
            if !(url.starts_with("http://") || url.starts_with("https://")) {
                return Err(self.error(
                    &hook.url,
                    "webhook.url",
                    format!("'{url}' is not an http:// or https:// address"),
                ));
            }
            if let Some(schedule) = &hook.report_schedule {
                self.check_schedule(schedule, "webhook.report_schedule")?;
            }
        }
        Ok(())
    }

    fn error_at(&self, offset: usize, field: &str, message: impl Into<String>) -> ConfigError {
        ConfigError::Invalid {
            path: self.path.to_path_buf(),
            line: line_col(self.text, offset).0,
            field: field.to_string(),
            message: message.into(),
        }
    }

    /// A PBS calendar event (`daily`, `*-*-* 02:00`, ...); the error names the field.
    fn check_schedule(&self, schedule: &Spanned<String>, field: &str) -> Result<(), ConfigError> {
        crate::jobs::calendar::parse(schedule.get_ref())
            .map(|_| ())
            .map_err(|e| self.error(schedule, field, e.to_string()))
    }

    /// Remotes: unique safe names, a fingerprint; sync jobs: a known store, remote and
    /// schedule, valid namespaces, filters, owner, rate and worker count.
    fn check_sync(&self, config: &Config) -> Result<(), ConfigError> {
        let mut names = BTreeSet::new();
        for (i, remote) in config.remotes.iter().enumerate() {
            let name = remote.name.get_ref();
            if !is_safe_id(name) || !names.insert(name.as_str()) {
                return Err(self.error(
                    &remote.name,
                    &format!("remote[{i}].name"),
                    format!("'{name}' is not a valid remote name or is used twice"),
                ));
            }
            let fp = remote.fingerprint.get_ref();
            let digits: String = fp.chars().filter(|c| *c != ':').collect();
            if digits.len() != 64 || !digits.chars().all(|c| c.is_ascii_hexdigit()) {
                return Err(self.error(
                    &remote.fingerprint,
                    &format!("remote[{i}].fingerprint"),
                    format!("'{fp}' is not a SHA-256 fingerprint (32 hex bytes, ':' between)"),
                ));
            }
            let auth = remote.auth_id.get_ref();
            if !valid_userid(auth.split_once('!').map_or(auth.as_str(), |(user, _)| user)) {
                return Err(self.error(
                    &remote.auth_id,
                    &format!("remote[{i}].auth_id"),
                    format!("'{auth}' is not user@realm or user@realm!token"),
                ));
            }
        }
        for (i, job) in config.sync_jobs.iter().enumerate() {
            let at = |field: &str| format!("sync_job[{i}].{field}");
            if !is_safe_id(job.id.get_ref()) {
                return Err(self.error(
                    &job.id,
                    &at("id"),
                    format!("'{}' is not a valid job id", job.id.get_ref()),
                ));
            }
            self.check_store_ref(config, &job.store, &at("store"))?;
            self.check_schedule(&job.schedule, &at("schedule"))?;
            if !names.contains(job.remote.get_ref().as_str()) {
                return Err(self.error(
                    &job.remote,
                    &at("remote"),
                    format!("unknown remote '{}'", job.remote.get_ref()),
                ));
            }
            for (field, ns) in [("ns", &job.ns), ("remote_ns", &job.remote_ns)] {
                if let Some(text) = ns {
                    if let Err(e) = crate::format::names::BackupNamespace::parse(text) {
                        return Err(self.error(&job.id, &at(field), format!("'{text}': {e}")));
                    }
                }
            }
            for filter in &job.group_filter {
                if let Err(e) = crate::format::group_filter::GroupFilter::parse(filter) {
                    return Err(self.error(&job.id, &at("group_filter"), e));
                }
            }
            if let Some(owner) = &job.owner {
                if !valid_userid(owner.get_ref()) {
                    return Err(self.error(
                        owner,
                        &at("owner"),
                        format!("'{}' is not user@realm", owner.get_ref()),
                    ));
                }
            }
            for (field, rate) in [("rate_in", &job.rate_in), ("rate_out", &job.rate_out)] {
                if let Some(rate) = rate {
                    if let Err(e) = parse_rate(rate.get_ref()) {
                        return Err(self.error(rate, &at(field), e));
                    }
                }
            }
            if let Some(direction) = &job.direction {
                if !SYNC_DIRECTIONS.contains(&direction.get_ref().as_str()) {
                    return Err(self.error(
                        direction,
                        &at("direction"),
                        format!("'{}' is not 'pull' or 'push'", direction.get_ref()),
                    ));
                }
            }
            if let Some(threads) = &job.worker_threads {
                if !(1..=32).contains(threads.get_ref()) {
                    return Err(self.error(threads, &at("worker_threads"), "must be 1 to 32"));
                }
            }
        }
        Ok(())
    }

    fn check_store_ref(
        &self,
        config: &Config,
        store: &Spanned<String>,
        field: &str,
    ) -> Result<(), ConfigError> {
        let known = config
            .datastores
            .iter()
            .any(|d| d.name.get_ref() == store.get_ref())
            || (config.datastores.is_empty() && store.get_ref() == DEFAULT_DATASTORE);
        if known {
            Ok(())
        } else {
            Err(self.error(
                store,
                field,
                format!("unknown datastore '{}'", store.get_ref()),
            ))
        }
    }
}

/// PBS's roles (docs/protocol.md#privileges-and-roles).
pub const KNOWN_ROLES: &[&str] = &[
    "Admin",
    "DatastoreAdmin",
    "DatastoreBackup",
    "DatastorePowerUser",
    "DatastoreReader",
    "DatastoreAudit",
    "NoAccess",
];

fn valid_userid(userid: &str) -> bool {
    match userid.rsplit_once('@') {
        Some((name, realm)) => {
            !name.is_empty()
                && !name.chars().any(|c| {
                    c.is_whitespace() || c.is_control() || c == ':' || c == '/' || c == '!'
                })
                && is_safe_id(realm)
                && (2..=32).contains(&realm.len())
        }
        None => false,
    }
}

#[cfg(test)]
mod tests;
