//! Authentication and authorisation: users and API tokens grouped into tenants, PBS-shaped
//! tickets and CSRF tokens, and ACL roles mapped to privileges (docs/protocol.md#authentication,
//! #privileges-and-roles; docs/design.md#tenants). Nothing here knows about HTTP routing; the API
//! layer turns [`AuthError`] into status codes.

pub mod acl;
pub mod credentials;
pub mod hash_pool;
pub mod ids;
pub mod password;
pub mod privileges;
pub mod scope;
pub mod service;
pub mod store;
pub mod ticket;

use std::path::PathBuf;

pub use ids::{Authid, Userid};
pub use password::{generate_secret, hash_password};
pub use privileges::{Privileges, Role};
pub use scope::{GroupAccess, Scope, StoreScope};
pub use service::{owner_matches, AuthService, Identity, LoginResult, UserInfo};
pub use store::{AclSpec, AuthSeed, Tenant, TenantSpec, TokenSpec, UserSpec};

/// Errors of the auth layer.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// Generic answer for any failed login or credential check (no detail leaks to callers).
    #[error("authentication failed")]
    AuthenticationFailed,
    /// The bounded hash pool is full or stopped: the check did not run (HTTP 503).
    #[error("{0}")]
    Unavailable(#[from] hash_pool::HashPoolError),
    #[error("no credentials (ticket cookie or API token) presented")]
    NoCredentials,
    #[error("invalid ticket: {0}")]
    InvalidTicket(String),
    #[error("missing or invalid CSRF prevention token")]
    InvalidCsrf,
    #[error("invalid id '{id}': {reason}")]
    InvalidId { id: String, reason: String },
    #[error("no such user or token '{0}'")]
    UnknownUser(String),
    #[error("no such tenant '{0}'")]
    UnknownTenant(String),
    #[error("{0} already exists")]
    AlreadyExists(String),
    #[error("{0} comes from the configuration file and cannot be changed here")]
    ReadOnly(String),
    #[error("{0}")]
    Invalid(String),
    #[error("I/O error on '{path}': {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

impl AuthError {
    /// True for errors that mean "the caller is not who it claims" (HTTP 401).
    pub fn is_unauthorized(&self) -> bool {
        matches!(
            self,
            AuthError::AuthenticationFailed
                | AuthError::NoCredentials
                | AuthError::InvalidTicket(_)
                | AuthError::InvalidCsrf
        )
    }
}
