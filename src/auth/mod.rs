//! Server-side SASL (RFC 6120 §6) for client-to-server streams.
//!
//! This module holds the pieces every mechanism shares: the credential
//! store interface, the per-connection [`SaslContext`] (domain, TLS state,
//! channel-binding data), the list of mechanisms offered on a connection,
//! the factory [`new_mechanism`], the mapping from mechanism errors to the
//! XMPP `<failure/>` conditions, and the username / authorization-identity
//! normalisation both SCRAM and PLAIN use.
//!
//! Every mechanism implements the `sasl` crate's server trait
//! [`sasl::server::Mechanism`] (plus [`ServerMechanism`] for the failure
//! condition). The mechanisms themselves live in [`scram`] (SCRAM-SHA-1,
//! SCRAM-SHA-256 and their -PLUS variants) and [`plain`] (PLAIN, TLS only);
//! the stored secrets in [`credentials`].

pub mod ban;
pub mod credentials;
pub mod fast;
pub mod plain;
pub mod scram;
pub mod ssdp;

use std::fmt;
use std::sync::Arc;

use sasl::server::{MechanismError, ProviderError, ValidatorError};

/// Where the SASL layer looks up an account's stored SCRAM credentials.
pub trait CredentialStore: Send + Sync {
    /// The credentials of `username` (an already normalised localpart), or
    /// `None` if there is no such account.
    fn credentials(&self, username: &str) -> Option<credentials::StoredCredentials>;

    /// Replace SCRAM-SHA-1-only credentials of `username` by `full` ones
    /// (made from the password of a successful PLAIN login). Implementations
    /// replace only credentials that still need it.
    fn upgrade(&self, _username: &str, _full: &credentials::StoredCredentials) {}
}

/// The channel-binding data of the TLS connection, when available.
#[derive(Clone, Default)]
pub struct ChannelBindings {
    /// `tls-exporter` data (RFC 9266): the 32-byte exporter output with the
    /// label `EXPORTER-Channel-Binding` and an empty context.
    pub tls_exporter: Option<Vec<u8>>,
    /// `tls-server-end-point` data (RFC 5929): the hash of our certificate.
    pub tls_server_end_point: Option<Vec<u8>>,
}

impl fmt::Debug for ChannelBindings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The exporter output is key material: show only its presence.
        f.debug_struct("ChannelBindings")
            .field("tls_exporter", &self.tls_exporter.as_ref().map(|_| ".."))
            .field(
                "tls_server_end_point",
                &self.tls_server_end_point.as_ref().map(|_| ".."),
            )
            .finish()
    }
}

impl ChannelBindings {
    /// Whether any channel binding is available, i.e. -PLUS can be offered.
    pub fn any(&self) -> bool {
        self.tls_exporter.is_some() || self.tls_server_end_point.is_some()
    }

    /// The data for the channel-binding type named `cb_name`, if available.
    pub fn data_for(&self, cb_name: &str) -> Option<&[u8]> {
        match cb_name {
            scram::TLS_EXPORTER => self.tls_exporter.as_deref(),
            scram::TLS_SERVER_END_POINT => self.tls_server_end_point.as_deref(),
            _ => None,
        }
    }
}

/// Everything a mechanism needs to know about the connection it runs on.
#[derive(Clone)]
pub struct SaslContext {
    /// The domain the stream is for (used to check `user@domain` authzids).
    pub domain: String,
    /// Whether the connection is TLS-protected (PLAIN is offered only then).
    pub tls: bool,
    /// Channel-binding data of the TLS connection.
    pub bindings: ChannelBindings,
    /// Where credentials are looked up.
    pub store: Arc<dyn CredentialStore>,
    /// Whether SCRAM-SHA-256(-PLUS) is offered (`auth_scram_hash: sha`
    /// turns it off, e.g. while accounts imported from Prosody still have
    /// SCRAM-SHA-1 secrets only).
    pub sha256: bool,
    /// The XEP-0474 input string (see [`ssdp`]) of the mechanism and
    /// channel-binding lists this client was shown; SCRAM then adds the `h`
    /// attribute to its server-first message. `None`: no SSDP.
    pub ssdp: Option<String>,
    /// The XEP-0484 context of a SASL2 `<authenticate/>` that may use a
    /// token (HT mechanisms exist only with it).
    pub fast: Option<Arc<fast::FastContext>>,
}

impl SaslContext {
    /// This context with XEP-0474 downgrade protection for the lists it
    /// advertises ([`ssdp_input`]).
    pub fn with_ssdp(mut self) -> Self {
        self.ssdp = Some(ssdp_input(&self));
        self
    }
}

