//! Bounded request body reading for session endpoints. Chunk and blob bodies are read frame by
//! frame into a buffer of the announced size and rejected as soon as they grow past it, so a
//! client can never make the server buffer more than it declared (≤ 16 MiB + 44).

use bytes::{Bytes, BytesMut};
use http_body_util::BodyExt;

/// Why a body could not be read as announced.
#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    /// More than the announced/allowed number of bytes arrived (`received` so far).
    #[error("request body is larger than {limit} bytes")]
    TooLarge { limit: usize, received: usize },
    /// The body ended after `received` bytes, fewer than announced.
    #[error("request body ended after {received} of {expected} bytes")]
    Short { expected: usize, received: usize },
    /// The stream failed (connection reset, protocol error).
    #[error("error reading request body: {0}")]
    Io(String),
}

/// Reads a body that must be exactly `expected` bytes long.
pub async fn read_exact<B>(body: B, expected: usize) -> Result<BytesMut, BodyError>
where
    B: hyper::body::Body<Data = Bytes> + Unpin,
    B::Error: std::fmt::Display,
{
    let buf = read_up_to(body, expected).await?;
    if buf.len() != expected {
        return Err(BodyError::Short {
            expected,
            received: buf.len(),
        });
    }
    Ok(buf)
}

/// Reads a body of at most `limit` bytes.
pub async fn read_up_to<B>(mut body: B, limit: usize) -> Result<BytesMut, BodyError>
where
    B: hyper::body::Body<Data = Bytes> + Unpin,
    B::Error: std::fmt::Display,
{
    let mut buf = BytesMut::with_capacity(limit.min(16 * 1024 * 1024 + 64));
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| BodyError::Io(e.to_string()))?;
        if let Ok(data) = frame.into_data() {
            let received = buf.len() + data.len();
            if received > limit {
                return Err(BodyError::TooLarge { limit, received });
            }
            buf.extend_from_slice(&data);
        }
    }
    Ok(buf)
}

/// Reads and drops a body of any length (speedtest); returns the number of bytes seen.
pub async fn discard<B>(mut body: B) -> Result<u64, BodyError>
where
    B: hyper::body::Body<Data = Bytes> + Unpin,
    B::Error: std::fmt::Display,
{
    let mut total = 0u64;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| BodyError::Io(e.to_string()))?;
        if let Ok(data) = frame.into_data() {
            total += data.len() as u64;
        }
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::stream;
    use http_body_util::StreamBody;
    use hyper::body::Frame;

    fn body_of(
        parts: &[&'static [u8]],
    ) -> StreamBody<impl futures::Stream<Item = Result<Frame<Bytes>, std::io::Error>> + Unpin> {
        let frames: Vec<Result<Frame<Bytes>, std::io::Error>> = parts
            .iter()
            .map(|p| Ok(Frame::data(Bytes::from_static(p))))
            .collect();
        StreamBody::new(stream::iter(frames))
    }

    #[tokio::test]
    async fn exact_length_is_enforced() {
        let got = read_exact(body_of(&[b"abc", b"de"]), 5).await.unwrap();
        assert_eq!(&got[..], b"abcde");
        match read_exact(body_of(&[b"abc", b"def"]), 5).await {
            Err(BodyError::TooLarge {
                limit: 5,
                received: 6,
            }) => {}
            other => panic!("unexpected {other:?}"),
        }
        match read_exact(body_of(&[b"ab"]), 5).await {
            Err(BodyError::Short {
                expected: 5,
                received: 2,
            }) => {}
            other => panic!("unexpected {other:?}"),
        }
    }

    #[tokio::test]
    async fn discard_counts() {
        assert_eq!(discard(body_of(&[b"abc", b"de", b""])).await.unwrap(), 5);
    }

    #[tokio::test]
    async fn stream_errors_surface() {
        let frames: Vec<Result<Frame<Bytes>, std::io::Error>> = vec![
            Ok(Frame::data(Bytes::from_static(b"a"))),
            Err(std::io::Error::other("reset")),
        ];
        let err = read_up_to(StreamBody::new(stream::iter(frames)), 10)
            .await
            .unwrap_err();
        assert!(matches!(err, BodyError::Io(ref m) if m.contains("reset")));
    }
}
