//! `AuthService`: who a request is (tickets, tokens), what it may do (ACL, tenants), and the
//! management operations the CLI and the tenants API use.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::sync::{Mutex, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use http::{HeaderMap, Method};
use serde::Serialize;

use super::acl::{self, AclEntry};
use super::credentials::{self, Credentials};
use super::hash_pool::{HashPool, HashPoolSize};
use super::ids::{Authid, Userid};
use super::password::{self, constant_time_eq};
use super::privileges::{Privileges, Role};
use super::store::{
    self, validate_tenant_id, AuthDb, AuthSeed, DbFile, Tenant, TokenRecord, UserRecord,
};
use super::ticket;
use super::AuthError;
use crate::format::names::BackupNamespace;

/// Who a request acts as.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Identity {
    pub authid: Authid,
    /// The tenant of the user (for tokens: of the owning user).
    pub tenant: String,
    /// Server operator: sees all tenants.
    pub superuser: bool,
}

/// Answer of a successful login (`POST /access/ticket`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct LoginResult {
    pub username: String,
    pub ticket: String,
    #[serde(rename = "CSRFPreventionToken")]
    pub csrf: String,
}

/// A user as listed by the management API (never includes the hash).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct UserInfo {
    pub userid: String,
    pub tenant: String,
    pub superuser: bool,
    pub comment: Option<String>,
    /// Names of the user's API tokens.
    pub tokens: Vec<String>,
}

/// Default delay before answering a failed login or authentication (anti brute force).
pub const DEFAULT_FAILURE_DELAY: Duration = Duration::from_secs(3);

/// Users, tokens, tickets, ACL and tenants.
pub struct AuthService {
    dir: PathBuf,
    ticket_key: Vec<u8>,
    csrf_key: Vec<u8>,
    /// Entries of the configuration file; replaced as a whole when the file is reloaded.
    seed: RwLock<Arc<AuthDb>>,
    db: RwLock<AuthDb>,
    file: DbFile,
    /// Per token id, SHA-256 over (stored secret hash, secret) of the last secret that
    /// verified, so that token requests skip argon2. A new or removed secret hash never
    /// matches an old entry. At most [`TOKEN_CACHE_ENTRIES`] entries.
    token_cache: Mutex<HashMap<String, Vec<u8>>>,
    /// Where every password and token-secret hash runs.
    hashes: HashPool,
    failure_delay_ms: AtomicU64,
}

/// Bound of the verified-token cache (it is emptied when full).
pub const TOKEN_CACHE_ENTRIES: usize = 4096;

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

fn sha256(data: &[u8]) -> Vec<u8> {
    crate::format::sha256(data).to_vec()
}

impl AuthService {
    /// Opens (creating if needed) the auth directory `dir` (= `<data-dir>/auth`) and merges the
    /// configuration's `seed` entries, which win over stored ones.
    pub fn open(dir: &Path, seed: AuthSeed) -> Result<Self, AuthError> {
        store::ensure_private_dir(dir)?;
        let ticket_key = store::load_or_create_key(&dir.join("ticket.key"))?;
        let csrf_key = store::load_or_create_key(&dir.join("csrf.key"))?;
        let file = DbFile::new(dir);
        let db = file.load()?;
        Ok(Self {
            dir: dir.to_path_buf(),
            ticket_key,
            csrf_key,
            seed: RwLock::new(Arc::new(seed.into_db()?)),
            db: RwLock::new(db),
            file,
            token_cache: Mutex::new(HashMap::new()),
            hashes: HashPool::new(HashPoolSize::default()),
            failure_delay_ms: AtomicU64::new(DEFAULT_FAILURE_DELAY.as_millis() as u64),
        })
    }

    /// Sizes the hash pool (before the first check; the serve command applies the config).
    pub fn set_hash_pool_size(&mut self, size: HashPoolSize) {
        self.hashes = HashPool::new(size);
    }

