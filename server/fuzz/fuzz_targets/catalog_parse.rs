//! Catalog (`catalog.pcat1`) reading must never panic or run away: the whole-catalog walk, a
//! table parsed at any offset, and the varint decoders; decoded varints encode back to values
//! that decode the same.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pbs_cloud_server::format::catalog::{
    decode_i64, decode_u64, encode_i64, encode_u64, fuzz_catalog, parse_table, CatalogKind,
};

fuzz_target!(|data: &[u8]| {
    let _ = fuzz_catalog(data);
    let start = data.len() as u64;
    if let Ok(entries) = parse_table(data, start) {
        for e in entries {
            if let CatalogKind::Directory { table } = e.kind {
                assert!(table < start, "a child table must come before its parent");
            }
        }
    }
    let mut pos = 0;
    if let Ok(v) = decode_u64(data, &mut pos) {
        assert!(pos <= data.len());
        let mut out = Vec::new();
        encode_u64(&mut out, v);
        assert_eq!(decode_u64(&out, &mut 0).unwrap(), v);
    }
    let mut pos = 0;
    if let Ok(v) = decode_i64(data, &mut pos) {
        assert!(pos <= data.len());
        let mut out = Vec::new();
        encode_i64(&mut out, v);
        assert_eq!(decode_i64(&out, &mut 0).unwrap(), v);
    }
});
