//! Modules' data in PostgreSQL: a key/value space per (owner, module).
//!
//! Keys whose meaning ejabberd's schema also has go to its tables, in its
//! value formats (XML text):
//!
//! | module, key              | owner          | table             | columns                         |
//! |--------------------------|----------------|-------------------|---------------------------------|
//! | `mod_vcard`, `vcard`     | an account     | `vcard`           | `vcard`                         |
//! | `mod_private`, any       | an account     | `private_storage` | `namespace` = key, `data`       |
//! | `mod_muc`, `room:NAME`   | a MUC service  | `muc_room`        | `name`, `host`, `opts`          |
//!
//! (`muc_room.opts` holds Rookery's room record, XML, where ejabberd
//! writes an Erlang term list: `rookery ctl import_ejabberd_sql` converts
//! ejabberd's.) Every other key lives in `rookery_module_data`
//! (`key` in the "C" collation, so keys sort bytewise as in sled; the value
//! as `bytea`).
//!
//! Invariants: a key lives in exactly one place, chosen by
//! [`mapped`] from (owner, module, key) alone; scans read both places and
//! merge them in key order, so modules see one ordered key space. Values
//! for mapped tables must be UTF-8 (they are XML); anything else is
//! refused, not stored elsewhere. Every write commits before it returns
//! (the `_lazy` writes too).

use deadpool_postgres::GenericClient;

use super::{PgErr, PgStorage};
use crate::storage::{AccountKey, KeyRange, ModuleStore, StorageError};

/// An ejabberd table a module key maps to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Mapped {
    Vcard,
    Private,
    MucRoom,
}

/// Where `(owner, module, key)` lives: an ejabberd table, or `None` for
/// `rookery_module_data`.
pub(super) fn mapped(owner: AccountKey<'_>, module: &str, key: &str) -> Option<Mapped> {
    match module {
        "mod_vcard" if !owner.user.is_empty() && key == "vcard" => Some(Mapped::Vcard),
        "mod_private" if !owner.user.is_empty() => Some(Mapped::Private),
        "mod_muc" if owner.user.is_empty() && key.starts_with("room:") => Some(Mapped::MucRoom),
        _ => None,
    }
}

/// The table a module's keys may map to, if any.
fn mapped_space(owner: AccountKey<'_>, module: &str) -> Option<Mapped> {
    match module {
        "mod_vcard" if !owner.user.is_empty() => Some(Mapped::Vcard),
        "mod_private" if !owner.user.is_empty() => Some(Mapped::Private),
        "mod_muc" if owner.user.is_empty() => Some(Mapped::MucRoom),
        _ => None,
    }
}

fn text_value(module: &str, key: &str, value: &[u8]) -> Result<String, PgErr> {
    String::from_utf8(value.to_vec()).map_err(|_| {
        PgErr::Store(StorageError::Io(format!(
            "{module} value for {key} is not UTF-8 text"
        )))
    })
}

/// Store one value.
pub(super) async fn put(
    c: &impl GenericClient,
    host: &str,
    user: &str,
    module: &str,
    key: &str,
    value: &[u8],
) -> Result<(), PgErr> {
    let owner = AccountKey::new(host, user);
    match mapped(owner, module, key) {
        Some(Mapped::Vcard) => {
            let v = text_value(module, key, value)?;
            c.execute(
                "INSERT INTO vcard (username, server_host, vcard) VALUES ($2, $1, $3) \
                 ON CONFLICT (server_host, username) DO UPDATE SET vcard = EXCLUDED.vcard",
                &[&host, &user, &v],
            )
            .await?;
        }
        Some(Mapped::Private) => {
            let v = text_value(module, key, value)?;
            c.execute(
                "INSERT INTO private_storage (username, server_host, namespace, data) VALUES ($2, $1, $3, $4) \
                 ON CONFLICT (server_host, username, namespace) DO UPDATE SET data = EXCLUDED.data",
                &[&host, &user, &key, &v],
            )
            .await?;
        }
        Some(Mapped::MucRoom) => {
            let v = text_value(module, key, value)?;
            let name = &key["room:".len()..];
            let server_host = service_host(host);
            c.execute(
                "INSERT INTO muc_room (name, host, server_host, opts) VALUES ($1, $2, $3, $4) \
                 ON CONFLICT (name, host) DO UPDATE SET opts = EXCLUDED.opts",
                &[&name, &host, &server_host, &v],
            )
            .await?;
        }
        None => {
            c.execute(
                "INSERT INTO rookery_module_data (server_host, username, module, key, value) VALUES ($1, $2, $3, $4, $5) \
                 ON CONFLICT (server_host, username, module, key) DO UPDATE SET value = EXCLUDED.value",
                &[&host, &user, &module, &key, &value],
            )
            .await?;
        }
    }
    Ok(())
}

