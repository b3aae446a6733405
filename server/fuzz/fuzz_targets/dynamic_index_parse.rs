//! Dynamic index parsing must never panic; accepted input must round-trip.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pbs_cloud_server::format::dynamic_index::DynamicIndex;

fuzz_target!(|data: &[u8]| {
    if let Ok(idx) = DynamicIndex::parse(data) {
        let total: u64 = (0..idx.chunk_count()).map(|i| idx.chunk_len(i)).sum();
        assert_eq!(total, idx.size());
        let _ = idx.csum();
        let again = DynamicIndex::parse(&idx.to_bytes()).unwrap();
        assert_eq!(again, idx);
    }
});
