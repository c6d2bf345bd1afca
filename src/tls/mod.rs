//! Rookery's TLS layer: the [`TlsSetup`] built once at start-up from the
//! configured `certfiles` (plus self-signed certificates generated for served
//! hosts that have none), the rustls server configuration handed to the c2s
//! and s2s listeners (TLS 1.2 and 1.3 only, `ring` provider, certificate
//! chosen by SNI), and the channel-binding data SASL `-PLUS` mechanisms need.
//!
//! Sub-modules:
//! - `certstore`: PEM loading, key ↔ certificate matching, chain building,
//!   the per-name index and the SNI resolver;
//! - `selfsigned`: rcgen generation of self-signed certificates and their
//!   management under `<data_dir>/certs/`;
//! - `binding`: `tls-server-end-point` (RFC 5929) and `tls-exporter`
//!   (RFC 9266) channel-binding data;
//! - `glob`: ejabberd-style `certfiles` glob expansion;
//! - [`s2s`]: certificate trust for server-to-server streams (`s2s_cafile`
//!   or the system roots) and the XEP-0178 checks.

mod binding;
mod certstore;
mod glob;
pub mod s2s;
mod selfsigned;

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::server::ServerSessionMemoryCache;

pub use binding::tls_exporter;
pub(crate) use certstore::now_secs;
pub use certstore::CertInfo;
pub use glob::expand_certfiles;
pub use selfsigned::generate_self_signed;

use certstore::CertStore;

/// Warn when a loaded certificate expires within this many seconds (30 days).
pub(crate) const EXPIRY_WARNING_SECS: i64 = 30 * 24 * 3600;

/// Number of TLS sessions each acceptor remembers for stateful resumption.
const SESSION_CACHE_SIZE: usize = 256;

/// An error while loading or generating certificates. `Display` names the file
/// concerned (when there is one) and the problem.
#[derive(Debug)]
pub struct TlsError {
    path: Option<PathBuf>,
    message: String,
}

impl TlsError {
    /// An error about the file `path`.
    pub(crate) fn file(path: &Path, message: impl Into<String>) -> Self {
        TlsError {
            path: Some(path.to_path_buf()),
            message: message.into(),
        }
    }

    /// An error not tied to one file.
    pub(crate) fn other(message: impl Into<String>) -> Self {
        TlsError {
            path: None,
            message: message.into(),
        }
    }

    /// The file the error is about, if any.
    #[allow(dead_code)] // public API; not every caller needs it
    pub fn path(&self) -> Option<&Path> {
        self.path.as_deref()
    }
}

impl fmt::Display for TlsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.path {
            Some(path) => write!(f, "{}: {}", path.display(), self.message),
            None => f.write_str(&self.message),
        }
    }
}

impl std::error::Error for TlsError {}

/// The crypto provider used for everything TLS in Rookery (never the
/// process-wide default). Its cipher suites are ordered AES-128-GCM first
/// (with SHA-256), then AES-256-GCM (SHA-384), then ChaCha20-Poly1305, for
/// TLS 1.3 and 1.2 alike, Mozilla's "intermediate" order; the servers'
/// configurations choose by this order ([`prefer_server_order`]). All are
/// AEAD suites with forward secrecy; AES-128-GCM with SHA-256 costs the
/// least CPU here: the handshake's key schedule runs on the CPU's SHA-256
/// instructions, where SHA-384 has none (measured: about 3 % of a login's
/// server CPU went to SHA-384).
pub(crate) fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    let mut provider = rustls::crypto::ring::default_provider();
    provider
        .cipher_suites
        .sort_by_key(|suite| suite_rank(suite.suite()));
    Arc::new(provider)
}

fn suite_rank(suite: rustls::CipherSuite) -> u8 {
    use rustls::CipherSuite as S;
    match suite {
        S::TLS13_AES_128_GCM_SHA256 => 0,
        S::TLS13_AES_256_GCM_SHA384 => 1,
        S::TLS13_CHACHA20_POLY1305_SHA256 => 2,
        S::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256 | S::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256 => 3,
        S::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384 | S::TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384 => 4,
        _ => 5,
    }
}

