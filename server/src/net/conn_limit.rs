//! Counting open client connections, in total and per source, so that the listener can refuse
//! a connection that would pass either limit. A source is an IPv4 address or an IPv6 /64 (the
//! smallest block a single IPv6 client usually gets); IPv4-mapped IPv6 addresses count as IPv4.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

/// Which limit a refused connection would have passed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConnectionRefusal {
    #[error("too many open connections (limit {limit})")]
    Total { limit: usize },
    #[error("too many open connections from {origin} (limit {limit})")]
    PerSource { origin: String, limit: usize },
}

/// Open connections, in total and per source.
pub struct ConnectionTracker {
    max_total: usize,
    max_per_source: usize,
    state: Mutex<Counts>,
}

#[derive(Default)]
struct Counts {
    total: usize,
    per_source: HashMap<Source, usize>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Source {
    V4(u32),
    V6Prefix(u64),
}

impl Source {
    fn of(ip: IpAddr) -> Self {
        match ip {
            IpAddr::V4(v4) => Source::V4(u32::from(v4)),
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => Source::V4(u32::from(v4)),
                None => Source::V6Prefix((u128::from(v6) >> 64) as u64),
            },
        }
    }

    fn describe(ip: IpAddr) -> String {
        match Source::of(ip) {
            Source::V4(v4) => std::net::Ipv4Addr::from(v4).to_string(),
            Source::V6Prefix(prefix) => {
                format!("{}/64", std::net::Ipv6Addr::from(u128::from(prefix) << 64))
            }
        }
    }
}

/// One counted connection; dropping it frees its place.
pub struct ConnectionSlot {
    tracker: Arc<ConnectionTracker>,
    source: Source,
}

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        let mut counts = self.tracker.lock();
        counts.total = counts.total.saturating_sub(1);
        if let Some(n) = counts.per_source.get_mut(&self.source) {
            *n -= 1;
            if *n == 0 {
                counts.per_source.remove(&self.source);
            }
        }
    }
}

/// A counted connection shared by everything that serves it: the HTTP/1.1 connection and,
/// after an upgrade, the HTTP/2 session. The place is freed when the last holder is gone.
#[derive(Clone)]
pub struct HeldSlot(#[allow(dead_code)] Arc<ConnectionSlot>);

impl HeldSlot {
    pub fn new(slot: ConnectionSlot) -> Self {
        Self(Arc::new(slot))
    }
}

impl ConnectionTracker {
    pub fn new(max_total: usize, max_per_source: usize) -> Arc<Self> {
        Arc::new(Self {
            max_total: max_total.max(1),
            max_per_source: max_per_source.max(1),
            state: Mutex::new(Counts::default()),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Counts> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Counts a new connection from `ip`, or says which limit it would pass.
    pub fn try_open(self: &Arc<Self>, ip: IpAddr) -> Result<ConnectionSlot, ConnectionRefusal> {
        let source = Source::of(ip);
        let mut counts = self.lock();
        if counts.total >= self.max_total {
            return Err(ConnectionRefusal::Total {
                limit: self.max_total,
            });
        }
        let from_source = counts.per_source.entry(source).or_insert(0);
        if *from_source >= self.max_per_source {
            return Err(ConnectionRefusal::PerSource {
                origin: Source::describe(ip),
                limit: self.max_per_source,
            });
        }
        *from_source += 1;
        counts.total += 1;
        Ok(ConnectionSlot {
            tracker: self.clone(),
            source,
        })
    }

    /// Connections open now.
    pub fn open(&self) -> usize {
        self.lock().total
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn per_source_and_total_limits() {
        let tracker = ConnectionTracker::new(6, 2);
        let a1 = tracker.try_open(ip("10.0.0.1")).unwrap();
        let _a2 = tracker.try_open(ip("10.0.0.1")).unwrap();
        assert_eq!(
            tracker.try_open(ip("10.0.0.1")).err().unwrap(),
            ConnectionRefusal::PerSource {
                origin: "10.0.0.1".into(),
                limit: 2
            }
        );
        // the same address written as IPv4-mapped IPv6 is the same source
        assert!(tracker.try_open(ip("::ffff:10.0.0.1")).is_err());
        let _b = tracker.try_open(ip("10.0.0.2")).unwrap();
        let _c1 = tracker.try_open(ip("2001:db8::1")).unwrap();
        // same /64
        let _c2 = tracker.try_open(ip("2001:db8::ffff:2")).unwrap();
        let err = tracker.try_open(ip("2001:db8::3")).err().unwrap();
        assert!(err.to_string().contains("2001:db8::/64"), "{err}");
        let _d = tracker.try_open(ip("10.0.0.3")).unwrap();
        assert_eq!(tracker.open(), 6);
        assert_eq!(
            tracker.try_open(ip("10.0.0.9")).err().unwrap(),
            ConnectionRefusal::Total { limit: 6 }
        );
        drop(a1);
        assert_eq!(tracker.open(), 5);
        let _a3 = tracker.try_open(ip("10.0.0.1")).unwrap();
        assert_eq!(tracker.open(), 6);
    }
}
