//! Rosters (RFC 6121 §2) with versions (§2.6), and pending inbound
//! subscription requests (§3.1.3), in PostgreSQL.
//!
//! Items are ejabberd's `rosterusers` rows (one per contact) with their
//! groups in `rostergroups`, in ejabberd's value formats: `subscription`
//! is `B`/`T`/`F`/`N` (both, to, from, none), `ask` is `O` (pending out),
//! `I` (pending in), `B` (both) or `N`; `nick` is the name ('' for none).
//! Rookery adds `rookery_ver` (the version at which the item last changed)
//! and `rookery_approved` (pre-approval, §3.4). The roster's version is
//! ejabberd's `roster_version.version` (decimal text) plus
//! `rookery_floor`, the oldest version a diff can be computed from; a row
//! ejabberd wrote (no floor) is read as "current = the newest item, no
//! diffs", so its clients get the full roster once. Removals leave a
//! tombstone in `rookery_roster_tombstones` (at most [`MAX_TOMBSTONES`] per
//! user; pruning raises the floor).
//!
//! Versions come from the sequence `rookery_roster_ver`, drawn after the
//! roster's `roster_version` row is locked (`FOR UPDATE`): versions of one
//! roster strictly increase in commit order, and a deleted and re-created
//! account's versions are above any its old clients hold, as in sled.
//! Every change is one transaction (item, groups, tombstone, version).
//!
//! Pending requests are `rookery_pending_subscriptions` rows: one per
//! requesting JID, the stanza as XML text.

use std::collections::HashMap;

use deadpool_postgres::GenericClient;

use super::{owned, PgErr, PgStorage};
use crate::storage::{
    AccountKey, RosterChange, RosterItem, RosterStore, StorageError, Subscription,
};

/// Tombstones kept per user before the oldest are pruned (as in sled).
pub(super) const MAX_TOMBSTONES: i64 = 1000;

pub(super) fn sub_code(s: &Subscription) -> &'static str {
    match s {
        Subscription::Both => "B",
        Subscription::To => "T",
        Subscription::From => "F",
        Subscription::None => "N",
    }
}

pub(super) fn sub_of(code: &str) -> Subscription {
    match code.trim() {
        "B" => Subscription::Both,
        "T" => Subscription::To,
        "F" => Subscription::From,
        _ => Subscription::None,
    }
}

pub(super) fn ask_code(item: &RosterItem) -> &'static str {
    match (item.ask, item.pending_in) {
        (true, true) => "B",
        (true, false) => "O",
        (false, true) => "I",
        (false, false) => "N",
    }
}

/// (ask, pending_in) of ejabberd's ask code (`S`ubscribe counts as out).
pub(super) fn ask_of(code: &str) -> (bool, bool) {
    match code.trim() {
        "B" => (true, true),
        "O" | "S" => (true, false),
        "I" => (false, true),
        _ => (false, false),
    }
}

/// The roster's version record: (current version, oldest diffable).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Meta {
    ver: u64,
    floor: u64,
}

const ITEM_COLUMNS: &str = "jid, nick, subscription, ask, rookery_ver, rookery_approved";

fn item_of(row: &tokio_postgres::Row, groups: Vec<String>) -> RosterItem {
    let nick: String = row.get(1);
    let sub: String = row.get(2);
    let ask: String = row.get(3);
    let ver: i64 = row.get(4);
    let (ask, pending_in) = ask_of(&ask);
    RosterItem {
        jid: row.get(0),
        name: (!nick.is_empty()).then_some(nick),
        groups,
        subscription: sub_of(&sub),
        ask,
        approved: row.get(5),
        pending_in,
        ver: ver.max(0) as u64,
    }
}

