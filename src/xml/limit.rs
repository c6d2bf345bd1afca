//! A byte-counting wrapper under the XML parser: it enforces the stanza-size
//! limit in force (`max_stanza_size`, or the smaller one before
//! authentication) while bytes are read (so the parser never buffers past
//! the limit) and applies the listener's shaper (a token bucket in bytes per
//! second, ejabberd's `shaper`).

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, ReadBuf};
use tokio::time::Sleep;

/// Token bucket for the shaper.
#[derive(Debug)]
struct Bucket {
    rate: u64,
    burst: u64,
    tokens: f64,
    last: Instant,
}

/// Reads from `inner`, counting bytes since the last [`LimitedRead::reset`].
pub struct LimitedRead<R> {
    inner: R,
    /// Bytes read since the last reset (the start of the current stanza, roughly).
    count: usize,
    /// `None`: no limit.
    limit: Option<usize>,
    /// Set once the limit was passed; the reader then fails every read.
    exceeded: bool,
    bucket: Option<Bucket>,
    sleep: Option<Pin<Box<Sleep>>>,
}

impl<R> LimitedRead<R> {
    pub fn new(inner: R, limit: Option<usize>) -> Self {
        LimitedRead {
            inner,
            count: 0,
            limit,
            exceeded: false,
            bucket: None,
            sleep: None,
        }
    }

    /// Apply a shaper: `rate` bytes per second with a bucket of `burst` bytes.
    pub fn set_shaper(&mut self, rate: u64, burst: u64) {
        let burst = burst.max(1);
        self.bucket = Some(Bucket {
            rate: rate.max(1),
            burst,
            tokens: burst as f64,
            last: Instant::now(),
        });
    }

    /// Change the limit (`None`: none); bytes counted so far still count.
    pub fn set_limit(&mut self, limit: Option<usize>) {
        self.limit = limit;
    }

    /// Start counting anew (called at each stanza boundary).
    pub fn reset(&mut self) {
        self.count = 0;
    }

    /// Whether the size limit was passed.
    pub fn exceeded(&self) -> bool {
        self.exceeded
    }

    pub fn into_inner(self) -> R {
        self.inner
    }
}

impl<R: AsyncRead + Unpin> AsyncRead for LimitedRead<R> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if this.exceeded {
            return Poll::Ready(Err(io::Error::other("max_stanza_size exceeded")));
        }
        // Shaper: wait until the bucket has tokens.
        if let Some(sleep) = this.sleep.as_mut() {
            if sleep.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
            this.sleep = None;
        }
        let mut allowed = buf.remaining();
        if let Some(b) = this.bucket.as_mut() {
            let now = Instant::now();
            let elapsed = now.duration_since(b.last).as_secs_f64();
            b.last = now;
            b.tokens = (b.tokens + elapsed * b.rate as f64).min(b.burst as f64);
            if b.tokens < 1.0 {
                let wait = (1.0 - b.tokens) / b.rate as f64;
                let mut sleep =
                    Box::pin(tokio::time::sleep(Duration::from_secs_f64(wait.max(0.001))));
                if sleep.as_mut().poll(cx).is_pending() {
                    this.sleep = Some(sleep);
                    return Poll::Pending;
                }
                b.tokens = 1.0;
            }
            allowed = allowed.min(b.tokens as usize).max(1);
        }
        let before = buf.filled().len();
        let r = if allowed >= buf.remaining() {
            Pin::new(&mut this.inner).poll_read(cx, buf)
        } else {
            let mut limited = buf.take(allowed);
            let r = Pin::new(&mut this.inner).poll_read(cx, &mut limited);
            let n = limited.filled().len();
            if r.is_ready() {
                // SAFETY: the inner reader initialised and filled these `n` bytes
                // of `buf`'s unfilled part through `limited`.
                unsafe { buf.assume_init(n) };
                buf.advance(n);
            }
            r
        };
        if let Poll::Ready(Ok(())) = &r {
            let n = buf.filled().len() - before;
            this.count += n;
            if let Some(b) = this.bucket.as_mut() {
                b.tokens -= n as f64;
            }
            if let Some(limit) = this.limit {
                if this.count > limit {
                    this.exceeded = true;
                    return Poll::Ready(Err(io::Error::other("max_stanza_size exceeded")));
                }
            }
        }
        r
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;

    #[tokio::test]
    async fn fails_past_the_limit() {
        let data = vec![b'a'; 1000];
        let mut r = LimitedRead::new(&data[..], Some(100));
        let mut buf = vec![0u8; 2000];
        let mut total = 0;
        loop {
            match r.read(&mut buf).await {
                Ok(0) => panic!("limit not enforced"),
                Ok(n) => total += n,
                Err(_) => break,
            }
        }
        assert!(r.exceeded());
        assert!(total <= 1000);
    }

    #[tokio::test]
    async fn reset_restarts_the_count() {
        let data = vec![b'a'; 300];
        let mut r = LimitedRead::new(&data[..], Some(200));
        let mut buf = vec![0u8; 150];
        r.read_exact(&mut buf).await.unwrap();
        r.reset();
        r.read_exact(&mut buf).await.unwrap();
        assert!(!r.exceeded());
    }

    #[tokio::test]
    async fn shaper_slows_reads() {
        let data = vec![b'a'; 3000];
        let mut r = LimitedRead::new(&data[..], None);
        r.set_shaper(10_000, 1000);
        let start = Instant::now();
        let mut buf = vec![0u8; 3000];
        r.read_exact(&mut buf).await.unwrap();
        // 1000 bytes of burst, then 2000 bytes at 10 kB/s: about 0.2 s.
        let took = start.elapsed();
        assert!(took >= Duration::from_millis(150), "{took:?}");
    }
}
