//! Object keys of PBS's datastore layout (docs/formats.md#datastore-layout), built and parsed in
//! one place so that no other file concatenates key strings.

use crate::format::names::{BackupDir, BackupGroup, BackupNamespace};
use crate::format::{digest_to_hex, parse_digest_hex, Digest};

use super::DatastoreError;

/// Prefix of the chunk store.
pub const CHUNK_PREFIX: &str = ".chunks/";
/// The manifest; its presence makes a snapshot "finished".
pub const MANIFEST: &str = "index.json.blob";
/// Optional log uploaded after the backup.
pub const CLIENT_LOG: &str = "client.log.blob";
/// Empty marker: snapshot protected from prune and delete.
pub const PROTECTED: &str = ".protected";
/// Group owner ("authid\n").
pub const OWNER: &str = "owner";
/// Group notes (raw UTF-8).
pub const NOTES: &str = "notes";
/// Namespace marker object (S3 has no directories).
pub const NS_MARKER: &str = ".namespace";
/// Last GC result (JSON).
pub const GC_STATUS: &str = ".gc-status";

/// `.chunks/<first 4 hex>/<64 hex>`
pub fn chunk_key(digest: &Digest) -> String {
    let hex = digest_to_hex(digest);
    format!("{CHUNK_PREFIX}{}/{hex}", &hex[..4])
}

/// What a key under `.chunks/` is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ChunkKey {
    /// A chunk.
    Chunk(Digest),
    /// A corrupt chunk moved aside by verify (`<digest>.<n>.bad`).
    Bad(Digest),
}

/// Parse a chunk-store key; temp files and anything unexpected give `None`.
pub fn parse_chunk_key(key: &str) -> Option<ChunkKey> {
    let rest = key.strip_prefix(CHUNK_PREFIX)?;
    let (dir, name) = rest.split_once('/')?;
    let (hex, bad) = match name.split_once('.') {
        None => (name, false),
        Some((hex, suffix)) => {
            let b = suffix.as_bytes();
            if b.len() == 5 && b[0].is_ascii_digit() && &suffix[1..] == ".bad" {
                (hex, true)
            } else {
                return None;
            }
        }
    };
    if dir.len() != 4 || !hex.starts_with(dir) {
        return None;
    }
    let digest = parse_digest_hex(hex).ok()?;
    Some(match bad {
        true => ChunkKey::Bad(digest),
        false => ChunkKey::Chunk(digest),
    })
}

/// "" for the root, else "ns/a/ns/b/".
pub fn ns_prefix(ns: &BackupNamespace) -> String {
    ns.key_prefix()
}

/// `ns/a/ns/b/.namespace` (meaningless for the root).
pub fn ns_marker_key(ns: &BackupNamespace) -> String {
    format!("{}{NS_MARKER}", ns.key_prefix())
}

/// Prefix under which the child namespaces of `ns` live (`<ns>ns/`).
pub fn ns_children_prefix(ns: &BackupNamespace) -> String {
    format!("{}ns/", ns.key_prefix())
}

/// `<ns>/<type>/<id>/`
pub fn group_prefix(ns: &BackupNamespace, group: &BackupGroup) -> String {
    format!("{}{}/{}/", ns.key_prefix(), group.ty.as_str(), group.id)
}

/// `<ns>/<type>/<id>/<file>` for group-level files (owner, notes).
pub fn group_file_key(ns: &BackupNamespace, group: &BackupGroup, file: &str) -> String {
    format!("{}{file}", group_prefix(ns, group))
}

/// `<ns>/<type>/<id>/<time>/`; refuses times that cannot be formatted.
pub fn snapshot_prefix(ns: &BackupNamespace, dir: &BackupDir) -> Result<String, DatastoreError> {
    let time = crate::format::names::format_backup_time(dir.time)?;
    Ok(format!("{}{time}/", group_prefix(ns, &dir.group)))
}

