//! Durable webhook outbox: one JSON file per event in `<data_dir>/webhook-outbox`, written
//! atomically before anything is sent and removed only after the receiver answered 2xx.
//! Delivery is in order, oldest first; a failure is retried with exponential backoff (1 s up
//! to [`MAX_BACKOFF`]), so nothing is lost while the receiver is down or across a restart.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use serde_json::json;
use tokio::sync::Notify;

use super::webhook::WebhookSender;

/// Directory below the data dir.
pub const OUTBOX_DIR: &str = "webhook-outbox";
/// Longest wait between two attempts.
pub const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// How often an idle loop looks for files (events queued by an earlier process, say).
const IDLE_POLL: Duration = Duration::from_secs(30);

/// The queue of undelivered events.
pub struct Outbox {
    dir: PathBuf,
    seq: AtomicU64,
    wake: Notify,
}

impl Outbox {
    /// Open (create, mode 0700) the outbox directory; stray temp files of a crash are removed.
    pub fn open(dir: &Path) -> std::io::Result<Arc<Self>> {
        use std::os::unix::fs::PermissionsExt;
        std::fs::create_dir_all(dir)?;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
        for entry in std::fs::read_dir(dir)?.flatten() {
            if entry.file_name().to_string_lossy().starts_with('.') {
                let _ = std::fs::remove_file(entry.path());
            }
        }
        Ok(Arc::new(Self {
            dir: dir.to_path_buf(),
            seq: AtomicU64::new(0),
            wake: Notify::new(),
        }))
    }

    /// Persist one event (an `id` is added) and wake the delivery loop.
    pub fn enqueue(&self, event: &serde_json::Value) -> std::io::Result<String> {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos();
        let seq = self.seq.fetch_add(1, Ordering::SeqCst);
        let nonce: [u8; 4] = rand::random();
        let id = format!("{nanos:024}-{seq:08}-{}", hex::encode(nonce));
        let mut event = event.clone();
        event["id"] = json!(id);
        let data = serde_json::to_vec(&event).map_err(std::io::Error::other)?;
        let tmp = self.dir.join(format!(".{id}.tmp"));
        let mut file = std::fs::File::create(&tmp)?;
        file.write_all(&data)?;
        file.sync_all()?;
        std::fs::rename(&tmp, self.dir.join(format!("{id}.json")))?;
        self.wake.notify_one();
        Ok(id)
    }

    /// Undelivered event files, oldest first.
    pub fn pending(&self) -> std::io::Result<Vec<PathBuf>> {
        let mut files: Vec<PathBuf> = std::fs::read_dir(&self.dir)?
            .flatten()
            .map(|e| e.path())
            .filter(|p| {
                p.extension().is_some_and(|x| x == "json")
                    && !p
                        .file_name()
                        .is_some_and(|n| n.to_string_lossy().starts_with('.'))
            })
            .collect();
        files.sort();
        Ok(files)
    }
}

/// Delivers queued events forever (until the process ends).
pub async fn deliver_loop(outbox: Arc<Outbox>, sender: WebhookSender) {
    let mut backoff = Duration::from_secs(1);
    loop {
        let files = match outbox.pending() {
            Ok(files) => files,
            Err(e) => {
                tracing::error!("webhook outbox {}: {e}", outbox.dir.display());
                tokio::time::sleep(backoff).await;
                continue;
            }
        };
        if files.is_empty() {
            tokio::select! {
                _ = outbox.wake.notified() => {}
                _ = tokio::time::sleep(IDLE_POLL) => {}
            }
            continue;
        }
        for path in files {
            match deliver_one(&sender, &path).await {
                Ok(()) => backoff = Duration::from_secs(1),
                Err(e) => {
                    tracing::warn!(
                        "webhook delivery of {} failed ({e}); retrying in {backoff:?}",
                        path.display()
                    );
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                    break;
                }
            }
        }
    }
}

async fn deliver_one(sender: &WebhookSender, path: &Path) -> Result<(), String> {
    let data = match std::fs::read(path) {
        Ok(data) => data,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(format!("read: {e}")),
    };
    let event_type = serde_json::from_slice::<serde_json::Value>(&data)
        .ok()
        .and_then(|v| v["type"].as_str().map(str::to_string))
        .unwrap_or_default();
    let status = sender.post(&event_type, Bytes::from(data)).await?;
    if !status.is_success() {
        return Err(format!("receiver answered {status}"));
    }
    std::fs::remove_file(path).map_err(|e| format!("delivered, but removing failed: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_persist_in_order_until_removed() {
        let dir = tempfile::tempdir().unwrap();
        let outbox = Outbox::open(dir.path()).unwrap();
        let a = outbox.enqueue(&json!({"type": "a"})).unwrap();
        let b = outbox.enqueue(&json!({"type": "b"})).unwrap();
        assert!(a < b);
        // A second process (after a restart) sees the same queue.
        let again = Outbox::open(dir.path()).unwrap();
        let files = again.pending().unwrap();
        assert_eq!(files.len(), 2);
        let first: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&files[0]).unwrap()).unwrap();
        assert_eq!(first["type"], "a");
        assert_eq!(first["id"], a);
    }
}
