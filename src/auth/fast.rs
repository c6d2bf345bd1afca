//! XEP-0484 FAST tokens and the HT-SHA-256 mechanisms
//! (draft-schmaus-kitten-sasl-ht) that log in with them:
//! `HT-SHA-256-NONE`, `HT-SHA-256-EXPR` (bound to `tls-exporter`, TLS 1.3)
//! and `HT-SHA-256-ENDP` (`tls-server-end-point`), each offered only when
//! its channel binding is real on the connection.
//!
//! A token is 66 random bytes from the operating system's CSPRNG, base64
//! (88 characters). It is bound to an account, a SASL2 user-agent id and
//! one mechanism; the store keeps only its SHA-256. Because the token is
//! longer than HMAC-SHA-256's 64-byte block, HMAC keys on exactly that
//! hash (RFC 2104 §2), so the hash is all verification needs: the token
//! itself is never stored. (The hash still logs in through the HT
//! mechanism, so the store is as sensitive as the password hashes.)
//!
//! Invariants: a record holds the current token and, after a rotation, the
//! previous one until the new one is first used (the client may have lost
//! the `<success/>` that carried it; a use of the previous one then gets
//! another new token, replacing the unused one); each is refused after its
//! expiry;
//! the record carries a fingerprint of the account's credentials at issue,
//! so any password change (any path) invalidates it (`credentials-expired`,
//! as for an expired token); a `count` at or below the last one accepted
//! for that token is a replay and refused; a failed use changes nothing. Account removal deletes the records with the account's data;
//! `ctl kick_session`/`kick_user` delete them (`serve/control.rs`).

use std::sync::{Arc, Mutex};

use base64::{engine::general_purpose::STANDARD as B64, Engine as _};
use rand::RngCore;
use sasl::common::Identity;
use sasl::server::{Mechanism, MechanismError, Response};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::credentials::{hmac, ScramHash};
use super::{normalize_username, Condition, Failure, SaslContext, ServerMechanism};

pub const HT_NONE: &str = "HT-SHA-256-NONE";
pub const HT_EXPR: &str = "HT-SHA-256-EXPR";
pub const HT_ENDP: &str = "HT-SHA-256-ENDP";

/// Random bytes in a token (more than HMAC-SHA-256's 64-byte block).
const TOKEN_BYTES: usize = 66;

/// One token of a record: its SHA-256, its times (Unix seconds) and the
/// highest `count` accepted with it (clients start counting anew with
/// each token).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Slot {
    pub hash: [u8; 32],
    pub issued: u64,
    pub expiry: u64,
    pub count: u64,
}

/// What the store keeps per (account, user-agent id).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TokenRecord {
    pub mechanism: String,
    pub current: Slot,
    pub previous: Option<Slot>,
    /// [`credentials_fingerprint`] of the account when the token was issued.
    pub creds: [u8; 32],
}

impl TokenRecord {
    /// A compact text form for the store.
    pub fn encode(&self) -> Vec<u8> {
        let slot = |s: &Slot| format!("{} {} {} {}", hex(&s.hash), s.issued, s.expiry, s.count);
        let prev = self
            .previous
            .as_ref()
            .map(slot)
            .unwrap_or_else(|| "-".into());
        format!(
            "1\n{}\n{}\n{}\n{}\n",
            self.mechanism,
            slot(&self.current),
            prev,
            hex(&self.creds)
        )
        .into_bytes()
    }