/// A server mechanism: the sasl crate's trait plus the XMPP failure condition for an error it returned.
pub trait ServerMechanism: sasl::server::Mechanism + Send {
    /// The RFC 6120 §6.5 condition element name for `err`, an error returned
    /// by this mechanism's `respond`.
    fn failure_condition(&self, err: &sasl::server::MechanismError) -> &'static str;
}

/// The SASL failure conditions (RFC 6120 §6.5) our mechanisms produce.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Condition {
    /// Wrong credentials, unknown user, channel-binding mismatch or downgrade.
    NotAuthorized,
    /// The authorization identity is not the authenticated user.
    InvalidAuthzid,
    /// The message violates the mechanism's syntax.
    MalformedRequest,
    /// Bad base64 inside a mechanism attribute.
    IncorrectEncoding,
    /// A server-side problem; the client may retry later.
    TemporaryAuthFailure,
    /// The credential (a XEP-0484 token) is no longer trusted: expired,
    /// or the password changed since it was issued.
    CredentialsExpired,
}

impl Condition {
    /// The condition's element name, e.g. `"not-authorized"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Condition::NotAuthorized => "not-authorized",
            Condition::InvalidAuthzid => "invalid-authzid",
            Condition::MalformedRequest => "malformed-request",
            Condition::IncorrectEncoding => "incorrect-encoding",
            Condition::TemporaryAuthFailure => "temporary-auth-failure",
            Condition::CredentialsExpired => "credentials-expired",
        }
    }

    /// The `sasl` crate error our mechanisms return for this condition.
    ///
    /// The crate's error enum has no room for our own conditions, so each
    /// condition is carried by one fixed variant; [`Condition::from_error`]
    /// is the inverse.
    pub fn to_error(self) -> MechanismError {
        match self {
            Condition::NotAuthorized => MechanismError::AuthenticationFailed,
            Condition::InvalidAuthzid => {
                MechanismError::ValidatorError(ValidatorError::AuthenticationFailed)
            }
            Condition::MalformedRequest => MechanismError::FailedToDecodeMessage,
            Condition::IncorrectEncoding => MechanismError::CannotDecodeProof,
            Condition::TemporaryAuthFailure => MechanismError::FailedToGenerateNonce,
            Condition::CredentialsExpired => MechanismError::ValidatorError(
                ValidatorError::ProviderError(ProviderError::AuthenticationFailed),
            ),
        }
    }

    /// The condition for an error returned by one of our mechanisms.
    pub fn from_error(err: &MechanismError) -> Condition {
        match err {
            MechanismError::AuthenticationFailed
            | MechanismError::ChannelBindingNotSupported
            | MechanismError::ChannelBindingIsSupported
            | MechanismError::ChannelBindingMechanismIncorrect
            | MechanismError::ProviderError(_) => Condition::NotAuthorized,
            MechanismError::ValidatorError(ValidatorError::AuthenticationFailed) => {
                Condition::InvalidAuthzid
            }
            MechanismError::ValidatorError(ValidatorError::ProviderError(
                ProviderError::AuthenticationFailed,
            )) => Condition::CredentialsExpired,
            MechanismError::ValidatorError(_) => Condition::NotAuthorized,
            MechanismError::NoUsernameSpecified
            | MechanismError::ErrorDecodingUsername
            | MechanismError::NoPasswordSpecified
            | MechanismError::ErrorDecodingPassword
            | MechanismError::FailedToDecodeMessage
            | MechanismError::CannotDecodeInitialMessage
            | MechanismError::NoUsername
            | MechanismError::NoNonce
            | MechanismError::CannotDecodeResponse
            | MechanismError::NoProof
            | MechanismError::SaslSessionAlreadyOver => Condition::MalformedRequest,
            MechanismError::CannotDecodeProof => Condition::IncorrectEncoding,
            _ => Condition::TemporaryAuthFailure,
        }
    }
}

impl fmt::Display for Condition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why an exchange failed: the condition sent to the client and a short
/// reason for the server's debug log (never containing secrets).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Failure {
    pub condition: Condition,
    pub reason: &'static str,
}

impl Failure {
    pub fn new(condition: Condition, reason: &'static str) -> Self {
        Failure { condition, reason }
    }

    pub fn malformed(reason: &'static str) -> Self {
        Failure::new(Condition::MalformedRequest, reason)
    }

    pub fn not_authorized(reason: &'static str) -> Self {
        Failure::new(Condition::NotAuthorized, reason)
    }

    /// Log the failure (without secrets) and turn it into the crate error.
    pub fn into_error(self, mechanism: &str) -> MechanismError {
        tracing::debug!(
            mechanism,
            reason = self.reason,
            condition = self.condition.as_str(),
            "SASL exchange failed"
        );
        self.condition.to_error()
    }
}