/// A server picks the first of its own suites that the client offers, not
/// the client's first (rustls's default): see [`provider`] for the order.
fn prefer_server_order(mut config: rustls::ServerConfig) -> rustls::ServerConfig {
    config.ignore_client_order = true;
    config
}

/// The server's certificates and TLS settings, shared by all listeners.
#[derive(Debug)]
pub struct TlsSetup {
    store: Arc<CertStore>,
    base: rustls::ServerConfig,
}

impl TlsSetup {
    /// Load `certfiles` (glob patterns are expanded, see [`expand_certfiles`]),
    /// and, for each served host not covered by them, reuse or generate a
    /// self-signed certificate in `<data_dir>/certs/<host>.pem`.
    ///
    /// Returns the setup and human-readable warnings (self-signed certificate
    /// in use, certificate expired or expiring within 30 days, private key
    /// without certificate, pattern matching no file, ...). Unreadable files,
    /// bad PEM, unsupported keys and unwritable generated files are errors.
    pub fn load(
        certfiles: &[PathBuf],
        hosts: &[String],
        data_dir: &Path,
    ) -> Result<(Arc<TlsSetup>, Vec<String>), TlsError> {
        let mut warnings = Vec::new();
        let files = expand_certfiles(certfiles, &mut warnings)?;
        let mut store = CertStore::from_files(&files, &mut warnings)?;
        let mut served = Vec::with_capacity(hosts.len());
        for host in hosts {
            let host = certstore::normalize_name(host);
            if store.lookup(&host).is_some() {
                served.push(host);
                continue;
            }
            let path = selfsigned::ensure_host_certificate(&host, data_dir)?;
            store.add_generated(&path)?;
            warnings.push(format!(
                "no certificate for {host} in certfiles: using a self-signed certificate \
                 stored in {} (clients and servers will not trust it; configure a real \
                 certificate, see certs/README.md)",
                path.display()
            ));
            served.push(host);
        }
        store.set_default(served.first().map(String::as_str));
        if store.is_empty() {
            warnings.push(
                "no TLS certificate configured and no host served: TLS handshakes will fail"
                    .to_string(),
            );
        }
        let store = Arc::new(store);
        let base = prefer_server_order(
            rustls::ServerConfig::builder_with_provider(provider())
                .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
                .map_err(|e| TlsError::other(format!("cannot configure TLS: {e}")))?
                .with_no_client_auth()
                .with_cert_resolver(store.clone()),
        );
        Ok((Arc::new(TlsSetup { store, base }), warnings))
    }

    /// The rustls server configuration for a listener: TLS 1.2 and 1.3,
    /// certificate chosen by SNI (no SNI or an unknown name: the first served
    /// host's certificate), no client certificates requested, a fresh session
    /// cache of its own.
    ///
    /// `alpn` lists the protocols the server accepts, e.g. `[b"xmpp-client"]`
    /// for direct TLS (XEP-0368) or `[b"xmpp-server"]`; empty for STARTTLS.
    /// rustls semantics: a client that offers no ALPN extension is accepted
    /// (and `alpn_protocol()` is `None`); a client that offers ALPN protocols,
    /// none of which is in `alpn`, is refused with a `no_application_protocol`
    /// alert (when `alpn` is non-empty).
    pub fn server_config(&self, alpn: &[&[u8]]) -> Arc<rustls::ServerConfig> {
        let mut config = self.base.clone();
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        config.session_storage = ServerSessionMemoryCache::new(SESSION_CACHE_SIZE);
        Arc::new(config)
    }

    /// A TLS acceptor for c2s/s2s listeners, see [`TlsSetup::server_config`]
    /// for the ALPN semantics.
    pub fn acceptor(&self, alpn: &[&[u8]]) -> tokio_rustls::TlsAcceptor {
        tokio_rustls::TlsAcceptor::from(self.server_config(alpn))
    }

