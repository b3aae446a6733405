//! Hostile and broken archives: every reader must return an error (never panic, loop or
//! allocate by a claimed size), within work bounded by the input.

use futures::executor::block_on;
use rand::{Rng, SeedableRng};

use super::test_builder::{build, dir, file, item, stat, Node};
use super::*;

fn tree() -> Node {
    dir(vec![
        ("a", file(b"alpha")),
        ("d", dir(vec![("b", file(b"beta")), ("e", dir(vec![]))])),
        ("h", Node::Hardlink("a")),
        ("l", Node::Symlink(stat(mode::IFLNK, 0o777), "a")),
    ])
}

/// Offset of the FILENAME item of `name`.
fn fname_at(meta: &[u8], name: &str) -> usize {
    let mut needle = Vec::new();
    item(
        &mut needle,
        htype::FILENAME,
        &[name.as_bytes(), b"\0"].concat(),
    );
    find(meta, &needle)
}

fn find(hay: &[u8], needle: &[u8]) -> usize {
    hay.windows(needle.len())
        .position(|w| w == needle)
        .expect("needle present")
}

#[test]
fn every_truncation_is_an_error() {
    let b = build(&tree(), false);
    for len in 0..b.meta.len() {
        assert!(fuzz_archive(&b.meta[..len]).is_err(), "prefix {len}");
    }
    let s = build(&tree(), true);
    let p = s.payload.unwrap();
    for len in 0..p.len() {
        assert!(
            fuzz_split_archive(&s.meta, &p[..len]).is_err(),
            "payload prefix {len}"
        );
    }
}

#[test]
fn random_corruption_never_panics() {
    let b = build(&tree(), false);
    let s = build(&tree(), true);
    let p = s.payload.clone().unwrap();
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    for _ in 0..3000 {
        let mut m = b.meta.clone();
        for _ in 0..rng.gen_range(1..4) {
            let i = rng.gen_range(0..m.len());
            m[i] = rng.gen();
        }
        let _ = fuzz_archive(&m);
        let mut m = s.meta.clone();
        let i = rng.gen_range(0..m.len());
        m[i] = rng.gen();
        let mut q = p.clone();
        let j = rng.gen_range(0..q.len());
        q[j] ^= 1 << rng.gen_range(0..8);
        let _ = fuzz_split_archive(&m, &p);
        let _ = fuzz_split_archive(&s.meta, &q);
    }
}

#[test]
fn huge_claimed_sizes_are_refused_before_allocating() {
    let b = build(&tree(), false);
    // FILENAME of "a" claims u64::MAX bytes
    let at = find(&b.meta, &htype::FILENAME.to_le_bytes());
    let mut m = b.meta.clone();
    m[at + 8..at + 16].copy_from_slice(&u64::MAX.to_le_bytes());
    assert!(fuzz_archive(&m).is_err());
    // a FILENAME that fits the archive but exceeds the name limit
    let mut big = Vec::new();
    item(&mut big, htype::FILENAME, &vec![b'x'; 5000]);
    assert!(Header::parse(&big, 0)
        .unwrap()
        .check_content_limit(0)
        .is_err());
    // full size below the header
    let mut m = b.meta.clone();
    m[8..16].copy_from_slice(&3u64.to_le_bytes());
    let err = fuzz_archive(&m).unwrap_err();
    assert!(err.is_malformed(), "{err}");
}

