//! Reader tests against archives from the test builder: lookups, listings, walks, hardlinks,
//! split archives, the type constants and the observed bytes of a real archive.

use std::hash::Hasher;

use futures::executor::block_on;
use siphasher::sip::SipHasher24;

use super::test_builder::{build, build_with, dir, file, item, stat, Built, Node};
use super::*;

fn sample_tree() -> Node {
    dir(vec![
        ("a.txt", file(b"hello world")),
        (
            "etc",
            dir(vec![
                ("hosts", file(b"127.0.0.1 localhost\n")),
                ("empty", dir(vec![])),
                ("zero", file(b"")),
            ]),
        ),
        ("fifo", Node::Fifo(stat(mode::IFIFO, 0o600))),
        ("link", Node::Symlink(stat(mode::IFLNK, 0o777), "../x/y")),
        ("null", Node::Device(stat(mode::IFCHR, 0o666), 1, 3)),
        ("hard", Node::Hardlink("etc/hosts")),
        ("big", file(&vec![7u8; 300_000])),
    ])
}

fn open(b: &Built) -> Archive<MemSource> {
    let payload = b.payload.clone().map(MemSource::new);
    block_on(Archive::open(MemSource::new(b.meta.clone()), payload)).expect("open")
}

fn content(a: &Archive<MemSource>, e: &Entry) -> Vec<u8> {
    block_on(async {
        let target = a.follow_hardlink(e).await.unwrap();
        let range = a.payload_range(&target).await.unwrap();
        let mut out = Vec::new();
        while (out.len() as u64) < range.size {
            let piece = a.read_file(&range, out.len() as u64, 1000).await.unwrap();
            out.extend_from_slice(&piece);
        }
        out
    })
}

fn lookup(a: &Archive<MemSource>, p: &str) -> Result<Entry, PxarError> {
    block_on(a.lookup(p.as_bytes()))
}

#[test]
fn constants_are_label_hashes() {
    let labels = [
        (htype::FORMAT_VERSION, "__PROXMOX_FORMAT_VERSION__"),
        (htype::ENTRY, "__PROXMOX_FORMAT_ENTRY_V2__"),
        (htype::ENTRY_V1, "__PROXMOX_FORMAT_ENTRY__"),
        (htype::PRELUDE, "__PROXMOX_FORMAT_PRELUDE__"),
        (htype::FILENAME, "__PROXMOX_FORMAT_FILENAME__"),
        (htype::SYMLINK, "__PROXMOX_FORMAT_SYMLINK__"),
        (htype::DEVICE, "__PROXMOX_FORMAT_DEVICE__"),
        (htype::XATTR, "__PROXMOX_FORMAT_XATTR__"),
        (htype::ACL_USER, "__PROXMOX_FORMAT_ACL_USER__"),
        (htype::ACL_GROUP, "__PROXMOX_FORMAT_ACL_GROUP__"),
        (htype::ACL_GROUP_OBJ, "__PROXMOX_FORMAT_ACL_GROUP_OBJ__"),
        (htype::ACL_DEFAULT, "__PROXMOX_FORMAT_ACL_DEFAULT__"),
        (
            htype::ACL_DEFAULT_USER,
            "__PROXMOX_FORMAT_ACL_DEFAULT_USER__",
        ),
        (
            htype::ACL_DEFAULT_GROUP,
            "__PROXMOX_FORMAT_ACL_DEFAULT_GROUP__",
        ),
        (htype::FCAPS, "__PROXMOX_FORMAT_FCAPS__"),
        (htype::QUOTA_PROJID, "__PROXMOX_FORMAT_QUOTA_PROJID__"),
        (htype::HARDLINK, "__PROXMOX_FORMAT_HARDLINK__"),
        (htype::PAYLOAD, "__PROXMOX_FORMAT_PXAR_PAYLOAD__"),
        (htype::PAYLOAD_REF, "__PROXMOX_FORMAT_PXAR_PAYLOAD_REF__"),
        (htype::GOODBYE, "__PROXMOX_FORMAT_GOODBYE__"),
        (
            htype::GOODBYE_TAIL_MARKER,
            "__PROXMOX_FORMAT_PXAR_GOODBYE_TAIL_MARKER__",
        ),
        (
            htype::PAYLOAD_START_MARKER,
            "__PROXMOX_FORMAT_PXAR_PAYLOAD_START_MARKER__",
        ),
        (
            htype::PAYLOAD_TAIL_MARKER,
            "__PROXMOX_FORMAT_PXAR_PAYLOAD_TAIL_MARKER__",
        ),
    ];
    for (value, label) in labels {
        assert_eq!(hash_filename(label.as_bytes()), value, "{label}");
    }
    assert_eq!(hash_filename(b""), 0x76614015f8d1bb6c);
    assert_eq!(hash_filename(b"a"), 0x0c26e9067c2c7bcf);
    assert_eq!(hash_filename(b"etc"), 0xd0c229edbd411e9a);
    assert_eq!(hash_filename(b"hello.txt"), 0x9b1ee0b84c66190c);
    assert_eq!(hash_filename(b"x.txt"), 0x934b062586461b6a);
    // The SipHash-2-4 reference vector (key 00..0f, message 00..0e).
    let mut k = [0u8; 16];
    k.iter_mut().enumerate().for_each(|(i, b)| *b = i as u8);
    let mut h = SipHasher24::new_with_key(&k);
    h.write(&(0u8..15).collect::<Vec<_>>());
    assert_eq!(h.finish(), 0xa129ca6149be45e5);
}

