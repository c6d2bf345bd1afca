//! The PLAIN mechanism (RFC 4616), offered only on TLS-protected streams.
//!
//! The message is `authzid NUL authcid NUL password`. The authcid is
//! SASLprep'd and normalised as a JID localpart; the password is checked
//! against the stored SCRAM-SHA-256 secret in constant time. An unknown user
//! costs the same key derivation as a known one. A non-empty authzid must
//! name the authenticating user (`user@domain` or `user`), otherwise the
//! exchange fails with `invalid-authzid`. An account imported with
//! SCRAM-SHA-1 secrets only is checked against those, and on success gets
//! full credentials made from the password ([`super::CredentialStore::upgrade`]).

use std::sync::OnceLock;

use rand::RngCore;
use sasl::common::Identity;
use sasl::server::{Mechanism, MechanismError, Response};

use super::credentials::{ScramSecret, StoredCredentials, DEFAULT_ITERATIONS};
use super::{
    check_authzid, normalize_username, wipe_credentials, Condition, Failure, SaslContext,
    ServerMechanism,
};

const NAME: &str = "PLAIN";

/// Credentials no password matches, verified against for unknown users so
/// that they cost the same PBKDF2 work as real ones.
fn dummy_credentials() -> &'static StoredCredentials {
    static DUMMY: OnceLock<StoredCredentials> = OnceLock::new();
    DUMMY.get_or_init(|| {
        let random = |len: usize| {
            let mut v = vec![0u8; len];
            rand::thread_rng().fill_bytes(&mut v);
            v
        };
        let secret = |key_len: usize| ScramSecret {
            salt: random(16),
            iterations: DEFAULT_ITERATIONS,
            stored_key: random(key_len),
            server_key: random(key_len),
        };
        StoredCredentials {
            sha1: secret(20),
            sha256: Some(secret(32)),
        }
    })
}

/// The three fields of a PLAIN message, borrowed from it.
struct PlainMessage<'a> {
    authzid: &'a str,
    authcid: &'a str,
    password: &'a str,
}

fn parse<'a>(payload: &'a [u8]) -> Result<PlainMessage<'a>, Failure> {
    let mut fields = payload.split(|b| *b == 0);
    let (Some(authzid), Some(authcid), Some(password), None) =
        (fields.next(), fields.next(), fields.next(), fields.next())
    else {
        return Err(Failure::malformed(
            "PLAIN message needs exactly three fields",
        ));
    };
    let text = |b: &'a [u8]| {
        std::str::from_utf8(b).map_err(|_| Failure::malformed("PLAIN field not UTF-8"))
    };
    let msg = PlainMessage {
        authzid: text(authzid)?,
        authcid: text(authcid)?,
        password: text(password)?,
    };
    if msg.authcid.is_empty() || msg.password.is_empty() {
        return Err(Failure::malformed("empty PLAIN authcid or password"));
    }
    Ok(msg)
}

enum State {
    /// Waiting for the message; `asked` once we sent an empty challenge.
    Start { asked: bool },
    /// Succeeded or failed.
    Done,
}

/// One PLAIN exchange on the server.
pub struct PlainMechanism {
    ctx: SaslContext,
    state: State,
}

impl PlainMechanism {
    /// A new exchange on `ctx`. Callers must only offer PLAIN over TLS
    /// ([`super::new_mechanism`] does).
    pub fn new(ctx: SaslContext) -> Self {
        PlainMechanism {
            ctx,
            state: State::Start { asked: false },
        }
    }

    fn authenticate(&self, payload: &[u8]) -> Result<Response, Failure> {
        let msg = parse(payload)?;
        let localpart = normalize_username(msg.authcid);
        if let (false, Some(user)) = (msg.authzid.is_empty(), &localpart) {
            check_authzid(msg.authzid, user, &self.ctx.domain)?;
        }
        let stored = localpart
            .as_deref()
            .and_then(|user| self.ctx.store.credentials(user));
        let verified = match stored {
            Some(mut creds) => {
                let ok = creds.verify_password(msg.password);
                if let (true, true, Some(user)) = (ok, creds.needs_upgrade(), &localpart) {
                    // Imported with SCRAM-SHA-1 secrets only: now that the
                    // password is known, make full credentials.
                    if let Ok(mut full) =
                        StoredCredentials::derive(msg.password, creds.sha1.iterations)
                    {
                        self.ctx.store.upgrade(user, &full);
                        wipe_credentials(&mut full);
                    }
                }
                wipe_credentials(&mut creds);
                ok
            }
            None => {
                // Same work as a real check; the result is meaningless.
                let _ = dummy_credentials().verify_password(msg.password);
                false
            }
        };
        match localpart {
            Some(user) if verified => Ok(Response::Success(Identity::Username(user), Vec::new())),
            _ => Err(Failure::not_authorized("bad PLAIN credentials")),
        }
    }
}

