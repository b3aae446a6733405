//! Digest and chunk-key parsing must never panic; accepted text must round-trip.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pbs_cloud_server::datastore::layout::{chunk_key, parse_chunk_key};
use pbs_cloud_server::format::{digest_to_hex, parse_digest_hex};
use pbs_cloud_server::protocol::params::parse_digest;

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(d) = parse_digest_hex(s) {
        assert_eq!(digest_to_hex(&d), s.to_ascii_lowercase());
        assert!(parse_digest("digest", s).is_ok());
    } else {
        assert!(parse_digest("digest", s).is_err());
    }
    if let Some(key) = parse_chunk_key(s) {
        let _ = key;
    }
    if let Ok(d) = parse_digest_hex(s.get(..64).unwrap_or(s)) {
        let key = chunk_key(&d);
        assert!(parse_chunk_key(&key).is_some(), "own chunk key {key} not parsed");
    }
});
