//! The bounded queue between the session table and a session's writer: many
//! senders, one receiver, at most `capacity` items.
//!
//! Why not `tokio::sync::mpsc`: its channel costs every session about
//! 1.1 KiB before anything is queued (a 384-byte channel aligned to 128
//! bytes, plus a first block of 32 slots), and a server holds one queue per
//! idle session. This queue is a `VecDeque` under a mutex, a [`Notify`] for
//! senders waiting for room, and
//! the receiver's waker: about 130 bytes while empty, growing only while
//! items wait. Waiting in [`Receiver::recv`] holds no more than a pointer.
//! The lock is held for a push or a pop, never across an await.
//!
//! Semantics follow `tokio::sync::mpsc`'s bounded channel where the server
//! uses them: `try_send` fails with `Full` or `Closed`, `send` and
//! `send_timeout` wait for room, `recv` returns `None` once every sender is
//! gone and the queue is empty, and dropping the receiver drops what is
//! still queued (a queued `oneshot` sender then tells its waiter).

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use tokio::sync::Notify;

/// Capacity above which an emptied queue gives its buffer back, so a burst
/// does not leave an idle session holding a large buffer.
const KEEP_CAPACITY: usize = 8;

struct State<T> {
    items: VecDeque<T>,
    capacity: usize,
    senders: usize,
    receiver_closed: bool,
    /// The receiver waiting for an item, woken by a push or the last
    /// sender's drop.
    waiting: Option<Waker>,
}

struct Shared<T> {
    state: Mutex<State<T>>,
    /// Wakes senders waiting for room: an item was taken or the receiver closed.
    room: Notify,
}

impl<T> State<T> {
    fn pop(&mut self) -> Option<T> {
        let item = self.items.pop_front()?;
        if self.items.is_empty() && self.items.capacity() > KEEP_CAPACITY {
            self.items = VecDeque::new();
        }
        Some(item)
    }
}

impl<T> Shared<T> {
    fn lock(&self) -> MutexGuard<'_, State<T>> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A new queue holding at most `capacity` items.
pub fn channel<T>(capacity: usize) -> (Sender<T>, Receiver<T>) {
    assert!(capacity > 0, "a queue needs room for one item");
    let shared = Arc::new(Shared {
        state: Mutex::new(State {
            items: VecDeque::new(),
            capacity,
            senders: 1,
            receiver_closed: false,
            waiting: None,
        }),
        room: Notify::new(),
    });
    (Sender(shared.clone()), Receiver(shared))
}

/// Why `try_send` did not queue the item (which it gives back).
#[derive(Debug, PartialEq, Eq)]
pub enum TrySendError<T> {
    Full(T),
    Closed(T),
}

/// Why `send_timeout` did not queue the item (which it gives back).
#[derive(Debug, PartialEq, Eq)]
pub enum SendTimeoutError<T> {
    Timeout(T),
    Closed(T),
}

/// The receiver is gone; the item is given back.
#[derive(Debug, PartialEq, Eq)]
pub struct SendError<T>(pub T);

/// Nothing to take now: the queue is empty, or closed and empty.
#[derive(Debug, PartialEq, Eq)]
pub enum TryRecvError {
    Empty,
    Disconnected,
}

pub struct Sender<T>(Arc<Shared<T>>);

/// What an empty queue of `T` holds: the mutex-guarded state and the
/// `Notify` (its one allocation adds the `Arc`'s two counts, 16 bytes). For
/// the compile-time size guard where the session queue's item type is
/// defined (`sessions.rs`).
pub const fn empty_size<T>() -> usize {
    std::mem::size_of::<Shared<T>>()
}

impl<T> Clone for Sender<T> {
    fn clone(&self) -> Self {
        self.0.lock().senders += 1;
        Sender(self.0.clone())
    }
}

impl<T> Drop for Sender<T> {
    fn drop(&mut self) {
        let wake = {
            let mut s = self.0.lock();
            s.senders -= 1;
            if s.senders == 0 {
                s.waiting.take()
            } else {
                None
            }
        };
        if let Some(w) = wake {
            w.wake();
        }
    }
}

impl<T> Sender<T> {
    /// Queue `item` if there is room now.
    pub fn try_send(&self, item: T) -> Result<(), TrySendError<T>> {
        let wake = {
            let mut s = self.0.lock();
            if s.receiver_closed {
                return Err(TrySendError::Closed(item));
            }
            if s.items.len() >= s.capacity {
                return Err(TrySendError::Full(item));
            }
            s.items.push_back(item);
            s.waiting.take()
        };
        if let Some(w) = wake {
            w.wake();
        }
        Ok(())
    }

