//! Reading a unified pxar archive (`.pxar`) must never panic or run away: open, walk, listings,
//! lookups by name, hardlinks and content reads all end with a result or an error.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pbs_cloud_server::format::pxar::fuzz_archive;

fuzz_target!(|data: &[u8]| {
    if let Ok(summary) = fuzz_archive(data) {
        // every content byte came out of the archive itself
        assert!(summary.content_bytes <= data.len() as u64);
    }
});
