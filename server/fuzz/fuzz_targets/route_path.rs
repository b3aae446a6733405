//! API routing of request paths (with their percent-encoding and empty segments) and calendar
//! events must never panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pbs_cloud_server::api::router::route;
use pbs_cloud_server::jobs::calendar;
use pbs_cloud_server::net::path::{normalized, path_is};

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    let _ = route(s);
    let n = normalized(s);
    assert!(!n.starts_with('/') && !n.contains("//"));
    assert!(path_is(s, &n.split('/').filter(|p| !p.is_empty()).collect::<Vec<_>>()));
    let _ = calendar::parse(s);
});
