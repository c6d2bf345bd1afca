//! Stream plumbing every XML stream shares (client, server-to-server and
//! component streams, and the HTTP listener's transport): the boxed byte
//! stream a connection runs on, the closed list of stream error conditions
//! (RFC 6120 §4.9.3), the XML that ends a stream with one, and the
//! [`TransportError`] a framing transport (WebSocket) fails a read with.
//!
//! A leaf: it imports nothing from the crate, so `c2s`, `s2s`, `component`,
//! `tls` and `xml` import it without importing each other.
//!
//! Invariants: [`StreamCondition`] lists exactly the conditions of RFC 6120
//! §4.9.3, and [`StreamCondition::as_str`] is the element name the RFC
//! gives each (a test holds the names to [`StreamCondition::from_name`]).

use tokio::io::{AsyncRead, AsyncWrite};
use xep_support::ns;

/// A byte stream: TCP, or TLS over TCP.
pub trait Io: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> Io for T {}

/// The transport of a connection, boxed so TCP and TLS share one type.
pub type BoxIo = Box<dyn Io>;

/// A transport's framing broke a rule of its protocol (e.g. a binary
/// WebSocket message): carried as the payload of the read's `io::Error`,
/// turned into this stream error by the XML reader.
#[derive(Debug)]
pub struct TransportError {
    pub condition: StreamCondition,
    pub text: String,
}

impl std::fmt::Display for TransportError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.text)
    }
}

impl std::error::Error for TransportError {}

impl TransportError {
    /// An `io::Error` carrying this error.
    pub fn io(condition: StreamCondition, text: impl Into<String>) -> std::io::Error {
        std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            TransportError {
                condition,
                text: text.into(),
            },
        )
    }
}

/// A stream error condition (RFC 6120 §4.9.3, a closed list). The whole
/// list is here, including conditions Rookery never sends.
#[allow(dead_code)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum StreamCondition {
    BadFormat,
    BadNamespacePrefix,
    Conflict,
    ConnectionTimeout,
    HostGone,
    HostUnknown,
    ImproperAddressing,
    InternalServerError,
    InvalidFrom,
    InvalidNamespace,
    InvalidXml,
    NotAuthorized,
    NotWellFormed,
    PolicyViolation,
    RemoteConnectionFailed,
    Reset,
    ResourceConstraint,
    RestrictedXml,
    SeeOtherHost,
    SystemShutdown,
    UndefinedCondition,
    UnsupportedEncoding,
    UnsupportedFeature,
    UnsupportedStanzaType,
    UnsupportedVersion,
}

impl StreamCondition {
    /// Every condition, in the RFC's order.
    #[cfg(test)]
    pub const ALL: [StreamCondition; 25] = [
        StreamCondition::BadFormat,
        StreamCondition::BadNamespacePrefix,
        StreamCondition::Conflict,
        StreamCondition::ConnectionTimeout,
        StreamCondition::HostGone,
        StreamCondition::HostUnknown,
        StreamCondition::ImproperAddressing,
        StreamCondition::InternalServerError,
        StreamCondition::InvalidFrom,
        StreamCondition::InvalidNamespace,
        StreamCondition::InvalidXml,
        StreamCondition::NotAuthorized,
        StreamCondition::NotWellFormed,
        StreamCondition::PolicyViolation,
        StreamCondition::RemoteConnectionFailed,
        StreamCondition::Reset,
        StreamCondition::ResourceConstraint,
        StreamCondition::RestrictedXml,
        StreamCondition::SeeOtherHost,
        StreamCondition::SystemShutdown,
        StreamCondition::UndefinedCondition,
        StreamCondition::UnsupportedEncoding,
        StreamCondition::UnsupportedFeature,
        StreamCondition::UnsupportedStanzaType,
        StreamCondition::UnsupportedVersion,
    ];

    /// The condition's element name, e.g. `"not-well-formed"`.
    pub fn as_str(self) -> &'static str {
        match self {
            StreamCondition::BadFormat => "bad-format",
            StreamCondition::BadNamespacePrefix => "bad-namespace-prefix",
            StreamCondition::Conflict => "conflict",
            StreamCondition::ConnectionTimeout => "connection-timeout",
            StreamCondition::HostGone => "host-gone",
            StreamCondition::HostUnknown => "host-unknown",
            StreamCondition::ImproperAddressing => "improper-addressing",
            StreamCondition::InternalServerError => "internal-server-error",
            StreamCondition::InvalidFrom => "invalid-from",
            StreamCondition::InvalidNamespace => "invalid-namespace",
            StreamCondition::InvalidXml => "invalid-xml",
            StreamCondition::NotAuthorized => "not-authorized",
            StreamCondition::NotWellFormed => "not-well-formed",
            StreamCondition::PolicyViolation => "policy-violation",
            StreamCondition::RemoteConnectionFailed => "remote-connection-failed",
            StreamCondition::Reset => "reset",
            StreamCondition::ResourceConstraint => "resource-constraint",
            StreamCondition::RestrictedXml => "restricted-xml",
            StreamCondition::SeeOtherHost => "see-other-host",
            StreamCondition::SystemShutdown => "system-shutdown",
            StreamCondition::UndefinedCondition => "undefined-condition",
            StreamCondition::UnsupportedEncoding => "unsupported-encoding",
            StreamCondition::UnsupportedFeature => "unsupported-feature",
            StreamCondition::UnsupportedStanzaType => "unsupported-stanza-type",
            StreamCondition::UnsupportedVersion => "unsupported-version",
        }
    }

    /// The condition with this element name.
    #[cfg(test)]
    pub fn from_name(name: &str) -> Option<StreamCondition> {
        StreamCondition::ALL
            .into_iter()
            .find(|c| c.as_str() == name)
    }
}

impl std::fmt::Display for StreamCondition {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The XML of a stream error followed by the stream's end.
pub fn stream_error_xml(condition: StreamCondition, text: Option<&str>) -> String {
    let mut s = format!("<stream:error><{condition} xmlns='{}'/>", ns::STREAM_ERRORS);
    if let Some(t) = text {
        s.push_str(&format!(
            "<text xmlns='{}' xml:lang='en'>{}</text>",
            ns::STREAM_ERRORS,
            xep_support::element::escape(t)
        ));
    }
    s.push_str("</stream:error></stream:stream>");
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_the_rfc_6120_conditions() {
        let names: Vec<&str> = StreamCondition::ALL.iter().map(|c| c.as_str()).collect();
        let mut dedup = names.clone();
        dedup.sort();
        dedup.dedup();
        assert_eq!(dedup.len(), 25, "duplicate condition names");
        for c in StreamCondition::ALL {
            assert_eq!(StreamCondition::from_name(c.as_str()), Some(c));
            assert!(c
                .as_str()
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b == b'-'));
        }
        assert_eq!(StreamCondition::from_name("not-a-condition"), None);
    }

    #[test]
    fn error_xml_escapes_the_text() {
        assert_eq!(
            stream_error_xml(StreamCondition::HostUnknown, Some("a<b")),
            format!(
                "<stream:error><host-unknown xmlns='{0}'/><text xmlns='{0}' xml:lang='en'>a&lt;b</text></stream:error></stream:stream>",
                ns::STREAM_ERRORS
            )
        );
        assert_eq!(
            stream_error_xml(StreamCondition::Reset, None),
            format!(
                "<stream:error><reset xmlns='{}'/></stream:error></stream:stream>",
                ns::STREAM_ERRORS
            )
        );
    }
}
