//! Encoder tests: archives of real trees decode with this crate's decoder and with the
//! server's random-access readers (lookups, listings, walks, catalog), in every mode.

use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use futures::executor::block_on;
use pbs_cloud_server::format::catalog::{Catalog, CatalogKind};
use pbs_cloud_server::format::pxar::{self as spxar, Archive, EntryKind, MemSource};

use super::format::Stat;
use super::*;
use crate::chunker::Chunker;

/// A tree with every kind the encoder writes.
fn make_tree(root: &Path) {
    use std::os::unix::fs::{symlink, PermissionsExt};
    std::fs::create_dir_all(root.join("etc/empty")).unwrap();
    std::fs::create_dir_all(root.join("var/lib")).unwrap();
    std::fs::write(root.join("etc/hosts"), b"127.0.0.1 localhost\n").unwrap();
    std::fs::write(root.join("etc/zero"), b"").unwrap();
    std::fs::write(
        root.join("var/lib/big.bin"),
        vec![0xa5u8; 3 * 1024 * 1024 + 7],
    )
    .unwrap();
    std::fs::set_permissions(
        root.join("etc/hosts"),
        std::fs::Permissions::from_mode(0o640),
    )
    .unwrap();
    symlink("../etc/hosts", root.join("var/link")).unwrap();
    std::fs::hard_link(root.join("etc/hosts"), root.join("var/hard")).unwrap();
    let odd = std::ffi::OsStr::from_bytes(b"bad\xff.txt");
    std::fs::write(root.join("var").join(odd), b"odd").unwrap();
    std::fs::write(root.join("x".repeat(255)), b"long").unwrap();
    nix::unistd::mkfifo(
        &root.join("fifo"),
        nix::sys::stat::Mode::from_bits_truncate(0o600),
    )
    .unwrap();
    let _sock = std::os::unix::net::UnixListener::bind(root.join("sock")).unwrap();
    if nix::unistd::geteuid().is_root() {
        use nix::sys::stat::{makedev, mknod, Mode, SFlag};
        mknod(
            &root.join("null"),
            SFlag::S_IFCHR,
            Mode::from_bits_truncate(0o666),
            makedev(1, 3),
        )
        .unwrap();
    }
}

fn server_archive(meta: &[u8], payload: Option<&[u8]>) -> Archive<MemSource> {
    block_on(Archive::open(
        MemSource::new(meta.to_vec()),
        payload.map(|p| MemSource::new(p.to_vec())),
    ))
    .unwrap()
}

fn read_file(a: &Archive<MemSource>, path: &[u8]) -> Vec<u8> {
    block_on(async {
        let e = a.lookup(path).await.unwrap();
        let f = a.follow_hardlink(&e).await.unwrap();
        let r = a.payload_range(&f).await.unwrap();
        let mut out = Vec::new();
        while (out.len() as u64) < r.size {
            out.extend_from_slice(&a.read_file(&r, out.len() as u64, 1 << 20).await.unwrap());
        }
        out
    })
}

fn check_against_server(meta: &[u8], payload: Option<&[u8]>) {
    let a = server_archive(meta, payload);
    assert_eq!(read_file(&a, b"etc/hosts"), b"127.0.0.1 localhost\n");
    assert_eq!(read_file(&a, b"/var/hard"), b"127.0.0.1 localhost\n");
    assert_eq!(
        read_file(&a, b"var/lib/big.bin"),
        vec![0xa5u8; 3 * 1024 * 1024 + 7]
    );
    assert_eq!(read_file(&a, b"var/bad\xff.txt"), b"odd");
    assert_eq!(read_file(&a, "x".repeat(255).as_bytes()), b"long");
    let link = block_on(a.lookup(b"var/link")).unwrap();
    assert_eq!(
        link.kind,
        EntryKind::Symlink {
            target: b"../etc/hosts".to_vec()
        }
    );
    assert_eq!(block_on(a.lookup(b"fifo")).unwrap().kind, EntryKind::Fifo);
    assert_eq!(block_on(a.lookup(b"sock")).unwrap().kind, EntryKind::Socket);
    if nix::unistd::geteuid().is_root() {
        assert_eq!(
            block_on(a.lookup(b"null")).unwrap().kind,
            EntryKind::Device { major: 1, minor: 3 }
        );
    }
    let hosts = block_on(a.lookup(b"etc/hosts")).unwrap();
    assert_eq!(hosts.metadata.stat.permissions(), 0o640);
    let summary = match payload {
        Some(p) => spxar::fuzz_split_archive(meta, p).unwrap(),
        None => spxar::fuzz_archive(meta).unwrap(),
    };
    assert_eq!(summary.directories, 5);
}

