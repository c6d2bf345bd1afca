//! The certificate store: reading PEM files (certificates and PKCS#8,
//! PKCS#1 or SEC1 private keys, in any order and spread over any number of
//! files), matching each key to its certificate by public key, building the
//! chain sent to peers from the other certificates loaded, indexing every
//! leaf by its DNS names, and resolving a TLS SNI name to a certificate.
//!
//! Name rules: the names of a certificate are its subjectAltName dNSName
//! (and iPAddress) entries, or, only when it has no dNSName, its subject
//! CNs. Names are lower-cased, without trailing dot. `*.domain` entries
//! match exactly one extra label. When several loaded certificates carry the
//! same name, the one valid the longest (latest `notAfter`) wins; generated
//! self-signed certificates never displace a loaded one.

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use rustls::sign::{CertifiedKey, SigningKey};
use rustls_pki_types::pem::{PemObject, SectionKind};
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use x509_parser::extensions::GeneralName;

use super::{binding, provider, TlsError, EXPIRY_WARNING_SECS};

/// At most this many issuer certificates are appended to a leaf.
const MAX_CHAIN_DEPTH: usize = 8;

/// What Rookery knows about one certificate in use (for `rookery ctl check`
/// and logs).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertInfo {
    /// Names the certificate is valid for, as indexed (see module docs).
    pub names: Vec<String>,
    /// The file its leaf certificate came from.
    pub source: PathBuf,
    /// True for a self-signed certificate Rookery generated for a host.
    pub generated: bool,
    /// Start of validity, Unix seconds.
    pub not_before: i64,
    /// End of validity, Unix seconds.
    pub not_after: i64,
    /// Number of certificates sent to peers (leaf + intermediates).
    pub chain_len: usize,
    /// The extended key usage allows TLS server authentication.
    pub server_auth: bool,
    /// The extended key usage allows TLS client authentication (needed by
    /// servers authenticating us by certificate on outgoing s2s).
    pub client_auth: bool,
    /// The leaf is self-issued (subject = issuer): self-signed or a root.
    pub self_issued: bool,
}

/// One certificate in use, with its key and precomputed binding data.
#[derive(Debug)]
pub(crate) struct Entry {
    key: Arc<CertifiedKey>,
    info: CertInfo,
    end_point: Option<Vec<u8>>,
}

impl Entry {
    /// The chain and key handed to rustls.
    pub(crate) fn certified_key(&self) -> Arc<CertifiedKey> {
        Arc::clone(&self.key)
    }

    /// The `tls-server-end-point` hash of the leaf, if defined.
    pub(crate) fn end_point(&self) -> Option<&[u8]> {
        self.end_point.as_deref()
    }
}

/// All certificates in use, indexed by name; the server certificate resolver.
#[derive(Debug, Default)]
pub(crate) struct CertStore {
    entries: Vec<Entry>,
    by_name: HashMap<String, usize>,
    default: Option<usize>,
}

/// Lower-case `name` and strip one trailing dot.
pub(crate) fn normalize_name(name: &str) -> String {
    name.strip_suffix('.').unwrap_or(name).to_ascii_lowercase()
}

/// Current time as Unix seconds.
pub(crate) fn now_secs() -> i64 {
    match SystemTime::now().duration_since(UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        Err(_) => 0,
    }
}

/// `YYYY-MM-DD` (UTC) for Unix seconds `ts`.
pub(crate) fn format_date(ts: i64) -> String {
    // Howard Hinnant's civil_from_days.
    let z = ts.div_euclid(86_400) + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02}")
}

/// The certificates and private keys found in one PEM file, in file order.
#[derive(Debug, Default)]
pub(crate) struct PemContents {
    pub(crate) certs: Vec<CertificateDer<'static>>,
    pub(crate) keys: Vec<PrivateKeyDer<'static>>,
}

