//! Container backup as Proxmox VE runs it through the stock client (vzdump's
//! `backup pct.conf:<f> [fw.conf:<f>] root.pxar:<dir> --backup-type ct --backup-id <vmid>
//! --backup-time <epoch> [--change-detection-mode legacy|data|metadata]`), on the wire as the
//! client does it: the config blobs, then the root file system as a pxar archive in the given
//! mode (the requests of each mode:
//! [`BackupSession::upload_pxar_dir_mode`](crate::backup::BackupSession::upload_pxar_dir_mode)),
//! then, with a master key, the catalog closed before `rsa-encrypted.key.blob`.
//!
//! PVE restores the root file system with `restore <snap> root.pxar <dir>`:
//! [`ReaderSession::restore_pxar_dir`](crate::reader::ReaderSession::restore_pxar_dir).

use std::future::Future;
use std::path::Path;

use crate::backup::{BackupSession, PxarMode, PxarStats};
use crate::backup_options::{BackupParams, BackupSummary, Crypt, UploadOptions};
use crate::error::Result;
use crate::http::PbsClient;
use crate::master_key::{MasterPublicKey, ENCRYPTED_KEY_BLOB_NAME};

pub const METADATA_ARCHIVE: &str = "root.mpxar.didx";
pub const PAYLOAD_ARCHIVE: &str = "root.ppxar.didx";

/// What vzdump passes for one container backup.
pub struct CtBackup<'a> {
    pub store: &'a str,
    pub ns: Option<&'a str>,
    pub vmid: &'a str,
    pub time: i64,
    pub pct_conf: &'a [u8],
    pub fw_conf: Option<&'a [u8]>,
    pub rootdir: &'a Path,
    /// `--change-detection-mode`.
    pub mode: PxarMode,
    /// `--crypt-mode=encrypt --keyfd=N` when set.
    pub crypt: Crypt,
    /// `--master-pubkey-fd=M`.
    pub master_key: Option<MasterPublicKey>,
}

/// What happened during a container backup.
#[derive(Debug, Clone)]
pub struct CtBackupReport {
    pub summary: BackupSummary,
    /// `GET previous_backup_time` calls on the backup session.
    pub previous_time_calls: usize,
    /// The root file system's archive(s) and, in metadata mode with a reference, the reuse.
    pub root: PxarStats,
}

/// Runs one container backup; `on_reader_open` is called while metadata mode's reader
/// session on the previous snapshot is open (so a test can check what the server allows
/// meanwhile).
pub async fn backup_ct<F, Fut>(
    client: &PbsClient,
    spec: CtBackup<'_>,
    on_reader_open: F,
) -> Result<CtBackupReport>
where
    F: FnOnce() -> Fut,
    Fut: Future<Output = ()>,
{
    let mut params = BackupParams::new(spec.store, "ct", spec.vmid, spec.time);
    params.ns = spec.ns.map(str::to_string);
    params.crypt = spec.crypt.clone();
    let mut session = BackupSession::start(client, params).await?;
    session.upload_blob("pct.conf", spec.pct_conf).await?;
    if let Some(fw) = spec.fw_conf {
        session.upload_blob("fw.conf", fw).await?;
    }
    let opts = UploadOptions::default();
    let root = session
        .upload_pxar_dir_observed(
            client,
            "root",
            spec.rootdir,
            &opts,
            spec.mode,
            on_reader_open,
        )
        .await?;
    if let (Some(master), Some(key)) = (&spec.master_key, spec.crypt.key()) {
        session.close_catalog().await?;
        let blob = master.encrypted_key_blob(key, spec.time)?;
        let mode = spec.crypt.mode_str();
        session
            .upload_blob_raw(ENCRYPTED_KEY_BLOB_NAME, blob, mode)
            .await?;
    }
    let previous_time_calls = session.previous_time_calls();
    Ok(CtBackupReport {
        summary: session.finish().await?,
        previous_time_calls,
        root,
    })
}
