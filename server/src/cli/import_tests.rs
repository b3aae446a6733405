//! Unit tests of the import's source classification and chunk verification.

use std::time::UNIX_EPOCH;

use super::*;
use crate::format::blob::encode_blob;

fn meta(key: &str, size: u64) -> ObjectMeta {
    ObjectMeta {
        key: key.to_string(),
        size,
        modified: UNIX_EPOCH,
    }
}

#[test]
fn source_objects_are_sorted_by_role() {
    let d = sha256(b"chunk");
    let chunk = layout::chunk_key(&d);
    let snap = "ns/a/ns/b/vm/100/2026-01-01T00:00:00Z/";
    let layout = classify(vec![
        meta(&chunk, 10),
        meta(&format!("{chunk}.0.bad"), 10),
        meta(".chunks/.index", 5),
        meta(".gc-status", 3),
        meta(".lock", 0),
        meta("ns/a/.namespace", 0),
        meta("ns/a/ns/b/vm/100/owner", 10),
        meta("ns/a/ns/b/vm/100/notes", 4),
        meta(&format!("{snap}index.json.blob"), 100),
        meta(&format!("{snap}drive-scsi0.img.fidx"), 4200),
        meta(&format!("{snap}.protected"), 0),
        meta(&format!("{snap}random.txt"), 1),
        meta("vm/100/2026-01-01T00:00:00Z/client.log.blob", 9),
        meta("xx/100/2026-01-01T00:00:00Z/index.json.blob", 9),
        meta("vm/100/not-a-time/index.json.blob", 9),
    ]);
    assert_eq!(layout.chunks, vec![(d, chunk)]);
    let group_keys: Vec<&str> = layout.group_files.iter().map(|m| m.key.as_str()).collect();
    assert_eq!(
        group_keys,
        [
            "ns/a/.namespace",
            "ns/a/ns/b/vm/100/owner",
            "ns/a/ns/b/vm/100/notes"
        ]
    );
    let files: Vec<&String> = layout.snapshots[snap].files.keys().collect();
    assert_eq!(
        files,
        [".protected", "drive-scsi0.img.fidx", "index.json.blob"]
    );
    assert_eq!(layout.snapshots.len(), 2);
    // bad chunk, .index, .gc-status, .lock, random.txt, bad type, bad time
    assert_eq!(layout.ignored, 7);
}

#[test]
fn chunks_are_checked_by_crc_and_digest() {
    let data = vec![42u8; 100_000];
    let digest = sha256(&data);
    let blob = encode_blob(&data, true);
    assert_eq!(verify_chunk(&blob, &digest), Ok(false));

    let other = sha256(b"other");
    let err = verify_chunk(&blob, &other).unwrap_err();
    assert!(err.contains("digest mismatch"), "{err}");

    let mut damaged = blob.clone();
    let last = damaged.len() - 1;
    damaged[last] ^= 1;
    assert!(verify_chunk(&damaged, &digest).is_err());
    assert!(verify_chunk(b"short", &digest).is_err());
}