/// Read and decode the PEM file `path`. Errors name the file: unreadable,
/// bad PEM, encrypted key, or neither certificate nor key inside.
pub(crate) fn read_pem_file(path: &Path) -> Result<PemContents, TlsError> {
    let bytes = std::fs::read(path)
        .map_err(|e| TlsError::file(path, format!("cannot read certificate file: {e}")))?;
    let mut contents = PemContents::default();
    for item in <(SectionKind, Vec<u8>) as PemObject>::pem_slice_iter(&bytes) {
        let (kind, der) = item.map_err(|e| TlsError::file(path, format!("bad PEM: {e}")))?;
        match kind {
            SectionKind::Certificate => contents.certs.push(CertificateDer::from(der)),
            SectionKind::PrivateKey => contents.keys.push(PrivateKeyDer::Pkcs8(der.into())),
            SectionKind::RsaPrivateKey => contents.keys.push(PrivateKeyDer::Pkcs1(der.into())),
            SectionKind::EcPrivateKey => contents.keys.push(PrivateKeyDer::Sec1(der.into())),
            _ => {}
        }
    }
    let text = String::from_utf8_lossy(&bytes);
    if text.contains("-----BEGIN ENCRYPTED PRIVATE KEY-----")
        || text.contains("Proc-Type: 4,ENCRYPTED")
    {
        return Err(TlsError::file(
            path,
            "encrypted private keys are not supported; store the key unencrypted \
             (e.g. `openssl pkey -in KEY -out KEY.plain`) in a file only Rookery can read",
        ));
    }
    if contents.certs.is_empty() && contents.keys.is_empty() {
        return Err(TlsError::file(
            path,
            "no PEM certificate or private key found (expected \
             -----BEGIN CERTIFICATE----- / -----BEGIN PRIVATE KEY----- blocks)",
        ));
    }
    Ok(contents)
}

/// The facts about a certificate that loading needs.
#[derive(Debug)]
pub(crate) struct ParsedCert {
    pub(crate) der: CertificateDer<'static>,
    pub(crate) spki: Vec<u8>,
    subject: Vec<u8>,
    issuer: Vec<u8>,
    pub(crate) names: Vec<String>,
    pub(crate) not_before: i64,
    pub(crate) not_after: i64,
    server_auth: bool,
    client_auth: bool,
}

/// Parse one DER certificate; `path` and `index` (1-based) are for errors.
pub(crate) fn parse_cert(
    der: CertificateDer<'static>,
    path: &Path,
    index: usize,
) -> Result<ParsedCert, TlsError> {
    let bad = |what: String| TlsError::file(path, format!("certificate #{index}: {what}"));
    let (_, cert) = x509_parser::parse_x509_certificate(der.as_ref())
        .map_err(|e| bad(format!("invalid X.509 certificate: {e}")))?;
    let mut names = Vec::new();
    let san = cert
        .subject_alternative_name()
        .map_err(|e| bad(format!("invalid subjectAltName: {e}")))?;
    let mut has_dns = false;
    if let Some(san) = san {
        for general_name in &san.value.general_names {
            match general_name {
                GeneralName::DNSName(name) => {
                    has_dns = true;
                    names.push(normalize_name(name));
                }
                GeneralName::IPAddress(bytes) => {
                    if let Some(ip) = ip_from_bytes(bytes) {
                        names.push(ip.to_string());
                    }
                }
                _ => {}
            }
        }
    }
    if !has_dns {
        for cn in cert.subject().iter_common_name() {
            if let Ok(name) = cn.as_str() {
                names.push(normalize_name(name));
            }
        }
    }
    let mut seen = HashSet::new();
    names.retain(|n| !n.is_empty() && seen.insert(n.clone()));
    let (server_auth, client_auth) = match cert.extended_key_usage() {
        Ok(Some(eku)) => (
            eku.value.any || eku.value.server_auth,
            eku.value.any || eku.value.client_auth,
        ),
        Ok(None) => (true, true),
        Err(e) => return Err(bad(format!("invalid extendedKeyUsage: {e}"))),
    };
    Ok(ParsedCert {
        spki: cert.public_key().raw.to_vec(),
        subject: cert.subject().as_raw().to_vec(),
        issuer: cert.issuer().as_raw().to_vec(),
        names,
        not_before: cert.validity().not_before.timestamp(),
        not_after: cert.validity().not_after.timestamp(),
        server_auth,
        client_auth,
        der,
    })
}

fn ip_from_bytes(bytes: &[u8]) -> Option<IpAddr> {
    match bytes.len() {
        4 => <[u8; 4]>::try_from(bytes).ok().map(IpAddr::from),
        16 => <[u8; 16]>::try_from(bytes).ok().map(IpAddr::from),
        _ => None,
    }
}

/// A private key from a file, loaded by the crypto provider.
struct LoadedKey {
    key: Arc<dyn SigningKey>,
    spki: Vec<u8>,
    file: usize,
}

