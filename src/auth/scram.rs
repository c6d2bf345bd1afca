//! The SCRAM mechanisms (RFC 5802, RFC 7677): SCRAM-SHA-1, SCRAM-SHA-256
//! and their -PLUS variants with the channel-binding types `tls-exporter`
//! (RFC 9266) and `tls-server-end-point` (RFC 5929).
//!
//! The server side works from stored credentials only (StoredKey and
//! ServerKey, never the password); the client proof is checked in constant
//! time. An unknown user gets a server-first message of the same shape,
//! with a salt derived deterministically from a per-process random key and
//! the username, and fails only at the end, so accounts cannot be
//! enumerated.

use std::sync::OnceLock;

use base64::{engine::general_purpose::STANDARD as B64, Engine as _};
use rand::RngCore;
use sasl::common::Identity;
use sasl::server::{Mechanism, MechanismError, Response};
use subtle::{Choice, ConstantTimeEq};

use super::credentials::{digest, hmac, ScramHash, ScramSecret, DEFAULT_ITERATIONS};
use super::{
    check_authzid, normalize_username, unescape_saslname, wipe, wipe_credentials, Condition,
    Failure, SaslContext, ServerMechanism,
};

/// The RFC 9266 channel-binding type name.
pub const TLS_EXPORTER: &str = "tls-exporter";
/// The RFC 5929 channel-binding type name.
pub const TLS_SERVER_END_POINT: &str = "tls-server-end-point";

/// Random bytes in our part of the nonce (base64-encoded on the wire).
const SERVER_NONCE_BYTES: usize = 24;
/// Length of the salts we fake for unknown users (as `StoredCredentials`).
const FAKE_SALT_LEN: usize = 16;

/// The per-process key the fake salts of unknown users are derived from.
fn fake_salt_key() -> &'static [u8; 32] {
    static KEY: OnceLock<[u8; 32]> = OnceLock::new();
    KEY.get_or_init(|| {
        let mut key = [0u8; 32];
        rand::thread_rng().fill_bytes(&mut key);
        key
    })
}

/// A secret for a user that does not exist: a salt that is the same on
/// every attempt for this name (as a real one would be), the default
/// iteration count, and random keys no proof can match.
fn fake_secret(hash: ScramHash, username: &str) -> ScramSecret {
    let label: &[u8] = match hash {
        ScramHash::Sha1 => b"SCRAM-SHA-1",
        ScramHash::Sha256 => b"SCRAM-SHA-256",
    };
    let mut data = Vec::with_capacity(label.len() + 1 + username.len());
    data.extend_from_slice(label);
    data.push(0);
    data.extend_from_slice(username.as_bytes());
    let mut salt = hmac(ScramHash::Sha256, fake_salt_key(), &data);
    salt.truncate(FAKE_SALT_LEN);
    let key_len = digest(hash, b"").len();
    let mut stored_key = vec![0u8; key_len];
    let mut server_key = vec![0u8; key_len];
    rand::thread_rng().fill_bytes(&mut stored_key);
    rand::thread_rng().fill_bytes(&mut server_key);
    ScramSecret {
        salt,
        iterations: DEFAULT_ITERATIONS,
        stored_key,
        server_key,
    }
}

/// What the client asked for in the GS2 channel-binding flag.
#[derive(Debug, PartialEq, Eq)]
enum CbFlag<'a> {
    /// `n`: the client does not support channel binding.
    No,
    /// `y`: the client supports it but thinks the server does not.
    ClientOnly,
    /// `p=<name>`: the client binds to this channel-binding type.
    Bound(&'a str),
}

/// The parsed client-first message.
#[derive(Debug)]
struct ClientFirst<'a> {
    gs2_header: &'a str,
    cb_flag: CbFlag<'a>,
    authzid: Option<String>,
    username: String,
    client_nonce: &'a str,
    bare: &'a str,
}

/// Whether `c` may appear in a nonce (`printable` in RFC 5802).
fn nonce_char(c: char) -> bool {
    matches!(c, '\x21'..='\x2b' | '\x2d'..='\x7e')
}

/// Check an extension attribute (`ALPHA "=" 1*value-char`): mandatory
/// extensions (`m=`), attributes the base protocol defines and bad syntax
/// fail; other optional extensions are ignored (RFC 5802 §5).
fn check_extension(attr: &str) -> Result<(), Failure> {
    let mut chars = attr.chars();
    let name = chars.next();
    let eq = chars.next();
    let value = chars.as_str();
    match (name, eq) {
        (Some('m'), Some('=')) => Err(Failure::malformed("mandatory extension")),
        (Some(n), Some('='))
            if n.is_ascii_alphabetic()
                && !"acinprsve".contains(n)
                && !value.is_empty()
                && !value.contains('\0') =>
        {
            Ok(())
        }
        _ => Err(Failure::malformed("bad or misplaced attribute")),
    }
}

/// Whether `name` is a syntactically valid cb-name (`1*(ALPHA / DIGIT / "." / "-")`).
fn valid_cb_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-')
}

