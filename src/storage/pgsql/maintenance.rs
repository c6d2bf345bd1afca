//! `Maintenance` and `transfer::Records` for PostgreSQL: flush, backup and
//! restore, and the tables listed and loaded as engine-neutral records.
//!
//! - `flush` has nothing to do: every write committed before it returned.
//! - `backup FILE` writes the same file as the embedded engine's backup
//!   (`storage/sled/backup.rs`), so either engine restores it: the data is
//!   copied (`transfer::copy`, counts verified) into a sled database in a
//!   temporary directory next to FILE, which writes the file.
//! - `restore FILE` checks and loads the file into such a temporary sled
//!   database first (a damaged file changes nothing), then empties every
//!   Rookery table in one transaction and copies the data in.
//! - Records: the export reads each table in key order; the import writes
//!   in one transaction per batch, and `import_done` recounts the offline
//!   counters and moves the roster version sequence past every version
//!   copied in.

use std::path::Path;

use super::{roster, PgStorage};
use crate::storage::transfer::{Record, Records};
use crate::storage::{Maintenance, SledStorage, StorageError};

/// Every table Rookery keeps data in (emptied by `restore`).
pub(super) const ALL_TABLES: &str = "users, rosterusers, rostergroups, roster_version, \
     rookery_roster_tombstones, rookery_pending_subscriptions, spool, rookery_offline_counts, \
     vcard, private_storage, muc_room, rookery_module_data, \
     rookery_archives, rookery_archive_messages, rookery_archive_peers";

/// A temporary sled database next to `path`.
fn scratch(path: &Path) -> Result<(tempfile::TempDir, SledStorage), StorageError> {
    let parent = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let dir = tempfile::Builder::new()
        .prefix(".rookery-pg-copy")
        .tempdir_in(parent)
        .map_err(|e| {
            StorageError::Io(format!(
                "cannot create a work directory in {}: {e}",
                parent.display()
            ))
        })?;
    let db = SledStorage::open_with(&dir.path().join("db"), None)?;
    Ok((dir, db))
}

impl Maintenance for PgStorage {
    fn flush(&self) -> Result<(), StorageError> {
        Ok(())
    }

    fn backup(&self, path: &Path) -> Result<u64, StorageError> {
        let (_dir, db) = scratch(path)?;
        crate::storage::transfer::copy(self, &db)?;
        db.backup(path)
    }

    fn restore(&self, path: &Path) -> Result<u64, StorageError> {
        let (_dir, db) = scratch(path)?;
        let n = db.restore(path)?;
        self.archive.settle_all();
        self.call(|sh| async move {
            let c = sh.pool.get().await?;
            c.batch_execute(&format!("TRUNCATE {ALL_TABLES}")).await?;
            Ok(())
        })?;
        self.archive.reset();
        crate::storage::transfer::copy(&db, self)?;
        Ok(n)
    }
}

impl Records for PgStorage {
    fn export(
        &self,
        sink: &mut dyn FnMut(Record) -> Result<(), StorageError>,
    ) -> Result<(), StorageError> {
        // Read in one snapshot, then handed out (a family server's data;
        // a large one is moved table by table).
        let records = self.call(|sh| async move {
            let mut c = sh.pool.get().await?;
            let tx = c
                .build_transaction()
                .isolation_level(tokio_postgres::IsolationLevel::RepeatableRead)
                .read_only(true)
                .start()
                .await?;
            let mut out = Vec::new();
            for r in tx
                .query(
                    &format!(
                        "SELECT server_host, username, {} FROM users ORDER BY server_host, username",
                        super::accounts::CRED_COLUMNS
                    ),
                    &[],
                )
                .await?
            {
                let (host, user): (String, String) = (r.get(0), r.get(1));
                let creds = super::accounts::creds_of_row(&format!("{user}@{host}"), &r, 2)?;
                out.push(Record::Account { host, user, creds });
            }
            let owners = tx
                .query(
                    "SELECT DISTINCT server_host, username FROM rosterusers ORDER BY 1, 2",
                    &[],
                )
                .await?;
            for o in owners {
                let (host, user): (String, String) = (o.get(0), o.get(1));
                for item in roster::items(&tx, &host, &user, None).await? {
                    out.push(Record::RosterItem {
                        host: host.clone(),
                        user: user.clone(),
                        item,
                    });
                }
            }
            for r in tx
                .query(
                    "SELECT server_host, username, version, rookery_floor FROM roster_version ORDER BY 1, 2",
                    &[],
                )
                .await?
            {
                let (host, user, version, floor): (String, String, String, Option<i64>) =
                    (r.get(0), r.get(1), r.get(2), r.get(3));
                // ejabberd's own versions (no floor) are not Rookery's.
                if let (Ok(ver), Some(floor)) = (version.trim().parse::<u64>(), floor) {
                    out.push(Record::RosterVersion {
                        host,
                        user,
                        ver,
                        floor: floor.max(0) as u64,
                    });
                }
            }
            for r in tx
                .query(
                    "SELECT server_host, username, jid, ver FROM rookery_roster_tombstones ORDER BY 1, 2, 3",
                    &[],
                )
                .await?
            {
                let ver: i64 = r.get(3);
                out.push(Record::Tombstone {
                    host: r.get(0),
                    user: r.get(1),
                    jid: r.get(2),
                    ver: ver.max(0) as u64,
                });
            }
            for r in tx
                .query(
                    "SELECT server_host, username, jid, xml FROM rookery_pending_subscriptions ORDER BY 1, 2, 3",
                    &[],
                )
                .await?
            {
                out.push(Record::Pending {
                    host: r.get(0),
                    user: r.get(1),
                    from: r.get(2),
                    xml: r.get(3),
                });
            }
            for r in tx
                .query(
                    "SELECT server_host, username, xml FROM spool ORDER BY server_host, username, seq",
                    &[],
                )
                .await?
            {
                out.push(Record::Offline {
                    host: r.get(0),
                    user: r.get(1),
                    xml: r.get(2),
                });
            }
            let module_rows = [
                "SELECT server_host, username, 'mod_vcard', 'vcard', convert_to(vcard, 'UTF8') FROM vcard",
                "SELECT server_host, username, 'mod_private', namespace, convert_to(data, 'UTF8') FROM private_storage",
                "SELECT host, '', 'mod_muc', 'room:' || name, convert_to(opts, 'UTF8') FROM muc_room",
                "SELECT server_host, username, module, key, value FROM rookery_module_data",
            ];
            for sql in module_rows {
                for r in tx.query(&format!("{sql} ORDER BY 1, 2, 3, 4"), &[]).await? {
                    out.push(Record::Module {
                        host: r.get(0),
                        user: r.get(1),
                        module: r.get(2),
                        key: r.get(3),
                        value: r.get(4),
                    });
                }
            }
            tx.commit().await?;
            Ok(out)
        })?;
        for r in records {
            sink(r)?;
        }
        Ok(())
    }

