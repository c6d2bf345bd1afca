//! Group commit: many writers, one `flush` (write + fsync of sled's log).
//!
//! A writer that must not acknowledge before its change is durable (an
//! offline message) applies the change without flushing, then awaits
//! [`GroupCommit::durable`]. One flusher task runs `Maintenance::flush` on a
//! blocking thread, over and over while anyone waits; every writer whose
//! change was applied before a flush *started* is released when that flush
//! ends. Under load one fsync then covers every message that arrived during
//! the previous one (instead of one fsync each), and no runtime worker
//! thread ever blocks on the disk. An idle server does no flushing.
//!
//! The guarantee is unchanged: `durable()` returns `Ok` only after a flush
//! that began after the caller's change was applied has completed. When
//! that flush fails, every writer it covered gets the flush's own error (a
//! full disk stays [`StorageError::Full`], so senders are told
//! `resource-constraint`), and the flusher goes on serving later writers.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use tokio::sync::{watch, Notify};

use super::{Maintenance, StorageError};

/// The state the flusher publishes after each flush.
#[derive(Clone, Debug)]
struct Done {
    /// Tickets up to this one are covered by a completed flush.
    ticket: u64,
    /// How that flush ended.
    result: Result<(), StorageError>,
}

struct Shared {
    /// The last ticket handed out.
    requested: AtomicU64,
    wake: Notify,
    /// Flushes run (for tests and statistics).
    flushes: AtomicU64,
}

pub struct GroupCommit {
    shared: Arc<Shared>,
    done: watch::Receiver<Done>,
}

impl GroupCommit {
    /// Start the flusher task on the current runtime. It ends once the
    /// returned value is dropped.
    pub fn start(storage: Arc<dyn Maintenance>) -> Arc<GroupCommit> {
        let (tx, rx) = watch::channel(Done {
            ticket: 0,
            result: Ok(()),
        });
        let shared = Arc::new(Shared {
            requested: AtomicU64::new(0),
            wake: Notify::new(),
            flushes: AtomicU64::new(0),
        });
        let sh = shared.clone();
        tokio::spawn(async move {
            while !tx.is_closed() {
                let upto = sh.requested.load(Ordering::Acquire);
                if upto <= tx.borrow().ticket {
                    // Nothing to flush: wait for a request (a permit is kept
                    // if one came meanwhile) or for the GroupCommit to be
                    // gone; no timer, so an idle server does not wake here.
                    tokio::select! {
                        _ = sh.wake.notified() => {}
                        _ = tx.closed() => return,
                    }
                    continue;
                }
                sh.flushes.fetch_add(1, Ordering::Relaxed);
                // Every ticket <= upto was taken after its change was
                // applied, and before this flush starts: covered by it.
                let s = storage.clone();
                let result = match tokio::task::spawn_blocking(move || s.flush()).await {
                    Ok(r) => r,
                    Err(e) => Err(StorageError::Io(format!("the flush thread failed: {e}"))),
                };
                if let Err(e) = &result {
                    tracing::error!("flushing storage: {e}");
                }
                if tx
                    .send(Done {
                        ticket: upto,
                        result,
                    })
                    .is_err()
                {
                    return;
                }
            }
        });
        Arc::new(GroupCommit { shared, done: rx })
    }

    /// Wait until every change this task applied before the call is on
    /// disk. `Err` when the flush that should have covered it failed.
    pub async fn durable(&self) -> Result<(), StorageError> {
        let ticket = self.shared.requested.fetch_add(1, Ordering::AcqRel) + 1;
        self.shared.wake.notify_one();
        let mut rx = self.done.clone();
        let done = rx
            .wait_for(|d| d.ticket >= ticket)
            .await
            .map(|d| d.result.clone());
        match done {
            Ok(result) => result,
            Err(_) => Err(StorageError::Io("storage flusher stopped".into())),
        }
    }

