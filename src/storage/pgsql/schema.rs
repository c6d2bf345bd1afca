//! The PostgreSQL schema and its versioned migrations.
//!
//! [`MIGRATIONS`] is the schema's whole history, oldest first: version `n`
//! is `MIGRATIONS[n - 1]`, and a released migration is never edited (a
//! change is a new one). The table `rookery_schema` records every version
//! applied. [`prepare`] (the server at start, `rookery ctl sql_migrate`)
//! takes a session advisory lock, so that two servers or tools starting on
//! one database migrate one after the other, then applies each missing
//! version in its own transaction together with its `rookery_schema` row:
//! a migration is applied completely or not at all, and an interrupted run
//! resumes at the first missing version. A database newer than this
//! Rookery is refused (never written by an older version).
//!
//! Version 1 creates the tables ejabberd's `pg.new.sql` also has, with its
//! names, columns and value formats (`users`, `rosterusers`,
//! `rostergroups`, `roster_version`, `spool`, `vcard`, `private_storage`,
//! `muc_room`), `IF NOT EXISTS`, so that it also runs on an existing
//! ejabberd database; Rookery's additions are columns prefixed `rookery_`
//! (SCRAM-SHA-256 secrets, roster item versions, pre-approval) and tables
//! prefixed `rookery_` (roster tombstones, pending requests, offline
//! counters, other module data). Version 2 adds the message archive, laid
//! out for its queries instead of ejabberd's `archive` (which counts rows
//! for every page): primary key (archive, id), an index by peer, a unique
//! index by origin-id, and per-archive and per-peer counters (the
//! archive's `last_id` is the ids' high-water mark across restarts).

use deadpool_postgres::Object;

use super::PgErr;
use crate::storage::StorageError;

/// Key of the advisory lock held while migrating ("rookery" in ASCII).
const LOCK_KEY: i64 = 0x0072_6f6f_6b65_7279;

/// One schema version.
pub struct Migration {
    pub version: i32,
    pub description: &'static str,
    pub sql: &'static str,
}

/// Every schema version, oldest first.
pub const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        description: "accounts, rosters, offline messages and module data (ejabberd's tables where they mean the same)",
        sql: r#"
CREATE TABLE IF NOT EXISTS users (
    username text NOT NULL,
    server_host text NOT NULL,
    "password" text NOT NULL,
    serverkey text NOT NULL DEFAULT '',
    salt text NOT NULL DEFAULT '',
    iterationcount integer NOT NULL DEFAULT 0,
    created_at TIMESTAMP NOT NULL DEFAULT now(),
    PRIMARY KEY (server_host, username)
);
ALTER TABLE users ADD COLUMN IF NOT EXISTS rookery_sha256_storedkey text;
ALTER TABLE users ADD COLUMN IF NOT EXISTS rookery_sha256_serverkey text;
ALTER TABLE users ADD COLUMN IF NOT EXISTS rookery_sha256_salt text;
ALTER TABLE users ADD COLUMN IF NOT EXISTS rookery_sha256_iterations integer;

CREATE TABLE IF NOT EXISTS rosterusers (
    username text NOT NULL,
    server_host text NOT NULL,
    jid text NOT NULL,
    nick text NOT NULL,
    subscription character(1) NOT NULL,
    ask character(1) NOT NULL,
    askmessage text NOT NULL,
    server character(1) NOT NULL,
    subscribe text NOT NULL,
    "type" text,
    created_at TIMESTAMP NOT NULL DEFAULT now()
);
CREATE UNIQUE INDEX IF NOT EXISTS i_rosteru_sh_user_jid ON rosterusers USING btree (server_host, username, jid);
ALTER TABLE rosterusers ADD COLUMN IF NOT EXISTS rookery_ver bigint NOT NULL DEFAULT 0;
ALTER TABLE rosterusers ADD COLUMN IF NOT EXISTS rookery_approved boolean NOT NULL DEFAULT false;

