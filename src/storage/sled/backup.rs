//! `rookery ctl backup FILE` / `restore FILE` for the sled database and the
//! message archive.
//!
//! A backup is one file holding every tree of the database (whatever trees
//! later code adds) and the archive's five trees, read from its engine
//! (fjall or sled: same names and records either way, so a backup restores
//! on both), written while the storage gate is held exclusively, so
//! no change is half in it: it is a consistent copy even while the server
//! runs. Writers wait for the copy (milliseconds for a family server's
//! data). The file is written to `FILE.tmp`, fsynced and renamed, so a
//! crash never leaves a truncated backup under the final name.
//!
//! Format (all integers big-endian):
//!
//! ```text
//! "ROOKERY-BACKUP 1\n"
//! per tree:   b'T' u32 name_len name
//! per record: b'R' u32 key_len key u32 value_len value
//! end:        b'E' u64 record_count [32 bytes SHA-256 of everything before]
//! ```
//!
//! `restore` reads and checks the whole file (magic, structure, checksum)
//! before touching the database, then, under the exclusive gate, empties
//! every tree and the archive, loads the file's records (the `archive_*`
//! trees into the archive's engine), and flushes both.

use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use super::{SledStorage, StorageError};
use crate::storage::archive::kv::{Batch, Tree, TREES};

const MAGIC: &[u8] = b"ROOKERY-BACKUP 1\n";
/// Largest key or value accepted from a backup file.
const MAX_FIELD: u32 = 256 * 1024 * 1024;

fn io(path: &Path, what: &str, e: std::io::Error) -> StorageError {
    StorageError::Io(format!("{what} {}: {e}", path.display()))
}

/// Writes and hashes at once.
struct Hashing<W: Write> {
    inner: W,
    hash: Sha256,
}

impl<W: Write> Hashing<W> {
    fn put(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.hash.update(bytes);
        self.inner.write_all(bytes)
    }
    fn field(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.put(&(bytes.len() as u32).to_be_bytes())?;
        self.put(bytes)
    }
}

fn tmp_path(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(".tmp");
    path.with_file_name(name)
}

impl SledStorage {
    /// Write a consistent copy of the whole database to `path`; returns the
    /// number of records written.
    pub(super) fn backup_impl(&self, path: &Path) -> Result<u64, StorageError> {
        let tmp = tmp_path(path);
        let file = {
            use std::os::unix::fs::OpenOptionsExt;
            std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(&tmp)
                .map_err(|e| io(&tmp, "cannot create", e))?
        };
        let mut out = Hashing {
            inner: BufWriter::new(file),
            hash: Sha256::new(),
        };
        let write_err = |e| io(&tmp, "cannot write", e);
        let mut count: u64 = 0;
        {
            let _exclusive = self.gate.write().unwrap_or_else(|e| e.into_inner());
            out.put(MAGIC).map_err(write_err)?;
            let mut names = self.db.tree_names();
            names.retain(|n| Tree::named(n).is_none());
            names.sort();
            for name in names {
                let tree = self.db.open_tree(&name).map_err(|e| self.err(e))?;
                out.put(b"T").map_err(write_err)?;
                out.field(&name).map_err(write_err)?;
                for item in tree.iter() {
                    let (k, v) = item.map_err(|e| self.err(e))?;
                    out.put(b"R").map_err(write_err)?;
                    out.field(&k).map_err(write_err)?;
                    out.field(&v).map_err(write_err)?;
                    count += 1;
                }
            }
            let kv = self.archive.kv();
            for t in TREES {
                out.put(b"T").map_err(write_err)?;
                out.field(t.name().as_bytes()).map_err(write_err)?;
                for item in kv.prefix(t, b"") {
                    let (k, v) = item?;
                    out.put(b"R").map_err(write_err)?;
                    out.field(&k).map_err(write_err)?;
                    out.field(&v).map_err(write_err)?;
                    count += 1;
                }
            }
        }
        out.put(b"E").map_err(write_err)?;
        out.put(&count.to_be_bytes()).map_err(write_err)?;
        let digest = out.hash.finalize();
        let mut inner = out.inner;
        inner.write_all(&digest).map_err(write_err)?;
        let file = inner
            .into_inner()
            .map_err(|e| io(&tmp, "cannot write", e.into_error()))?;
        file.sync_all().map_err(write_err)?;
        drop(file);
        std::fs::rename(&tmp, path).map_err(|e| io(path, "cannot rename the backup to", e))?;
        Ok(count)
    }

    /// Replace the whole database with the backup at `path`; returns the
    /// number of records loaded. The file is checked completely first: a
    /// damaged file changes nothing.
    pub(super) fn restore_impl(&self, path: &Path) -> Result<u64, StorageError> {
        let trees = read_backup(path)?;
        let _exclusive = self.gate.write().unwrap_or_else(|e| e.into_inner());
        let mut names = self.db.tree_names();
        for (name, _) in &trees {
            if !names.iter().any(|n| n.as_ref() == name.as_slice()) {
                names.push(name.clone().into());
            }
        }
        names.retain(|n| Tree::named(n).is_none());
        for name in names {
            let tree = self.db.open_tree(&name).map_err(|e| self.err(e))?;
            tree.clear().map_err(|e| self.err(e))?;
        }
        let kv = self.archive.kv();
        for t in TREES {
            kv.clear(t)?;
        }
        let mut count = 0;
        for (name, records) in trees {
            if let Some(t) = Tree::named(&name) {
                let mut batch = Batch::default();
                for (k, v) in records {
                    batch.insert(t, k, v);
                    count += 1;
                    if batch.len() >= 10_000 {
                        kv.write(std::mem::take(&mut batch))?;
                    }
                }
                kv.write(batch)?;
                continue;
            }
            let tree = self.db.open_tree(&name).map_err(|e| self.err(e))?;
            let mut batch = sled::Batch::default();
            for (k, v) in records {
                batch.insert(k, v);
                count += 1;
            }
            tree.apply_batch(batch).map_err(|e| self.err(e))?;
        }
        self.durable()?;
        kv.persist()?;
        self.archive.reload()?;
        Ok(count)
    }
}

