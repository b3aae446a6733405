//! Local-filesystem backend: one file per object under a root directory.
//!
//! Keys map 1:1 to relative paths so that a datastore directory written by PBS can be served
//! unchanged (docs/design.md#pbs-key-layout). Writes go to a temp file in the target directory, are
//! fsynced and renamed (or hard-linked for only-if-absent), then the directory is fsynced: a crash
//! leaves the old object or the new one, never a torn file.

use std::fs::{DirBuilder, File, FileTimes};
use std::io::{ErrorKind, Write};
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use bytes::Bytes;

use super::dir_names::{DirEntry, DirNames};
use super::{
    Backend, BackendCapabilities, BackendError, Capacity, ListResult, ObjectMeta, PutOptions,
    PutOutcome,
};

/// Name prefix of in-flight temp files; never listed, never accepted as a key component.
const TMP_PREFIX: &str = ".pbs-cloud-tmp.";

/// Filesystem-backed object store rooted at one directory (mode 0700).
#[derive(Debug, Clone)]
pub struct LocalBackend {
    root: PathBuf,
    /// Names of the last directory listed by a partial name (`dir_names.rs`).
    names: DirNames,
}

impl LocalBackend {
    /// Open (creating it with mode 0700 if needed) the directory that holds the objects.
    pub fn open(root: &Path) -> Result<Self, BackendError> {
        let key = root.display().to_string();
        DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(root)
            .map_err(|e| BackendError::io(&key, e))?;
        let meta = std::fs::metadata(root).map_err(|e| BackendError::io(&key, e))?;
        if !meta.is_dir() {
            return Err(BackendError::InvalidKey {
                key,
                reason: "datastore root is not a directory".into(),
            });
        }
        Ok(Self {
            root: root.to_path_buf(),
            names: DirNames::default(),
        })
    }

    /// Directory holding the objects.
    pub fn root(&self) -> &Path {
        &self.root
    }
}

fn invalid(key: &str, reason: &str) -> BackendError {
    BackendError::InvalidKey {
        key: key.to_string(),
        reason: reason.to_string(),
    }
}

/// Refuse anything that could escape the root or alias another key.
fn validate_key(key: &str) -> Result<(), BackendError> {
    if key.is_empty() {
        return Err(invalid(key, "empty key"));
    }
    if key.starts_with('/') {
        return Err(invalid(key, "absolute key"));
    }
    if key.contains('\\') {
        return Err(invalid(key, "backslash in key"));
    }
    if key.contains('\0') {
        return Err(invalid(key, "NUL byte in key"));
    }
    for comp in key.split('/') {
        match comp {
            "" => return Err(invalid(key, "empty path component")),
            "." | ".." => return Err(invalid(key, "'.' or '..' component")),
            c if c.starts_with(TMP_PREFIX) => {
                return Err(invalid(key, "reserved temp-file name"));
            }
            _ => {}
        }
    }
    Ok(())
}

/// Split a list prefix into its directory part (validated) and the leading part of a name.
fn split_prefix(prefix: &str) -> Result<(&str, &str), BackendError> {
    if prefix.contains('\\') || prefix.contains('\0') || prefix.starts_with('/') {
        return Err(invalid(prefix, "invalid list prefix"));
    }
    match prefix.rfind('/') {
        None => Ok(("", prefix)),
        Some(pos) => {
            let dir = &prefix[..pos];
            validate_key(dir)?;
            Ok((dir, &prefix[pos + 1..]))
        }
    }
}

fn is_missing(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        ErrorKind::NotFound | ErrorKind::NotADirectory | ErrorKind::IsADirectory
    )
}

