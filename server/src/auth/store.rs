//! The user database: tenants, users, tokens and ACL entries, persisted as `users.json` in the
//! auth directory, plus the seed entries that come from the configuration file. Files are 0600
//! inside a 0700 directory and written atomically (temp file + fsync + rename).

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::acl::{normalize_path, AclEntry};
use super::ids::{is_safe_id, Authid, Userid};
use super::password;
use super::AuthError;

/// A tenant: the unit of isolation (docs/design.md#tenants).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tenant {
    pub id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comment: Option<String>,
}

/// A stored user.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserRecord {
    pub userid: Userid,
    pub tenant: String,
    /// argon2 PHC string; `None` = no password login (tokens only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_hash: Option<String>,
    /// Server operator: sees every tenant and has every privilege.
    #[serde(default)]
    pub superuser: bool,
    /// Free text shown in the user list (PBS's `comment`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comment: Option<String>,
}

/// A stored API token (only the hash of its secret).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenRecord {
    pub tokenid: Authid,
    pub secret_hash: String,
    /// Free text given when the token was created through the API.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comment: Option<String>,
}

/// Everything the auth layer stores.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuthDb {
    #[serde(default)]
    pub tenants: Vec<Tenant>,
    #[serde(default)]
    pub users: Vec<UserRecord>,
    #[serde(default)]
    pub tokens: Vec<TokenRecord>,
    #[serde(default)]
    pub acl: Vec<AclEntry>,
}

/// A tenant declared in the configuration file.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TenantSpec {
    pub id: String,
    #[serde(default)]
    pub comment: Option<String>,
}

/// A user declared in the configuration file.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserSpec {
    pub userid: String,
    pub tenant: String,
    #[serde(default)]
    pub password_hash: Option<String>,
    #[serde(default)]
    pub superuser: bool,
}

/// An API token declared in the configuration file (secret given as a hash).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenSpec {
    pub tokenid: String,
    pub secret_hash: String,
}

/// An ACL entry declared in the configuration file (always propagating).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AclSpec {
    pub path: String,
    pub authid: String,
    pub role: String,
}

/// Read-only entries from the configuration file; on conflict they win over stored entries.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuthSeed {
    #[serde(default)]
    pub tenants: Vec<TenantSpec>,
    #[serde(default)]
    pub users: Vec<UserSpec>,
    #[serde(default)]
    pub tokens: Vec<TokenSpec>,
    #[serde(default)]
    pub acl: Vec<AclSpec>,
}

/// Checks a tenant id (safe-id, 1-64 chars).
pub fn validate_tenant_id(id: &str) -> Result<(), AuthError> {
    if id.len() > 64 || !is_safe_id(id) {
        return Err(AuthError::Invalid(format!(
            "invalid tenant id '{id}': must be a safe-id of at most 64 characters"
        )));
    }
    Ok(())
}

fn check_hash(what: &str, hash: &str) -> Result<(), AuthError> {
    if password::is_valid_hash(hash) {
        Ok(())
    } else {
        Err(AuthError::Invalid(format!(
            "{what}: hash is not a PHC string (use `hash-password` to create one)"
        )))
    }
}

impl AuthSeed {
    /// Validates the seed and converts it to database records.
    pub fn into_db(self) -> Result<AuthDb, AuthError> {
        let mut db = AuthDb::default();
        for t in self.tenants {
            validate_tenant_id(&t.id)?;
            db.tenants.push(Tenant {
                id: t.id,
                comment: t.comment,
            });
        }
        for u in self.users {
            let userid: Userid = u.userid.parse()?;
            validate_tenant_id(&u.tenant)?;
            if let Some(hash) = &u.password_hash {
                check_hash(&format!("user '{userid}'"), hash)?;
            }
            db.users.push(UserRecord {
                userid,
                tenant: u.tenant,
                password_hash: u.password_hash,
                superuser: u.superuser,
                comment: None,
            });
        }
        for t in self.tokens {
            let tokenid: Authid = t.tokenid.parse()?;
            if !tokenid.is_token() {
                return Err(AuthError::Invalid(format!(
                    "token id '{tokenid}' lacks '!<token name>'"
                )));
            }
            check_hash(&format!("token '{tokenid}'"), &t.secret_hash)?;
            db.tokens.push(TokenRecord {
                tokenid,
                secret_hash: t.secret_hash,
                comment: None,
            });
        }
        for a in self.acl {
            db.acl.push(AclEntry {
                path: normalize_path(&a.path)?,
                authid: a.authid.parse()?,
                role: a.role.parse()?,
                propagate: true,
            });
        }
        Ok(db)
    }
}

