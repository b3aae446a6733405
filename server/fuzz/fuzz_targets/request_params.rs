//! Request parameter parsing (JSON or form body plus query, PBS's lenient conversions) and the
//! typed accessors handlers use must never panic, whatever the client sends.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pbs_cloud_server::net::Params;
use pbs_cloud_server::protocol::params as session;

const CONTENT_TYPES: [Option<&str>; 4] = [
    None,
    Some("application/json"),
    Some("application/x-www-form-urlencoded; charset=UTF-8"),
    Some("text/plain"),
];
const NAMES: [&str; 10] = [
    "backup-type",
    "backup-id",
    "backup-time",
    "ns",
    "wid",
    "digest",
    "size",
    "archive-name",
    "protected",
    "max-depth",
];

fuzz_target!(|data: &[u8]| {
    // first byte: content type; then query and body separated by the first 0 byte
    let Some((&selector, rest)) = data.split_first() else {
        return;
    };
    let (query, body) = match rest.iter().position(|&b| b == 0) {
        Some(i) => (&rest[..i], &rest[i + 1..]),
        None => (&rest[..0], rest),
    };
    let query = std::str::from_utf8(query).ok();
    let content_type = CONTENT_TYPES[usize::from(selector) % CONTENT_TYPES.len()];
    let Ok(params) = Params::from_body(content_type, query, body) else {
        return;
    };
    for name in NAMES {
        let _ = params.str(name);
        let _ = params.u64(name);
        let _ = params.i64(name);
        let _ = params.bool(name);
        let _ = params.str_list(name);
        let _ = params.namespace(name);
        let _ = session::digest(&params, name);
        let _ = session::archive_name(&params, name);
        let _ = session::ranged_u64(&params, name, 1, 1 << 24);
    }
    let _ = params.group();
    let _ = params.snapshot();
    let _ = session::wid(&params);
});
