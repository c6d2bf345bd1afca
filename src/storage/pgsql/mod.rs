//! The PostgreSQL engine (`default_db: sql`): every storage trait over one
//! connection pool, one file per trait:
//!
//! | file            | trait            | tables                                                        |
//! |-----------------|------------------|---------------------------------------------------------------|
//! | `accounts.rs`   | `AccountStore`   | `users` (and `delete_user`'s cascade over every table)        |
//! | `roster.rs`     | `RosterStore`    | `rosterusers`, `rostergroups`, `roster_version`, `rookery_roster_tombstones`, `rookery_pending_subscriptions` |
//! | `offline.rs`    | `OfflineStore`   | `spool`, `rookery_offline_counts`                             |
//! | `modules.rs`    | `ModuleStore`    | `vcard`, `private_storage`, `muc_room`, `rookery_module_data`  |
//! | `archive.rs`    | `ArchiveAccess`  | `rookery_archives`, `rookery_archive_messages`, `rookery_archive_peers` |
//! | `maintenance.rs`| `Maintenance`, `transfer::Records` | all of them (backup, restore, engine moves)  |
//! | `schema.rs`     | —                | the versioned migrations (`rookery_schema`)                   |
//!
//! Tables with a meaning ejabberd's PostgreSQL schema (`pg.new.sql`) also
//! has keep its names, columns and value formats, so an ejabberd database
//! can be read as it is (see `schema.rs` for the few columns Rookery adds).
//!
//! The storage traits are synchronous (sled answers from memory); the
//! PostgreSQL client is asynchronous. [`PgStorage::call`] bridges them: the
//! operation runs as a task on this engine's own small runtime (two
//! threads, `rookery-pg`), and the caller's thread waits for it, handing
//! its runtime worker to others first (`block_in_place`), so a slow
//! database never takes the server's workers away. Invariants of `call`:
//! - it returns within `sql_query_timeout` (connection wait included):
//!   after that the caller gets [`StorageError::Unavailable`] and the task
//!   is dropped (a statement then in flight may still commit: the caller
//!   was told it failed, as with any lost answer);
//! - at most [`MAX_WAITING`] operations wait at once; the next one is
//!   refused at once with `Unavailable` (a bounded queue, never a pile-up
//!   of blocked threads);
//! - the first failure to reach the database is logged as an error, and
//!   its return once, with how long it was gone ([`Health`]).
//!
//! Durability: every write commits before it returns (PostgreSQL's
//! `synchronous_commit`, on by default, makes a commit durable), so
//! `Maintenance::flush` has nothing to do; the archive batches its writes
//! (`archive.rs`) within the 1 s bound, as the embedded engine does.

mod accounts;
mod archive;
mod maintenance;
mod modules;
mod offline;
mod options;
#[cfg(test)]
#[path = "../../../tests/common/ports.rs"]
mod ports;
mod roster;
pub mod schema;
#[cfg(test)]
#[path = "../../../tests/common/pg.rs"]
pub(crate) mod testpg;
#[cfg(test)]
mod tests;

use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};

use crate::storage::StorageError;
pub use options::SqlOptions;

/// Operations that may wait for the database at once before new ones are
/// refused.
pub const MAX_WAITING: usize = 512;

/// Why an operation inside the engine failed (turned into a
/// [`StorageError`] by [`PgStorage::call`]).
#[derive(Debug)]
pub(crate) enum PgErr {
    Pool(deadpool_postgres::PoolError),
    Db(tokio_postgres::Error),
    Store(StorageError),
}

impl From<deadpool_postgres::PoolError> for PgErr {
    fn from(e: deadpool_postgres::PoolError) -> Self {
        PgErr::Pool(e)
    }
}

impl From<tokio_postgres::Error> for PgErr {
    fn from(e: tokio_postgres::Error) -> Self {
        PgErr::Db(e)
    }
}

impl From<StorageError> for PgErr {
    fn from(e: StorageError) -> Self {
        PgErr::Store(e)
    }
}