    /// Password and secret hashes computed so far (see `HashPool::hashes_done`).
    pub fn hashes_done(&self) -> u64 {
        self.hashes.hashes_done()
    }

    /// Sizes of the hash pool in force.
    pub fn hash_pool_size(&self) -> HashPoolSize {
        self.hashes.size()
    }

    /// The auth directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// How long the API waits before answering a failed login/authentication.
    pub fn failure_delay(&self) -> Duration {
        Duration::from_millis(self.failure_delay_ms.load(Ordering::Relaxed))
    }

    /// Changes the failure delay (tests use zero).
    pub fn set_failure_delay(&self, delay: Duration) {
        self.failure_delay_ms
            .store(delay.as_millis() as u64, Ordering::Relaxed);
    }

    fn seed(&self) -> Arc<AuthDb> {
        self.seed.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Replaces the configuration file's users, tokens, ACL entries and tenants (config
    /// reload). The new seed is validated first; on error the old one stays in force.
    pub fn replace_seed(&self, seed: AuthSeed) -> Result<(), AuthError> {
        let db = Arc::new(seed.into_db()?);
        *self.seed.write().unwrap_or_else(|p| p.into_inner()) = db;
        self.token_cache
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clear();
        Ok(())
    }

    fn read_db(&self) -> std::sync::RwLockReadGuard<'_, AuthDb> {
        self.db.read().unwrap_or_else(|p| p.into_inner())
    }

    fn user_record(&self, userid: &Userid) -> Option<UserRecord> {
        let seed = self.seed();
        if let Some(u) = seed.users.iter().find(|u| &u.userid == userid) {
            return Some(u.clone());
        }
        self.read_db()
            .users
            .iter()
            .find(|u| &u.userid == userid)
            .cloned()
    }

    fn token_record(&self, tokenid: &Authid) -> Option<TokenRecord> {
        let seed = self.seed();
        if let Some(t) = seed.tokens.iter().find(|t| &t.tokenid == tokenid) {
            return Some(t.clone());
        }
        self.read_db()
            .tokens
            .iter()
            .find(|t| &t.tokenid == tokenid)
            .cloned()
    }

    /// The identity of an existing user or token (tokens need their user to exist).
    pub fn identity_for(&self, authid: &Authid) -> Result<Identity, AuthError> {
        let user = self
            .user_record(authid.user())
            .ok_or_else(|| AuthError::UnknownUser(authid.user().to_string()))?;
        if authid.is_token() && self.token_record(authid).is_none() {
            return Err(AuthError::UnknownUser(authid.to_string()));
        }
        Ok(Identity {
            authid: authid.clone(),
            tenant: user.tenant,
            superuser: user.superuser,
        })
    }

    /// Password (or still-valid ticket) login of a user; returns a fresh ticket and CSRF token.
    pub async fn login(&self, username: &str, password: &str) -> Result<LoginResult, AuthError> {
        self.login_at(username, password, now()).await
    }

    /// Every failed password check costs one argon2 hash: against the user's hash, or against
    /// a dummy of the same cost for unknown users and users without a password, so the answer
    /// time does not tell which users exist.
    async fn login_at(
        &self,
        username: &str,
        password: &str,
        now: i64,
    ) -> Result<LoginResult, AuthError> {
        let userid: Option<Userid> = username.parse().ok();
        let user = userid.as_ref().and_then(|u| self.user_record(u));
        if let (Some(userid), Some(_)) = (&userid, &user) {
            // Ticket renewal: a still-valid ticket of the same user works as password.
            // Anything else (including a real password that merely starts with "PBS:") is a
            // password.
            let renewal = password.starts_with("PBS:")
                && ticket::verify_ticket(&self.ticket_key, password, now)
                    .map(|u| &u == userid)
                    .unwrap_or(false);
            if renewal {
                return Ok(self.issue(userid, now));
            }
        }
        let stored = user.and_then(|u| u.password_hash).map(Arc::<str>::from);
        let known = stored.is_some();
        let ok = self
            .hashes
            .verify(password, stored)
            .await
            .map_err(AuthError::from)?;
        match (ok && known, userid) {
            (true, Some(userid)) => Ok(self.issue(&userid, now)),
            _ => Err(AuthError::AuthenticationFailed),
        }
    }

