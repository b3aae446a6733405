//! Request parameters with PBS's transport rules (docs/protocol.md#parameters): a JSON body, or a
//! form body plus the query string. Values from forms and queries are strings and are converted on
//! access, so `true`, `1`, `yes`, `on` all read as booleans and `"42"` reads as a number. Unknown
//! parameters are accepted and ignored.

use serde_json::{Map, Value};

use super::HttpError;
use crate::format::names::{BackupDir, BackupGroup, BackupNamespace, BackupType};

/// Largest parameter body accepted (PBS refuses bodies of 512 KiB and more).
pub const MAX_PARAM_BODY: usize = 512 * 1024;

/// Parsed parameters of one request.
#[derive(Debug, Default, Clone)]
pub struct Params {
    values: Map<String, Value>,
}

impl Params {
    /// Parameters from a query string (`a=1&b=x`); a repeated key becomes an array.
    pub fn from_query(query: Option<&str>) -> Self {
        let mut params = Self::default();
        if let Some(query) = query {
            params.merge_form(query.as_bytes());
        }
        params
    }

    /// Parameters from a JSON object body (an empty body counts as `{}`).
    pub fn from_json(body: &[u8]) -> Result<Self, HttpError> {
        if body.iter().all(|b| b.is_ascii_whitespace()) {
            return Ok(Self::default());
        }
        match serde_json::from_slice::<Value>(body) {
            Ok(Value::Object(values)) => Ok(Self { values }),
            Ok(_) => Err(HttpError::bad_request("request body is not a JSON object")),
            Err(err) => Err(HttpError::bad_request(format!(
                "unable to parse JSON body - {err}"
            ))),
        }
    }

    /// Parameters of a request by content type: JSON body alone, or form body plus query.
    pub fn from_body(
        content_type: Option<&str>,
        query: Option<&str>,
        body: &[u8],
    ) -> Result<Self, HttpError> {
        if body.len() >= MAX_PARAM_BODY {
            return Err(HttpError::bad_request("request parameter body too large"));
        }
        let mime = content_type
            .and_then(|ct| ct.split(';').next())
            .map(|ct| ct.trim().to_ascii_lowercase());
        match mime.as_deref() {
            Some("application/json") => Self::from_json(body),
            None | Some("") | Some("application/x-www-form-urlencoded") => {
                let mut params = Self::from_query(query);
                params.merge_form(body);
                Ok(params)
            }
            Some(other) => Err(HttpError::bad_request(format!(
                "unsupported content type '{other}'"
            ))),
        }
    }

    /// Adds `key=value` pairs of a form-encoded buffer.
    pub fn merge_form(&mut self, form: &[u8]) {
        for (key, value) in form_urlencoded::parse(form) {
            let value = Value::String(value.into_owned());
            match self.values.get_mut(key.as_ref()) {
                Some(Value::Array(items)) => items.push(value),
                Some(existing) => {
                    let first = existing.take();
                    *existing = Value::Array(vec![first, value]);
                }
                None => {
                    self.values.insert(key.into_owned(), value);
                }
            }
        }
    }

    /// Sets a value (path parameters such as `{store}`).
    pub fn insert(&mut self, name: &str, value: Value) {
        self.values.insert(name.to_string(), value);
    }

    pub fn raw(&self, name: &str) -> Option<&Value> {
        self.values.get(name)
    }