/// Whether a client error means the server is gone or unreachable (as
/// opposed to a statement the server refused).
fn is_connection_error(e: &tokio_postgres::Error) -> bool {
    if e.is_closed() {
        return true;
    }
    match e.code() {
        // Class 08 (connection exception), 57P01-57P03 (admin shutdown,
        // crash shutdown, cannot connect now), 53 (insufficient resources).
        Some(code) => {
            let c = code.code();
            c.starts_with("08") || c.starts_with("57P") || c.starts_with("53")
        }
        // No SQLSTATE: an I/O or protocol failure of the connection itself.
        None => true,
    }
}

impl PgErr {
    /// The storage error the caller sees.
    pub(crate) fn into_storage(self) -> StorageError {
        match self {
            PgErr::Pool(deadpool_postgres::PoolError::Backend(e)) => {
                if is_connection_error(&e) {
                    StorageError::Unavailable(e.to_string())
                } else {
                    StorageError::Io(e.to_string())
                }
            }
            PgErr::Pool(deadpool_postgres::PoolError::Timeout(t)) => StorageError::Unavailable(
                format!("no database connection became free in time ({t:?})"),
            ),
            PgErr::Pool(e) => StorageError::Unavailable(e.to_string()),
            PgErr::Db(e) if is_connection_error(&e) => StorageError::Unavailable(db_text(&e)),
            PgErr::Db(e) => {
                // Disk full on the database server: 53100.
                if e.code().map(|c| c.code()) == Some("53100") {
                    StorageError::Full(db_text(&e))
                } else {
                    StorageError::Io(db_text(&e))
                }
            }
            PgErr::Store(e) => e,
        }
    }
}

/// A client error with the server's own message when there is one.
fn db_text(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => format!("{}: {}", db.code().code(), db.message()),
        None => e.to_string(),
    }
}

/// Whether the database answers, for logging its loss and return once.
#[derive(Default)]
pub(crate) struct Health {
    down_since: Mutex<Option<Instant>>,
    down: AtomicBool,
    /// Operations refused or failed for unavailability (for tests and
    /// `rookery ctl status`).
    pub failures: std::sync::atomic::AtomicU64,
}

impl Health {
    pub(crate) fn failed(&self, e: &StorageError) {
        if !matches!(e, StorageError::Unavailable(_)) {
            return;
        }
        self.failures.fetch_add(1, Ordering::Relaxed);
        if !self.down.swap(true, Ordering::AcqRel) {
            *self.down_since.lock().unwrap_or_else(|p| p.into_inner()) = Some(Instant::now());
            tracing::error!(
                "PostgreSQL is unavailable: {e}; senders get resource-constraint until it answers again"
            );
        }
    }

    pub(crate) fn succeeded(&self) {
        if self.down.load(Ordering::Acquire) && self.down.swap(false, Ordering::AcqRel) {
            let since = self
                .down_since
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .take();
            let gone = since.map_or(0.0, |t| t.elapsed().as_secs_f64());
            tracing::warn!("PostgreSQL answers again after {gone:.1} s");
        }
    }
}

/// Everything an operation task needs (cheap to clone into it).
#[derive(Clone)]
pub(crate) struct Shared {
    pub pool: Pool,
    pub health: Arc<Health>,
    pub query_timeout: Duration,
}

/// Runs operations on the engine's runtime with the bounds of the module
/// header (shared by the engine and its archive).
#[derive(Clone)]
pub(crate) struct Bridge {
    pub handle: tokio::runtime::Handle,
    pub shared: Shared,
    waiting: Arc<AtomicUsize>,
}

