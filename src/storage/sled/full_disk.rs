//! Tests of the sled engine on a disk that fills up: a real tmpfs of a few
//! MiB mounted by the test (root only; the test says SKIPPED and passes
//! when it cannot mount, e.g. as an ordinary user).
//!
//! What they pin (see docs/architecture.md, "Faults"):
//! - a write that cannot reach the disk returns [`StorageError::Full`],
//!   never panics or hangs; after the first one, sled refuses every write
//!   of this run (its sticky "global error"), while reads go on;
//! - nothing acknowledged before is lost or damaged: after space is freed
//!   and the database reopened, every earlier record reads back, counters
//!   agree with the records, and writes work again.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::mpsc;
use std::time::Duration;

use super::SledStorage;
use crate::storage::{
    AccountKey, ModuleStore, OfflineStore, OfflineStored, RosterItem, RosterStore, StorageError,
    Subscription,
};

/// A tmpfs mounted for one test, unmounted when dropped.
pub(crate) struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    /// Mount a tmpfs of `size` (mount's syntax, e.g. `8m`); `None` (and a
    /// SKIPPED line) when this machine does not let the test mount.
    pub(crate) fn mount(size: &str, test: &str) -> Option<Tmpfs> {
        let dir = tempfile::tempdir().ok()?;
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .output()
            .map(|o| o.status.success())
            .unwrap_or(false);
        if !ok {
            eprintln!("SKIPPED {test}: cannot mount a tmpfs here (needs root)");
            return None;
        }
        Some(Tmpfs { dir })
    }

    pub(crate) fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Fill the file system with `filler` until the kernel says ENOSPC.
    pub(crate) fn fill(&self) -> PathBuf {
        let path = self.path().join("filler");
        let mut f = std::fs::File::create(&path).expect("create filler");
        let chunk = vec![0xa5u8; 4096];
        loop {
            match f.write_all(&chunk) {
                Ok(()) => {}
                Err(e) if e.raw_os_error() == Some(28) => break,
                Err(e) => panic!("filling the tmpfs: {e}"),
            }
        }
        path
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(self.dir.path()).status();
    }
}

fn msg(who: &str, i: usize) -> String {
    // About 1 KiB, so the disk fills after a few hundred messages.
    format!(
        "<message from='bob@ex/r' to='{who}@ex'><body>m{i} {}</body></message>",
        "x".repeat(1000)
    )
}

fn contact(jid: &str) -> RosterItem {
    RosterItem {
        jid: jid.into(),
        name: None,
        groups: vec![],
        subscription: Subscription::Both,
        ask: false,
        approved: false,
        pending_in: false,
        ver: 0,
    }
}

/// Run `f` on a thread; panic if it does not finish in `limit` (a hang).
fn within<T: Send + 'static>(
    limit: Duration,
    what: &str,
    f: impl FnOnce() -> T + Send + 'static,
) -> T {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    rx.recv_timeout(limit)
        .unwrap_or_else(|_| panic!("{what} did not finish within {limit:?} (hang)"))
}

#[test]
fn full_disk_fails_writes_cleanly_and_loses_nothing() {
    let Some(fs) = Tmpfs::mount("8m", "full_disk_fails_writes_cleanly_and_loses_nothing") else {
        return;
    };
    let db = fs.path().join("db");
    let alice = AccountKey::new("ex", "alice");
    let bob = AccountKey::new("ex", "bob");
    let before = 40;

    let s = SledStorage::open(&db).unwrap();
    for i in 0..before {
        s.offline_store(alice, &msg("alice", i), None).unwrap();
    }
    s.roster_put(alice, contact("bob@ex")).unwrap();
    s.module_put(alice, "mod_private", "ns:a", b"<a xmlns='ns:a'/>")
        .unwrap();
    let filler = fs.fill();

    // Writes now fail with Full (sled may still take a few into its
    // buffers before its log write fails), within a bounded time each.
    let s = std::sync::Arc::new(s);
    let s2 = s.clone();
    let (stored, err) = within(
        Duration::from_secs(60),
        "writing to a full disk",
        move || {
            let mut stored = 0usize;
            for i in 0..5000 {
                match s2.offline_store(bob, &msg("bob", i), None) {
                    Ok(OfflineStored::Stored(_)) => stored += 1,
                    Ok(OfflineStored::Full) => unreachable!("no limit"),
                    Err(e) => return (stored, Some(e)),
                }
            }
            (stored, None)
        },
    );
    let err = err.expect("a full disk must make a write fail");
    assert!(matches!(err, StorageError::Full(_)), "{err:?}");
    assert!(err.to_string().contains("disk full"), "{err}");
    // Every later write fails the same way, also for other stores.
    assert!(matches!(
        s.roster_put(bob, contact("alice@ex")),
        Err(StorageError::Full(_))
    ));
    assert!(matches!(
        s.module_put(bob, "mod_private", "ns:b", b"<b/>"),
        Err(StorageError::Full(_))
    ));
    // Reads go on.
    assert_eq!(s.offline_count(alice).unwrap(), before);
    assert_eq!(s.offline_peek(alice, 1000).unwrap().len(), before);
    assert_eq!(s.roster_get(alice).unwrap().len(), 1);

    // Freeing space does not revive this handle: sled keeps its first
    // write error for the rest of the run, so every write still fails
    // (the server must be restarted; docs/admin.md says so).
    std::fs::remove_file(&filler).unwrap();
    let after_free = s.offline_store(bob, &msg("bob", 77_777), None);
    assert!(
        matches!(after_free, Err(StorageError::Full(_))),
        "{after_free:?}"
    );

    // Closing must not hang either (sled flushes on drop, and fails).
    let s = std::sync::Arc::try_unwrap(s).expect("one handle left");
    within(
        Duration::from_secs(30),
        "closing on a full disk",
        move || drop(s),
    );

    // Reopened with space: everything acknowledged is there and intact.
    let s = SledStorage::open(&db).unwrap();
    let got = s.offline_peek(alice, 1000).unwrap();
    assert_eq!(
        got.iter().map(|(_, x)| x.clone()).collect::<Vec<_>>(),
        (0..before).map(|i| msg("alice", i)).collect::<Vec<_>>()
    );
    assert_eq!(s.offline_count(alice).unwrap(), before);
    assert_eq!(s.roster_get(alice).unwrap()[0].jid, "bob@ex");
    assert_eq!(
        s.module_get(alice, "mod_private", "ns:a")
            .unwrap()
            .as_deref(),
        Some(&b"<a xmlns='ns:a'/>"[..])
    );
    // Bob's messages that were acknowledged (Ok) are all there, in order,
    // and his counter agrees with what is stored.
    let bobs = s.offline_peek(bob, 10_000).unwrap();
    assert!(
        bobs.len() >= stored,
        "{} of {stored} acknowledged",
        bobs.len()
    );
    assert_eq!(s.offline_count(bob).unwrap(), bobs.len());
    for (i, (_, xml)) in bobs.iter().enumerate() {
        assert_eq!(xml, &msg("bob", i));
    }
    // And the database takes writes again.
    s.offline_store(bob, &msg("bob", 99_999), None).unwrap();
    s.roster_put(bob, contact("alice@ex")).unwrap();
}
