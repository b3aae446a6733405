//! Request parameters as the Rust client sends them (server/docs/protocol.md#cookie, #parameters):
//! its user agent, form encoding of JSON parameters, cookie and token percent-encoding, API paths.
//! Shared by the HTTP/1.1 client and the HTTP/2 sessions.

use percent_encoding::{AsciiSet, CONTROLS};
use serde_json::Value;

/// User agent sent by the stock client on every request (also inside HTTP/2).
pub const USER_AGENT: &str = "proxmox-backup-client/1.0";

/// Characters the Rust client percent-encodes in cookies and token secrets
/// (server/docs/protocol.md#cookie).
pub const COOKIE_ENCODE_SET: &AsciiSet = &CONTROLS
    .add(b' ')
    .add(b'"')
    .add(b'#')
    .add(b'<')
    .add(b'>')
    .add(b'`')
    .add(b'?')
    .add(b'{')
    .add(b'}');

/// Prefixes `/api2/json/` unless the path is already absolute.
pub fn api_path(path: &str) -> String {
    if path.starts_with('/') {
        path.to_string()
    } else {
        format!("/api2/json/{path}")
    }
}

/// `path?query` like the Rust client: parameters given (even none) add a `?`, so a root
/// namespace snapshot listing is `…/snapshots?`; no parameters at all add nothing.
pub(crate) fn with_query(path: &str, params: Option<&Value>) -> String {
    match params {
        Some(p) => format!("{path}?{}", encode_params(p)),
        None => path.to_string(),
    }
}

/// Form-urlencodes a JSON object like the Rust client: keys sorted (serde_json's map is
/// sorted here), strings raw, booleans `true`/`false`, numbers decimal, arrays as the key
/// repeated per element, `null` omitted.
pub fn encode_params(params: &Value) -> String {
    let mut ser = form_urlencoded::Serializer::new(String::new());
    if let Some(obj) = params.as_object() {
        for (k, v) in obj {
            match v {
                Value::Null => {}
                Value::Array(items) => {
                    for item in items {
                        ser.append_pair(k, &scalar_to_string(item));
                    }
                }
                other => {
                    ser.append_pair(k, &scalar_to_string(other));
                }
            }
        }
    }
    ser.finish()
}

fn scalar_to_string(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn param_encoding() {
        let v = serde_json::json!({"b": true, "n": 5, "s": "a b+c", "arr": ["x", "y"], "z": null});
        assert_eq!(encode_params(&v), "arr=x&arr=y&b=true&n=5&s=a+b%2Bc");
    }

    #[test]
    fn cookie_encoding_keeps_base64() {
        let t = "PBS:root@pam:6650A1B2::ab+/c= d";
        let enc = percent_encoding::utf8_percent_encode(t, COOKIE_ENCODE_SET).to_string();
        assert_eq!(enc, "PBS:root@pam:6650A1B2::ab+/c=%20d");
    }
}
