//! TLS channel-binding data for SASL `-PLUS` mechanisms (SCRAM-*-PLUS):
//! `tls-server-end-point` (RFC 5929 §4.1), computed once per certificate
//! from its DER, and `tls-exporter` (RFC 9266), read from a live TLS 1.3
//! connection.

use sha2::{Digest, Sha224, Sha256, Sha384, Sha512};
use x509_parser::signature_algorithm::RsaSsaPssParams;

/// The exporter label RFC 9266 defines for `tls-exporter`.
pub const EXPORTER_LABEL: &[u8] = b"EXPORTER-Channel-Binding";

/// Length of `tls-exporter` data (RFC 9266: 32 bytes).
pub const EXPORTER_LEN: usize = 32;

/// `tls-exporter` channel-binding data (RFC 9266): exporter label
/// `EXPORTER-Channel-Binding`, empty context, 32 bytes. Only for completed
/// TLS 1.3 connections: `None` for TLS 1.2 (RFC 9266 allows it there only
/// with the extended master secret; Rookery offers it on TLS 1.3 only) and
/// while handshaking.
pub fn tls_exporter(conn: &rustls::ServerConnection) -> Option<Vec<u8>> {
    if conn.is_handshaking() || conn.protocol_version() != Some(rustls::ProtocolVersion::TLSv1_3) {
        return None;
    }
    conn.export_keying_material(vec![0u8; EXPORTER_LEN], EXPORTER_LABEL, Some(&[]))
        .ok()
}

/// The hash functions RFC 5929 can pick.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Hash {
    Sha224,
    Sha256,
    Sha384,
    Sha512,
}

/// The hash RFC 5929 §4.1 prescribes for a certificate signed with
/// `sig_oid` (dotted form): SHA-256 for MD5/SHA-1/SHA-256 signatures, the
/// signature's own hash otherwise, `None` when undefined (no single hash,
/// e.g. Ed25519, or unknown algorithm).
fn hash_for_signature(sig_oid: &str, pss_hash_oid: Option<&str>) -> Option<Hash> {
    Some(match sig_oid {
        // md5WithRSA, sha1WithRSA, sha256WithRSA
        "1.2.840.113549.1.1.4" | "1.2.840.113549.1.1.5" | "1.2.840.113549.1.1.11" => Hash::Sha256,
        // ecdsa-with-SHA1, ecdsa-with-SHA256, dsa-with-sha1, dsa-with-sha256
        "1.2.840.10045.4.1"
        | "1.2.840.10045.4.3.2"
        | "1.2.840.10040.4.3"
        | "2.16.840.1.101.3.4.3.2" => Hash::Sha256,
        // sha224WithRSA, ecdsa-with-SHA224, dsa-with-sha224
        "1.2.840.113549.1.1.14" | "1.2.840.10045.4.3.1" | "2.16.840.1.101.3.4.3.1" => Hash::Sha224,
        // sha384WithRSA, ecdsa-with-SHA384
        "1.2.840.113549.1.1.12" | "1.2.840.10045.4.3.3" => Hash::Sha384,
        // sha512WithRSA, ecdsa-with-SHA512
        "1.2.840.113549.1.1.13" | "1.2.840.10045.4.3.4" => Hash::Sha512,
        // RSASSA-PSS: the hash is in the parameters (default SHA-1).
        "1.2.840.113549.1.1.10" => match pss_hash_oid {
            None | Some("1.3.14.3.2.26") | Some("2.16.840.1.101.3.4.2.1") => Hash::Sha256,
            Some("2.16.840.1.101.3.4.2.4") => Hash::Sha224,
            Some("2.16.840.1.101.3.4.2.2") => Hash::Sha384,
            Some("2.16.840.1.101.3.4.2.3") => Hash::Sha512,
            Some(_) => return None,
        },
        _ => return None,
    })
}

/// `tls-server-end-point` data for the DER certificate `der`, or `None`
/// when RFC 5929 leaves it undefined or the certificate cannot be parsed.
pub(crate) fn end_point_hash(der: &[u8]) -> Option<Vec<u8>> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    let alg = &cert.signature_algorithm;
    let sig_oid = alg.algorithm.to_id_string();
    let pss_hash = if sig_oid == "1.2.840.113549.1.1.10" {
        match &alg.parameters {
            Some(params) => Some(
                RsaSsaPssParams::try_from(params)
                    .ok()?
                    .hash_algorithm_oid()
                    .to_id_string(),
            ),
            None => None,
        }
    } else {
        None
    };
    let digest = match hash_for_signature(&sig_oid, pss_hash.as_deref())? {
        Hash::Sha224 => Sha224::digest(der).to_vec(),
        Hash::Sha256 => Sha256::digest(der).to_vec(),
        Hash::Sha384 => Sha384::digest(der).to_vec(),
        Hash::Sha512 => Sha512::digest(der).to_vec(),
    };
    Some(digest)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn self_signed_der(alg: &'static rcgen::SignatureAlgorithm) -> Vec<u8> {
        let key = rcgen::KeyPair::generate_for(alg).expect("key generation");
        let params =
            rcgen::CertificateParams::new(vec!["hash.example".to_string()]).expect("params");
        params
            .self_signed(&key)
            .expect("self-signed")
            .der()
            .to_vec()
    }

    #[test]
    fn ecdsa_sha256_uses_sha256() {
        let der = self_signed_der(&rcgen::PKCS_ECDSA_P256_SHA256);
        assert_eq!(end_point_hash(&der), Some(Sha256::digest(&der).to_vec()));
    }

    #[test]
    fn ecdsa_sha384_uses_sha384() {
        let der = self_signed_der(&rcgen::PKCS_ECDSA_P384_SHA384);
        let hash = end_point_hash(&der).expect("defined");
        assert_eq!(hash.len(), 48);
        assert_eq!(hash, Sha384::digest(&der).to_vec());
    }

    #[test]
    fn ed25519_is_undefined() {
        let der = self_signed_der(&rcgen::PKCS_ED25519);
        assert_eq!(end_point_hash(&der), None);
    }

    #[test]
    fn garbage_is_undefined() {
        assert_eq!(end_point_hash(b"not a certificate"), None);
    }

    #[test]
    fn hash_choice_follows_rfc5929() {
        assert_eq!(
            hash_for_signature("1.2.840.113549.1.1.4", None),
            Some(Hash::Sha256)
        );
        assert_eq!(
            hash_for_signature("1.2.840.113549.1.1.5", None),
            Some(Hash::Sha256)
        );
        assert_eq!(
            hash_for_signature("1.2.840.10045.4.1", None),
            Some(Hash::Sha256)
        );
        assert_eq!(
            hash_for_signature("1.2.840.113549.1.1.13", None),
            Some(Hash::Sha512)
        );
        assert_eq!(
            hash_for_signature("1.2.840.113549.1.1.10", None),
            Some(Hash::Sha256)
        );
        assert_eq!(
            hash_for_signature("1.2.840.113549.1.1.10", Some("2.16.840.1.101.3.4.2.2")),
            Some(Hash::Sha384)
        );
        assert_eq!(hash_for_signature("1.3.101.112", None), None);
    }
}