fn parse_client_first(payload: &[u8]) -> Result<ClientFirst<'_>, Failure> {
    let msg =
        std::str::from_utf8(payload).map_err(|_| Failure::malformed("client-first not UTF-8"))?;
    let (flag, rest) = msg
        .split_once(',')
        .ok_or(Failure::malformed("no GS2 header"))?;
    let (authz, bare) = rest
        .split_once(',')
        .ok_or(Failure::malformed("no GS2 header"))?;
    let gs2_header = &msg[..flag.len() + authz.len() + 2];

    let cb_flag = match flag {
        "n" => CbFlag::No,
        "y" => CbFlag::ClientOnly,
        _ => match flag.strip_prefix("p=") {
            Some(name) if valid_cb_name(name) => CbFlag::Bound(name),
            _ => return Err(Failure::malformed("bad channel-binding flag")),
        },
    };
    let authzid = if authz.is_empty() {
        None
    } else {
        let name = authz
            .strip_prefix("a=")
            .ok_or(Failure::malformed("bad authzid attribute"))?;
        Some(unescape_saslname(name)?)
    };

    let mut attrs = bare.split(',');
    let first = attrs.next().unwrap_or_default();
    if first.starts_with("m=") {
        return Err(Failure::malformed("mandatory extension"));
    }
    let username = unescape_saslname(
        first
            .strip_prefix("n=")
            .ok_or(Failure::malformed("no username"))?,
    )?;
    let client_nonce = attrs
        .next()
        .and_then(|a| a.strip_prefix("r="))
        .ok_or(Failure::malformed("no nonce"))?;
    if client_nonce.is_empty() || !client_nonce.chars().all(nonce_char) {
        return Err(Failure::malformed("bad nonce"));
    }
    for ext in attrs {
        check_extension(ext)?;
    }
    Ok(ClientFirst {
        gs2_header,
        cb_flag,
        authzid,
        username,
        client_nonce,
        bare,
    })
}

/// The parsed client-final message.
struct ClientFinal<'a> {
    without_proof: &'a str,
    channel_binding: Vec<u8>,
    nonce: &'a str,
    proof: Vec<u8>,
}

fn parse_client_final(payload: &[u8]) -> Result<ClientFinal<'_>, Failure> {
    let msg =
        std::str::from_utf8(payload).map_err(|_| Failure::malformed("client-final not UTF-8"))?;
    let (without_proof, proof_attr) = msg
        .rsplit_once(',')
        .ok_or(Failure::malformed("client-final too short"))?;
    let proof_b64 = proof_attr
        .strip_prefix("p=")
        .ok_or(Failure::malformed("no proof"))?;
    let mut attrs = without_proof.split(',');
    let first = attrs.next().unwrap_or_default();
    if first.starts_with("m=") {
        return Err(Failure::malformed("mandatory extension"));
    }
    let cb_b64 = first
        .strip_prefix("c=")
        .ok_or(Failure::malformed("no channel binding"))?;
    let nonce = attrs
        .next()
        .and_then(|a| a.strip_prefix("r="))
        .ok_or(Failure::malformed("no nonce"))?;
    for ext in attrs {
        check_extension(ext)?;
    }
    let channel_binding = B64.decode(cb_b64).map_err(|_| {
        Failure::new(
            Condition::IncorrectEncoding,
            "bad base64 in channel binding",
        )
    })?;
    let proof = B64
        .decode(proof_b64)
        .map_err(|_| Failure::new(Condition::IncorrectEncoding, "bad base64 in proof"))?;
    Ok(ClientFinal {
        without_proof,
        channel_binding,
        nonce,
        proof,
    })
}

/// State kept between server-first and client-final.
struct Pending {
    /// The normalised localpart (or, for an invalid name, the raw one).
    identity: String,
    /// Whether the account exists; if not the exchange always fails.
    known: bool,
    secret: ScramSecret,
    client_first_bare: String,
    server_first: String,
    nonce: String,
    /// The expected `c=` content: GS2 header plus channel-binding data.
    cbind_input: Vec<u8>,
}

impl Drop for Pending {
    fn drop(&mut self) {
        wipe(&mut self.secret.stored_key);
        wipe(&mut self.secret.server_key);
    }
}

enum State {
    /// Waiting for client-first; `asked` once we sent an empty challenge.
    Start { asked: bool },
    /// Server-first sent, waiting for client-final.
    Challenged(Box<Pending>),
    /// Succeeded or failed: no more messages.
    Done,
}

/// One SCRAM exchange on the server.
pub struct ScramMechanism {
    name: &'static str,
    hash: ScramHash,
    plus: bool,
    ctx: SaslContext,
    state: State,
    /// Our part of the nonce, fixed only by tests (RFC test vectors).
    fixed_server_nonce: Option<String>,
}

impl ScramMechanism {
    /// A new exchange for SCRAM-`hash` (`-PLUS` if `plus`) on `ctx`.
    pub fn new(hash: ScramHash, plus: bool, ctx: SaslContext) -> Self {
        let name = match (hash, plus) {
            (ScramHash::Sha1, false) => "SCRAM-SHA-1",
            (ScramHash::Sha1, true) => "SCRAM-SHA-1-PLUS",
            (ScramHash::Sha256, false) => "SCRAM-SHA-256",
            (ScramHash::Sha256, true) => "SCRAM-SHA-256-PLUS",
        };
        ScramMechanism {
            name,
            hash,
            plus,
            ctx,
            state: State::Start { asked: false },
            fixed_server_nonce: None,
        }
    }

    /// Test-only: use `server_nonce` as our part of the nonce.
    #[cfg(test)]
    pub(crate) fn with_server_nonce(mut self, server_nonce: &str) -> Self {
        self.fixed_server_nonce = Some(server_nonce.to_owned());
        self
    }

