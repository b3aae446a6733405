//! User and API-token identifiers (docs/protocol.md#identities). They travel as plain strings in
//! tickets, headers, owner files and UPIDs, so parsing is strict and `Display` round-trips exactly.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::AuthError;

/// Longest userid / token id we accept (keeps owner files and UPIDs small).
const MAX_ID_LEN: usize = 128;

/// PBS safe-ids (`[A-Za-z0-9_][A-Za-z0-9._-]*`), the same rule as for backup names.
pub use crate::format::names::is_safe_id;

fn valid_user_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .chars()
            .all(|c| !c.is_whitespace() && !c.is_control() && c != ':' && c != '/')
}

fn valid_realm(realm: &str) -> bool {
    (2..=32).contains(&realm.len()) && is_safe_id(realm)
}

fn valid_token_name(name: &str) -> bool {
    (1..=64).contains(&name.len()) && is_safe_id(name)
}

/// `<name>@<realm>`: a user account.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Userid {
    name: String,
    realm: String,
}

impl Userid {
    pub fn name(&self) -> &str {
        &self.name
    }
    pub fn realm(&self) -> &str {
        &self.realm
    }
}

impl FromStr for Userid {
    type Err = AuthError;

    fn from_str(text: &str) -> Result<Self, AuthError> {
        let invalid = |reason: &str| AuthError::InvalidId {
            id: text.to_string(),
            reason: reason.to_string(),
        };
        if text.len() > MAX_ID_LEN {
            return Err(invalid("too long"));
        }
        let (name, realm) = text
            .rsplit_once('@')
            .ok_or_else(|| invalid("missing '@realm'"))?;
        if !valid_user_name(name) {
            return Err(invalid(
                "user name is empty or contains whitespace, ':' or '/'",
            ));
        }
        if !valid_realm(realm) {
            return Err(invalid("realm must be a safe-id of 2-32 characters"));
        }
        Ok(Userid {
            name: name.to_string(),
            realm: realm.to_string(),
        })
    }
}

impl fmt::Display for Userid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{}", self.name, self.realm)
    }
}

/// A user or one of its API tokens (`user@realm!token`): whoever a request acts as.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Authid {
    user: Userid,
    token: Option<String>,
}

impl Authid {
    /// A token id of `user`.
    pub fn token(user: Userid, token_name: &str) -> Result<Self, AuthError> {
        if !valid_token_name(token_name) {
            return Err(AuthError::InvalidId {
                id: format!("{user}!{token_name}"),
                reason: "token name must be a safe-id of 1-64 characters".into(),
            });
        }
        Ok(Authid {
            user,
            token: Some(token_name.to_string()),
        })
    }
    pub fn is_token(&self) -> bool {
        self.token.is_some()
    }
    /// The user (for a token: the user owning it).
    pub fn user(&self) -> &Userid {
        &self.user
    }
    pub fn token_name(&self) -> Option<&str> {
        self.token.as_deref()
    }
}

impl From<Userid> for Authid {
    fn from(user: Userid) -> Self {
        Authid { user, token: None }
    }
}

impl FromStr for Authid {
    type Err = AuthError;

    fn from_str(text: &str) -> Result<Self, AuthError> {
        // The realm cannot contain '!', so a '!' after the last '@' starts the token name.
        let at = text.rfind('@').ok_or_else(|| AuthError::InvalidId {
            id: text.to_string(),
            reason: "missing '@realm'".into(),
        })?;
        match text[at..].find('!') {
            Some(rel) => {
                let split = at + rel;
                let user: Userid = text[..split].parse()?;
                Authid::token(user, &text[split + 1..])
            }
            None => Ok(Authid::from(text.parse::<Userid>()?)),
        }
    }
}

impl fmt::Display for Authid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.token {
            Some(token) => write!(f, "{}!{}", self.user, token),
            None => write!(f, "{}", self.user),
        }
    }
}

macro_rules! string_serde {
    ($ty:ty) => {
        impl Serialize for $ty {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.collect_str(self)
            }
        }
        impl<'de> Deserialize<'de> for $ty {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let text = String::deserialize(d)?;
                text.parse().map_err(serde::de::Error::custom)
            }
        }
    };
}
string_serde!(Userid);
string_serde!(Authid);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn userid_rules() {
        let u: Userid = "alice@pbs".parse().unwrap();
        assert_eq!((u.name(), u.realm()), ("alice", "pbs"));
        assert_eq!(u.to_string(), "alice@pbs");
        assert!("alice".parse::<Userid>().is_err());
        assert!("al ice@pbs".parse::<Userid>().is_err());
        assert!("a:b@pbs".parse::<Userid>().is_err());
        assert!("alice@p".parse::<Userid>().is_err());
        assert!("@pbs".parse::<Userid>().is_err());
        assert!("alice@pbs!tok".parse::<Userid>().is_err());
    }

    #[test]
    fn authid_rules() {
        let a: Authid = "alice@pbs!backup-1".parse().unwrap();
        assert!(a.is_token());
        assert_eq!(a.token_name(), Some("backup-1"));
        assert_eq!(a.user().to_string(), "alice@pbs");
        assert_eq!(a.to_string(), "alice@pbs!backup-1");
        let b: Authid = "root@pam".parse().unwrap();
        assert!(!b.is_token());
        assert!("alice@pbs!".parse::<Authid>().is_err());
        assert!("alice@pbs!a b".parse::<Authid>().is_err());
        let json = serde_json::to_string(&a).unwrap();
        assert_eq!(json, "\"alice@pbs!backup-1\"");
        let back: Authid = serde_json::from_str(&json).unwrap();
        assert_eq!(back, a);
        assert!(serde_json::from_str::<Authid>("\"nope\"").is_err());
    }
}