type TreeRecords = Vec<(Vec<u8>, Vec<(Vec<u8>, Vec<u8>)>)>;

/// Read and verify a backup file completely.
fn read_backup(path: &Path) -> Result<TreeRecords, StorageError> {
    let file = File::open(path).map_err(|e| io(path, "cannot open", e))?;
    let mut r = BufReader::new(file);
    let bad = |why: &str| {
        StorageError::Corrupt(format!(
            "{} is not a valid Rookery backup: {why}",
            path.display()
        ))
    };
    let mut hash = Sha256::new();
    let read =
        |r: &mut BufReader<File>, n: usize, hash: &mut Sha256| -> Result<Vec<u8>, StorageError> {
            let mut buf = vec![0; n];
            r.read_exact(&mut buf).map_err(|_| bad("truncated"))?;
            hash.update(&buf);
            Ok(buf)
        };
    if read(&mut r, MAGIC.len(), &mut hash).map_err(|_| bad("no backup header"))? != MAGIC {
        return Err(bad("no backup header"));
    }
    let field = |r: &mut BufReader<File>, hash: &mut Sha256| -> Result<Vec<u8>, StorageError> {
        let len = read(r, 4, hash)?;
        let len = u32::from_be_bytes(len.try_into().unwrap_or([0; 4]));
        if len > MAX_FIELD {
            return Err(bad("record too large"));
        }
        read(r, len as usize, hash)
    };
    let mut trees: TreeRecords = Vec::new();
    let mut count: u64 = 0;
    loop {
        let tag = read(&mut r, 1, &mut hash)?;
        match tag[0] {
            b'T' => {
                let name = field(&mut r, &mut hash)?;
                trees.push((name, Vec::new()));
            }
            b'R' => {
                let k = field(&mut r, &mut hash)?;
                let v = field(&mut r, &mut hash)?;
                let Some((_, records)) = trees.last_mut() else {
                    return Err(bad("record before any tree"));
                };
                records.push((k, v));
                count += 1;
            }
            b'E' => {
                let n = read(&mut r, 8, &mut hash)?;
                let expected = hash.finalize();
                let n = u64::from_be_bytes(n.try_into().unwrap_or([0; 8]));
                let mut digest = [0u8; 32];
                r.read_exact(&mut digest).map_err(|_| bad("truncated"))?;
                if digest.as_slice() != expected.as_slice() {
                    return Err(bad("checksum mismatch (the file is damaged)"));
                }
                if n != count {
                    return Err(bad("record count mismatch"));
                }
                let mut rest = [0u8; 1];
                if r.read(&mut rest).map_err(|e| io(path, "cannot read", e))? != 0 {
                    return Err(bad("data after the end"));
                }
                return Ok(trees);
            }
            _ => return Err(bad("unknown record tag")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::{AccountKey, AccountStore, Maintenance, OfflineStore};

    fn creds() -> crate::auth::credentials::StoredCredentials {
        crate::auth::credentials::StoredCredentials::derive("pw", 4096).unwrap()
    }

    #[test]
    fn backup_restore_round_trip_and_damage_refused() {
        let dir = tempfile::tempdir().unwrap();
        let db = SledStorage::open(&dir.path().join("db")).unwrap();
        db.create_user(AccountKey::new("localhost", "alice"), &creds())
            .unwrap();
        db.offline_store(
            AccountKey::new("localhost", "alice"),
            "<message xmlns='jabber:client'/>",
            None,
        )
        .unwrap();
        let file = dir.path().join("b.bak");
        let n = db.backup(&file).unwrap();
        assert!(n >= 3, "{n}");
        assert!(!tmp_path(&file).exists());
        db.create_user(AccountKey::new("localhost", "bob"), &creds())
            .unwrap();
        db.delete_user(AccountKey::new("localhost", "alice"))
            .unwrap();
        assert_eq!(db.restore(&file).unwrap(), n);
        assert!(db
            .user_exists(AccountKey::new("localhost", "alice"))
            .unwrap());
        assert!(!db.user_exists(AccountKey::new("localhost", "bob")).unwrap());
        assert_eq!(
            db.offline_count(AccountKey::new("localhost", "alice"))
                .unwrap(),
            1
        );

        // A flipped byte or a truncated file is refused and changes nothing.
        let mut bytes = std::fs::read(&file).unwrap();
        let mid = bytes.len() / 2;
        bytes[mid] ^= 0x55;
        let damaged = dir.path().join("damaged.bak");
        std::fs::write(&damaged, &bytes).unwrap();
        let err = db.restore(&damaged).unwrap_err();
        assert!(
            err.to_string().contains("not a valid Rookery backup"),
            "{err}"
        );
        let truncated = dir.path().join("t.bak");
        std::fs::write(&truncated, &std::fs::read(&file).unwrap()[..40]).unwrap();
        assert!(db.restore(&truncated).is_err());
        std::fs::write(&truncated, b"hello").unwrap();
        assert!(db.restore(&truncated).is_err());
        assert!(db
            .user_exists(AccountKey::new("localhost", "alice"))
            .unwrap());
    }
}
