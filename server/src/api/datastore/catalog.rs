//! `GET /admin/datastore/{store}/catalog`: one directory of a file-level backup, read from the
//! snapshot's catalog (legacy mode) or, with `archive-name`, from a pxar archive's goodbye
//! tables (split archives: only the small metadata archive is read).

use http::Response;
use serde::Serialize;

use super::archive::{
    decode_base64_path, encode_base64_path, open_archive, open_snapshot, open_source,
    pxar_archive_names, pxar_error, refuse_encrypted, CATALOG_NAME,
};
use crate::api::context::Ctx;
use crate::format::catalog::{Catalog, CatalogKind};
use crate::format::pxar::{EntryKind, PxarError};
use crate::net::{json_data, Body, HttpError};
use crate::state::DatastoreEntry;

/// One listed entry (fields in alphabetical order, as PBS sends them).
#[derive(Debug, Serialize, PartialEq, Eq)]
pub struct ArchiveEntry {
    /// base64 of the full path, to send back as the next `filepath`.
    pub filepath: String,
    pub leaf: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mtime: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub size: Option<u64>,
    /// Last component, lossy UTF-8.
    pub text: String,
    #[serde(rename = "type")]
    pub kind: String,
}

impl ArchiveEntry {
    fn new(path: &[u8], name: &[u8], type_char: char, file: Option<(u64, i64)>) -> Self {
        Self {
            filepath: encode_base64_path(path),
            leaf: type_char != 'd',
            mtime: file.map(|f| f.1),
            size: file.map(|f| f.0),
            text: String::from_utf8_lossy(name).into_owned(),
            kind: type_char.to_string(),
        }
    }
}

/// `parent` + `/` + `name`.
fn join(parent: &[u8], name: &[u8]) -> Vec<u8> {
    let mut p = parent.to_vec();
    if !p.ends_with(b"/") {
        p.push(b'/');
    }
    p.extend_from_slice(name);
    p
}

pub async fn get(ctx: &Ctx, entry: &DatastoreEntry) -> Result<Response<Body>, HttpError> {
    let filepath = ctx.params.required_str("filepath")?;
    let archive_name = ctx.params.str("archive-name")?;
    let snap = open_snapshot(ctx, entry).await?;
    let path = match filepath.as_str() {
        "root" | "/" => b"/".to_vec(),
        other => decode_base64_path(other)?,
    };
    let list = match archive_name {
        Some(name) => {
            refuse_encrypted(&snap.manifest, &name)?;
            let names = pxar_archive_names(&snap.manifest, &name)?;
            let archive = open_archive(entry, &snap, &names, false).await?;
            let shown = String::from_utf8_lossy(&path).into_owned();
            let found = archive.lookup(&path).await.map_err(|e| match e {
                PxarError::NotFound(_) => {
                    HttpError::bad_request(format!("lookup failed - error opening '{shown}'"))
                }
                other => pxar_error(&names.0, other),
            })?;
            if !found.is_dir() {
                return Err(HttpError::bad_request(format!(
                    "expected directory entry, got entry kind {}",
                    found.kind.name()
                )));
            }
            let dir = archive
                .open_dir(&found)
                .await
                .map_err(|e| pxar_error(&names.0, e))?;
            let children = archive
                .list(&dir)
                .await
                .map_err(|e| pxar_error(&names.0, e))?;
            let base = if path.starts_with(b"/") {
                path.clone()
            } else {
                join(b"", &path)
            };
            children
                .iter()
                .map(|c| {
                    let file = match c.kind {
                        EntryKind::File { size, .. } => {
                            Some((size, c.metadata.stat.mtime_truncated()))
                        }
                        _ => None,
                    };
                    let type_char = c.kind.type_char(&c.metadata);
                    ArchiveEntry::new(&join(&base, &c.name), &c.name, type_char, file)
                })
                .collect::<Vec<_>>()
        }
        None => {
            refuse_encrypted(&snap.manifest, CATALOG_NAME)?;
            let source = open_source(entry, &snap, CATALOG_NAME).await?;
            let catalog = Catalog::open(source)
                .await
                .map_err(|e| pxar_error(CATALOG_NAME, e))?;
            let root = path == b"/";
            let rel: &[u8] = path.strip_prefix(b"/").unwrap_or(&path);
            let components: Vec<&[u8]> = if root {
                Vec::new()
            } else {
                rel.split(|b| *b == b'/').collect()
            };
            let shown = String::from_utf8_lossy(&path).into_owned();
            let entries = catalog.list_path(&components).await.map_err(|e| match e {
                PxarError::NotFound(_) => {
                    HttpError::bad_request(format!("path {shown:?} not found in catalog"))
                }
                PxarError::NotADirectory(_) => {
                    HttpError::bad_request("parent is not a directory - internal error")
                }
                other => pxar_error(CATALOG_NAME, other),
            })?;
            entries
                .iter()
                .map(|e| {
                    let full = if root {
                        join(b"/", &e.name)
                    } else {
                        join(rel, &e.name)
                    };
                    let file = match e.kind {
                        CatalogKind::File { size, mtime } => Some((size, mtime)),
                        _ => None,
                    };
                    ArchiveEntry::new(&full, &e.name, e.kind.type_char(), file)
                })
                .collect()
        }
    };
    drop(snap);
    Ok(json_data(list))
}
