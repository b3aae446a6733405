use super::*;

/// Writes a catalog the way the stock client does: child tables first, root table last.
struct Writer {
    out: Vec<u8>,
}

enum Item {
    Dir(&'static str, Vec<Item>),
    File(&'static str, u64, i64),
    Other(u8, &'static str),
}

impl Writer {
    fn table(&mut self, items: &[Item]) -> u64 {
        let mut children = Vec::new();
        for it in items {
            if let Item::Dir(_, sub) = it {
                children.push(self.table(sub));
            }
        }
        let start = self.out.len() as u64;
        let mut body = Vec::new();
        encode_u64(&mut body, items.len() as u64);
        let mut child = children.into_iter();
        for it in items {
            let (t, name) = match it {
                Item::Dir(n, _) => (b'd', *n),
                Item::File(n, _, _) => (b'f', *n),
                Item::Other(t, n) => (*t, *n),
            };
            body.push(t);
            encode_u64(&mut body, name.len() as u64);
            body.extend_from_slice(name.as_bytes());
            match it {
                Item::Dir(..) => encode_u64(&mut body, start - child.next().unwrap()),
                Item::File(_, size, mtime) => {
                    encode_u64(&mut body, *size);
                    encode_i64(&mut body, *mtime);
                }
                Item::Other(..) => {}
            }
        }
        encode_u64(&mut self.out, body.len() as u64);
        self.out.extend_from_slice(&body);
        start
    }
}

fn write(root: &[Item]) -> Vec<u8> {
    let mut w = Writer {
        out: CATALOG_MAGIC.to_vec(),
    };
    let root = w.table(root);
    w.out.extend_from_slice(&root.to_le_bytes());
    w.out
}

fn sample() -> Vec<u8> {
    write(&[Item::Dir(
        "probe.pxar.didx",
        vec![
            Item::File("a.txt", 4, 1796509615),
            Item::Dir("sub", vec![Item::File("x", 0, -1), Item::Other(b'l', "ln")]),
            Item::Other(b'h', "hard"),
            Item::Other(b'p', "fifo"),
            Item::Other(b's', "sock"),
            Item::Other(b'b', "blk"),
            Item::Other(b'c', "chr"),
        ],
    )])
}

#[test]
fn varints_match_the_documented_examples() {
    let cases: &[(u64, &[u8])] = &[
        (0, &[0]),
        (127, &[0x7f]),
        (128, &[0x80, 1]),
        (300, &[0xac, 2]),
        (
            u64::MAX,
            &[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 1],
        ),
    ];
    for (v, bytes) in cases {
        let mut out = Vec::new();
        encode_u64(&mut out, *v);
        assert_eq!(out, *bytes);
        let mut pos = 0;
        assert_eq!(decode_u64(bytes, &mut pos).unwrap(), *v);
        assert_eq!(pos, bytes.len());
    }
    let signed: &[(i64, &[u8])] = &[
        (-1, &[0x81, 0]),
        (-128, &[0x80, 0x81, 0]),
        (1430487000, &[0xd8, 0xff, 0x8d, 0xaa, 0x05]),
        (0, &[0]),
    ];
    for (v, bytes) in signed {
        let mut out = Vec::new();
        encode_i64(&mut out, *v);
        assert_eq!(out, *bytes, "{v}");
        let mut pos = 0;
        assert_eq!(decode_i64(bytes, &mut pos).unwrap(), *v);
    }
    for v in [i64::MIN, i64::MAX, i64::MIN + 1, -1_000_000_007] {
        let mut out = Vec::new();
        encode_i64(&mut out, v);
        let mut pos = 0;
        assert_eq!(decode_i64(&out, &mut pos).unwrap(), v);
        assert_eq!(pos, out.len());
    }
    // overlong and truncated forms
    let mut pos = 0;
    assert!(decode_u64(&[0xff; 11], &mut pos).is_err());
    let mut pos = 0;
    assert!(decode_u64(
        &[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 2],
        &mut pos
    )
    .is_err());
    let mut pos = 0;
    assert!(decode_u64(&[0x80], &mut pos).is_err());
    let mut pos = 0;
    assert!(decode_i64(&[0xff; 12], &mut pos).is_err());
}

/// The tail of the observed 758-byte catalog of one archive `probe.pxar.didx` (root table at 729
/// pointing back 452 bytes, then the root pointer) parses as the stock client wrote it.
#[test]
fn observed_root_table_parses() {
    let tail = hex::decode("1401640f70726f62652e707861722e64696478c403d902000000000000").unwrap();
    let body = &tail[1..21];
    let entries = parse_table(body, 729).unwrap();
    assert_eq!(entries.len(), 1);
    assert_eq!(entries[0].name, b"probe.pxar.didx");
    assert_eq!(entries[0].kind, CatalogKind::Directory { table: 277 });
    // table "sub" at 246: a.txt (4 bytes, mtime 1796509615) and dir "deep" 15 bytes back
    let sub =
        hex::decode("15026605612e74787404af9fd2d806640464656570 0f".replace(' ', "")).unwrap();
    let entries = parse_table(&sub[1..], 246).unwrap();
    assert_eq!(
        entries[0].kind,
        CatalogKind::File {
            size: 4,
            mtime: 1796509615
        }
    );
    assert_eq!(entries[1].kind, CatalogKind::Directory { table: 231 });
}

#[test]
fn list_paths() {
    let data = sample();
    let cat = futures::executor::block_on(Catalog::open(crate::format::pxar::MemSource::new(
        data.clone(),
    )))
    .unwrap();
    let run = |p: &[&[u8]]| futures::executor::block_on(cat.list_path(p));
    let root = run(&[]).unwrap();
    assert_eq!(root.len(), 1);
    let top = run(&[b"probe.pxar.didx"]).unwrap();
    let types: String = top.iter().map(|e| e.kind.type_char()).collect();
    assert_eq!(types, "fdhpsbc");
    let sub = run(&[b"probe.pxar.didx", b"sub"]).unwrap();
    assert_eq!(sub[0].kind, CatalogKind::File { size: 0, mtime: -1 });
    assert!(matches!(
        run(&[b"probe.pxar.didx", b"nope"]),
        Err(PxarError::NotFound(_))
    ));
    assert!(matches!(
        run(&[b"probe.pxar.didx", b"a.txt"]),
        Err(PxarError::NotADirectory(_))
    ));
    assert!(run(&[b"probe.pxar.didx", b""]).is_err());
    let summary = fuzz_catalog(&data).unwrap();
    assert_eq!(summary.tables, 3);
    assert_eq!(summary.entries, 1 + 7 + 2);
}

#[test]
fn malformed_catalogs_fail_cleanly() {
    let data = sample();
    for len in 0..data.len() {
        let _ = fuzz_catalog(&data[..len]);
    }
    assert!(fuzz_catalog(&data[..data.len() - 1]).is_err());
    let mut m = data.clone();
    m[0] ^= 1;
    assert!(fuzz_catalog(&m).unwrap_err().to_string().contains("magic"));
    // root pointer past the end, into the magic
    for bad in [u64::MAX, data.len() as u64, 3] {
        let mut m = data.clone();
        let n = m.len();
        m[n - 8..].copy_from_slice(&bad.to_le_bytes());
        assert!(fuzz_catalog(&m).is_err());
    }
    // a directory entry pointing forward (or to itself) is refused
    let mut body = Vec::new();
    encode_u64(&mut body, 1);
    body.extend_from_slice(b"d\x01x");
    encode_u64(&mut body, 0);
    let err = parse_table(&body, 100).unwrap_err();
    assert!(err.to_string().contains("earlier table"), "{err}");
    // unknown type, leftover bytes, empty name, count larger than the body
    assert!(parse_table(b"\x01z\x01x", 100).is_err());
    assert!(parse_table(b"\x01l\x01xEXTRA", 100).is_err());
    assert!(parse_table(b"\x01l\x00", 100).is_err());
    assert!(parse_table(b"\xff\xff\x03l\x01x", 100).is_err());
    // random corruption never panics
    use rand::{Rng, SeedableRng};
    let mut rng = rand::rngs::StdRng::seed_from_u64(3);
    for _ in 0..5000 {
        let mut m = data.clone();
        let i = rng.gen_range(0..m.len());
        m[i] = rng.gen();
        let _ = fuzz_catalog(&m);
    }
    // many directory entries sharing one child table: visited once each
    let mut w = Writer {
        out: CATALOG_MAGIC.to_vec(),
    };
    let leaf = w.table(&[Item::File("f", 1, 1)]);
    let mut body = Vec::new();
    encode_u64(&mut body, 500);
    let start = w.out.len() as u64;
    for i in 0..500 {
        let name = format!("d{i:03}");
        body.push(b'd');
        encode_u64(&mut body, name.len() as u64);
        body.extend_from_slice(name.as_bytes());
        encode_u64(&mut body, start - leaf);
    }
    encode_u64(&mut w.out, body.len() as u64);
    w.out.extend_from_slice(&body);
    w.out.extend_from_slice(&start.to_le_bytes());
    assert_eq!(fuzz_catalog(&w.out).unwrap().tables, 2);
}
