//! Builders for the record layouts of docs/protocol.md#record-shapes (kebab-case JSON).

use serde::Serialize;

use crate::datastore::SnapshotInfo;
use crate::format::manifest::{CryptMode, Manifest, MANIFEST_BLOB_NAME};
use crate::format::names::{BackupGroup, BackupNamespace};

/// One file of a snapshot (`files` endpoint and snapshot list).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct BackupContent {
    pub filename: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub crypt_mode: Option<CryptMode>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub size: Option<u64>,
}

/// `{"upid","state"}` from the manifest.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Verification {
    pub upid: String,
    pub state: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct SnapshotListItem {
    pub backup_type: String,
    pub backup_id: String,
    pub backup_time: i64,
    pub files: Vec<BackupContent>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub size: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
    pub protected: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub comment: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub verification: Option<Verification>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fingerprint: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct GroupListItem {
    pub backup_type: String,
    pub backup_id: String,
    pub last_backup: i64,
    pub backup_count: u64,
    pub files: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub comment: Option<String>,
}

/// One prune decision.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct PruneItem {
    pub backup_type: String,
    pub backup_id: String,
    pub backup_time: i64,
    pub keep: bool,
    pub protected: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ns: Option<String>,
    /// Ours: why a snapshot the keep options would remove stays (an active retention lock
    /// or legal hold); `keep` is then true. Clients that do not know the field ignore it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retention_lock: Option<String>,
}

/// First line of a notes text, `None` when empty.
pub fn first_line(notes: &str) -> Option<String> {
    notes
        .lines()
        .next()
        .map(str::trim_end)
        .filter(|l| !l.is_empty())
        .map(str::to_string)
}

/// Files of a snapshot: manifest entries, then `index.json.blob` (its stored length; crypt-mode
/// sign-only when signed), then other stored files (names only). Without a manifest: names.
pub fn content_list(stored: &[String], manifest: Option<(&Manifest, u64)>) -> Vec<BackupContent> {
    let Some((manifest, raw_len)) = manifest else {
        return stored
            .iter()
            .map(|name| BackupContent {
                filename: name.clone(),
                crypt_mode: None,
                size: None,
            })
            .collect();
    };
    let mut out: Vec<BackupContent> = manifest
        .files
        .iter()
        .map(|f| BackupContent {
            filename: f.filename.clone(),
            crypt_mode: Some(f.crypt_mode),
            size: Some(f.size),
        })
        .collect();
    out.push(BackupContent {
        filename: MANIFEST_BLOB_NAME.to_string(),
        crypt_mode: Some(if manifest.signature.is_some() {
            CryptMode::SignOnly
        } else {
            CryptMode::None
        }),
        size: Some(raw_len),
    });
    for name in stored {
        if !out.iter().any(|c| &c.filename == name) {
            out.push(BackupContent {
                filename: name.clone(),
                crypt_mode: None,
                size: None,
            });
        }
    }
    out
}

/// A SnapshotListItem from what the datastore knows about a snapshot.
pub fn snapshot_item(
    info: &SnapshotInfo,
    manifest: Option<(&Manifest, u64)>,
    owner: Option<String>,
) -> SnapshotListItem {
    let files = content_list(&info.files, manifest);
    let size = manifest.map(|_| files.iter().filter_map(|f| f.size).sum());
    let group = &info.dir.group;
    SnapshotListItem {
        backup_type: group.ty.as_str().to_string(),
        backup_id: group.id.clone(),
        backup_time: info.dir.time,
        files,
        size,
        owner,
        protected: info.protected,
        comment: manifest.and_then(|(m, _)| m.notes().and_then(first_line)),
        verification: manifest.and_then(|(m, _)| {
            m.verify_state().map(|v| Verification {
                upid: v.upid,
                state: v.state,
            })
        }),
        fingerprint: manifest.and_then(|(m, _)| m.key_fingerprint().map(str::to_string)),
    }
}

/// A GroupListItem; `snapshots` oldest first. `last-backup` and `files` come from the newest
/// finished snapshot.
pub fn group_item(
    group: &BackupGroup,
    snapshots: &[SnapshotInfo],
    owner: Option<String>,
    notes: Option<&str>,
) -> GroupListItem {
    let last = snapshots.iter().rev().find(|s| s.finished);
    GroupListItem {
        backup_type: group.ty.as_str().to_string(),
        backup_id: group.id.clone(),
        last_backup: last.map(|s| s.dir.time).unwrap_or(0),
        backup_count: snapshots.len() as u64,
        files: last.map(|s| s.files.clone()).unwrap_or_default(),
        owner,
        comment: notes.and_then(first_line),
    }
}

/// The `ns` field of a prune item: only for non-root namespaces.
pub fn ns_field(ns: &BackupNamespace) -> Option<String> {
    (!ns.is_root()).then(|| ns.display_path())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::manifest::FileInfo;
    use crate::format::names::{BackupDir, BackupType};

    fn info(time: i64, finished: bool, files: &[&str]) -> SnapshotInfo {
        let group = BackupGroup::new(BackupType::Vm, "100").unwrap();
        SnapshotInfo {
            dir: BackupDir::new(group, time).unwrap(),
            files: files.iter().map(|s| s.to_string()).collect(),
            finished,
            protected: false,
        }
    }

    #[test]
    fn snapshot_item_from_manifest() {
        let mut m = Manifest::new("vm", "100", 1000);
        m.files.push(FileInfo {
            filename: "drive-scsi0.img.fidx".into(),
            crypt_mode: CryptMode::Encrypt,
            size: 4096,
            csum: "00".repeat(32),
        });
        m.signature = Some("ab".repeat(32));
        m.set_notes("first line\nsecond");
        let i = info(
            1000,
            true,
            &["client.log.blob", "drive-scsi0.img.fidx", "index.json.blob"],
        );
        let item = snapshot_item(&i, Some((&m, 300)), Some("root@pam".into()));
        let json = serde_json::to_value(&item).unwrap();
        assert_eq!(json["backup-type"], "vm");
        assert_eq!(json["backup-time"], 1000);
        assert_eq!(json["size"], 4396);
        assert_eq!(json["comment"], "first line");
        assert_eq!(json["protected"], false);
        let files = json["files"].as_array().unwrap();
        assert_eq!(files.len(), 3);
        assert_eq!(files[0]["crypt-mode"], "encrypt");
        assert_eq!(files[1]["filename"], "index.json.blob");
        assert_eq!(files[1]["crypt-mode"], "sign-only");
        assert_eq!(files[1]["size"], 300);
        assert_eq!(files[2]["filename"], "client.log.blob");
        assert!(files[2].get("size").is_none());
        assert!(json.get("verification").is_none());
    }

    #[test]
    fn unfinished_snapshot_and_group_item() {
        let running = info(2000, false, &["a.didx"]);
        let item = snapshot_item(&running, None, None);
        let json = serde_json::to_value(&item).unwrap();
        assert!(json.get("size").is_none());
        assert_eq!(json["files"][0]["filename"], "a.didx");
        assert!(json["files"][0].get("crypt-mode").is_none());

        let done = info(1000, true, &["index.json.blob", "x.blob"]);
        let group = done.dir.group.clone();
        let g = group_item(&group, &[done, running], Some("a@pbs".into()), Some("\n"));
        let json = serde_json::to_value(&g).unwrap();
        assert_eq!(json["last-backup"], 1000);
        assert_eq!(json["backup-count"], 2);
        assert_eq!(json["files"][1], "x.blob");
        assert!(json.get("comment").is_none());
        let empty = group_item(&group, &[], None, None);
        assert_eq!(empty.last_backup, 0);
    }
}