/// ejabberd's `server_host` of a MUC service: the served host it belongs
/// to (`conference.example.org` → `example.org`).
fn service_host(service: &str) -> &str {
    service.split_once('.').map_or(service, |(_, rest)| rest)
}

async fn delete(
    c: &impl GenericClient,
    host: &str,
    user: &str,
    module: &str,
    key: &str,
) -> Result<bool, PgErr> {
    let n = match mapped(AccountKey::new(host, user), module, key) {
        Some(Mapped::Vcard) => {
            c.execute(
                "DELETE FROM vcard WHERE server_host = $1 AND username = $2",
                &[&host, &user],
            )
            .await?
        }
        Some(Mapped::Private) => {
            c.execute(
                "DELETE FROM private_storage WHERE server_host = $1 AND username = $2 AND namespace = $3",
                &[&host, &user, &key],
            )
            .await?
        }
        Some(Mapped::MucRoom) => {
            c.execute(
                "DELETE FROM muc_room WHERE host = $1 AND name = $2",
                &[&host, &&key["room:".len()..]],
            )
            .await?
        }
        None => {
            c.execute(
                "DELETE FROM rookery_module_data WHERE server_host = $1 AND username = $2 AND module = $3 AND key = $4",
                &[&host, &user, &module, &key],
            )
            .await?
        }
    };
    Ok(n > 0)
}

/// Every (key, value) an owner has in a mapped table, keys as the module
/// sees them.
async fn mapped_rows(
    c: &impl GenericClient,
    m: Mapped,
    host: &str,
    user: &str,
) -> Result<Vec<(String, Vec<u8>)>, PgErr> {
    let rows = match m {
        Mapped::Vcard => c
            .query(
                "SELECT 'vcard', vcard FROM vcard WHERE server_host = $1 AND username = $2",
                &[&host, &user],
            )
            .await?,
        Mapped::Private => c
            .query(
                "SELECT namespace, data FROM private_storage WHERE server_host = $1 AND username = $2",
                &[&host, &user],
            )
            .await?,
        Mapped::MucRoom => c
            .query(
                "SELECT 'room:' || name, opts FROM muc_room WHERE host = $1",
                &[&host],
            )
            .await?,
    };
    Ok(rows
        .iter()
        .map(|r| {
            let k: String = r.get(0);
            let v: String = r.get(1);
            (k, v.into_bytes())
        })
        .collect())
}

/// The bounds of a range as optional SQL parameters: (>=, >, <=, <).
fn bounds<'a>(
    range: &KeyRange<'a>,
) -> (
    Option<&'a str>,
    Option<&'a str>,
    Option<&'a str>,
    Option<&'a str>,
) {
    use std::ops::Bound::*;
    let (ge, gt) = match range.lower {
        Included(l) => (Some(l), None),
        Excluded(l) => (None, Some(l)),
        Unbounded => (None, None),
    };
    let (le, lt) = match range.upper {
        Included(u) => (Some(u), None),
        Excluded(u) => (None, Some(u)),
        Unbounded => (None, None),
    };
    (ge, gt, le, lt)
}

