//! XEP-0363 HTTP File Upload (`mod_http_upload`, ejabberd's name and main
//! options): a client asks the server for a slot (`<request filename size
//! content-type/>`), gets a PUT URL and a GET URL, uploads the file over
//! HTTPS to the server's `ejabberd_http` listener (`request_handlers:
//! {/upload: mod_http_upload}`), and shares the GET URL.
//!
//! Slots hold no server state: the PUT URL carries its expiry, the size
//! and an HMAC-SHA256 over the path, size and expiry under a secret kept
//! in the upload directory, so the HTTP side (`src/http/`) accepts exactly
//! the upload that was granted, once, until it expires. The service is the
//! server's own domain (clients look for `urn:xmpp:http:upload:0` in its
//! disco#info, then in its items).

use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hmac::{Hmac, Mac};
use rand::RngCore;
use sha2::Sha256;
use subtle::ConstantTimeEq;

use crate::element::Element;
use crate::module::{Globals, Hooks, Identity, IqRequest, IqResult, Module, ServerContext};
use crate::ns;
use crate::options::{Kind, ModuleSpec, OptSpec};
use crate::opts::Opts;
use crate::stanza::{Condition, ErrorType, StanzaError};

/// The XEP-0363 namespace.
pub const NS: &str = "urn:xmpp:http:upload:0";
/// The options of `mod_http_upload` (ejabberd's).
pub const SPEC: ModuleSpec = ModuleSpec::module(
    "mod_http_upload",
    &[
        OptSpec::honoured(
            "put_url",
            Kind::Text,
            "https://@HOST@:5443/upload",
            "base of upload URLs; `@HOST@` is the account's domain",
        ),
        OptSpec::honoured("get_url", Kind::Text, "`put_url`", "base of download URLs"),
        OptSpec::honoured(
            "docroot",
            Kind::Text,
            "`DATA_DIR/upload`",
            "where files are stored",
        ),
        OptSpec::honoured(
            "max_size",
            Kind::Count,
            "104857600",
            "largest file in bytes, or `infinity`",
        ),
        OptSpec::honoured(
            "custom_headers",
            Kind::Map,
            "",
            "headers added to every HTTP answer (e.g. CORS)",
        ),
        OptSpec::ignored(
            "secret_length",
            Kind::Any,
            "length of the random part of URLs",
        ),
        OptSpec::ignored("jid_in_url", Kind::Any, "how the uploader appears in URLs"),
        OptSpec::ignored("file_mode", Kind::Any, "permissions of stored files"),
        OptSpec::ignored("dir_mode", Kind::Any, "permissions of created directories"),
        OptSpec::ignored("thumbnail", Kind::Any, "thumbnails of images"),
        OptSpec::ignored(
            "host",
            Kind::Any,
            "the service domain (Rookery uses the server's own)",
        ),
        OptSpec::ignored("hosts", Kind::Any, "the service domains"),
        OptSpec::ignored("name", Kind::Any, "the service's name"),
        OptSpec::ignored("access", Kind::Any, "who may upload (local accounts may)"),
        OptSpec::ignored("service_url", Kind::Any, "an external upload service"),
        OptSpec::ignored(
            "rm_on_unregister",
            Kind::Any,
            "removing files with the account",
        ),
        OptSpec::ignored(
            "external_secret",
            Kind::Any,
            "an external upload service's secret",
        ),
        OptSpec::ignored("vcard", Kind::Any, "the service's vCard"),
    ],
    false,
);
/// How long a slot's PUT URL stays valid.
pub const SLOT_LIFETIME: Duration = Duration::from_secs(300);
/// Longest file name kept (bytes, after cleaning).
const MAX_NAME: usize = 128;

/// `mod_http_upload`.
pub struct HttpUpload {
    /// Base of PUT URLs (`@HOST@` is replaced by the account's domain).
    pub put_url: String,
    /// Base of GET URLs (default: `put_url`).
    pub get_url: String,
    /// Where files are stored.
    pub docroot: PathBuf,
    /// Largest file in bytes.
    pub max_size: u64,
    /// Headers added to every HTTP answer (e.g. CORS for web clients).
    pub custom_headers: Vec<(String, String)>,
    secret: OnceLock<Vec<u8>>,
}