    /// A fresh CSRF token for `userid` (the web console puts it into its pages, whose ticket
    /// sits in an HttpOnly cookie).
    pub fn csrf_token(&self, userid: &Userid) -> String {
        ticket::create_csrf(&self.csrf_key, userid, now())
    }

    fn issue(&self, userid: &Userid, now: i64) -> LoginResult {
        LoginResult {
            username: userid.to_string(),
            ticket: ticket::create_ticket(&self.ticket_key, userid, now),
            csrf: ticket::create_csrf(&self.csrf_key, userid, now),
        }
    }

    /// Authenticates a request by its ticket cookie (plus CSRF token for non-GET methods) or
    /// its API token header.
    pub async fn authenticate(
        &self,
        headers: &HeaderMap,
        method: &Method,
    ) -> Result<Identity, AuthError> {
        self.authenticate_at(headers, method, now()).await
    }

    async fn authenticate_at(
        &self,
        headers: &HeaderMap,
        method: &Method,
        now: i64,
    ) -> Result<Identity, AuthError> {
        match credentials::extract(headers).ok_or(AuthError::NoCredentials)? {
            Credentials::Ticket(t) => {
                let userid = ticket::verify_ticket(&self.ticket_key, &t, now)?;
                if method != Method::GET && method != Method::HEAD {
                    let csrf = headers
                        .get("CSRFPreventionToken")
                        .and_then(|v| v.to_str().ok())
                        .ok_or(AuthError::InvalidCsrf)?;
                    ticket::verify_csrf(&self.csrf_key, csrf, &userid, now)?;
                }
                self.identity_for(&Authid::from(userid))
                    .map_err(|_| AuthError::AuthenticationFailed)
            }
            Credentials::Token { tokenid, secret } => {
                let authid: Authid = tokenid
                    .parse()
                    .map_err(|_| AuthError::AuthenticationFailed)?;
                if !authid.is_token() {
                    return Err(AuthError::AuthenticationFailed);
                }
                self.verify_token_secret(&authid, &secret).await?;
                self.identity_for(&authid)
                    .map_err(|_| AuthError::AuthenticationFailed)
            }
        }
    }

    /// A cached secret costs a SHA-256; anything else one argon2 hash on the pool (a dummy one
    /// for unknown tokens, so that a wrong token id answers like a wrong secret).
    async fn verify_token_secret(&self, authid: &Authid, secret: &str) -> Result<(), AuthError> {
        let record = self.token_record(authid);
        let key = authid.to_string();
        let digest = record
            .as_ref()
            .map(|r| sha256(format!("{}\0{}", r.secret_hash, secret).as_bytes()));
        if let Some(digest) = &digest {
            let cache = self.token_cache.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(known) = cache.get(&key) {
                if constant_time_eq(known, digest) {
                    return Ok(());
                }
            }
        }
        let stored = record.map(|r| Arc::<str>::from(r.secret_hash));
        let ok = self
            .hashes
            .verify(secret, stored)
            .await
            .map_err(AuthError::from)?;
        let (true, Some(digest)) = (ok, digest) else {
            return Err(AuthError::AuthenticationFailed);
        };
        let mut cache = self.token_cache.lock().unwrap_or_else(|p| p.into_inner());
        if cache.len() >= TOKEN_CACHE_ENTRIES && !cache.contains_key(&key) {
            cache.clear();
        }
        cache.insert(key, digest);
        Ok(())
    }

    fn acl_privileges(&self, authid: &Authid, target: &[String]) -> Privileges {
        let seed = self.seed();
        let db = self.read_db();
        acl::evaluate(seed.acl.iter().chain(db.acl.iter()), authid, target)
    }

