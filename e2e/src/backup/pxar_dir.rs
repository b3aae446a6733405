//! Directory backups as pxar archives (the stock client's `LABEL.pxar:DIR`) in the three
//! change-detection modes, with the stock client's requests in its order.

use std::future::Future;
use std::path::Path;

use super::{with_ext, BackupSession};
use crate::backup_options::{ArchiveStats, UploadOptions};
use crate::error::Result;
use crate::http::PbsClient;
use crate::pxar::{self, EncodeOptions, PayloadPiece, PayloadStream, PreviousArchive};
use crate::reader::{ReaderParams, ReaderSession};

/// How a directory is backed up (the stock client's `--change-detection-mode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PxarMode {
    /// One `NAME.pxar` archive plus the run's `catalog.pcat1`.
    #[default]
    Legacy,
    /// Split `NAME.mpxar` + `NAME.ppxar`, every payload encoded anew.
    Data,
    /// Split archives; unchanged files reuse the previous snapshot's payload chunks.
    Metadata,
}

/// What metadata mode took from the previous snapshot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReuseStats {
    /// Backup time of the snapshot the reader session was opened on.
    pub reference_time: i64,
    /// Files whose payload lies in reused previous chunks.
    pub reused_files: usize,
    /// Content bytes of those files.
    pub reused_bytes: u64,
    /// Files whose payload was encoded anew: new or changed files, and unchanged ones whose
    /// previous chunks would have carried more than 10 % padding.
    pub encoded_files: usize,
    /// Previous payload chunks appended by digest.
    pub reused_chunks: usize,
}

/// What a directory backup produced.
#[derive(Debug, Clone)]
pub struct PxarStats {
    /// The archive (legacy) or the metadata archive (split).
    pub archive: ArchiveStats,
    /// The payload archive of split modes.
    pub payload: Option<ArchiveStats>,
    /// Metadata mode with a previous split archive to reuse from.
    pub reuse: Option<ReuseStats>,
}

/// The previous snapshot as metadata mode read it.
struct Reference {
    time: i64,
    previous: PreviousArchive,
}

impl BackupSession {
    /// Backs up a directory as a pxar archive `LABEL.pxar.didx` and adds it to the run's
    /// catalog (legacy mode).
    pub async fn upload_pxar_dir(
        &mut self,
        label: &str,
        dir: &Path,
        opts: &UploadOptions,
    ) -> Result<ArchiveStats> {
        let encoded = pxar::encode_tree(dir, EncodeOptions { split: false }, None)?;
        let name = with_ext(&with_ext(label, ".pxar"), ".didx");
        let mut catalog = Vec::new();
        if self.catalog.is_none() {
            catalog.extend(self.catalog_writer.start());
        }
        catalog.extend(self.catalog_writer.add_archive(&name, &encoded.catalog));
        self.upload_dynamic_inner(&name, &encoded.archive, opts, Some(catalog))
            .await
    }

    /// Backs up a directory in the given mode, with the stock client's requests in its order:
    ///
    /// * legacy: `LABEL.pxar.didx`, listed in the run's `catalog.pcat1.didx`;
    /// * data: `LABEL.mpxar.didx` + `LABEL.ppxar.didx`, no catalog, every payload encoded
    ///   anew (chunks the previous indexes already hold are still not uploaded again);
    /// * metadata: like data, but when the previous manifest lists the split pair the client
    ///   asks `previous_backup_time` a second time, opens a reader session on that snapshot
    ///   (a new connection with the same credentials) while the backup session stays open,
    ///   reads the previous `.mpxar.didx` and its chunks through it and `GET previous` of the
    ///   `.ppxar.didx` on the backup session, then appends the previous payload chunks of
    ///   unchanged files to the new payload index by digest only.
    ///
    /// Both split writers are opened (each right after its previous index was fetched), the
    /// payload is written, then the metadata, and the metadata archive is closed first.
    pub async fn upload_pxar_dir_mode(
        &mut self,
        client: &PbsClient,
        label: &str,
        dir: &Path,
        opts: &UploadOptions,
        mode: PxarMode,
    ) -> Result<PxarStats> {
        self.upload_pxar_dir_observed(client, label, dir, opts, mode, || async {})
            .await
    }

