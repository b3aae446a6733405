//! Credential parsing from request headers (ticket cookie, PBSAPIToken header) and ticket / CSRF
//! verification must never panic and never accept a forgery.
#![no_main]

use http::header::{AUTHORIZATION, COOKIE};
use http::{HeaderMap, HeaderValue};
use libfuzzer_sys::fuzz_target;
use pbs_cloud_server::auth::credentials::{extract, Credentials};
use pbs_cloud_server::auth::ticket::{create_ticket, verify_csrf, verify_ticket};
use pbs_cloud_server::auth::Userid;

const KEY: &[u8] = b"fuzzing key: not a secret at all";
const NOW: i64 = 1_700_000_000;

fuzz_target!(|data: &[u8]| {
    let mut headers = HeaderMap::new();
    if let Ok(value) = HeaderValue::from_bytes(data) {
        headers.insert(COOKIE, value.clone());
        headers.insert(AUTHORIZATION, value);
    }
    let _ = extract(&headers);
    if let Some(Credentials::Ticket(t)) = extract(&headers) {
        let _ = verify_ticket(KEY, &t, NOW);
    }
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(user) = verify_ticket(KEY, s, NOW) {
        // only a ticket this key signed verifies: it must be exactly one we would issue
        let (data, _) = s.rsplit_once("::").unwrap();
        let time = data.rsplit(':').next().unwrap();
        let issued_at = i64::from_str_radix(time, 16).unwrap();
        assert_eq!(create_ticket(KEY, &user, issued_at), s, "forged ticket accepted");
    }
    let fuzz_user = "fuzz@pbs".parse().unwrap();
    let _ = verify_csrf(KEY, s, &fuzz_user, NOW);
    // any user id we accept makes a ticket that verifies as that user
    if let Ok(user) = s.parse::<Userid>() {
        let ticket = create_ticket(KEY, &user, NOW);
        assert_eq!(verify_ticket(KEY, &ticket, NOW).unwrap(), user);
    }
});
