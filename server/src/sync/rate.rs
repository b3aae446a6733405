//! Rate limits shared by every connection of one job (PBS's `rate-in` and `rate-out`), applied
//! on the socket: [`Throttled`] stops reading (writing) while the job is over its rate, so TCP
//! flow control slows the other side down too.
//!
//! That last part needs a bounded receive buffer. Linux grows a socket's receive buffer up to
//! `net.ipv4.tcp_rmem`'s maximum (32 MiB on our CI machines), and the remote's HTTP/2 window is
//! as large as the stock client's (2 GiB), so a remote would fill that buffer at full speed
//! while we read it slowly: the remote's link would not be limited, and a connection cut
//! mid-job would still hand over everything buffered. [`connect`] therefore fixes the receive
//! buffer of a read-limited connection at a quarter second of the rate.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{ready, Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpSocket, TcpStream};
use tokio::time::{Instant, Sleep};

/// Bounds of a read-limited connection's receive buffer.
const MIN_RECEIVE_BUFFER: u64 = 64 * 1024;
const MAX_RECEIVE_BUFFER: u64 = 4 * 1024 * 1024;

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

    /// The receive buffer for a connection read at this rate: a quarter second of it, within
    /// 64 KiB and 4 MiB.
    pub fn receive_buffer(&self) -> u32 {
        (self.bytes_per_second / 4).clamp(MIN_RECEIVE_BUFFER, MAX_RECEIVE_BUFFER) as u32
    }
}

/// Connects to `address` (`host:port`), trying each resolved address in turn; with a read
/// limit the socket's receive buffer is fixed first (see the module comment), before the
/// handshake so that the window scale the remote sees matches it.
pub async fn connect(address: &str, limit_in: Option<&RateLimiter>) -> io::Result<TcpStream> {
    let Some(limit) = limit_in else {
        return TcpStream::connect(address).await;
    };
    let mut last_error = None;
    for addr in tokio::net::lookup_host(address).await? {
        let socket = if addr.is_ipv4() {
            TcpSocket::new_v4()?
        } else {
            TcpSocket::new_v6()?
        };
        socket.set_recv_buffer_size(limit.receive_buffer())?;
        match socket.connect(addr).await {
            Ok(stream) => return Ok(stream),
            Err(e) => last_error = Some(e),
        }
    }
    Err(last_error.unwrap_or_else(|| {
        io::Error::new(
            io::ErrorKind::NotFound,
            format!("{address} resolves to no address"),
        )
    }))
}

/// A stream whose reads and writes keep to their [`RateLimiter`]s (none: they pass
/// untouched).
pub struct Throttled<S> {
    inner: S,
    limit_in: Option<Arc<RateLimiter>>,
    limit_out: Option<Arc<RateLimiter>>,
    read_wait: Option<Pin<Box<Sleep>>>,
    write_wait: Option<Pin<Box<Sleep>>>,
}

impl<S> Throttled<S> {
    pub fn new(
        inner: S,
        limit_in: Option<Arc<RateLimiter>>,
        limit_out: Option<Arc<RateLimiter>>,
    ) -> Self {
        Throttled {
            inner,
            limit_in,
            limit_out,
            read_wait: None,
            write_wait: None,
        }
    }
}

/// Waits out a pending delay, if any.
fn poll_wait(wait: &mut Option<Pin<Box<Sleep>>>, cx: &mut Context<'_>) -> Poll<()> {
    if let Some(sleep) = wait.as_mut() {
        ready!(sleep.as_mut().poll(cx));
        *wait = None;
    }
    Poll::Ready(())
}

/// Charges `bytes` and arms the delay before the next transfer.
fn charge(limiter: &Option<Arc<RateLimiter>>, bytes: usize, wait: &mut Option<Pin<Box<Sleep>>>) {
    if let Some(until) = limiter.as_ref().and_then(|l| l.charge(bytes)) {
        *wait = Some(Box::pin(tokio::time::sleep_until(until)));
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Throttled<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        ready!(poll_wait(&mut this.read_wait, cx));
        let before = buf.filled().len();
        ready!(Pin::new(&mut this.inner).poll_read(cx, buf))?;
        charge(
            &this.limit_in,
            buf.filled().len() - before,
            &mut this.read_wait,
        );
        Poll::Ready(Ok(()))
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Throttled<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        ready!(poll_wait(&mut this.write_wait, cx));
        let sent = ready!(Pin::new(&mut this.inner).poll_write(cx, buf))?;
        charge(&this.limit_out, sent, &mut this.write_wait);
        Poll::Ready(Ok(sent))
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
    async fn reads_and_writes_keep_to_the_rate() {
        let (mut sender, receiver) = tokio::io::duplex(64 * 1024);
        let limiter = Arc::new(RateLimiter::new(1000));
        let mut throttled = Throttled::new(receiver, Some(limiter), None);
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

        // Writes the same way.
        let (sink, mut drain) = tokio::io::duplex(64 * 1024);
        let mut throttled = Throttled::new(sink, None, Some(Arc::new(RateLimiter::new(1000))));
        let start = Instant::now();
        for _ in 0..4 {
            throttled.write_all(&[7u8; 500]).await.unwrap();
        }
        assert_eq!(start.elapsed(), Duration::from_millis(1500));
        drain.read_exact(&mut [0u8; 2000]).await.unwrap();

        let (mut sender, receiver) = tokio::io::duplex(64 * 1024);
        let mut free = Throttled::new(receiver, None, None);
        sender.write_all(&[1u8; 4096]).await.unwrap();
        let start = Instant::now();
        free.read_exact(&mut [0u8; 4096]).await.unwrap();
        assert_eq!(start.elapsed(), Duration::ZERO);
    }

    #[test]
    fn the_receive_buffer_is_a_quarter_second_within_bounds() {
        assert_eq!(RateLimiter::new(4 << 20).receive_buffer(), 1 << 20);
        assert_eq!(RateLimiter::new(1000).receive_buffer(), 64 * 1024);
        assert_eq!(RateLimiter::new(1 << 30).receive_buffer(), 4 << 20);
    }

    #[tokio::test]
    async fn a_read_limited_connection_has_a_fixed_receive_buffer() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap().to_string();
        let limit = RateLimiter::new(4 << 20);
        let limited = connect(&address, Some(&limit)).await.unwrap();
        let size = socket2::SockRef::from(&limited).recv_buffer_size().unwrap();
        // Linux caps the ask at net.core.rmem_max, doubles it for its bookkeeping and stops
        // tuning the buffer; unset, it starts at tcp_rmem's default (128 KiB) and grows.
        let rmem_max: usize = std::fs::read_to_string("/proc/sys/net/core/rmem_max")
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        assert_eq!(size, 2 * rmem_max.min(limit.receive_buffer() as usize));
        assert!(connect("127.0.0.1:1", Some(&limit)).await.is_err());
    }
}