#[test]
fn unified_archive_and_catalog() {
    let src = tempfile::tempdir().unwrap();
    make_tree(src.path());
    let enc = encode_tree(src.path(), EncodeOptions { split: false }, None).unwrap();
    assert!(enc.payload.is_none());
    check_against_server(&enc.archive, None);

    // the catalog lists the archive under its server name
    let mut w = CatalogWriter::default();
    let mut cat = w.start();
    cat.extend(w.add_archive("root.pxar.didx", &enc.catalog));
    cat.extend(w.finish());
    pbs_cloud_server::format::catalog::fuzz_catalog(&cat).unwrap();
    let c = block_on(Catalog::open(MemSource::new(cat))).unwrap();
    let top = block_on(c.list_path(&[b"root.pxar.didx"])).unwrap();
    let names: Vec<String> = top
        .iter()
        .map(|e| format!("{}{}", e.kind.type_char(), String::from_utf8_lossy(&e.name)))
        .collect();
    let mut want = vec!["detc", "pfifo", "ssock", "dvar"];
    if nix::unistd::geteuid().is_root() {
        want.insert(2, "cnull");
    }
    let mut want: Vec<String> = want.into_iter().map(String::from).collect();
    want.push(format!("f{}", "x".repeat(255)));
    assert_eq!(names, want);
    let var = block_on(c.list_path(&[b"root.pxar.didx", b"var"])).unwrap();
    let kinds: Vec<(Vec<u8>, char)> = var
        .iter()
        .map(|e| (e.name.clone(), e.kind.type_char()))
        .collect();
    assert_eq!(
        kinds,
        vec![
            (b"bad\xff.txt".to_vec(), 'f'),
            (b"hard".to_vec(), 'h'),
            (b"lib".to_vec(), 'd'),
            (b"link".to_vec(), 'l'),
        ]
    );
    let lib = block_on(c.list_path(&[b"root.pxar.didx", b"var", b"lib"])).unwrap();
    assert!(matches!(lib[0].kind, CatalogKind::File { size, .. } if size == 3 * 1024 * 1024 + 7));

    // restore gives back the same tree
    let dst = tempfile::tempdir().unwrap();
    let out = dst.path().join("r");
    extract(&enc.archive, None, &out).unwrap();
    let again = encode_tree(&out, EncodeOptions { split: false }, None).unwrap();
    // everything comes back except the socket, which cannot be restored as a file
    let shape = |a: &[u8]| -> Vec<(Vec<u8>, Stat, String)> {
        decode(a, None)
            .unwrap()
            .into_iter()
            .filter(|e| e.path != b"sock")
            .map(|e| {
                let kind = match e.kind {
                    DecodedKind::File { size, .. } => format!("file {size}"),
                    other => format!("{other:?}"),
                };
                (e.path, e.stat, kind)
            })
            .collect()
    };
    assert_eq!(shape(&again.archive), shape(&enc.archive));
    assert_eq!(again.archive.len(), enc.archive.len() - (21 + 56 + 24));
}