#[test]
fn goodbye_records_pointing_at_themselves_or_outside_fail() {
    let b = build(&tree(), false);
    let a = block_on(Archive::open(MemSource::new(b.meta.clone()), None)).unwrap();
    let root = block_on(a.root()).unwrap();
    let opened = block_on(a.open_dir(&root)).unwrap();
    assert_eq!(Archive::<MemSource>::child_count(&opened), 4);
    // Rewrite the root goodbye's first record offset: 0 (itself), beyond the start, huge.
    let gstart = b.meta.len() - (16 + 24 * 5);
    for bad in [0u64, gstart as u64 + 1, u64::MAX, 1] {
        let mut m = b.meta.clone();
        let rec = gstart + 16;
        m[rec + 8..rec + 16].copy_from_slice(&bad.to_le_bytes());
        let a = block_on(Archive::open(MemSource::new(m.clone()), None)).unwrap();
        let root = block_on(a.root()).unwrap();
        let opened = block_on(a.open_dir(&root)).unwrap();
        assert!(block_on(a.list(&opened)).is_err(), "offset {bad}");
    }
    // A directory record whose size swallows the parent's goodbye.
    let d_hash = hash_filename(b"d");
    let mut m = b.meta.clone();
    let rec = gstart + 16 + find(&m[gstart + 16..], &d_hash.to_le_bytes());
    m[rec + 16..rec + 24].copy_from_slice(&(1u64 << 40).to_le_bytes());
    let a = block_on(Archive::open(MemSource::new(m), None)).unwrap();
    assert!(block_on(a.lookup(b"d/b")).is_err());
}

#[test]
fn tail_and_root_checks() {
    let b = build(&tree(), false);
    let n = b.meta.len();
    let mut m = b.meta.clone();
    m[n - 24] ^= 1; // tail marker
    assert!(fuzz_archive(&m).is_err());
    let mut m = b.meta.clone();
    m[n - 8..].copy_from_slice(&(n as u64 * 2).to_le_bytes()); // tail size
    assert!(fuzz_archive(&m).is_err());
    let mut m = b.meta.clone();
    m[n - 16..n - 8].copy_from_slice(&7u64.to_le_bytes()); // tail offset
    assert!(fuzz_archive(&m).is_err());
    // root entry is not a directory
    let root = file(b"x");
    let mut m = Vec::new();
    let Node::File(st, _) = root else {
        unreachable!()
    };
    item(&mut m, htype::ENTRY, &st.to_bytes());
    item(&mut m, htype::PAYLOAD, b"x");
    assert!(fuzz_archive(&m).is_err());
    assert!(fuzz_archive(&[]).is_err());
}

#[test]
fn hardlinks_must_point_back_to_a_regular_file() {
    let b = build(&tree(), false);
    let at = find(&b.meta, &htype::HARDLINK.to_le_bytes());
    let fname_h = fname_at(&b.meta, "h");
    for back in [0u64, fname_h as u64 + 1, 1, u64::MAX] {
        let mut m = b.meta.clone();
        m[at + 16..at + 24].copy_from_slice(&back.to_le_bytes());
        assert!(fuzz_archive(&m).is_err(), "back-offset {back}");
    }
    // pointing at the directory "d" instead of the file "a"
    let fname_d = fname_at(&b.meta, "d");
    let mut m = b.meta.clone();
    m[at + 16..at + 24].copy_from_slice(&((fname_h - fname_d) as u64).to_le_bytes());
    let err = fuzz_archive(&m).unwrap_err();
    assert!(err.to_string().contains("regular file"), "{err}");
}

#[test]
fn payload_references_are_checked() {
    let s = build(&tree(), true);
    let p = s.payload.clone().unwrap();
    let at = find(&s.meta, &htype::PAYLOAD_REF.to_le_bytes());
    for (off, size) in [
        (0u64, 5u64),
        (16, 6),
        (u64::MAX - 3, 5),
        (17, 5),
        (16, u64::MAX),
    ] {
        let mut m = s.meta.clone();
        m[at + 16..at + 24].copy_from_slice(&off.to_le_bytes());
        m[at + 24..at + 32].copy_from_slice(&size.to_le_bytes());
        assert!(fuzz_split_archive(&m, &p).is_err(), "ref {off}/{size}");
    }
    // two files referencing the same payload: the walk refuses to go back
    let refs: Vec<usize> = s
        .meta
        .windows(8)
        .enumerate()
        .filter(|(_, w)| *w == htype::PAYLOAD_REF.to_le_bytes())
        .map(|(i, _)| i)
        .collect();
    assert_eq!(refs.len(), 2);
    let mut m = s.meta.clone();
    let first = m[refs[0] + 16..refs[0] + 32].to_vec();
    m[refs[1] + 16..refs[1] + 32].copy_from_slice(&first);
    let err = fuzz_split_archive(&m, &p).unwrap_err();
    assert!(err.to_string().contains("goes back"), "{err}");
    // missing start and tail markers
    let mut q = p.clone();
    q[0] ^= 1;
    assert!(fuzz_split_archive(&s.meta, &q).is_err());
    let mut q = p.clone();
    let n = q.len();
    q[n - 16] ^= 1;
    assert!(fuzz_split_archive(&s.meta, &q).is_err());
}

