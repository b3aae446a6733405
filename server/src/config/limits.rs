//! `[limits]`: what one client may cost the server at its network edge and in authentication.
//! Every field is optional; absent ones keep the defaults derived at start (see
//! `net::limits::EdgeLimits` and `auth::hash_pool::HashPoolSize`). Read at start only.

use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

use crate::auth::hash_pool::HashPoolSize;
use crate::net::limits::EdgeLimits;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitsConfig {
    /// Seconds from accept to a finished TLS handshake (default 10, as PBS).
    pub tls_handshake_timeout_secs: Option<Spanned<u64>>,
    /// Seconds a request head may take; also how long an idle keep-alive connection is kept
    /// (default 30).
    pub header_read_timeout_secs: Option<Spanned<u64>>,
    /// Longest pause in seconds between two pieces of a REST request body (default 60).
    pub body_read_timeout_secs: Option<Spanned<u64>>,
    /// Seconds of silence after which a backup/reader session is sent a PING (default 60;
    /// 0 turns it off).
    pub session_keepalive_secs: Option<Spanned<u64>>,
    /// Seconds a session PING may stay unanswered before the session is closed (default 60).
    pub session_keepalive_timeout_secs: Option<Spanned<u64>>,
    /// Client connections open at once (default: from the open-file limit, at most 4096).
    pub max_connections: Option<Spanned<usize>>,
    /// Client connections open at once from one IPv4 address or IPv6 /64 (default: an eighth
    /// of `max_connections`, 16 to 256).
    pub max_connections_per_source: Option<Spanned<usize>>,
    /// Password and token-secret hashes computed at once (default: CPUs, 1 to 4).
    pub auth_hash_workers: Option<Spanned<usize>>,
    /// Credential checks waiting for a hash worker; more are refused with 503 (default 32 per
    /// worker).
    pub auth_hash_queue: Option<Spanned<usize>>,
}

/// A bad value: (field, message, byte offset in the file).
pub type LimitError = (&'static str, String, usize);

fn in_range<T: PartialOrd + Copy + std::fmt::Display>(
    value: &Option<Spanned<T>>,
    field: &'static str,
    min: T,
    max: T,
) -> Result<(), LimitError> {
    match value {
        Some(v) if *v.get_ref() < min || *v.get_ref() > max => Err((
            field,
            format!("{} is not in {min}..={max}", v.get_ref()),
            v.span().start,
        )),
        _ => Ok(()),
    }
}

impl LimitsConfig {
    /// Checks every given value.
    pub fn check(&self) -> Result<(), LimitError> {
        const DAY: u64 = 86_400;
        in_range(
            &self.tls_handshake_timeout_secs,
            "tls_handshake_timeout_secs",
            1,
            600,
        )?;
        in_range(
            &self.header_read_timeout_secs,
            "header_read_timeout_secs",
            1,
            3600,
        )?;
        in_range(
            &self.body_read_timeout_secs,
            "body_read_timeout_secs",
            1,
            3600,
        )?;
        in_range(
            &self.session_keepalive_secs,
            "session_keepalive_secs",
            0,
            DAY,
        )?;
        in_range(
            &self.session_keepalive_timeout_secs,
            "session_keepalive_timeout_secs",
            1,
            3600,
        )?;
        in_range(&self.max_connections, "max_connections", 1, 1 << 20)?;
        in_range(
            &self.max_connections_per_source,
            "max_connections_per_source",
            1,
            1 << 20,
        )?;
        in_range(&self.auth_hash_workers, "auth_hash_workers", 1, 64)?;
        in_range(&self.auth_hash_queue, "auth_hash_queue", 0, 100_000)?;
        Ok(())
    }

    /// `base` with the configured values in place of its own.
    pub fn edge_limits(&self, base: EdgeLimits) -> EdgeLimits {
        let secs = |v: &Option<Spanned<u64>>| v.as_ref().map(|v| Duration::from_secs(*v.get_ref()));
        let count = |v: &Option<Spanned<usize>>| v.as_ref().map(|v| *v.get_ref());
        EdgeLimits {
            tls_handshake_timeout: secs(&self.tls_handshake_timeout_secs)
                .unwrap_or(base.tls_handshake_timeout),
            header_read_timeout: secs(&self.header_read_timeout_secs)
                .unwrap_or(base.header_read_timeout),
            body_read_timeout: secs(&self.body_read_timeout_secs).unwrap_or(base.body_read_timeout),
            session_keepalive: match secs(&self.session_keepalive_secs) {
                Some(d) if d.is_zero() => None,
                Some(d) => Some(d),
                None => base.session_keepalive,
            },
            session_keepalive_timeout: secs(&self.session_keepalive_timeout_secs)
                .unwrap_or(base.session_keepalive_timeout),
            max_connections: count(&self.max_connections).unwrap_or(base.max_connections),
            max_connections_per_source: count(&self.max_connections_per_source)
                .unwrap_or(base.max_connections_per_source),
        }
    }

    /// The hash pool's sizes: configured, or the defaults.
    pub fn hash_pool(&self) -> HashPoolSize {
        let base = HashPoolSize::default();
        let workers = self
            .auth_hash_workers
            .as_ref()
            .map(|v| *v.get_ref())
            .unwrap_or(base.workers);
        HashPoolSize {
            workers,
            queue: self
                .auth_hash_queue
                .as_ref()
                .map(|v| *v.get_ref())
                .unwrap_or(workers * 32),
        }
    }
}
