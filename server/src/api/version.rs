//! `GET /version`: the client only prints `version` and `release` (both strings).

use http::Response;
use serde_json::json;

use crate::net::{json_data, Body};

/// PBS API level this server implements.
pub const API_VERSION: &str = "4.2";
pub const API_RELEASE: &str = "0";

pub fn get() -> Response<Body> {
    json_data(json!({
        "version": API_VERSION,
        "release": API_RELEASE,
        "repoid": format!("pbs-cloud-server-{}", env!("CARGO_PKG_VERSION")),
    }))
}