    /// The inverse of [`TokenRecord::encode`]; `None` if unreadable.
    pub fn decode(b: &[u8]) -> Option<TokenRecord> {
        let s = std::str::from_utf8(b).ok()?;
        let mut l = s.lines();
        if l.next()? != "1" {
            return None;
        }
        let mechanism = l.next()?.to_owned();
        let slot = |t: &str| -> Option<Slot> {
            let mut p = t.split(' ');
            Some(Slot {
                hash: unhex(p.next()?)?,
                issued: p.next()?.parse().ok()?,
                expiry: p.next()?.parse().ok()?,
                count: p.next()?.parse().ok()?,
            })
        };
        let current = slot(l.next()?)?;
        let prev = l.next()?;
        let previous = if prev == "-" { None } else { Some(slot(prev)?) };
        let creds = unhex(l.next()?)?;
        Some(TokenRecord {
            mechanism,
            current,
            previous,
            creds,
        })
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn unhex(s: &str) -> Option<[u8; 32]> {
    if s.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, o) in out.iter_mut().enumerate() {
        *o = u8::from_str_radix(s.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

/// Where FAST records live, per (normalised localpart, user-agent id).
pub trait TokenStore: Send + Sync {
    fn get(&self, user: &str, user_agent: &str) -> Option<TokenRecord>;
    fn put(&self, user: &str, user_agent: &str, record: &TokenRecord);
    fn delete(&self, user: &str, user_agent: &str);
}

/// A fingerprint of an account's stored credentials: new salts at every
/// password change make a new one.
pub fn credentials_fingerprint(creds: &super::credentials::StoredCredentials) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(&creds.sha1.salt);
    h.update(&creds.sha1.stored_key);
    if let Some(s) = &creds.sha256 {
        h.update(&s.salt);
        h.update(&s.stored_key);
    }
    h.finalize().into()
}

/// The token policy (mod_auth_fast's options) and the clock.
#[derive(Clone, Copy, Debug)]
pub struct Policy {
    pub lifetime: u64,
    pub refresh_age: u64,
    pub now: u64,
}

impl Policy {
    pub fn new(lifetime: std::time::Duration, refresh_age: std::time::Duration) -> Policy {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        Policy {
            lifetime: lifetime.as_secs(),
            refresh_age: refresh_age.as_secs(),
            now,
        }
    }
}

/// A token handed to the client: its text and expiry (Unix seconds).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Issued {
    pub token: String,
    pub expiry: u64,
}

fn new_token(policy: &Policy) -> (Issued, Slot) {
    let mut bytes = [0u8; TOKEN_BYTES];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    let token = B64.encode(bytes);
    let expiry = policy.now.saturating_add(policy.lifetime);
    let slot = Slot {
        hash: Sha256::digest(token.as_bytes()).into(),
        issued: policy.now,
        expiry,
        count: 0,
    };
    (Issued { token, expiry }, slot)
}

/// Issue a new token for `mechanism` (a `<request-token/>`), replacing any
/// record of this user agent.
pub fn issue(
    store: &dyn TokenStore,
    user: &str,
    user_agent: &str,
    mechanism: &str,
    creds: [u8; 32],
    policy: &Policy,
) -> Issued {
    let (issued, slot) = new_token(policy);
    let rec = TokenRecord {
        mechanism: mechanism.to_owned(),
        current: slot,
        previous: None,
        creds,
    };
    store.put(user, user_agent, &rec);
    issued
}

/// The FAST context of one `<authenticate/>` that uses a token.
pub struct FastContext {
    pub user_agent: String,
    /// The `<fast count/>` attribute, when given.
    pub count: Option<u64>,
    /// `<fast invalidate='true'/>`: log in, then delete the token.
    pub invalidate: bool,
    pub store: Arc<dyn TokenStore>,
    pub policy: Policy,
    /// A rotated token, for the `<success/>` (set by the mechanism).
    pub rotated: Mutex<Option<Issued>>,
}

/// The HT mechanisms offered on `ctx`: NONE, and the channel-bound ones
/// whose binding the connection has.
pub fn offered(ctx: &SaslContext) -> Vec<&'static str> {
    let mut out = Vec::with_capacity(3);
    if ctx.bindings.tls_exporter.is_some() {
        out.push(HT_EXPR);
    }
    if ctx.bindings.tls_server_end_point.is_some() {
        out.push(HT_ENDP);
    }
    out.push(HT_NONE);
    out
}

/// One HT-SHA-256 exchange (a single message).
pub struct HtMechanism {
    name: &'static str,
    cb: Vec<u8>,
    ctx: SaslContext,
    fast: Arc<FastContext>,
    done: bool,
}

impl HtMechanism {
    /// A new exchange for `name` on `ctx`; `None` if its channel binding is
    /// not available here or no FAST context was given.
    pub fn new(name: &str, ctx: &SaslContext) -> Option<HtMechanism> {
        let fast = ctx.fast.clone()?;
        let (name, cb) = match name {
            HT_NONE => (HT_NONE, Vec::new()),
            HT_EXPR => (HT_EXPR, ctx.bindings.tls_exporter.clone()?),
            HT_ENDP => (HT_ENDP, ctx.bindings.tls_server_end_point.clone()?),
            _ => return None,
        };
        Some(HtMechanism {
            name,
            cb,
            ctx: ctx.clone(),
            fast,
            done: false,
        })
    }