    /// The channel-binding data the client must have bound to, per its flag.
    fn channel_binding_data(&self, flag: &CbFlag<'_>) -> Result<Vec<u8>, Failure> {
        match (flag, self.plus) {
            (CbFlag::No, false) => Ok(Vec::new()),
            (CbFlag::ClientOnly, false) => {
                if self.ctx.bindings.any() {
                    Err(Failure::not_authorized(
                        "client claims no channel binding offered (downgrade)",
                    ))
                } else {
                    Ok(Vec::new())
                }
            }
            (CbFlag::Bound(_), false) => Err(Failure::not_authorized(
                "channel binding requested on a non-PLUS mechanism",
            )),
            (CbFlag::No | CbFlag::ClientOnly, true) => Err(Failure::not_authorized(
                "-PLUS mechanism without channel binding",
            )),
            (CbFlag::Bound(name), true) => self
                .ctx
                .bindings
                .data_for(name)
                .map(<[u8]>::to_vec)
                .ok_or(Failure::not_authorized("unsupported channel-binding type")),
        }
    }

    fn client_first(&self, payload: &[u8]) -> Result<(Vec<u8>, Pending), Failure> {
        let first = parse_client_first(payload)?;
        let cb_data = self.channel_binding_data(&first.cb_flag)?;

        let localpart = normalize_username(&first.username);
        if let (Some(authzid), Some(user)) = (&first.authzid, &localpart) {
            check_authzid(authzid, user, &self.ctx.domain)?;
        }
        let stored = localpart
            .as_deref()
            .and_then(|user| self.ctx.store.credentials(user));
        let identity = localpart.unwrap_or(first.username);
        let (secret, known) = match stored {
            Some(mut creds) => {
                let secret = creds.secret(self.hash).cloned();
                wipe_credentials(&mut creds);
                match secret {
                    Some(secret) => (secret, true),
                    None => {
                        // An account imported with SCRAM-SHA-1 secrets only
                        // (Prosody): go on as for an unknown user, so the
                        // client learns nothing, and fail at the end.
                        tracing::info!(
                            "{} for {identity}@{} refused: the account has only SCRAM-SHA-1 \
                             credentials (imported); it gets SCRAM-SHA-256 ones at its next \
                             PLAIN login over TLS or password change",
                            self.name,
                            self.ctx.domain
                        );
                        (fake_secret(self.hash, &identity), false)
                    }
                }
            }
            None => (fake_secret(self.hash, &identity), false),
        };

        let server_part = match &self.fixed_server_nonce {
            Some(fixed) => fixed.clone(),
            None => {
                let mut bytes = [0u8; SERVER_NONCE_BYTES];
                rand::thread_rng().fill_bytes(&mut bytes);
                B64.encode(bytes)
            }
        };
        let nonce = format!("{}{}", first.client_nonce, server_part);
        let mut server_first = format!(
            "r={},s={},i={}",
            nonce,
            B64.encode(&secret.salt),
            secret.iterations
        );
        if let Some(input) = &self.ctx.ssdp {
            // XEP-0474: signed by the proof as part of the AuthMessage.
            server_first.push_str(",h=");
            server_first.push_str(&super::ssdp::hash(self.hash, input));
        }
        let mut cbind_input = first.gs2_header.as_bytes().to_vec();
        cbind_input.extend_from_slice(&cb_data);
        let pending = Pending {
            identity,
            known,
            secret,
            client_first_bare: first.bare.to_owned(),
            server_first: server_first.clone(),
            nonce,
            cbind_input,
        };
        Ok((server_first.into_bytes(), pending))
    }

    fn client_final(&self, p: &Pending, payload: &[u8]) -> Result<Response, Failure> {
        let fin = parse_client_final(payload)?;
        let auth_message = format!(
            "{},{},{}",
            p.client_first_bare, p.server_first, fin.without_proof
        );
        let client_signature = hmac(self.hash, &p.secret.stored_key, auth_message.as_bytes());
        // ClientKey = proof XOR ClientSignature (zero-extended if the proof
        // has the wrong length; that case fails below).
        let mut client_key: Vec<u8> = client_signature
            .iter()
            .enumerate()
            .map(|(i, s)| fin.proof.get(i).copied().unwrap_or(0) ^ s)
            .collect();
        let key_ok = digest(self.hash, &client_key).ct_eq(&p.secret.stored_key);
        wipe(&mut client_key);
        let len_ok = Choice::from(u8::from(fin.proof.len() == client_signature.len()));
        let cb_ok = fin.channel_binding.ct_eq(&p.cbind_input);
        let nonce_ok = fin.nonce.as_bytes().ct_eq(p.nonce.as_bytes());
        let known = Choice::from(u8::from(p.known));
        if !bool::from(key_ok & len_ok & cb_ok & nonce_ok & known) {
            return Err(Failure::not_authorized(
                "bad proof, nonce or channel binding, or unknown user",
            ));
        }
        let server_signature = hmac(self.hash, &p.secret.server_key, auth_message.as_bytes());
        Ok(Response::Success(
            Identity::Username(p.identity.clone()),
            format!("v={}", B64.encode(server_signature)).into_bytes(),
        ))
    }
}

impl Mechanism for ScramMechanism {
    fn name(&self) -> &str {
        self.name
    }

    fn respond(&mut self, payload: &[u8]) -> Result<Response, MechanismError> {
        let result = match std::mem::replace(&mut self.state, State::Done) {
            State::Start { asked: false } if payload.is_empty() => {
                // No initial response: ask for the client-first message.
                self.state = State::Start { asked: true };
                return Ok(Response::Proceed(Vec::new()));
            }
            State::Start { .. } => self.client_first(payload).map(|(server_first, pending)| {
                self.state = State::Challenged(Box::new(pending));
                Response::Proceed(server_first)
            }),
            State::Challenged(pending) => self.client_final(&pending, payload),
            State::Done => return Err(MechanismError::SaslSessionAlreadyOver),
        };
        result.map_err(|f| f.into_error(self.name))
    }
}