    /// Queue `item`, waiting for room as long as it takes.
    pub async fn send(&self, item: T) -> Result<(), SendError<T>> {
        let mut slot = Some(item);
        match self.send_from(&mut slot).await {
            Ok(()) => Ok(()),
            Err(()) => Err(SendError(slot.take().expect("item kept on close"))),
        }
    }

    /// Queue `item`, waiting at most `limit` for room.
    pub async fn send_timeout(&self, item: T, limit: Duration) -> Result<(), SendTimeoutError<T>> {
        let mut slot = Some(item);
        match tokio::time::timeout(limit, self.send_from(&mut slot)).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(())) => Err(SendTimeoutError::Closed(
                slot.take().expect("item kept on close"),
            )),
            Err(_) => Err(SendTimeoutError::Timeout(
                slot.take().expect("item kept on timeout"),
            )),
        }
    }

    /// Move the item out of `slot` into the queue once there is room; on
    /// `Err` (receiver gone) or when cancelled, the item stays in `slot`.
    async fn send_from(&self, slot: &mut Option<T>) -> Result<(), ()> {
        loop {
            // Registered before the check, so a wake-up between the check
            // and the wait is not missed.
            let room = self.0.room.notified();
            tokio::pin!(room);
            room.as_mut().enable();
            {
                let mut s = self.0.lock();
                if s.receiver_closed {
                    return Err(());
                }
                if s.items.len() < s.capacity {
                    s.items.push_back(slot.take().expect("item present"));
                    let wake = s.waiting.take();
                    drop(s);
                    if let Some(w) = wake {
                        w.wake();
                    }
                    return Ok(());
                }
            }
            room.await;
        }
    }

    /// Free slots now.
    pub fn capacity(&self) -> usize {
        let s = self.0.lock();
        s.capacity.saturating_sub(s.items.len())
    }
}

pub struct Receiver<T>(Arc<Shared<T>>);

impl<T> Receiver<T> {
    /// The next item; `None` once the queue is empty and every sender is
    /// gone (or the receiver was closed). Cancel-safe: an item is taken
    /// only when this returns it.
    pub async fn recv(&mut self) -> Option<T> {
        std::future::poll_fn(|cx| self.poll_recv(cx)).await
    }

    fn poll_recv(&mut self, cx: &mut Context<'_>) -> Poll<Option<T>> {
        let item = {
            let mut s = self.0.lock();
            match s.pop() {
                Some(item) => item,
                None if s.senders == 0 || s.receiver_closed => return Poll::Ready(None),
                None => {
                    // Checked and registered under the lock: a push after
                    // this finds the waker.
                    match &mut s.waiting {
                        Some(w) => w.clone_from(cx.waker()),
                        None => s.waiting = Some(cx.waker().clone()),
                    }
                    return Poll::Pending;
                }
            }
        };
        self.0.room.notify_one();
        Poll::Ready(Some(item))
    }

    /// Take the next item if there is one now.
    pub fn try_recv(&mut self) -> Result<T, TryRecvError> {
        let item = {
            let mut s = self.0.lock();
            match s.pop() {
                Some(item) => item,
                None if s.senders == 0 || s.receiver_closed => {
                    return Err(TryRecvError::Disconnected)
                }
                None => return Err(TryRecvError::Empty),
            }
        };
        self.0.room.notify_one();
        Ok(item)
    }

    /// Refuse new items; those already queued can still be taken.
    pub fn close(&mut self) {
        self.0.lock().receiver_closed = true;
        self.0.room.notify_waiters();
    }
}

