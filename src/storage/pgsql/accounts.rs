//! Accounts in PostgreSQL: ejabberd's `users` table, one row per
//! (server_host, username), SCRAM secrets in ejabberd's format.
//!
//! ejabberd keeps one SCRAM-SHA-1 secret as base64 text: the stored key in
//! `password`, and `serverkey`, `salt`, `iterationcount`. Rookery writes
//! its SHA-1 secret there the same way and its SHA-256 secret in the
//! `rookery_sha256_*` columns (NULL for SHA-1-only accounts, such as
//! ejabberd's). A row ejabberd wrote with a plain password (`serverkey`
//! empty, `auth_password_format: plain`) is read as credentials derived
//! from that password, so such accounts log in unchanged.
//!
//! Invariants: `create_user` inserts or fails with `AlreadyExists`, never
//! overwrites; `set_credentials` only updates an existing row;
//! `delete_user` removes the account's data from every table (and its
//! archive) in one transaction, the `users` row last.

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use tokio_postgres::Row;

use super::{owned, PgErr, PgStorage};
use crate::auth::credentials::{ScramSecret, StoredCredentials};
use crate::storage::{AccountKey, AccountStore, StorageError};

/// The columns `creds_of_row` reads, in order.
pub(super) const CRED_COLUMNS: &str = "\"password\", serverkey, salt, iterationcount, \
     rookery_sha256_storedkey, rookery_sha256_serverkey, rookery_sha256_salt, rookery_sha256_iterations";

fn unb64(what: &str, text: &str) -> Result<Vec<u8>, StorageError> {
    B64.decode(text.trim())
        .map_err(|e| StorageError::Corrupt(format!("{what}: not base64: {e}")))
}

/// Credentials from a `users` row (columns [`CRED_COLUMNS`] from `at`).
pub(super) fn creds_of_row(
    who: &str,
    row: &Row,
    at: usize,
) -> Result<StoredCredentials, StorageError> {
    let password: String = row.get(at);
    let serverkey: String = row.get(at + 1);
    let salt: String = row.get(at + 2);
    let iterations: i32 = row.get(at + 3);
    if serverkey.is_empty() {
        // ejabberd's plain password format.
        return StoredCredentials::derive(&password, crate::auth::credentials::DEFAULT_ITERATIONS)
            .map_err(|e| StorageError::Corrupt(format!("plain password of {who}: {e:?}")));
    }
    let sha1 = ScramSecret {
        salt: unb64(who, &salt)?,
        iterations: u32::try_from(iterations)
            .map_err(|_| StorageError::Corrupt(format!("{who}: negative iteration count")))?,
        stored_key: unb64(who, &password)?,
        server_key: unb64(who, &serverkey)?,
    };
    let s256: (Option<String>, Option<String>, Option<String>, Option<i32>) = (
        row.get(at + 4),
        row.get(at + 5),
        row.get(at + 6),
        row.get(at + 7),
    );
    let sha256 = match s256 {
        (Some(stored), Some(server), Some(salt), Some(it)) => Some(ScramSecret {
            salt: unb64(who, &salt)?,
            iterations: u32::try_from(it)
                .map_err(|_| StorageError::Corrupt(format!("{who}: negative iteration count")))?,
            stored_key: unb64(who, &stored)?,
            server_key: unb64(who, &server)?,
        }),
        _ => None,
    };
    Ok(StoredCredentials { sha1, sha256 })
}

/// The column values for `creds`: password, serverkey, salt,
/// iterationcount, then the four SHA-256 ones.
pub(super) struct CredValues {
    pub password: String,
    pub serverkey: String,
    pub salt: String,
    pub iterations: i32,
    pub s256_stored: Option<String>,
    pub s256_server: Option<String>,
    pub s256_salt: Option<String>,
    pub s256_iterations: Option<i32>,
}

pub(super) fn cred_values(c: &StoredCredentials) -> CredValues {
    let it = |n: u32| i32::try_from(n).unwrap_or(i32::MAX);
    CredValues {
        password: B64.encode(&c.sha1.stored_key),
        serverkey: B64.encode(&c.sha1.server_key),
        salt: B64.encode(&c.sha1.salt),
        iterations: it(c.sha1.iterations),
        s256_stored: c.sha256.as_ref().map(|s| B64.encode(&s.stored_key)),
        s256_server: c.sha256.as_ref().map(|s| B64.encode(&s.server_key)),
        s256_salt: c.sha256.as_ref().map(|s| B64.encode(&s.salt)),
        s256_iterations: c.sha256.as_ref().map(|s| it(s.iterations)),
    }
}

/// Insert `user@host` with `creds`; `AlreadyExists` if it is there.
pub(super) async fn insert_user(
    c: &impl deadpool_postgres::GenericClient,
    host: &str,
    user: &str,
    creds: &StoredCredentials,
) -> Result<(), PgErr> {
    let v = cred_values(creds);
    let n = c
        .execute(
            "INSERT INTO users (username, server_host, \"password\", serverkey, salt, iterationcount, \
             rookery_sha256_storedkey, rookery_sha256_serverkey, rookery_sha256_salt, rookery_sha256_iterations) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) ON CONFLICT DO NOTHING",
            &[
                &user,
                &host,
                &v.password,
                &v.serverkey,
                &v.salt,
                &v.iterations,
                &v.s256_stored,
                &v.s256_server,
                &v.s256_salt,
                &v.s256_iterations,
            ],
        )
        .await?;
    if n == 0 {
        return Err(PgErr::Store(StorageError::AlreadyExists));
    }
    Ok(())
}

