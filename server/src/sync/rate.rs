//! A download rate limit shared by every connection of one job (PBS's `rate-in`), applied
//! where the bytes arrive: [`Throttled`] stops reading its socket while the job is over its
//! rate, so TCP flow control slows the sender down too.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{ready, Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

/// Bytes per second, averaged from the first byte on: every byte received pushes "paid until"
/// forward by its share of a second, and reading waits until then.
#[derive(Debug)]
pub struct RateLimiter {
    bytes_per_second: u64,
    paid_until: Mutex<Option<Instant>>,
}

impl RateLimiter {
    pub fn new(bytes_per_second: u64) -> Self {
        RateLimiter {
            bytes_per_second: bytes_per_second.max(1),
            paid_until: Mutex::new(None),
        }
    }

    /// Accounts `bytes` received now; the instant the next read may happen, if in the future.
    pub fn charge(&self, bytes: usize) -> Option<Instant> {
        let cost = Duration::from_secs_f64(bytes as f64 / self.bytes_per_second as f64);
        let now = Instant::now();
        let mut paid = self.paid_until.lock().unwrap_or_else(|p| p.into_inner());
        let until = paid.map_or(now, |p| p.max(now)) + cost;
        *paid = Some(until);
        (until > now).then_some(until)
    }
}

/// A stream whose reads keep to a [`RateLimiter`] (none: reads pass untouched).
pub struct Throttled<S> {
    inner: S,
    limiter: Option<Arc<RateLimiter>>,
    wait: Option<Pin<Box<Sleep>>>,
}

impl<S> Throttled<S> {
    pub fn new(inner: S, limiter: Option<Arc<RateLimiter>>) -> Self {
        Throttled {
            inner,
            limiter,
            wait: None,
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Throttled<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if let Some(wait) = self.wait.as_mut() {
            ready!(wait.as_mut().poll(cx));
            self.wait = None;
        }
        let before = buf.filled().len();
        ready!(Pin::new(&mut self.inner).poll_read(cx, buf))?;
        let received = buf.filled().len() - before;
        if let Some(until) = self.limiter.as_ref().and_then(|l| l.charge(received)) {
            self.wait = Some(Box::pin(tokio::time::sleep_until(until)));
        }
        Poll::Ready(Ok(()))
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Throttled<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test(start_paused = true)]
    async fn reads_keep_to_the_rate() {
        let (mut sender, receiver) = tokio::io::duplex(64 * 1024);
        let limiter = Arc::new(RateLimiter::new(1000));
        let mut throttled = Throttled::new(receiver, Some(limiter));
        let writer = tokio::spawn(async move {
            for _ in 0..4 {
                sender.write_all(&[7u8; 500]).await.unwrap();
            }
        });
        let start = Instant::now();
        for _ in 0..4 {
            throttled.read_exact(&mut [0u8; 500]).await.unwrap();
        }
        writer.await.unwrap();
        // 2000 bytes at 1000 B/s in reads of 500: each read waits until the bytes before it
        // are paid, so the last one happens at 1.5 s.
        assert_eq!(start.elapsed(), Duration::from_millis(1500));

        let (mut sender, receiver) = tokio::io::duplex(64 * 1024);
        let mut free = Throttled::new(receiver, None);
        sender.write_all(&[1u8; 4096]).await.unwrap();
        let start = Instant::now();
        free.read_exact(&mut [0u8; 4096]).await.unwrap();
        assert_eq!(start.elapsed(), Duration::ZERO);
    }
}