impl Bridge {
    /// Run one operation on the engine's runtime and wait for it.
    pub(crate) fn call<T, F, Fut>(&self, op: F) -> Result<T, StorageError>
    where
        T: Send + 'static,
        F: FnOnce(Shared) -> Fut,
        Fut: Future<Output = Result<T, PgErr>> + Send + 'static,
    {
        if self.waiting.fetch_add(1, Ordering::AcqRel) >= MAX_WAITING {
            self.waiting.fetch_sub(1, Ordering::AcqRel);
            let e = StorageError::Unavailable(format!(
                "{MAX_WAITING} database operations are already waiting"
            ));
            self.shared.health.failed(&e);
            return Err(e);
        }
        let _w = Waiting(self.waiting.clone());
        let fut = op(self.shared.clone());
        let r = wait_on(&self.handle, self.shared.query_timeout, fut);
        match &r {
            Ok(_) => self.shared.health.succeeded(),
            Err(e) => self.shared.health.failed(e),
        }
        r
    }
}

/// The PostgreSQL engine.
pub struct PgStorage {
    /// The engine's own runtime; taken (and shut down without blocking) on drop.
    rt: Option<tokio::runtime::Runtime>,
    pub(crate) bridge: Bridge,
    pub(crate) archive: Arc<archive::PgArchive>,
    describe: String,
}

impl std::fmt::Debug for PgStorage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgStorage")
            .field("db", &self.describe)
            .finish_non_exhaustive()
    }
}

impl Drop for PgStorage {
    fn drop(&mut self) {
        // Archived messages still queued are written first (bounded).
        self.archive.close_now();
        if let Some(rt) = self.rt.take() {
            rt.shutdown_background();
        }
    }
}

/// Decrements the waiting count when an operation ends, however it ends.
struct Waiting(Arc<AtomicUsize>);

impl Drop for Waiting {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Run `wait` on this thread, letting the tokio runtime move its other
/// tasks elsewhere first when this is one of its worker threads.
fn blocking<T>(wait: impl FnOnce() -> T) -> T {
    match tokio::runtime::Handle::try_current() {
        Ok(h) if h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
            tokio::task::block_in_place(wait)
        }
        _ => wait(),
    }
}

/// The client configuration for `o`.
fn pg_config(o: &SqlOptions) -> tokio_postgres::Config {
    let mut c = tokio_postgres::Config::new();
    c.host(&o.server)
        .port(o.port)
        .dbname(&o.database)
        .user(&o.username)
        .application_name("rookery")
        .connect_timeout(o.connect_timeout)
        .keepalives(true)
        .keepalives_idle(Duration::from_secs(30));
    if !o.password.is_empty() {
        c.password(&o.password);
    }
    c.ssl_mode(if o.ssl {
        tokio_postgres::config::SslMode::Require
    } else {
        tokio_postgres::config::SslMode::Disable
    });
    c
}

/// rustls with the system's root certificates, for `sql_ssl: true`.
fn tls_connector() -> Result<tokio_postgres_rustls::MakeRustlsConnect, StorageError> {
    let mut roots = rustls::RootCertStore::empty();
    let found = rustls_native_certs::load_native_certs();
    for cert in found.certs {
        let _ = roots.add(cert);
    }
    if roots.is_empty() {
        return Err(StorageError::Io(
            "sql_ssl: no system root certificates found to check the database server with".into(),
        ));
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| StorageError::Io(format!("sql_ssl: {e}")))?
    .with_root_certificates(roots)
    .with_no_client_auth();
    Ok(tokio_postgres_rustls::MakeRustlsConnect::new(config))
}

impl PgStorage {
    /// Connect to the database `o` names, bring its schema to this
    /// version (`schema.rs`), and start the archive writer. Fails with a
    /// message naming the database when it cannot be reached.
    pub fn open(o: &SqlOptions) -> Result<PgStorage, StorageError> {
        PgStorage::open_with(o, true)
    }

