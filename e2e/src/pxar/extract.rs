//! Restores a decoded archive into a directory: contents, symlinks, hardlinks, devices and
//! FIFOs, then permissions, owners (when running as root) and modification times.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use crate::error::{ClientError, Result};

use super::decoder::{decode, DecodedKind};
use super::format::{Stat, S_IFBLK};

fn io_err(what: &str, p: &Path, e: impl Into<std::io::Error>) -> ClientError {
    ClientError::io(format!("{what} {}", p.display()), e.into())
}

/// Owner (when running as root) and permissions, without opening the file.
fn owner_and_mode(path: &Path, stat: &Stat) -> Result<()> {
    if nix::unistd::geteuid().is_root() {
        std::os::unix::fs::lchown(path, Some(stat.uid), Some(stat.gid))
            .map_err(|e| io_err("chown", path, e))?;
    }
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(stat.mode & 0o7777))
        .map_err(|e| io_err("chmod", path, e))
}

/// The mtime of an entry itself (symlinks are not followed).
fn set_mtime(path: &Path, stat: &Stat) -> Result<()> {
    use nix::sys::stat::{utimensat, UtimensatFlags};
    use nix::sys::time::TimeSpec;
    let t = TimeSpec::new(stat.mtime_secs, i64::from(stat.mtime_nanos));
    utimensat(
        nix::fcntl::AT_FDCWD,
        path,
        &TimeSpec::UTIME_OMIT,
        &t,
        UtimensatFlags::NoFollowSymlink,
    )
    .map_err(|e| io_err("set mtime", path, std::io::Error::from(e)))
}

/// Owner, permissions and mtime of a restored entry.
fn apply(path: &Path, stat: &Stat) -> Result<()> {
    owner_and_mode(path, stat)?;
    set_mtime(path, stat)
}

/// Restores `archive` (with its payload stream for split archives) into `target`.
pub fn extract(archive: &[u8], payload: Option<&[u8]>, target: &Path) -> Result<()> {
    let entries = decode(archive, payload)?;
    std::fs::create_dir_all(target).map_err(|e| io_err("create", target, e))?;
    let join = |rel: &[u8]| -> PathBuf { target.join(OsStr::from_bytes(rel)) };
    let mut dirs = Vec::new();
    for e in &entries {
        let p = join(&e.path);
        match &e.kind {
            DecodedKind::Dir => {
                if !e.path.is_empty() {
                    std::fs::create_dir(&p).map_err(|er| io_err("mkdir", &p, er))?;
                }
                dirs.push((p, e.stat));
            }
            DecodedKind::File {
                data,
                payload_offset,
                ..
            } => {
                let src = match payload_offset {
                    Some(_) => payload.ok_or_else(|| {
                        ClientError::Format("split archive restored without its payload".into())
                    })?,
                    None => archive,
                };
                let bytes = src
                    .get(data.0 as usize..(data.0 + data.1) as usize)
                    .ok_or_else(|| {
                        ClientError::Format(format!("content of {} out of range", p.display()))
                    })?;
                std::fs::write(&p, bytes).map_err(|er| io_err("write", &p, er))?;
                apply(&p, &e.stat)?;
            }
            DecodedKind::Symlink(t) => {
                std::os::unix::fs::symlink(OsStr::from_bytes(t), &p)
                    .map_err(|er| io_err("symlink", &p, er))?;
                if nix::unistd::geteuid().is_root() {
                    std::os::unix::fs::lchown(&p, Some(e.stat.uid), Some(e.stat.gid))
                        .map_err(|er| io_err("chown", &p, er))?;
                }
                set_mtime(&p, &e.stat)?;
            }
            DecodedKind::Hardlink(first) => {
                std::fs::hard_link(join(first), &p).map_err(|er| io_err("link", &p, er))?;
            }
            DecodedKind::Device(major, minor) => {
                use nix::sys::stat::{makedev, mknod, Mode, SFlag};
                let kind = if e.stat.file_type() == S_IFBLK {
                    SFlag::S_IFBLK
                } else {
                    SFlag::S_IFCHR
                };
                let mode = Mode::from_bits_truncate(e.stat.mode & 0o7777);
                mknod(&p, kind, mode, makedev(*major, *minor))
                    .map_err(|er| io_err("mknod", &p, std::io::Error::from(er)))?;
                apply(&p, &e.stat)?;
            }
            DecodedKind::Fifo => {
                let mode = nix::sys::stat::Mode::from_bits_truncate(e.stat.mode & 0o7777);
                nix::unistd::mkfifo(&p, mode)
                    .map_err(|er| io_err("mkfifo", &p, std::io::Error::from(er)))?;
                apply(&p, &e.stat)?;
            }
            DecodedKind::Socket => {} // sockets cannot be restored as files
        }
    }
    // directories last and innermost first, so their mtimes and modes stick
    for (p, stat) in dirs.iter().rev() {
        apply(p, stat)?;
    }
    Ok(())
}