    /// [`upload_pxar_dir_mode`](Self::upload_pxar_dir_mode), calling `on_reader_open` while
    /// metadata mode's reader session on the previous snapshot is open (so a test can check
    /// what the server allows meanwhile); not called when there is no reference.
    pub async fn upload_pxar_dir_observed<F, Fut>(
        &mut self,
        client: &PbsClient,
        label: &str,
        dir: &Path,
        opts: &UploadOptions,
        mode: PxarMode,
        on_reader_open: F,
    ) -> Result<PxarStats>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = ()>,
    {
        if mode == PxarMode::Legacy {
            let archive = self.upload_pxar_dir(label, dir, opts).await?;
            return Ok(PxarStats {
                archive,
                payload: None,
                reuse: None,
            });
        }
        let label = label.strip_suffix(".pxar").unwrap_or(label);
        let meta_name = format!("{label}.mpxar.didx");
        let payload_name = format!("{label}.ppxar.didx");
        let reference = match mode {
            PxarMode::Metadata => {
                self.read_reference(client, &meta_name, &payload_name, on_reader_open)
                    .await?
            }
            _ => None,
        };
        let previous = reference.as_ref().map(|r| &r.previous);
        let encoded = pxar::encode_tree(dir, EncodeOptions { split: true }, previous)?;
        let payload = encoded.payload.unwrap_or_default();
        let (archive, payload_stats) = self
            .write_split(
                (&meta_name, &encoded.archive),
                (&payload_name, &payload),
                opts,
            )
            .await?;
        let reuse = reference.map(|r| ReuseStats {
            reference_time: r.time,
            reused_files: encoded.reused_files,
            reused_bytes: encoded.reused_bytes,
            encoded_files: encoded.encoded_files,
            reused_chunks: payload.reused_chunks(),
        });
        Ok(PxarStats {
            archive,
            payload: Some(payload_stats),
            reuse,
        })
    }

    /// Metadata mode's look at the previous snapshot: `None` when the previous manifest does
    /// not list both split archives or the server names no previous snapshot.
    async fn read_reference<F, Fut>(
        &self,
        client: &PbsClient,
        meta_name: &str,
        payload_name: &str,
        on_reader_open: F,
    ) -> Result<Option<Reference>>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = ()>,
    {
        let Some(manifest) = self.previous_manifest.as_ref() else {
            return Ok(None);
        };
        if manifest.file(meta_name).is_none() || manifest.file(payload_name).is_none() {
            return Ok(None);
        }
        let Some(time) = self.previous_backup_time().await? else {
            return Ok(None);
        };
        let mut params = ReaderParams::new(
            &self.params.store,
            &self.params.backup_type,
            &self.params.backup_id,
            time,
        );
        params.ns = self.params.ns.clone();
        let reader = ReaderSession::open(client, params, self.params.crypt.key().cloned()).await?;
        // both indexes are checked against the manifest the backup session fetched
        let (metadata, payload_index) = tokio::try_join!(
            reader.restore_with_manifest(manifest, meta_name),
            self.previous_index(payload_name),
        )?;
        on_reader_open().await;
        drop(reader);
        let previous = PreviousArchive::new(&metadata, payload_index.chunks)?;
        Ok(Some(Reference { time, previous }))
    }

    /// Writes a split pair: both writers opened, the payload fed (new bytes chunked, reused
    /// chunks appended by digest), the metadata fed, then both closed, metadata first.
    async fn write_split(
        &mut self,
        (meta_name, metadata): (&str, &[u8]),
        (payload_name, payload): (&str, &PayloadStream),
        opts: &UploadOptions,
    ) -> Result<(ArchiveStats, ArchiveStats)> {
        let mut meta = self
            .open_dynamic(meta_name, opts.avg_chunk_size, opts.compress)
            .await?;
        let mut pay = self
            .open_dynamic(payload_name, opts.avg_chunk_size, opts.compress)
            .await?;
        for piece in &payload.pieces {
            match piece {
                PayloadPiece::Data(d) => pay.feed(d).await?,
                PayloadPiece::Reused(chunks) => pay.inject(chunks).await?,
            }
        }
        meta.feed(metadata).await?;
        let meta_stats = self.close_recorded(meta).await?;
        let payload_stats = self.close_recorded(pay).await?;
        Ok((meta_stats, payload_stats))
    }
}