impl HttpUpload {
    /// Read the options (bad values become warnings and keep defaults).
    pub fn from_opts(o: &mut Opts<'_>, globals: &Globals) -> HttpUpload {
        let put_url = o.text("put_url").trim_end_matches('/').to_string();
        let get_url = o
            .string("get_url")
            .map(|g| g.trim_end_matches('/').to_string())
            .unwrap_or_else(|| put_url.clone());
        let docroot = o
            .string("docroot")
            .map(PathBuf::from)
            .unwrap_or_else(|| globals.data_dir.join("upload"));
        let max_size = o.count("max_size").unwrap_or(u64::MAX);
        let custom_headers = match o.get("custom_headers") {
            Some(serde_yaml_ng::Value::Mapping(m)) => m
                .iter()
                .filter_map(|(k, v)| Some((k.as_str()?.to_string(), v.as_str()?.to_string())))
                .collect(),
            _ => Vec::new(),
        };
        HttpUpload {
            put_url,
            get_url,
            docroot,
            max_size,
            custom_headers,
            secret: OnceLock::new(),
        }
    }

    /// The signing secret: `docroot/.secret`, made on first use.
    fn secret(&self) -> &[u8] {
        self.secret.get_or_init(|| {
            let path = self.docroot.join(".secret");
            if let Ok(s) = std::fs::read(&path) {
                if s.len() >= 32 {
                    return s;
                }
            }
            let mut s = vec![0u8; 32];
            rand::thread_rng().fill_bytes(&mut s);
            let _ = std::fs::create_dir_all(&self.docroot);
            if let Err(e) = std::fs::write(&path, &s) {
                tracing::warn!("cannot keep the upload secret in {}: {e}", path.display());
            }
            s
        })
    }

    fn sign(&self, path: &str, size: u64, expires: u64) -> String {
        let mut mac = Hmac::<Sha256>::new_from_slice(self.secret()).expect("any key length");
        mac.update(format!("{path}\n{size}\n{expires}").as_bytes());
        hex(&mac.finalize().into_bytes())
    }

    /// Check a PUT: `path` (`token/name` as in the URL) and the query
    /// string. Returns the granted size, or why it is refused.
    pub fn verify_put(&self, path: &str, query: &str) -> Result<u64, &'static str> {
        let mut expires = None;
        let mut size = None;
        let mut sig = None;
        for pair in query.split('&') {
            match pair.split_once('=') {
                Some(("e", v)) => expires = v.parse::<u64>().ok(),
                Some(("s", v)) => size = v.parse::<u64>().ok(),
                Some(("v", v)) => sig = Some(v),
                _ => {}
            }
        }
        let (Some(expires), Some(size), Some(sig)) = (expires, size, sig) else {
            return Err("not an upload slot");
        };
        if !bool::from(
            self.sign(path, size, expires)
                .as_bytes()
                .ct_eq(sig.as_bytes()),
        ) {
            return Err("not an upload slot");
        }
        if now() > expires {
            return Err("the upload slot has expired");
        }
        Ok(size)
    }

    fn slot(&self, domain: &str, request: &Element) -> IqResult {
        let filename = request
            .attr("filename")
            .map(clean_name)
            .filter(|n| !n.is_empty())
            .ok_or_else(StanzaError::bad_request)?;
        let size: u64 = request
            .attr("size")
            .and_then(|s| s.parse().ok())
            .filter(|s| *s > 0)
            .ok_or_else(StanzaError::bad_request)?;
        if size > self.max_size {
            return Err(
                StanzaError::new(ErrorType::Modify, Condition::NotAcceptable).with_app(
                    Element::new("file-too-large", NS).with_child(
                        Element::new("max-file-size", NS).with_text(self.max_size.to_string()),
                    ),
                ),
            );
        }
        let mut token = [0u8; 16];
        rand::thread_rng().fill_bytes(&mut token);
        let path = format!("{}/{}", hex(&token), url_encode(&filename));
        let expires = now() + SLOT_LIFETIME.as_secs();
        let put = format!(
            "{}/{path}?e={expires}&s={size}&v={}",
            self.put_url.replace("@HOST@", domain),
            self.sign(&path, size, expires)
        );
        let get = format!("{}/{path}", self.get_url.replace("@HOST@", domain));
        Ok(Some(
            Element::new("slot", NS)
                .with_child(Element::new("put", NS).with_attr("url", put))
                .with_child(Element::new("get", NS).with_attr("url", get)),
        ))
    }
}

