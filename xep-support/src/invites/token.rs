//! Invitation tokens (XEP-0401 / XEP-0379 / XEP-0445): making them, storing
//! them hashed in `mod_invites`' module store, and redeeming them.
//!
//! Invariants:
//! - A token is 24 bytes from the operating system's CSPRNG, written as 32
//!   characters of unpadded base64url. Only its SHA-256 (hex) is stored, as
//!   the key `t:<hash>` under the host's bare domain; the token itself is
//!   shown once, to whoever created it.
//! - A token is usable while it has uses left and has not expired. Redeeming
//!   ([`redeem`]) checks, runs the caller's action and counts the use under
//!   one process-wide lock, so two connections racing for the last use of a
//!   token get one success and one [`Invalid::Used`]; a failed action (the
//!   user name is taken) leaves the use unspent. All redemptions go through
//!   the server process (the database is the server's while it runs).
//! - Used-up and expired records stay until `cleanup_expired_invite_tokens`,
//!   so a reused token is told apart from a forged one.

use std::sync::Mutex;

use base64::Engine as _;
use jid::BareJid;
use sha2::{Digest, Sha256};

use crate::store::{ModuleStore, StoreError};

/// The module whose store holds invitations.
pub const MODULE: &str = "mod_invites";
/// Length of a token as written in URIs.
pub const TOKEN_LEN: usize = 32;
/// How long an invitation is valid unless told otherwise (ejabberd's five days).
pub const DEFAULT_EXPIRY_SECS: u64 = 5 * 86_400;

const KEY_PREFIX: &str = "t:";
/// Serialises check + action + count of every redemption in this process.
static REDEEM: Mutex<()> = Mutex::new(());

/// What an invitation lets its holder do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// Create an account (with `inviter`: and become its mutual contact).
    Register,
    /// Become a contact of `inviter` (an existing account, XEP-0379);
    /// no account creation.
    Roster,
    /// Set a new password for `account` (a password-reset link).
    Reset,
}

impl Kind {
    fn as_str(self) -> &'static str {
        match self {
            Kind::Register => "register",
            Kind::Roster => "roster",
            Kind::Reset => "reset",
        }
    }
    fn parse(s: &str) -> Option<Kind> {
        match s {
            "register" => Some(Kind::Register),
            "roster" => Some(Kind::Roster),
            "reset" => Some(Kind::Reset),
            _ => None,
        }
    }
}

/// One stored invitation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Invite {
    pub kind: Kind,
    /// The host it is valid on.
    pub host: String,
    /// The inviting account's localpart (`None`: the server's admins).
    pub inviter: Option<String>,
    /// Whether redeeming it makes `inviter` and the redeemer mutual
    /// contacts (XEP-0379).
    pub roster: bool,
    /// The account name it is for (a preselected user name, or the account
    /// a reset link resets).
    pub account: Option<String>,
    /// Uses left (0: used up).
    pub uses_left: u32,
    /// Uses it was created with.
    pub uses: u32,
    /// Unix seconds.
    pub created: u64,
    /// Unix seconds after which it is no longer valid.
    pub expires: u64,
    /// Bare JIDs that redeemed it.
    pub used_by: Vec<String>,
}

/// Why a token cannot be used.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Invalid {
    /// Not a token at all (length or characters).
    Malformed,
    /// Well-formed but never issued here (or forged, or cleaned up).
    Unknown,
    /// Issued, but its time is over.
    Expired,
    /// Issued, but every use is spent.
    Used,
    /// The store failed.
    Store,
}

impl Invalid {
    /// A sentence for users.
    pub fn text(self) -> &'static str {
        match self {
            Invalid::Malformed => "This is not an invitation token",
            Invalid::Unknown => "This invitation is not known here",
            Invalid::Expired => "This invitation has expired",
            Invalid::Used => "This invitation has already been used",
            Invalid::Store => "The server could not read its invitations",
        }
    }
}

/// The outcome of [`redeem`]: the token was unusable, or the action failed.
#[derive(Debug)]
pub enum RedeemError<E> {
    Invalid(Invalid),
    Action(E),
}