const SCRAM_SHA_256_PLUS: &str = "SCRAM-SHA-256-PLUS";
const SCRAM_SHA_1_PLUS: &str = "SCRAM-SHA-1-PLUS";
const SCRAM_SHA_256: &str = "SCRAM-SHA-256";
const SCRAM_SHA_1: &str = "SCRAM-SHA-1";
const PLAIN: &str = "PLAIN";

/// The mechanisms offered on this connection, most preferred first:
/// SCRAM-SHA-256-PLUS, SCRAM-SHA-1-PLUS (only if some channel binding is
/// available), SCRAM-SHA-256, SCRAM-SHA-1, PLAIN (only over TLS).
pub fn offered_mechanisms(ctx: &SaslContext) -> Vec<&'static str> {
    let mut out = Vec::with_capacity(5);
    if ctx.bindings.any() {
        if ctx.sha256 {
            out.push(SCRAM_SHA_256_PLUS);
        }
        out.push(SCRAM_SHA_1_PLUS);
    }
    if ctx.sha256 {
        out.push(SCRAM_SHA_256);
    }
    out.push(SCRAM_SHA_1);
    if ctx.tls {
        out.push(PLAIN);
    }
    out
}

/// The channel-binding types available on this connection, for the
/// XEP-0440 `<sasl-channel-binding>` stream feature.
pub fn channel_binding_types(ctx: &SaslContext) -> Vec<&'static str> {
    let mut out = Vec::with_capacity(2);
    if ctx.bindings.tls_exporter.is_some() {
        out.push(scram::TLS_EXPORTER);
    }
    if ctx.bindings.tls_server_end_point.is_some() {
        out.push(scram::TLS_SERVER_END_POINT);
    }
    out
}

/// The XEP-0474 input for what [`offered_mechanisms`] and
/// [`channel_binding_types`] advertise on `ctx` (the XEP-0440 feature is
/// sent only when some type is available).
pub fn ssdp_input(ctx: &SaslContext) -> String {
    let cbs = channel_binding_types(ctx);
    ssdp::input(
        &offered_mechanisms(ctx),
        (!cbs.is_empty()).then_some(cbs.as_slice()),
    )
}

/// A fresh mechanism for one exchange, or `None` if `name` is not offered on
/// this connection (the caller then answers `<invalid-mechanism/>`).
pub fn new_mechanism(name: &str, ctx: &SaslContext) -> Option<Box<dyn ServerMechanism>> {
    use credentials::ScramHash;
    let plus = ctx.bindings.any();
    let mech: Box<dyn ServerMechanism> = match name {
        SCRAM_SHA_256_PLUS if plus && ctx.sha256 => Box::new(scram::ScramMechanism::new(
            ScramHash::Sha256,
            true,
            ctx.clone(),
        )),
        SCRAM_SHA_1_PLUS if plus => Box::new(scram::ScramMechanism::new(
            ScramHash::Sha1,
            true,
            ctx.clone(),
        )),
        SCRAM_SHA_256 if ctx.sha256 => Box::new(scram::ScramMechanism::new(
            ScramHash::Sha256,
            false,
            ctx.clone(),
        )),
        SCRAM_SHA_1 => Box::new(scram::ScramMechanism::new(
            ScramHash::Sha1,
            false,
            ctx.clone(),
        )),
        PLAIN if ctx.tls => Box::new(plain::PlainMechanism::new(ctx.clone())),
        _ => Box::new(fast::HtMechanism::new(name, ctx)?),
    };
    Some(mech)
}

/// Undo the SCRAM `saslname` escaping (`=2C` → `,`, `=3D` → `=`) of an
/// attribute value; any other `=` sequence, an empty name or a NUL is
/// malformed.
pub(crate) fn unescape_saslname(s: &str) -> Result<String, Failure> {
    if s.is_empty() {
        return Err(Failure::malformed("empty name"));
    }
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(pos) = rest.find('=') {
        out.push_str(&rest[..pos]);
        let after = &rest[pos + 1..];
        let code = after.as_bytes().get(..2);
        let replacement = match code {
            Some(c) if c.eq_ignore_ascii_case(b"2C") => ',',
            Some(c) if c.eq_ignore_ascii_case(b"3D") => '=',
            _ => return Err(Failure::malformed("bad '=' escape in name")),
        };
        out.push(replacement);
        // The two bytes just checked are ASCII, so this is a char boundary.
        rest = &after[2..];
    }
    out.push_str(rest);
    if out.contains('\0') {
        return Err(Failure::malformed("NUL in name"));
    }
    Ok(out)
}

