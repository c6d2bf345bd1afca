//! Self-signed certificates made with rcgen (ECDSA P-256 / SHA-256, EKU
//! serverAuth + clientAuth, valid one year from one hour ago, SANs: each
//! host and `*.host`), written as one PEM file holding the certificate and
//! the PKCS#8 key, mode 0600. Used by `rookery gencert` and, for served hosts
//! without a configured certificate, kept under `<data_dir>/certs/<host>.pem`
//! (directory mode 0700): reused on later starts while it carries the right
//! names and stays valid for more than 30 days, regenerated otherwise.

use std::io::Write;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use super::certstore::{normalize_name, now_secs, parse_cert, read_pem_file};
use super::{provider, TlsError, EXPIRY_WARNING_SECS};

/// Validity of generated certificates.
const VALIDITY: Duration = Duration::from_secs(365 * 24 * 3600);

/// Generated certificates start this long before "now" (clock skew).
const BACKDATE: Duration = Duration::from_secs(3600);

/// Check that `host` is an ASCII DNS name (or IP address) usable in a
/// certificate and as a file name; `*.` is allowed as prefix when
/// `allow_wildcard`.
fn validate_host(host: &str, allow_wildcard: bool) -> Result<(), TlsError> {
    let bad = |why: &str| TlsError::other(format!("cannot make a certificate for {host:?}: {why}"));
    let name = match host.strip_prefix("*.") {
        Some(rest) if allow_wildcard => rest,
        _ => host,
    };
    if name.is_empty() || name.len() > 253 {
        return Err(bad("not a domain name"));
    }
    if !name.is_ascii() {
        return Err(bad("not ASCII (use the punycode xn-- form of the domain)"));
    }
    if name.starts_with('.') || name.ends_with('.') || name.contains("..") {
        return Err(bad("empty label"));
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_' | ':')))
    {
        return Err(bad(&format!("invalid character {c:?}")));
    }
    if name.contains(':') && name.parse::<IpAddr>().is_err() {
        return Err(bad("invalid character ':'"));
    }
    Ok(())
}

/// The subjectAltNames for `hosts`: each host (lower case) and, for DNS
/// names that are not wildcards already, `*.host`.
pub(crate) fn san_names(hosts: &[String], allow_wildcard: bool) -> Result<Vec<String>, TlsError> {
    if hosts.is_empty() {
        return Err(TlsError::other(
            "cannot make a certificate: no host name given",
        ));
    }
    let mut names = Vec::new();
    for host in hosts {
        let host = normalize_name(host.trim());
        validate_host(&host, allow_wildcard)?;
        let wildcard = (!host.starts_with("*.") && host.parse::<IpAddr>().is_err())
            .then(|| format!("*.{host}"));
        for name in std::iter::once(host).chain(wildcard) {
            if !names.contains(&name) {
                names.push(name);
            }
        }
    }
    Ok(names)
}

/// A PEM certificate (first) and PKCS#8 key for `names`, valid from
/// `not_before` to `not_after`.
pub(crate) fn self_signed_pem(
    names: &[String],
    not_before: SystemTime,
    not_after: SystemTime,
) -> Result<String, rcgen::Error> {
    let mut params = rcgen::CertificateParams::new(names.to_vec())?;
    let mut dn = rcgen::DistinguishedName::new();
    if let Some(first) = names.first() {
        dn.push(rcgen::DnType::CommonName, first.as_str());
    }
    dn.push(rcgen::DnType::OrganizationName, "Rookery self-signed");
    params.distinguished_name = dn;
    params.not_before = not_before.into();
    params.not_after = not_after.into();
    params.key_usages = vec![rcgen::KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![
        rcgen::ExtendedKeyUsagePurpose::ServerAuth,
        rcgen::ExtendedKeyUsagePurpose::ClientAuth,
    ];
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
    let cert = params.self_signed(&key)?;
    Ok(format!("{}{}", cert.pem(), key.serialize_pem()))
}

/// Write a new self-signed certificate + key PEM for `hosts` (plus `*.host`
/// for each) to `out`, mode 0600, replacing it atomically. Used by
/// `rookery gencert`.
pub fn generate_self_signed(hosts: &[String], out: &Path) -> Result<(), TlsError> {
    let names = san_names(hosts, true)?;
    let now = SystemTime::now();
    let pem = self_signed_pem(&names, now - BACKDATE, now + VALIDITY)
        .map_err(|e| TlsError::file(out, format!("cannot generate certificate: {e}")))?;
    write_private_file(out, pem.as_bytes())
}

/// Write `data` to `path` with mode 0600 through a temporary file in the
/// same directory and a rename.
pub(crate) fn write_private_file(path: &Path, data: &[u8]) -> Result<(), TlsError> {
    let fail = |what: &str, e: std::io::Error| TlsError::file(path, format!("cannot {what}: {e}"));
    let file_name = path
        .file_name()
        .ok_or_else(|| TlsError::file(path, "not a file name"))?;
    let mut tmp_name = std::ffi::OsString::from(".");
    tmp_name.push(file_name);
    tmp_name.push(format!(".tmp{}", std::process::id()));
    let tmp = path.with_file_name(tmp_name);
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let result = (|| {
        let mut file = options.open(&tmp).map_err(|e| fail("create file", e))?;
        #[cfg(unix)]
        std::fs::set_permissions(&tmp, std::os::unix::fs::PermissionsExt::from_mode(0o600))
            .map_err(|e| fail("set permissions", e))?;
        file.write_all(data).map_err(|e| fail("write", e))?;
        file.sync_all().map_err(|e| fail("write", e))?;
        std::fs::rename(&tmp, path).map_err(|e| fail("write", e))
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// Create `dir` (and missing parents) with mode 0700.
fn create_private_dir(dir: &Path) -> Result<(), TlsError> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder
        .create(dir)
        .map_err(|e| TlsError::file(dir, format!("cannot create directory: {e}")))
}

/// Whether the file at `path` holds exactly one certificate carrying
/// exactly `names`, valid now and for more than 30 more days, with its key.
fn reusable(path: &Path, names: &[String]) -> bool {
    let Ok(contents) = read_pem_file(path) else {
        return false;
    };
    let ([cert], [key]) = (contents.certs.as_slice(), contents.keys.as_slice()) else {
        return false;
    };
    let Ok(cert) = parse_cert(cert.clone(), path, 1) else {
        return false;
    };
    let Ok(key) = provider().key_provider.load_private_key(key.clone_key()) else {
        return false;
    };
    let now = now_secs();
    let mut have = cert.names.clone();
    let mut want = names.to_vec();
    have.sort();
    want.sort();
    have == want
        && cert.not_before <= now
        && cert.not_after - now > EXPIRY_WARNING_SECS
        && key
            .public_key()
            .is_some_and(|spki| spki.as_ref() == cert.spki.as_slice())
}

/// The path of `host`'s self-signed certificate under `data_dir`, generated
/// now unless a reusable one is there.
pub(crate) fn ensure_host_certificate(host: &str, data_dir: &Path) -> Result<PathBuf, TlsError> {
    let host = normalize_name(host);
    validate_host(&host, false)?;
    let names = san_names(std::slice::from_ref(&host), false)?;
    let dir = data_dir.join("certs");
    create_private_dir(&dir)?;
    let path = dir.join(format!("{host}.pem"));
    if !reusable(&path, &names) {
        generate_self_signed(std::slice::from_ref(&host), &path)?;
    }
    Ok(path)
}

#[cfg(test)]
pub(crate) mod test_support {
    //! Helpers shared by the TLS tests.
    use super::*;

    /// A self-signed PEM (certificate then key) for `names` valid from
    /// `from_days` to `to_days` relative to now.
    pub(crate) fn cert_pem(names: &[&str], from_days: i64, to_days: i64) -> String {
        let at = |days: i64| {
            let delta = Duration::from_secs(days.unsigned_abs() * 86_400);
            if days < 0 {
                SystemTime::now() - delta
            } else {
                SystemTime::now() + delta
            }
        };
        let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        self_signed_pem(&names, at(from_days), at(to_days)).expect("generate")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn san_names_add_wildcards_and_validate() {
        let names = san_names(
            &["Example.ORG.".to_string(), "127.0.0.1".to_string()],
            false,
        )
        .expect("valid");
        assert_eq!(names, ["example.org", "*.example.org", "127.0.0.1"]);
        assert_eq!(
            san_names(&["*.example.org".to_string()], true).expect("wildcard ok"),
            ["*.example.org"]
        );
        for bad in [
            "",
            "../etc",
            "a/b",
            "ex ample.org",
            "é.example",
            "*.example.org",
        ] {
            assert!(
                san_names(&[bad.to_string()], false).is_err(),
                "{bad:?} accepted"
            );
        }
        assert!(san_names(&[], true).is_err());
    }

    #[test]
    fn generate_writes_private_pem_with_names_and_eku() {
        let dir = tempfile::tempdir().expect("tempdir");
        let out = dir.path().join("dev.pem");
        generate_self_signed(&["xmpp.example".to_string()], &out).expect("generate");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&out).expect("stat").permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let contents = read_pem_file(&out).expect("read");
        assert_eq!((contents.certs.len(), contents.keys.len()), (1, 1));
        let der = contents.certs[0].clone();
        let (_, cert) = x509_parser::parse_x509_certificate(der.as_ref()).expect("parse");
        let eku = cert.extended_key_usage().expect("eku").expect("present");
        assert!(eku.value.server_auth && eku.value.client_auth);
        let parsed = parse_cert(der, &out, 1).expect("parse");
        assert_eq!(parsed.names, ["xmpp.example", "*.xmpp.example"]);
        let now = now_secs();
        assert!(parsed.not_before <= now && parsed.not_after > now + 360 * 86_400);
        assert!(reusable(&out, &parsed.names));
        // No leftover temporary file.
        assert_eq!(std::fs::read_dir(dir.path()).expect("ls").count(), 1);
    }

    #[test]
    fn generate_names_the_file_on_error() {
        let dir = tempfile::tempdir().expect("tempdir");
        let out = dir.path().join("missing-dir").join("dev.pem");
        let err = generate_self_signed(&["xmpp.example".to_string()], &out).expect_err("no dir");
        assert!(err.to_string().contains("missing-dir/dev.pem"), "{err}");
    }

    #[test]
    fn host_certificate_reused_then_regenerated() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = ensure_host_certificate("a.example", dir.path()).expect("first");
        assert_eq!(path, dir.path().join("certs/a.example.pem"));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(dir.path().join("certs"))
                .expect("stat")
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o700);
        }
        let first = std::fs::read(&path).expect("read");
        ensure_host_certificate("A.Example", dir.path()).expect("second");
        assert_eq!(std::fs::read(&path).expect("read"), first);

        // Expiring soon: regenerated.
        std::fs::write(
            &path,
            test_support::cert_pem(&["a.example", "*.a.example"], -300, 10),
        )
        .expect("write");
        ensure_host_certificate("a.example", dir.path()).expect("third");
        let contents = read_pem_file(&path).expect("read");
        let cert = parse_cert(contents.certs[0].clone(), &path, 1).expect("parse");
        assert!(cert.not_after > now_secs() + 300 * 86_400);

        // Garbage: regenerated.
        std::fs::write(&path, "garbage").expect("write");
        ensure_host_certificate("a.example", dir.path()).expect("fourth");
        assert!(reusable(
            &path,
            &["a.example".to_string(), "*.a.example".to_string()]
        ));
    }
}