impl Module for HttpUpload {
    fn name(&self) -> &'static str {
        "mod_http_upload"
    }
    fn hooks(&self) -> Hooks {
        Hooks::NONE
    }
    fn disco_features(&self) -> Vec<&'static str> {
        vec![NS]
    }
    /// XEP-0363 §2: the upload service is a store/file entity.
    fn disco_identities(&self) -> Vec<Identity> {
        vec![Identity {
            category: "store".into(),
            kind: "file".into(),
            name: Some("HTTP File Upload".into()),
        }]
    }
    fn disco_forms(&self) -> Vec<Element> {
        let field = |var: &str, value: &str| {
            Element::new("field", ns::DATA_FORMS)
                .with_attr("var", var)
                .with_child(Element::new("value", ns::DATA_FORMS).with_text(value))
        };
        vec![Element::new("x", ns::DATA_FORMS)
            .with_attr("type", "result")
            .with_child(field("FORM_TYPE", NS).with_attr("type", "hidden"))
            .with_child(field("max-file-size", &self.max_size.to_string()))]
    }
    fn server_iq_namespaces(&self) -> Vec<&'static str> {
        vec![NS]
    }
    fn handle_server_iq(&self, _ctx: &dyn ServerContext, req: &IqRequest<'_>) -> IqResult {
        if req.is_set || req.payload.name != "request" {
            return Err(StanzaError::bad_request());
        }
        // Local accounts only (ejabberd's default access: local).
        self.slot(req.from.domain().as_str(), req.payload)
    }
    fn as_any(&self) -> Option<&dyn std::any::Any> {
        Some(self)
    }
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A file name safe on disk and in a URL path segment: no separators, no
/// control characters, no leading dots, bounded length.
pub fn clean_name(name: &str) -> String {
    let mut out: String = name
        .chars()
        .map(|c| {
            if c == '/' || c == '\\' || c.is_control() {
                '_'
            } else {
                c
            }
        })
        .collect();
    while out.starts_with('.') {
        out.remove(0);
    }
    while out.len() > MAX_NAME {
        out.pop();
    }
    out
}

/// Percent-encode everything but RFC 3986 unreserved characters.
pub fn url_encode(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn module() -> (HttpUpload, tempfile_dir::Dir) {
        let dir = tempfile_dir::Dir::new();
        let cfg: serde_yaml_ng::Value = serde_yaml_ng::from_str(&format!(
            "put_url: https://@HOST@:5443/upload\nmax_size: 1000\ndocroot: {}\n",
            dir.0.display()
        ))
        .unwrap();
        let mut o = Opts::new(&cfg, &SPEC);
        (HttpUpload::from_opts(&mut o, &Globals::default()), dir)
    }

    mod tempfile_dir {
        pub struct Dir(pub std::path::PathBuf);
        impl Dir {
            pub fn new() -> Dir {
                let p =
                    std::env::temp_dir().join(format!("rookery-upload-{}", rand::random::<u64>()));
                std::fs::create_dir_all(&p).unwrap();
                Dir(p)
            }
        }
        impl Drop for Dir {
            fn drop(&mut self) {
                let _ = std::fs::remove_dir_all(&self.0);
            }
        }
    }

    #[test]
    fn slots_verify_only_as_granted() {
        let (m, _dir) = module();
        let req = Element::new("request", NS)
            .with_attr("filename", "../a b.png")
            .with_attr("size", "10");
        let slot = m.slot("example.org", &req).unwrap().unwrap();
        let put = slot
            .child("put", NS)
            .unwrap()
            .attr("url")
            .unwrap()
            .to_string();
        let rest = put
            .strip_prefix("https://example.org:5443/upload/")
            .unwrap();
        let (path, query) = rest.split_once('?').unwrap();
        assert!(path.ends_with("/_a%20b.png"), "{path}");
        assert_eq!(m.verify_put(path, query), Ok(10));
        // Another size, another path or a forged signature: refused.
        assert!(m.verify_put(path, &query.replace("s=10", "s=11")).is_err());
        assert!(m.verify_put(&path.replace("_a%20b", "x"), query).is_err());
        assert!(m.verify_put(path, "e=1&s=10&v=00").is_err());
        // Too large: not-acceptable with the limit.
        let big = Element::new("request", NS)
            .with_attr("filename", "x")
            .with_attr("size", "1001");
        let e = m.slot("example.org", &big).unwrap_err();
        assert_eq!(e.condition, "not-acceptable");
    }

    #[test]
    fn names_are_cleaned() {
        assert_eq!(clean_name("../../etc/passwd"), "_.._etc_passwd");
        assert_eq!(clean_name("a\u{0}b"), "a_b");
        assert_eq!(url_encode("a b/é"), "a%20b%2F%C3%A9");
    }
}
