//! Identifier validation (docs/formats.md#names). Every name that ends up in a
//! path or object key passes through here, so path tricks ('/', "..", leading '.') are
//! impossible by construction.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use super::FormatError;

/// Maximum backup-id length we accept.
pub const MAX_BACKUP_ID_LEN: usize = 128;
/// Maximum namespace depth below the root.
pub const MAX_NAMESPACE_DEPTH: usize = 7;
/// Maximum length of the namespace string form `a/b/c`.
pub const MAX_NAMESPACE_LEN: usize = 256;
/// Maximum archive/file name length (filesystem component limit).
pub const MAX_ARCHIVE_NAME_LEN: usize = 255;

/// `[A-Za-z0-9_][A-Za-z0-9._-]*`: no '/', no leading '.', never "." or "..".
pub fn is_safe_id(s: &str) -> bool {
    let b = s.as_bytes();
    match b.first() {
        Some(c) if c.is_ascii_alphanumeric() || *c == b'_' => {}
        _ => return false,
    }
    b[1..]
        .iter()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'.' | b'_' | b'-'))
}

fn invalid(what: &'static str, name: &str, reason: &str) -> FormatError {
    let mut shown: String = name.chars().take(300).collect();
    if shown.len() < name.len() {
        shown.push_str("...");
    }
    FormatError::InvalidName {
        what,
        name: shown,
        reason: reason.to_string(),
    }
}

fn check_safe(what: &'static str, s: &str, max: usize) -> Result<(), FormatError> {
    if s.is_empty() {
        return Err(invalid(what, s, "must not be empty"));
    }
    if s.len() > max {
        return Err(invalid(what, s, &format!("longer than {max} characters")));
    }
    if !is_safe_id(s) {
        return Err(invalid(
            what,
            s,
            "must match [A-Za-z0-9_][A-Za-z0-9._-]* (no '/', no leading '.')",
        ));
    }
    Ok(())
}

/// Backup type; the derive order gives PBS's sort order ct < host < vm.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BackupType {
    Ct,
    Host,
    Vm,
}

impl BackupType {
    /// "ct", "host" or "vm".
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ct => "ct",
            Self::Host => "host",
            Self::Vm => "vm",
        }
    }
}

impl FromStr for BackupType {
    type Err = FormatError;
    fn from_str(s: &str) -> Result<Self, FormatError> {
        match s {
            "ct" => Ok(Self::Ct),
            "host" => Ok(Self::Host),
            "vm" => Ok(Self::Vm),
            _ => Err(invalid("backup type", s, "expected vm, ct or host")),
        }
    }
}

impl fmt::Display for BackupType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A backup group `<type>/<id>`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BackupGroup {
    pub ty: BackupType,
    pub id: String,
}

impl BackupGroup {
    /// Validate the id (safe id, ≤ 128 chars).
    pub fn new(ty: BackupType, id: &str) -> Result<Self, FormatError> {
        check_safe("backup id", id, MAX_BACKUP_ID_LEN)?;
        Ok(Self {
            ty,
            id: id.to_string(),
        })
    }

    /// "vm/100"
    pub fn path(&self) -> String {
        format!("{}/{}", self.ty.as_str(), self.id)
    }
}

impl fmt::Display for BackupGroup {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.ty, self.id)
    }
}

/// A snapshot `<type>/<id>/<time>`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BackupDir {
    pub group: BackupGroup,
    pub time: i64,
}

impl BackupDir {
    /// Validate the time: ≥ 1 and formattable within years 0..=9999.
    pub fn new(group: BackupGroup, time: i64) -> Result<Self, FormatError> {
        if time < 1 {
            return Err(FormatError::InvalidTime {
                value: time.to_string(),
                reason: "backup time must be >= 1".into(),
            });
        }
        format_backup_time(time)?;
        Ok(Self { group, time })
    }

    /// "2024-01-01T00:00:00Z"
    pub fn time_string(&self) -> String {
        // validated in `new`; fields are public, so fall back to the raw number if mutated
        format_backup_time(self.time).unwrap_or_else(|_| self.time.to_string())
    }

    /// "vm/100/2024-01-01T00:00:00Z"
    pub fn path(&self) -> String {
        format!("{}/{}", self.group.path(), self.time_string())
    }
}

impl fmt::Display for BackupDir {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.path())
    }
}

/// `%Y-%m-%dT%H:%M:%SZ` in UTC; years outside 0..=9999 are an error.
pub fn format_backup_time(epoch: i64) -> Result<String, FormatError> {
    let bad = |reason: &str| FormatError::InvalidTime {
        value: epoch.to_string(),
        reason: reason.to_string(),
    };
    let dt = chrono::DateTime::from_timestamp(epoch, 0).ok_or_else(|| bad("out of range"))?;
    let year = chrono::Datelike::year(&dt);
    if !(0..=9999).contains(&year) {
        return Err(bad("year outside 0..=9999"));
    }
    Ok(dt.format("%Y-%m-%dT%H:%M:%SZ").to_string())
}