    fn import(&self, records: Vec<Record>) -> Result<(), StorageError> {
        self.call(|sh| async move {
            let mut c = sh.pool.get().await?;
            let tx = c.transaction().await?;
            for r in records {
                match r {
                    Record::Account { host, user, creds } => {
                        super::accounts::insert_user(&tx, &host, &user, &creds).await?
                    }
                    Record::RosterItem { host, user, item } => {
                        roster::put_item(&tx, &host, &user, &item).await?
                    }
                    Record::RosterVersion {
                        host,
                        user,
                        ver,
                        floor,
                    } => {
                        tx.execute(
                            "INSERT INTO roster_version (username, server_host, version, rookery_floor) \
                             VALUES ($2, $1, $3, $4) ON CONFLICT (server_host, username) DO UPDATE \
                             SET version = EXCLUDED.version, rookery_floor = EXCLUDED.rookery_floor",
                            &[&host, &user, &ver.to_string(), &super::big(floor)],
                        )
                        .await?;
                    }
                    Record::Tombstone {
                        host,
                        user,
                        jid,
                        ver,
                    } => {
                        tx.execute(
                            "INSERT INTO rookery_roster_tombstones (server_host, username, jid, ver) VALUES ($1, $2, $3, $4) \
                             ON CONFLICT (server_host, username, jid) DO UPDATE SET ver = EXCLUDED.ver",
                            &[&host, &user, &jid, &super::big(ver)],
                        )
                        .await?;
                    }
                    Record::Pending {
                        host,
                        user,
                        from,
                        xml,
                    } => {
                        tx.execute(
                            "INSERT INTO rookery_pending_subscriptions (server_host, username, jid, xml) VALUES ($1, $2, $3, $4) \
                             ON CONFLICT (server_host, username, jid) DO UPDATE SET xml = EXCLUDED.xml",
                            &[&host, &user, &from, &xml],
                        )
                        .await?;
                    }
                    Record::Offline { host, user, xml } => {
                        tx.execute(
                            "INSERT INTO spool (username, server_host, xml) VALUES ($2, $1, $3)",
                            &[&host, &user, &xml],
                        )
                        .await?;
                    }
                    Record::Module {
                        host,
                        user,
                        module,
                        key,
                        value,
                    } => super::modules::put(&tx, &host, &user, &module, &key, &value).await?,
                }
            }
            tx.commit().await?;
            Ok(())
        })
    }

    fn import_done(&self) -> Result<(), StorageError> {
        self.call(|sh| async move {
            let c = sh.pool.get().await?;
            c.batch_execute(
                "INSERT INTO rookery_offline_counts (server_host, username, messages) \
                 SELECT server_host, username, count(*) FROM spool GROUP BY server_host, username \
                 ON CONFLICT (server_host, username) DO UPDATE SET messages = EXCLUDED.messages;
                 SELECT setval('rookery_roster_ver', greatest(
                     (SELECT max(rookery_ver) FROM rosterusers),
                     (SELECT max(ver) FROM rookery_roster_tombstones),
                     (SELECT max(version::bigint) FROM roster_version WHERE rookery_floor IS NOT NULL),
                     1));",
            )
            .await?;
            Ok(())
        })
    }
}
