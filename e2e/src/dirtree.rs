//! A tiny deterministic directory-tree stream standing in for pxar (tests only need to
//! back up a directory and compare the restored tree byte for byte).
//!
//! Record: kind (`d`/`f`/`l`), u32 LE path length, path (relative, `/`-separated),
//! u32 LE mode, u64 LE size, then `size` content bytes (file data or symlink target).
//! Entries are sorted by path, parents before children.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use crate::error::{ClientError, Result};

/// One entry of the tree (for the catalog and listings).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TreeEntry {
    pub kind: u8,
    pub path: String,
    pub mode: u32,
    pub size: u64,
}

/// Serialises `root` into the stream; returns the bytes and the entry list.
pub fn encode_dir(root: &Path) -> Result<(Vec<u8>, Vec<TreeEntry>)> {
    let mut out = Vec::new();
    let mut entries = Vec::new();
    walk(root, "", &mut out, &mut entries)?;
    Ok((out, entries))
}

fn io_err(what: &str, p: &Path, e: std::io::Error) -> ClientError {
    ClientError::io(format!("{what} {}", p.display()), e)
}

fn walk(dir: &Path, rel: &str, out: &mut Vec<u8>, entries: &mut Vec<TreeEntry>) -> Result<()> {
    let mut names: Vec<_> = std::fs::read_dir(dir)
        .map_err(|e| io_err("read dir", dir, e))?
        .filter_map(|e| e.ok().map(|e| e.file_name()))
        .collect();
    names.sort();
    for name in names {
        let path = dir.join(&name);
        let name = name.to_string_lossy();
        let rel_path = if rel.is_empty() {
            name.to_string()
        } else {
            format!("{rel}/{name}")
        };
        let meta = std::fs::symlink_metadata(&path).map_err(|e| io_err("stat", &path, e))?;
        let mode = meta.permissions().mode() & 0o7777;
        let ft = meta.file_type();
        let (kind, content) = if ft.is_symlink() {
            let t = std::fs::read_link(&path).map_err(|e| io_err("readlink", &path, e))?;
            (b'l', t.to_string_lossy().into_owned().into_bytes())
        } else if ft.is_dir() {
            (b'd', Vec::new())
        } else if ft.is_file() {
            (
                b'f',
                std::fs::read(&path).map_err(|e| io_err("read", &path, e))?,
            )
        } else {
            continue; // devices, fifos, sockets: not needed by the tests
        };
        out.push(kind);
        out.extend_from_slice(&(rel_path.len() as u32).to_le_bytes());
        out.extend_from_slice(rel_path.as_bytes());
        out.extend_from_slice(&mode.to_le_bytes());
        out.extend_from_slice(&(content.len() as u64).to_le_bytes());
        out.extend_from_slice(&content);
        entries.push(TreeEntry {
            kind,
            path: rel_path.clone(),
            mode,
            size: content.len() as u64,
        });
        if kind == b'd' {
            walk(&path, &rel_path, out, entries)?;
        }
    }
    Ok(())
}

/// Parses a stream into entries with their content.
pub fn decode(stream: &[u8]) -> Result<Vec<(TreeEntry, &[u8])>> {
    let bad = |m: &str, at: usize| ClientError::Format(format!("tree stream at byte {at}: {m}"));
    let mut pos = 0;
    let mut out = Vec::new();
    let take = |pos: &mut usize, n: usize| -> Result<&[u8]> {
        let s = stream
            .get(*pos..*pos + n)
            .ok_or_else(|| bad("truncated", *pos))?;
        *pos += n;
        Ok(s)
    };
    while pos < stream.len() {
        let kind = take(&mut pos, 1)?[0];
        let plen = u32::from_le_bytes(take(&mut pos, 4)?.try_into().unwrap_or_default()) as usize;
        let path = std::str::from_utf8(take(&mut pos, plen)?)
            .map_err(|_| bad("path not UTF-8", pos))?
            .to_string();
        if path.is_empty()
            || path.starts_with('/')
            || path.split('/').any(|c| c == ".." || c == ".")
        {
            return Err(bad("unsafe path", pos));
        }
        let mode = u32::from_le_bytes(take(&mut pos, 4)?.try_into().unwrap_or_default());
        let size = u64::from_le_bytes(take(&mut pos, 8)?.try_into().unwrap_or_default());
        let content = take(&mut pos, size as usize)?;
        if !matches!(kind, b'd' | b'f' | b'l') {
            return Err(bad("unknown entry kind", pos));
        }
        out.push((
            TreeEntry {
                kind,
                path,
                mode,
                size,
            },
            content,
        ));
    }
    Ok(out)
}

/// Restores a stream into `target` (created if missing).
pub fn restore_dir(stream: &[u8], target: &Path) -> Result<()> {
    std::fs::create_dir_all(target).map_err(|e| io_err("create", target, e))?;
    let entries = decode(stream)?;
    for (e, content) in &entries {
        let p = target.join(&e.path);
        match e.kind {
            b'd' => std::fs::create_dir_all(&p).map_err(|er| io_err("mkdir", &p, er))?,
            b'f' => std::fs::write(&p, content).map_err(|er| io_err("write", &p, er))?,
            _ => {
                let t = String::from_utf8_lossy(content).into_owned();
                std::os::unix::fs::symlink(t, &p).map_err(|er| io_err("symlink", &p, er))?
            }
        }
    }
    // modes last, so read-only directories do not block their children
    for (e, _) in entries.iter().rev() {
        if e.kind != b'l' {
            let p = target.join(&e.path);
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(e.mode))
                .map_err(|er| io_err("chmod", &p, er))?;
        }
    }
    Ok(())
}

/// Deterministic catalog bytes for one archive (stands in for `catalog.pcat1`).
pub fn catalog_bytes(archive: &str, entries: &[TreeEntry]) -> Vec<u8> {
    let mut out = format!("archive {archive}\n").into_bytes();
    for e in entries {
        out.extend_from_slice(
            format!("{} {:o} {} {}\n", e.kind as char, e.mode, e.size, e.path).as_bytes(),
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roundtrip() {
        let src = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(src.path().join("a/b")).unwrap();
        std::fs::write(src.path().join("a/b/f.txt"), b"hello").unwrap();
        std::fs::write(src.path().join("top"), vec![1u8; 1000]).unwrap();
        std::os::unix::fs::symlink("top", src.path().join("link")).unwrap();
        let (stream, entries) = encode_dir(src.path()).unwrap();
        assert_eq!(entries.len(), 5);
        let dst = tempfile::tempdir().unwrap();
        restore_dir(&stream, dst.path()).unwrap();
        let (stream2, _) = encode_dir(dst.path()).unwrap();
        assert_eq!(stream, stream2);
        assert!(decode(&stream[..stream.len() - 1]).is_err());
    }
}