fn io_err(path: &Path, source: std::io::Error) -> AuthError {
    AuthError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Creates `dir` with mode 0700 (and tightens an existing one).
pub fn ensure_private_dir(dir: &Path) -> Result<(), AuthError> {
    std::fs::create_dir_all(dir).map_err(|e| io_err(dir, e))?;
    set_mode(dir, 0o700)
}

#[cfg(unix)]
fn set_mode(path: &Path, mode: u32) -> Result<(), AuthError> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .map_err(|e| io_err(path, e))
}

#[cfg(not(unix))]
fn set_mode(_path: &Path, _mode: u32) -> Result<(), AuthError> {
    Ok(())
}

/// Writes `data` to `path` atomically with mode 0600.
pub fn write_private_file(path: &Path, data: &[u8]) -> Result<(), AuthError> {
    crate::backend::local::write_private_file(path, data).map_err(|e| io_err(path, e))
}

/// Reads a key file, creating it with 32 random bytes if it does not exist.
pub fn load_or_create_key(path: &Path) -> Result<Vec<u8>, AuthError> {
    match std::fs::read(path) {
        Ok(key) if key.len() >= 32 => Ok(key),
        Ok(_) => Err(AuthError::Invalid(format!(
            "key file '{}' is shorter than 32 bytes",
            path.display()
        ))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let mut key = vec![0u8; 32];
            password::random_bytes(&mut key)?;
            write_private_file(path, &key)?;
            Ok(key)
        }
        Err(e) => Err(io_err(path, e)),
    }
}

/// `users.json` inside the auth directory.
pub struct DbFile {
    path: PathBuf,
}

impl DbFile {
    pub fn new(dir: &Path) -> Self {
        Self {
            path: dir.join("users.json"),
        }
    }

    /// Loads the stored database (empty if the file does not exist yet).
    pub fn load(&self) -> Result<AuthDb, AuthError> {
        match std::fs::read(&self.path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| {
                AuthError::Invalid(format!("cannot parse '{}': {e}", self.path.display()))
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(AuthDb::default()),
            Err(e) => Err(io_err(&self.path, e)),
        }
    }

    pub fn save(&self, db: &AuthDb) -> Result<(), AuthError> {
        let bytes = serde_json::to_vec_pretty(db)
            .map_err(|e| AuthError::Invalid(format!("cannot serialise user database: {e}")))?;
        write_private_file(&self.path, &bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seed_validation() {
        let hash = password::hash_password("pw").unwrap();
        let seed = AuthSeed {
            tenants: vec![TenantSpec {
                id: "acme".into(),
                comment: None,
            }],
            users: vec![UserSpec {
                userid: "admin@pbs".into(),
                tenant: "acme".into(),
                password_hash: Some(hash.clone()),
                superuser: false,
            }],
            tokens: vec![TokenSpec {
                tokenid: "admin@pbs!ci".into(),
                secret_hash: hash,
            }],
            acl: vec![AclSpec {
                path: "/datastore/s1".into(),
                authid: "admin@pbs!ci".into(),
                role: "DatastoreBackup".into(),
            }],
        };
        let db = seed.clone().into_db().unwrap();
        assert_eq!(db.users.len(), 1);
        assert!(db.acl[0].propagate);
        let mut bad = seed.clone();
        bad.users[0].password_hash = Some("plain".into());
        assert!(bad.into_db().is_err());
        let mut bad = seed.clone();
        bad.tokens[0].tokenid = "admin@pbs".into();
        assert!(bad.into_db().is_err());
        let mut bad = seed;
        bad.tenants[0].id = "a/b".into();
        assert!(bad.into_db().is_err());
    }

    #[test]
    fn db_roundtrip_with_private_modes() {
        let dir = tempfile::tempdir().unwrap();
        let auth = dir.path().join("auth");
        ensure_private_dir(&auth).unwrap();
        let file = DbFile::new(&auth);
        assert_eq!(file.load().unwrap(), AuthDb::default());
        let mut db = AuthDb::default();
        db.tenants.push(Tenant {
            id: "t1".into(),
            comment: Some("first".into()),
        });
        file.save(&db).unwrap();
        assert_eq!(file.load().unwrap(), db);
        let key = load_or_create_key(&auth.join("ticket.key")).unwrap();
        assert_eq!(key.len(), 32);
        assert_eq!(load_or_create_key(&auth.join("ticket.key")).unwrap(), key);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode(&auth), 0o700);
            assert_eq!(mode(&auth.join("users.json")), 0o600);
            assert_eq!(mode(&auth.join("ticket.key")), 0o600);
        }
    }
}