    /// A server configuration for s2s listeners: the same certificates
    /// (chosen by SNI), with client certificates requested through
    /// `client_verifier` (s2s peers authenticate with them, XEP-0178).
    pub fn s2s_server_config(
        &self,
        client_verifier: Arc<dyn rustls::server::danger::ClientCertVerifier>,
        alpn: &[&[u8]],
    ) -> Result<Arc<rustls::ServerConfig>, TlsError> {
        let mut config = prefer_server_order(
            rustls::ServerConfig::builder_with_provider(provider())
                .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
                .map_err(|e| TlsError::other(format!("cannot configure TLS: {e}")))?
                .with_client_cert_verifier(client_verifier)
                .with_cert_resolver(self.store.clone()),
        );
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        Ok(Arc::new(config))
    }

    /// The certificate and key served for `name` (the default certificate
    /// when none matches), used as the client certificate of outgoing s2s.
    pub fn certified_key(&self, name: &str) -> Option<Arc<rustls::sign::CertifiedKey>> {
        self.store
            .resolve_name(Some(name))
            .map(|entry| entry.certified_key())
    }

    /// `tls-server-end-point` channel-binding data (RFC 5929 §4.1): the hash
    /// of the leaf certificate served on `conn` — SHA-256 when the
    /// certificate's signature uses MD5, SHA-1 or SHA-256, otherwise the
    /// signature's own hash. `None` while handshaking, or when the signature
    /// algorithm has no single hash (e.g. Ed25519), for which RFC 5929 leaves
    /// the binding undefined.
    pub fn server_end_point(&self, conn: &rustls::ServerConnection) -> Option<Vec<u8>> {
        if conn.is_handshaking() {
            return None;
        }
        self.store
            .resolve_name(conn.server_name())
            .and_then(|entry| entry.end_point().map(<[u8]>::to_vec))
    }

    /// The DNS names (lower case, wildcards as `*.domain`) the setup has a
    /// certificate for, sorted.
    #[cfg(test)]
    pub fn certificate_hosts(&self) -> Vec<String> {
        self.store.names()
    }

    /// A description of every certificate in use (names, validity, origin,
    /// EKU), for `rookery ctl check`.
    #[allow(dead_code)] // public API for `rookery ctl check`, not wired yet
    pub fn certificates(&self) -> Vec<CertInfo> {
        self.store.infos()
    }
}

/// Each host with the certificate it would get, if any.
pub type HostCertificates = Vec<(String, Option<CertInfo>)>;

/// For `rookery ctl check`: load `certfiles` (without generating anything)
/// and say which certificate each host would get. Returns per host its
/// certificate (or `None`), and the loader's warnings.
pub fn inspect(
    certfiles: &[PathBuf],
    hosts: &[String],
) -> Result<(HostCertificates, Vec<String>), TlsError> {
    let mut warnings = Vec::new();
    let files = expand_certfiles(certfiles, &mut warnings)?;
    let store = CertStore::from_files(&files, &mut warnings)?;
    let per_host = hosts
        .iter()
        .map(|h| (h.clone(), store.info_for(h)))
        .collect();
    Ok((per_host, warnings))
}

#[cfg(test)]
mod tests;

/// The transport of a listener without STARTTLS (components, HTTP): TLS
/// from the first byte with `acceptor` (the server's certificates, see
/// `Live::tls_acceptor`) when `tls`, else the TCP stream itself. An error
/// (why) if the TLS handshake fails or takes longer than `timeout`.
pub async fn accept_transport(
    acceptor: tokio_rustls::TlsAcceptor,
    sock: tokio::net::TcpStream,
    tls: bool,
    timeout: std::time::Duration,
) -> Result<crate::stream::BoxIo, String> {
    if !tls {
        return Ok(Box::new(sock));
    }
    match tokio::time::timeout(timeout, acceptor.accept(sock)).await {
        Ok(Ok(stream)) => Ok(Box::new(stream)),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err("timed out".into()),
    }
}