CREATE TABLE IF NOT EXISTS rostergroups (
    username text NOT NULL,
    server_host text NOT NULL,
    jid text NOT NULL,
    grp text NOT NULL
);
CREATE INDEX IF NOT EXISTS i_rosterg_sh_user_jid ON rostergroups USING btree (server_host, username, jid);

CREATE TABLE IF NOT EXISTS roster_version (
    username text NOT NULL,
    server_host text NOT NULL,
    version text NOT NULL,
    PRIMARY KEY (server_host, username)
);
ALTER TABLE roster_version ADD COLUMN IF NOT EXISTS rookery_floor bigint;
CREATE SEQUENCE IF NOT EXISTS rookery_roster_ver;

CREATE TABLE IF NOT EXISTS rookery_roster_tombstones (
    server_host text NOT NULL,
    username text NOT NULL,
    jid text NOT NULL,
    ver bigint NOT NULL,
    PRIMARY KEY (server_host, username, jid)
);

CREATE TABLE IF NOT EXISTS rookery_pending_subscriptions (
    server_host text NOT NULL,
    username text NOT NULL,
    jid text COLLATE "C" NOT NULL,
    xml text NOT NULL,
    PRIMARY KEY (server_host, username, jid)
);

CREATE TABLE IF NOT EXISTS spool (
    username text NOT NULL,
    server_host text NOT NULL,
    xml text NOT NULL,
    seq BIGSERIAL,
    created_at TIMESTAMP NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS i_spool_sh_username ON spool USING btree (server_host, username);
CREATE INDEX IF NOT EXISTS rookery_spool_order ON spool USING btree (server_host, username, seq);

CREATE TABLE IF NOT EXISTS rookery_offline_counts (
    server_host text NOT NULL,
    username text NOT NULL,
    messages bigint NOT NULL,
    PRIMARY KEY (server_host, username)
);
-- Messages an ejabberd left in spool are counted once.
INSERT INTO rookery_offline_counts (server_host, username, messages)
    SELECT server_host, username, count(*) FROM spool GROUP BY server_host, username
    ON CONFLICT DO NOTHING;

CREATE TABLE IF NOT EXISTS vcard (
    username text NOT NULL,
    server_host text NOT NULL,
    vcard text NOT NULL,
    created_at TIMESTAMP NOT NULL DEFAULT now(),
    PRIMARY KEY (server_host, username)
);

CREATE TABLE IF NOT EXISTS private_storage (
    username text NOT NULL,
    server_host text NOT NULL,
    namespace text NOT NULL,
    data text NOT NULL,
    created_at TIMESTAMP NOT NULL DEFAULT now(),
    PRIMARY KEY (server_host, username, namespace)
);

CREATE TABLE IF NOT EXISTS muc_room (
    name text NOT NULL,
    host text NOT NULL,
    server_host text NOT NULL,
    opts text NOT NULL,
    created_at TIMESTAMP NOT NULL DEFAULT now()
);
CREATE UNIQUE INDEX IF NOT EXISTS i_muc_room_name_host ON muc_room USING btree (name, host);

CREATE TABLE IF NOT EXISTS rookery_module_data (
    server_host text NOT NULL,
    username text NOT NULL,
    module text NOT NULL,
    key text COLLATE "C" NOT NULL,
    value bytea NOT NULL,
    PRIMARY KEY (server_host, username, module, key)
);
"#,
    },
    Migration {
        version: 2,
        description: "the message archive: primary key (archive, id), by peer, by origin-id, counters",
        sql: r#"
CREATE TABLE rookery_archives (
    archive serial PRIMARY KEY,
    owner text NOT NULL UNIQUE,
    messages bigint NOT NULL DEFAULT 0,
    last_id bigint NOT NULL DEFAULT 0
);
CREATE TABLE rookery_archive_messages (
    archive integer NOT NULL,
    id bigint NOT NULL,
    peer text NOT NULL,
    outgoing boolean NOT NULL,
    origin_id text,
    xml text NOT NULL,
    PRIMARY KEY (archive, id)
);
CREATE INDEX rookery_archive_by_peer ON rookery_archive_messages (archive, peer, id);
CREATE UNIQUE INDEX rookery_archive_by_origin ON rookery_archive_messages (archive, peer, origin_id)
    WHERE origin_id IS NOT NULL;
CREATE TABLE rookery_archive_peers (
    archive integer NOT NULL,
    peer text NOT NULL,
    messages bigint NOT NULL,
    PRIMARY KEY (archive, peer)
);
"#,
    },
];