/// Creates `dir` and its missing parents below `root`, fsyncing each new directory's parent so
/// that a new snapshot or group directory survives a crash together with the files written
/// into it. Returns the directories it created (outermost first).
fn create_dirs(root: &Path, dir: &Path, key: &str) -> Result<Vec<PathBuf>, BackendError> {
    let mut missing = Vec::new();
    let mut cur = Some(dir);
    while let Some(d) = cur {
        if d == root || !d.starts_with(root) || d.is_dir() {
            break;
        }
        missing.push(d.to_path_buf());
        cur = d.parent();
    }
    missing.reverse();
    let mut created = Vec::new();
    for d in missing {
        match DirBuilder::new().mode(0o700).create(&d) {
            Ok(()) => {
                fsync_dir(d.parent().unwrap_or(root), key)?;
                created.push(d);
            }
            // Created by a concurrent put meanwhile: that put syncs it into its parent.
            Err(e) if e.kind() == ErrorKind::AlreadyExists => {}
            Err(e) => return Err(BackendError::io(key, e)),
        }
    }
    Ok(created)
}

fn fsync_dir(dir: &Path, key: &str) -> Result<(), BackendError> {
    #[cfg(test)]
    tests::note_dir_sync(dir);
    File::open(dir)
        .and_then(|f| f.sync_all())
        .map_err(|e| BackendError::io(key, e))
}

/// Removes in-flight temp files (`.pbs-cloud-tmp.*`) last modified before `before` anywhere
/// under `dir`: leftovers of a process that died while writing. Returns how many were removed.
fn remove_temp_files(dir: &Path, before: SystemTime) -> Result<u64, BackendError> {
    let key = dir.display().to_string();
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if is_missing(&e) => return Ok(0),
        Err(e) => return Err(BackendError::io(&key, e)),
    };
    let mut removed = 0;
    for entry in entries {
        let entry = entry.map_err(|e| BackendError::io(&key, e))?;
        let Ok(ft) = entry.file_type() else { continue };
        let path = entry.path();
        if ft.is_dir() {
            removed += remove_temp_files(&path, before)?;
            continue;
        }
        let is_temp = entry
            .file_name()
            .to_str()
            .is_some_and(|n| n.starts_with(TMP_PREFIX));
        if !ft.is_file() || !is_temp {
            continue;
        }
        let old = entry
            .metadata()
            .and_then(|m| m.modified())
            .is_ok_and(|t| t < before);
        if old {
            match std::fs::remove_file(&path) {
                Ok(()) => removed += 1,
                Err(e) if is_missing(&e) => {}
                Err(e) => return Err(BackendError::io(&path.display().to_string(), e)),
            }
        }
    }
    Ok(removed)
}

/// Remove now-empty directories from `start` upwards, stopping at the first non-empty one and
/// never removing the root. A directory holding a `.namespace` marker is never empty.
fn remove_empty_parents(root: &Path, start: Option<&Path>) {
    let mut cur = start;
    while let Some(dir) = cur {
        if dir == root || !dir.starts_with(root) {
            break;
        }
        if std::fs::remove_dir(dir).is_err() {
            break;
        }
        cur = dir.parent();
    }
}

/// Remove empty directories below `dir` (post-order), leaving any that still hold files.
fn remove_empty_subdirs(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        if entry.file_type().map(|t| t.is_dir()).unwrap_or(false) {
            let path = entry.path();
            remove_empty_subdirs(&path);
            let _ = std::fs::remove_dir(&path);
        }
    }
}

fn meta_of(key: String, meta: &std::fs::Metadata) -> ObjectMeta {
    ObjectMeta {
        key,
        size: meta.len(),
        modified: meta.modified().unwrap_or(SystemTime::UNIX_EPOCH),
    }
}