/// Load the files and build one entry per certificate whose private key was
/// found. Keys without certificate and certificates without names produce
/// warnings.
fn build_entries(
    files: &[PathBuf],
    generated: bool,
    warnings: &mut Vec<String>,
) -> Result<Vec<Entry>, TlsError> {
    let provider = provider();
    let mut certs: Vec<(ParsedCert, usize)> = Vec::new();
    let mut seen_certs = HashSet::new();
    let mut keys: Vec<LoadedKey> = Vec::new();
    for (file_index, path) in files.iter().enumerate() {
        let contents = read_pem_file(path)?;
        for (i, der) in contents.certs.into_iter().enumerate() {
            if !seen_certs.insert(der.as_ref().to_vec()) {
                continue;
            }
            certs.push((parse_cert(der, path, i + 1)?, file_index));
        }
        for der in contents.keys {
            let key = provider
                .key_provider
                .load_private_key(der)
                .map_err(|e| TlsError::file(path, format!("unsupported private key: {e}")))?;
            let Some(spki) = key.public_key().map(|s| s.as_ref().to_vec()) else {
                warnings.push(format!(
                    "{}: cannot determine the public key of a private key; ignored",
                    path.display()
                ));
                continue;
            };
            if keys.iter().any(|k| k.spki == spki) {
                continue;
            }
            keys.push(LoadedKey {
                key,
                spki,
                file: file_index,
            });
        }
    }

    let mut entries = Vec::new();
    for key in &keys {
        let leaves: Vec<usize> = (0..certs.len())
            .filter(|&i| certs[i].0.spki == key.spki)
            .collect();
        if leaves.is_empty() {
            warnings.push(format!(
                "{}: private key has no matching certificate in certfiles; ignored",
                files[key.file].display()
            ));
            continue;
        }
        for leaf in leaves {
            let (cert, file) = &certs[leaf];
            let path = &files[*file];
            if cert.names.is_empty() {
                warnings.push(format!(
                    "{}: certificate has no DNS name (subjectAltName dNSName or CN); ignored",
                    path.display()
                ));
                continue;
            }
            let chain = build_chain(&certs, leaf);
            let chain_len = chain.len();
            let end_point = binding::end_point_hash(cert.der.as_ref());
            entries.push(Entry {
                key: Arc::new(CertifiedKey::new(chain, Arc::clone(&key.key))),
                info: CertInfo {
                    names: cert.names.clone(),
                    source: path.clone(),
                    generated,
                    not_before: cert.not_before,
                    not_after: cert.not_after,
                    chain_len,
                    server_auth: cert.server_auth,
                    client_auth: cert.client_auth,
                    self_issued: cert.subject == cert.issuer,
                },
                end_point,
            });
        }
    }
    Ok(entries)
}

/// The leaf followed by its issuers found among `certs` (preferring ones
/// from the leaf's file), stopping before a self-issued (root) certificate.
fn build_chain(certs: &[(ParsedCert, usize)], leaf: usize) -> Vec<CertificateDer<'static>> {
    let mut chain = vec![certs[leaf].0.der.clone()];
    let mut used = vec![leaf];
    let mut current = leaf;
    while chain.len() <= MAX_CHAIN_DEPTH {
        let (cert, file) = &certs[current];
        if cert.issuer == cert.subject {
            break;
        }
        let candidates = |same_file: bool| {
            (0..certs.len()).find(|&i| {
                !used.contains(&i)
                    && certs[i].0.subject == cert.issuer
                    && certs[i].0.issuer != certs[i].0.subject
                    && (certs[i].1 == *file) == same_file
            })
        };
        let Some(next) = candidates(true).or_else(|| candidates(false)) else {
            break;
        };
        chain.push(certs[next].0.der.clone());
        used.push(next);
        current = next;
    }
    chain
}

impl CertStore {
    /// Load `files` (already glob-expanded), adding expiry warnings.
    pub(crate) fn from_files(
        files: &[PathBuf],
        warnings: &mut Vec<String>,
    ) -> Result<CertStore, TlsError> {
        let entries = build_entries(files, false, warnings)?;
        let now = now_secs();
        let mut store = CertStore::default();
        for entry in entries {
            if let Some(warning) = validity_warning(&entry.info, now) {
                warnings.push(warning);
            }
            store.push(entry);
        }
        Ok(store)
    }

    /// Add the generated self-signed certificate file `path`.
    pub(crate) fn add_generated(&mut self, path: &Path) -> Result<(), TlsError> {
        let mut warnings = Vec::new();
        let entries = build_entries(&[path.to_path_buf()], true, &mut warnings)?;
        if entries.is_empty() {
            return Err(TlsError::file(
                path,
                "generated certificate file holds no usable certificate and key",
            ));
        }
        for entry in entries {
            self.push(entry);
        }
        Ok(())
    }

    fn push(&mut self, entry: Entry) {
        let index = self.entries.len();
        for name in &entry.info.names {
            let replace = match self.by_name.get(name) {
                None => true,
                Some(&old) => {
                    let old = &self.entries[old].info;
                    !entry.info.generated && (old.generated || entry.info.not_after > old.not_after)
                }
            };
            if replace {
                self.by_name.insert(name.clone(), index);
            }
        }
        self.entries.push(entry);
    }