impl<T> Drop for Receiver<T> {
    fn drop(&mut self) {
        let left = {
            let mut s = self.0.lock();
            s.receiver_closed = true;
            std::mem::take(&mut s.items)
        };
        self.0.room.notify_waiters();
        // Dropped outside the lock: an item's drop may run arbitrary code.
        drop(left);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn fifo_and_bounded() {
        let (tx, mut rx) = channel(2);
        tx.try_send(1).unwrap();
        tx.try_send(2).unwrap();
        assert_eq!(tx.try_send(3), Err(TrySendError::Full(3)));
        assert_eq!(tx.capacity(), 0);
        assert_eq!(rx.recv().await, Some(1));
        assert_eq!(tx.capacity(), 1);
        tx.try_send(3).unwrap();
        assert_eq!(rx.try_recv(), Ok(2));
        assert_eq!(rx.try_recv(), Ok(3));
        assert_eq!(rx.try_recv(), Err(TryRecvError::Empty));
    }

    #[tokio::test]
    async fn recv_ends_when_senders_are_gone_after_draining() {
        let (tx, mut rx) = channel(4);
        let tx2 = tx.clone();
        tx.try_send("a").unwrap();
        drop(tx);
        tx2.try_send("b").unwrap();
        drop(tx2);
        assert_eq!(rx.recv().await, Some("a"));
        assert_eq!(rx.recv().await, Some("b"));
        assert_eq!(rx.recv().await, None);
        assert_eq!(rx.try_recv(), Err(TryRecvError::Disconnected));
    }

    #[tokio::test]
    async fn recv_wakes_for_an_item_sent_while_waiting() {
        let (tx, mut rx) = channel(1);
        let waiter = tokio::spawn(async move { rx.recv().await });
        tokio::task::yield_now().await;
        tx.send(7).await.unwrap();
        let got = tokio::time::timeout(Duration::from_secs(5), waiter)
            .await
            .expect("woken")
            .unwrap();
        assert_eq!(got, Some(7));
    }

    #[tokio::test]
    async fn send_waits_for_room_in_order() {
        let (tx, mut rx) = channel(1);
        tx.try_send(0).unwrap();
        let tx = Arc::new(tx);
        let t = tx.clone();
        let sender = tokio::spawn(async move {
            for i in 1..=50 {
                t.send(i).await.unwrap();
            }
        });
        for want in 0..=50 {
            let got = tokio::time::timeout(Duration::from_secs(5), rx.recv())
                .await
                .expect("item in time");
            assert_eq!(got, Some(want));
        }
        sender.await.unwrap();
    }

    #[tokio::test]
    async fn send_timeout_gives_the_item_back() {
        let (tx, _rx) = channel(1);
        tx.try_send(1).unwrap();
        let r = tx.send_timeout(2, Duration::from_millis(20)).await;
        assert_eq!(r, Err(SendTimeoutError::Timeout(2)));
    }

    #[tokio::test]
    async fn closing_the_receiver_refuses_and_wakes_senders() {
        let (tx, mut rx) = channel(1);
        tx.try_send(1).unwrap();
        let tx = Arc::new(tx);
        let t = tx.clone();
        let blocked = tokio::spawn(async move { t.send(2).await });
        tokio::task::yield_now().await;
        rx.close();
        let r = tokio::time::timeout(Duration::from_secs(5), blocked)
            .await
            .expect("woken")
            .unwrap();
        assert_eq!(r, Err(SendError(2)));
        assert_eq!(tx.try_send(3), Err(TrySendError::Closed(3)));
        // What was queued before the close can still be taken.
        assert_eq!(rx.try_recv(), Ok(1));
        assert_eq!(rx.try_recv(), Err(TryRecvError::Disconnected));
    }

    #[tokio::test]
    async fn dropping_the_receiver_drops_queued_items() {
        let (tx, rx) = channel(2);
        let (done_tx, done_rx) = tokio::sync::oneshot::channel::<()>();
        tx.try_send(done_tx).unwrap();
        drop(rx);
        assert!(done_rx.await.is_err(), "the queued sender was dropped");
        assert!(matches!(
            tx.try_send(tokio::sync::oneshot::channel().0),
            Err(TrySendError::Closed(_))
        ));
    }

    #[test]
    fn an_emptied_queue_gives_its_buffer_back() {
        let (tx, mut rx) = channel(64);
        for i in 0..40 {
            tx.try_send(i).unwrap();
        }
        while rx.try_recv().is_ok() {}
        assert_eq!(rx.0.lock().items.capacity(), 0);
    }
}
