//! The layered known-chunk set: lookups across merges, restarts from the local file, and local
//! files that must not be trusted. The persisted objects live in a local backend (the set does
//! not care which store holds them); GC on both backends is covered in `tests_gc.rs`.

use super::super::known_file;
use super::*;
use crate::backend::LocalBackend;
use crate::datastore::layout::chunk_key;

fn d(n: u32) -> Digest {
    crate::format::sha256(&n.to_le_bytes())
}

struct Env {
    dir: tempfile::TempDir,
    backend: LocalBackend,
}

impl Env {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let backend = LocalBackend::open(&dir.path().join("store")).unwrap();
        Env { dir, backend }
    }

    fn cache(&self) -> PathBuf {
        self.dir.path().join("cache")
    }

    async fn load(&self) -> KnownChunks {
        KnownChunks::load(&self.backend, "s", Some(&self.cache()))
            .await
            .unwrap()
    }
}

/// Exactly the digests `0..n` for which `keep` holds are known.
fn assert_set(k: &KnownChunks, n: u32, keep: impl Fn(u32) -> bool) {
    let mut expected = 0;
    for i in 0..n {
        assert_eq!(k.contains(&d(i)), keep(i), "digest {i}");
        expected += usize::from(keep(i));
    }
    assert_eq!(k.len(), expected);
}

#[tokio::test]
async fn lookup_insert_remove_across_merges() {
    let e = Env::new();
    let k = e.load().await;
    assert_eq!(k.source(), BaseSource::Rebuilt);
    assert_eq!(k.len(), 0);
    (0..300).for_each(|i| k.insert(&d(i)));
    (0..50).for_each(|i| k.remove(&d(i)));
    k.flush(&e.backend).await.unwrap();
    assert_set(&k, 400, |i| (50..300).contains(&i));
    k.write_full(&e.backend, &HashSet::new()).await.unwrap();
    assert_set(&k, 400, |i| (50..300).contains(&i));
    // removals from the base and additions on top of it, then another merge
    (300..400).for_each(|i| k.insert(&d(i)));
    k.journal_removal(&e.backend, &(50..60).map(d).collect::<Vec<_>>())
        .await
        .unwrap();
    k.insert(&d(55));
    let keep = |i: u32| (60..400).contains(&i) || i == 55;
    assert_set(&k, 450, keep);
    k.flush(&e.backend).await.unwrap();
    k.write_full(&e.backend, &[d(399)].into_iter().collect())
        .await
        .unwrap();
    let keep = |i: u32| keep(i) && i != 399;
    assert_set(&k, 450, keep);
    // the persisted index holds the same set
    let reopened = e.load().await;
    assert_set(&reopened, 450, keep);
}

#[tokio::test]
async fn changes_during_a_merge_survive_it_or_its_failure() {
    let e = Env::new();
    let dir = e.dir.path();
    let seal = |u: known_file::Unsealed| {
        let origin = Origin {
            size: u.object().len() as u64,
            modified: SystemTime::UNIX_EPOCH,
        };
        u.seal(origin, None).unwrap()
    };
    let mut base: Vec<Digest> = (0..100).map(d).collect();
    base.sort_unstable();
    let base = seal(DigestFileWriter::merge(dir, None, &base, &[]).unwrap());
    let start = || {
        let mut l = Layers {
            len: 100,
            base: Some(Arc::new(DigestFile::open(base.path()).unwrap().unwrap())),
            ..Layers::default()
        };
        (100..110).for_each(|i| assert!(l.insert(&d(i))));
        (0..10).for_each(|i| assert!(l.remove(&d(i))));
        l
    };
    // 100..110 added and 0..10 removed before the merge; while it runs: 100 removed (frozen
    // addition), 0 added again (frozen removal), 50 removed (base), 200 added.
    let during = |l: &mut Layers| {
        assert!(l.remove(&d(100)));
        assert!(l.insert(&d(0)));
        assert!(l.remove(&d(50)));
        assert!(l.insert(&d(200)));
        assert!(!l.insert(&d(105)));
        assert!(!l.remove(&d(5)));
    };
    let keep = |i: u32| (i < 110 && !(1..10).contains(&i) && i != 50 && i != 100) || i == 200;
    let check = |l: &Layers| {
        let mut n = 0;
        for i in 0..300 {
            assert_eq!(l.contains(&d(i)), keep(i), "digest {i}");
            n += usize::from(keep(i));
        }
        assert_eq!(l.len, n);
    };

    let mut l = start();
    let (old, added, removed) = l.freeze();
    during(&mut l);
    check(&l);
    let merged = seal(DigestFileWriter::merge(dir, old.as_deref(), &added, &removed).unwrap());
    l.finish(Arc::new(merged));
    check(&l);
    assert_eq!(l.unmerged(), 4);

    let mut l = start();
    l.freeze();
    during(&mut l);
    l.unfreeze();
    check(&l);
    assert!(l.frozen.is_none());
}