#[test]
fn wrong_items_for_the_mode_are_refused() {
    // a regular file whose content item is a SYMLINK
    let mut st = stat(mode::IFREG, 0o644);
    let tree = dir(vec![("x", Node::Symlink(st, "y"))]);
    assert!(fuzz_archive(&build(&tree, false).meta).is_err());
    // a symlink with a payload
    st.mode = mode::IFLNK | 0o777;
    let tree = dir(vec![("x", Node::File(st, b"data".to_vec()))]);
    assert!(fuzz_archive(&build(&tree, false).meta).is_err());
    // unknown file type bits
    st.mode = 0o170000 | 0o644;
    let tree = dir(vec![("x", Node::Fifo(st))]);
    assert!(fuzz_archive(&build(&tree, false).meta).is_err());
    // bad names
    for name in ["..", ".", "a/b"] {
        let tree = dir(vec![(name, file(b"1"))]);
        let err = fuzz_archive(&build(&tree, false).meta).unwrap_err();
        assert!(err.to_string().contains("name"), "{name}: {err}");
    }
}

#[test]
fn nesting_deeper_than_the_limit_is_refused() {
    // The test builder recurses per level; the readers do not.
    std::thread::Builder::new()
        .stack_size(256 << 20)
        .spawn(nesting_check)
        .unwrap()
        .join()
        .unwrap();
}

fn nesting_check() {
    fn nest(depth: usize) -> Node {
        let mut node = dir(vec![]);
        for _ in 0..depth {
            node = dir(vec![("d", node)]);
        }
        node
    }
    let ok = build(&nest(100), false);
    assert_eq!(fuzz_archive(&ok.meta).unwrap().directories, 101);
    let deep = build(&nest(MAX_DEPTH + 1), false);
    let err = fuzz_archive(&deep.meta).unwrap_err();
    assert!(matches!(err, PxarError::Limit { .. }), "{err}");
    // random access still resolves a long path without recursion
    let a = block_on(Archive::open(MemSource::new(deep.meta), None)).unwrap();
    let path = vec!["d"; 2000].join("/");
    assert!(block_on(a.lookup(path.as_bytes())).is_ok());
}

#[test]
fn many_equal_hashes_hit_the_collision_limit() {
    // A root whose goodbye table has 100 records with the same hash, all pointing to "a".
    let b = build(&dir(vec![("a", file(b"1"))]), false);
    let mut m = b.meta[..b.meta.len() - 64].to_vec(); // drop the goodbye (1 record + tail)
    let gstart = m.len() as u64;
    let fname = fname_at(&m, "a") as u64;
    let mut body = Vec::new();
    for _ in 0..100 {
        let rec = GoodbyeItem {
            hash: hash_filename(b"zz"),
            offset: gstart - fname,
            size: 10,
        };
        body.extend_from_slice(&rec.to_bytes());
    }
    let full = 16 + body.len() as u64 + 24;
    body.extend_from_slice(
        &GoodbyeItem {
            hash: htype::GOODBYE_TAIL_MARKER,
            offset: gstart,
            size: full,
        }
        .to_bytes(),
    );
    item(&mut m, htype::GOODBYE, &body);
    let a = block_on(Archive::open(MemSource::new(m), None)).unwrap();
    let err = block_on(a.lookup(b"zz")).unwrap_err();
    assert!(matches!(err, PxarError::Limit { .. }), "{err}");
}
