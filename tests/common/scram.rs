//! A hand-rolled SCRAM client (RFC 5802 / RFC 7677) with channel binding
//! (RFC 5929 `tls-server-end-point`, RFC 9266 `tls-exporter`), used to test
//! the server's `-PLUS` mechanisms independently of the `sasl` crate, and to
//! craft deliberately wrong channel-binding data or gs2 flags.

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use hmac::{Hmac, Mac};
use rand::distributions::Alphanumeric;
use rand::Rng;
use sha1::Sha1;
use sha2::{Digest, Sha256};

/// Hash function of a SCRAM family member.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ScramHash {
    /// SCRAM-SHA-1.
    Sha1,
    /// SCRAM-SHA-256.
    Sha256,
}

impl ScramHash {
    /// Mechanism name without the `-PLUS` suffix.
    pub fn base_name(self) -> &'static str {
        match self {
            ScramHash::Sha1 => "SCRAM-SHA-1",
            ScramHash::Sha256 => "SCRAM-SHA-256",
        }
    }

    fn hmac(self, key: &[u8], data: &[u8]) -> Vec<u8> {
        match self {
            ScramHash::Sha1 => {
                let mut m = Hmac::<Sha1>::new_from_slice(key).expect("hmac key");
                m.update(data);
                m.finalize().into_bytes().to_vec()
            }
            ScramHash::Sha256 => {
                let mut m = Hmac::<Sha256>::new_from_slice(key).expect("hmac key");
                m.update(data);
                m.finalize().into_bytes().to_vec()
            }
        }
    }

    fn hash(self, data: &[u8]) -> Vec<u8> {
        match self {
            ScramHash::Sha1 => Sha1::digest(data).to_vec(),
            ScramHash::Sha256 => Sha256::digest(data).to_vec(),
        }
    }

    /// (StoredKey, ServerKey) of a password, as a server stores them
    /// (RFC 5802 §3), e.g. to write a XEP-0227 file by hand.
    pub fn stored_and_server_key(
        self,
        password: &str,
        salt: &[u8],
        iterations: u32,
    ) -> (Vec<u8>, Vec<u8>) {
        let salted = self.salted_password(password.as_bytes(), salt, iterations);
        let client_key = self.hmac(&salted, b"Client Key");
        (self.hash(&client_key), self.hmac(&salted, b"Server Key"))
    }

    fn salted_password(self, password: &[u8], salt: &[u8], iterations: u32) -> Vec<u8> {
        match self {
            ScramHash::Sha1 => {
                let mut out = vec![0u8; 20];
                pbkdf2::pbkdf2_hmac::<Sha1>(password, salt, iterations, &mut out);
                out
            }
            ScramHash::Sha256 => {
                let mut out = vec![0u8; 32];
                pbkdf2::pbkdf2_hmac::<Sha256>(password, salt, iterations, &mut out);
                out
            }
        }
    }
}

/// The gs2 channel-binding flag the client sends.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Gs2Binding {
    /// `n`: the client does not support channel binding.
    No,
    /// `y`: the client supports it but believes the server does not.
    ClientOnly,
    /// `p=TYPE` with the given channel-binding data (`-PLUS` mechanism).
    Bind {
        /// `tls-exporter` or `tls-server-end-point`.
        cb_type: String,
        /// The channel-binding data included in `c=`.
        data: Vec<u8>,
    },
}

/// Client-side SCRAM state machine.
pub struct ScramClient {
    hash: ScramHash,
    password: String,
    binding: Gs2Binding,
    gs2_header: String,
    client_first_bare: String,
    server_signature: Option<Vec<u8>>,
}

fn saslname(s: &str) -> String {
    s.replace('=', "=3D").replace(',', "=2C")
}

impl ScramClient {
    /// New exchange for `user`/`password`, with optional authzid.
    pub fn new(
        hash: ScramHash,
        user: &str,
        password: &str,
        binding: Gs2Binding,
        authzid: Option<&str>,
    ) -> Self {
        let nonce: String = rand::thread_rng()
            .sample_iter(&Alphanumeric)
            .take(24)
            .map(char::from)
            .collect();
        let flag = match &binding {
            Gs2Binding::No => "n".to_string(),
            Gs2Binding::ClientOnly => "y".to_string(),
            Gs2Binding::Bind { cb_type, .. } => format!("p={cb_type}"),
        };
        let authz = authzid
            .map(|a| format!("a={}", saslname(a)))
            .unwrap_or_default();
        ScramClient {
            hash,
            password: stringprep::saslprep(password)
                .map(|p| p.into_owned())
                .unwrap_or_else(|_| password.to_string()),
            binding,
            gs2_header: format!("{flag},{authz},"),
            client_first_bare: format!("n={},r={nonce}", saslname(user)),
            server_signature: None,
        }
    }

