//! Write coalescing for a client connection's negotiation: while the
//! stream is negotiated, what the server writes (TLS records, or plain XML
//! before STARTTLS) is held in a small buffer and sent when a read from the
//! socket finds nothing to read — that is, just before the server waits for
//! the client — or when the stream is shut down. So everything the server has to say
//! before its next read goes out in one system call and one TCP segment.
//!
//! In a login this joins the TLS 1.3 session tickets, which rustls writes
//! as the handshake ends, with the stream header and features the server
//! sends next (two writes and two segments before, one now). The bytes on
//! the wire are the same; the client gets nothing later than before, since
//! nothing is held while the server waits for it.
//!
//! Once the session is bound, the negotiation ends the corking
//! ([`Cork::release`]) and the transport passes every write straight
//! through: the session's writer task writes while no read is in progress.

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Held bytes beyond which a write is sent at once.
const MAX_HELD: usize = 16 * 1024;

/// Writes pass straight through.
const RELEASED: u8 = 0;
/// Writes are held until a read finds nothing to read.
const CORKED: u8 = 1;
/// Corked, and the next read that finds nothing does not send yet.
const CORKED_ONCE_MORE: u8 = 2;

/// The negotiation's handle on a [`Corked`] transport's mode.
#[derive(Clone)]
pub struct Cork(Arc<AtomicU8>);

impl Cork {
    /// A handle whose transport holds writes until it reads.
    pub fn new() -> Cork {
        Cork(Arc::new(AtomicU8::new(CORKED)))
    }

    /// From now on writes pass straight through (held bytes go out first,
    /// with the next write, flush or shutdown).
    pub fn release(&self) {
        self.0.store(RELEASED, Ordering::Release);
    }

    /// Hold writes again (until the shutdown, or a read that finds
    /// nothing to read).
    pub fn recork(&self) {
        self.0.store(CORKED, Ordering::Release);
    }

    /// Keep the held bytes through the next read that finds nothing to
    /// read, once. For the end of a TLS handshake: rustls looks at the
    /// socket before it decrypts the records that came with the client's
    /// Finished (its stream header), so the first read of the stream reads
    /// the socket even though the stream header is already there; the
    /// session tickets rustls wrote then wait for the stream features and
    /// leave with them. If the task does wait instead, it is woken at once
    /// and sends them then.
    pub fn hold_once_more(&self) {
        let _ = self.0.compare_exchange(
            CORKED,
            CORKED_ONCE_MORE,
            Ordering::AcqRel,
            Ordering::Acquire,
        );
    }

    fn corked(&self) -> bool {
        self.0.load(Ordering::Acquire) != RELEASED
    }

    /// Whether a read that found nothing should keep the held bytes this
    /// once (and clear that).
    fn take_once_more(&self) -> bool {
        self.0
            .compare_exchange(
                CORKED_ONCE_MORE,
                CORKED,
                Ordering::AcqRel,
                Ordering::Acquire,
            )
            .is_ok()
    }
}

/// A transport that holds writes while its [`Cork`] is in: see the module
/// documentation.
pub struct Corked<T> {
    inner: T,
    held: Vec<u8>,
    cork: Cork,
}

impl<T: AsyncWrite + Unpin> Corked<T> {
    pub fn new(inner: T, cork: Cork) -> Self {
        Corked {
            inner,
            held: Vec::new(),
            cork,
        }
    }

    /// Send the held bytes. The buffer is freed once empty, so an idle
    /// session keeps none.
    fn poll_send_held(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let mut sent = 0;
        while sent < self.held.len() {
            match Pin::new(&mut self.inner).poll_write(cx, &self.held[sent..]) {
                Poll::Ready(Ok(0)) => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                Poll::Ready(Ok(n)) => sent += n,
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => {
                    self.held.drain(..sent);
                    return Poll::Pending;
                }
            }
        }
        self.held = Vec::new();
        Poll::Ready(Ok(()))
    }
}

