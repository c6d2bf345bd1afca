//! [`BoshIo`]: a BOSH session as the byte stream of a c2s connection (the
//! one c2s code path runs on it in `Framing::Bosh`), and [`Leftovers`],
//! what the c2s session takes back from it when it ends for good.
//!
//! Reads give the bytes the session's requests carried, in `rid` order (a
//! stream header at creation and at each `xmpp:restart`, each child of a
//! `<body/>`, and the stream's end at `type='terminate'`); they fail once
//! the session timed out or was ended for a bad `rid`. Writes are
//! messages (each followed by `MESSAGE_END`), handed to the session, which
//! answers its waiting requests when the c2s code flushes; they wait while
//! more than `MAX_PENDING` bytes wait for a request. Shutting it
//! down, or dropping it, closes the session's c2s side.
//!
//! Invariant: nothing here holds bytes of its own; the session's lock is
//! the only state, so the HTTP side and the c2s side see the same thing.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use xep_support::element::Element;

use super::session::Session;

/// The c2s side of a BOSH session.
pub struct BoshIo(pub Arc<Session>);

impl AsyncRead for BoshIo {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.0.read(buf, cx.waker()) {
            Some(Ok(_)) => Poll::Ready(Ok(())),
            Some(Err(e)) => Poll::Ready(Err(e)),
            None => Poll::Pending,
        }
    }
}

impl AsyncWrite for BoshIo {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        if self.0.write(buf, cx.waker()) {
            Poll::Ready(Ok(buf.len()))
        } else {
            Poll::Pending
        }
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.0.flush();
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.0.flush();
        self.0.close_from_c2s();
        Poll::Ready(Ok(()))
    }
}

impl Drop for BoshIo {
    fn drop(&mut self) {
        self.0.close_from_c2s();
    }
}

/// The session's undelivered messages, as stanzas to reroute.
pub struct Leftovers(pub Arc<Session>);

impl crate::c2s::Undelivered for Leftovers {
    fn take(&self) -> Vec<Element> {
        self.0
            .take_undelivered()
            .iter()
            .filter_map(|m| crate::storage::stanza_codec::parse_stanza(m))
            .collect()
    }
}
