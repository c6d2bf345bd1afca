//! The buffered reader under the XML parser: like `tokio::io::BufReader`,
//! but it holds no buffer while it waits for the peer. An idle session
//! spends most of its life in a pending read; keeping a read buffer there
//! would cost every idle session its size. The buffer is allocated when a
//! read is attempted and given back when that read finds nothing to read
//! (`Pending`) with nothing buffered, so a busy session keeps one buffer
//! across reads and an idle one keeps none.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncBufRead, AsyncRead, ReadBuf};

pub struct LazyBufReader<R> {
    inner: R,
    /// Bytes read and not yet consumed are `buf[pos..]`.
    buf: Vec<u8>,
    pos: usize,
    capacity: usize,
}

impl<R> LazyBufReader<R> {
    pub fn with_capacity(capacity: usize, inner: R) -> Self {
        LazyBufReader {
            inner,
            buf: Vec::new(),
            pos: 0,
            capacity: capacity.max(1),
        }
    }

    /// The bytes buffered and not yet consumed.
    pub fn buffer(&self) -> &[u8] {
        &self.buf[self.pos..]
    }

    pub fn get_ref(&self) -> &R {
        &self.inner
    }

    pub fn get_mut(&mut self) -> &mut R {
        &mut self.inner
    }

    /// The inner reader; buffered bytes are dropped (check [`Self::buffer`] first).
    pub fn into_inner(self) -> R {
        self.inner
    }

    /// Bytes of heap this reader holds (for tests).
    #[cfg(test)]
    pub fn held(&self) -> usize {
        self.buf.capacity()
    }
}

impl<R: AsyncRead + Unpin> AsyncRead for LazyBufReader<R> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        out: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        // Nothing buffered and a large read: bypass the buffer.
        if self.pos >= self.buf.len() && out.remaining() >= self.capacity {
            self.buf = Vec::new();
            self.pos = 0;
            return Pin::new(&mut self.inner).poll_read(cx, out);
        }
        let data = match self.as_mut().poll_fill_buf(cx) {
            Poll::Ready(Ok(d)) => d,
            Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
            Poll::Pending => return Poll::Pending,
        };
        let n = data.len().min(out.remaining());
        out.put_slice(&data[..n]);
        self.consume(n);
        Poll::Ready(Ok(()))
    }
}

impl<R: AsyncRead + Unpin> AsyncBufRead for LazyBufReader<R> {
    fn poll_fill_buf(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<&[u8]>> {
        let this = self.get_mut();
        if this.pos >= this.buf.len() {
            this.pos = 0;
            this.buf.clear();
            if this.buf.capacity() < this.capacity {
                this.buf = Vec::with_capacity(this.capacity);
            }
            let mut rb = ReadBuf::uninit(this.buf.spare_capacity_mut());
            match Pin::new(&mut this.inner).poll_read(cx, &mut rb) {
                Poll::Ready(Ok(())) => {
                    let n = rb.filled().len();
                    // SAFETY: `rb` was over the spare capacity of `buf`, and
                    // its first `n` bytes were initialized by the read.
                    unsafe { this.buf.set_len(n) };
                }
                Poll::Ready(Err(e)) => {
                    this.buf = Vec::new();
                    return Poll::Ready(Err(e));
                }
                Poll::Pending => {
                    // Waiting for the peer: hold no buffer meanwhile.
                    this.buf = Vec::new();
                    return Poll::Pending;
                }
            }
        }
        Poll::Ready(Ok(&this.buf[this.pos..]))
    }

    fn consume(self: Pin<&mut Self>, amt: usize) {
        let this = self.get_mut();
        this.pos = (this.pos + amt).min(this.buf.len());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn holds_no_buffer_while_waiting_and_reads_everything() {
        let (mut tx, rx) = tokio::io::duplex(64);
        let mut r = LazyBufReader::with_capacity(16, rx);
        // Pending read: no buffer held.
        let mut line = String::new();
        let waiting =
            tokio::time::timeout(std::time::Duration::from_millis(50), r.read_line(&mut line))
                .await;
        assert!(waiting.is_err());
        assert_eq!(r.held(), 0);
        tx.write_all(b"hello world, a line longer than sixteen bytes\nrest")
            .await
            .unwrap();
        drop(tx);
        let mut line = String::new();
        r.read_line(&mut line).await.unwrap();
        assert_eq!(line, "hello world, a line longer than sixteen bytes\n");
        let mut rest = Vec::new();
        r.read_to_end(&mut rest).await.unwrap();
        assert_eq!(rest, b"rest");
    }
}
