//! A module's own data store: the handle a module gets from
//! [`ServerContext::store`](crate::module::ServerContext::store).
//!
//! [`ModuleStore`] is scoped to one module's key space: every call names an
//! owner (an account's bare JID, or a bare domain for data a module keeps
//! for a service domain of its own, e.g. mod_muc's rooms) and a key; the
//! module's name is fixed by the handle, so a module cannot reach another
//! module's data by mistake (a module that shares data on purpose, e.g. PEP
//! bookmarks mirrored into private XML storage, asks for that module's
//! handle by name).
//!
//! [`ModuleData`] is what the server implements behind the handle (in the
//! server's `storage/modules.rs`, over whatever engine it runs): modules
//! never see the engine. Keys of one (owner, module) are ordered bytewise;
//! scans are prefix or range scans of those keys, never of other data.
//! Writes are durable when they return unless the method says `lazy`
//! (flushed by the store within a second).
//!
//! The handle is two references (`Copy`), made per call without allocating.

use crate::stanza::StanzaError;
use jid::BareJid;

/// A key/value result row: (key, value).
pub type Row = (String, Vec<u8>);

/// What the server provides behind [`ModuleStore`]: module data keyed by
/// (owner, module, key). Modules use [`ModuleStore`], not this.
pub trait ModuleData: Send + Sync {
    /// `module`'s value under `key` for `owner`.
    fn get(&self, module: &str, owner: &BareJid, key: &str) -> Result<Option<Vec<u8>>, StoreError>;
    /// Store (replace) a value; durable when it returns.
    fn put(&self, module: &str, owner: &BareJid, key: &str, value: &[u8])
        -> Result<(), StoreError>;
    /// Store a value without waiting for the disk (flushed within a second).
    fn put_lazy(
        &self,
        module: &str,
        owner: &BareJid,
        key: &str,
        value: &[u8],
    ) -> Result<(), StoreError>;
    /// Store several values atomically (all or none), without waiting for
    /// the disk.
    fn put_many_lazy(
        &self,
        module: &str,
        owner: &BareJid,
        entries: &[(&str, &[u8])],
    ) -> Result<(), StoreError>;
    /// Remove a value; whether there was one. Durable.
    fn delete(&self, module: &str, owner: &BareJid, key: &str) -> Result<bool, StoreError>;
    /// Every (key, value) whose key starts with `prefix`, sorted by key.
    fn scan(&self, module: &str, owner: &BareJid, prefix: &str) -> Result<Vec<Row>, StoreError>;
    /// At most `limit` rows in `range`, in key order (`reverse`: from the
    /// last key down). Its cost follows the rows returned.
    fn scan_range(
        &self,
        module: &str,
        owner: &BareJid,
        range: &KeyRange<'_>,
        reverse: bool,
        limit: usize,
    ) -> Result<Vec<Row>, StoreError>;
    /// How many keys are in `range` (values are not read).
    fn count_range(
        &self,
        module: &str,
        owner: &BareJid,
        range: &KeyRange<'_>,
    ) -> Result<usize, StoreError>;
    /// Remove these keys (atomic, one flush); how many existed.
    fn delete_many(
        &self,
        module: &str,
        owner: &BareJid,
        keys: &[String],
    ) -> Result<usize, StoreError>;
}

/// One module's store (see the module documentation).
#[derive(Clone, Copy)]
pub struct ModuleStore<'a> {
    data: &'a dyn ModuleData,
    module: &'a str,
}

impl<'a> ModuleStore<'a> {
    /// The store of `module` (its config name, e.g. `mod_vcard`) in `data`.
    pub fn new(data: &'a dyn ModuleData, module: &'a str) -> ModuleStore<'a> {
        ModuleStore { data, module }
    }
    /// The value under `key` for `owner`.
    pub fn get(&self, owner: &BareJid, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        self.data.get(self.module, owner, key)
    }
    /// Store (replace) a value; durable when it returns.
    pub fn put(&self, owner: &BareJid, key: &str, value: &[u8]) -> Result<(), StoreError> {
        self.data.put(self.module, owner, key, value)
    }
    /// Store a value without waiting for the disk (flushed within a second):
    /// for writes on the message path.
    pub fn put_lazy(&self, owner: &BareJid, key: &str, value: &[u8]) -> Result<(), StoreError> {
        self.data.put_lazy(self.module, owner, key, value)
    }
    /// Store several values atomically, without waiting for the disk.
    pub fn put_many_lazy(
        &self,
        owner: &BareJid,
        entries: &[(&str, &[u8])],
    ) -> Result<(), StoreError> {
        self.data.put_many_lazy(self.module, owner, entries)
    }
    /// Remove a value; whether there was one. Durable.
    pub fn delete(&self, owner: &BareJid, key: &str) -> Result<bool, StoreError> {
        self.data.delete(self.module, owner, key)
    }
    /// Every (key, value) whose key starts with `prefix`, sorted by key.
    pub fn scan(&self, owner: &BareJid, prefix: &str) -> Result<Vec<Row>, StoreError> {
        self.data.scan(self.module, owner, prefix)
    }
    /// At most `limit` rows in `range`, in key order (`reverse`: from the
    /// last key down).
    pub fn scan_range(
        &self,
        owner: &BareJid,
        range: &KeyRange<'_>,
        reverse: bool,
        limit: usize,
    ) -> Result<Vec<Row>, StoreError> {
        self.data
            .scan_range(self.module, owner, range, reverse, limit)
    }
    /// How many keys are in `range`.
    pub fn count_range(&self, owner: &BareJid, range: &KeyRange<'_>) -> Result<usize, StoreError> {
        self.data.count_range(self.module, owner, range)
    }
    /// Remove these keys (atomic, one flush); how many existed.
    pub fn delete_many(&self, owner: &BareJid, keys: &[String]) -> Result<usize, StoreError> {
        self.data.delete_many(self.module, owner, keys)
    }
}

