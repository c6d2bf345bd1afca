//! Rookery's storage layer: the [`Storage`] trait every database engine
//! implements, and the [`StorageError`] it reports.
//!
//! The only engine today is the embedded sled database in [`sled_store`]
//! ([`SledStorage`]). The trait is kept small and engine-neutral so that
//! another engine (for clusters) can be added later without touching callers.
//!
//! Host and user strings handed to storage are already normalised by the
//! caller (nodeprep / domain normalisation); storage does not validate JIDs.

pub mod sled_store;

pub use sled_store::SledStorage;

use crate::auth::credentials::StoredCredentials;

/// Why a storage operation failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StorageError {
    /// The database is locked by another process (or another open handle in
    /// this process). The string is the database directory.
    Locked(String),
    /// `create_user` found the account already present.
    AlreadyExists,
    /// Data on disk could not be decoded, or the engine detected corruption.
    Corrupt(String),
    /// Any other I/O or engine failure.
    Io(String),
}

impl std::fmt::Display for StorageError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StorageError::Locked(dir) => {
                write!(f, "the database at {dir} is in use by another process")
            }
            StorageError::AlreadyExists => write!(f, "the account already exists"),
            StorageError::Corrupt(why) => write!(f, "corrupt database: {why}"),
            StorageError::Io(why) => write!(f, "database I/O error: {why}"),
        }
    }
}

impl std::error::Error for StorageError {}

/// What Rookery keeps on disk. Accounts are keyed by (host, localpart).
///
/// Every method that changes data (`create_user`, `delete_user`,
/// `set_credentials`) is durable when it returns `Ok`: a crash right after
/// never loses an acknowledged change.
pub trait Storage: Send + Sync {
    /// Whether the account `user@host` exists.
    fn user_exists(&self, host: &str, user: &str) -> Result<bool, StorageError>;
    /// Create `user@host` atomically; [`StorageError::AlreadyExists`] if present.
    fn create_user(
        &self,
        host: &str,
        user: &str,
        creds: &StoredCredentials,
    ) -> Result<(), StorageError>;
    /// Delete `user@host`; `Ok(false)` if it did not exist.
    fn delete_user(&self, host: &str, user: &str) -> Result<bool, StorageError>;
    /// The stored credentials of `user@host`, if the account exists.
    fn get_credentials(
        &self,
        host: &str,
        user: &str,
    ) -> Result<Option<StoredCredentials>, StorageError>;
    /// Replace the credentials of an existing account; `Ok(false)` if there
    /// is no such user (nothing is created then).
    fn set_credentials(
        &self,
        host: &str,
        user: &str,
        creds: &StoredCredentials,
    ) -> Result<bool, StorageError>;
    /// The localparts registered on `host`, sorted.
    fn list_users(&self, host: &str) -> Result<Vec<String>, StorageError>;
    /// How many accounts `host` has.
    fn count_users(&self, host: &str) -> Result<usize, StorageError>;
    /// Write everything still buffered to disk.
    fn flush(&self) -> Result<(), StorageError>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_display_clearly() {
        let e = StorageError::Locked("/var/lib/rookery".into());
        assert_eq!(
            e.to_string(),
            "the database at /var/lib/rookery is in use by another process"
        );
        assert_eq!(
            StorageError::AlreadyExists.to_string(),
            "the account already exists"
        );
        assert!(StorageError::Corrupt("bad".into())
            .to_string()
            .contains("bad"));
        let boxed: Box<dyn std::error::Error> = Box::new(StorageError::Io("disk".into()));
        assert!(boxed.to_string().contains("disk"));
    }
}