#[test]
fn bst_layout_matches_the_format() {
    assert_eq!(
        test_builder::bst_layout(&[0, 1, 2, 3, 4]),
        vec![3, 1, 4, 0, 2]
    );
}

/// A directory `deep` holding one 100-byte `x.txt` ends with exactly the goodbye bytes seen in
/// an archive of the stock client, and a `0o40755` root ENTRY has the observed layout.
#[test]
fn observed_bytes_of_a_real_archive() {
    let tree = dir(vec![("deep", dir(vec![("x.txt", file(&[b'x'; 100]))]))]);
    let b = build(&tree, false);
    let want = hex::decode(
        "1d73d542a64fec2f4000000000000000\
         6a1b468625064b93c200000000000000c200000000000000\
         55153e755bed5eeffa000000000000004000000000000000",
    )
    .unwrap();
    let pos = b
        .meta
        .windows(want.len())
        .position(|w| w == want.as_slice());
    assert!(pos.is_some(), "goodbye of deep not found");
    let root_entry =
        hex::decode("efac88e5746495d53800000000000000ed410000000000000000000000000000").unwrap();
    let mut st = stat(mode::IFDIR, 0o755);
    st.uid = 0;
    st.gid = 0;
    let b = build(&Node::Dir(st, vec![]), false);
    assert_eq!(&b.meta[..32], root_entry.as_slice());
}

#[test]
fn unified_lookup_list_and_read() {
    let b = build(&sample_tree(), false);
    let a = open(&b);
    assert_eq!(a.version(), 1);
    let root = block_on(a.root()).unwrap();
    let opened = block_on(a.open_dir(&root)).unwrap();
    let mut names: Vec<String> = block_on(a.list(&opened))
        .unwrap()
        .iter()
        .map(|e| String::from_utf8(e.name.clone()).unwrap())
        .collect();
    names.sort();
    assert_eq!(
        names,
        ["a.txt", "big", "etc", "fifo", "hard", "link", "null"]
    );

    let hosts = lookup(&a, "/etc/hosts").unwrap();
    assert_eq!(content(&a, &hosts), b"127.0.0.1 localhost\n");
    assert_eq!(hosts.metadata.stat.permissions(), 0o644);
    assert_eq!(content(&a, &lookup(&a, "big").unwrap()), vec![7u8; 300_000]);
    assert_eq!(content(&a, &lookup(&a, "etc/zero").unwrap()), b"");
    // hardlinks read the target's bytes
    let hard = lookup(&a, "hard").unwrap();
    assert!(matches!(hard.kind, EntryKind::Hardlink { .. }));
    assert_eq!(content(&a, &hard), b"127.0.0.1 localhost\n");
    let target = block_on(a.follow_hardlink(&hard)).unwrap();
    assert_eq!(target.name, b"hosts");

    let link = lookup(&a, "link").unwrap();
    assert_eq!(
        link.kind,
        EntryKind::Symlink {
            target: b"../x/y".to_vec()
        }
    );
    assert_eq!(
        lookup(&a, "null").unwrap().kind,
        EntryKind::Device { major: 1, minor: 3 }
    );
    assert_eq!(lookup(&a, "fifo").unwrap().kind, EntryKind::Fifo);
    let empty = lookup(&a, "./etc//empty/").unwrap();
    let opened = block_on(a.open_dir(&empty)).unwrap();
    assert!(block_on(a.list(&opened)).unwrap().is_empty());
    assert!(lookup(&a, "/").unwrap().is_dir());
    assert!(lookup(&a, ".").unwrap().filename_start.is_none());

    assert!(matches!(
        lookup(&a, "etc/../a.txt"),
        Err(PxarError::ParentDir)
    ));
    assert!(matches!(
        lookup(&a, "etc/nope"),
        Err(PxarError::NotFound(_))
    ));
    assert!(matches!(lookup(&a, "a.txt/x"), Err(PxarError::NotFound(_))));
    assert!(matches!(lookup(&a, ""), Err(PxarError::NotFound(_))));
    // symlinks are not followed
    assert!(matches!(lookup(&a, "link/y"), Err(PxarError::NotFound(_))));
}

