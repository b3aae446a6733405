//! Protocol test client for pbs-cloud-server.
//!
//! Stands in for the stock `proxmox-backup-client`: it performs on the wire what
//! protocol.md §4.6 A (backup) and §5.3 (restore) describe, and offers raw escape hatches so
//! tests can send malformed requests.

pub mod backup;
pub mod backup_options;
pub mod bench;
pub mod chunker;
pub mod crypto;
pub mod dirtree;
pub mod error;
pub mod fault_proxy;
pub mod h2session;
pub mod http;
pub mod params;
pub mod pipeline;
pub mod reader;
pub mod repo;
pub mod server;
pub mod timefmt;
pub mod tls;
pub mod wire;

pub use backup::{ArchiveStats, BackupParams, BackupSession, BackupSummary, Crypt, UploadOptions};
pub use crypto::CryptConfig;
pub use error::{ClientError, Result};
pub use http::{Auth, PbsClient, RawResponse, Ticket};
pub use reader::{ReaderParams, ReaderSession};
pub use repo::Repository;
pub use server::TestServer;
