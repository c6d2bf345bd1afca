//! Banned accounts (`ban_account` / `unban_account`, ejabberd's names): a
//! banned account keeps its data but cannot log in over any SASL path (the
//! negotiation asks [`banned`] after every mechanism success: SASL, SASL2,
//! FAST tokens alike, on TCP, WebSocket and BOSH).
//!
//! The ban is one value in the module store of the account, module
//! [`MODULE`], key `ban`: `<unix seconds>\t<reason>`; deleting the account
//! deletes it with the rest of its module data.

use jid::BareJid;
use xep_support::store::{ModuleData, ModuleStore, StoreError};

/// The module-store name bans live under.
pub const MODULE: &str = "ban";
const KEY: &str = "ban";

fn account(user: &str, host: &str) -> Result<BareJid, StoreError> {
    BareJid::new(&format!("{user}@{host}")).map_err(|e| StoreError::other(e.to_string()))
}

/// Ban `user@host` for `reason`.
pub fn ban(data: &dyn ModuleData, user: &str, host: &str, reason: &str) -> Result<(), StoreError> {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let value = format!("{now}\t{}", reason.replace(['\t', '\n'], " "));
    ModuleStore::new(data, MODULE).put(&account(user, host)?, KEY, value.as_bytes())
}

/// Lift the ban of `user@host`; whether there was one.
pub fn unban(data: &dyn ModuleData, user: &str, host: &str) -> Result<bool, StoreError> {
    ModuleStore::new(data, MODULE).delete(&account(user, host)?, KEY)
}

/// The ban of `user@host`: (unix seconds, reason). A store failure counts
/// as banned (logged): refusing a login is the safe side.
pub fn banned(data: &dyn ModuleData, user: &str, host: &str) -> Option<(u64, String)> {
    let read = account(user, host).and_then(|a| ModuleStore::new(data, MODULE).get(&a, KEY));
    match read {
        Ok(Some(v)) => {
            let text = String::from_utf8_lossy(&v).into_owned();
            let (at, reason) = text.split_once('\t').unwrap_or(("0", &text));
            Some((at.parse().unwrap_or(0), reason.to_string()))
        }
        Ok(None) => None,
        Err(e) => {
            tracing::error!("reading the ban of {user}@{host}: {e}");
            Some((0, "the server could not read its ban list".into()))
        }
    }
}