#[test]
fn walk_in_stream_order_with_paths() {
    let b = build(&sample_tree(), false);
    let a = open(&b);
    let root = block_on(a.root()).unwrap();
    let mut w = Walker::new(&a, root).unwrap();
    let mut seen = Vec::new();
    while let Some(ev) = block_on(w.next()).unwrap() {
        let path: Vec<String> = w
            .path()
            .iter()
            .map(|p| String::from_utf8(p.clone()).unwrap())
            .collect();
        let tag = match &ev {
            WalkEvent::Enter(_) => "enter",
            WalkEvent::Leaf(_) => "leaf",
            WalkEvent::Exit(_) => "exit",
        };
        seen.push(format!("{tag} {}", path.join("/")));
        if let WalkEvent::Exit(e) = &ev {
            // the end found by walking matches the goodbye record's size
            if !path.is_empty() {
                let found = lookup(&a, &path.join("/")).unwrap();
                assert_eq!(found.end, e.end);
            } else {
                assert_eq!(e.end, b.meta.len() as u64);
            }
        }
    }
    assert_eq!(
        seen,
        [
            "enter ",
            "leaf a.txt",
            "enter etc",
            "leaf etc/hosts",
            "enter etc/empty",
            "exit etc/empty",
            "leaf etc/zero",
            "exit etc",
            "leaf fifo",
            "leaf link",
            "leaf null",
            "leaf hard",
            "leaf big",
            "exit ",
        ]
    );
    // a walk can start at a subdirectory
    let etc = lookup(&a, "etc").unwrap();
    let mut w = Walker::new(&a, etc).unwrap();
    let mut n = 0;
    while block_on(w.next()).unwrap().is_some() {
        n += 1;
    }
    assert_eq!(n, 6);
    let summary = fuzz_archive(&b.meta).unwrap();
    assert_eq!(summary.directories, 3);
    assert_eq!(summary.files, 4);
    assert_eq!(summary.content_bytes, 11 + 20 + 300_000);
}

#[test]
fn split_archive_reads_payloads() {
    let b = build_with(
        &sample_tree(),
        true,
        Some(b"{\"exclude-patterns\":\"*.tmp\\n\"}"),
    );
    let payload = b.payload.clone().unwrap();
    assert_eq!(&payload[..8], &htype::PAYLOAD_START_MARKER.to_le_bytes());
    let a = open(&b);
    assert_eq!(a.version(), 2);
    let hosts = lookup(&a, "etc/hosts").unwrap();
    assert!(matches!(
        hosts.kind,
        EntryKind::File {
            data: FileData::PayloadRef { .. },
            ..
        }
    ));
    assert_eq!(content(&a, &hosts), b"127.0.0.1 localhost\n");
    assert_eq!(
        content(&a, &lookup(&a, "hard").unwrap()),
        b"127.0.0.1 localhost\n"
    );
    assert_eq!(content(&a, &lookup(&a, "big").unwrap()), vec![7u8; 300_000]);
    let summary = fuzz_split_archive(&b.meta, &payload).unwrap();
    assert_eq!(summary.content_bytes, 11 + 20 + 300_000);

    // listing works on the metadata archive alone; contents need the payload archive
    let meta_only = block_on(Archive::open(MemSource::new(b.meta.clone()), None)).unwrap();
    let hosts = block_on(meta_only.lookup(b"etc/hosts")).unwrap();
    assert!(block_on(meta_only.payload_range(&hosts)).is_err());
}