    fn mac(&self, key: &[u8; 32], label: &[u8]) -> Vec<u8> {
        let mut msg = label.to_vec();
        msg.extend_from_slice(&self.cb);
        // The token is longer than the block: HMAC keys on its SHA-256.
        hmac(ScramHash::Sha256, key, &msg)
    }

    fn authenticate(&self, payload: &[u8]) -> Result<Response, Failure> {
        let nul = payload
            .iter()
            .position(|&b| b == 0)
            .ok_or(Failure::malformed("no NUL in HT message"))?;
        let name = std::str::from_utf8(&payload[..nul])
            .map_err(|_| Failure::malformed("username not UTF-8"))?;
        let proof = &payload[nul + 1..];
        let user = normalize_username(name).ok_or(Failure::not_authorized("bad username"))?;
        let fast = &self.fast;
        let refuse = |why| Err(Failure::not_authorized(why));
        // XEP-0484 §6.2: a token no longer trusted is `credentials-expired`.
        let expired = |why| Err(Failure::new(Condition::CredentialsExpired, why));
        let Some(mut rec) = fast.store.get(&user, &fast.user_agent) else {
            return refuse("no token for this user agent");
        };
        if rec.mechanism != self.name {
            return refuse("token issued for another mechanism");
        }
        let creds = self.ctx.store.credentials(&user);
        let Some(creds) = creds else {
            return refuse("no such account");
        };
        if !bool::from(credentials_fingerprint(&creds).ct_eq(&rec.creds)) {
            fast.store.delete(&user, &fast.user_agent);
            return expired("password changed since the token was issued");
        }
        // The newest token first; a match moves it to stay alone (the one
        // it replaced is spent), else the previous one (its replacement
        // was never received).
        let proof_of = |s: &Slot| bool::from(self.mac(&s.hash, b"Initiator").ct_eq(proof));
        let (mut used, newest) = if proof_of(&rec.current) {
            (rec.current.clone(), true)
        } else if let Some(prev) = rec.previous.as_ref().filter(|p| proof_of(p)) {
            (prev.clone(), false)
        } else {
            return refuse("token wrong or spent");
        };
        let now = fast.policy.now;
        if now >= used.expiry {
            return expired("token expired");
        }
        if let Some(count) = fast.count {
            if count <= used.count {
                return refuse("replayed count");
            }
            used.count = count;
        }
        if newest {
            rec.previous = None;
            rec.current = used.clone();
        } else {
            rec.previous = Some(used.clone());
        }
        let data = self.mac(&used.hash, b"Responder");
        if fast.invalidate {
            fast.store.delete(&user, &fast.user_agent);
        } else {
            if now.saturating_sub(used.issued) >= fast.policy.refresh_age {
                // The new token goes to the newest slot, replacing one that
                // was never used (XEP-0484 §3.4).
                let (issued, slot) = new_token(&fast.policy);
                rec.previous = Some(used);
                rec.current = slot;
                *fast.rotated.lock().unwrap_or_else(|e| e.into_inner()) = Some(issued);
            }
            fast.store.put(&user, &fast.user_agent, &rec);
        }
        Ok(Response::Success(Identity::Username(user), data))
    }
}

impl Mechanism for HtMechanism {
    fn name(&self) -> &str {
        self.name
    }

