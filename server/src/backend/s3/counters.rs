//! Per-backend S3 request counters (usage metering and benchmarks).

use std::sync::atomic::{AtomicU64, Ordering};

use crate::backend::RequestCounts;

/// Request kinds counted by [`RequestCounters`] (the HTTP method the S3 API uses).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Req {
    Get,
    Put,
    Post,
    Head,
    Delete,
    List,
}

/// Live counters behind [`Backend::request_counts`] (logical requests; SDK retries are not
/// counted separately).
#[derive(Debug, Default)]
pub(crate) struct RequestCounters {
    get: AtomicU64,
    put: AtomicU64,
    post: AtomicU64,
    head: AtomicU64,
    delete: AtomicU64,
    list: AtomicU64,
    uploaded: AtomicU64,
    downloaded: AtomicU64,
}

impl RequestCounters {
    pub(super) fn count(&self, kind: Req) {
        let counter = match kind {
            Req::Get => &self.get,
            Req::Put => &self.put,
            Req::Post => &self.post,
            Req::Head => &self.head,
            Req::Delete => &self.delete,
            Req::List => &self.list,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    pub(super) fn add_uploaded(&self, bytes: usize) {
        self.uploaded.fetch_add(bytes as u64, Ordering::Relaxed);
    }

    pub(super) fn add_downloaded(&self, bytes: usize) {
        self.downloaded.fetch_add(bytes as u64, Ordering::Relaxed);
    }

    pub(super) fn snapshot(&self) -> RequestCounts {
        RequestCounts {
            get: self.get.load(Ordering::Relaxed),
            put: self.put.load(Ordering::Relaxed),
            post: self.post.load(Ordering::Relaxed),
            head: self.head.load(Ordering::Relaxed),
            delete: self.delete.load(Ordering::Relaxed),
            list: self.list.load(Ordering::Relaxed),
            uploaded: self.uploaded.load(Ordering::Relaxed),
            downloaded: self.downloaded.load(Ordering::Relaxed),
        }
    }
}