/// Unix seconds now.
pub fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// A new token from the OS CSPRNG.
pub fn new_token() -> String {
    use rand::RngCore as _;
    let mut bytes = [0u8; 24];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// Whether `token` has a token's shape (length and alphabet).
pub fn well_formed(token: &str) -> bool {
    token.len() == TOKEN_LEN
        && token
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// The SHA-256 of a token, in hex: what the store keeps.
pub fn hash(token: &str) -> String {
    hex(&Sha256::digest(token.as_bytes()))
}

/// Lowercase hex.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The short id `list_invites` shows and `expire_invite` takes: the first
/// 12 hex digits of the token's hash.
pub fn id_of_hash(hash: &str) -> &str {
    &hash[..hash.len().min(12)]
}

fn owner(host: &str) -> Result<BareJid, StoreError> {
    BareJid::new(host).map_err(|e| StoreError::other(format!("invalid host {host}: {e}")))
}

fn field(s: &Option<String>) -> &str {
    s.as_deref().unwrap_or("")
}

impl Invite {
    /// A fresh invitation valid for `valid_secs` from now, for `uses` uses.
    pub fn new(kind: Kind, host: &str, valid_secs: u64, uses: u32) -> Invite {
        let created = now();
        Invite {
            kind,
            host: host.to_string(),
            inviter: None,
            roster: false,
            account: None,
            uses_left: uses.max(1),
            uses: uses.max(1),
            created,
            expires: created.saturating_add(valid_secs),
            used_by: Vec::new(),
        }
    }

    /// Whether it has expired at `at` (unix seconds).
    pub fn expired(&self, at: u64) -> bool {
        at >= self.expires
    }

    /// Why it cannot be used at `at`, if it cannot.
    pub fn unusable(&self, at: u64) -> Option<Invalid> {
        if self.uses_left == 0 {
            Some(Invalid::Used)
        } else if self.expired(at) {
            Some(Invalid::Expired)
        } else {
            None
        }
    }

    /// The stored form: one line of tab-separated fields (no field holds a
    /// tab: they are localparts, JIDs and numbers).
    fn encode(&self) -> String {
        format!(
            "1\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}",
            self.kind.as_str(),
            self.host,
            field(&self.inviter),
            u8::from(self.roster),
            field(&self.account),
            self.uses_left,
            self.uses,
            self.created,
            self.expires,
            self.used_by.join(",")
        )
    }

    fn decode(bytes: &[u8]) -> Option<Invite> {
        let text = std::str::from_utf8(bytes).ok()?;
        let f: Vec<&str> = text.split('\t').collect();
        if f.len() != 11 || f[0] != "1" {
            return None;
        }
        let opt = |s: &str| (!s.is_empty()).then(|| s.to_string());
        Some(Invite {
            kind: Kind::parse(f[1])?,
            host: f[2].to_string(),
            inviter: opt(f[3]),
            roster: f[4] == "1",
            account: opt(f[5]),
            uses_left: f[6].parse().ok()?,
            uses: f[7].parse().ok()?,
            created: f[8].parse().ok()?,
            expires: f[9].parse().ok()?,
            used_by: f[10]
                .split(',')
                .filter(|s| !s.is_empty())
                .map(str::to_string)
                .collect(),
        })
    }

    /// The `xmpp:` URI to hand out with `token` (XEP-0401 §4, XEP-0379 §3).
    pub fn uri(&self, token: &str) -> String {
        match (self.kind, &self.inviter) {
            (Kind::Roster, Some(inviter)) => {
                format!("xmpp:{inviter}@{}?roster;preauth={token}", self.host)
            }
            (Kind::Register, Some(inviter)) if self.roster => {
                format!("xmpp:{inviter}@{}?roster;preauth={token};ibr=y", self.host)
            }
            _ => match &self.account {
                Some(account) => {
                    format!("xmpp:{account}@{}?register;preauth={token}", self.host)
                }
                None => format!("xmpp:{}?register;preauth={token}", self.host),
            },
        }
    }

    /// Whether it may create an account (XEP-0445).
    pub fn creates_account(&self) -> bool {
        self.kind == Kind::Register
    }
}

/// Store a new invitation; returns its token (shown once).
pub fn create(store: ModuleStore<'_>, invite: &Invite) -> Result<String, StoreError> {
    let token = new_token();
    store.put(
        &owner(&invite.host)?,
        &format!("{KEY_PREFIX}{}", hash(&token)),
        invite.encode().as_bytes(),
    )?;
    Ok(token)
}

/// The invitation behind `token` on `host`, if it can be used now.
pub fn check(store: ModuleStore<'_>, host: &str, token: &str) -> Result<Invite, Invalid> {
    let invite = lookup(store, host, token)?;
    match invite.unusable(now()) {
        Some(why) => Err(why),
        None => Ok(invite),
    }
}

fn lookup(store: ModuleStore<'_>, host: &str, token: &str) -> Result<Invite, Invalid> {
    if !well_formed(token) {
        return Err(Invalid::Malformed);
    }
    let owner = owner(host).map_err(|_| Invalid::Unknown)?;
    match store.get(&owner, &format!("{KEY_PREFIX}{}", hash(token))) {
        Ok(Some(bytes)) => Invite::decode(&bytes).ok_or(Invalid::Unknown),
        Ok(None) => Err(Invalid::Unknown),
        Err(e) => {
            tracing::error!("invitations: {e}");
            Err(Invalid::Store)
        }
    }
}

/// Use `token` once: under the redemption lock, check it, run `action`
/// with the invitation, and when `action` succeeds count the use and
/// record `who` (the bare JID that used it). Exactly as many callers
/// succeed as the token has uses, however many race.
pub fn redeem<T, E>(
    store: ModuleStore<'_>,
    host: &str,
    token: &str,
    who: impl FnOnce(&T) -> String,
    action: impl FnOnce(&Invite) -> Result<T, E>,
) -> Result<T, RedeemError<E>> {
    let _held = REDEEM.lock().unwrap_or_else(|e| e.into_inner());
    let mut invite = check(store, host, token).map_err(RedeemError::Invalid)?;
    let done = action(&invite).map_err(RedeemError::Action)?;
    invite.uses_left -= 1;
    invite.used_by.push(who(&done));
    let key = format!("{KEY_PREFIX}{}", hash(token));
    let owner = owner(host).map_err(|_| RedeemError::Invalid(Invalid::Store))?;
    if let Err(e) = store.put(&owner, &key, invite.encode().as_bytes()) {
        // The action happened; the use could not be counted. Say so loudly.
        tracing::error!("invitations: could not record a use of an invitation: {e}");
    }
    Ok(done)
}

/// Every invitation of `host`: (hash, invitation), by hash.
pub fn list(store: ModuleStore<'_>, host: &str) -> Result<Vec<(String, Invite)>, StoreError> {
    let rows = store.scan(&owner(host)?, KEY_PREFIX)?;
    Ok(rows
        .into_iter()
        .filter_map(|(k, v)| {
            let hash = k.strip_prefix(KEY_PREFIX)?.to_string();
            Invite::decode(&v).map(|i| (hash, i))
        })
        .collect())
}

/// Remove the invitations of `host` that can no longer be used (expired or
/// used up); how many.
pub fn cleanup(store: ModuleStore<'_>, host: &str) -> Result<usize, StoreError> {
    let at = now();
    let keys: Vec<String> = list(store, host)?
        .into_iter()
        .filter(|(_, i)| i.unusable(at).is_some())
        .map(|(h, _)| format!("{KEY_PREFIX}{h}"))
        .collect();
    if keys.is_empty() {
        return Ok(0);
    }
    store.delete_many(&owner(host)?, &keys)
}

/// Expire now the usable invitations `matches` selects; how many.
pub fn expire_where(
    store: ModuleStore<'_>,
    host: &str,
    matches: impl Fn(&str, &Invite) -> bool,
) -> Result<usize, StoreError> {
    let at = now();
    let owner = owner(host)?;
    let mut n = 0;
    for (h, mut invite) in list(store, host)? {
        if invite.unusable(at).is_none() && matches(&h, &invite) {
            invite.expires = at;
            store.put(
                &owner,
                &format!("{KEY_PREFIX}{h}"),
                invite.encode().as_bytes(),
            )?;
            n += 1;
        }
    }
    Ok(n)
}

/// How many account invitations `inviter` has made that count against
/// `max_invites`: those used, and those still usable (as ejabberd counts).
pub fn account_invites_of(
    store: ModuleStore<'_>,
    host: &str,
    inviter: &str,
) -> Result<usize, StoreError> {
    let at = now();
    Ok(list(store, host)?
        .into_iter()
        .filter(|(_, i)| {
            i.kind == Kind::Register
                && i.inviter.as_deref() == Some(inviter)
                && (!i.used_by.is_empty() || !i.expired(at))
        })
        .count())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{KeyRange, ModuleData, Row};
    use std::collections::BTreeMap;

    /// Module data in memory (one map; keys joined with NUL).
    #[derive(Default)]
    struct MemData(Mutex<BTreeMap<String, Vec<u8>>>);

    impl MemData {
        fn k(module: &str, owner: &BareJid, key: &str) -> String {
            format!("{module}\0{owner}\0{key}")
        }
        fn dump(&self) -> String {
            format!("{:?}", self.0.lock().unwrap())
        }
    }

    impl ModuleData for MemData {
        fn get(&self, m: &str, o: &BareJid, k: &str) -> Result<Option<Vec<u8>>, StoreError> {
            Ok(self.0.lock().unwrap().get(&Self::k(m, o, k)).cloned())
        }
        fn put(&self, m: &str, o: &BareJid, k: &str, v: &[u8]) -> Result<(), StoreError> {
            self.0.lock().unwrap().insert(Self::k(m, o, k), v.to_vec());
            Ok(())
        }
        fn put_lazy(&self, m: &str, o: &BareJid, k: &str, v: &[u8]) -> Result<(), StoreError> {
            self.put(m, o, k, v)
        }
        fn put_many_lazy(
            &self,
            m: &str,
            o: &BareJid,
            entries: &[(&str, &[u8])],
        ) -> Result<(), StoreError> {
            for (k, v) in entries {
                self.put(m, o, k, v)?;
            }
            Ok(())
        }
        fn delete(&self, m: &str, o: &BareJid, k: &str) -> Result<bool, StoreError> {
            Ok(self.0.lock().unwrap().remove(&Self::k(m, o, k)).is_some())
        }
        fn scan(&self, m: &str, o: &BareJid, prefix: &str) -> Result<Vec<Row>, StoreError> {
            let start = Self::k(m, o, "");
            Ok(self
                .0
                .lock()
                .unwrap()
                .iter()
                .filter_map(|(k, v)| {
                    let key = k.strip_prefix(&start)?;
                    key.starts_with(prefix)
                        .then(|| (key.to_string(), v.clone()))
                })
                .collect())
        }
        fn scan_range(
            &self,
            m: &str,
            o: &BareJid,
            r: &KeyRange<'_>,
            _reverse: bool,
            limit: usize,
        ) -> Result<Vec<Row>, StoreError> {
            let mut rows = self.scan(m, o, r.prefix)?;
            rows.retain(|(k, _)| r.contains(k));
            rows.truncate(limit);
            Ok(rows)
        }
        fn count_range(&self, m: &str, o: &BareJid, r: &KeyRange<'_>) -> Result<usize, StoreError> {
            Ok(self.scan_range(m, o, r, false, usize::MAX)?.len())
        }
        fn delete_many(&self, m: &str, o: &BareJid, keys: &[String]) -> Result<usize, StoreError> {
            let mut n = 0;
            for k in keys {
                n += usize::from(self.delete(m, o, k)?);
            }
            Ok(n)
        }
    }

    #[test]
    fn tokens_are_random_well_formed_and_stored_hashed() {
        let a = new_token();
        let b = new_token();
        assert_ne!(a, b);
        assert!(well_formed(&a) && well_formed(&b), "{a} {b}");
        assert!(!well_formed("short"));
        assert!(!well_formed(&format!("{}!", &a[..31])));
        assert_eq!(hash(&a).len(), 64);
        let data = MemData::default();
        let store = ModuleStore::new(&data, MODULE);
        let invite = Invite::new(Kind::Register, "example.org", 60, 1);
        let token = create(store, &invite).unwrap();
        // The token itself is nowhere in the store; its hash is.
        let dump = data.dump();
        assert!(!dump.contains(&token), "{dump}");
        assert!(dump.contains(&hash(&token)));
        assert_eq!(check(store, "example.org", &token).unwrap(), invite);
        assert_eq!(
            check(store, "other.org", &token).unwrap_err(),
            Invalid::Unknown
        );
    }

    #[test]
    fn bad_tokens_are_told_apart() {
        let data = MemData::default();
        let store = ModuleStore::new(&data, MODULE);
        assert_eq!(
            check(store, "h", "not a token").unwrap_err(),
            Invalid::Malformed
        );
        assert_eq!(
            check(store, "h", &new_token()).unwrap_err(),
            Invalid::Unknown
        );
        let expired = Invite::new(Kind::Register, "h", 0, 1);
        let t = create(store, &expired).unwrap();
        assert_eq!(check(store, "h", &t).unwrap_err(), Invalid::Expired);
    }

    #[test]
    fn single_use_is_single_and_failures_do_not_spend() {
        let data = MemData::default();
        let store = ModuleStore::new(&data, MODULE);
        let t = create(store, &Invite::new(Kind::Register, "h", 60, 1)).unwrap();
        let failed: Result<(), _> =
            redeem(store, "h", &t, |_| String::new(), |_| Err::<(), _>("taken"));
        assert!(matches!(failed, Err(RedeemError::Action("taken"))));
        let ok = redeem(store, "h", &t, |_| "a@h".to_string(), |_| Ok::<_, ()>(()));
        assert!(ok.is_ok());
        let again = redeem(store, "h", &t, |_| "b@h".to_string(), |_| Ok::<_, ()>(()));
        assert!(matches!(again, Err(RedeemError::Invalid(Invalid::Used))));
        let (_, stored) = list(store, "h").unwrap().remove(0);
        assert_eq!(stored.used_by, vec!["a@h".to_string()]);
    }

    #[test]
    fn racing_threads_get_exactly_the_uses() {
        let data = MemData::default();
        let t = create(
            ModuleStore::new(&data, MODULE),
            &Invite::new(Kind::Register, "h", 60, 3),
        )
        .unwrap();
        let wins = std::sync::atomic::AtomicUsize::new(0);
        std::thread::scope(|s| {
            for i in 0..16 {
                let (data, t, wins) = (&data, &t, &wins);
                s.spawn(move || {
                    let store = ModuleStore::new(data, MODULE);
                    let r = redeem(store, "h", t, |_| format!("u{i}@h"), |_| Ok::<_, ()>(()));
                    if r.is_ok() {
                        wins.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    }
                });
            }
        });
        assert_eq!(wins.into_inner(), 3);
    }

    #[test]
    fn records_round_trip_and_uris() {
        let mut i = Invite::new(Kind::Register, "example.org", 60, 2);
        i.inviter = Some("alice".into());
        i.roster = true;
        i.used_by = vec!["bob@example.org".into()];
        assert_eq!(Invite::decode(i.encode().as_bytes()), Some(i.clone()));
        assert_eq!(i.uri("T"), "xmpp:alice@example.org?roster;preauth=T;ibr=y");
        i.inviter = None;
        assert_eq!(i.uri("T"), "xmpp:example.org?register;preauth=T");
        i.account = Some("carol".into());
        assert_eq!(i.uri("T"), "xmpp:carol@example.org?register;preauth=T");
        assert_eq!(Invite::decode(b"garbage"), None);
    }

    #[test]
    fn cleanup_and_counting() {
        let data = MemData::default();
        let store = ModuleStore::new(&data, MODULE);
        let mut mine = Invite::new(Kind::Register, "h", 60, 1);
        mine.inviter = Some("alice".into());
        create(store, &mine).unwrap();
        create(store, &mine).unwrap();
        create(store, &Invite::new(Kind::Register, "h", 0, 1)).unwrap();
        assert_eq!(account_invites_of(store, "h", "alice").unwrap(), 2);
        assert_eq!(cleanup(store, "h").unwrap(), 1);
        assert_eq!(
            expire_where(store, "h", |_, i| i.inviter.as_deref() == Some("alice")).unwrap(),
            2
        );
        assert_eq!(account_invites_of(store, "h", "alice").unwrap(), 0);
        assert_eq!(cleanup(store, "h").unwrap(), 2);
        assert!(list(store, "h").unwrap().is_empty());
    }
}