/// Parse a snapshot directory name `YYYY-MM-DDTHH:MM:SSZ` (strict, UTC) to epoch seconds.
pub fn parse_backup_time(s: &str) -> Result<i64, FormatError> {
    let bad = |reason: &str| FormatError::InvalidTime {
        value: format!("'{}'", s.chars().take(40).collect::<String>()),
        reason: reason.to_string(),
    };
    let b = s.as_bytes();
    let pattern_ok = b.len() == 20
        && b.iter().enumerate().all(|(i, c)| match i {
            4 | 7 => *c == b'-',
            10 => *c == b'T',
            13 | 16 => *c == b':',
            19 => *c == b'Z',
            _ => c.is_ascii_digit(),
        });
    if !pattern_ok {
        return Err(bad("expected YYYY-MM-DDTHH:MM:SSZ"));
    }
    let naive = chrono::NaiveDateTime::parse_from_str(s, "%Y-%m-%dT%H:%M:%SZ")
        .map_err(|e| bad(&e.to_string()))?;
    let epoch = naive.and_utc().timestamp();
    // rejects leap-second forms like :60 that chrono would fold
    if format_backup_time(epoch).ok().as_deref() != Some(s) {
        return Err(bad("not a canonical UTC time"));
    }
    Ok(epoch)
}

/// A namespace path below the datastore root (root = no components).
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BackupNamespace {
    components: Vec<String>,
}

impl BackupNamespace {
    /// The root namespace.
    pub fn root() -> Self {
        Self::default()
    }

    /// Parse "a/b/c" ("" = root): ≤ 7 components, each a safe id, total ≤ 256 chars.
    pub fn parse(s: &str) -> Result<Self, FormatError> {
        if s.is_empty() {
            return Ok(Self::root());
        }
        if s.len() > MAX_NAMESPACE_LEN {
            return Err(invalid(
                "namespace",
                s,
                &format!("longer than {MAX_NAMESPACE_LEN} characters"),
            ));
        }
        let mut ns = Self::root();
        for part in s.split('/') {
            if ns.components.len() >= MAX_NAMESPACE_DEPTH {
                return Err(invalid(
                    "namespace",
                    s,
                    &format!("deeper than {MAX_NAMESPACE_DEPTH} levels"),
                ));
            }
            if !is_safe_id(part) {
                return Err(invalid(
                    "namespace",
                    s,
                    &format!("component '{part}' is not a safe id"),
                ));
            }
            ns.components.push(part.to_string());
        }
        Ok(ns)
    }

    /// True for the datastore root.
    pub fn is_root(&self) -> bool {
        self.components.is_empty()
    }

    /// The validated components, outermost first.
    pub fn components(&self) -> &[String] {
        &self.components
    }

    /// Number of levels below the root.
    pub fn depth(&self) -> usize {
        self.components.len()
    }

    /// The namespace one level deeper; validates `name` and the depth/length limits.
    pub fn child(&self, name: &str) -> Result<Self, FormatError> {
        let s = if self.is_root() {
            name.to_string()
        } else {
            format!("{}/{}", self.display_path(), name)
        };
        if name.contains('/') || name.is_empty() {
            return Err(invalid(
                "namespace component",
                name,
                "must be a single safe id",
            ));
        }
        Self::parse(&s)
    }

    /// The enclosing namespace; `None` for the root.
    pub fn parent(&self) -> Option<Self> {
        let (_, rest) = self.components.split_last()?;
        Some(Self {
            components: rest.to_vec(),
        })
    }

    /// "a/b" ("" for the root).
    pub fn display_path(&self) -> String {
        self.components.join("/")
    }

    /// Path/key prefix of this namespace: "" for root, else "ns/a/ns/b/".
    pub fn key_prefix(&self) -> String {
        let mut out = String::new();
        for c in &self.components {
            out.push_str("ns/");
            out.push_str(c);
            out.push('/');
        }
        out
    }
}

impl fmt::Display for BackupNamespace {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.display_path())
    }
}

