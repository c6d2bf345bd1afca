//! TLS for s2s: what certificates peers are checked against (`s2s_cafile`
//! or the system's roots), the rustls configurations of both directions,
//! and the check of a peer's certificate chain for a domain (XEP-0178).
//!
//! The handshakes themselves accept any certificate (their signatures are
//! still verified): whether the chain is trusted for the claimed domain is
//! decided afterwards by [`S2sTls::verify`], so that a peer whose
//! certificate does not verify can still authenticate by dialback when the
//! configuration allows it.

use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::ResolvesClientCert;
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::sign::CertifiedKey;
use rustls::{DigitallySignedStruct, DistinguishedName, SignatureScheme};

use super::TlsSetup;

/// ALPN protocol of direct-TLS s2s (XEP-0368).
pub const ALPN_S2S: &[u8] = b"xmpp-server";

/// The s2s TLS state: part of the server's live snapshot
/// ([`crate::server::Live`]), so certificates reloaded by `reload_config` or
/// the certificate file watcher (and `s2s_cafile` on `reload_config`) apply
/// to the next s2s connection in both directions.
pub struct S2sTls {
    /// Checks chains against the trusted roots; `None` when no root is trusted.
    webpki: Option<Arc<rustls::client::WebPkiServerVerifier>>,
    pub starttls_acceptor: tokio_rustls::TlsAcceptor,
    pub direct_acceptor: tokio_rustls::TlsAcceptor,
    setup: Arc<TlsSetup>,
    provider: Arc<CryptoProvider>,
}

impl S2sTls {
    /// Load the roots (`cafile`, or the system's) and build the acceptors.
    /// Returns warnings (no roots, unreadable system certificates).
    pub fn new(
        setup: Arc<TlsSetup>,
        cafile: Option<&std::path::Path>,
    ) -> Result<(S2sTls, Vec<String>), String> {
        let provider = crate::tls::provider();
        let mut warnings = Vec::new();
        let mut roots = rustls::RootCertStore::empty();
        match cafile {
            Some(path) => {
                let pem = std::fs::read(path)
                    .map_err(|e| format!("s2s_cafile {}: {e}", path.display()))?;
                let mut n = 0;
                for cert in rustls_pemfile_certs(&pem) {
                    if roots.add(cert).is_ok() {
                        n += 1;
                    }
                }
                if n == 0 {
                    return Err(format!(
                        "s2s_cafile {}: no usable CA certificate in it",
                        path.display()
                    ));
                }
            }
            None => {
                let found = rustls_native_certs::load_native_certs();
                for e in &found.errors {
                    warnings.push(format!("s2s: reading the system's CA certificates: {e}"));
                }
                let (added, _) = roots.add_parsable_certificates(found.certs);
                if added == 0 {
                    warnings.push(
                        "s2s: no trusted CA certificate found (system roots empty and no \
                         s2s_cafile): no peer certificate will verify"
                            .to_string(),
                    );
                }
            }
        }
        let webpki = if roots.is_empty() {
            None
        } else {
            Some(
                rustls::client::WebPkiServerVerifier::builder_with_provider(
                    Arc::new(roots),
                    provider.clone(),
                )
                .build()
                .map_err(|e| format!("s2s: cannot build the certificate verifier: {e}"))?,
            )
        };
        Ok((S2sTls::build(webpki, setup, provider)?, warnings))
    }

    fn build(
        webpki: Option<Arc<rustls::client::WebPkiServerVerifier>>,
        setup: Arc<TlsSetup>,
        provider: Arc<CryptoProvider>,
    ) -> Result<S2sTls, String> {
        let verifier = Arc::new(AcceptAny(provider.clone()));
        let starttls = setup
            .s2s_server_config(verifier.clone(), &[])
            .map_err(|e| e.to_string())?;
        let direct = setup
            .s2s_server_config(verifier, &[ALPN_S2S])
            .map_err(|e| e.to_string())?;
        Ok(S2sTls {
            webpki,
            starttls_acceptor: tokio_rustls::TlsAcceptor::from(starttls),
            direct_acceptor: tokio_rustls::TlsAcceptor::from(direct),
            setup,
            provider,
        })
    }

    /// The same trust with other certificates of ours (after the
    /// certificate files changed).
    pub fn with_setup(&self, setup: Arc<TlsSetup>) -> Result<S2sTls, String> {
        S2sTls::build(self.webpki.clone(), setup, self.provider.clone())
    }

    /// Whether `chain` (leaf first) is a valid certificate for `domain`
    /// issued by a trusted root (dates, name, chain, EKU serverAuth).
    pub fn verify(&self, chain: &[CertificateDer<'static>], domain: &str) -> bool {
        let (Some(webpki), Some((leaf, rest))) = (&self.webpki, chain.split_first()) else {
            return false;
        };
        let Ok(name) = ServerName::try_from(domain.to_string()) else {
            return false;
        };
        match webpki.verify_server_cert(leaf, rest, &name, &[], UnixTime::now()) {
            Ok(_) => true,
            Err(e) => {
                tracing::debug!("s2s: certificate for {domain} does not verify: {e}");
                false
            }
        }
    }

    /// A client configuration for an outgoing stream from `local`: our
    /// certificate for `local` as client certificate, any server
    /// certificate accepted by the handshake (checked later with
    /// [`S2sTls::verify`]).
    pub fn connector(&self, local: &str, alpn: bool) -> tokio_rustls::TlsConnector {
        let builder = rustls::ClientConfig::builder_with_provider(self.provider.clone())
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
            .expect("TLS 1.2 and 1.3 are supported by ring")
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AcceptAny(self.provider.clone())));
        let mut config = match self.setup.certified_key(local) {
            Some(key) => builder.with_client_cert_resolver(Arc::new(ClientCert(key))),
            None => builder.with_no_client_auth(),
        };
        if alpn {
            config.alpn_protocols = vec![ALPN_S2S.to_vec()];
        }
        tokio_rustls::TlsConnector::from(Arc::new(config))
    }
}

/// The certificates of a PEM file.
fn rustls_pemfile_certs(pem: &[u8]) -> Vec<CertificateDer<'static>> {
    use rustls::pki_types::pem::PemObject;
    CertificateDer::pem_slice_iter(pem)
        .filter_map(Result::ok)
        .collect()
}

/// Our certificate, offered whatever the server asks.
#[derive(Debug)]
struct ClientCert(Arc<CertifiedKey>);

impl ResolvesClientCert for ClientCert {
    fn resolve(
        &self,
        _root_hint_subjects: &[&[u8]],
        _sigschemes: &[SignatureScheme],
    ) -> Option<Arc<CertifiedKey>> {
        Some(self.0.clone())
    }

    fn has_certs(&self) -> bool {
        true
    }
}

/// Accepts any certificate in the handshake (checking only the handshake
/// signatures); trust is decided after the handshake.
#[derive(Debug)]
struct AcceptAny(Arc<CryptoProvider>);

/// The handshake signature checks both verifier traits share.
impl AcceptAny {
    fn tls12(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        let algs = &self.0.signature_verification_algorithms;
        verify_tls12_signature(message, cert, dss, algs)
    }

    fn tls13(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        let algs = &self.0.signature_verification_algorithms;
        verify_tls13_signature(message, cert, dss, algs)
    }
}

impl ServerCertVerifier for AcceptAny {
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
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.tls12(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.tls13(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

impl ClientCertVerifier for AcceptAny {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        false
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.tls12(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.tls13(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}