#[test]
fn entry_v1_and_prelude_rules() {
    // root = ENTRY_V1 (mtime in nanoseconds) + empty goodbye
    let mut v1 = Vec::new();
    let mut body = Vec::new();
    body.extend_from_slice(&(mode::IFDIR | 0o700).to_le_bytes());
    body.extend_from_slice(&0u64.to_le_bytes());
    body.extend_from_slice(&5u32.to_le_bytes());
    body.extend_from_slice(&6u32.to_le_bytes());
    body.extend_from_slice(&1_500_000_000_123_456_789u64.to_le_bytes());
    item(&mut v1, htype::ENTRY_V1, &body);
    let g = v1.len() as u64;
    let tail = GoodbyeItem {
        hash: htype::GOODBYE_TAIL_MARKER,
        offset: g,
        size: 40,
    };
    item(&mut v1, htype::GOODBYE, &tail.to_bytes());
    let a = block_on(Archive::open(MemSource::new(v1), None)).unwrap();
    let root = block_on(a.root()).unwrap();
    assert_eq!(root.metadata.stat.mtime_secs, 1_500_000_000);
    assert_eq!(root.metadata.stat.mtime_nanos, 123_456_789);
    assert_eq!(root.metadata.stat.uid, 5);

    // a prelude needs version 2
    let b = build(&dir(vec![]), false);
    let mut bad = Vec::new();
    item(&mut bad, htype::FORMAT_VERSION, &1u64.to_le_bytes());
    item(&mut bad, htype::PRELUDE, b"x");
    bad.extend_from_slice(&b.meta);
    assert!(fuzz_archive(&bad).is_err());
    let mut bad = Vec::new();
    item(&mut bad, htype::FORMAT_VERSION, &3u64.to_le_bytes());
    bad.extend_from_slice(&b.meta);
    let err = fuzz_archive(&bad).unwrap_err();
    assert!(
        err.to_string().contains("unknown format version 3"),
        "{err}"
    );
}

#[test]
fn mtime_truncates_toward_zero() {
    let mut st = Stat {
        mtime_secs: -2,
        mtime_nanos: 999_000_000,
        ..Stat::default()
    };
    assert_eq!(st.mtime_truncated(), -1);
    st.mtime_secs = 5;
    assert_eq!(st.mtime_truncated(), 5);
}

/// The fuzz seeds (written by the independent pxar encoder of the e2e client) are whole, valid
/// archives, so fuzzing starts deep inside the readers instead of at the first magic check.
#[test]
fn fuzz_seeds_are_valid_archives() {
    let seeds = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/seeds");
    let unified = std::fs::read(seeds.join("pxar_archive/tree")).unwrap();
    let unified_summary = fuzz_archive(&unified).unwrap();
    assert!(
        unified_summary.directories >= 4 && unified_summary.files >= 4,
        "{unified_summary:?}"
    );

    let split = std::fs::read(seeds.join("pxar_split/tree")).unwrap();
    let (len, rest) = split.split_first_chunk::<4>().unwrap();
    let (meta, payload) = rest.split_at(u32::from_le_bytes(*len) as usize);
    let summary = fuzz_split_archive(meta, payload).unwrap();
    assert_eq!(summary.content_bytes, unified_summary.content_bytes);

    let catalog = std::fs::read(seeds.join("catalog_parse/tree")).unwrap();
    let summary = crate::format::catalog::fuzz_catalog(&catalog).unwrap();
    assert!(summary.tables >= 4, "{summary:?}");
}