/// Archive/file names are safe ids (≤ 255 chars) so they can never escape the snapshot dir.
pub fn check_archive_name(name: &str) -> Result<(), FormatError> {
    check_safe("archive name", name, MAX_ARCHIVE_NAME_LEN)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn safe_ids() {
        for ok in ["100", "a", "_x", "a.b-c_d", "a..b", "drive-scsi0.img.fidx"] {
            assert!(is_safe_id(ok), "{ok}");
        }
        for bad in [
            "", ".", "..", ".hidden", "-x", "a/b", "x/../y", "a b", "ä", "a\0", "a\\b",
        ] {
            assert!(!is_safe_id(bad), "{bad:?}");
        }
    }

    #[test]
    fn backup_type_order_and_parse() {
        let mut v = vec![BackupType::Vm, BackupType::Ct, BackupType::Host];
        v.sort();
        assert_eq!(v, [BackupType::Ct, BackupType::Host, BackupType::Vm]);
        assert_eq!("vm".parse::<BackupType>().unwrap(), BackupType::Vm);
        assert!("VM".parse::<BackupType>().is_err());
        assert!("".parse::<BackupType>().is_err());
        assert_eq!(
            serde_json::to_string(&BackupType::Host).unwrap(),
            "\"host\""
        );
        assert_eq!(
            serde_json::from_str::<BackupType>("\"ct\"").unwrap(),
            BackupType::Ct
        );
    }

    #[test]
    fn groups_and_dirs() {
        let g = BackupGroup::new(BackupType::Vm, "100").unwrap();
        assert_eq!(g.path(), "vm/100");
        let d = BackupDir::new(g.clone(), 1704067200).unwrap();
        assert_eq!(d.time_string(), "2024-01-01T00:00:00Z");
        assert_eq!(d.path(), "vm/100/2024-01-01T00:00:00Z");
        assert_eq!(d.to_string(), d.path());

        let err = BackupGroup::new(BackupType::Vm, "x/../y").unwrap_err();
        assert!(
            err.to_string().starts_with("invalid backup id 'x/../y': "),
            "{err}"
        );
        for bad in ["", "..", ".x", "a/b", &"a".repeat(129)] {
            assert!(BackupGroup::new(BackupType::Ct, bad).is_err(), "{bad}");
        }
        assert!(BackupGroup::new(BackupType::Ct, &"a".repeat(128)).is_ok());

        assert!(BackupDir::new(g.clone(), 0).is_err());
        assert!(BackupDir::new(g.clone(), -5).is_err());
        assert!(BackupDir::new(g.clone(), 253402300799).is_ok()); // 9999-12-31T23:59:59Z
        assert!(BackupDir::new(g, 253402300800).is_err());
    }

    #[test]
    fn time_format_round_trip() {
        assert_eq!(
            format_backup_time(1593179765).unwrap(),
            "2020-06-26T13:56:05Z"
        );
        assert_eq!(
            parse_backup_time("2020-06-26T13:56:05Z").unwrap(),
            1593179765
        );
        assert!(format_backup_time(i64::MAX).is_err());
        for bad in [
            "",
            "2020-06-26T13:56:05",
            "2020-06-26 13:56:05Z",
            "2020-06-26T13:56:05+00:00",
            "2020-13-26T13:56:05Z",
            "2020-02-30T13:56:05Z",
            "2020-06-26T13:56:60Z",
            "2020-06-26T13:56:05z",
            "+020-06-26T13:56:05Z",
            "2020-06-26T13:56:05Z/..",
        ] {
            assert!(parse_backup_time(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn namespaces() {
        let root = BackupNamespace::parse("").unwrap();
        assert!(root.is_root());
        assert_eq!(root.key_prefix(), "");
        assert_eq!(root.parent(), None);
        let ns = BackupNamespace::parse("a/b").unwrap();
        assert_eq!(ns.depth(), 2);
        assert_eq!(ns.components(), ["a", "b"]);
        assert_eq!(ns.display_path(), "a/b");
        assert_eq!(ns.to_string(), "a/b");
        assert_eq!(ns.key_prefix(), "ns/a/ns/b/");
        assert_eq!(ns.parent().unwrap(), BackupNamespace::parse("a").unwrap());
        assert_eq!(root.child("a").unwrap().child("b").unwrap(), ns);
        assert!(ns.child("..").is_err());
        assert!(ns.child("x/y").is_err());
        assert!(ns.child("").is_err());

        let seven = "a/b/c/d/e/f/g";
        let deep = BackupNamespace::parse(seven).unwrap();
        assert_eq!(deep.depth(), 7);
        assert!(BackupNamespace::parse(&format!("{seven}/h")).is_err());
        assert!(deep.child("h").is_err());
        for bad in ["/", "a/", "/a", "a//b", "..", "a/../b", ".a", "a/.b", "a b"] {
            assert!(BackupNamespace::parse(bad).is_err(), "{bad}");
        }
        let long = ["x".repeat(100), "y".repeat(100), "z".repeat(56)].join("/");
        assert_eq!(long.len(), 258);
        assert!(BackupNamespace::parse(&long).is_err());
        assert!(BackupNamespace::parse(&long[..256]).is_ok());
    }

    #[test]
    fn archive_names() {
        check_archive_name("drive-scsi0.img.fidx").unwrap();
        check_archive_name("index.json.blob").unwrap();
        for bad in ["", "..", ".blob", "a/b.blob", "../x.didx"] {
            assert!(check_archive_name(bad).is_err(), "{bad}");
        }
        assert!(check_archive_name(&"a".repeat(256)).is_err());
    }
}
