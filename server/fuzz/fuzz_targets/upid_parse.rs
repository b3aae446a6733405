//! UPID parsing (task ids arrive in request paths) must never panic; a parsed UPID must print
//! as text that parses back to the same value.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pbs_cloud_server::tasks::upid::{escape_id, unescape_id, Upid};

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(upid) = s.parse::<Upid>() {
        let text = upid.to_string();
        let again: Upid = text.parse().expect("a printed UPID parses");
        assert_eq!(again, upid);
    }
    if let Ok(id) = unescape_id(s) {
        assert_eq!(unescape_id(&escape_id(&id)).unwrap(), id);
    }
    assert_eq!(unescape_id(&escape_id(s)).unwrap(), s);
});
