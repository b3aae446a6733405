//! Repository strings `[[auth-id@]host[:port]:]datastore`
//! (server/docs/protocol.md#repository-strings) and the environment variables the stock client
//! reads.

use crate::error::{ClientError, Result};

/// A parsed backup repository, with the stock client's defaults filled in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Repository {
    /// `user@realm` or a token id `user@realm!name`.
    pub auth_id: String,
    /// Host name, IPv4 literal or IPv6 literal (without brackets).
    pub host: String,
    pub port: u16,
    pub store: String,
}

impl Repository {
    /// Parses a repository string; defaults: host `localhost`, port 8007, auth-id `root@pam`.
    pub fn parse(s: &str) -> Result<Repository> {
        let bad = |why: &str| ClientError::Input(format!("invalid repository '{s}': {why}"));
        let s_trim = s.trim();
        let (prefix, store) = match s_trim.rfind(':') {
            Some(pos) => (Some(&s_trim[..pos]), &s_trim[pos + 1..]),
            None => (None, s_trim),
        };
        if store.is_empty() {
            return Err(bad("missing datastore"));
        }
        let mut repo = Repository {
            auth_id: "root@pam".to_string(),
            host: "localhost".to_string(),
            port: 8007,
            store: store.to_string(),
        };
        let Some(prefix) = prefix else {
            return Ok(repo);
        };
        let host_part = match prefix.rfind('@') {
            Some(pos) => {
                // the last '@' separates the auth-id (token ids contain one '@' too)
                repo.auth_id = prefix[..pos].to_string();
                &prefix[pos + 1..]
            }
            _ => prefix,
        };
        if repo.auth_id.is_empty() || !repo.auth_id.contains('@') {
            return Err(bad("auth-id must look like user@realm"));
        }
        let (host, port) = if let Some(rest) = host_part.strip_prefix('[') {
            let end = rest.find(']').ok_or_else(|| bad("unterminated '['"))?;
            let host = &rest[..end];
            let after = &rest[end + 1..];
            let port = match after.strip_prefix(':') {
                Some(p) => Some(p),
                None if after.is_empty() => None,
                None => return Err(bad("garbage after IPv6 host")),
            };
            (host, port)
        } else {
            match host_part.split_once(':') {
                Some((h, p)) => (h, Some(p)),
                None => (host_part, None),
            }
        };
        if host.is_empty() {
            return Err(bad("empty host"));
        }
        repo.host = host.to_string();
        if let Some(p) = port {
            repo.port = p
                .parse()
                .map_err(|_| bad("port is not a number 0..65535"))?;
        }
        Ok(repo)
    }

    /// Whether the auth id is an API token (`user@realm!name`).
    pub fn is_token(&self) -> bool {
        self.auth_id.contains('!')
    }

    /// Host as it goes into URLs and `Host` headers (IPv6 in brackets).
    pub fn host_for_url(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        }
    }
}

impl std::fmt::Display for Repository {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}@{}:{}:{}",
            self.auth_id,
            self.host_for_url(),
            self.port,
            self.store
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_variants() {
        let r = Repository::parse("store1").unwrap();
        assert_eq!(
            (
                r.auth_id.as_str(),
                r.host.as_str(),
                r.port,
                r.store.as_str()
            ),
            ("root@pam", "localhost", 8007, "store1")
        );
        let r = Repository::parse("admin@pbs@127.0.0.1:8443:store1").unwrap();
        assert_eq!(
            (
                r.auth_id.as_str(),
                r.host.as_str(),
                r.port,
                r.store.as_str()
            ),
            ("admin@pbs", "127.0.0.1", 8443, "store1")
        );
        let r = Repository::parse("host.example:st").unwrap();
        assert_eq!((r.host.as_str(), r.port), ("host.example", 8007));
        let r = Repository::parse("a@pbs!tok@[::1]:9000:st").unwrap();
        assert_eq!(
            (r.auth_id.as_str(), r.host.as_str(), r.port),
            ("a@pbs!tok", "::1", 9000)
        );
        assert!(r.is_token());
        assert_eq!(r.to_string(), "a@pbs!tok@[::1]:9000:st");
        let r = Repository::parse("root@pam@[fe80::1]:st").unwrap();
        assert_eq!((r.host.as_str(), r.port), ("fe80::1", 8007));
        assert!(Repository::parse("host:notaport:st").is_err());
        assert!(Repository::parse("host:").is_err());
        assert!(Repository::parse("nouser@:st").is_err());
    }
}