/// Key of a file inside a snapshot; `name` is checked to be a safe single component.
pub fn snapshot_file_key(
    ns: &BackupNamespace,
    dir: &BackupDir,
    name: &str,
) -> Result<String, DatastoreError> {
    check_file_name(name)?;
    Ok(format!("{}{name}", snapshot_prefix(ns, dir)?))
}

/// Snapshot file names are safe ids (or the `.protected` marker), never paths.
pub fn check_file_name(name: &str) -> Result<(), DatastoreError> {
    if name == PROTECTED {
        return Ok(());
    }
    crate::format::names::check_archive_name(name).map_err(DatastoreError::from)
}

/// `*.fidx` / `*.didx`
pub fn is_index_name(name: &str) -> bool {
    name.ends_with(".fidx") || name.ends_with(".didx")
}

/// The names PBS lists as snapshot files: `*.fidx`, `*.didx`, `*.blob`.
pub fn is_snapshot_file_name(name: &str) -> bool {
    is_index_name(name) || name.ends_with(".blob")
}

/// "'a/b'" style label of a namespace for messages ("root" for the root).
pub fn ns_label(ns: &BackupNamespace) -> String {
    if ns.is_root() {
        "root namespace".to_string()
    } else {
        format!("namespace '{}'", ns.display_path())
    }
}

/// "vm/100/<time>" plus the namespace when not root, for messages.
pub fn snapshot_label(ns: &BackupNamespace, dir: &BackupDir) -> String {
    if ns.is_root() {
        dir.path()
    } else {
        format!("{} (namespace '{}')", dir.path(), ns.display_path())
    }
}

/// "vm/100" plus the namespace when not root, for messages.
pub fn group_label(ns: &BackupNamespace, group: &BackupGroup) -> String {
    if ns.is_root() {
        group.path()
    } else {
        format!("{} (namespace '{}')", group.path(), ns.display_path())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::names::BackupType;

    #[test]
    fn keys_follow_pbs_layout() {
        let ns = BackupNamespace::parse("a/b").unwrap();
        let group = BackupGroup::new(BackupType::Vm, "100").unwrap();
        let dir = BackupDir::new(group.clone(), 1_700_000_000).unwrap();
        assert_eq!(group_prefix(&ns, &group), "ns/a/ns/b/vm/100/");
        assert_eq!(
            snapshot_prefix(&ns, &dir).unwrap(),
            "ns/a/ns/b/vm/100/2023-11-14T22:13:20Z/"
        );
        assert_eq!(ns_marker_key(&ns), "ns/a/ns/b/.namespace");
        assert_eq!(ns_children_prefix(&BackupNamespace::root()), "ns/");
        assert_eq!(
            group_file_key(&BackupNamespace::root(), &group, OWNER),
            "vm/100/owner"
        );
    }

    #[test]
    fn chunk_keys_round_trip() {
        let d = crate::format::sha256(b"hello");
        let key = chunk_key(&d);
        assert_eq!(key.len(), ".chunks/".len() + 5 + 64);
        assert_eq!(parse_chunk_key(&key), Some(ChunkKey::Chunk(d)));
        assert_eq!(
            parse_chunk_key(&format!("{key}.3.bad")),
            Some(ChunkKey::Bad(d))
        );
        assert_eq!(parse_chunk_key(&format!("{key}.using")), None);
        assert_eq!(parse_chunk_key(&format!("{key}.tmp_abcdef")), None);
        let hex = digest_to_hex(&d);
        assert_eq!(parse_chunk_key(&format!(".chunks/0000/{hex}")), None);
        assert_eq!(parse_chunk_key("owner"), None);
    }

    #[test]
    fn file_names_cannot_escape() {
        for bad in [
            "../x.blob",
            "a/b.blob",
            "",
            ".",
            "..",
            "x\0.blob",
            "/abs.blob",
        ] {
            assert!(check_file_name(bad).is_err(), "{bad:?}");
        }
        assert!(check_file_name("drive-scsi0.img.fidx").is_ok());
        assert!(check_file_name(PROTECTED).is_ok());
    }
}
