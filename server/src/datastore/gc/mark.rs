//! GC phase 1 (docs/formats.md#gc-mark): every digest of every `*.fidx`/`*.didx` stored outside the
//! chunk store (all namespaces, finished or not), plus every chunk known to a running backup.
//!
//! Index files are fetched with bounded parallelism and their digest lists are cached between
//! runs (see `index_cache.rs`), so marking a large object-store datastore a second time costs
//! one listing, not one download per index.

use std::collections::HashSet;
use std::sync::Arc;

use futures::{StreamExt, TryStreamExt};

use crate::backend::ObjectMeta;
use crate::format::index::{index_kind_of, AnyIndex};

use super::super::layout::is_index_name;
use super::super::DatastoreError;
use super::index_cache::ParsedIndex;
use super::mark_set::MarkSet;
use super::GarbageCollector;
use super::{GcStatus, Progress};

/// Index downloads in flight at once.
const FETCH_PARALLELISM: usize = 16;

impl GarbageCollector {
    /// Every object outside dot-prefixed top-level entries (`.chunks/`, `.jobs/`, ...), which
    /// is where snapshots, groups and namespaces live.
    pub(super) async fn list_snapshot_objects(&self) -> Result<Vec<ObjectMeta>, DatastoreError> {
        let top = self.backend.list("", Some('/')).await?;
        let mut objects: Vec<ObjectMeta> = top.objects;
        for prefix in &top.prefixes {
            // `.chunks/` and other dot entries hold no indexes (PBS's walk skips them too).
            if prefix.starts_with('.') {
                continue;
            }
            let listed = self.backend.list(prefix, None).await?;
            objects.extend(listed.objects);
        }
        Ok(objects)
    }

    /// Phase 1 over `objects` (from [`Self::list_snapshot_objects`]).
    pub(super) async fn mark_used_chunks(
        &self,
        objects: &[ObjectMeta],
        status: &mut GcStatus,
        say: &(dyn Fn(String) + Send + Sync),
    ) -> Result<MarkSet, DatastoreError> {
        let indexes: Vec<&ObjectMeta> = objects
            .iter()
            .filter(|o| is_index_name(o.key.rsplit('/').next().unwrap_or(&o.key)))
            .collect();
        let live: HashSet<&str> = indexes.iter().map(|o| o.key.as_str()).collect();
        self.index_cache.retain_keys(&live);

        let total = indexes.len() as u64;
        let progress = Progress::new("marked", total, "index files");
        let mut marked = MarkSet::new(self.mark_budget());
        let mut done = 0u64;
        // Futures built up front (not in a stream closure) so the task stays `Send`.
        let fetches: Vec<_> = indexes.iter().map(|obj| self.parsed_index(obj)).collect();
        let mut fetched = futures::stream::iter(fetches).buffer_unordered(FETCH_PARALLELISM);
        while let Some(found) = fetched.try_next().await? {
            // Stopping here is safe: nothing was deleted yet.
            self.check_abort()?;
            done += 1;
            if let Some((parsed, hit)) = found {
                match hit {
                    true => status.index_cache_hits += 1,
                    false => status.index_cache_misses += 1,
                }
                status.index_file_count += 1;
                status.index_data_bytes += parsed.data_size;
                marked.insert_all(parsed.digests.iter().copied()).await?;
            }
            progress.report(done, say);
        }
        marked.insert_all(self.leases.running_chunks()).await?;
        Ok(marked)
    }

    /// The digests of one index file from the cache or the backend; `None` if it vanished
    /// meanwhile (removed by prune: its chunks are no longer needed by it). The flag tells
    /// whether the cache answered.
    async fn parsed_index(
        &self,
        obj: &ObjectMeta,
    ) -> Result<Option<(Arc<ParsedIndex>, bool)>, DatastoreError> {
        let cache = &self.index_cache;
        if let Some(hit) = cache.get(&obj.key, obj.size, obj.modified) {
            return Ok(Some((hit, true)));
        }
        let name = obj.key.rsplit('/').next().unwrap_or(&obj.key);
        let Some(kind) = index_kind_of(name) else {
            return Ok(None);
        };
        let data = match self.backend.get(&obj.key).await {
            Ok(data) => data,
            Err(e) if e.is_not_found() => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        // An unreadable index aborts GC: sweeping without it could delete live chunks.
        let index = AnyIndex::parse(kind, &data).map_err(|source| DatastoreError::Corrupt {
            object: format!("index file '{}'", obj.key),
            source,
        })?;
        let parsed = Arc::new(ParsedIndex {
            digests: index.chunks().into_iter().map(|(d, _)| d).collect(),
            data_size: index.size(),
        });
        // Cache under the size the listing reported: that is what the next run compares.
        if data.len() as u64 == obj.size {
            cache.insert(&obj.key, obj.size, obj.modified, parsed.clone());
        }
        Ok(Some((parsed, false)))
    }
}