/// Every item of a roster with its groups, sorted by contact JID.
pub(super) async fn items(
    c: &impl GenericClient,
    host: &str,
    user: &str,
    only: Option<&str>,
) -> Result<Vec<RosterItem>, PgErr> {
    let (rows, group_rows) = match only {
        None => (
            c.query(
                &format!(
                    "SELECT {ITEM_COLUMNS} FROM rosterusers WHERE server_host = $1 AND username = $2 \
                     ORDER BY jid COLLATE \"C\""
                ),
                &[&host, &user],
            )
            .await?,
            c.query(
                "SELECT jid, grp FROM rostergroups WHERE server_host = $1 AND username = $2 ORDER BY grp",
                &[&host, &user],
            )
            .await?,
        ),
        Some(jid) => (
            c.query(
                &format!(
                    "SELECT {ITEM_COLUMNS} FROM rosterusers WHERE server_host = $1 AND username = $2 AND jid = $3"
                ),
                &[&host, &user, &jid],
            )
            .await?,
            c.query(
                "SELECT jid, grp FROM rostergroups WHERE server_host = $1 AND username = $2 AND jid = $3 ORDER BY grp",
                &[&host, &user, &jid],
            )
            .await?,
        ),
    };
    let mut groups: HashMap<String, Vec<String>> = HashMap::new();
    for g in group_rows {
        groups.entry(g.get(0)).or_default().push(g.get(1));
    }
    Ok(rows
        .iter()
        .map(|r| {
            let jid: String = r.get(0);
            let g = groups.remove(&jid).unwrap_or_default();
            item_of(r, g)
        })
        .collect())
}

/// The version record, `None` for a roster never written. A row without
/// a floor (ejabberd's) reads as current = newest item or tombstone,
/// nothing older diffable.
async fn meta(
    c: &impl GenericClient,
    host: &str,
    user: &str,
    lock: bool,
) -> Result<Option<Meta>, PgErr> {
    let sql = if lock {
        "SELECT version, rookery_floor FROM roster_version WHERE server_host = $1 AND username = $2 FOR UPDATE"
    } else {
        "SELECT version, rookery_floor FROM roster_version WHERE server_host = $1 AND username = $2"
    };
    let Some(row) = c.query_opt(sql, &[&host, &user]).await? else {
        return Ok(None);
    };
    let version: String = row.get(0);
    let floor: Option<i64> = row.get(1);
    match (version.trim().parse::<u64>(), floor) {
        (Ok(ver), Some(floor)) => Ok(Some(Meta {
            ver,
            floor: floor.max(0) as u64,
        })),
        _ => {
            let newest: i64 = c
                .query_one(
                    "SELECT greatest((SELECT max(rookery_ver) FROM rosterusers WHERE server_host = $1 AND username = $2), \
                     (SELECT max(ver) FROM rookery_roster_tombstones WHERE server_host = $1 AND username = $2), 0)",
                    &[&host, &user],
                )
                .await?
                .get(0);
            let ver = newest.max(0) as u64;
            Ok(Some(Meta { ver, floor: ver }))
        }
    }
}

/// Lock the roster (creating its version row) and draw its next version.
async fn next_version(
    tx: &deadpool_postgres::Transaction<'_>,
    host: &str,
    user: &str,
) -> Result<(Option<Meta>, u64), PgErr> {
    tx.execute(
        "INSERT INTO roster_version (username, server_host, version) VALUES ($2, $1, '') ON CONFLICT DO NOTHING",
        &[&host, &user],
    )
    .await?;
    let old = meta(tx, host, user, true).await?;
    // A row just created has version '' and no floor: `meta` reads it as
    // the newest item (0 for a new roster), so it counts as never written.
    let old = old.filter(|m| m.ver > 0);
    let mut ver: i64 = tx
        .query_one("SELECT nextval('rookery_roster_ver')", &[])
        .await?
        .get(0);
    if let Some(m) = old {
        if ver as u64 <= m.ver {
            // Versions copied in from elsewhere ran ahead of the sequence.
            ver = tx
                .query_one(
                    "SELECT setval('rookery_roster_ver', $1)",
                    &[&super::big(m.ver + 1)],
                )
                .await?
                .get(0);
        }
    }
    Ok((old, ver as u64))
}

/// Write the roster's new version `ver` (the floor stays, or is `ver` for
/// a roster written for the first time).
async fn write_meta(
    tx: &deadpool_postgres::Transaction<'_>,
    host: &str,
    user: &str,
    old: Option<Meta>,
    ver: u64,
) -> Result<(), PgErr> {
    let floor = old.map_or(ver, |m| m.floor);
    tx.execute(
        "UPDATE roster_version SET version = $3, rookery_floor = $4 WHERE server_host = $1 AND username = $2",
        &[&host, &user, &ver.to_string(), &super::big(floor)],
    )
    .await?;
    Ok(())
}