fn put_blocking(
    root: &Path,
    key: &str,
    data: &[u8],
    opts: &PutOptions,
) -> Result<PutOutcome, BackendError> {
    validate_key(key)?;
    if let Some(expected) = &opts.sha256 {
        if crate::format::sha256(data) != *expected {
            return Err(BackendError::ChecksumMismatch {
                key: key.to_string(),
            });
        }
    }
    let path = root.join(key);
    let dir = path.parent().unwrap_or(root).to_path_buf();
    // A concurrent delete may remove the (empty) directory between mkdir and the temp file
    // creation; retry a few times in that case.
    let mut attempt = 0;
    let mut tmp = loop {
        create_dirs(root, &dir, key)?;
        match tempfile::Builder::new()
            .prefix(TMP_PREFIX)
            .tempfile_in(&dir)
        {
            Ok(t) => break t,
            Err(e) if e.kind() == ErrorKind::NotFound && attempt < 4 => attempt += 1,
            Err(e) => return Err(BackendError::io(key, e)),
        }
    };
    tmp.write_all(data)
        .and_then(|_| tmp.as_file().sync_all())
        .map_err(|e| BackendError::io(key, e))?;
    crate::fault::pause_at("local-temp-written", key);
    let outcome = if opts.if_absent {
        match std::fs::hard_link(tmp.path(), &path) {
            Ok(()) => PutOutcome::Written,
            Err(e) if e.kind() == ErrorKind::AlreadyExists => PutOutcome::AlreadyExists,
            Err(e) => return Err(BackendError::io(key, e)),
        }
        // `tmp` is dropped below, removing the temp name.
    } else {
        tmp.persist(&path)
            .map_err(|e| BackendError::io(key, e.error))?;
        PutOutcome::Written
    };
    if outcome == PutOutcome::Written {
        fsync_dir(&dir, key)?;
    }
    Ok(outcome)
}

fn walk(dir: &Path, key_base: &str, out: &mut Vec<ObjectMeta>) -> Result<(), BackendError> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if is_missing(&e) => return Ok(()),
        Err(e) => return Err(BackendError::io(key_base, e)),
    };
    for entry in entries {
        let entry = entry.map_err(|e| BackendError::io(key_base, e))?;
        let Ok(name) = entry.file_name().into_string() else {
            continue;
        };
        if name.starts_with(TMP_PREFIX) {
            continue;
        }
        let key = format!("{key_base}{name}");
        let Ok(ft) = entry.file_type() else { continue };
        if ft.is_dir() {
            walk(&entry.path(), &format!("{key}/"), out)?;
        } else if ft.is_file() {
            match entry.metadata() {
                Ok(meta) => out.push(meta_of(key, &meta)),
                Err(e) if is_missing(&e) => {}
                Err(e) => return Err(BackendError::io(&key, e)),
            }
        }
    }
    Ok(())
}

/// Every entry of `dir` (temp files left out), with whether it is a directory.
fn read_entries(dir: &Path) -> std::io::Result<Vec<DirEntry>> {
    let mut entries = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let Ok(name) = entry.file_name().into_string() else {
            continue;
        };
        if name.starts_with(TMP_PREFIX) {
            continue;
        }
        let is_dir = match entry.file_type() {
            Ok(ft) if ft.is_dir() => Some(true),
            Ok(ft) if ft.is_file() => Some(false),
            _ => None,
        };
        entries.push(DirEntry { name, is_dir });
    }
    Ok(entries)
}