    /// Use the certificate of `host` when the client sends no (or an
    /// unknown) SNI name; without host, the first certificate loaded.
    pub(crate) fn set_default(&mut self, host: Option<&str>) {
        self.default = host
            .and_then(|h| self.lookup(h))
            .or(if self.entries.is_empty() {
                None
            } else {
                Some(0)
            });
    }

    /// The entry whose names cover `name` (exact, then `*.` wildcard).
    pub(crate) fn lookup(&self, name: &str) -> Option<usize> {
        let name = normalize_name(name);
        if let Some(&i) = self.by_name.get(&name) {
            return Some(i);
        }
        let (_, parent) = name.split_once('.')?;
        if parent.is_empty() {
            return None;
        }
        self.by_name.get(&format!("*.{parent}")).copied()
    }

    /// The entry to serve for SNI `name` (default when absent or unknown).
    pub(crate) fn resolve_name(&self, name: Option<&str>) -> Option<&Entry> {
        name.and_then(|n| self.lookup(n))
            .or(self.default)
            .and_then(|i| self.entries.get(i))
    }

    /// Whether no certificate is loaded at all.
    pub(crate) fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// All indexed names, sorted.
    #[cfg(test)]
    pub(crate) fn names(&self) -> Vec<String> {
        let mut names: Vec<String> = self.by_name.keys().cloned().collect();
        names.sort();
        names
    }

    /// The certificate a client asking for `name` (SNI) gets, if one
    /// matches by name (no default fallback).
    pub(crate) fn info_for(&self, name: &str) -> Option<CertInfo> {
        self.lookup(&normalize_name(name))
            .map(|i| self.entries[i].info.clone())
    }

    /// Descriptions of all entries.
    #[allow(dead_code)] // used by TlsSetup::certificates
    pub(crate) fn infos(&self) -> Vec<CertInfo> {
        self.entries.iter().map(|e| e.info.clone()).collect()
    }
}

impl rustls::server::ResolvesServerCert for CertStore {
    fn resolve(&self, client_hello: rustls::server::ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.resolve_name(client_hello.server_name())
            .map(Entry::certified_key)
    }
}