/// The generic table's rows of a range, ordered, at most `limit`.
async fn generic_range(
    c: &impl GenericClient,
    owner: (&str, &str),
    module: &str,
    range: &KeyRange<'_>,
    reverse: bool,
    limit: usize,
) -> Result<Vec<(String, Vec<u8>)>, PgErr> {
    let (ge, gt, le, lt) = bounds(range);
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    let sql = format!(
        "SELECT key, value FROM rookery_module_data WHERE server_host = $1 AND username = $2 AND module = $3 \
         AND key >= $4 AND starts_with(key, $4) \
         AND ($5::text IS NULL OR key >= $5) AND ($6::text IS NULL OR key > $6) \
         AND ($7::text IS NULL OR key <= $7) AND ($8::text IS NULL OR key < $8) \
         ORDER BY key {} LIMIT $9",
        if reverse { "DESC" } else { "ASC" }
    );
    let rows = c
        .query(
            &sql,
            &[
                &owner.0,
                &owner.1,
                &module,
                &range.prefix,
                &ge,
                &gt,
                &le,
                &lt,
                &limit,
            ],
        )
        .await?;
    Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
}

/// A range of one module's keys from every place, merged in key order.
async fn scan_range(
    c: &impl GenericClient,
    host: &str,
    user: &str,
    module: &str,
    range: &KeyRange<'_>,
    reverse: bool,
    limit: usize,
) -> Result<Vec<(String, Vec<u8>)>, PgErr> {
    let mut rows = generic_range(c, (host, user), module, range, reverse, limit).await?;
    let owner = AccountKey::new(host, user);
    if let Some(m) = mapped_space(owner, module) {
        let extra: Vec<(String, Vec<u8>)> = mapped_rows(c, m, host, user)
            .await?
            .into_iter()
            .filter(|(k, _)| range.contains(k) && mapped(owner, module, k) == Some(m))
            .collect();
        if !extra.is_empty() {
            rows.extend(extra);
            // Bytewise order, as the "C" collation and sled have it.
            rows.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
            if reverse {
                rows.reverse();
            }
            rows.truncate(limit);
        }
    }
    Ok(rows)
}

impl ModuleStore for PgStorage {
    fn module_get(
        &self,
        owner: AccountKey<'_>,
        module: &str,
        key: &str,
    ) -> Result<Option<Vec<u8>>, StorageError> {
        let (host, user) = super::owned(owner);
        let (module, key) = (module.to_string(), key.to_string());
        self.call(|sh| async move {
            let c = sh.pool.get().await?;
            let owner = AccountKey::new(&host, &user);
            let row = match mapped(owner, &module, &key) {
                Some(Mapped::Vcard) => c
                    .query_opt(
                        "SELECT convert_to(vcard, 'UTF8') FROM vcard WHERE server_host = $1 AND username = $2",
                        &[&host, &user],
                    )
                    .await?,
                Some(Mapped::Private) => c
                    .query_opt(
                        "SELECT convert_to(data, 'UTF8') FROM private_storage WHERE server_host = $1 AND username = $2 AND namespace = $3",
                        &[&host, &user, &key],
                    )
                    .await?,
                Some(Mapped::MucRoom) => c
                    .query_opt(
                        "SELECT convert_to(opts, 'UTF8') FROM muc_room WHERE host = $1 AND name = $2",
                        &[&host, &&key["room:".len()..]],
                    )
                    .await?,
                None => {
                    let st = c
                        .prepare_cached(
                            "SELECT value FROM rookery_module_data WHERE server_host = $1 AND username = $2 AND module = $3 AND key = $4",
                        )
                        .await?;
                    c.query_opt(&st, &[&host, &user, &module, &key]).await?
                }
            };
            Ok(row.map(|r| r.get::<_, Vec<u8>>(0)))
        })
    }

    fn module_put(
        &self,
        owner: AccountKey<'_>,
        module: &str,
        key: &str,
        value: &[u8],
    ) -> Result<(), StorageError> {
        let (host, user) = super::owned(owner);
        let (module, key, value) = (module.to_string(), key.to_string(), value.to_vec());
        self.call(|sh| async move {
            let c = sh.pool.get().await?;
            put(&c, &host, &user, &module, &key, &value).await
        })
    }

