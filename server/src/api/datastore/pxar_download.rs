//! `GET /admin/datastore/{store}/pxar-file-download`: one file of a pxar archive as its raw
//! bytes, or one directory as a ZIP (default) or a zstd-compressed tar (`tar=1`), streamed.

use std::sync::Arc;

use bytes::Bytes;
use http::Response;
use tokio::sync::mpsc;

use super::archive::{
    decode_base64_path, open_archive, open_snapshot, pxar_archive_names, pxar_error,
    refuse_encrypted,
};
use super::dir_archive::{self, DirFormat};
use crate::api::context::Ctx;
use crate::datastore::DidxSource;
use crate::format::pxar::{Archive, EntryKind, PayloadRange, PxarError};
use crate::net::{octet_stream_channel, Body, HttpError};
use crate::state::DatastoreEntry;

/// Bytes read from the archive per step while streaming one file.
const PIECE: usize = 1024 * 1024;
/// Pieces queued towards the client (the rest waits in the producer).
const QUEUE: usize = 4;

/// Splits the decoded `filepath` into the archive name and the path inside it.
fn split_path(raw: &[u8], archive_name: Option<String>) -> Result<(String, Vec<u8>), HttpError> {
    if let Some(name) = archive_name {
        return Ok((name, raw.to_vec()));
    }
    let path = raw.strip_prefix(b"/").unwrap_or(raw);
    let (name, inner) = match path.iter().position(|b| *b == b'/') {
        Some(i) => (&path[..i], path[i + 1..].to_vec()),
        None => (path, b"/".to_vec()),
    };
    let name = std::str::from_utf8(name)
        .ok()
        .filter(|n| !n.is_empty() && !n.contains(['\\', '\0']))
        .ok_or_else(|| {
            HttpError::bad_request(format!(
                "invalid archive name '{}'",
                String::from_utf8_lossy(name)
            ))
        })?;
    let name = if [".didx", ".fidx", ".blob"]
        .iter()
        .any(|e| name.ends_with(e))
    {
        name.to_string()
    } else {
        format!("{name}.didx")
    };
    Ok((name, inner))
}

pub async fn get(ctx: &Ctx, entry: &DatastoreEntry) -> Result<Response<Body>, HttpError> {
    let filepath = ctx.params.required_str("filepath")?;
    let format = match ctx.params.bool_or("tar", false)? {
        true => DirFormat::TarZstd,
        false => DirFormat::Zip,
    };
    let archive_name = ctx.params.str("archive-name")?;
    let snap = open_snapshot(ctx, entry).await?;
    let raw = decode_base64_path(&filepath)?;
    let (name, inner) = split_path(&raw, archive_name)?;
    refuse_encrypted(&snap.manifest, &name)?;
    let names = pxar_archive_names(&snap.manifest, &name)?;
    let archive = open_archive(entry, &snap, &names, true).await?;
    let shown = String::from_utf8_lossy(&inner).into_owned();
    let found = archive.lookup(&inner).await.map_err(|e| match e {
        PxarError::NotFound(_) => HttpError::bad_request(format!("error opening {shown:?}")),
        other => pxar_error(&names.0, other),
    })?;
    let lease = Arc::new(snap.lease);
    let archive = Arc::new(archive);
    match found.kind {
        EntryKind::File { .. } | EntryKind::Hardlink { .. } => {
            let file = archive
                .follow_hardlink(&found)
                .await
                .map_err(|e| pxar_error(&names.0, e))?;
            let range = archive
                .payload_range(&file)
                .await
                .map_err(|e| pxar_error(&names.0, e))?;
            let (tx, rx) = mpsc::channel(QUEUE);
            tokio::spawn(async move {
                let _lease = lease;
                stream_file(&archive, range, tx).await;
            });
            Ok(octet_stream_channel(rx))
        }
        EntryKind::Directory { .. } => {
            // Member names start with the directory's own name (none for the archive root).
            let top = found.name.clone();
            Ok(dir_archive::stream(archive, found, top, format, lease))
        }
        other => Err(HttpError::bad_request(format!(
            "cannot download file of type {}",
            other.name()
        ))),
    }
}

/// Sends a file's bytes piece by piece; a failure ends the body early.
async fn stream_file(
    archive: &Archive<DidxSource>,
    range: PayloadRange,
    tx: mpsc::Sender<Result<Bytes, std::io::Error>>,
) {
    let mut at = 0;
    while at < range.size {
        let piece = match archive.read_file(&range, at, PIECE).await {
            Ok(p) => p,
            Err(e) => {
                tracing::warn!("pxar file download stopped: {e}");
                let _ = tx.send(Err(std::io::Error::other(e.to_string()))).await;
                return;
            }
        };
        if piece.is_empty() {
            let _ = tx
                .send(Err(std::io::Error::other("archive ended early")))
                .await;
            return;
        }
        at += piece.len() as u64;
        if tx.send(Ok(piece)).await.is_err() {
            return; // the client went away
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filepath_splitting() {
        let (a, p) = split_path(b"/root.pxar.didx/etc/hosts", None).unwrap();
        assert_eq!(
            (a.as_str(), p.as_slice()),
            ("root.pxar.didx", &b"etc/hosts"[..])
        );
        let (a, p) = split_path(b"root.pxar/etc", None).unwrap();
        assert_eq!((a.as_str(), p.as_slice()), ("root.pxar.didx", &b"etc"[..]));
        let (a, p) = split_path(b"/root.pxar.didx", None).unwrap();
        assert_eq!((a.as_str(), p.as_slice()), ("root.pxar.didx", &b"/"[..]));
        let (_, p) = split_path(b"root.pxar.didx/", None).unwrap();
        assert!(p.is_empty());
        assert!(split_path(b"//x", None).is_err());
        let (a, p) = split_path(b"/etc/hosts", Some("root.mpxar.didx".into())).unwrap();
        assert_eq!(
            (a.as_str(), p.as_slice()),
            ("root.mpxar.didx", &b"/etc/hosts"[..])
        );
    }
}