    /// [`PgStorage::open`]; `migrate: false` refuses a schema that is not
    /// current instead of migrating it (`rookery ctl sql_migrate status`).
    pub fn open_with(o: &SqlOptions, migrate: bool) -> Result<PgStorage, StorageError> {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("rookery-pg")
            .enable_all()
            .build()
            .map_err(|e| StorageError::Io(format!("cannot start the database runtime: {e}")))?;
        let handle = rt.handle().clone();
        let mgr_config = ManagerConfig {
            recycling_method: RecyclingMethod::Fast,
        };
        let manager = if o.ssl {
            Manager::from_config(pg_config(o), tls_connector()?, mgr_config)
        } else {
            Manager::from_config(pg_config(o), tokio_postgres::NoTls, mgr_config)
        };
        let pool = Pool::builder(manager)
            .max_size(o.pool_size)
            .runtime(Runtime::Tokio1)
            .wait_timeout(Some(o.query_timeout))
            .create_timeout(Some(o.connect_timeout))
            .recycle_timeout(Some(o.connect_timeout))
            .build()
            .map_err(|e| StorageError::Io(format!("cannot set up the connection pool: {e}")))?;
        let shared = Shared {
            pool,
            health: Arc::new(Health::default()),
            query_timeout: o.query_timeout,
        };
        let describe = o.describe();
        // The schema first: nothing else may touch tables of an older version.
        {
            let sh = shared.clone();
            let d = describe.clone();
            let r = wait_on(&handle, o.query_timeout * 6, async move {
                let mut client = sh.pool.get().await?;
                schema::prepare(&mut client, migrate).await
            })
            .map_err(|e| match e {
                StorageError::Unavailable(why) => {
                    StorageError::Unavailable(format!("cannot reach PostgreSQL at {d}: {why}"))
                }
                other => other,
            })?;
            if r > 0 {
                tracing::info!("PostgreSQL at {describe}: {r} schema migration(s) applied");
            }
        }
        let bridge = Bridge {
            handle,
            shared,
            waiting: Arc::new(AtomicUsize::new(0)),
        };
        let archive = archive::PgArchive::open(bridge.clone())?;
        Ok(PgStorage {
            rt: Some(rt),
            bridge,
            archive,
            describe,
        })
    }

    /// `user@server:port/database`.
    pub fn describe(&self) -> &str {
        &self.describe
    }

    /// Run one operation on the engine's runtime and wait for it (see the
    /// module header for the bounds).
    pub(crate) fn call<T, F, Fut>(&self, op: F) -> Result<T, StorageError>
    where
        T: Send + 'static,
        F: FnOnce(Shared) -> Fut,
        Fut: Future<Output = Result<T, PgErr>> + Send + 'static,
    {
        self.bridge.call(op)
    }

    /// Operations refused or failed because the database was unavailable.
    #[allow(dead_code)] // read by tests and the status command
    pub fn unavailable_count(&self) -> u64 {
        self.bridge.shared.health.failures.load(Ordering::Relaxed)
    }
}

/// Spawn `fut` on `handle` and wait (blocking this thread, see
/// [`blocking`]) at most `limit` for its answer.
fn wait_on<T, Fut>(
    handle: &tokio::runtime::Handle,
    limit: Duration,
    fut: Fut,
) -> Result<T, StorageError>
where
    T: Send + 'static,
    Fut: Future<Output = Result<T, PgErr>> + Send + 'static,
{
    let (tx, rx) = std::sync::mpsc::sync_channel(1);
    let task = handle.spawn(async move {
        let r = match tokio::time::timeout(limit, fut).await {
            Ok(r) => r.map_err(PgErr::into_storage),
            Err(_) => Err(StorageError::Unavailable(format!(
                "the database did not answer within {} ms",
                limit.as_millis()
            ))),
        };
        let _ = tx.send(r);
    });
    let r = blocking(|| rx.recv_timeout(limit + Duration::from_millis(500)));
    match r {
        Ok(r) => r,
        Err(_) => {
            task.abort();
            Err(StorageError::Unavailable(format!(
                "the database did not answer within {} ms",
                limit.as_millis()
            )))
        }
    }
}

/// `(host, user)` of an account key as owned strings, for a task.
pub(crate) fn owned(a: crate::storage::AccountKey<'_>) -> (String, String) {
    (a.host.to_string(), a.user.to_string())
}

/// A `u64` (ids, versions, sequence numbers) as PostgreSQL's `bigint`,
/// saturating at its maximum.
pub(crate) fn big(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}
