//! Reading REST request bodies with a bounded cost: the announced length is checked before a
//! byte is read, at most `limit` bytes are buffered, and a client that pauses longer than the
//! body read timeout between two pieces is given up on.

use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http::{header, HeaderMap};
use http_body_util::BodyExt;

use super::HttpError;

/// The `Content-Length` a request announces (`None` for chunked or absent bodies).
pub fn announced_length(headers: &HeaderMap) -> Option<u64> {
    headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse().ok())
}

/// True when the request may carry a body (announced length above zero, or chunked).
pub fn may_have_body(headers: &HeaderMap) -> bool {
    match announced_length(headers) {
        Some(n) => n > 0,
        None => headers.contains_key(header::TRANSFER_ENCODING),
    }
}

/// Refuses a request whose announced body is longer than `limit`, before anything is read.
pub fn check_announced(headers: &HeaderMap, limit: usize) -> Result<(), HttpError> {
    match announced_length(headers) {
        Some(n) if n > limit as u64 => Err(too_large(limit)),
        _ => Ok(()),
    }
}

fn too_large(limit: usize) -> HttpError {
    HttpError::bad_request(format!("request body too large (limit {limit} bytes)"))
}

/// Reads a whole body of at most `limit` bytes, each piece arriving within `idle`.
pub async fn read_bounded<B>(mut body: B, limit: usize, idle: Duration) -> Result<Bytes, HttpError>
where
    B: hyper::body::Body<Data = Bytes> + Unpin,
    B::Error: std::fmt::Display,
{
    let mut buf = BytesMut::new();
    loop {
        let frame = match tokio::time::timeout(idle, body.frame()).await {
            Err(_) => {
                return Err(HttpError::new(
                    http::StatusCode::REQUEST_TIMEOUT,
                    format!(
                        "request body stalled for {} s after {} bytes",
                        idle.as_secs(),
                        buf.len()
                    ),
                ))
            }
            Ok(None) => return Ok(buf.freeze()),
            Ok(Some(frame)) => frame.map_err(|e| {
                HttpError::bad_request(format!("unable to read the request body: {e}"))
            })?,
        };
        if let Ok(data) = frame.into_data() {
            if buf.len() + data.len() > limit {
                return Err(too_large(limit));
            }
            buf.extend_from_slice(&data);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::stream;
    use http::HeaderValue;
    use http_body_util::StreamBody;
    use hyper::body::Frame;

    fn body_of(
        parts: Vec<&'static [u8]>,
    ) -> StreamBody<impl futures::Stream<Item = Result<Frame<Bytes>, std::io::Error>> + Unpin> {
        StreamBody::new(stream::iter(
            parts
                .into_iter()
                .map(|p| Ok(Frame::data(Bytes::from_static(p)))),
        ))
    }

    #[test]
    fn announced_length_is_checked_first() {
        let mut h = HeaderMap::new();
        assert!(!may_have_body(&h));
        h.insert(header::CONTENT_LENGTH, HeaderValue::from_static("16777215"));
        assert!(may_have_body(&h));
        assert!(check_announced(&h, 512 * 1024).is_err());
        assert!(check_announced(&h, 16 * 1024 * 1024).is_ok());
        let mut chunked = HeaderMap::new();
        chunked.insert(
            header::TRANSFER_ENCODING,
            HeaderValue::from_static("chunked"),
        );
        assert!(may_have_body(&chunked));
        assert!(check_announced(&chunked, 1).is_ok());
    }

    #[tokio::test]
    async fn bodies_are_bounded() {
        let idle = Duration::from_secs(5);
        let got = read_bounded(body_of(vec![b"ab", b"cd"]), 4, idle)
            .await
            .unwrap();
        assert_eq!(&got[..], b"abcd");
        let err = read_bounded(body_of(vec![b"ab", b"cde"]), 4, idle)
            .await
            .unwrap_err();
        assert!(err.message.contains("limit 4"), "{err}");
    }

    #[tokio::test]
    async fn a_stalled_body_is_given_up() {
        let stalled = StreamBody::new(stream::pending::<Result<Frame<Bytes>, std::io::Error>>());
        let err = read_bounded(stalled, 10, Duration::from_millis(50))
            .await
            .unwrap_err();
        assert_eq!(err.status, http::StatusCode::REQUEST_TIMEOUT);
    }
}
