//! Extracting credentials from request headers (docs/protocol.md#cookie, #api-tokens): the ticket
//! cookie and the `PBSAPIToken` authorization header, with the exact decoding rules the clients
//! rely on.

use http::header::{AUTHORIZATION, COOKIE};
use http::HeaderMap;
use percent_encoding::percent_decode_str;

/// Cookie names carrying a ticket; the `__Host-` variant is preferred when both are present.
const COOKIE_NAMES: [&str; 2] = ["__Host-PBSAuthCookie", "PBSAuthCookie"];

/// Credentials a request presents.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Credentials {
    /// A ticket from the auth cookie.
    Ticket(String),
    /// `tokenid` and secret from the Authorization header.
    Token { tokenid: String, secret: String },
}

/// Percent-decodes without form semantics (`+` stays `+`).
fn percent_decode(text: &str) -> String {
    percent_decode_str(text).decode_utf8_lossy().into_owned()
}

/// The ticket from the `Cookie` header(s), if any. Attributes such as `path=/` are tolerated.
pub fn ticket_from_cookies(headers: &HeaderMap) -> Option<String> {
    let mut found: [Option<String>; 2] = [None, None];
    for value in headers.get_all(COOKIE) {
        let Ok(value) = value.to_str() else { continue };
        for part in value.split(';') {
            let Some((name, val)) = part.trim().split_once('=') else {
                continue;
            };
            if let Some(i) = COOKIE_NAMES.iter().position(|n| *n == name.trim()) {
                let decoded = percent_decode(val.trim());
                if !decoded.is_empty() && found[i].is_none() {
                    found[i] = Some(decoded);
                }
            }
        }
    }
    let [host, plain] = found;
    host.or(plain)
}

/// `PBSAPIToken <id>:<secret>` or `PBSAPIToken=<id>:<secret>`.
pub fn token_from_authorization(headers: &HeaderMap) -> Option<(String, String)> {
    let value = headers.get(AUTHORIZATION)?.to_str().ok()?.trim();
    let rest = value.strip_prefix("PBSAPIToken")?;
    let rest = rest.strip_prefix(' ').or_else(|| rest.strip_prefix('='))?;
    let rest = rest.trim_start();
    // Token ids contain no ':', so the first ':' separates id and secret.
    let (id, secret) = rest.split_once(':')?;
    if id.is_empty() {
        return None;
    }
    Some((id.to_string(), percent_decode(secret)))
}

/// What the request presents; a cookie ticket wins over an Authorization header.
pub fn extract(headers: &HeaderMap) -> Option<Credentials> {
    if let Some(ticket) = ticket_from_cookies(headers) {
        return Some(Credentials::Ticket(ticket));
    }
    token_from_authorization(headers)
        .map(|(tokenid, secret)| Credentials::Token { tokenid, secret })
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn headers(pairs: &[(&http::HeaderName, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(*name, HeaderValue::from_str(value).unwrap());
        }
        map
    }

    #[test]
    fn cookie_raw_and_pve_encoded() {
        let raw = headers(&[(&COOKIE, "PBSAuthCookie=PBS:root@pam:6650A1B2::ab+c/d")]);
        assert_eq!(
            ticket_from_cookies(&raw).unwrap(),
            "PBS:root@pam:6650A1B2::ab+c/d"
        );
        let pve = headers(&[(
            &COOKIE,
            "PBSAuthCookie=PBS%3Aroot%40pam%3A6650A1B2%3A%3Aab%2Bc%2Fd; path=/; secure; SameSite=Strict;",
        )]);
        assert_eq!(
            ticket_from_cookies(&pve).unwrap(),
            "PBS:root@pam:6650A1B2::ab+c/d"
        );
    }

    #[test]
    fn cookie_host_variant_preferred_and_others_ignored() {
        let h = headers(&[(
            &COOKIE,
            "other=1; PBSAuthCookie=old; __Host-PBSAuthCookie=new",
        )]);
        assert_eq!(ticket_from_cookies(&h).unwrap(), "new");
        let none = headers(&[(&COOKIE, "XPBSAuthCookie=1; foo")]);
        assert!(ticket_from_cookies(&none).is_none());
    }

    #[test]
    fn token_header_forms() {
        let space = headers(&[(&AUTHORIZATION, "PBSAPIToken alice@pbs!t1:aaaa-bb%2Bc")]);
        assert_eq!(
            token_from_authorization(&space).unwrap(),
            ("alice@pbs!t1".to_string(), "aaaa-bb+c".to_string())
        );
        let eq = headers(&[(&AUTHORIZATION, "PBSAPIToken=alice@pbs!t1:x:y")]);
        assert_eq!(
            token_from_authorization(&eq).unwrap(),
            ("alice@pbs!t1".to_string(), "x:y".to_string())
        );
        let bad = headers(&[(&AUTHORIZATION, "Bearer abc")]);
        assert!(token_from_authorization(&bad).is_none());
        let no_sep = headers(&[(&AUTHORIZATION, "PBSAPITokenalice@pbs!t1:x")]);
        assert!(token_from_authorization(&no_sep).is_none());
    }

    #[test]
    fn cookie_wins_over_token() {
        let h = headers(&[
            (&AUTHORIZATION, "PBSAPIToken alice@pbs!t1:s"),
            (&COOKIE, "PBSAuthCookie=tick"),
        ]);
        assert_eq!(extract(&h), Some(Credentials::Ticket("tick".into())));
    }
}