/// SASLprep a username and normalise it as a JID localpart (nodeprep).
/// `None` if it cannot be the localpart of any account.
pub(crate) fn normalize_username(name: &str) -> Option<String> {
    let prepared = stringprep::saslprep(name).ok()?;
    let node = jid::NodePart::new(&prepared).ok()?;
    Some(node.as_str().to_owned())
}

/// Check a non-empty authorization identity against the authenticated
/// (normalised) `localpart`: it must be the bare JID `localpart@domain` or
/// the localpart alone, compared after normalisation.
pub(crate) fn check_authzid(authzid: &str, localpart: &str, domain: &str) -> Result<(), Failure> {
    let refuse = || Failure::new(Condition::InvalidAuthzid, "authzid is not the user");
    if authzid.contains(['@', '/']) {
        let jid = jid::Jid::new(authzid).map_err(|_| refuse())?;
        if jid.resource().is_some() {
            return Err(refuse());
        }
        let node_ok = jid.node().is_some_and(|n| n.as_str() == localpart);
        let our_domain = jid::DomainPart::new(domain)
            .map(|d| d.as_str().to_owned())
            .unwrap_or_else(|_| domain.to_ascii_lowercase());
        if node_ok && jid.domain().as_str() == our_domain {
            Ok(())
        } else {
            Err(refuse())
        }
    } else {
        match normalize_username(authzid) {
            Some(node) if node == localpart => Ok(()),
            _ => Err(refuse()),
        }
    }
}

/// Overwrite a buffer that held key material before it is freed.
pub(crate) fn wipe(buf: &mut [u8]) {
    buf.fill(0);
    std::hint::black_box(&buf);
}

/// Overwrite the key material of credentials fetched from the store.
pub(crate) fn wipe_credentials(creds: &mut credentials::StoredCredentials) {
    for secret in std::iter::once(&mut creds.sha1).chain(creds.sha256.as_mut()) {
        wipe(&mut secret.stored_key);
        wipe(&mut secret.server_key);
    }
}

#[cfg(test)]
pub(crate) mod test_util {
    //! An in-memory credential store and contexts for the mechanism tests.

    use super::credentials::StoredCredentials;
    use super::*;
    use std::collections::HashMap;

    pub struct MemStore(pub HashMap<String, StoredCredentials>);

    impl CredentialStore for MemStore {
        fn credentials(&self, username: &str) -> Option<StoredCredentials> {
            self.0.get(username).cloned()
        }
    }

    /// A store with `alice` / `wonderland` and `a,b=c` / `commas`.
    pub fn store() -> Arc<dyn CredentialStore> {
        let mut m = HashMap::new();
        m.insert(
            "alice".to_owned(),
            StoredCredentials::derive("wonderland", 4096).unwrap(),
        );
        m.insert(
            "a,b=c".to_owned(),
            StoredCredentials::derive("commas", 4096).unwrap(),
        );
        Arc::new(MemStore(m))
    }

    pub fn ctx(tls: bool, bindings: ChannelBindings) -> SaslContext {
        SaslContext {
            domain: "localhost".to_owned(),
            tls,
            bindings,
            store: store(),
            sha256: true,
            ssdp: None,
            fast: None,
        }
    }