fn list_blocking(
    root: &Path,
    names: &DirNames,
    prefix: &str,
    delimiter: Option<char>,
) -> Result<ListResult, BackendError> {
    if let Some(d) = delimiter {
        if d != '/' {
            return Err(BackendError::Unsupported {
                what: format!("list delimiter '{d}' (only '/' is supported)"),
            });
        }
    }
    let (dir, name_prefix) = split_prefix(prefix)?;
    let dir_path = if dir.is_empty() {
        root.to_path_buf()
    } else {
        root.join(dir)
    };
    let key_base = if dir.is_empty() {
        String::new()
    } else {
        format!("{dir}/")
    };
    let mut result = ListResult::default();
    let missing_is_empty = |e: std::io::Error| match is_missing(&e) {
        true => Ok(Vec::new()),
        false => Err(BackendError::io(prefix, e)),
    };
    // A partial name reads the whole directory: its names are kept while it is unchanged.
    let entries = if name_prefix.is_empty() {
        read_entries(&dir_path).or_else(missing_is_empty)?
    } else {
        match std::fs::metadata(&dir_path) {
            Ok(meta) => names
                .entries_with_prefix(&dir_path, &meta, name_prefix, || read_entries(&dir_path))
                .or_else(missing_is_empty)?,
            Err(e) => missing_is_empty(e)?,
        }
    };
    for entry in entries {
        let key = format!("{key_base}{}", entry.name);
        let path = dir_path.join(&entry.name);
        match entry.is_dir {
            Some(true) if delimiter.is_some() => result.prefixes.push(format!("{key}/")),
            Some(true) => walk(&path, &format!("{key}/"), &mut result.objects)?,
            Some(false) => match std::fs::symlink_metadata(&path) {
                Ok(meta) => result.objects.push(meta_of(key, &meta)),
                Err(e) if is_missing(&e) => {}
                Err(e) => return Err(BackendError::io(&key, e)),
            },
            None => {}
        }
    }
    result.objects.sort_by(|a, b| a.key.cmp(&b.key));
    result.prefixes.sort();
    Ok(result)
}

fn delete_blocking(root: &Path, key: &str) -> Result<(), BackendError> {
    validate_key(key)?;
    let path = root.join(key);
    match std::fs::remove_file(&path) {
        Ok(()) => {}
        Err(e) if is_missing(&e) => return Ok(()),
        Err(e) => return Err(BackendError::io(key, e)),
    }
    remove_empty_parents(root, path.parent());
    Ok(())
}

async fn blocking<T, F>(key: &str, f: F) -> Result<T, BackendError>
where
    T: Send + 'static,
    F: FnOnce() -> Result<T, BackendError> + Send + 'static,
{
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| BackendError::Internal {
            key: key.to_string(),
            message: e.to_string(),
        })?
}

#[async_trait::async_trait]
impl Backend for LocalBackend {
    fn capabilities(&self) -> BackendCapabilities {
        BackendCapabilities {
            kind: "filesystem",
            exclusive_to_server: false,
            wants_put_checksum: false,
            retention_needs_object_lock: false,
        }
    }

    async fn put(
        &self,
        key: &str,
        data: Bytes,
        opts: PutOptions,
    ) -> Result<PutOutcome, BackendError> {
        let root = self.root.clone();
        let k = key.to_string();
        blocking(key, move || put_blocking(&root, &k, &data, &opts)).await
    }

    async fn get(&self, key: &str) -> Result<Bytes, BackendError> {
        validate_key(key)?;
        let path = self.root.join(key);
        let k = key.to_string();
        blocking(key, move || match std::fs::read(&path) {
            Ok(data) => Ok(Bytes::from(data)),
            Err(e) if is_missing(&e) => Err(BackendError::NotFound { key: k }),
            Err(e) => Err(BackendError::io(&k, e)),
        })
        .await
    }

    async fn get_range(&self, key: &str, offset: u64, len: u64) -> Result<Bytes, BackendError> {
        use std::io::{Read, Seek, SeekFrom};
        validate_key(key)?;
        let path = self.root.join(key);
        let k = key.to_string();
        blocking(key, move || {
            let mut file = match std::fs::File::open(&path) {
                Ok(file) => file,
                Err(e) if is_missing(&e) => return Err(BackendError::NotFound { key: k }),
                Err(e) => return Err(BackendError::io(&k, e)),
            };
            file.seek(SeekFrom::Start(offset))
                .map_err(|e| BackendError::io(&k, e))?;
            let mut data = Vec::new();
            file.take(len)
                .read_to_end(&mut data)
                .map_err(|e| BackendError::io(&k, e))?;
            Ok(Bytes::from(data))
        })
        .await
    }

