//! Offline messages (XEP-0160) in PostgreSQL: ejabberd's `spool` table
//! (the stanza as XML text, `seq` from its sequence, so a user's messages
//! come out in arrival order), and each user's message count in
//! `rookery_offline_counts`, changed in the same statement as the
//! messages, so the limit check and `offline_count` read one row and never
//! count messages.
//!
//! `offline_store` is one statement: the counter is raised only while it
//! is below the limit, and the message is inserted only when it was. It is
//! committed (durable) when it returns, so the group commit's later flush
//! has nothing left to do and `offline_store_unflushed` is the same call.
//! Removing unknown or already removed sequence numbers changes nothing,
//! the counter included.

use super::{owned, PgStorage};
use crate::storage::{AccountKey, OfflineStore, OfflineStored, StorageError};

impl OfflineStore for PgStorage {
    fn offline_store(
        &self,
        account: AccountKey<'_>,
        stanza_xml: &str,
        limit: Option<usize>,
    ) -> Result<OfflineStored, StorageError> {
        if limit == Some(0) {
            return Ok(OfflineStored::Full);
        }
        let (host, user) = owned(account);
        let xml = stanza_xml.to_string();
        let limit = limit.map_or(i64::MAX, |l| i64::try_from(l).unwrap_or(i64::MAX));
        self.call(|sh| async move {
            let c = sh.pool.get().await?;
            let st = c
                .prepare_cached(
                    "WITH counted AS (\
                       INSERT INTO rookery_offline_counts AS n (server_host, username, messages) VALUES ($1, $2, 1) \
                       ON CONFLICT (server_host, username) DO UPDATE SET messages = n.messages + 1 \
                       WHERE n.messages < $4 RETURNING 1) \
                     INSERT INTO spool (username, server_host, xml) SELECT $2, $1, $3 FROM counted \
                     RETURNING seq::bigint",
                )
                .await?;
            match c.query_opt(&st, &[&host, &user, &xml, &limit]).await? {
                Some(row) => {
                    let seq: i64 = row.get(0);
                    Ok(OfflineStored::Stored(seq as u64))
                }
                None => Ok(OfflineStored::Full),
            }
        })
    }

    fn offline_peek(
        &self,
        account: AccountKey<'_>,
        max: usize,
    ) -> Result<Vec<(u64, String)>, StorageError> {
        let (host, user) = owned(account);
        let max = i64::try_from(max).unwrap_or(i64::MAX);
        self.call(|sh| async move {
            let c = sh.pool.get().await?;
            let st = c
                .prepare_cached(
                    "SELECT seq::bigint, xml FROM spool WHERE server_host = $1 AND username = $2 \
                     ORDER BY seq LIMIT $3",
                )
                .await?;
            let rows = c.query(&st, &[&host, &user, &max]).await?;
            Ok(rows
                .iter()
                .map(|r| {
                    let seq: i64 = r.get(0);
                    (seq as u64, r.get(1))
                })
                .collect())
        })
    }

    fn offline_remove(&self, account: AccountKey<'_>, seqs: &[u64]) -> Result<(), StorageError> {
        if seqs.is_empty() {
            return Ok(());
        }
        let (host, user) = owned(account);
        let seqs: Vec<i64> = seqs.iter().map(|&s| super::big(s)).collect();
        self.call(|sh| async move {
            let c = sh.pool.get().await?;
            let st = c
                .prepare_cached(
                    "WITH gone AS (DELETE FROM spool WHERE server_host = $1 AND username = $2 \
                       AND seq = ANY($3::bigint[]) RETURNING 1) \
                     UPDATE rookery_offline_counts SET messages = greatest(messages - (SELECT count(*) FROM gone), 0) \
                     WHERE server_host = $1 AND username = $2",
                )
                .await?;
            c.execute(&st, &[&host, &user, &seqs]).await?;
            Ok(())
        })
    }

    fn offline_count(&self, account: AccountKey<'_>) -> Result<usize, StorageError> {
        let (host, user) = owned(account);
        self.call(|sh| async move {
            let c = sh.pool.get().await?;
            let st = c
                .prepare_cached(
                    "SELECT messages FROM rookery_offline_counts WHERE server_host = $1 AND username = $2",
                )
                .await?;
            Ok(c.query_opt(&st, &[&host, &user])
                .await?
                .map_or(0, |r| r.get::<_, i64>(0).max(0) as usize))
        })
    }

    fn offline_delete_all(&self, account: AccountKey<'_>) -> Result<usize, StorageError> {
        let (host, user) = owned(account);
        self.call(|sh| async move {
            let mut c = sh.pool.get().await?;
            let tx = c.transaction().await?;
            let n = tx
                .execute(
                    "DELETE FROM spool WHERE server_host = $1 AND username = $2",
                    &[&host, &user],
                )
                .await?;
            tx.execute(
                "DELETE FROM rookery_offline_counts WHERE server_host = $1 AND username = $2",
                &[&host, &user],
            )
            .await?;
            tx.commit().await?;
            Ok(n as usize)
        })
    }
}
