//! Reading a split pxar archive (metadata `.mpxar` plus payload `.ppxar`) must never panic or
//! run away, whatever either stream holds and however payload references point into the other.
//!
//! Input: u32 LE length of the metadata stream, the metadata stream, then the payload stream
//! (a length past the end takes everything as metadata).
#![no_main]

use libfuzzer_sys::fuzz_target;
use pbs_cloud_server::format::pxar::fuzz_split_archive;

fuzz_target!(|data: &[u8]| {
    let Some((len, rest)) = data.split_first_chunk::<4>() else {
        return;
    };
    let meta_len = (u32::from_le_bytes(*len) as usize).min(rest.len());
    let (meta, payload) = rest.split_at(meta_len);
    if let Ok(summary) = fuzz_split_archive(meta, payload) {
        assert!(summary.content_bytes <= payload.len() as u64);
    }
});
