//! What one client may cost the HTTP edge: timeouts on every connection and the number of
//! connections in total and per source. Defaults follow PBS where PBS has a value (10 s TLS
//! handshake, 120 s TCP keepalive) and are chosen so that no legitimate client is cut: the stock
//! client sends a request head in one write, waits up to 120 s for an answer, and keeps a busy
//! HTTP/2 backup session streaming. The connection limits derive from the process's open-file
//! limit so that the server refuses politely long before `accept` would fail.

use std::time::Duration;

/// File descriptors kept free for everything that is not a client connection: datastore files,
/// S3 connections, logs, the refusal path.
const RESERVED_FDS: u64 = 128;
/// Upper bound of the derived total (each connection costs ~64 KiB of TLS and HTTP buffers).
const MAX_DERIVED_CONNECTIONS: usize = 4096;

/// Connection timeouts and limits in force.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EdgeLimits {
    /// From accept to a finished TLS handshake (PBS: 10 s).
    pub tls_handshake_timeout: Duration,
    /// From the first byte a request head is awaited to its last byte; it also closes an idle
    /// keep-alive connection after this long without a new request.
    pub header_read_timeout: Duration,
    /// Longest pause between two pieces of a request body (REST requests; session uploads
    /// are paced by HTTP/2 flow control and the keep-alive below).
    pub body_read_timeout: Duration,
    /// After this long without a frame from the client, an HTTP/2 backup or reader session is
    /// sent a PING; `None` turns it off.
    pub session_keepalive: Option<Duration>,
    /// How long the PING may stay unanswered before the session is closed.
    pub session_keepalive_timeout: Duration,
    /// Client connections open at once (TLS handshakes included).
    pub max_connections: usize,
    /// Client connections open at once from one source (an IPv4 address, or an IPv6 /64).
    pub max_connections_per_source: usize,
}

impl Default for EdgeLimits {
    /// Defaults for the open-file limit this process has now.
    fn default() -> Self {
        Self::for_open_file_limit(open_file_limit())
    }
}

impl EdgeLimits {
    /// Defaults for a process that may open `nofile` files: half of what is left after a
    /// reserve serves clients (the other half is for the S3 and file work those clients cause),
    /// at most 4096; one source may hold an eighth of that, between 16 and 256.
    pub fn for_open_file_limit(nofile: u64) -> Self {
        let usable = nofile.saturating_sub(RESERVED_FDS) / 2;
        let max_connections = (usable as usize).clamp(16, MAX_DERIVED_CONNECTIONS);
        Self {
            tls_handshake_timeout: Duration::from_secs(10),
            header_read_timeout: Duration::from_secs(30),
            body_read_timeout: Duration::from_secs(60),
            session_keepalive: Some(Duration::from_secs(60)),
            session_keepalive_timeout: Duration::from_secs(60),
            max_connections,
            max_connections_per_source: (max_connections / 8).clamp(16, 256),
        }
    }
}

/// The soft limit of open files (RLIMIT_NOFILE), 1024 when it cannot be read.
pub fn open_file_limit() -> u64 {
    let limit = rustix::process::getrlimit(rustix::process::Resource::Nofile);
    limit.current.unwrap_or(u64::MAX).clamp(64, 1 << 20)
}

/// Raises the soft open-file limit to the hard one (as most servers do at start) and returns
/// the limit in force afterwards.
pub fn raise_open_file_limit() -> u64 {
    use rustix::process::{getrlimit, setrlimit, Resource, Rlimit};
    let limit = getrlimit(Resource::Nofile);
    if limit.current != limit.maximum {
        let raised = Rlimit {
            current: limit.maximum,
            maximum: limit.maximum,
        };
        if let Err(err) = setrlimit(Resource::Nofile, raised) {
            tracing::debug!("unable to raise the open-file limit: {err}");
        }
    }
    open_file_limit()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_follow_the_open_file_limit() {
        let small = EdgeLimits::for_open_file_limit(1024);
        assert_eq!(small.max_connections, 448);
        assert_eq!(small.max_connections_per_source, 56);
        // far below the fd limit even with every connection and the reserve in use
        assert!(small.max_connections as u64 + RESERVED_FDS < 1024);

        let tiny = EdgeLimits::for_open_file_limit(100);
        assert_eq!(tiny.max_connections, 16);
        assert_eq!(tiny.max_connections_per_source, 16);

        let large = EdgeLimits::for_open_file_limit(1 << 20);
        assert_eq!(large.max_connections, MAX_DERIVED_CONNECTIONS);
        assert_eq!(large.max_connections_per_source, 256);
    }

    #[test]
    fn timeouts_leave_room_for_the_stock_client() {
        let limits = EdgeLimits::for_open_file_limit(1024);
        assert_eq!(limits.tls_handshake_timeout, Duration::from_secs(10));
        // a quiet session is pinged, not cut: only an unanswered PING ends it
        assert!(limits.session_keepalive.is_some());
        assert!(limits.session_keepalive_timeout >= Duration::from_secs(30));
    }
}