    fn module_put_many_lazy(
        &self,
        owner: AccountKey<'_>,
        module: &str,
        entries: &[(&str, &[u8])],
    ) -> Result<(), StorageError> {
        let (host, user) = super::owned(owner);
        let module = module.to_string();
        let entries: Vec<(String, Vec<u8>)> = entries
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_vec()))
            .collect();
        self.call(|sh| async move {
            let mut c = sh.pool.get().await?;
            let tx = c.transaction().await?;
            for (k, v) in &entries {
                put(&tx, &host, &user, &module, k, v).await?;
            }
            tx.commit().await?;
            Ok(())
        })
    }

    fn module_delete(
        &self,
        owner: AccountKey<'_>,
        module: &str,
        key: &str,
    ) -> Result<bool, StorageError> {
        let (host, user) = super::owned(owner);
        let (module, key) = (module.to_string(), key.to_string());
        self.call(|sh| async move {
            let c = sh.pool.get().await?;
            delete(&c, &host, &user, &module, &key).await
        })
    }

    fn module_scan(
        &self,
        owner: AccountKey<'_>,
        module: &str,
        prefix: &str,
    ) -> Result<Vec<(String, Vec<u8>)>, StorageError> {
        let (host, user) = super::owned(owner);
        let (module, prefix) = (module.to_string(), prefix.to_string());
        self.call(|sh| async move {
            let c = sh.pool.get().await?;
            scan_range(
                &c,
                &host,
                &user,
                &module,
                &KeyRange::prefix(&prefix),
                false,
                usize::MAX,
            )
            .await
        })
    }

    fn module_scan_range(
        &self,
        owner: AccountKey<'_>,
        module: &str,
        range: &KeyRange<'_>,
        reverse: bool,
        limit: usize,
    ) -> Result<Vec<(String, Vec<u8>)>, StorageError> {
        let (host, user) = super::owned(owner);
        let module = module.to_string();
        let r = OwnedRange::of(range);
        self.call(move |sh| async move {
            let c = sh.pool.get().await?;
            scan_range(&c, &host, &user, &module, &r.as_range(), reverse, limit).await
        })
    }

    fn module_count_range(
        &self,
        owner: AccountKey<'_>,
        module: &str,
        range: &KeyRange<'_>,
    ) -> Result<usize, StorageError> {
        // Module key spaces are small (a user's PEP nodes, a service's
        // rooms): counting what a scan returns is what sled does too.
        Ok(self
            .module_scan_range(owner, module, range, false, usize::MAX)?
            .len())
    }

    fn module_delete_many(
        &self,
        owner: AccountKey<'_>,
        module: &str,
        keys: &[String],
    ) -> Result<usize, StorageError> {
        let (host, user) = super::owned(owner);
        let module = module.to_string();
        let keys = keys.to_vec();
        self.call(|sh| async move {
            let mut c = sh.pool.get().await?;
            let tx = c.transaction().await?;
            let mut n = 0;
            let mut seen = std::collections::HashSet::new();
            for k in &keys {
                if seen.insert(k) && delete(&tx, &host, &user, &module, k).await? {
                    n += 1;
                }
            }
            tx.commit().await?;
            Ok(n)
        })
    }
}

/// A [`KeyRange`] with owned strings, to move into a task.
struct OwnedRange {
    prefix: String,
    lower: std::ops::Bound<String>,
    upper: std::ops::Bound<String>,
}

impl OwnedRange {
    fn of(r: &KeyRange<'_>) -> OwnedRange {
        OwnedRange {
            prefix: r.prefix.to_string(),
            lower: r.lower.map(str::to_string),
            upper: r.upper.map(str::to_string),
        }
    }

    fn as_range(&self) -> KeyRange<'_> {
        KeyRange {
            prefix: &self.prefix,
            lower: self.lower.as_ref().map(String::as_str),
            upper: self.upper.as_ref().map(String::as_str),
        }
    }
}