    fn respond(&mut self, payload: &[u8]) -> Result<Response, MechanismError> {
        if std::mem::replace(&mut self.done, true) {
            return Err(MechanismError::SaslSessionAlreadyOver);
        }
        self.authenticate(payload)
            .map_err(|f| f.into_error(self.name))
    }
}

impl ServerMechanism for HtMechanism {
    fn failure_condition(&self, err: &MechanismError) -> &'static str {
        Condition::from_error(err).as_str()
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_util::*;
    use super::super::ChannelBindings;
    use super::*;
    use std::collections::HashMap;

    #[derive(Default)]
    struct Mem(Mutex<HashMap<(String, String), TokenRecord>>);

    impl TokenStore for Mem {
        fn get(&self, u: &str, a: &str) -> Option<TokenRecord> {
            self.0.lock().unwrap().get(&(u.into(), a.into())).cloned()
        }
        fn put(&self, u: &str, a: &str, r: &TokenRecord) {
            self.0
                .lock()
                .unwrap()
                .insert((u.into(), a.into()), r.clone());
        }
        fn delete(&self, u: &str, a: &str) {
            self.0.lock().unwrap().remove(&(u.into(), a.into()));
        }
    }

    const DAY: u64 = 86_400;

    fn policy(now: u64) -> Policy {
        Policy {
            lifetime: 30 * DAY,
            refresh_age: DAY,
            now,
        }
    }

    /// What a client sends: `user NUL HMAC(token, "Initiator" || cb)`.
    fn client(token: &str, cb: &[u8]) -> Vec<u8> {
        let mut msg = b"Initiator".to_vec();
        msg.extend_from_slice(cb);
        let mut out = b"alice\0".to_vec();
        out.extend(hmac(ScramHash::Sha256, token.as_bytes(), &msg));
        out
    }

    struct Setup {
        ctx: SaslContext,
        store: Arc<Mem>,
        creds: [u8; 32],
    }

    fn setup(bindings: ChannelBindings) -> Setup {
        let base = ctx(true, bindings);
        let creds = credentials_fingerprint(&base.store.credentials("alice").unwrap());
        Setup {
            ctx: base,
            store: Arc::new(Mem::default()),
            creds,
        }
    }

    fn attempt(
        s: &Setup,
        name: &str,
        payload: &[u8],
        count: Option<u64>,
        now: u64,
    ) -> (Result<Response, MechanismError>, Option<Issued>) {
        let fast = Arc::new(FastContext {
            user_agent: "ua-1".into(),
            count,
            invalidate: false,
            store: s.store.clone(),
            policy: policy(now),
            rotated: Mutex::new(None),
        });
        let ctx = SaslContext {
            fast: Some(fast.clone()),
            ..s.ctx.clone()
        };
        let mut m = HtMechanism::new(name, &ctx).expect("mechanism");
        let r = m.respond(payload);
        let rotated = fast.rotated.lock().unwrap().take();
        (r, rotated)
    }

