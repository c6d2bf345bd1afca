//! The message archive's files of a stopped server, for tests that write
//! old layouts or damage records under real keys: the archive is in sled's
//! trees (`DATA_DIR/db/`, the default `archive_engine`) or in fjall
//! (`DATA_DIR/archive/`, `archive_engine: fjall`); tree names and keys are the
//! same on both (layout: src/storage/archive/mod.rs).

use std::path::Path;

/// sled's database at `dir`, waiting (bounded) for the file lock: a handle
/// the test itself dropped just before releases the lock only when sled's
/// flusher thread has ended, a moment later.
pub fn open_sled(dir: &Path) -> sled::Db {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        match sled::open(dir) {
            Ok(db) => return db,
            Err(sled::Error::Io(e))
                if e.to_string().contains("could not acquire lock")
                    && std::time::Instant::now() < deadline =>
            {
                std::thread::sleep(std::time::Duration::from_millis(50))
            }
            Err(e) => panic!("open the database {}: {e:?}", dir.display()),
        }
    }
}

/// The archive's trees of a stopped server's data directory, on whichever
/// engine holds them (fjall if its directory exists).
pub enum ArchiveFiles {
    Fjall(fjall::Keyspace),
    Sled(sled::Db),
}

impl ArchiveFiles {
    pub fn open(data: &Path) -> ArchiveFiles {
        let dir = data.join("archive");
        if dir.exists() {
            ArchiveFiles::Fjall(fjall::Config::new(dir).open().expect("open the archive"))
        } else {
            ArchiveFiles::Sled(open_sled(&data.join("db")))
        }
    }

    pub fn engine(&self) -> &'static str {
        match self {
            ArchiveFiles::Fjall(_) => "fjall",
            ArchiveFiles::Sled(_) => "sled",
        }
    }

    pub fn get(&self, tree: &str, key: &[u8]) -> Option<Vec<u8>> {
        match self {
            ArchiveFiles::Fjall(ks) => ks
                .open_partition(tree, Default::default())
                .unwrap()
                .get(key)
                .unwrap()
                .map(|v| v.to_vec()),
            ArchiveFiles::Sled(db) => db
                .open_tree(tree)
                .unwrap()
                .get(key)
                .unwrap()
                .map(|v| v.to_vec()),
        }
    }

    /// Keys starting with `prefix`, in order.
    pub fn keys(&self, tree: &str, prefix: &[u8]) -> Vec<Vec<u8>> {
        match self {
            ArchiveFiles::Fjall(ks) => ks
                .open_partition(tree, Default::default())
                .unwrap()
                .prefix(prefix)
                .map(|kv| kv.unwrap().0.to_vec())
                .collect(),
            ArchiveFiles::Sled(db) => db
                .open_tree(tree)
                .unwrap()
                .scan_prefix(prefix)
                .keys()
                .map(|k| k.unwrap().to_vec())
                .collect(),
        }
    }

    /// Pairs of a whole tree, in order.
    pub fn pairs(&self, tree: &str) -> Vec<(Vec<u8>, Vec<u8>)> {
        match self {
            ArchiveFiles::Fjall(ks) => ks
                .open_partition(tree, Default::default())
                .unwrap()
                .iter()
                .map(|kv| {
                    let (k, v) = kv.unwrap();
                    (k.to_vec(), v.to_vec())
                })
                .collect(),
            ArchiveFiles::Sled(db) => db
                .open_tree(tree)
                .unwrap()
                .iter()
                .map(|kv| {
                    let (k, v) = kv.unwrap();
                    (k.to_vec(), v.to_vec())
                })
                .collect(),
        }
    }

    pub fn insert(&self, tree: &str, key: &[u8], value: &[u8]) {
        match self {
            ArchiveFiles::Fjall(ks) => ks
                .open_partition(tree, Default::default())
                .unwrap()
                .insert(key, value)
                .unwrap(),
            ArchiveFiles::Sled(db) => {
                db.open_tree(tree).unwrap().insert(key, value).unwrap();
            }
        }
    }

    pub fn remove(&self, tree: &str, key: &[u8]) {
        match self {
            ArchiveFiles::Fjall(ks) => ks
                .open_partition(tree, Default::default())
                .unwrap()
                .remove(key)
                .unwrap(),
            ArchiveFiles::Sled(db) => {
                db.open_tree(tree).unwrap().remove(key).unwrap();
            }
        }
    }

    /// On disk (then drop it before the server starts).
    pub fn flush(&self) {
        match self {
            ArchiveFiles::Fjall(ks) => ks.persist(fjall::PersistMode::SyncAll).unwrap(),
            ArchiveFiles::Sled(db) => {
                db.flush().unwrap();
            }
        }
    }

    /// The archive id of `owner` (key `o` + JID in `archive_owners`).
    pub fn archive_of(&self, owner: &str) -> Option<Vec<u8>> {
        let mut k = b"o".to_vec();
        k.extend_from_slice(owner.as_bytes());
        self.get("archive_owners", &k)
    }

    /// As in a data directory from before the old layout's conversion.
    pub fn forget_conversion(&self) {
        self.remove("archive_owners", b"m:migrated");
        self.flush();
    }
}