    /// True when `id` may see anything of `tenant`.
    pub fn can_see_tenant(&self, id: &Identity, tenant: &str) -> bool {
        id.superuser || id.tenant == tenant
    }

    /// Privileges of `id` on `/datastore/{store}/{ns…}`. Empty whenever the store belongs to
    /// another tenant and `id` is no superuser. A token gets its own ACL ∩ its user's.
    pub fn privileges(
        &self,
        id: &Identity,
        store: &str,
        store_tenant: &str,
        ns: &BackupNamespace,
    ) -> Privileges {
        if !self.can_see_tenant(id, store_tenant) {
            return Privileges::EMPTY;
        }
        let target = acl::datastore_path(store, ns.components());
        let user_privs = if id.superuser {
            Privileges::ALL
        } else {
            self.acl_privileges(&Authid::from(id.authid.user().clone()), &target)
        };
        if id.authid.is_token() {
            self.acl_privileges(&id.authid, &target) & user_privs
        } else {
            user_privs
        }
    }

    /// Privileges of `id` on `/` (system-wide operations such as task listing).
    pub fn root_privileges(&self, id: &Identity) -> Privileges {
        let user_privs = if id.superuser {
            Privileges::ALL
        } else {
            self.acl_privileges(&Authid::from(id.authid.user().clone()), &[])
        };
        if id.authid.is_token() {
            self.acl_privileges(&id.authid, &[]) & user_privs
        } else {
            user_privs
        }
    }

    /// Privileges of `id` at an ACL path outside the datastores (`/access`, `/system`, …),
    /// given as components: what propagates from `/`. A token gets its own ∩ its user's.
    pub fn privileges_at(&self, id: &Identity, path: &[String]) -> Privileges {
        let user_privs = if id.superuser {
            Privileges::ALL
        } else {
            self.acl_privileges(&Authid::from(id.authid.user().clone()), path)
        };
        if id.authid.is_token() {
            self.acl_privileges(&id.authid, path) & user_privs
        } else {
            user_privs
        }
    }

    /// ACL paths that carry an entry for `authid` itself (configured and stored), sorted.
    pub fn acl_paths_of(&self, authid: &Authid) -> Vec<String> {
        let seed = self.seed();
        let db = self.read_db();
        let mut paths: Vec<String> = seed
            .acl
            .iter()
            .chain(db.acl.iter())
            .filter(|e| &e.authid == authid)
            .map(|e| e.path.clone())
            .collect();
        paths.sort();
        paths.dedup();
        paths
    }

    /// Whether a datastore appears in `id`'s listing (see [`super::scope`]).
    pub fn store_visible(&self, id: &Identity, store: &str, store_tenant: &str) -> bool {
        self.scope(id).store(store, store_tenant).listed()
    }

    /// True when `authid` itself has a non-`NoAccess` entry at or below `/datastore/{store}`.
    pub(super) fn has_acl_entry_below(&self, authid: &Authid, store: &str) -> bool {
        let seed = self.seed();
        let db = self.read_db();
        acl::has_entry_below(seed.acl.iter().chain(db.acl.iter()), authid, store)
    }

    // ----- management -----

    fn modify<R>(
        &self,
        f: impl FnOnce(&mut AuthDb) -> Result<R, AuthError>,
    ) -> Result<R, AuthError> {
        let mut db = self.db.write().unwrap_or_else(|p| p.into_inner());
        let mut next = db.clone();
        let result = f(&mut next)?;
        self.file.save(&next)?;
        *db = next;
        Ok(result)
    }

    /// All tenants (configured and stored), sorted by id.
    pub fn tenants(&self) -> Vec<Tenant> {
        let seed = self.seed();
        let mut out = seed.tenants.clone();
        for t in &self.read_db().tenants {
            if !out.iter().any(|o| o.id == t.id) {
                out.push(t.clone());
            }
        }
        out.sort_by(|a, b| a.id.cmp(&b.id));
        out
    }