/// Insert or replace one item (and its groups) as it is, `ver` included.
pub(super) async fn put_item(
    c: &impl GenericClient,
    host: &str,
    user: &str,
    item: &RosterItem,
) -> Result<(), PgErr> {
    c.execute(
        "INSERT INTO rosterusers (username, server_host, jid, nick, subscription, ask, askmessage, server, subscribe, \"type\", rookery_ver, rookery_approved) \
         VALUES ($2, $1, $3, $4, $5, $6, '', 'N', '', 'item', $7, $8) \
         ON CONFLICT (server_host, username, jid) DO UPDATE SET nick = EXCLUDED.nick, \
         subscription = EXCLUDED.subscription, ask = EXCLUDED.ask, rookery_ver = EXCLUDED.rookery_ver, \
         rookery_approved = EXCLUDED.rookery_approved",
        &[
            &host,
            &user,
            &item.jid,
            &item.name.clone().unwrap_or_default(),
            &sub_code(&item.subscription),
            &ask_code(item),
            &super::big(item.ver),
            &item.approved,
        ],
    )
    .await?;
    c.execute(
        "DELETE FROM rostergroups WHERE server_host = $1 AND username = $2 AND jid = $3",
        &[&host, &user, &item.jid],
    )
    .await?;
    for g in &item.groups {
        c.execute(
            "INSERT INTO rostergroups (username, server_host, jid, grp) VALUES ($2, $1, $3, $4)",
            &[&host, &user, &item.jid, g],
        )
        .await?;
    }
    Ok(())
}

impl RosterStore for PgStorage {
    fn roster_get(&self, account: AccountKey<'_>) -> Result<Vec<RosterItem>, StorageError> {
        let (host, user) = owned(account);
        self.call(|sh| async move {
            let c = sh.pool.get().await?;
            items(&c, &host, &user, None).await
        })
    }

    fn roster_item(
        &self,
        account: AccountKey<'_>,
        contact: &str,
    ) -> Result<Option<RosterItem>, StorageError> {
        let (host, user) = owned(account);
        let contact = contact.to_string();
        self.call(|sh| async move {
            let c = sh.pool.get().await?;
            Ok(items(&c, &host, &user, Some(&contact)).await?.pop())
        })
    }

    fn roster_put(
        &self,
        account: AccountKey<'_>,
        item: RosterItem,
    ) -> Result<RosterItem, StorageError> {
        let (host, user) = owned(account);
        self.call(|sh| async move {
            let mut c = sh.pool.get().await?;
            let tx = c.transaction().await?;
            let (old, ver) = next_version(&tx, &host, &user).await?;
            let mut stored = item;
            stored.ver = ver;
            put_item(&tx, &host, &user, &stored).await?;
            tx.execute(
                "DELETE FROM rookery_roster_tombstones WHERE server_host = $1 AND username = $2 AND jid = $3",
                &[&host, &user, &stored.jid],
            )
            .await?;
            write_meta(&tx, &host, &user, old, ver).await?;
            tx.commit().await?;
            Ok(stored)
        })
    }

    fn roster_remove(
        &self,
        account: AccountKey<'_>,
        contact: &str,
    ) -> Result<Option<u64>, StorageError> {
        let (host, user) = owned(account);
        let contact = contact.to_string();
        self.call(|sh| async move {
            let mut c = sh.pool.get().await?;
            let tx = c.transaction().await?;
            let (old, ver) = next_version(&tx, &host, &user).await?;
            let gone = tx
                .execute(
                    "DELETE FROM rosterusers WHERE server_host = $1 AND username = $2 AND jid = $3",
                    &[&host, &user, &contact],
                )
                .await?;
            if gone == 0 {
                tx.rollback().await?;
                return Ok(None);
            }
            tx.execute(
                "DELETE FROM rostergroups WHERE server_host = $1 AND username = $2 AND jid = $3",
                &[&host, &user, &contact],
            )
            .await?;
            tx.execute(
                "INSERT INTO rookery_roster_tombstones (server_host, username, jid, ver) VALUES ($1, $2, $3, $4) \
                 ON CONFLICT (server_host, username, jid) DO UPDATE SET ver = EXCLUDED.ver",
                &[&host, &user, &contact, &super::big(ver)],
            )
            .await?;
            write_meta(&tx, &host, &user, old, ver).await?;
            // Prune the oldest tombstones past the limit; the floor rises
            // past the newest one dropped.
            let pruned: Option<i64> = tx
                .query_one(
                    "WITH old AS (SELECT jid FROM rookery_roster_tombstones WHERE server_host = $1 AND username = $2 \
                     ORDER BY ver DESC OFFSET $3), \
                     gone AS (DELETE FROM rookery_roster_tombstones t USING old \
                     WHERE t.server_host = $1 AND t.username = $2 AND t.jid = old.jid RETURNING t.ver) \
                     SELECT max(ver) FROM gone",
                    &[&host, &user, &MAX_TOMBSTONES],
                )
                .await?
                .get(0);
            if let Some(highest) = pruned {
                tx.execute(
                    "UPDATE roster_version SET rookery_floor = greatest(rookery_floor, $3) \
                     WHERE server_host = $1 AND username = $2",
                    &[&host, &user, &highest],
                )
                .await?;
            }
            tx.commit().await?;
            Ok(Some(ver))
        })
    }