impl Mechanism for PlainMechanism {
    fn name(&self) -> &str {
        NAME
    }

    fn respond(&mut self, payload: &[u8]) -> Result<Response, MechanismError> {
        match std::mem::replace(&mut self.state, State::Done) {
            State::Start { asked: false } if payload.is_empty() => {
                // No initial response: ask for it with an empty challenge.
                self.state = State::Start { asked: true };
                Ok(Response::Proceed(Vec::new()))
            }
            State::Start { .. } => self.authenticate(payload).map_err(|f| f.into_error(NAME)),
            State::Done => Err(MechanismError::SaslSessionAlreadyOver),
        }
    }
}

impl ServerMechanism for PlainMechanism {
    fn failure_condition(&self, err: &MechanismError) -> &'static str {
        Condition::from_error(err).as_str()
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_util::*;
    use super::super::{new_mechanism, ChannelBindings};
    use super::*;

    fn run(payload: &[u8]) -> Result<String, &'static str> {
        let c = ctx(true, ChannelBindings::default());
        let mut m = new_mechanism("PLAIN", &c).unwrap();
        match m.respond(payload) {
            Ok(Response::Success(Identity::Username(u), extra)) => {
                assert!(extra.is_empty());
                Ok(u)
            }
            Ok(other) => panic!("unexpected {other:?}"),
            Err(e) => Err(m.failure_condition(&e)),
        }
    }

    #[test]
    fn refused_without_tls() {
        let c = ctx(false, full_bindings());
        assert!(new_mechanism("PLAIN", &c).is_none());
        assert!(new_mechanism("PLAIN", &ctx(true, ChannelBindings::default())).is_some());
    }

    #[test]
    fn right_and_wrong_passwords() {
        assert_eq!(run(b"\0alice\0wonderland").as_deref(), Ok("alice"));
        assert_eq!(run(b"\0Alice\0wonderland").as_deref(), Ok("alice"));
        assert_eq!(run(b"\0alice\0Wonderland"), Err("not-authorized"));
        assert_eq!(run(b"\0a,b=c\0commas").as_deref(), Ok("a,b=c"));
    }

    #[test]
    fn unknown_or_invalid_user_not_authorized() {
        assert_eq!(run(b"\0ghost\0wonderland"), Err("not-authorized"));
        assert_eq!(run(b"\0alice@localhost\0wonderland"), Err("not-authorized"));
        assert_eq!(run(b"\0no body\0wonderland"), Err("not-authorized"));
    }

    #[test]
    fn authzid_impersonation_refused() {
        // The ejabberd bug: valid credentials for alice, authzid bob.
        assert_eq!(
            run(b"bob@localhost\0alice\0wonderland"),
            Err("invalid-authzid")
        );
        assert_eq!(run(b"bob\0alice\0wonderland"), Err("invalid-authzid"));
        assert_eq!(
            run(b"alice@elsewhere\0alice\0wonderland"),
            Err("invalid-authzid")
        );
        assert_eq!(
            run(b"alice@localhost/res\0alice\0wonderland"),
            Err("invalid-authzid")
        );
        assert_eq!(
            run(b"alice@localhost\0alice\0wonderland").as_deref(),
            Ok("alice")
        );
        assert_eq!(
            run(b"ALICE@LocalHost\0alice\0wonderland").as_deref(),
            Ok("alice")
        );
        assert_eq!(run(b"alice\0alice\0wonderland").as_deref(), Ok("alice"));
    }

    #[test]
    fn malformed_messages() {
        for bad in [
            &b"alice\0wonderland"[..],
            b"\0alice\0wonderland\0",
            b"\0\0wonderland",
            b"\0alice\0",
            b"\0al\xffice\0wonderland",
            b"noseparators",
        ] {
            assert_eq!(
                run(bad),
                Err("malformed-request"),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn empty_initial_response_and_completion() {
        let c = ctx(true, ChannelBindings::default());
        let mut m = new_mechanism("PLAIN", &c).unwrap();
        assert_eq!(m.respond(b"").unwrap(), Response::Proceed(Vec::new()));
        assert!(matches!(
            m.respond(b"\0alice\0wonderland"),
            Ok(Response::Success(..))
        ));
        let e = m.respond(b"\0alice\0wonderland").unwrap_err();
        assert_eq!(e, MechanismError::SaslSessionAlreadyOver);
        assert_eq!(m.failure_condition(&e), "malformed-request");

        // After a failure, too.
        let mut m = new_mechanism("PLAIN", &c).unwrap();
        assert!(m.respond(b"\0alice\0nope").is_err());
        assert_eq!(
            m.respond(b"\0alice\0wonderland").unwrap_err(),
            MechanismError::SaslSessionAlreadyOver
        );
    }
}