impl<T: AsyncRead + AsyncWrite + Unpin> AsyncRead for Corked<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        match Pin::new(&mut this.inner).poll_read(cx, buf) {
            // Nothing to read: the server is about to wait for the client,
            // so whatever it wrote goes out now (the read above registered
            // the wake-up; a blocked send registers one for writing).
            Poll::Pending if !this.held.is_empty() => {
                if this.cork.take_once_more() {
                    // Polled again right away: if the task waits now, the
                    // held bytes go out on that poll.
                    cx.waker().wake_by_ref();
                    return Poll::Pending;
                }
                ready!(this.poll_send_held(cx))?;
                Poll::Pending
            }
            other => other,
        }
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Corked<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if this.cork.corked() && this.held.len() + buf.len() <= MAX_HELD {
            this.held.extend_from_slice(buf);
            return Poll::Ready(Ok(buf.len()));
        }
        if !this.held.is_empty() {
            ready!(this.poll_send_held(cx))?;
        }
        Pin::new(&mut this.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let len: usize = bufs.iter().map(|b| b.len()).sum();
        if this.cork.corked() && this.held.len() + len <= MAX_HELD {
            this.held.reserve(len);
            for b in bufs {
                this.held.extend_from_slice(b);
            }
            return Poll::Ready(Ok(len));
        }
        if !this.held.is_empty() {
            ready!(this.poll_send_held(cx))?;
        }
        Pin::new(&mut this.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.cork.corked() {
            // Held until the next read or the shutdown.
            return Poll::Ready(Ok(()));
        }
        if !this.held.is_empty() {
            ready!(this.poll_send_held(cx))?;
        }
        Pin::new(&mut this.inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if !this.held.is_empty() {
            ready!(this.poll_send_held(cx))?;
        }
        Pin::new(&mut this.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// Whether `b` receives anything within a short wait.
    async fn quiet(b: &mut tokio::io::DuplexStream) -> bool {
        let mut buf = [0u8; 16];
        tokio::time::timeout(Duration::from_millis(50), b.read(&mut buf))
            .await
            .is_err()
    }

    #[tokio::test]
    async fn held_until_a_read_finds_nothing_then_passed_through() {
        let (a, mut b) = tokio::io::duplex(1024);
        let cork = Cork::new();
        let mut c = Corked::new(a, cork.clone());
        c.write_all(b"one").await.unwrap();
        c.flush().await.unwrap();
        c.write_all(b"two").await.unwrap();
        c.flush().await.unwrap();
        assert!(quiet(&mut b).await, "corked bytes were sent before a read");
        // A read that finds data does not send them (the server goes on
        // and may write more first)...
        b.write_all(b"x").await.unwrap();
        let mut one = [0u8; 1];
        c.read_exact(&mut one).await.unwrap();
        assert!(quiet(&mut b).await, "sent on a read that found data");
        // ...a read that finds nothing does, in one write.
        let waited = tokio::time::timeout(Duration::from_millis(50), c.read(&mut one)).await;
        assert!(waited.is_err());
        let mut buf = [0u8; 16];
        let n = b.read(&mut buf).await.unwrap();
        assert_eq!(&buf[..n], b"onetwo");
        // Released: a flushed write goes out at once.
        c.write_all(b"three").await.unwrap();
        cork.release();
        c.flush().await.unwrap();
        c.write_all(b"four").await.unwrap();
        c.flush().await.unwrap();
        let mut got = Vec::new();
        while got.len() < 9 {
            let n = b.read(&mut buf).await.unwrap();
            got.extend_from_slice(&buf[..n]);
        }
        assert_eq!(got, b"threefour");
    }

    #[tokio::test]
    async fn held_once_more_still_sent_before_waiting() {
        let (a, mut b) = tokio::io::duplex(1024);
        let cork = Cork::new();
        let mut c = Corked::new(a, cork.clone());
        c.write_all(b"tickets").await.unwrap();
        cork.hold_once_more();
        // The first read that finds nothing keeps them but has the task
        // polled again; if it still finds nothing, they go out.
        let mut one = [0u8; 1];
        let waited = tokio::time::timeout(Duration::from_millis(50), c.read(&mut one)).await;
        assert!(waited.is_err());
        let mut buf = [0u8; 16];
        let n = b.read(&mut buf).await.unwrap();
        assert_eq!(&buf[..n], b"tickets");
    }

    #[tokio::test]
    async fn shutdown_sends_held_bytes() {
        let (a, mut b) = tokio::io::duplex(1024);
        let cork = Cork::new();
        cork.release();
        let mut c = Corked::new(a, cork.clone());
        cork.recork();
        c.write_all(b"</stream:stream>").await.unwrap();
        c.flush().await.unwrap();
        c.shutdown().await.unwrap();
        drop(c);
        let mut got = Vec::new();
        b.read_to_end(&mut got).await.unwrap();
        assert_eq!(got, b"</stream:stream>");
    }
}