/// A warning when `info` is expired, not yet valid, or expires within 30
/// days of `now`.
fn validity_warning(info: &CertInfo, now: i64) -> Option<String> {
    let what = format!(
        "certificate for {} in {}",
        info.names.join(", "),
        info.source.display()
    );
    if info.not_after < now {
        Some(format!(
            "{what} expired on {}; clients and servers will refuse it",
            format_date(info.not_after)
        ))
    } else if info.not_before > now {
        Some(format!(
            "{what} is not valid before {}",
            format_date(info.not_before)
        ))
    } else if info.not_after - now < EXPIRY_WARNING_SECS {
        Some(format!(
            "{what} expires on {} (in {} days); renew it",
            format_date(info.not_after),
            (info.not_after - now) / 86_400
        ))
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tls::selfsigned::test_support::cert_pem;
    use sha2::{Digest, Sha384};

    // Fixtures made with openssl (valid until 2126): a PKCS#1 RSA key with a
    // sha384WithRSA certificate for rsa.example (SAN), and a SEC1 P-256 key
    // with a certificate whose only name is its CN ec.example.
    const RSA_PKCS1_KEY: &str = "\
-----BEGIN RSA PRIVATE KEY-----\n\
MIIEowIBAAKCAQEAofjzIV9n6G/xdAqZiDRPc6AnAFWXKxJQcUtMx9ho4M/uDpbL\n\
r0LoLuLctfp++JF2Iq/29x0OPbTkmkL6HUTgrZQAgq3ntZCoLdeT0gY49GCezCxV\n\
eOSmpbcjawrWDoWZOTHUUBqAgG1AlbSVltjf/2g730e67B2ks2yVkkhkVZcYlX6Z\n\
HV3ICs7ke9VmSzzdOtz8kz61kdz2L+/aMnDaAXqu8VXGOQQ4RGwp/7vAuZUVyC3t\n\
yJNyhtmZedLLP3SGLsetWm+PYicM9UfaCCA6jzWZdV4qBfSzawdr/q5NXxargPqF\n\
WsDzPhLChl6zfi3tRVkSWP3SoTVfnfO+oyNopQIDAQABAoIBABF9vhm4QRMVhaRT\n\
obVW+s6AeL29QHQfB+9YI5xAN0ExyyIpsCjGx6aKiq2fNbd3k+OWj4uriFZrErXC\n\
7lobTk0IWs7B43AUxUigC19Gmz9usK9ZSUijHojuQEWmt6t9S2jlA+m7lu1nfu47\n\
wFy4ImZlNfP8fcfSQq86lmNj7Gvel26yFacFwaMDoWJ5w3b76CD6v4GUygxPQErn\n\
S/2Y5qtQYwx5pLAJuc5fGtjFg7DVaFF7M3/VMc1DLuFc2N1P2Z3yhdXFuJa0d0u9\n\
zAVwVh8GPlH1bQjBISOkB4w6RhTqBw8tW2NCNiFKxhJDsq4bpQGyQ2eArB0bUsCy\n\
jhB52dECgYEA2W5rortkjrS+1BAc4cBYR7qTmDTVuDL+C7wKLrUQ1IWm/7X4tEt2\n\
5oNyUCZ4PYHSG7/YR7+Jnosk2QOY8yHGc6n099sstS0VRhSnhBy5CJ+wlpP01twF\n\
2vM5XUJW1ojxdUnjPvM44xZY0p8LoHg+ZVJ98P7yRZnGjUBADDD0BVECgYEAvrQi\n\
20kr9XVOT6oDV5k/t0NSpMVF9hZcmgSlbDpziSbkdt8ZbAtlssOlm2I51C1CUxoH\n\
+CnEau56Aw/zIyiWUZxNh9iaw9Zi+XdDIyuffrdbp2cTuTeeRpf5WVKW6s6U1xxo\n\
aoJZgSFIN27Ok8/7aNQEtzZ3ifZe9M0ekUi1KRUCgYEAxRgJ675wXcfLv5FHjP/9\n\
RjADgJJMNSfMD7kJheNN+UeZ5OwAIPbTNgtrQOpOTnryiYLyu78NMbEx2qIfMC2q\n\
pcgnLdH4idbvFNK+MsySkhWnTieaZnWVvS6DDl2HN/t03Pv4SWTSaU8lfu767CBz\n\
dwc68I058gt95yaZqDNrz7ECgYBHRLKyGMpg1RILG5JcLl1tc69y/HaE3R6GQK5B\n\
oCaFXw+KjR3HDwtWn19IjpDmBnP+8n9/8rwA6laWxmMrBIQIw80Fs6FDBt++Mx/Y\n\
CPl2Nbf++7qXQX3ZC/qXsxHLdqCRM4CiLUydwX5nmPWCr/tY1cNdZPGPkY8zFWUT\n\
DoUFcQKBgC+zjSM6DjXKtD8G3l9y6DA0CQQdd4IuhJKSpXPjk5ArrTw1XhiSc2ed\n\
EaSwMbD8F5jB2uwZtEy7qawmimgLF5wCkW3qg8QN8I1qx0rADgu+jeIDP9tTnxwS\n\
Me2TK7OM9NaXeOduGIIZgrwA0BdRiyB99bwXOigbC0IFqWCW7Fjb\n\
-----END RSA PRIVATE KEY-----\n\
";
    const RSA_CERT: &str = "\
-----BEGIN CERTIFICATE-----\n\
MIIDJzCCAg+gAwIBAgIUQptv5O4j9XfYB4ey64EDKqJ08IIwDQYJKoZIhvcNAQEM\n\
BQAwFjEUMBIGA1UEAwwLcnNhLmV4YW1wbGUwIBcNMjYxMTIyMDEwMzM1WhgPMjEy\n\
NjEwMjkwMTAzMzVaMBYxFDASBgNVBAMMC3JzYS5leGFtcGxlMIIBIjANBgkqhkiG\n\
9w0BAQEFAAOCAQ8AMIIBCgKCAQEAofjzIV9n6G/xdAqZiDRPc6AnAFWXKxJQcUtM\n\
x9ho4M/uDpbLr0LoLuLctfp++JF2Iq/29x0OPbTkmkL6HUTgrZQAgq3ntZCoLdeT\n\
0gY49GCezCxVeOSmpbcjawrWDoWZOTHUUBqAgG1AlbSVltjf/2g730e67B2ks2yV\n\
kkhkVZcYlX6ZHV3ICs7ke9VmSzzdOtz8kz61kdz2L+/aMnDaAXqu8VXGOQQ4RGwp\n\
/7vAuZUVyC3tyJNyhtmZedLLP3SGLsetWm+PYicM9UfaCCA6jzWZdV4qBfSzawdr\n\
/q5NXxargPqFWsDzPhLChl6zfi3tRVkSWP3SoTVfnfO+oyNopQIDAQABo2swaTAd\n\
BgNVHQ4EFgQUHpay6KkmNDHKNRfrKzhUFMXVoiwwHwYDVR0jBBgwFoAUHpay6Kkm\n\
NDHKNRfrKzhUFMXVoiwwDwYDVR0TAQH/BAUwAwEB/zAWBgNVHREEDzANggtyc2Eu\n\
ZXhhbXBsZTANBgkqhkiG9w0BAQwFAAOCAQEAm5RhdHblKqMgze6Hgq9fAFPrRR0J\n\
khQNUgKEgkRQsIOo1F+GPnvuHgcmWRJLPcISjQrXUA9HNBGz0aUs5kEKLb4eJxhz\n\
R3hEb7upBPhllMqiB7SEjzkaU5lWpoIhXd8HhNkQtirlAFCMrX7yBdHBGxkErDoO\n\
4nKmniB0+mtir6vnbuakMlboFn2eKWEOg+gKF/I7bzpfw9vwkUpY9dFbW8j+hzhP\n\
U1iKo3bhGZeWi7IbAkfsHMfXIp5QE8nSSn8WhUejW4v3ou2CLkL1sq0gP9olk535\n\
MQj7DjZ//hDP20VeQYNiZeYomsYlwVBia37WeudQmQ2jXhIeKAPMSNRuNg==\n\
-----END CERTIFICATE-----\n\
";
    const EC_SEC1_KEY: &str = "\
-----BEGIN EC PRIVATE KEY-----\n\
MHcCAQEEINT+EuXUyU3+/jZ5pIN+1kHQ/l/dLJ750qAVGUoqnM2KoAoGCCqGSM49\n\
AwEHoUQDQgAELPjD3Hv038GXMROO5B9I0DV/jEdt1+X63J1eCSJ3r/eNIE8uK3xC\n\
k20KFb4R1K7+S43Evuk4LeSlZPQerxbQjw==\n\
-----END EC PRIVATE KEY-----\n\
";
    const EC_CERT: &str = "\
-----BEGIN CERTIFICATE-----\n\
MIIBgTCCASegAwIBAgIUK2KT5mxkwtniKx7dqiwR4/YXj34wCgYIKoZIzj0EAwIw\n\
FTETMBEGA1UEAwwKZWMuZXhhbXBsZTAgFw0yNjExMjIwMTAzMzVaGA8yMTI2MTAy\n\
OTAxMDMzNVowFTETMBEGA1UEAwwKZWMuZXhhbXBsZTBZMBMGByqGSM49AgEGCCqG\n\
SM49AwEHA0IABCz4w9x79N/BlzETjuQfSNA1f4xHbdfl+tydXgkid6/3jSBPLit8\n\
QpNtChW+EdSu/kuNxL7pOC3kpWT0Hq8W0I+jUzBRMB0GA1UdDgQWBBQXKMO9b61r\n\
4d1x02QvrSTy1AiELzAfBgNVHSMEGDAWgBQXKMO9b61r4d1x02QvrSTy1AiELzAP\n\
BgNVHRMBAf8EBTADAQH/MAoGCCqGSM49BAMCA0gAMEUCICw82WQhF7X6TKtmisip\n\
A20khDaNRXq/exhNbDs2FxXwAiEAoqHMLvszvH2xCKl8ZnDKvEBcAJtHoZh49CJD\n\
Y6r+QFY=\n\
-----END CERTIFICATE-----\n\
";

    fn write(dir: &Path, name: &str, contents: &str) -> PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, contents).expect("write fixture");
        path
    }

    fn load(files: &[PathBuf]) -> (CertStore, Vec<String>) {
        let mut warnings = Vec::new();
        let store = CertStore::from_files(files, &mut warnings).expect("load");
        (store, warnings)
    }

    /// root CA → intermediate CA → leaf for `name`: (leaf PEM, leaf key PEM,
    /// intermediate PEM, root PEM).
    fn ca_chain(name: &str) -> (String, String, String, String) {
        let ca_params = |cn: &str| {
            let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
            params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
            params.distinguished_name = rcgen::DistinguishedName::new();
            params
                .distinguished_name
                .push(rcgen::DnType::CommonName, cn);
            params
        };
        let root_key = rcgen::KeyPair::generate().expect("key");
        let root_params = ca_params("Test Root");
        let root = root_params.self_signed(&root_key).expect("root");
        let root_issuer = rcgen::Issuer::from_params(&root_params, &root_key);
        let mid_key = rcgen::KeyPair::generate().expect("key");
        let mid_params = ca_params("Test Intermediate");
        let mid = mid_params.signed_by(&mid_key, &root_issuer).expect("mid");
        let mid_issuer = rcgen::Issuer::from_params(&mid_params, &mid_key);
        let leaf_key = rcgen::KeyPair::generate().expect("key");
        let leaf = rcgen::CertificateParams::new(vec![name.to_string()])
            .expect("params")
            .signed_by(&leaf_key, &mid_issuer)
            .expect("leaf");
        (leaf.pem(), leaf_key.serialize_pem(), mid.pem(), root.pem())
    }

    #[test]
    fn dates_format_as_iso() {
        assert_eq!(format_date(0), "1970-01-01");
        assert_eq!(format_date(951_782_400), "2000-02-29");
        assert_eq!(format_date(1_735_689_599), "2024-12-31");
        assert_eq!(format_date(1_735_689_600), "2025-01-01");
    }

    #[test]
    fn chain_built_from_any_order_and_across_files() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (leaf, key, mid, root) = ca_chain("chat.example");
        let all = write(dir.path(), "all.pem", &format!("{key}{mid}{root}{leaf}"));
        let (store, warnings) = load(std::slice::from_ref(&all));
        assert!(warnings.is_empty(), "{warnings:?}");
        assert_eq!(store.entries.len(), 1);
        let entry = &store.entries[0];
        assert_eq!(entry.key.cert.len(), 2, "leaf + intermediate, no root");
        assert_eq!(
            entry.key.cert[1],
            read_pem_file(&all).expect("read").certs[0]
        );
        assert_eq!(entry.info.names, ["chat.example"]);
        assert_eq!(entry.info.source, all);
        assert_eq!(entry.info.chain_len, 2);
        assert!(!entry.info.generated);

        // certbot style: cert.pem + chain.pem + privkey.pem, plus fullchain.pem
        // repeating the leaf.
        let cert = write(dir.path(), "cert.pem", &leaf);
        let chain = write(dir.path(), "chain.pem", &mid);
        let full = write(dir.path(), "fullchain.pem", &format!("{leaf}{mid}"));
        let privkey = write(dir.path(), "privkey.pem", &key);
        let (store, warnings) = load(&[cert.clone(), chain, full, privkey]);
        assert!(warnings.is_empty(), "{warnings:?}");
        assert_eq!(store.entries.len(), 1);
        assert_eq!(store.entries[0].key.cert.len(), 2);
        assert_eq!(store.entries[0].info.source, cert);
    }

    #[test]
    fn pkcs1_rsa_and_sec1_ec_keys_load() {
        let dir = tempfile::tempdir().expect("tempdir");
        let rsa = write(dir.path(), "rsa.pem", &format!("{RSA_PKCS1_KEY}{RSA_CERT}"));
        let ec = write(dir.path(), "ec.pem", &format!("{EC_CERT}{EC_SEC1_KEY}"));
        let (store, warnings) = load(&[rsa, ec]);
        assert!(warnings.is_empty(), "{warnings:?}");
        assert_eq!(store.names(), ["ec.example", "rsa.example"]);
        let rsa_entry = store.resolve_name(Some("rsa.example")).expect("rsa");
        let rsa_der = read_pem_file(&dir.path().join("rsa.pem"))
            .expect("read")
            .certs[0]
            .clone();
        assert_eq!(
            rsa_entry.end_point(),
            Some(Sha384::digest(rsa_der.as_ref()).as_slice()),
            "sha384WithRSA certificate: SHA-384 end-point hash"
        );
        let ec_entry = store.resolve_name(Some("EC.example.")).expect("ec");
        assert_eq!(ec_entry.info.names, ["ec.example"], "CN used without SAN");
    }

    #[test]
    fn key_without_certificate_warns() {
        let dir = tempfile::tempdir().expect("tempdir");
        let other = cert_pem(&["b.example"], -1, 300);
        let key_only = other
            .find("-----BEGIN PRIVATE KEY")
            .map(|i| other[i..].to_string())
            .expect("key in pem");
        let good = write(dir.path(), "good.pem", &cert_pem(&["a.example"], -1, 300));
        let lonely = write(dir.path(), "lonely-key.pem", &key_only);
        let (store, warnings) = load(&[good, lonely]);
        assert_eq!(store.entries.len(), 1);
        assert_eq!(warnings.len(), 1, "{warnings:?}");
        assert!(warnings[0].contains("lonely-key.pem"), "{warnings:?}");
        assert!(
            warnings[0].contains("no matching certificate"),
            "{warnings:?}"
        );
    }

    #[test]
    fn validity_warnings() {
        let dir = tempfile::tempdir().expect("tempdir");
        let expired = write(dir.path(), "old.pem", &cert_pem(&["old.example"], -400, -5));
        let soon = write(
            dir.path(),
            "soon.pem",
            &cert_pem(&["soon.example"], -300, 10),
        );
        let future = write(
            dir.path(),
            "future.pem",
            &cert_pem(&["future.example"], 3, 300),
        );
        let fine = write(
            dir.path(),
            "fine.pem",
            &cert_pem(&["fine.example"], -1, 300),
        );
        let (store, warnings) = load(&[expired, soon, future, fine]);
        assert_eq!(store.entries.len(), 4, "still served");
        assert_eq!(warnings.len(), 3, "{warnings:?}");
        assert!(warnings[0].contains("old.example") && warnings[0].contains("expired on"));
        assert!(warnings[0].contains("old.pem"));
        assert!(warnings[1].contains("soon.example") && warnings[1].contains("expires on"));
        assert!(warnings[1].contains("in 9 days") || warnings[1].contains("in 10 days"));
        assert!(warnings[2].contains("future.example") && warnings[2].contains("not valid before"));
    }

    #[test]
    fn file_errors_name_the_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let cases = [
            (
                "garbage.pem",
                "-----BEGIN CERTIFICATE-----\n!!!! not base64 !!!!\n-----END CERTIFICATE-----\n",
                "bad PEM",
            ),
            ("empty.pem", "just some text\n", "no PEM certificate"),
            (
                "unterminated.pem",
                "-----BEGIN CERTIFICATE-----\nMIIB\n",
                "bad PEM",
            ),
            (
                "notx509.pem",
                "-----BEGIN CERTIFICATE-----\naGVsbG8=\n-----END CERTIFICATE-----\n",
                "invalid X.509",
            ),
            (
                "badkey.pem",
                "-----BEGIN PRIVATE KEY-----\naGVsbG8=\n-----END PRIVATE KEY-----\n",
                "unsupported private key",
            ),
            (
                "enc.pem",
                "-----BEGIN ENCRYPTED PRIVATE KEY-----\naGVsbG8=\n-----END ENCRYPTED PRIVATE KEY-----\n",
                "encrypted",
            ),
        ];
        for (name, contents, problem) in cases {
            let path = write(dir.path(), name, contents);
            let err = CertStore::from_files(std::slice::from_ref(&path), &mut Vec::new())
                .expect_err("must fail");
            assert_eq!(err.path(), Some(path.as_path()));
            let text = err.to_string();
            assert!(text.contains(name) && text.contains(problem), "{text}");
        }
        let missing = dir.path().join("missing.pem");
        let err = CertStore::from_files(&[missing], &mut Vec::new()).expect_err("missing");
        assert!(err.to_string().contains("missing.pem"), "{err}");
        assert!(err.to_string().contains("cannot read"), "{err}");
    }

    #[test]
    fn lookup_rules() {
        let dir = tempfile::tempdir().expect("tempdir");
        let wild = write(
            dir.path(),
            "wild.pem",
            &cert_pem(&["*.example.org"], -1, 100),
        );
        let short = write(
            dir.path(),
            "short.pem",
            &cert_pem(&["example.org"], -1, 100),
        );
        let long = write(dir.path(), "long.pem", &cert_pem(&["example.org"], -1, 200));
        let (mut store, warnings) = load(&[wild, short, long.clone()]);
        assert!(warnings.is_empty(), "{warnings:?}");
        assert_eq!(store.lookup("chat.example.org"), Some(0));
        assert_eq!(store.lookup("CHAT.Example.org."), Some(0));
        assert_eq!(store.lookup("a.chat.example.org"), None, "one label only");
        assert_eq!(store.lookup("other.org"), None);
        assert_eq!(store.lookup("org"), None);
        assert_eq!(
            store.lookup("example.org"),
            Some(2),
            "longest validity wins"
        );
        assert_eq!(store.names(), ["*.example.org", "example.org"]);

        // A generated certificate does not displace a loaded one.
        let generated = write(
            dir.path(),
            "gen.pem",
            &cert_pem(&["example.org", "new.example"], -1, 900),
        );
        store.add_generated(&generated).expect("generated");
        assert_eq!(store.lookup("example.org"), Some(2));
        assert_eq!(store.lookup("new.example"), Some(3));
        assert!(store.entries[3].info.generated);

        // Default: the given host, else the first certificate.
        store.set_default(Some("new.example"));
        let default = store.resolve_name(None).expect("default");
        assert_eq!(default.info.names, ["example.org", "new.example"]);
        assert_eq!(
            store
                .resolve_name(Some("unknown.test"))
                .map(|e| e.info.source.clone()),
            Some(generated)
        );
        store.set_default(None);
        assert_eq!(
            store.resolve_name(None).map(|e| e.info.names.clone()),
            Some(vec!["*.example.org".to_string()])
        );
        assert_eq!(
            store
                .resolve_name(Some("example.org"))
                .map(|e| e.info.source.clone()),
            Some(long)
        );
    }
}