#[tokio::test]
async fn a_restart_maps_the_local_file_and_applies_the_journal() {
    let e = Env::new();
    let k = e.load().await;
    (0..100).for_each(|i| k.insert(&d(i)));
    k.flush(&e.backend).await.unwrap();
    k.write_full(&e.backend, &HashSet::new()).await.unwrap();
    let path = k.base_path().unwrap();
    assert!(path.starts_with(e.cache()));
    drop(k);

    let k = e.load().await;
    assert_eq!(k.source(), BaseSource::LocalFile);
    assert_set(&k, 120, |i| i < 100);
    (100..110).for_each(|i| k.insert(&d(i)));
    k.flush(&e.backend).await.unwrap();
    k.journal_removal(&e.backend, &[d(3)]).await.unwrap();
    drop(k);

    let k = e.load().await;
    assert_eq!(k.source(), BaseSource::LocalFile);
    assert_set(&k, 120, |i| i < 110 && i != 3);
}

#[tokio::test]
async fn damaged_short_or_stale_local_files_are_replaced_from_the_store() {
    let e = Env::new();
    let k = e.load().await;
    (0..100).for_each(|i| k.insert(&d(i)));
    k.write_full(&e.backend, &HashSet::new()).await.unwrap();
    let path = k.base_path().unwrap();
    let good = std::fs::read(&path).unwrap();
    drop(k);

    let mut flipped = good.clone();
    flipped[8 + 32 * 40 + 3] ^= 0x80;
    std::fs::write(&path, &flipped).unwrap();
    let k = e.load().await;
    assert_eq!(k.source(), BaseSource::Downloaded);
    assert_set(&k, 120, |i| i < 100);
    drop(k);
    assert_eq!(std::fs::read(&path).unwrap(), good);

    std::fs::write(&path, &good[..good.len() - 40]).unwrap();
    let k = e.load().await;
    assert_eq!(k.source(), BaseSource::Downloaded);
    assert_set(&k, 120, |i| i < 100);

    // GC removed chunks and rewrote the index; the old copy reappears (a restored backup of
    // the data dir, say): it must not bring them back.
    k.journal_removal(&e.backend, &(0..10).map(d).collect::<Vec<_>>())
        .await
        .unwrap();
    k.write_full(&e.backend, &HashSet::new()).await.unwrap();
    drop(k);
    std::fs::write(&path, &good).unwrap();
    let k = e.load().await;
    assert_eq!(k.source(), BaseSource::Downloaded);
    assert_set(&k, 120, |i| (10..100).contains(&i));
}

#[tokio::test]
async fn without_a_cache_dir_files_live_in_the_temp_dir_until_dropped() {
    let e = Env::new();
    let k = KnownChunks::load(&e.backend, "s", None).await.unwrap();
    (0..10).for_each(|i| k.insert(&d(i)));
    k.write_full(&e.backend, &HashSet::new()).await.unwrap();
    let path = k.base_path().unwrap();
    assert!(path.starts_with(std::env::temp_dir()));
    drop(k);
    assert!(!path.exists());
    let k = KnownChunks::load(&e.backend, "s", None).await.unwrap();
    assert_eq!(k.source(), BaseSource::Downloaded);
    assert_set(&k, 20, |i| i < 10);
}

#[tokio::test]
async fn an_unreadable_index_is_rebuilt_from_the_chunk_listing() {
    let e = Env::new();
    for i in 0..3 {
        e.backend
            .put(
                &chunk_key(&d(i)),
                Bytes::from_static(b"c"),
                PutOptions::default(),
            )
            .await
            .unwrap();
    }
    let (a, b) = (d(0).max(d(1)), d(0).min(d(1)));
    let mut unsorted = MAGIC.to_vec();
    unsorted.extend_from_slice(&a);
    unsorted.extend_from_slice(&b);
    e.backend
        .put(KNOWN_INDEX, Bytes::from(unsorted), PutOptions::default())
        .await
        .unwrap();
    let k = e.load().await;
    assert_eq!(k.source(), BaseSource::Rebuilt);
    assert_set(&k, 10, |i| i < 3);
    let k = e.load().await;
    assert_eq!(k.source(), BaseSource::LocalFile);
    assert_set(&k, 10, |i| i < 3);
}

#[tokio::test]
async fn a_downloaded_index_is_read_in_pieces_of_bounded_size() {
    let e = Env::new();
    let k = e.load().await;
    (0..100).for_each(|i| k.insert(&d(i)));
    k.write_full(&e.backend, &HashSet::new()).await.unwrap();
    drop(k);
    let stored = e.backend.get(KNOWN_INDEX).await.unwrap();
    let size = stored.len() as u64;
    let dir = tempfile::tempdir().unwrap();
    let download =
        |size, piece| DigestFileWriter::download(&e.backend, KNOWN_INDEX, size, piece, dir.path());
    // Pieces smaller than a digest, not a multiple of one, and larger than the whole index.
    for piece in [1, 32, 7 * 32 + 5, 3200, 1 << 20] {
        let copy = download(size, piece).await.unwrap();
        assert_eq!(copy.object(), stored, "piece {piece}");
    }
    // A stored index shorter than its listed size, or not an index at all, is refused.
    let Err(err) = download(size + 32, 64).await else {
        panic!("a short index was accepted");
    };
    assert!(err.to_string().contains("ended at"), "{err}");
    let Err(err) = download(size - 1, 64).await else {
        panic!("a size that is no index was accepted");
    };
    assert!(err.to_string().contains("not a known-chunk index"), "{err}");
}
