//! Manifest parsing (as a blob and as raw JSON) and canonicalisation must never panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pbs_cloud_server::format::manifest::{canonical_json, Manifest};

fuzz_target!(|data: &[u8]| {
    let _ = Manifest::from_blob(data);
    if let Ok(m) = Manifest::from_json(data) {
        let _ = m.signed_canonical_json();
        let _ = m.compute_signature(&[0u8; 32]);
        let _ = m.notes();
        let _ = m.verify_state();
        let back = Manifest::from_blob(&m.to_blob()).unwrap();
        assert_eq!(back, m);
    }
    if let Ok(v) = serde_json::from_slice::<serde_json::Value>(data) {
        if let Ok(text) = canonical_json(&v) {
            let reparsed: serde_json::Value = serde_json::from_str(&text).unwrap();
            assert_eq!(canonical_json(&reparsed).unwrap(), text);
        }
    }
});