    pub fn tenant_exists(&self, id: &str) -> bool {
        self.tenants().iter().any(|t| t.id == id)
    }

    /// Creates a tenant if it does not exist yet (an existing one keeps its comment).
    /// Returns true when it was created.
    pub fn ensure_tenant(&self, id: &str, comment: Option<&str>) -> Result<bool, AuthError> {
        validate_tenant_id(id)?;
        if self.tenant_exists(id) {
            return Ok(false);
        }
        self.modify(|db| {
            db.tenants.push(Tenant {
                id: id.to_string(),
                comment: comment.map(str::to_string),
            });
            Ok(true)
        })
    }

    /// Adds a user with a password to an existing tenant.
    pub fn add_user(
        &self,
        userid: &str,
        tenant: &str,
        password: &str,
        superuser: bool,
    ) -> Result<(), AuthError> {
        let userid: Userid = userid.parse()?;
        if !self.tenant_exists(tenant) {
            return Err(AuthError::UnknownTenant(tenant.to_string()));
        }
        if self.user_record(&userid).is_some() {
            return Err(AuthError::AlreadyExists(format!("user '{userid}'")));
        }
        let hash = password::hash_password(password)?;
        self.modify(|db| {
            db.users.push(UserRecord {
                userid,
                tenant: tenant.to_string(),
                password_hash: Some(hash),
                superuser,
                comment: None,
            });
            Ok(())
        })
    }

    /// Sets or clears a stored user's comment (configured users are read-only).
    pub fn set_user_comment(&self, userid: &str, comment: Option<&str>) -> Result<(), AuthError> {
        let userid: Userid = userid.parse()?;
        if self.seed().users.iter().any(|u| u.userid == userid) {
            return Err(AuthError::ReadOnly(format!("user '{userid}'")));
        }
        self.modify(|db| {
            let user = db
                .users
                .iter_mut()
                .find(|u| u.userid == userid)
                .ok_or_else(|| AuthError::UnknownUser(userid.to_string()))?;
            user.comment = comment.filter(|c| !c.is_empty()).map(str::to_string);
            Ok(())
        })
    }

    /// Replaces a stored user's password (configured users are read-only).
    pub fn set_password(&self, userid: &str, password: &str) -> Result<(), AuthError> {
        let seed = self.seed();
        let userid: Userid = userid.parse()?;
        if seed.users.iter().any(|u| u.userid == userid) {
            return Err(AuthError::ReadOnly(format!("user '{userid}'")));
        }
        let hash = password::hash_password(password)?;
        self.modify(|db| {
            let user = db
                .users
                .iter_mut()
                .find(|u| u.userid == userid)
                .ok_or_else(|| AuthError::UnknownUser(userid.to_string()))?;
            user.password_hash = Some(hash);
            Ok(())
        })
    }

    /// Creates an API token for an existing user; returns its secret (shown once).
    pub fn add_token(&self, tokenid: &str) -> Result<String, AuthError> {
        self.add_token_with_comment(tokenid, None)
    }

    /// [`add_token`](Self::add_token) keeping a comment with the token.
    pub fn add_token_with_comment(
        &self,
        tokenid: &str,
        comment: Option<&str>,
    ) -> Result<String, AuthError> {
        let tokenid: Authid = tokenid.parse()?;
        if !tokenid.is_token() {
            return Err(AuthError::Invalid(format!(
                "'{tokenid}' is not a token id (user@realm!name)"
            )));
        }
        if self.user_record(tokenid.user()).is_none() {
            return Err(AuthError::UnknownUser(tokenid.user().to_string()));
        }
        if self.token_record(&tokenid).is_some() {
            return Err(AuthError::AlreadyExists(format!("token '{tokenid}'")));
        }
        let secret = password::generate_secret()?;
        let secret_hash = password::hash_password(&secret)?;
        self.modify(|db| {
            db.tokens.push(TokenRecord {
                tokenid,
                secret_hash,
                comment: comment.map(str::to_string),
            });
            Ok(())
        })?;
        Ok(secret)
    }

