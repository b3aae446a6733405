//! `GET /admin/datastore/{store}/download` (raw stored file) and `download-decoded` (blobs
//! decoded; `.fidx`/`.didx` reassembled from their chunks and streamed, see
//! docs/protocol.md#rest-api).

use std::sync::Arc;

use bytes::Bytes;
use http::Response;
use tokio::sync::mpsc;

use crate::api::context::{ds_error, Ctx};
use crate::auth::Privileges;
use crate::datastore::Datastore;
use crate::format::blob::{BlobView, MAX_BLOB_SIZE, MAX_CHUNK_SIZE};
use crate::format::index::{index_kind_of, AnyIndex};
use crate::format::manifest::CryptMode;
use crate::format::{digest_to_hex, sha256, Digest};
use crate::net::body::octet_stream_channel;
use crate::net::{octet_stream, Body, HttpError};
use crate::state::DatastoreEntry;

/// Decoded chunks queued ahead of the client: the memory of one reassembly stays at a few
/// chunks, whatever the size of the image.
const CHUNKS_AHEAD: usize = 2;

async fn read(ctx: &Ctx, entry: &DatastoreEntry) -> Result<(String, Bytes), HttpError> {
    let ns = ctx.params.namespace("ns")?;
    let dir = ctx.params.snapshot()?;
    let name = ctx.params.required_str("file-name")?;
    ctx.check_group(entry, &ns, &dir.group, Privileges::READ, Privileges::BACKUP)
        .await?;
    let data = entry
        .store
        .tree()
        .read_snapshot_file(&ns, &dir, &name)
        .await
        .map_err(ds_error)?;
    Ok((name, data))
}

pub async fn raw(ctx: &Ctx, entry: &DatastoreEntry) -> Result<Response<Body>, HttpError> {
    let (_, data) = read(ctx, entry).await?;
    Ok(octet_stream(data))
}

pub async fn decoded(ctx: &Ctx, entry: &DatastoreEntry) -> Result<Response<Body>, HttpError> {
    let (name, data) = read(ctx, entry).await?;
    if let Some(kind) = index_kind_of(&name) {
        return reassembled(ctx, entry, &name, AnyIndex::parse(kind, &data)?).await;
    }
    if !name.ends_with(".blob") {
        return Err(HttpError::bad_request(format!(
            "cannot decode '{name}' - only blobs are supported"
        )));
    }
    let view = BlobView::parse(&data)?;
    if view.kind().is_encrypted() {
        return Err(HttpError::bad_request(format!(
            "cannot decode '{name}' - is encrypted"
        )));
    }
    view.verify_crc()?;
    Ok(octet_stream(Bytes::from(view.decode(MAX_BLOB_SIZE)?)))
}

/// An index file's content: checked against the manifest (csum, size, not encrypted), then its
/// chunks loaded, checked and decoded one after the other into a streamed answer.
async fn reassembled(
    ctx: &Ctx,
    entry: &DatastoreEntry,
    name: &str,
    index: AnyIndex,
) -> Result<Response<Body>, HttpError> {
    let ns = ctx.params.namespace("ns")?;
    let dir = ctx.params.snapshot()?;
    let (manifest, _) = entry
        .store
        .tree()
        .load_manifest(&ns, &dir)
        .await
        .map_err(ds_error)?;
    let info = manifest.file(name).ok_or_else(|| {
        HttpError::bad_request(format!("file '{name}' is not listed in the manifest"))
    })?;
    if info.crypt_mode == CryptMode::Encrypt {
        return Err(HttpError::bad_request(format!(
            "cannot decode '{name}' - is encrypted"
        )));
    }
    let csum = digest_to_hex(&index.csum());
    if csum != info.csum || index.size() != info.size {
        return Err(HttpError::bad_request(format!(
            "wrong index checksum or size of '{name}' (does not match the manifest)"
        )));
    }
    let (tx, rx) = mpsc::channel(CHUNKS_AHEAD);
    let store = entry.store.clone();
    let label = format!("{name} of snapshot {dir}");
    tokio::spawn(async move {
        for (digest, len) in index.chunks() {
            let item = decoded_chunk(&store, digest, len)
                .await
                .map_err(|e| std::io::Error::other(format!("{label}: {e}")));
            let failed = item.is_err();
            if let Err(e) = &item {
                tracing::warn!("download-decoded aborted: {e}");
            }
            // A closed channel means the client went away.
            if tx.send(item).await.is_err() || failed {
                return;
            }
        }
    });
    Ok(octet_stream_channel(rx))
}

/// One chunk of an index: loaded, CRC checked, decoded, length and SHA-256 as the index says.
async fn decoded_chunk(store: &Arc<Datastore>, digest: Digest, len: u64) -> Result<Bytes, String> {
    let hex = digest_to_hex(&digest);
    let raw = store
        .chunks()
        .load(&digest)
        .await
        .map_err(|e| e.to_string())?;
    tokio::task::spawn_blocking(move || {
        let view = BlobView::parse(&raw).map_err(|e| format!("chunk {hex}: {e}"))?;
        view.verify_crc().map_err(|e| format!("chunk {hex}: {e}"))?;
        if view.kind().is_encrypted() {
            return Err(format!("chunk {hex} is encrypted"));
        }
        let data = view
            .decode(MAX_CHUNK_SIZE as usize)
            .map_err(|e| format!("chunk {hex}: {e}"))?;
        if data.len() as u64 != len || sha256(&data) != digest {
            return Err(format!("chunk {hex} does not match the index"));
        }
        Ok(Bytes::from(data))
    })
    .await
    .map_err(|e| format!("chunk decode task failed: {e}"))?
}