    async fn head(&self, key: &str) -> Result<Option<ObjectMeta>, BackendError> {
        validate_key(key)?;
        let path = self.root.join(key);
        let k = key.to_string();
        blocking(key, move || match std::fs::symlink_metadata(&path) {
            Ok(meta) if meta.is_file() => Ok(Some(meta_of(k, &meta))),
            Ok(_) => Ok(None),
            Err(e) if is_missing(&e) => Ok(None),
            Err(e) => Err(BackendError::io(&k, e)),
        })
        .await
    }

    async fn list(
        &self,
        prefix: &str,
        delimiter: Option<char>,
    ) -> Result<ListResult, BackendError> {
        let root = self.root.clone();
        let names = self.names.clone();
        let p = prefix.to_string();
        blocking(prefix, move || list_blocking(&root, &names, &p, delimiter)).await
    }

    async fn delete(&self, key: &str) -> Result<(), BackendError> {
        let root = self.root.clone();
        let k = key.to_string();
        blocking(key, move || delete_blocking(&root, &k)).await
    }

    async fn delete_many(&self, keys: &[String]) -> Result<(), BackendError> {
        let root = self.root.clone();
        let keys = keys.to_vec();
        blocking("<many>", move || {
            keys.iter().try_for_each(|k| delete_blocking(&root, k))
        })
        .await
    }

    async fn delete_prefix(&self, prefix: &str) -> Result<u64, BackendError> {
        let root = self.root.clone();
        let p = prefix.to_string();
        blocking(prefix, move || {
            let listed = list_blocking(&root, &DirNames::default(), &p, None)?;
            for obj in &listed.objects {
                delete_blocking(&root, &obj.key)?;
            }
            // A directory prefix also takes empty sub-directories (e.g. PBS-created namespace
            // directories without objects) with it.
            if let Some(dir) = p.strip_suffix('/') {
                if !dir.is_empty() {
                    let dir_path = root.join(dir);
                    remove_empty_subdirs(&dir_path);
                    remove_empty_parents(&root, Some(&dir_path));
                }
            }
            Ok(listed.objects.len() as u64)
        })
        .await
    }

    async fn touch(&self, key: &str) -> Result<(), BackendError> {
        validate_key(key)?;
        let path = self.root.join(key);
        let k = key.to_string();
        blocking(key, move || {
            let now = SystemTime::now();
            let file = File::open(&path).map_err(|e| match is_missing(&e) {
                true => BackendError::NotFound { key: k.clone() },
                false => BackendError::io(&k, e),
            })?;
            file.set_times(FileTimes::new().set_accessed(now).set_modified(now))
                .map_err(|e| BackendError::io(&k, e))
        })
        .await
    }

    async fn remove_stale_temp_files(&self, before: SystemTime) -> Result<u64, BackendError> {
        let root = self.root.clone();
        blocking("<root>", move || remove_temp_files(&root, before)).await
    }

    async fn capacity(&self) -> Result<Option<Capacity>, BackendError> {
        let root = self.root.clone();
        blocking("<root>", move || {
            let st = rustix::fs::statvfs(&root)
                .map_err(|e| BackendError::io("<root>", std::io::Error::from(e)))?;
            let frsize = st.f_frsize;
            Ok(Some(Capacity {
                total: st.f_blocks.saturating_mul(frsize),
                used: st
                    .f_blocks
                    .saturating_sub(st.f_bfree)
                    .saturating_mul(frsize),
                avail: st.f_bavail.saturating_mul(frsize),
            }))
        })
        .await
    }
}

#[cfg(test)]
#[path = "local_tests.rs"]
mod tests;

/// Writes a small private file (keys, certificates, generated secrets) atomically: a 0600 temp
/// file in the same directory, fsync, rename. For files outside any datastore.
pub fn write_private_file(path: &Path, data: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let dir = path.parent().unwrap_or_else(|| Path::new("."));
    // tempfile creates its files with mode 0600.
    let mut tmp = tempfile::NamedTempFile::new_in(dir)?;
    tmp.write_all(data)?;
    tmp.as_file().sync_all()?;
    tmp.persist(path).map_err(|e| e.error)?;
    Ok(())
}