    /// Adds (propagating) ACL entry `role` for `authid` on `path`; duplicates are ignored.
    pub fn add_acl(&self, path: &str, authid: &str, role: &str) -> Result<(), AuthError> {
        let entry = AclEntry {
            path: acl::normalize_path(path)?,
            authid: authid.parse()?,
            role: role.parse::<Role>()?,
            propagate: true,
        };
        self.modify(|db| {
            if !db.acl.contains(&entry) {
                db.acl.push(entry);
            }
            Ok(())
        })
    }

    /// Removes ACL entry `role` for `authid` on `path`; true when there was one.
    pub fn remove_acl(&self, path: &str, authid: &str, role: &str) -> Result<bool, AuthError> {
        let path = acl::normalize_path(path)?;
        let authid: Authid = authid.parse()?;
        let role = role.parse::<Role>()?;
        self.modify(|db| {
            let before = db.acl.len();
            db.acl
                .retain(|e| !(e.path == path && e.authid == authid && e.role == role));
            Ok(db.acl.len() != before)
        })
    }

    /// Adds an ACL entry with an explicit `propagate` flag; duplicates are ignored.
    pub fn add_acl_entry(
        &self,
        path: &str,
        authid: &str,
        role: &str,
        propagate: bool,
    ) -> Result<(), AuthError> {
        let entry = AclEntry {
            path: acl::normalize_path(path)?,
            authid: authid.parse()?,
            role: role.parse::<Role>()?,
            propagate,
        };
        self.modify(|db| {
            db.acl.retain(|e| {
                !(e.path == entry.path && e.authid == entry.authid && e.role == entry.role)
            });
            db.acl.push(entry);
            Ok(())
        })
    }

    /// The tenant of a user or of a token's user, if the user exists.
    pub fn tenant_of(&self, authid: &Authid) -> Option<String> {
        self.user_record(authid.user()).map(|u| u.tenant)
    }

    /// True when at least one user exists (first-start bootstrap check).
    pub fn has_users(&self) -> bool {
        let seed = self.seed();
        !seed.users.is_empty() || !self.read_db().users.is_empty()
    }

    /// Users, optionally only those of `tenant`, configured ones first, then in order of creation.
    pub fn list_users(&self, tenant: Option<&str>) -> Vec<UserInfo> {
        let seed = self.seed();
        let db = self.read_db();
        let mut users: Vec<&UserRecord> = seed.users.iter().collect();
        for u in &db.users {
            if !users.iter().any(|o| o.userid == u.userid) {
                users.push(u);
            }
        }
        let tokens: Vec<&TokenRecord> = seed.tokens.iter().chain(db.tokens.iter()).collect();
        // in the order they were made (configured users first), as PBS lists its user config
        users
            .into_iter()
            .filter(|u| tenant.is_none_or(|t| u.tenant == t))
            .map(|u| {
                let mut names: Vec<String> = tokens
                    .iter()
                    .filter(|t| t.tokenid.user() == &u.userid)
                    .filter_map(|t| t.tokenid.token_name().map(str::to_string))
                    .collect();
                names.sort();
                names.dedup();
                UserInfo {
                    userid: u.userid.to_string(),
                    tenant: u.tenant.clone(),
                    superuser: u.superuser,
                    comment: u.comment.clone(),
                    tokens: names,
                }
            })
            .collect()
    }
}

/// docs/protocol.md#group-ownership: `owner` is `authid` itself, or a token of the user `authid`. A
/// token does not inherit its user's groups.
pub fn owner_matches(authid: &Authid, owner: &str) -> bool {
    let Ok(owner) = owner.trim().parse::<Authid>() else {
        return false;
    };
    if &owner == authid {
        return true;
    }
    owner.is_token() && !authid.is_token() && owner.user() == authid.user()
}

#[cfg(test)]
#[path = "service_tests.rs"]
mod tests;
