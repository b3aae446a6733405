//! Unique process ids of tasks (docs/protocol.md#tasks-and-upids):
//! `UPID:<node>:<pid>:<pstart>:<task id>:<starttime>:<type>:<escaped id>:<authid>:`.

use std::fmt;
use std::str::FromStr;

use super::TaskError;

/// The parts of a UPID.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Upid {
    pub node: String,
    pub pid: u32,
    pub pstart: u64,
    pub task_id: u64,
    pub starttime: i64,
    pub worker_type: String,
    /// Unescaped worker id.
    pub worker_id: Option<String>,
    pub authid: String,
}

/// systemd-style escaping, so the id contains no `:` and no `/`: `/` becomes `-`, and anything
/// but ASCII alphanumerics, `_` and a non-leading `.` becomes `\xNN`.
pub fn escape_id(id: &str) -> String {
    let mut out = String::with_capacity(id.len());
    for (i, b) in id.bytes().enumerate() {
        match b {
            b'/' => out.push('-'),
            b'.' if i > 0 => out.push('.'),
            b if b.is_ascii_alphanumeric() || b == b'_' => out.push(b as char),
            b => out.push_str(&format!("\\x{b:02x}")),
        }
    }
    out
}

/// Reverses [`escape_id`].
pub fn unescape_id(text: &str) -> Result<String, TaskError> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'-' => {
                out.push(b'/');
                i += 1;
            }
            b'\\' => {
                let hex = text
                    .get(i + 2..i + 4)
                    .filter(|_| bytes.get(i + 1) == Some(&b'x'))
                    .ok_or_else(|| TaskError::InvalidUpid(format!("bad escape in '{text}'")))?;
                let value = u8::from_str_radix(hex, 16)
                    .map_err(|_| TaskError::InvalidUpid(format!("bad escape in '{text}'")))?;
                out.push(value);
                i += 4;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out).map_err(|_| TaskError::InvalidUpid(format!("id '{text}' is not UTF-8")))
}

impl fmt::Display for Upid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let id = self.worker_id.as_deref().map(escape_id).unwrap_or_default();
        write!(
            f,
            "UPID:{}:{:08X}:{:08X}:{:08X}:{:08X}:{}:{}:{}:",
            self.node,
            self.pid,
            self.pstart,
            self.task_id,
            self.starttime,
            self.worker_type,
            id,
            self.authid
        )
    }
}

impl FromStr for Upid {
    type Err = TaskError;

    fn from_str(text: &str) -> Result<Self, TaskError> {
        let bad = || TaskError::InvalidUpid(text.to_string());
        let body = text
            .strip_prefix("UPID:")
            .and_then(|b| b.strip_suffix(':'))
            .ok_or_else(bad)?;
        // The authid is last and may not contain ':'; neither may any other field.
        let parts: Vec<&str> = body.split(':').collect();
        if parts.len() != 8 {
            return Err(bad());
        }
        let hex = |s: &str| u64::from_str_radix(s, 16).map_err(|_| bad());
        Ok(Upid {
            node: parts[0].to_string(),
            pid: u32::try_from(hex(parts[1])?).map_err(|_| bad())?,
            pstart: hex(parts[2])?,
            task_id: hex(parts[3])?,
            starttime: hex(parts[4])? as i64,
            worker_type: parts[5].to_string(),
            worker_id: if parts[6].is_empty() {
                None
            } else {
                Some(unescape_id(parts[6])?)
            },
            authid: parts[7].to_string(),
        })
    }
}

/// Start time of this process in clock ticks since boot (`/proc/self/stat` field 22), 0 if
/// unknown. Together with the pid it makes UPIDs unique across restarts.
pub fn process_start() -> u64 {
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else {
        return 0;
    };
    // The command name (field 2) may contain spaces; fields after its ')' are space separated.
    stat.rsplit_once(')')
        .and_then(|(_, rest)| rest.split_whitespace().nth(19))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upid_format_roundtrip() {
        let upid = Upid {
            node: "pbs1".into(),
            pid: 0x1234,
            pstart: 0xABCDE,
            task_id: 7,
            starttime: 0x6650A1B2,
            worker_type: "garbage_collection".into(),
            worker_id: Some("store1".into()),
            authid: "root@pam".into(),
        };
        let text = upid.to_string();
        assert_eq!(
            text,
            "UPID:pbs1:00001234:000ABCDE:00000007:6650A1B2:garbage_collection:store1:root@pam:"
        );
        assert_eq!(text.parse::<Upid>().unwrap(), upid);
        assert!("UPID:x".parse::<Upid>().is_err());
        assert!("nonsense".parse::<Upid>().is_err());
    }

    #[test]
    fn worker_id_escaping() {
        let id = "store1:ns/a-b.c";
        let esc = escape_id(id);
        assert_eq!(esc, "store1\\x3ans-a\\x2db.c");
        assert!(!esc.contains(':') && !esc.contains('/'));
        assert_eq!(unescape_id(&esc).unwrap(), id);
        assert_eq!(escape_id(".x"), "\\x2ex");
        assert!(unescape_id("\\x4").is_err());
    }
}
