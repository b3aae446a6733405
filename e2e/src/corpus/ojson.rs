//! JSON that keeps object keys in the order they were recorded. Request bodies are replayed in
//! the byte layout the recorded client produced (key order and separators), which
//! `serde_json::Value` (a sorted map in this workspace) cannot keep.

use std::fmt;

use serde::de::{Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Number, Value};

/// A JSON value whose objects keep their key order.
#[derive(Debug, Clone, PartialEq)]
pub enum OJson {
    Null,
    Bool(bool),
    Number(Number),
    String(String),
    Array(Vec<OJson>),
    Object(Vec<(String, OJson)>),
}

/// How a JSON body is laid out on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JsonStyle {
    /// No whitespace (Rust clients: serde_json).
    Compact,
    /// `", "` and `": "` separators, non-ASCII escaped (python's `json.dumps` defaults).
    Python,
}

impl OJson {
    /// The same value as a `serde_json::Value` (key order lost).
    pub fn to_value(&self) -> Value {
        match self {
            OJson::Null => Value::Null,
            OJson::Bool(b) => Value::Bool(*b),
            OJson::Number(n) => Value::Number(n.clone()),
            OJson::String(s) => Value::String(s.clone()),
            OJson::Array(a) => Value::Array(a.iter().map(OJson::to_value).collect()),
            OJson::Object(o) => {
                Value::Object(o.iter().map(|(k, v)| (k.clone(), v.to_value())).collect())
            }
        }
    }

    /// Member `key` of an object.
    pub fn get(&self, key: &str) -> Option<&OJson> {
        match self {
            OJson::Object(o) => o.iter().find(|(k, _)| k == key).map(|(_, v)| v),
            _ => None,
        }
    }

    pub fn as_str(&self) -> Option<&str> {
        match self {
            OJson::String(s) => Some(s),
            _ => None,
        }
    }

    /// Applies `f` to every string leaf (object keys untouched).
    pub fn map_strings(&self, f: &dyn Fn(&str) -> String) -> OJson {
        match self {
            OJson::String(s) => OJson::String(f(s)),
            OJson::Array(a) => OJson::Array(a.iter().map(|v| v.map_strings(f)).collect()),
            OJson::Object(o) => OJson::Object(
                o.iter()
                    .map(|(k, v)| (k.clone(), v.map_strings(f)))
                    .collect(),
            ),
            other => other.clone(),
        }
    }

    /// Serialises in the given layout.
    pub fn to_text(&self, style: JsonStyle) -> String {
        let mut out = String::new();
        self.write(style, &mut out);
        out
    }

    fn write(&self, style: JsonStyle, out: &mut String) {
        let (item_sep, key_sep) = match style {
            JsonStyle::Compact => (",", ":"),
            JsonStyle::Python => (", ", ": "),
        };
        match self {
            OJson::Null => out.push_str("null"),
            OJson::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
            OJson::Number(n) => out.push_str(&n.to_string()),
            OJson::String(s) => write_string(s, style, out),
            OJson::Array(a) => {
                out.push('[');
                for (i, v) in a.iter().enumerate() {
                    if i > 0 {
                        out.push_str(item_sep);
                    }
                    v.write(style, out);
                }
                out.push(']');
            }
            OJson::Object(o) => {
                out.push('{');
                for (i, (k, v)) in o.iter().enumerate() {
                    if i > 0 {
                        out.push_str(item_sep);
                    }
                    write_string(k, style, out);
                    out.push_str(key_sep);
                    v.write(style, out);
                }
                out.push('}');
            }
        }
    }
}

fn write_string(s: &str, style: JsonStyle, out: &mut String) {
    let quoted = serde_json::to_string(s).unwrap_or_else(|_| "\"\"".to_string());
    if style == JsonStyle::Compact || s.is_ascii() {
        out.push_str(&quoted);
        return;
    }
    for c in quoted.chars() {
        if c.is_ascii() {
            out.push(c);
        } else {
            let mut units = [0u16; 2];
            for unit in c.encode_utf16(&mut units) {
                out.push_str(&format!("\\u{unit:04x}"));
            }
        }
    }
}

impl<'de> Deserialize<'de> for OJson {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(OJsonVisitor)
    }
}

struct OJsonVisitor;

impl<'de> Visitor<'de> for OJsonVisitor {
    type Value = OJson;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_unit<E>(self) -> Result<OJson, E> {
        Ok(OJson::Null)
    }
    fn visit_none<E>(self) -> Result<OJson, E> {
        Ok(OJson::Null)
    }
    fn visit_bool<E>(self, v: bool) -> Result<OJson, E> {
        Ok(OJson::Bool(v))
    }
    fn visit_i64<E>(self, v: i64) -> Result<OJson, E> {
        Ok(OJson::Number(v.into()))
    }
    fn visit_u64<E>(self, v: u64) -> Result<OJson, E> {
        Ok(OJson::Number(v.into()))
    }
    fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<OJson, E> {
        Number::from_f64(v)
            .map(OJson::Number)
            .ok_or_else(|| E::custom("non-finite number"))
    }
    fn visit_str<E>(self, v: &str) -> Result<OJson, E> {
        Ok(OJson::String(v.to_string()))
    }
    fn visit_string<E>(self, v: String) -> Result<OJson, E> {
        Ok(OJson::String(v))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<OJson, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element()? {
            items.push(item);
        }
        Ok(OJson::Array(items))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<OJson, A::Error> {
        let mut entries = Vec::new();
        while let Some((k, v)) = map.next_entry::<String, OJson>()? {
            entries.push((k, v));
        }
        Ok(OJson::Object(entries))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_order_and_layouts() {
        let v: OJson = serde_json::from_str(r#"{"z":1,"a":[true,null],"ö":"äx"}"#).unwrap();
        assert_eq!(
            v.to_text(JsonStyle::Compact),
            r#"{"z":1,"a":[true,null],"ö":"äx"}"#
        );
        assert_eq!(
            v.to_text(JsonStyle::Python),
            r#"{"z": 1, "a": [true, null], "\u00f6": "\u00e4x"}"#
        );
        assert_eq!(v.to_value()["z"], 1);
    }
}
