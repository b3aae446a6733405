//! Response bodies in the shapes the stock client expects (docs/protocol.md#success-envelope).

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{header, Response, StatusCode};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::{Frame, SizeHint};
use serde::Serialize;
use tokio::sync::mpsc;

/// Body type of every response the server produces: mostly whole buffers (which keep their
/// exact length, so they are sent with a content length), or a stream fed by a producer task
/// (sent chunked), for downloads that must not be held in memory whole.
///
/// Clients see whether a length is announced (HTTP/1.1: `content-length` or chunked; HTTP/2:
/// whether the stream ends with the last data frame or with an extra empty one), so we announce
/// lengths exactly where PBS does: PBS streams file downloads in sessions and the snapshot and
/// task lists, see [`streamed`].
pub type Body = BoxBody<Bytes, std::io::Error>;

/// A body of one buffer, sent with its length.
pub fn full(bytes: Bytes) -> Body {
    Full::new(bytes).map_err(|never| match never {}).boxed()
}

/// Wraps a body so that its length is not announced: no size hint (HTTP/1.1 sends it chunked),
/// and the end is reported only after the inner body said so on a poll (HTTP/2 then closes the
/// stream with an empty data frame after the data, as PBS does).
struct Unsized<B> {
    inner: B,
    done: bool,
}

impl<B> hyper::body::Body for Unsized<B>
where
    B: hyper::body::Body<Data = Bytes> + Unpin,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        if let Poll::Ready(None) = polled {
            self.done = true;
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.done
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::default()
    }
}

/// Makes a response's body streamed (no length announced), keeping status and headers.
pub fn streamed(resp: Response<Body>) -> Response<Body> {
    resp.map(|inner| Unsized { inner, done: false }.boxed())
}

/// A streamed body: every buffer sent into the channel becomes a frame; an error item ends
/// the body abruptly (the client sees a truncated transfer), and so does dropping the sender
/// after an error. The channel bound is the backpressure of the producer.
pub struct ChannelBody {
    rx: mpsc::Receiver<Result<Bytes, std::io::Error>>,
}

impl ChannelBody {
    pub fn new(rx: mpsc::Receiver<Result<Bytes, std::io::Error>>) -> Self {
        Self { rx }
    }
}

impl hyper::body::Body for ChannelBody {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, std::io::Error>>> {
        self.rx
            .poll_recv(cx)
            .map(|item| item.map(|r| r.map(Frame::data)))
    }
}

/// A 200 `application/octet-stream` response streamed from `rx` (chunked, no length).
pub fn octet_stream_channel(rx: mpsc::Receiver<Result<Bytes, std::io::Error>>) -> Response<Body> {
    Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, "application/octet-stream")
        .body(ChannelBody::new(rx).boxed())
        .expect("static response parts are valid")
}

/// Content type PBS labels its JSON (and error) responses with.
pub const JSON_CONTENT_TYPE: &str = "application/json;charset=UTF-8";
/// Content type of the few PBS answers built outside its generic JSON formatter: the login
/// (PBS 4.x) and task-log replies.
pub const PLAIN_JSON_CONTENT_TYPE: &str = "application/json";

/// A success envelope `{"data": value}` with status 200.
pub fn json_data<T: Serialize>(value: T) -> Response<Body> {
    let body = serde_json::json!({ "data": value });
    json_response(StatusCode::OK, &body)
}

/// Any JSON document with the given status (used for envelopes with extra top-level keys, such
/// as the ticket response or the task log).
pub fn json_response(status: StatusCode, value: &serde_json::Value) -> Response<Body> {
    json_response_as(status, JSON_CONTENT_TYPE, value)
}

/// Like [`json_response`] with another content type.
pub fn json_response_as(
    status: StatusCode,
    content_type: &str,
    value: &serde_json::Value,
) -> Response<Body> {
    let bytes = serde_json::to_vec(value).unwrap_or_else(|_| b"{\"data\":null}".to_vec());
    Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, content_type)
        .body(full(Bytes::from(bytes)))
        .expect("static response parts are valid")
}

/// Raw bytes for downloads (chunks, index files, blobs), with a `content-length`.
pub fn octet_stream(bytes: Bytes) -> Response<Body> {
    Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, "application/octet-stream")
        .body(full(bytes))
        .expect("static response parts are valid")
}

/// Plain text with the given status (task log downloads, redirects' bodies).
pub fn text(status: StatusCode, content_type: &str, text: String) -> Response<Body> {
    Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, content_type)
        .body(full(Bytes::from(text)))
        .expect("static response parts are valid")
}

#[cfg(test)]
mod tests {
    use super::*;
    use hyper::body::Body as _;

    #[tokio::test]
    async fn sized_and_streamed_bodies() {
        let sized = full(Bytes::from_static(b"abc"));
        assert_eq!(sized.size_hint().exact(), Some(3));
        assert!(!sized.is_end_stream());
        assert!(full(Bytes::new()).is_end_stream());
        let mut streamed = super::streamed(octet_stream(Bytes::from_static(b"abc"))).into_body();
        assert_eq!(streamed.size_hint().exact(), None);
        let frame = streamed.frame().await.unwrap().unwrap();
        assert_eq!(frame.into_data().unwrap(), "abc");
        // the data frame does not end the stream; the next poll does
        assert!(!streamed.is_end_stream());
        assert!(streamed.frame().await.is_none());
        assert!(streamed.is_end_stream());
        let resp = super::streamed(octet_stream(Bytes::from_static(b"xyz")));
        assert_eq!(resp.body().size_hint().exact(), None);
        let all = resp.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(all, "xyz");
    }
}