    /// The mechanism name to put in `<auth mechanism=...>`.
    pub fn mechanism(&self) -> String {
        match self.binding {
            Gs2Binding::Bind { .. } => format!("{}-PLUS", self.hash.base_name()),
            _ => self.hash.base_name().to_string(),
        }
    }

    /// client-first-message.
    pub fn client_first(&self) -> Vec<u8> {
        format!("{}{}", self.gs2_header, self.client_first_bare).into_bytes()
    }

    /// Computes client-final-message from server-first-message.
    pub fn client_final(&mut self, server_first: &[u8]) -> Result<Vec<u8>, String> {
        let sf = std::str::from_utf8(server_first).map_err(|e| e.to_string())?;
        let mut nonce = None;
        let mut salt = None;
        let mut iterations = None;
        for part in sf.split(',') {
            if let Some(v) = part.strip_prefix("r=") {
                nonce = Some(v.to_string());
            } else if let Some(v) = part.strip_prefix("s=") {
                salt = Some(B64.decode(v).map_err(|e| format!("salt: {e}"))?);
            } else if let Some(v) = part.strip_prefix("i=") {
                iterations = Some(v.parse::<u32>().map_err(|e| format!("i: {e}"))?);
            } else if part.starts_with("m=") {
                return Err("server sent mandatory extension".into());
            }
        }
        let nonce = nonce.ok_or("server-first without r=")?;
        let salt = salt.ok_or("server-first without s=")?;
        let iterations = iterations.ok_or("server-first without i=")?;
        let my_nonce = self
            .client_first_bare
            .split(",r=")
            .nth(1)
            .unwrap_or_default();
        if !nonce.starts_with(my_nonce) || nonce.len() <= my_nonce.len() {
            return Err(format!("server nonce {nonce:?} does not extend ours"));
        }
        if iterations < 4096 {
            return Err(format!("iteration count {iterations} below 4096"));
        }
        let mut cbind_input = self.gs2_header.clone().into_bytes();
        if let Gs2Binding::Bind { data, .. } = &self.binding {
            cbind_input.extend_from_slice(data);
        }
        let without_proof = format!("c={},r={nonce}", B64.encode(&cbind_input));
        let h = self.hash;
        let salted = h.salted_password(self.password.as_bytes(), &salt, iterations);
        let client_key = h.hmac(&salted, b"Client Key");
        let stored_key = h.hash(&client_key);
        let auth_message = format!("{},{sf},{without_proof}", self.client_first_bare);
        let client_signature = h.hmac(&stored_key, auth_message.as_bytes());
        let proof: Vec<u8> = client_key
            .iter()
            .zip(client_signature.iter())
            .map(|(a, b)| a ^ b)
            .collect();
        let server_key = h.hmac(&salted, b"Server Key");
        self.server_signature = Some(h.hmac(&server_key, auth_message.as_bytes()));
        Ok(format!("{without_proof},p={}", B64.encode(proof)).into_bytes())
    }

    /// Verifies the server-final-message (`v=...`) carried by `<success/>`.
    pub fn verify_server_final(&self, data: &[u8]) -> Result<(), String> {
        let s = std::str::from_utf8(data).map_err(|e| e.to_string())?;
        if let Some(e) = s.strip_prefix("e=") {
            return Err(format!("server-final error {e}"));
        }
        let v = s
            .split(',')
            .find_map(|p| p.strip_prefix("v="))
            .ok_or_else(|| format!("server-final without v=: {s:?}"))?;
        let v = B64.decode(v).map_err(|e| e.to_string())?;
        match &self.server_signature {
            Some(expected) if *expected == v => Ok(()),
            _ => Err("server signature mismatch".into()),
        }
    }
}

/// RFC 5929 `tls-server-end-point` data for a DER certificate: its hash with
/// the certificate signature's hash function, SHA-256 for MD5/SHA-1.
pub fn tls_server_end_point(cert_der: &[u8]) -> Vec<u8> {
    use x509_parser::prelude::FromDer;
    let oid = x509_parser::certificate::X509Certificate::from_der(cert_der)
        .map(|(_, c)| c.signature_algorithm.algorithm.to_id_string())
        .unwrap_or_default();
    match oid.as_str() {
        // ecdsa-with-SHA384, sha384WithRSAEncryption
        "1.2.840.10045.4.3.3" | "1.2.840.113549.1.1.12" => sha2::Sha384::digest(cert_der).to_vec(),
        // ecdsa-with-SHA512, sha512WithRSAEncryption
        "1.2.840.10045.4.3.4" | "1.2.840.113549.1.1.13" => sha2::Sha512::digest(cert_der).to_vec(),
        _ => Sha256::digest(cert_der).to_vec(),
    }
}