    fn roster_version(&self, account: AccountKey<'_>) -> Result<u64, StorageError> {
        let (host, user) = owned(account);
        self.call(|sh| async move {
            let c = sh.pool.get().await?;
            Ok(meta(&c, &host, &user, false).await?.map_or(0, |m| m.ver))
        })
    }

    fn roster_changes_since(
        &self,
        account: AccountKey<'_>,
        ver: u64,
    ) -> Result<Option<Vec<RosterChange>>, StorageError> {
        let (host, user) = owned(account);
        self.call(move |sh| async move {
            let mut c = sh.pool.get().await?;
            // One snapshot for the version, the items and the tombstones.
            let tx = c
                .build_transaction()
                .isolation_level(tokio_postgres::IsolationLevel::RepeatableRead)
                .read_only(true)
                .start()
                .await?;
            let Some(m) = meta(&tx, &host, &user, false).await? else {
                return Ok(if ver == 0 { Some(Vec::new()) } else { None });
            };
            if ver > m.ver || ver < m.floor {
                return Ok(None);
            }
            if ver == m.ver {
                return Ok(Some(Vec::new()));
            }
            let mut changes: Vec<RosterChange> = items(&tx, &host, &user, None)
                .await?
                .into_iter()
                .filter(|i| i.ver > ver)
                .map(RosterChange::Upsert)
                .collect();
            for r in tx
                .query(
                    "SELECT jid, ver FROM rookery_roster_tombstones WHERE server_host = $1 AND username = $2 AND ver > $3",
                    &[&host, &user, &super::big(ver)],
                )
                .await?
            {
                let v: i64 = r.get(1);
                changes.push(RosterChange::Removed {
                    jid: r.get(0),
                    ver: v as u64,
                });
            }
            changes.sort_by_key(RosterChange::ver);
            Ok(Some(changes))
        })
    }

    fn pending_subscription_add(
        &self,
        account: AccountKey<'_>,
        from_bare: &str,
        stanza_xml: &str,
    ) -> Result<(), StorageError> {
        let (host, user) = owned(account);
        let (from, xml) = (from_bare.to_string(), stanza_xml.to_string());
        self.call(|sh| async move {
            let c = sh.pool.get().await?;
            c.execute(
                "INSERT INTO rookery_pending_subscriptions (server_host, username, jid, xml) VALUES ($1, $2, $3, $4) \
                 ON CONFLICT (server_host, username, jid) DO UPDATE SET xml = EXCLUDED.xml",
                &[&host, &user, &from, &xml],
            )
            .await?;
            Ok(())
        })
    }

    fn pending_subscription_remove(
        &self,
        account: AccountKey<'_>,
        from_bare: &str,
    ) -> Result<bool, StorageError> {
        let (host, user) = owned(account);
        let from = from_bare.to_string();
        self.call(|sh| async move {
            let c = sh.pool.get().await?;
            let n = c
                .execute(
                    "DELETE FROM rookery_pending_subscriptions WHERE server_host = $1 AND username = $2 AND jid = $3",
                    &[&host, &user, &from],
                )
                .await?;
            Ok(n > 0)
        })
    }

    fn pending_subscriptions(
        &self,
        account: AccountKey<'_>,
    ) -> Result<Vec<(String, String)>, StorageError> {
        let (host, user) = owned(account);
        self.call(|sh| async move {
            let c = sh.pool.get().await?;
            let rows = c
                .query(
                    "SELECT jid, xml FROM rookery_pending_subscriptions WHERE server_host = $1 AND username = $2 ORDER BY jid",
                    &[&host, &user],
                )
                .await?;
            Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
        })
    }
}