    pub fn full_bindings() -> ChannelBindings {
        ChannelBindings {
            tls_exporter: Some(vec![7u8; 32]),
            tls_server_end_point: Some(vec![9u8; 32]),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::test_util::*;
    use super::*;

    #[test]
    fn mechanisms_offered_by_connection_state() {
        let plain = ctx(false, ChannelBindings::default());
        assert_eq!(offered_mechanisms(&plain), ["SCRAM-SHA-256", "SCRAM-SHA-1"]);
        assert!(channel_binding_types(&plain).is_empty());

        let tls = ctx(true, ChannelBindings::default());
        assert_eq!(
            offered_mechanisms(&tls),
            ["SCRAM-SHA-256", "SCRAM-SHA-1", "PLAIN"]
        );

        let full = ctx(true, full_bindings());
        assert_eq!(
            offered_mechanisms(&full),
            [
                "SCRAM-SHA-256-PLUS",
                "SCRAM-SHA-1-PLUS",
                "SCRAM-SHA-256",
                "SCRAM-SHA-1",
                "PLAIN"
            ]
        );
        assert_eq!(
            channel_binding_types(&full),
            ["tls-exporter", "tls-server-end-point"]
        );

        let endpoint_only = ctx(
            true,
            ChannelBindings {
                tls_exporter: None,
                tls_server_end_point: Some(vec![1]),
            },
        );
        assert_eq!(
            channel_binding_types(&endpoint_only),
            ["tls-server-end-point"]
        );
        assert_eq!(offered_mechanisms(&endpoint_only).len(), 5);
    }

    #[test]
    fn new_mechanism_only_for_offered_names() {
        let plain = ctx(false, ChannelBindings::default());
        assert!(new_mechanism("PLAIN", &plain).is_none());
        assert!(new_mechanism("SCRAM-SHA-256-PLUS", &plain).is_none());
        assert!(new_mechanism("SCRAM-SHA-1-PLUS", &plain).is_none());
        assert!(new_mechanism("DIGEST-MD5", &plain).is_none());
        assert!(new_mechanism("scram-sha-1", &plain).is_none());
        assert_eq!(
            new_mechanism("SCRAM-SHA-1", &plain).unwrap().name(),
            "SCRAM-SHA-1"
        );

        let full = ctx(true, full_bindings());
        for name in offered_mechanisms(&full) {
            let mech = new_mechanism(name, &full).unwrap();
            assert_eq!(mech.name(), name);
        }

        // auth_scram_hash: sha
        let sha1 = SaslContext {
            sha256: false,
            ..ctx(true, full_bindings())
        };
        assert_eq!(
            offered_mechanisms(&sha1),
            ["SCRAM-SHA-1-PLUS", "SCRAM-SHA-1", "PLAIN"]
        );
        assert!(new_mechanism("SCRAM-SHA-256", &sha1).is_none());
        assert!(new_mechanism("SCRAM-SHA-256-PLUS", &sha1).is_none());
        assert!(new_mechanism("SCRAM-SHA-1-PLUS", &sha1).is_some());
    }

    #[test]
    fn conditions_round_trip_through_errors() {
        for c in [
            Condition::NotAuthorized,
            Condition::InvalidAuthzid,
            Condition::MalformedRequest,
            Condition::IncorrectEncoding,
            Condition::TemporaryAuthFailure,
        ] {
            assert_eq!(Condition::from_error(&c.to_error()), c);
        }
        assert_eq!(
            Condition::from_error(&MechanismError::SaslSessionAlreadyOver).as_str(),
            "malformed-request"
        );
        assert_eq!(
            Condition::from_error(&MechanismError::ChannelBindingIsSupported),
            Condition::NotAuthorized
        );
    }

    #[test]
    fn saslname_unescaping() {
        assert_eq!(unescape_saslname("a=2Cb=3Dc").unwrap(), "a,b=c");
        assert_eq!(unescape_saslname("x=2c=3d").unwrap(), "x,=");
        assert_eq!(unescape_saslname("plain").unwrap(), "plain");
        assert_eq!(unescape_saslname("é=2C").unwrap(), "é,");
        for bad in ["", "a=", "a=2", "a=41", "=", "a=2Xb", "a=é1", "a\0b"] {
            let err = unescape_saslname(bad).unwrap_err();
            assert_eq!(err.condition, Condition::MalformedRequest, "{bad:?}");
        }
    }

    #[test]
    fn usernames_are_normalised_localparts() {
        assert_eq!(normalize_username("Alice").as_deref(), Some("alice"));
        assert_eq!(normalize_username("a,b=c").as_deref(), Some("a,b=c"));
        assert_eq!(normalize_username("alice@localhost"), None);
        assert_eq!(normalize_username("al ice"), None);
        assert_eq!(normalize_username(""), None);
        assert_eq!(normalize_username("a\u{0007}"), None);
    }

    #[test]
    fn authzid_must_be_the_user() {
        assert!(check_authzid("alice", "alice", "localhost").is_ok());
        assert!(check_authzid("ALICE", "alice", "localhost").is_ok());
        assert!(check_authzid("alice@localhost", "alice", "localhost").is_ok());
        assert!(check_authzid("Alice@LocalHost", "alice", "localhost").is_ok());
        assert!(check_authzid("alice@localhost", "alice", "LOCALHOST").is_ok());
        for bad in [
            "bob",
            "bob@localhost",
            "alice@example.org",
            "alice@localhost/res",
            "localhost",
            "@localhost",
            "alice@",
            "a@b@c",
        ] {
            let err = check_authzid(bad, "alice", "localhost").unwrap_err();
            assert_eq!(err.condition, Condition::InvalidAuthzid, "{bad:?}");
        }
    }

    #[test]
    fn bindings_debug_hides_data() {
        let shown = format!("{:?}", full_bindings());
        assert!(!shown.contains('7') && !shown.contains('9'), "{shown}");
        assert!(shown.contains("tls_exporter"));
    }
}