    /// How many flushes ran so far.
    #[cfg(test)]
    pub fn flushes(&self) -> u64 {
        self.shared.flushes.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::{AccountKey, OfflineStored, SledStorage, Storage};
    use std::time::Duration;

    /// A store whose flushes fail as a full disk does, until `ok` is set.
    struct FailingFlush {
        ok: std::sync::atomic::AtomicBool,
    }

    impl Maintenance for FailingFlush {
        fn flush(&self) -> Result<(), StorageError> {
            if self.ok.load(Ordering::SeqCst) {
                Ok(())
            } else {
                Err(StorageError::Full("/db: No space left on device".into()))
            }
        }
        fn backup(&self, _: &std::path::Path) -> Result<u64, StorageError> {
            unreachable!()
        }
        fn restore(&self, _: &std::path::Path) -> Result<u64, StorageError> {
            unreachable!()
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_failed_flush_hands_its_own_error_to_every_waiter_and_the_flusher_goes_on() {
        let store = Arc::new(FailingFlush {
            ok: std::sync::atomic::AtomicBool::new(false),
        });
        let gc = GroupCommit::start(store.clone());
        let waiters: Vec<_> = (0..20)
            .map(|_| {
                let gc = gc.clone();
                tokio::spawn(async move { gc.durable().await })
            })
            .collect();
        for w in waiters {
            let e = tokio::time::timeout(Duration::from_secs(10), w)
                .await
                .expect("a failed flush must not leave waiters hanging")
                .unwrap()
                .unwrap_err();
            assert!(matches!(e, StorageError::Full(_)), "{e:?}");
            assert_eq!(e.stanza_error().condition, "resource-constraint");
        }
        store.ok.store(true, Ordering::SeqCst);
        tokio::time::timeout(Duration::from_secs(10), gc.durable())
            .await
            .unwrap()
            .unwrap();
    }

    /// Dropping the GroupCommit ends its flusher task at once (it sleeps
    /// on no timer, so nothing else would wake it): the store it held is
    /// released.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_flusher_ends_when_the_group_commit_is_dropped() {
        let store = Arc::new(FailingFlush {
            ok: std::sync::atomic::AtomicBool::new(true),
        });
        let gc = GroupCommit::start(store.clone());
        gc.durable().await.unwrap();
        // Idle now; then dropped.
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(Arc::strong_count(&store), 2);
        drop(gc);
        let t0 = std::time::Instant::now();
        while Arc::strong_count(&store) > 1 {
            assert!(
                t0.elapsed() < Duration::from_millis(500),
                "the flusher task still holds the store"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn one_flush_covers_many_writers_and_every_write_is_acknowledged() {
        let dir = tempfile::tempdir().unwrap();
        let storage: Arc<dyn Storage> =
            Arc::new(SledStorage::open(&dir.path().join("db")).unwrap());
        let gc = GroupCommit::start(storage.clone());
        let mut tasks = Vec::new();
        for i in 0..200 {
            let (s, gc) = (storage.clone(), gc.clone());
            tasks.push(tokio::spawn(async move {
                let user = format!("u{}", i % 20);
                let r = s
                    .offline_store_unflushed(
                        AccountKey::new("localhost", &user),
                        "<message/>",
                        None,
                    )
                    .unwrap();
                assert!(matches!(r, OfflineStored::Stored(_)));
                gc.durable().await
            }));
        }
        for t in tasks {
            t.await.unwrap().unwrap();
        }
        let total: usize = (0..20)
            .map(|i| {
                storage
                    .offline_count(AccountKey::new("localhost", &format!("u{i}")))
                    .unwrap()
            })
            .sum();
        assert_eq!(total, 200);
        // Batched: fewer flushes than writers (each waiter is covered by a
        // flush that started after its write; concurrent ones share it).
        assert!(
            gc.flushes() >= 1 && gc.flushes() < 200,
            "{} flushes",
            gc.flushes()
        );
        // Nothing waiting: no more flushing.
        let before = gc.flushes();
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(gc.flushes(), before);
        // A later writer is covered by a later flush.
        storage
            .offline_store_unflushed(AccountKey::new("localhost", "late"), "<message/>", None)
            .unwrap();
        gc.durable().await.unwrap();
        assert_eq!(gc.flushes(), before + 1);
    }
}
