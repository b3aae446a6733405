//! Blob parsing, CRC check, bounded decode and the upload check must never panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pbs_cloud_server::format::blob::{check_uploaded_chunk, rewrite_crc, BlobView};
use pbs_cloud_server::format::sha256;

const LIMIT: usize = 1024 * 1024;

fuzz_target!(|data: &[u8]| {
    if let Ok(view) = BlobView::parse(data) {
        let _ = view.kind();
        let _ = view.verify_crc();
        let _ = view.payload();
        if let Ok(decoded) = view.decode(LIMIT) {
            assert!(decoded.len() <= LIMIT);
            let digest = sha256(&decoded);
            let mut raw = data.to_vec();
            let checked =
                check_uploaded_chunk(&mut raw, data.len() as u64, &digest, decoded.len() as u64);
            assert!(
                checked.is_ok(),
                "self-consistent chunk rejected: {checked:?}"
            );
            BlobView::parse(&raw).unwrap().verify_crc().unwrap();
        }
    }
    let mut raw = data.to_vec();
    if rewrite_crc(&mut raw).is_ok() {
        BlobView::parse(&raw).unwrap().verify_crc().unwrap();
    }
});