impl ServerMechanism for ScramMechanism {
    fn failure_condition(&self, err: &MechanismError) -> &'static str {
        Condition::from_error(err).as_str()
    }
}

#[cfg(test)]
mod tests {
    use super::super::credentials::StoredCredentials;
    use super::super::test_util::*;
    use super::super::{new_mechanism, ChannelBindings, CredentialStore};
    use super::*;
    use sasl::client::mechanisms::Scram;
    use sasl::client::Mechanism as ClientMechanism;
    use sasl::common::scram::{ScramProvider, Sha1, Sha256};
    use sasl::common::ChannelBinding;
    use std::collections::HashMap;
    use std::sync::Arc;

    fn condition(mech: &dyn ServerMechanism, err: &MechanismError) -> &'static str {
        mech.failure_condition(err)
    }

    fn proceed(r: Response) -> Vec<u8> {
        match r {
            Response::Proceed(v) => v,
            other => panic!("expected Proceed, got {other:?}"),
        }
    }

    /// Run a whole exchange with the sasl crate's client; returns the
    /// server's result for the client-final message.
    fn run_client<S: ScramProvider>(
        mech_name: &str,
        ctx: &SaslContext,
        user: &str,
        password: &str,
        cb: ChannelBinding,
    ) -> (Box<dyn ServerMechanism>, Result<Response, MechanismError>) {
        let mut client = Scram::<S>::new(user, password, cb).unwrap();
        assert_eq!(client.name(), mech_name);
        let mut server = new_mechanism(mech_name, ctx).unwrap();
        let first = client.initial();
        let server_first = proceed(server.respond(&first).unwrap());
        let fin = client.response(&server_first).unwrap();
        let result = server.respond(&fin);
        if let Ok(Response::Success(_, ref v)) = result {
            client.success(v).unwrap();
        }
        (server, result)
    }

    fn assert_success(result: Result<Response, MechanismError>, user: &str) {
        match result {
            Ok(Response::Success(Identity::Username(u), _)) => assert_eq!(u, user),
            other => panic!("expected success, got {other:?}"),
        }
    }

    fn assert_fails(
        mech: &dyn ServerMechanism,
        result: Result<Response, MechanismError>,
        cond: &str,
    ) {
        match result {
            Err(e) => assert_eq!(condition(mech, &e), cond, "{e:?}"),
            Ok(r) => panic!("expected {cond}, got {r:?}"),
        }
    }

    #[test]
    fn sha1_and_sha256_with_sasl_client() {
        let c = ctx(false, ChannelBindings::default());
        let (_, r) = run_client::<Sha1>(
            "SCRAM-SHA-1",
            &c,
            "alice",
            "wonderland",
            ChannelBinding::None,
        );
        assert_success(r, "alice");
        let (_, r) = run_client::<Sha256>(
            "SCRAM-SHA-256",
            &c,
            "alice",
            "wonderland",
            ChannelBinding::None,
        );
        assert_success(r, "alice");
        // The username is normalised: the identity is the localpart.
        let (_, r) = run_client::<Sha256>(
            "SCRAM-SHA-256",
            &c,
            "Alice",
            "wonderland",
            ChannelBinding::None,
        );
        assert_success(r, "alice");
    }

    #[test]
    fn wrong_password_fails() {
        let c = ctx(false, ChannelBindings::default());
        let (m, r) = run_client::<Sha1>("SCRAM-SHA-1", &c, "alice", "wrong", ChannelBinding::None);
        assert_fails(&*m, r, "not-authorized");
        let (m, r) = run_client::<Sha256>(
            "SCRAM-SHA-256",
            &c,
            "alice",
            "Wonderland",
            ChannelBinding::None,
        );
        assert_fails(&*m, r, "not-authorized");
    }

    #[test]
    fn plus_with_tls_exporter_via_sasl_client() {
        let c = ctx(true, full_bindings());
        let (_, r) = run_client::<Sha256>(
            "SCRAM-SHA-256-PLUS",
            &c,
            "alice",
            "wonderland",
            ChannelBinding::TlsExporter(vec![7u8; 32]),
        );
        assert_success(r, "alice");
        // Different exporter data (another TLS session): mismatch.
        let (m, r) = run_client::<Sha1>(
            "SCRAM-SHA-1-PLUS",
            &c,
            "alice",
            "wonderland",
            ChannelBinding::TlsExporter(vec![8u8; 32]),
        );
        assert_fails(&*m, r, "not-authorized");
    }

    #[test]
    fn rfc7677_test_vector() {
        let salt = B64.decode("W22ZaJ0SNY7soEsUEjb6gQ==").unwrap();
        let creds = StoredCredentials {
            sha1: ScramSecret::derive(ScramHash::Sha1, "pencil", salt.clone(), 4096),
            sha256: Some(ScramSecret::derive(ScramHash::Sha256, "pencil", salt, 4096)),
        };
        let mut users = HashMap::new();
        users.insert("user".to_owned(), creds);
        let store: Arc<dyn CredentialStore> = Arc::new(MemStore(users));
        let c = SaslContext {
            domain: "localhost".into(),
            tls: false,
            bindings: ChannelBindings::default(),
            store,
            sha256: true,
            ssdp: None,
            fast: None,
        };
        let mut m = ScramMechanism::new(ScramHash::Sha256, false, c)
            .with_server_nonce("%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0");
        let sf = proceed(m.respond(b"n,,n=user,r=rOprNGfwEbeRWgbNEkqO").unwrap());
        assert_eq!(
            sf,
            b"r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096"
        );
        let r = m
            .respond(b"c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=")
            .unwrap();
        assert_eq!(
            r,
            Response::Success(
                Identity::Username("user".into()),
                b"v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=".to_vec()
            )
        );
        // Done: any further message is an error.
        let e = m.respond(b"c=biws").unwrap_err();
        assert_eq!(e, MechanismError::SaslSessionAlreadyOver);
        assert_eq!(m.failure_condition(&e), "malformed-request");
    }

    /// XEP-0474 §5.3's full example, byte for byte: SCRAM-SHA-1-PLUS with
    /// tls-exporter (fake channel-binding data 'THIS IS FAKE CB DATA'), the
    /// server-first carrying `h`, the client's proof over it, and the server
    /// signature the example's `<success/>` carries.
    #[test]
    fn xep_0474_full_example() {
        let salt = B64.decode("QSXCR+Q6sek8bf92").unwrap();
        let creds = StoredCredentials {
            sha1: ScramSecret::derive(ScramHash::Sha1, "pencil", salt.clone(), 4096),
            sha256: Some(ScramSecret::derive(ScramHash::Sha256, "pencil", salt, 4096)),
        };
        let mut users = HashMap::new();
        users.insert("user".to_owned(), creds);
        let store: Arc<dyn CredentialStore> = Arc::new(MemStore(users));
        let bindings = ChannelBindings {
            tls_exporter: Some(b"THIS IS FAKE CB DATA".to_vec()),
            tls_server_end_point: Some(vec![0; 32]),
        };
        let c = SaslContext {
            domain: "example.org".into(),
            tls: true,
            bindings,
            store,
            sha256: false,
            fast: None,
            ssdp: Some(super::super::ssdp::input(
                &["SCRAM-SHA-1", "SCRAM-SHA-1-PLUS"],
                Some(&["tls-server-end-point", "tls-exporter"]),
            )),
        };
        let mut m = ScramMechanism::new(ScramHash::Sha1, true, c)
            .with_server_nonce("a09117a6-ac50-4f2f-93f1-93799c2bddf6");
        let first = B64
            .decode("cD10bHMtZXhwb3J0ZXIsLG49dXNlcixyPTEyQzRDRDVDLUUzOEUtNEE5OC04RjZELTE1QzM4RjUxQ0NDNg==")
            .unwrap();
        let sf = proceed(m.respond(&first).unwrap());
        assert_eq!(
            B64.encode(&sf),
            "cj0xMkM0Q0Q1Qy1FMzhFLTRBOTgtOEY2RC0xNUMzOEY1MUNDQzZhMDkxMTdhNi1hYzUwLTRmMmYtOTNmMS05Mzc5OWMyYmRkZjYscz1RU1hDUitRNnNlazhiZjkyLGk9NDA5NixoPUc2ay9yQkxEcWdPaFJSYUN1dWF0U0RGa0owOD0="
        );
        let fin = B64
            .decode("Yz1jRDEwYkhNdFpYaHdiM0owWlhJc0xGUklTVk1nU1ZNZ1JrRkxSU0JEUWlCRVFWUkIscj0xMkM0Q0Q1Qy1FMzhFLTRBOTgtOEY2RC0xNUMzOEY1MUNDQzZhMDkxMTdhNi1hYzUwLTRmMmYtOTNmMS05Mzc5OWMyYmRkZjYseD0xOUM2NTMyRi0xQ0Y0LTRBMjctQTE4RC1EQzlDRUE0MUJCQjMscD1NL1NJRGpUK2RmY3hVaDg5alpFeXBSdkZ4QjQ9")
            .unwrap();
        let r = m.respond(&fin).unwrap();
        let Response::Success(Identity::Username(user), data) = r else {
            panic!("expected success, got {r:?}");
        };
        assert_eq!(user, "user");
        assert_eq!(B64.encode(data), "dj1NUXJNUHZ2N3l2NHg0Q3E0VzRJaDI1RXFTMmM9");
    }

    /// The same exchange when the client was shown a stripped list (no
    /// -PLUS mechanism): the `h` differs from what the client computes, and
    /// a proof made over the server's real `h`-less view fails.
    #[test]
    fn xep_0474_stripped_list_fails_proof() {
        let salt = B64.decode("QSXCR+Q6sek8bf92").unwrap();
        let creds = StoredCredentials {
            sha1: ScramSecret::derive(ScramHash::Sha1, "pencil", salt, 4096),
            sha256: None,
        };
        let mut users = HashMap::new();
        users.insert("user".to_owned(), creds);
        let store: Arc<dyn CredentialStore> = Arc::new(MemStore(users));
        let c = SaslContext {
            domain: "example.org".into(),
            tls: true,
            bindings: ChannelBindings {
                tls_exporter: Some(b"THIS IS FAKE CB DATA".to_vec()),
                tls_server_end_point: None,
            },
            store,
            sha256: false,
            fast: None,
            ssdp: Some(super::super::ssdp::input(
                &["SCRAM-SHA-1", "SCRAM-SHA-1-PLUS"],
                Some(&["tls-exporter"]),
            )),
        };
        let mut m = ScramMechanism::new(ScramHash::Sha1, true, c)
            .with_server_nonce("a09117a6-ac50-4f2f-93f1-93799c2bddf6");
        let sf = proceed(
            m.respond(b"p=tls-exporter,,n=user,r=12C4CD5C-E38E-4A98-8F6D-15C38F51CCC6")
                .unwrap(),
        );
        let sf = String::from_utf8(sf).unwrap();
        let h = sf.rsplit_once(",h=").unwrap().1;
        let seen_by_client = super::super::ssdp::hash(
            ScramHash::Sha1,
            &super::super::ssdp::input(&["SCRAM-SHA-1"], Some(&["tls-exporter"])),
        );
        assert_ne!(
            h, seen_by_client,
            "a stripped mechanism list must be detected"
        );
        // The example's proof was made over another server-first: refused.
        let fin = B64
            .decode("Yz1jRDEwYkhNdFpYaHdiM0owWlhJc0xGUklTVk1nU1ZNZ1JrRkxSU0JEUWlCRVFWUkIscj0xMkM0Q0Q1Qy1FMzhFLTRBOTgtOEY2RC0xNUMzOEY1MUNDQzZhMDkxMTdhNi1hYzUwLTRmMmYtOTNmMS05Mzc5OWMyYmRkZjYseD0xOUM2NTMyRi0xQ0Y0LTRBMjctQTE4RC1EQzlDRUE0MUJCQjMscD1NL1NJRGpUK2RmY3hVaDg5alpFeXBSdkZ4QjQ9")
            .unwrap();
        let e = m.respond(&fin).unwrap_err();
        assert_eq!(m.failure_condition(&e), "not-authorized");
    }

    /// A hand-made client: builds client-final for `server_first`.
    struct HandClient {
        hash: ScramHash,
        password: &'static str,
        gs2_header: String,
        cb_data: Vec<u8>,
        bare: String,
    }

    impl HandClient {
        fn new(hash: ScramHash, gs2_header: &str, user: &str, password: &'static str) -> Self {
            HandClient {
                hash,
                password,
                gs2_header: gs2_header.to_owned(),
                cb_data: Vec::new(),
                bare: format!("n={user},r=clientnonce123"),
            }
        }

        fn first(&self) -> Vec<u8> {
            format!("{}{}", self.gs2_header, self.bare).into_bytes()
        }

        /// Returns client-final and the server signature we expect.
        fn fin(&self, server_first: &[u8]) -> (Vec<u8>, Vec<u8>) {
            let sf = std::str::from_utf8(server_first).unwrap();
            let mut parts = sf.split(',');
            let nonce = parts.next().unwrap().strip_prefix("r=").unwrap();
            assert!(nonce.starts_with("clientnonce123"));
            assert!(B64.decode(&nonce["clientnonce123".len()..]).unwrap().len() >= 18);
            let salt = B64
                .decode(parts.next().unwrap().strip_prefix("s=").unwrap())
                .unwrap();
            let iterations: u32 = parts
                .next()
                .unwrap()
                .strip_prefix("i=")
                .unwrap()
                .parse()
                .unwrap();
            let mut salted = vec![0u8; digest(self.hash, b"").len()];
            match self.hash {
                ScramHash::Sha1 => pbkdf2::pbkdf2_hmac::<sha1::Sha1>(
                    self.password.as_bytes(),
                    &salt,
                    iterations,
                    &mut salted,
                ),
                ScramHash::Sha256 => pbkdf2::pbkdf2_hmac::<sha2::Sha256>(
                    self.password.as_bytes(),
                    &salt,
                    iterations,
                    &mut salted,
                ),
            }
            let client_key = hmac(self.hash, &salted, b"Client Key");
            let server_key = hmac(self.hash, &salted, b"Server Key");
            let stored_key = digest(self.hash, &client_key);
            let mut cbind = self.gs2_header.as_bytes().to_vec();
            cbind.extend_from_slice(&self.cb_data);
            let without_proof = format!("c={},r={}", B64.encode(cbind), nonce);
            let auth = format!("{},{},{}", self.bare, sf, without_proof);
            let sig = hmac(self.hash, &stored_key, auth.as_bytes());
            let proof: Vec<u8> = client_key.iter().zip(&sig).map(|(a, b)| a ^ b).collect();
            let server_sig = hmac(self.hash, &server_key, auth.as_bytes());
            (
                format!("{},p={}", without_proof, B64.encode(proof)).into_bytes(),
                format!("v={}", B64.encode(server_sig)).into_bytes(),
            )
        }

        /// Run against a fresh server mechanism.
        fn run(
            &self,
            mech: &str,
            ctx: &SaslContext,
        ) -> (Box<dyn ServerMechanism>, Result<Response, MechanismError>) {
            let mut server = new_mechanism(mech, ctx).unwrap();
            let sf = match server.respond(&self.first()) {
                Ok(r) => proceed(r),
                Err(e) => return (server, Err(e)),
            };
            let (fin, expected_v) = self.fin(&sf);
            let r = server.respond(&fin);
            if let Ok(Response::Success(_, ref v)) = r {
                assert_eq!(v, &expected_v);
            }
            (server, r)
        }
    }

    #[test]
    fn plus_with_both_binding_types_by_hand() {
        let c = ctx(true, full_bindings());
        for (hash, mech) in [
            (ScramHash::Sha256, "SCRAM-SHA-256-PLUS"),
            (ScramHash::Sha1, "SCRAM-SHA-1-PLUS"),
        ] {
            let mut hc = HandClient::new(hash, "p=tls-server-end-point,,", "alice", "wonderland");
            hc.cb_data = vec![9u8; 32];
            let (_, r) = hc.run(mech, &c);
            assert_success(r, "alice");

            let mut hc = HandClient::new(hash, "p=tls-exporter,,", "alice", "wonderland");
            hc.cb_data = vec![7u8; 32];
            let (_, r) = hc.run(mech, &c);
            assert_success(r, "alice");

            // Mismatching data for the chosen type.
            let mut hc = HandClient::new(hash, "p=tls-server-end-point,,", "alice", "wonderland");
            hc.cb_data = vec![7u8; 32];
            let (m, r) = hc.run(mech, &c);
            assert_fails(&*m, r, "not-authorized");

            // Empty cb data although binding was requested.
            let hc = HandClient::new(hash, "p=tls-exporter,,", "alice", "wonderland");
            let (m, r) = hc.run(mech, &c);
            assert_fails(&*m, r, "not-authorized");
        }
    }

    #[test]
    fn channel_binding_flag_rules() {
        let full = ctx(true, full_bindings());
        let only_endpoint = ctx(
            true,
            ChannelBindings {
                tls_exporter: None,
                tls_server_end_point: Some(vec![9u8; 32]),
            },
        );
        let none = ctx(true, ChannelBindings::default());
        let first_fails = |mech: &str, c: &SaslContext, gs2: &str, cond: &str| {
            let hc = HandClient::new(ScramHash::Sha256, gs2, "alice", "wonderland");
            let mut m = new_mechanism(mech, c).unwrap();
            let e = m.respond(&hc.first()).unwrap_err();
            assert_eq!(m.failure_condition(&e), cond, "{mech} {gs2}");
        };
        // Downgrade: y while we offer -PLUS.
        first_fails("SCRAM-SHA-256", &full, "y,,", "not-authorized");
        // y without -PLUS on offer is fine.
        let hc = HandClient::new(ScramHash::Sha256, "y,,", "alice", "wonderland");
        assert_success(hc.run("SCRAM-SHA-256", &none).1, "alice");
        // p= on a non-PLUS mechanism; n/y on -PLUS; unavailable types.
        first_fails("SCRAM-SHA-256", &full, "p=tls-exporter,,", "not-authorized");
        first_fails("SCRAM-SHA-256-PLUS", &full, "n,,", "not-authorized");
        first_fails("SCRAM-SHA-256-PLUS", &full, "y,,", "not-authorized");
        first_fails(
            "SCRAM-SHA-256-PLUS",
            &full,
            "p=tls-unique,,",
            "not-authorized",
        );
        first_fails(
            "SCRAM-SHA-256-PLUS",
            &only_endpoint,
            "p=tls-exporter,,",
            "not-authorized",
        );
        // Syntactically bad flags.
        first_fails("SCRAM-SHA-256", &full, "x,,", "malformed-request");
        first_fails("SCRAM-SHA-256-PLUS", &full, "p=,,", "malformed-request");
        first_fails("SCRAM-SHA-256-PLUS", &full, "p=a b,,", "malformed-request");
    }

    #[test]
    fn client_final_cb_must_match_gs2_header() {
        // The client sends n,, first but c= for y,, (and vice versa).
        let c = ctx(false, ChannelBindings::default());
        let mut m = new_mechanism("SCRAM-SHA-1", &c).unwrap();
        let hc = HandClient::new(ScramHash::Sha1, "n,,", "alice", "wonderland");
        let sf = proceed(m.respond(&hc.first()).unwrap());
        let mut lying = HandClient::new(ScramHash::Sha1, "y,,", "alice", "wonderland");
        lying.bare = hc.bare.clone();
        let (fin, _) = lying.fin(&sf);
        let e = m.respond(&fin).unwrap_err();
        assert_eq!(m.failure_condition(&e), "not-authorized");
    }

    #[test]
    fn authzid_rules() {
        let c = ctx(false, ChannelBindings::default());
        for ok in ["n,a=alice@localhost,", "n,a=alice,", "n,a=ALICE@LOCALHOST,"] {
            let hc = HandClient::new(ScramHash::Sha256, ok, "alice", "wonderland");
            assert_success(hc.run("SCRAM-SHA-256", &c).1, "alice");
        }
        for bad in ["n,a=bob@localhost,", "n,a=bob,", "n,a=alice@elsewhere,"] {
            let hc = HandClient::new(ScramHash::Sha256, bad, "alice", "wonderland");
            let (m, r) = hc.run("SCRAM-SHA-256", &c);
            assert_fails(&*m, r, "invalid-authzid");
        }
        for bad in ["n,x=alice,", "n,a=,", "n,a=al=41ice,"] {
            let hc = HandClient::new(ScramHash::Sha256, bad, "alice", "wonderland");
            let (m, r) = hc.run("SCRAM-SHA-256", &c);
            assert_fails(&*m, r, "malformed-request");
        }
    }

    #[test]
    fn escaped_username() {
        let c = ctx(false, ChannelBindings::default());
        let hc = HandClient::new(ScramHash::Sha1, "n,,", "a=2Cb=3Dc", "commas");
        assert_success(hc.run("SCRAM-SHA-1", &c).1, "a,b=c");
        let hc = HandClient::new(
            ScramHash::Sha1,
            "n,a=a=2Cb=3Dc@localhost,",
            "a=2Cb=3Dc",
            "commas",
        );
        assert_success(hc.run("SCRAM-SHA-1", &c).1, "a,b=c");
        for bad in ["a=2", "a=41b", "a=", "a=2Gb"] {
            let hc = HandClient::new(ScramHash::Sha1, "n,,", bad, "commas");
            let (m, r) = hc.run("SCRAM-SHA-1", &c);
            assert_fails(&*m, r, "malformed-request");
        }
    }

    #[test]
    fn malformed_client_first_messages() {
        let c = ctx(false, ChannelBindings::default());
        for bad in [
            &b"n,,m=ext,n=alice,r=abc"[..],
            b"n,,n=alice,r=abc,m=ext",
            b"n,,n=alice",
            b"n,,n=alice,r=",
            b"n,,n=alice,x=abc",
            b"n,,r=abc,n=alice",
            b"n,,n=alice,r=abc,r=def",
            b"n,,n=alice,r=a\x01c",
            b"n,n=alice,r=abc",
            b"n=alice,r=abc",
            b"n,,n=alice,r=abc,ext",
            b"\xff,,n=alice,r=abc",
        ] {
            let mut m = new_mechanism("SCRAM-SHA-256", &c).unwrap();
            let e = m.respond(bad).unwrap_err();
            assert_eq!(
                m.failure_condition(&e),
                "malformed-request",
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
        // Optional extensions are ignored.
        let mut m = new_mechanism("SCRAM-SHA-256", &c).unwrap();
        assert!(m.respond(b"n,,n=alice,r=abc,x=ignored").is_ok());
    }

    #[test]
    fn malformed_client_final_messages() {
        let c = ctx(false, ChannelBindings::default());
        let cases: [(&[u8], &str); 7] = [
            (b"c=biws,r=NONCE,m=x,p=AAAA", "malformed-request"),
            (b"r=NONCE,c=biws,p=AAAA", "malformed-request"),
            (b"c=biws,r=NONCE", "malformed-request"),
            (b"c=biws,p=AAAA", "malformed-request"),
            (b"c=b!ws,r=NONCE,p=AAAA", "incorrect-encoding"),
            (b"c=biws,r=NONCE,p=A", "incorrect-encoding"),
            (b"c=biws,r=NONCE,p=AAAA", "not-authorized"),
        ];
        for (fin, cond) in cases {
            let mut m = new_mechanism("SCRAM-SHA-256", &c).unwrap();
            let sf = proceed(m.respond(b"n,,n=alice,r=abc").unwrap());
            let nonce = std::str::from_utf8(&sf[2..])
                .unwrap()
                .split(',')
                .next()
                .unwrap();
            let fin = String::from_utf8_lossy(fin).replace("NONCE", nonce);
            let e = m.respond(fin.as_bytes()).unwrap_err();
            assert_eq!(m.failure_condition(&e), cond, "{fin}");
            // Failed exchanges stay failed.
            assert_eq!(
                m.respond(fin.as_bytes()).unwrap_err(),
                MechanismError::SaslSessionAlreadyOver
            );
        }
    }

    #[test]
    fn wrong_nonce_in_client_final_fails() {
        let c = ctx(false, ChannelBindings::default());
        let mut m = new_mechanism("SCRAM-SHA-256", &c).unwrap();
        let hc = HandClient::new(ScramHash::Sha256, "n,,", "alice", "wonderland");
        let sf = proceed(m.respond(&hc.first()).unwrap());
        let (fin, _) = hc.fin(&sf);
        let tampered = String::from_utf8(fin).unwrap().replacen(",p=", "x,p=", 1);
        // The nonce gained a character: proof and nonce both fail.
        let e = m.respond(tampered.as_bytes()).unwrap_err();
        assert_eq!(m.failure_condition(&e), "not-authorized");
    }

    #[test]
    fn unknown_user_gets_same_shape_and_fails_at_end() {
        let c = ctx(false, ChannelBindings::default());
        let shape = |user: &str| {
            let mut m = new_mechanism("SCRAM-SHA-256", &c).unwrap();
            let first = format!("n,,n={user},r=abc");
            let sf = String::from_utf8(proceed(m.respond(first.as_bytes()).unwrap())).unwrap();
            let attrs: Vec<&str> = sf.split(',').collect();
            assert_eq!(attrs.len(), 3, "{sf}");
            assert!(attrs[0].starts_with("r=abc"));
            assert_eq!(attrs[0].len(), "r=abc".len() + 32);
            let salt = B64.decode(attrs[1].strip_prefix("s=").unwrap()).unwrap();
            assert_eq!(attrs[2], "i=4096");
            salt
        };
        let real = shape("alice");
        let ghost = shape("ghost");
        assert_eq!(real.len(), ghost.len());
        // The fake salt is stable per name and differs between names.
        assert_eq!(ghost, shape("ghost"));
        assert_ne!(ghost, shape("phantom"));

        let hc = HandClient::new(ScramHash::Sha256, "n,,", "ghost", "anything");
        let (m, r) = hc.run("SCRAM-SHA-256", &c);
        assert_fails(&*m, r, "not-authorized");
        // A name that cannot be a localpart behaves the same way.
        let hc = HandClient::new(ScramHash::Sha1, "n,,", "no body", "anything");
        let (m, r) = hc.run("SCRAM-SHA-1", &c);
        assert_fails(&*m, r, "not-authorized");
        // And so does an unknown user via the sasl client.
        let (m, r) = run_client::<Sha1>(
            "SCRAM-SHA-1",
            &c,
            "ghost",
            "wonderland",
            ChannelBinding::None,
        );
        assert_fails(&*m, r, "not-authorized");
    }

    #[test]
    fn empty_initial_response_asks_once() {
        let c = ctx(false, ChannelBindings::default());
        let mut m = new_mechanism("SCRAM-SHA-1", &c).unwrap();
        assert_eq!(m.respond(b"").unwrap(), Response::Proceed(Vec::new()));
        let e = m.respond(b"").unwrap_err();
        assert_eq!(m.failure_condition(&e), "malformed-request");

        let mut m = new_mechanism("SCRAM-SHA-1", &c).unwrap();
        assert_eq!(m.respond(b"").unwrap(), Response::Proceed(Vec::new()));
        let hc = HandClient::new(ScramHash::Sha1, "n,,", "alice", "wonderland");
        let sf = proceed(m.respond(&hc.first()).unwrap());
        let (fin, _) = hc.fin(&sf);
        assert!(matches!(m.respond(&fin), Ok(Response::Success(..))));
        assert_eq!(
            m.respond(&fin).unwrap_err(),
            MechanismError::SaslSessionAlreadyOver
        );
    }
}