/// The newest version this Rookery knows.
pub fn latest() -> i32 {
    MIGRATIONS.last().map_or(0, |m| m.version)
}

/// The version the database is at (0: never migrated).
pub(crate) async fn current(client: &Object) -> Result<i32, PgErr> {
    let exists: bool = client
        .query_one("SELECT to_regclass('rookery_schema') IS NOT NULL", &[])
        .await?
        .get(0);
    if !exists {
        return Ok(0);
    }
    let row = client
        .query_one("SELECT coalesce(max(version), 0) FROM rookery_schema", &[])
        .await?;
    Ok(row.get(0))
}

/// Bring the database to [`latest`] (or, with `migrate: false`, check that
/// it is there); how many versions were applied. Also checks that the
/// database stores UTF-8 (keys are compared bytewise as UTF-8).
pub(crate) async fn prepare(client: &mut Object, migrate: bool) -> Result<usize, PgErr> {
    migrate_to(client, latest(), migrate).await
}

/// [`prepare`] up to version `target` (tests start from older versions).
pub(crate) async fn migrate_to(
    client: &mut Object,
    target: i32,
    migrate: bool,
) -> Result<usize, PgErr> {
    let encoding: String = client.query_one("SHOW server_encoding", &[]).await?.get(0);
    if encoding != "UTF8" {
        return Err(PgErr::Store(StorageError::Io(format!(
            "the database's encoding is {encoding}; Rookery needs UTF8 (CREATE DATABASE ... ENCODING 'UTF8')"
        ))));
    }
    // `IF NOT EXISTS` notices on every start are not news.
    client
        .batch_execute("SET client_min_messages = warning")
        .await?;
    client
        .execute("SELECT pg_advisory_lock($1)", &[&LOCK_KEY])
        .await?;
    let r = apply(client, target, migrate).await;
    // Released even when a migration failed (the session may live on in
    // the pool).
    let unlock = client
        .execute("SELECT pg_advisory_unlock($1)", &[&LOCK_KEY])
        .await;
    let n = r?;
    unlock?;
    Ok(n)
}

async fn apply(client: &mut Object, target: i32, migrate: bool) -> Result<usize, PgErr> {
    client
        .batch_execute(
            "CREATE TABLE IF NOT EXISTS rookery_schema (
                version integer PRIMARY KEY,
                description text NOT NULL,
                applied_at timestamp NOT NULL DEFAULT now())",
        )
        .await?;
    let at = current(client).await?;
    if at > latest() {
        return Err(PgErr::Store(StorageError::Io(format!(
            "the database schema is at version {at}, newer than this Rookery's {}: upgrade Rookery",
            latest()
        ))));
    }
    if at >= target {
        return Ok(0);
    }
    if !migrate {
        return Err(PgErr::Store(StorageError::Io(format!(
            "the database schema is at version {at}; this Rookery needs {target} (run `rookery ctl sql_migrate`)"
        ))));
    }
    let mut applied = 0;
    for m in MIGRATIONS
        .iter()
        .filter(|m| m.version > at && m.version <= target)
    {
        let tx = client.transaction().await?;
        tx.batch_execute(m.sql).await.map_err(|e| {
            PgErr::Store(StorageError::Io(format!(
                "schema migration {} ({}) failed: {}",
                m.version,
                m.description,
                super::db_text(&e)
            )))
        })?;
        tx.execute(
            "INSERT INTO rookery_schema (version, description) VALUES ($1, $2)",
            &[&m.version, &m.description],
        )
        .await?;
        tx.commit().await?;
        tracing::info!(
            "database schema migrated to version {}: {}",
            m.version,
            m.description
        );
        applied += 1;
    }
    Ok(applied)
}
