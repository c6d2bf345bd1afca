//! XEP-0474 SASL SCRAM Downgrade Protection (SSDP): the string a server
//! hashes into the `h` attribute of its SCRAM server-first message — the
//! advertised mechanisms, sorted and joined by %x1E, then (when XEP-0440
//! channel-binding types were advertised) %x1F and the sorted types joined
//! by %x1E — and that hash. The value is part of SCRAM's AuthMessage, so a
//! client that saw a stripped mechanism or channel-binding list computes a
//! different hash and detects the tampering; a forged `h` fails the proof.
//!
//! Invariant: the input is built from exactly the lists the client was
//! shown for the SASL profile it uses (RFC 6120 SASL or XEP-0388 SASL2),
//! sorted with the i;octet collation (byte order).

use base64::{engine::general_purpose::STANDARD as B64, Engine as _};

use super::credentials::{digest, ScramHash};

/// The SSDP input string for the advertised `mechanisms` and channel-binding
/// types (`None`: no XEP-0440 `<sasl-channel-binding/>` feature was sent).
pub fn input(mechanisms: &[&str], channel_bindings: Option<&[&str]>) -> String {
    let mut mechs: Vec<&str> = mechanisms.to_vec();
    mechs.sort_unstable_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
    let mut s = mechs.join("\u{1e}");
    if let Some(cbs) = channel_bindings {
        let mut cbs: Vec<&str> = cbs.to_vec();
        cbs.sort_unstable_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
        s.push('\u{1f}');
        s.push_str(&cbs.join("\u{1e}"));
    }
    s
}

/// The base64 `h` value: `input` hashed with the SCRAM mechanism's hash.
pub fn hash(hash: ScramHash, input: &str) -> String {
    B64.encode(digest(hash, input.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The vector of XEP-0474 §5.3 (version 0.5.0): SHA-1 over
    /// 'SCRAM-SHA-1\x1eSCRAM-SHA-1-PLUS\x1ftls-exporter\x1etls-server-end-point'.
    #[test]
    fn xep_0474_vector() {
        let s = input(
            &["SCRAM-SHA-1-PLUS", "SCRAM-SHA-1"],
            Some(&["tls-server-end-point", "tls-exporter"]),
        );
        assert_eq!(
            s,
            "SCRAM-SHA-1\u{1e}SCRAM-SHA-1-PLUS\u{1f}tls-exporter\u{1e}tls-server-end-point"
        );
        assert_eq!(hash(ScramHash::Sha1, &s), "G6k/rBLDqgOhRRaCuuatSDFkJ08=");
    }

    /// A stripped list (an attacker removed the -PLUS mechanism, or the
    /// channel-binding types) hashes differently: the client detects it.
    #[test]
    fn stripped_lists_are_detected() {
        let real = hash(
            ScramHash::Sha1,
            &input(
                &["SCRAM-SHA-1", "SCRAM-SHA-1-PLUS"],
                Some(&["tls-exporter", "tls-server-end-point"]),
            ),
        );
        let no_plus = hash(
            ScramHash::Sha1,
            &input(
                &["SCRAM-SHA-1"],
                Some(&["tls-exporter", "tls-server-end-point"]),
            ),
        );
        let no_cb = hash(
            ScramHash::Sha1,
            &input(&["SCRAM-SHA-1", "SCRAM-SHA-1-PLUS"], None),
        );
        let weaker_cb = hash(
            ScramHash::Sha1,
            &input(
                &["SCRAM-SHA-1", "SCRAM-SHA-1-PLUS"],
                Some(&["tls-server-end-point"]),
            ),
        );
        assert_ne!(real, no_plus);
        assert_ne!(real, no_cb);
        assert_ne!(real, weaker_cb);
        // No XEP-0440 feature at all differs from an empty list too.
        assert_ne!(input(&["A"], None), input(&["A"], Some(&[])));
    }
}
