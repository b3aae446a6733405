//! What the `catalog` and `pxar-file-download` endpoints share: the snapshot checks (privilege,
//! reader lock, manifest), `filepath` decoding, the refusal of encrypted archives, the mapping
//! of archive names to unified or split pxar files, and errors of the pxar layer as HTTP answers.

use std::sync::Arc;

use base64::alphabet::STANDARD;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use base64::Engine;
use http::StatusCode;

use crate::api::context::{ds_error, Ctx};
use crate::auth::Privileges;
use crate::datastore::{DidxSource, ReaderLease};
use crate::format::manifest::{CryptMode, Manifest};
use crate::format::names::{BackupDir, BackupNamespace};
use crate::format::pxar::{Archive, PxarError};
use crate::net::HttpError;
use crate::state::DatastoreEntry;

/// Name of the catalog file of legacy-mode snapshots.
pub const CATALOG_NAME: &str = "catalog.pcat1.didx";

/// Standard base64 that accepts input with or without padding.
const LENIENT_BASE64: GeneralPurpose = GeneralPurpose::new(
    &STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// An opened snapshot: the shared lock keeps it from being removed while it is read.
pub struct OpenSnapshot {
    pub ns: BackupNamespace,
    pub dir: BackupDir,
    pub manifest: Manifest,
    pub lease: ReaderLease,
}

/// Snapshot parameters, the same privilege rule as `download` (Datastore.Read, or
/// Datastore.Backup on an owned group), a reader lock and the manifest.
pub async fn open_snapshot(ctx: &Ctx, entry: &DatastoreEntry) -> Result<OpenSnapshot, HttpError> {
    let ns = ctx.params.namespace("ns")?;
    let dir = ctx.params.snapshot()?;
    ctx.check_group(entry, &ns, &dir.group, Privileges::READ, Privileges::BACKUP)
        .await?;
    let lease = entry
        .store
        .start_reader(&ns, &dir)
        .await
        .map_err(ds_error)?;
    let (manifest, _) = entry
        .store
        .tree()
        .load_manifest(&ns, &dir)
        .await
        .map_err(ds_error)?;
    Ok(OpenSnapshot {
        ns,
        dir,
        manifest,
        lease,
    })
}

/// Decodes a base64 `filepath`.
pub fn decode_base64_path(text: &str) -> Result<Vec<u8>, HttpError> {
    LENIENT_BASE64
        .decode(text.trim())
        .map_err(|e| HttpError::bad_request(format!("base64 decoding of path failed - {e}")))
}

/// Encodes a path for the `filepath` of a listing (standard alphabet, padded).
pub fn encode_base64_path(path: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(path)
}

/// Refuses an archive the manifest lists as encrypted (the server has no key).
pub fn refuse_encrypted(manifest: &Manifest, name: &str) -> Result<(), HttpError> {
    match manifest.file(name) {
        Some(f) if f.crypt_mode == CryptMode::Encrypt => Err(HttpError::bad_request(format!(
            "cannot decode '{name}' - is encrypted"
        ))),
        _ => Ok(()),
    }
}

/// Maps an archive name to the files to open: a listed `.mpxar.didx`/`.ppxar.didx` gives the
/// split pair, another listed name is used as it is, and an unlisted `.pxar.didx` falls back
/// to the split pair of the same base name.
pub fn pxar_archive_names(
    manifest: &Manifest,
    name: &str,
) -> Result<(String, Option<String>), HttpError> {
    let split = |base: &str| {
        (
            format!("{base}.mpxar.didx"),
            Some(format!("{base}.ppxar.didx")),
        )
    };
    if manifest.file(name).is_some() {
        if let Some(base) = name
            .strip_suffix(".mpxar.didx")
            .or_else(|| name.strip_suffix(".ppxar.didx"))
        {
            return Ok(split(base));
        }
        return Ok((name.to_string(), None));
    }
    if let Some(base) = name.strip_suffix(".pxar.didx") {
        let (meta, payload) = split(base);
        if manifest.file(&meta).is_some() {
            return Ok((meta, payload));
        }
    }
    Err(HttpError::bad_request(format!(
        "archive '{name}' not found in manifest"
    )))
}

/// Opens one `.didx` of the snapshot, checked against its manifest entry.
pub async fn open_source(
    entry: &DatastoreEntry,
    snap: &OpenSnapshot,
    name: &str,
) -> Result<DidxSource, HttpError> {
    let file = snap.manifest.file(name).ok_or_else(|| {
        HttpError::bad_request(format!(
            "unable to read dynamic index '{name}' - No such file or directory (os error 2)"
        ))
    })?;
    if !name.ends_with(".didx") {
        return Err(HttpError::bad_request(format!(
            "'{name}' is not a dynamic index (pxar archive)"
        )));
    }
    DidxSource::open(&entry.store, &snap.ns, &snap.dir, file)
        .await
        .map_err(ds_error)
}

/// Opens a pxar archive: the unified file, or the metadata file and (when contents are
/// needed) the payload file of a split pair.
pub async fn open_archive(
    entry: &DatastoreEntry,
    snap: &OpenSnapshot,
    names: &(String, Option<String>),
    with_payload: bool,
) -> Result<Archive<DidxSource>, HttpError> {
    let meta = open_source(entry, snap, &names.0).await?;
    let payload = match (&names.1, with_payload) {
        (Some(p), true) => Some(open_source(entry, snap, p).await?),
        _ => None,
    };
    Archive::open(meta, payload)
        .await
        .map_err(|e| pxar_error(&names.0, e))
}

/// An error of the pxar or catalog layer as an HTTP answer naming the archive.
pub fn pxar_error(archive: &str, err: PxarError) -> HttpError {
    match err {
        PxarError::Source(msg) => HttpError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("reading '{archive}' failed - {msg}"),
        ),
        PxarError::ParentDir | PxarError::NotFound(_) | PxarError::NotADirectory(_) => {
            HttpError::bad_request(err.to_string())
        }
        other => HttpError::bad_request(format!("'{archive}' is damaged - {other}")),
    }
}

/// Keeps the snapshot locked as long as something holds the returned value.
pub fn keep_alive(snap: OpenSnapshot) -> Arc<ReaderLease> {
    Arc::new(snap.lease)
}