    #[test]
    fn use_rotation_expiry_and_replay() {
        let s = setup(ChannelBindings::default());
        let t0 = 1_000_000;
        let tok = issue(&*s.store, "alice", "ua-1", HT_NONE, s.creds, &policy(t0));
        assert_eq!(tok.token.len(), 88);
        assert_eq!(tok.expiry, t0 + 30 * DAY);
        // Only the hash is stored.
        let rec = s.store.get("alice", "ua-1").unwrap();
        assert!(!String::from_utf8(rec.encode())
            .unwrap()
            .contains(&tok.token));
        assert_eq!(TokenRecord::decode(&rec.encode()), Some(rec));

        let (r, rot) = attempt(&s, HT_NONE, &client(&tok.token, b""), Some(1), t0 + 10);
        let Ok(Response::Success(Identity::Username(u), data)) = r else {
            panic!("{r:?}")
        };
        assert_eq!(u, "alice");
        let mut msg = b"Responder".to_vec();
        msg.extend_from_slice(b"");
        assert_eq!(data, hmac(ScramHash::Sha256, tok.token.as_bytes(), &msg));
        assert!(rot.is_none(), "young token is not rotated");
        // The same count again is a replay.
        let (r, _) = attempt(&s, HT_NONE, &client(&tok.token, b""), Some(1), t0 + 20);
        assert!(r.is_err());
        // A wrong token fails.
        let (r, _) = attempt(&s, HT_NONE, &client("nope", b""), Some(5), t0 + 20);
        assert!(r.is_err());
        // After a day: success with a new token; the old one still works
        // until the new one is used, then it is spent.
        let (r, rot) = attempt(&s, HT_NONE, &client(&tok.token, b""), Some(2), t0 + DAY + 1);
        assert!(r.is_ok());
        let new = rot.expect("rotated after token_refresh_age");
        assert_ne!(new.token, tok.token);
        // The client evidently lost that <success/>: the old token still
        // works and gets another new token (the lost one is replaced).
        let (r, rot) = attempt(&s, HT_NONE, &client(&tok.token, b""), Some(3), t0 + DAY + 2);
        assert!(r.is_ok(), "previous token valid until the new one is used");
        let newer = rot.expect("a new token again");
        let (r, _) = attempt(&s, HT_NONE, &client(&new.token, b""), Some(4), t0 + DAY + 3);
        assert!(r.is_err(), "the lost token was replaced");
        let (r, rot) = attempt(
            &s,
            HT_NONE,
            &client(&newer.token, b""),
            Some(1),
            t0 + DAY + 3,
        );
        assert!(r.is_ok(), "counts start anew with each token: {r:?}");
        assert!(rot.is_none(), "a fresh token is not rotated");
        let (r, _) = attempt(&s, HT_NONE, &client(&tok.token, b""), Some(6), t0 + DAY + 4);
        assert!(r.is_err(), "old token spent once the new one was used");
        // Expiry.
        let (r, _) = attempt(
            &s,
            HT_NONE,
            &client(&newer.token, b""),
            Some(7),
            t0 + 40 * DAY,
        );
        let e = r.unwrap_err();
        assert_eq!(Condition::from_error(&e), Condition::CredentialsExpired);
    }

    #[test]
    fn channel_bound_variants_and_mechanism_binding() {
        let s = setup(full_bindings());
        let t0 = 5_000;
        let exp = s.ctx.bindings.tls_exporter.clone().unwrap();
        let tok = issue(&*s.store, "alice", "ua-1", HT_EXPR, s.creds, &policy(t0));
        // Bound to tls-exporter: without the binding data it fails.
        let (r, _) = attempt(&s, HT_EXPR, &client(&tok.token, b""), None, t0 + 1);
        assert!(r.is_err());
        let (r, _) = attempt(&s, HT_EXPR, &client(&tok.token, &exp), None, t0 + 1);
        assert!(r.is_ok());
        // A token of another mechanism is refused.
        let (r, _) = attempt(&s, HT_NONE, &client(&tok.token, b""), None, t0 + 1);
        assert!(r.is_err());
        // Without the binding, EXPR is not even offered.
        let plain = ctx(true, ChannelBindings::default());
        assert_eq!(offered(&plain), [HT_NONE]);
        assert_eq!(offered(&s.ctx), [HT_EXPR, HT_ENDP, HT_NONE]);
    }

    #[test]
    fn password_change_invalidates() {
        let s = setup(ChannelBindings::default());
        let tok = issue(&*s.store, "alice", "ua-1", HT_NONE, [7; 32], &policy(1));
        let (r, _) = attempt(&s, HT_NONE, &client(&tok.token, b""), None, 2);
        let e = r.unwrap_err();
        assert_eq!(Condition::from_error(&e), Condition::CredentialsExpired);
        assert!(s.store.get("alice", "ua-1").is_none(), "deleted");
    }
}
