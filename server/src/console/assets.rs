//! The console's static files, compiled into the binary (the console works offline and needs
//! no build step besides `cargo build`).

use http::{header, HeaderValue, Response, StatusCode};

use crate::net::body::text;
use crate::net::Body;

pub(crate) const CSS_PATH: &str = "/console/assets/console.css";
pub(crate) const JS_PATH: &str = "/console/assets/console.js";

const CSS: &str = include_str!("assets/console.css");
const JS: &str = include_str!("assets/console.js");

/// `GET /console/assets/{name}`.
pub(crate) fn serve(name: &str) -> Response<Body> {
    let (content_type, body) = match name {
        "console.css" => ("text/css; charset=utf-8", CSS),
        "console.js" => ("text/javascript; charset=utf-8", JS),
        _ => {
            return text(
                StatusCode::NOT_FOUND,
                "text/plain; charset=utf-8",
                format!("asset '{name}' not found"),
            )
        }
    };
    let mut resp = text(StatusCode::OK, content_type, body.to_string());
    resp.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    resp
}