/// What kind of storage failure a [`StoreError`] is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StoreErrorKind {
    /// The disk (or quota) holding the data is full: it may work again
    /// once space is freed.
    Full,
    /// Any other failure (I/O, corruption, a closed or missing store).
    Other,
}

/// A storage failure reported to a module: its kind, a message and, when
/// the engine gave one, the error it came from (kept for logs and for the
/// server, which turns a full disk back into its own `Full` error).
#[derive(Clone, Debug)]
pub struct StoreError {
    kind: StoreErrorKind,
    message: String,
    source: Option<std::sync::Arc<dyn std::error::Error + Send + Sync>>,
}

impl StoreError {
    /// How the text of a full-disk error starts.
    pub const FULL: &'static str = "disk full: ";

    /// A failure that is not a full disk, described by `message`.
    pub fn other(message: impl Into<String>) -> StoreError {
        StoreError {
            kind: StoreErrorKind::Other,
            message: message.into(),
            source: None,
        }
    }

    /// The disk (or quota) holding the data is full.
    pub fn full(why: impl std::fmt::Display) -> StoreError {
        StoreError {
            kind: StoreErrorKind::Full,
            message: why.to_string(),
            source: None,
        }
    }

    /// A failure of this kind caused by `source` (its text is the message).
    pub fn from_source(
        kind: StoreErrorKind,
        source: impl std::error::Error + Send + Sync + 'static,
    ) -> StoreError {
        StoreError {
            kind,
            message: source.to_string(),
            source: Some(std::sync::Arc::new(source)),
        }
    }

    /// Its kind.
    pub fn kind(&self) -> StoreErrorKind {
        self.kind
    }

    /// The message, without the "disk full: " prefix of [`Display`](std::fmt::Display).
    pub fn message(&self) -> &str {
        &self.message
    }

    /// Whether this is a full disk.
    pub fn is_full(&self) -> bool {
        self.kind == StoreErrorKind::Full
    }
}

/// Equal when kind and message are (the source is not compared).
impl PartialEq for StoreError {
    fn eq(&self, other: &Self) -> bool {
        self.kind == other.kind && self.message == other.message
    }
}

impl Eq for StoreError {}

impl std::fmt::Display for StoreError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.is_full() {
            f.write_str(Self::FULL)?;
        }
        f.write_str(&self.message)
    }
}

impl std::error::Error for StoreError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source
            .as_deref()
            .map(|e| e as &(dyn std::error::Error + 'static))
    }
}

/// RFC 6120 §8.3.3: a full disk is `resource-constraint` (type `wait`, it
/// may work once space is freed), any other failure `internal-server-error`.
impl From<StoreError> for StanzaError {
    fn from(e: StoreError) -> Self {
        tracing::error!("module storage: {e}");
        if e.is_full() {
            StanzaError::resource_constraint().with_text("the server's storage is full")
        } else {
            StanzaError::internal_server_error()
        }
    }
}

/// A range of one module's keys for one account: the keys that start with
/// `prefix` and lie between `lower` and `upper` (whole keys, prefix
/// included; byte order). Read with [`crate::store::ModuleStore::scan_range`]: a
/// range scan in the store, never a scan of the account's other keys.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KeyRange<'a> {
    pub prefix: &'a str,
    pub lower: std::ops::Bound<&'a str>,
    pub upper: std::ops::Bound<&'a str>,
}

impl<'a> KeyRange<'a> {
    /// Every key starting with `prefix`.
    pub fn prefix(prefix: &'a str) -> Self {
        KeyRange {
            prefix,
            lower: std::ops::Bound::Unbounded,
            upper: std::ops::Bound::Unbounded,
        }
    }
    /// Whether `key` is in the range.
    pub fn contains(&self, key: &str) -> bool {
        use std::ops::Bound::*;
        key.starts_with(self.prefix)
            && match self.lower {
                Included(l) => key >= l,
                Excluded(l) => key > l,
                Unbounded => true,
            }
            && match self.upper {
                Included(u) => key <= u,
                Excluded(u) => key < u,
                Unbounded => true,
            }
    }
}
