//! Login tickets and CSRF tokens (docs/protocol.md#ticket-and-csrf-token). Both are HMAC-SHA256
//! signatures with server-private keys; their textual shape matters to PVE (it reads the time
//! field), the signature scheme does not.

use base64::engine::general_purpose::STANDARD_NO_PAD;
use base64::Engine;
use ring::hmac;

use super::ids::Userid;
use super::AuthError;

/// Ticket prefix for API tickets.
const PREFIX: &str = "PBS";
/// A ticket is accepted while `now - time` lies in this window (seconds).
pub const MIN_AGE: i64 = -300;
pub const MAX_AGE: i64 = 7200;

fn hmac_key(key: &[u8]) -> hmac::Key {
    hmac::Key::new(hmac::HMAC_SHA256, key)
}

fn check_age(time: i64, now: i64) -> Result<(), AuthError> {
    let age = now - time;
    if age < MIN_AGE {
        return Err(AuthError::InvalidTicket("ticket is from the future".into()));
    }
    if age > MAX_AGE {
        return Err(AuthError::InvalidTicket("ticket expired".into()));
    }
    Ok(())
}

fn parse_time(text: &str) -> Result<i64, AuthError> {
    if text.len() != 8 || !text.chars().all(|c| c.is_ascii_hexdigit()) {
        return Err(AuthError::InvalidTicket("bad time field".into()));
    }
    i64::from_str_radix(text, 16).map_err(|_| AuthError::InvalidTicket("bad time field".into()))
}

/// Creates `PBS:<userid>:<TIME>::<sig>` for `userid` at `now`.
pub fn create_ticket(key: &[u8], userid: &Userid, now: i64) -> String {
    let data = format!("{PREFIX}:{userid}:{:08X}", now as u32);
    let tag = hmac::sign(&hmac_key(key), data.as_bytes());
    format!("{data}::{}", STANDARD_NO_PAD.encode(tag.as_ref()))
}

/// Checks signature and age of a ticket and returns its user.
pub fn verify_ticket(key: &[u8], ticket: &str, now: i64) -> Result<Userid, AuthError> {
    let (data, sig) = ticket
        .split_once("::")
        .ok_or_else(|| AuthError::InvalidTicket("missing signature".into()))?;
    let rest = data
        .strip_prefix(PREFIX)
        .and_then(|r| r.strip_prefix(':'))
        .ok_or_else(|| AuthError::InvalidTicket("wrong prefix".into()))?;
    let (user, time) = rest
        .rsplit_once(':')
        .ok_or_else(|| AuthError::InvalidTicket("missing time field".into()))?;
    let sig = STANDARD_NO_PAD
        .decode(sig)
        .map_err(|_| AuthError::InvalidTicket("signature is not base64".into()))?;
    hmac::verify(&hmac_key(key), data.as_bytes(), &sig)
        .map_err(|_| AuthError::InvalidTicket("bad signature".into()))?;
    let time = parse_time(time)?;
    check_age(time, now)?;
    user.parse()
}

/// Creates `<TIME>:<sig>` binding a CSRF token to `userid`.
pub fn create_csrf(key: &[u8], userid: &Userid, now: i64) -> String {
    let time = format!("{:08X}", now as u32);
    let tag = hmac::sign(&hmac_key(key), format!("{time}:{userid}:").as_bytes());
    format!("{time}:{}", STANDARD_NO_PAD.encode(tag.as_ref()))
}

/// Checks a CSRF token for `userid`.
pub fn verify_csrf(key: &[u8], token: &str, userid: &Userid, now: i64) -> Result<(), AuthError> {
    let (time, sig) = token.split_once(':').ok_or(AuthError::InvalidCsrf)?;
    let sig = STANDARD_NO_PAD
        .decode(sig.trim())
        .map_err(|_| AuthError::InvalidCsrf)?;
    hmac::verify(&hmac_key(key), format!("{time}:{userid}:").as_bytes(), &sig)
        .map_err(|_| AuthError::InvalidCsrf)?;
    let time = parse_time(time).map_err(|_| AuthError::InvalidCsrf)?;
    check_age(time, now).map_err(|_| AuthError::InvalidCsrf)
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &[u8] = b"0123456789abcdef0123456789abcdef";
    const NOW: i64 = 1_750_000_000;

    fn alice() -> Userid {
        "alice@pbs".parse().unwrap()
    }

    #[test]
    fn ticket_shape_and_roundtrip() {
        let t = create_ticket(KEY, &alice(), NOW);
        assert!(t.starts_with(&format!("PBS:alice@pbs:{:08X}::", NOW)));
        let sig = t.rsplit("::").next().unwrap();
        assert!(!sig.contains(':') && !sig.contains('=') && !sig.is_empty());
        assert_eq!(verify_ticket(KEY, &t, NOW + 10).unwrap(), alice());
    }

    #[test]
    fn ticket_expiry_window() {
        let t = create_ticket(KEY, &alice(), NOW);
        assert!(verify_ticket(KEY, &t, NOW + MAX_AGE).is_ok());
        assert!(verify_ticket(KEY, &t, NOW + MAX_AGE + 1).is_err());
        assert!(verify_ticket(KEY, &t, NOW - 300).is_ok());
        assert!(verify_ticket(KEY, &t, NOW - 301).is_err());
    }

    #[test]
    fn ticket_tamper_rejected() {
        let t = create_ticket(KEY, &alice(), NOW);
        let other = t.replace("alice@pbs", "mallory@pbs");
        assert!(verify_ticket(KEY, &other, NOW).is_err());
        let later = t.replace(&format!("{:08X}", NOW), &format!("{:08X}", NOW + 3600));
        assert!(verify_ticket(KEY, &later, NOW).is_err());
        assert!(verify_ticket(b"another key", &t, NOW).is_err());
        assert!(verify_ticket(KEY, "PBS:alice@pbs:12345678", NOW).is_err());
        assert!(verify_ticket(KEY, "garbage", NOW).is_err());
    }

    #[test]
    fn csrf_roundtrip_and_binding() {
        let c = create_csrf(KEY, &alice(), NOW);
        assert_eq!(&c[8..9], ":");
        assert!(verify_csrf(KEY, &c, &alice(), NOW + 60).is_ok());
        let bob: Userid = "bob@pbs".parse().unwrap();
        assert!(verify_csrf(KEY, &c, &bob, NOW).is_err());
        assert!(verify_csrf(KEY, &c, &alice(), NOW + MAX_AGE + 1).is_err());
        assert!(verify_csrf(KEY, "nonsense", &alice(), NOW).is_err());
    }
}