    /// A string parameter; numbers and booleans are rendered as text.
    pub fn str(&self, name: &str) -> Result<Option<String>, HttpError> {
        match self.values.get(name) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(Value::Number(n)) => Ok(Some(n.to_string())),
            Some(Value::Bool(b)) => Ok(Some(b.to_string())),
            Some(_) => Err(HttpError::bad_param(name, "expected a string")),
        }
    }

    pub fn required_str(&self, name: &str) -> Result<String, HttpError> {
        self.str(name)?
            .ok_or_else(|| HttpError::missing_param(name))
    }

    /// An unsigned integer parameter (JSON number or decimal text).
    pub fn u64(&self, name: &str) -> Result<Option<u64>, HttpError> {
        match self.values.get(name) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Number(n)) => n
                .as_u64()
                .map(Some)
                .ok_or_else(|| HttpError::bad_param(name, "expected an unsigned integer")),
            Some(Value::String(s)) => s.trim().parse::<u64>().map(Some).map_err(|_| {
                HttpError::bad_param(name, format!("'{s}' is not an unsigned integer"))
            }),
            Some(_) => Err(HttpError::bad_param(name, "expected an unsigned integer")),
        }
    }

    pub fn required_u64(&self, name: &str) -> Result<u64, HttpError> {
        self.u64(name)?
            .ok_or_else(|| HttpError::missing_param(name))
    }

    /// A signed integer parameter (JSON number or decimal text).
    pub fn i64(&self, name: &str) -> Result<Option<i64>, HttpError> {
        match self.values.get(name) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Number(n)) => n
                .as_i64()
                .map(Some)
                .ok_or_else(|| HttpError::bad_param(name, "expected an integer")),
            Some(Value::String(s)) => s
                .trim()
                .parse::<i64>()
                .map(Some)
                .map_err(|_| HttpError::bad_param(name, format!("'{s}' is not an integer"))),
            Some(_) => Err(HttpError::bad_param(name, "expected an integer")),
        }
    }

    pub fn required_i64(&self, name: &str) -> Result<i64, HttpError> {
        self.i64(name)?
            .ok_or_else(|| HttpError::missing_param(name))
    }

    /// A boolean in any PBS spelling: `1|on|yes|true` and `0|off|no|false`, case-insensitive.
    pub fn bool(&self, name: &str) -> Result<Option<bool>, HttpError> {
        match self.values.get(name) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(*b)),
            Some(Value::Number(n)) => match n.as_u64() {
                Some(0) => Ok(Some(false)),
                Some(1) => Ok(Some(true)),
                _ => Err(HttpError::bad_param(name, "expected a boolean")),
            },
            Some(Value::String(s)) => parse_bool(s)
                .map(Some)
                .ok_or_else(|| HttpError::bad_param(name, format!("'{s}' is not a boolean"))),
            Some(_) => Err(HttpError::bad_param(name, "expected a boolean")),
        }
    }

    pub fn bool_or(&self, name: &str, default: bool) -> Result<bool, HttpError> {
        Ok(self.bool(name)?.unwrap_or(default))
    }

    /// A list of strings: a JSON array, a repeated form key, or a single value.
    pub fn str_list(&self, name: &str) -> Result<Vec<String>, HttpError> {
        match self.values.get(name) {
            None | Some(Value::Null) => Ok(Vec::new()),
            Some(Value::Array(items)) => items
                .iter()
                .map(|item| match item {
                    Value::String(s) => Ok(s.clone()),
                    _ => Err(HttpError::bad_param(name, "expected a list of strings")),
                })
                .collect(),
            Some(Value::String(s)) => Ok(vec![s.clone()]),
            Some(_) => Err(HttpError::bad_param(name, "expected a list of strings")),
        }
    }

    /// The namespace parameter `name` (absent or empty = root).
    pub fn namespace(&self, name: &str) -> Result<BackupNamespace, HttpError> {
        match self.str(name)? {
            None => Ok(BackupNamespace::root()),
            Some(s) => BackupNamespace::parse(&s).map_err(|e| HttpError::bad_param(name, e)),
        }
    }

    /// `backup-type` + `backup-id`.
    pub fn group(&self) -> Result<BackupGroup, HttpError> {
        let ty_text = self.required_str("backup-type")?;
        let ty: BackupType = ty_text
            .parse()
            .map_err(|e| HttpError::bad_param("backup-type", e))?;
        let id = self.required_str("backup-id")?;
        BackupGroup::new(ty, &id).map_err(|e| HttpError::bad_param("backup-id", e))
    }

    /// `backup-type` + `backup-id` + `backup-time`.
    pub fn snapshot(&self) -> Result<BackupDir, HttpError> {
        let group = self.group()?;
        let time = self.required_i64("backup-time")?;
        BackupDir::new(group, time).map_err(|e| HttpError::bad_param("backup-time", e))
    }
}

/// PBS's boolean spellings.
pub fn parse_bool(text: &str) -> Option<bool> {
    match text.trim().to_ascii_lowercase().as_str() {
        "1" | "on" | "yes" | "true" => Some(true),
        "0" | "off" | "no" | "false" => Some(false),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_values_convert_on_access() {
        let p = Params::from_query(Some("wid=3&debug=yes&name=a+b&x=1&x=2"));
        assert_eq!(p.required_u64("wid").unwrap(), 3);
        assert!(p.bool_or("debug", false).unwrap());
        assert_eq!(p.required_str("name").unwrap(), "a b");
        assert_eq!(p.str_list("x").unwrap(), vec!["1", "2"]);
        assert!(p.u64("name").is_err());
        assert!(p.required_str("missing").is_err());
    }

    #[test]
    fn json_body_ignores_query() {
        let p = Params::from_body(Some("application/json"), Some("a=1"), br#"{"wid":5}"#).unwrap();
        assert_eq!(p.required_u64("wid").unwrap(), 5);
        assert!(p.raw("a").is_none());
        assert!(Params::from_body(Some("application/json"), None, b"[1]").is_err());
        assert!(Params::from_body(Some("text/plain"), None, b"").is_err());
    }

    #[test]
    fn form_body_merges_with_query() {
        let p = Params::from_body(
            Some("application/x-www-form-urlencoded; charset=UTF-8"),
            Some("a=1"),
            b"protected=0",
        )
        .unwrap();
        assert_eq!(p.required_u64("a").unwrap(), 1);
        assert_eq!(p.bool("protected").unwrap(), Some(false));
    }
}
