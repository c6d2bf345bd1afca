//! TLS set-up for both ends the load generator plays.
//!
//! The client side accepts any server certificate and skips the handshake
//! signature check (a benchmark on loopback against self-signed
//! certificates: the client should spend as little CPU as possible; the
//! server still signs, so its cost is unchanged) and disables session
//! resumption, so every login pays a full handshake as a fresh client would
//! (`resuming_connector`: a returning client, `login --fast`). The relay side
//! serves a self-signed certificate generated at start-up.

use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::Resumption;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};

#[derive(Debug)]
struct AcceptAnyCert(Arc<CryptoProvider>);

impl ServerCertVerifier for AcceptAnyCert {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Ok(HandshakeSignatureValid::assertion())
    }

    fn verify_tls13_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Ok(HandshakeSignatureValid::assertion())
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// A connector that trusts any certificate and never resumes sessions.
pub fn connector() -> tokio_rustls::TlsConnector {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .expect("ring supports the default protocol versions")
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AcceptAnyCert(provider)))
        .with_no_client_auth();
    config.resumption = Resumption::disabled();
    tokio_rustls::TlsConnector::from(Arc::new(config))
}

/// The TLS server name to present for `domain` (an IP address or a DNS name).
pub fn server_name(domain: &str) -> Result<ServerName<'static>, String> {
    ServerName::try_from(domain.to_string()).map_err(|e| format!("bad TLS name {domain:?}: {e}"))
}

/// An acceptor with a fresh self-signed certificate for `names`.
pub fn self_signed_acceptor(names: &[String]) -> Result<tokio_rustls::TlsAcceptor, String> {
    let ck = rcgen::generate_simple_self_signed(names.to_vec())
        .map_err(|e| format!("certificate generation: {e}"))?;
    let cert = ck.cert.der().clone();
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(ck.signing_key.serialize_der()));
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS versions: {e}"))?
        .with_no_client_auth()
        .with_single_cert(vec![cert], key)
        .map_err(|e| format!("TLS certificate: {e}"))?;
    Ok(tokio_rustls::TlsAcceptor::from(Arc::new(config)))
}

/// A connector like [`connector`] that resumes TLS sessions (in-memory
/// cache of `sessions` server names' tickets): a returning client.
pub fn resuming_connector(sessions: usize) -> tokio_rustls::TlsConnector {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .expect("ring supports the default protocol versions")
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AcceptAnyCert(provider)))
        .with_no_client_auth();
    config.resumption = Resumption::in_memory_sessions(sessions);
    tokio_rustls::TlsConnector::from(Arc::new(config))
}
