//! Protocol test client for pbs-cloud-server.
//!
//! Stands in for the stock `proxmox-backup-client`: it performs on the wire what
//! server/docs/protocol.md#client-call-sequences A (backup) and
//! server/docs/protocol.md#restore-sequence (restore) describe, and offers raw escape hatches so
//! tests can send malformed requests.

pub mod backup;
pub mod backup_options;
pub mod bench;
pub mod chunker;
pub mod corpus;
pub mod crypto;
pub mod error;
pub mod fault_proxy;
pub mod h2session;
pub mod hostile;
pub mod http;
pub mod master_key;
pub mod params;
pub mod pipeline;
pub mod pve_api;
pub mod pve_ct;
pub mod pxar;
pub mod qemu_backup;
pub mod reader;
pub mod repo;
pub mod server;
pub mod sync_pair;
pub mod timefmt;
pub mod tls;
pub mod wire;

pub use backup::{
    ArchiveStats, BackupParams, BackupSession, BackupSummary, Crypt, PxarMode, PxarStats,
    ReuseStats, UploadOptions,
};
pub use crypto::CryptConfig;
pub use error::{ClientError, Result};
pub use http::{Auth, PbsClient, RawResponse, Ticket};
pub use reader::{ReaderParams, ReaderSession};
pub use repo::Repository;
pub use server::TestServer;
