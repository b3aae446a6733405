//! Response bodies in the shapes the stock client expects (protocol.md §3.3).

use bytes::Bytes;
use http::{header, Response, StatusCode};
use http_body_util::Full;
use serde::Serialize;

/// Body type of every response the server produces. Whole buffers: the largest responses are
/// chunks (≤ 16 MiB) and index files.
pub type Body = Full<Bytes>;

/// Content type PBS labels all JSON (and error) responses with.
pub const JSON_CONTENT_TYPE: &str = "application/json;charset=UTF-8";

/// A success envelope `{"data": value}` with status 200.
pub fn json_data<T: Serialize>(value: T) -> Response<Body> {
    let body = serde_json::json!({ "data": value });
    json_response(StatusCode::OK, &body)
}

/// Any JSON document with the given status (used for envelopes with extra top-level keys, such
/// as the ticket response or the task log).
pub fn json_response(status: StatusCode, value: &serde_json::Value) -> Response<Body> {
    let bytes = serde_json::to_vec(value).unwrap_or_else(|_| b"{\"data\":null}".to_vec());
    Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, JSON_CONTENT_TYPE)
        .body(Full::new(Bytes::from(bytes)))
        .expect("static response parts are valid")
}

/// Raw bytes for downloads (chunks, index files, blobs).
pub fn octet_stream(bytes: Bytes) -> Response<Body> {
    Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, "application/octet-stream")
        .body(Full::new(bytes))
        .expect("static response parts are valid")
}

/// Plain text with the given status (task log downloads, redirects' bodies).
pub fn text(status: StatusCode, content_type: &str, text: String) -> Response<Body> {
    Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, content_type)
        .body(Full::new(Bytes::from(text)))
        .expect("static response parts are valid")
}