/// Every table holding an account's data, by (server_host, username).
const ACCOUNT_TABLES: &[&str] = &[
    "rostergroups",
    "rosterusers",
    "roster_version",
    "rookery_roster_tombstones",
    "rookery_pending_subscriptions",
    "spool",
    "rookery_offline_counts",
    "vcard",
    "private_storage",
    "rookery_module_data",
];

impl AccountStore for PgStorage {
    fn user_exists(&self, account: AccountKey<'_>) -> Result<bool, StorageError> {
        let (host, user) = owned(account);
        self.call(|sh| async move {
            let c = sh.pool.get().await?;
            let st = c
                .prepare_cached("SELECT 1 FROM users WHERE server_host = $1 AND username = $2")
                .await?;
            Ok(c.query_opt(&st, &[&host, &user]).await?.is_some())
        })
    }

    fn create_user(
        &self,
        account: AccountKey<'_>,
        creds: &StoredCredentials,
    ) -> Result<(), StorageError> {
        let (host, user) = owned(account);
        let creds = creds.clone();
        self.call(|sh| async move {
            let c = sh.pool.get().await?;
            insert_user(&c, &host, &user, &creds).await
        })
    }

    fn delete_user(&self, account: AccountKey<'_>) -> Result<bool, StorageError> {
        let (host, user) = owned(account);
        // The archive first (it has its own writer, whose queue for the
        // owner is dropped).
        if let Ok(owner) = jid::BareJid::new(&format!("{user}@{host}")) {
            use xep_support::archive::ArchiveStore;
            self.archive
                .delete_archive(&owner)
                .map_err(StorageError::from)?;
        }
        self.call(|sh| async move {
            let mut c = sh.pool.get().await?;
            let tx = c.transaction().await?;
            for t in ACCOUNT_TABLES {
                tx.execute(
                    &format!("DELETE FROM {t} WHERE server_host = $1 AND username = $2"),
                    &[&host, &user],
                )
                .await?;
            }
            let n = tx
                .execute(
                    "DELETE FROM users WHERE server_host = $1 AND username = $2",
                    &[&host, &user],
                )
                .await?;
            tx.commit().await?;
            Ok(n > 0)
        })
    }

    fn get_credentials(
        &self,
        account: AccountKey<'_>,
    ) -> Result<Option<StoredCredentials>, StorageError> {
        let (host, user) = owned(account);
        self.call(|sh| async move {
            let c = sh.pool.get().await?;
            let st = c
                .prepare_cached(&format!(
                    "SELECT {CRED_COLUMNS} FROM users WHERE server_host = $1 AND username = $2"
                ))
                .await?;
            match c.query_opt(&st, &[&host, &user]).await? {
                Some(row) => Ok(Some(creds_of_row(&format!("{user}@{host}"), &row, 0)?)),
                None => Ok(None),
            }
        })
    }

    fn set_credentials(
        &self,
        account: AccountKey<'_>,
        creds: &StoredCredentials,
    ) -> Result<bool, StorageError> {
        let (host, user) = owned(account);
        let v = cred_values(creds);
        self.call(|sh| async move {
            let c = sh.pool.get().await?;
            let n = c
                .execute(
                    "UPDATE users SET \"password\" = $3, serverkey = $4, salt = $5, iterationcount = $6, \
                     rookery_sha256_storedkey = $7, rookery_sha256_serverkey = $8, \
                     rookery_sha256_salt = $9, rookery_sha256_iterations = $10 \
                     WHERE server_host = $1 AND username = $2",
                    &[
                        &host,
                        &user,
                        &v.password,
                        &v.serverkey,
                        &v.salt,
                        &v.iterations,
                        &v.s256_stored,
                        &v.s256_server,
                        &v.s256_salt,
                        &v.s256_iterations,
                    ],
                )
                .await?;
            Ok(n > 0)
        })
    }

    fn list_users(&self, host: &str) -> Result<Vec<String>, StorageError> {
        let host = host.to_string();
        self.call(|sh| async move {
            let c = sh.pool.get().await?;
            let rows = c
                .query(
                    "SELECT username FROM users WHERE server_host = $1 ORDER BY username COLLATE \"C\"",
                    &[&host],
                )
                .await?;
            Ok(rows.iter().map(|r| r.get(0)).collect())
        })
    }

    fn count_users(&self, host: &str) -> Result<usize, StorageError> {
        let host = host.to_string();
        self.call(|sh| async move {
            let c = sh.pool.get().await?;
            let n: i64 = c
                .query_one(
                    "SELECT count(*) FROM users WHERE server_host = $1",
                    &[&host],
                )
                .await?
                .get(0);
            Ok(n as usize)
        })
    }
}