#[test]
fn split_archive_data_mode() {
    let src = tempfile::tempdir().unwrap();
    make_tree(src.path());
    let enc = encode_tree(src.path(), EncodeOptions { split: true }, None).unwrap();
    let payload = enc.payload.as_ref().unwrap().data_only().unwrap();
    assert_eq!(&enc.archive[..8], &format::FORMAT_VERSION.to_le_bytes());
    check_against_server(&enc.archive, Some(&payload));
    let dst = tempfile::tempdir().unwrap();
    let out = dst.path().join("r");
    extract(&enc.archive, Some(&payload), &out).unwrap();
    assert_eq!(
        std::fs::read(out.join("var/hard")).unwrap(),
        b"127.0.0.1 localhost\n"
    );
}

/// The bytes of a payload stream, with reused chunks taken from the previous stream.
fn materialize(
    stream: &PayloadStream,
    prev: &[u8],
    prev_chunks: &[(crate::wire::Digest, u64, u64)],
) -> Vec<u8> {
    let mut out = Vec::new();
    for piece in &stream.pieces {
        match piece {
            PayloadPiece::Data(d) => out.extend_from_slice(d),
            PayloadPiece::Reused(chunks) => {
                for (digest, len) in chunks {
                    let c = prev_chunks.iter().find(|c| c.0 == *digest).unwrap();
                    assert_eq!(c.2, *len);
                    out.extend_from_slice(&prev[c.1 as usize..(c.1 + c.2) as usize]);
                }
            }
        }
    }
    out
}

fn chunk_list(data: &[u8], avg: usize) -> Vec<(crate::wire::Digest, u64, u64)> {
    let mut out = Vec::new();
    let mut start = 0u64;
    for len in Chunker::split(avg, data) {
        let d = crate::wire::sha256(&data[start as usize..start as usize + len]);
        out.push((d, start, len as u64));
        start += len as u64;
    }
    out
}

#[test]
fn metadata_mode_reuses_unchanged_payloads() {
    let src = tempfile::tempdir().unwrap();
    let root = src.path();
    std::fs::create_dir_all(root.join("a")).unwrap();
    for i in 0..40 {
        std::fs::write(
            root.join(format!("a/f{i:02}")),
            vec![i as u8; 50_000 + i * 977],
        )
        .unwrap();
    }
    std::fs::write(root.join("z"), b"last").unwrap();
    let first = encode_tree(root, EncodeOptions { split: true }, None).unwrap();
    let first_payload = first.payload.as_ref().unwrap().data_only().unwrap();
    let chunks = chunk_list(&first_payload, 64 * 1024);
    let prev = PreviousArchive::new(&first.archive, chunks.clone()).unwrap();

    // unchanged tree: everything reused
    let same = encode_tree(root, EncodeOptions { split: true }, Some(&prev)).unwrap();
    assert_eq!(same.reused_files, 41);
    let payload = materialize(same.payload.as_ref().unwrap(), &first_payload, &chunks);
    spxar::fuzz_split_archive(&same.archive, &payload).unwrap();

    // change one file in the middle: earlier files reused, the rest as the padding rule says
    std::fs::write(root.join("a/f20"), b"changed").unwrap();
    let second = encode_tree(root, EncodeOptions { split: true }, Some(&prev)).unwrap();
    let stream = second.payload.as_ref().unwrap();
    assert!(second.reused_files >= 19, "{}", second.reused_files);
    assert!(stream.reused_chunks() > 0);
    let payload = materialize(stream, &first_payload, &chunks);
    let a = server_archive(&second.archive, Some(&payload));
    for i in 0..40 {
        let want = if i == 20 {
            b"changed".to_vec()
        } else {
            vec![i as u8; 50_000 + i * 977]
        };
        assert_eq!(read_file(&a, format!("a/f{i:02}").as_bytes()), want, "f{i}");
    }
    assert_eq!(read_file(&a, b"z"), b"last");
    spxar::fuzz_split_archive(&second.archive, &payload).unwrap();
    let decoded = decode(&second.archive, Some(&payload)).unwrap();
    assert_eq!(decoded.len(), 1 + 1 + 40 + 1);
}
