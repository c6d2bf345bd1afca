//! Stanza helpers shared by the core and the modules: iq replies and
//! RFC 6120 §8.3 stanza errors.

use crate::element::{Element, NS_CLIENT};
use crate::ns;

/// The `type` of a stanza error (RFC 6120 §8.3.2).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorType {
    Auth,
    Cancel,
    Continue,
    Modify,
    Wait,
}

impl ErrorType {
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorType::Auth => "auth",
            ErrorType::Cancel => "cancel",
            ErrorType::Continue => "continue",
            ErrorType::Modify => "modify",
            ErrorType::Wait => "wait",
        }
    }
}

/// A defined stanza error condition (RFC 6120 §8.3.3: a closed list of
/// 22). `gone` and `redirect` may carry a URI as text in XMPP; Rookery
/// never sends them with one.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Condition {
    BadRequest,
    Conflict,
    FeatureNotImplemented,
    Forbidden,
    Gone,
    InternalServerError,
    ItemNotFound,
    JidMalformed,
    NotAcceptable,
    NotAllowed,
    NotAuthorized,
    PolicyViolation,
    RecipientUnavailable,
    Redirect,
    RegistrationRequired,
    RemoteServerNotFound,
    RemoteServerTimeout,
    ResourceConstraint,
    ServiceUnavailable,
    SubscriptionRequired,
    UndefinedCondition,
    UnexpectedRequest,
}

impl Condition {
    /// Every condition, in the RFC's order.
    pub const ALL: [Condition; 22] = [
        Condition::BadRequest,
        Condition::Conflict,
        Condition::FeatureNotImplemented,
        Condition::Forbidden,
        Condition::Gone,
        Condition::InternalServerError,
        Condition::ItemNotFound,
        Condition::JidMalformed,
        Condition::NotAcceptable,
        Condition::NotAllowed,
        Condition::NotAuthorized,
        Condition::PolicyViolation,
        Condition::RecipientUnavailable,
        Condition::Redirect,
        Condition::RegistrationRequired,
        Condition::RemoteServerNotFound,
        Condition::RemoteServerTimeout,
        Condition::ResourceConstraint,
        Condition::ServiceUnavailable,
        Condition::SubscriptionRequired,
        Condition::UndefinedCondition,
        Condition::UnexpectedRequest,
    ];

    /// The element name of the condition.
    pub fn as_str(self) -> &'static str {
        match self {
            Condition::BadRequest => "bad-request",
            Condition::Conflict => "conflict",
            Condition::FeatureNotImplemented => "feature-not-implemented",
            Condition::Forbidden => "forbidden",
            Condition::Gone => "gone",
            Condition::InternalServerError => "internal-server-error",
            Condition::ItemNotFound => "item-not-found",
            Condition::JidMalformed => "jid-malformed",
            Condition::NotAcceptable => "not-acceptable",
            Condition::NotAllowed => "not-allowed",
            Condition::NotAuthorized => "not-authorized",
            Condition::PolicyViolation => "policy-violation",
            Condition::RecipientUnavailable => "recipient-unavailable",
            Condition::Redirect => "redirect",
            Condition::RegistrationRequired => "registration-required",
            Condition::RemoteServerNotFound => "remote-server-not-found",
            Condition::RemoteServerTimeout => "remote-server-timeout",
            Condition::ResourceConstraint => "resource-constraint",
            Condition::ServiceUnavailable => "service-unavailable",
            Condition::SubscriptionRequired => "subscription-required",
            Condition::UndefinedCondition => "undefined-condition",
            Condition::UnexpectedRequest => "unexpected-request",
        }
    }

    /// The condition named `name`; `None` for a name outside the list.
    pub fn parse(name: &str) -> Option<Condition> {
        Some(match name {
            "bad-request" => Condition::BadRequest,
            "conflict" => Condition::Conflict,
            "feature-not-implemented" => Condition::FeatureNotImplemented,
            "forbidden" => Condition::Forbidden,
            "gone" => Condition::Gone,
            "internal-server-error" => Condition::InternalServerError,
            "item-not-found" => Condition::ItemNotFound,
            "jid-malformed" => Condition::JidMalformed,
            "not-acceptable" => Condition::NotAcceptable,
            "not-allowed" => Condition::NotAllowed,
            "not-authorized" => Condition::NotAuthorized,
            "policy-violation" => Condition::PolicyViolation,
            "recipient-unavailable" => Condition::RecipientUnavailable,
            "redirect" => Condition::Redirect,
            "registration-required" => Condition::RegistrationRequired,
            "remote-server-not-found" => Condition::RemoteServerNotFound,
            "remote-server-timeout" => Condition::RemoteServerTimeout,
            "resource-constraint" => Condition::ResourceConstraint,
            "service-unavailable" => Condition::ServiceUnavailable,
            "subscription-required" => Condition::SubscriptionRequired,
            "undefined-condition" => Condition::UndefinedCondition,
            "unexpected-request" => Condition::UnexpectedRequest,
            _ => return None,
        })
    }
}

impl std::fmt::Display for Condition {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Compare with a condition's name (for tests and checks on received errors).
impl PartialEq<&str> for Condition {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

/// A stanza error: its type, its defined condition, and optional text.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StanzaError {
    pub kind: ErrorType,
    pub condition: Condition,
    pub text: Option<String>,
    /// An application-specific condition element (RFC 6120 §8.3.4), e.g.
    /// XEP-0191's `<blocked/>` or XEP-0050's `<bad-sessionid/>`.
    pub app: Option<Box<Element>>,
}

impl StanzaError {
    pub fn new(kind: ErrorType, condition: Condition) -> Self {
        StanzaError {
            kind,
            condition,
            text: None,
            app: None,
        }
    }
    pub fn with_app(mut self, app: Element) -> Self {
        self.app = Some(Box::new(app));
        self
    }
    pub fn not_acceptable() -> Self {
        Self::new(ErrorType::Modify, Condition::NotAcceptable)
    }
    pub fn not_authorized() -> Self {
        Self::new(ErrorType::Auth, Condition::NotAuthorized)
    }
    pub fn conflict() -> Self {
        Self::new(ErrorType::Cancel, Condition::Conflict)
    }
    pub fn policy_violation() -> Self {
        Self::new(ErrorType::Modify, Condition::PolicyViolation)
    }
    pub fn resource_constraint() -> Self {
        Self::new(ErrorType::Wait, Condition::ResourceConstraint)
    }
    pub fn with_text(mut self, text: impl Into<String>) -> Self {
        self.text = Some(text.into());
        self
    }
    pub fn service_unavailable() -> Self {
        Self::new(ErrorType::Cancel, Condition::ServiceUnavailable)
    }
    pub fn bad_request() -> Self {
        Self::new(ErrorType::Modify, Condition::BadRequest)
    }
    pub fn feature_not_implemented() -> Self {
        Self::new(ErrorType::Cancel, Condition::FeatureNotImplemented)
    }
    pub fn item_not_found() -> Self {
        Self::new(ErrorType::Cancel, Condition::ItemNotFound)
    }
    pub fn not_allowed() -> Self {
        Self::new(ErrorType::Cancel, Condition::NotAllowed)
    }
    pub fn forbidden() -> Self {
        Self::new(ErrorType::Auth, Condition::Forbidden)
    }
    pub fn internal_server_error() -> Self {
        Self::new(ErrorType::Cancel, Condition::InternalServerError)
    }

    /// The `<error/>` element.
    pub fn to_element(&self, by: Option<&str>) -> Element {
        let mut err = Element::new("error", NS_CLIENT).with_attr("type", self.kind.as_str());
        if let Some(by) = by {
            err.set_attr("by", by);
        }
        err = err.with_child(Element::new(self.condition.as_str(), ns::STANZA_ERRORS));
        if let Some(text) = &self.text {
            err = err.with_child(
                Element::new("text", ns::STANZA_ERRORS)
                    .with_attr("xml:lang", "en")
                    .with_text(text.clone()),
            );
        }
        if let Some(app) = &self.app {
            err = err.with_child((**app).clone());
        }
        err
    }
}

/// An error reply to `stanza` (RFC 6120 §8.3.1): same name and id, `to` and
/// `from` swapped, the original payload kept, type `error`.
pub fn error_reply(stanza: &Element, error: &StanzaError) -> Element {
    let mut reply = Element::new(stanza.name.clone(), NS_CLIENT);
    if let Some(id) = stanza.attr("id") {
        reply.set_attr("id", id);
    }
    if let Some(from) = stanza.attr("from") {
        reply.set_attr("to", from);
    }
    if let Some(to) = stanza.attr("to") {
        reply.set_attr("from", to);
    }
    reply.set_attr("type", "error");
    // Keep the payload of iqs (it helps clients match) but never nest errors.
    for child in stanza.child_elements() {
        if child.name != "error" {
            reply = reply.with_child(child.clone());
        }
    }
    reply.with_child(error.to_element(None))
}

/// An empty or payload-carrying `result` reply to an iq.
pub fn iq_result(iq: &Element, payload: Option<Element>) -> Element {
    let mut reply = Element::new("iq", NS_CLIENT).with_attr("type", "result");
    if let Some(id) = iq.attr("id") {
        reply.set_attr("id", id);
    }
    if let Some(from) = iq.attr("from") {
        reply.set_attr("to", from);
    }
    if let Some(to) = iq.attr("to") {
        reply.set_attr("from", to);
    }
    if let Some(p) = payload {
        reply = reply.with_child(p);
    }
    reply
}

/// An iq error reply (the request's payload is not echoed).
pub fn iq_error(iq: &Element, error: &StanzaError) -> Element {
    let mut reply = iq_result(iq, None);
    reply.set_attr("type", "error");
    reply.with_child(error.to_element(None))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_reply_swaps_addresses() {
        let msg = Element::new("message", NS_CLIENT)
            .with_attr("from", "a@x/r")
            .with_attr("to", "b@x")
            .with_attr("id", "1")
            .with_child(Element::new("body", NS_CLIENT).with_text("hi"));
        let r = error_reply(&msg, &StanzaError::service_unavailable());
        assert_eq!(r.attr("to"), Some("a@x/r"));
        assert_eq!(r.attr("from"), Some("b@x"));
        assert_eq!(r.attr("type"), Some("error"));
        let err = r.child("error", NS_CLIENT).unwrap();
        assert_eq!(err.attr("type"), Some("cancel"));
        assert!(err
            .child("service-unavailable", ns::STANZA_ERRORS)
            .is_some());
    }

    #[test]
    fn conditions_are_the_closed_list_and_round_trip() {
        let mut names: Vec<&str> = Condition::ALL.iter().map(|c| c.as_str()).collect();
        for c in Condition::ALL {
            assert_eq!(Condition::parse(c.as_str()), Some(c));
        }
        assert_eq!(Condition::parse("no-such-condition"), None);
        names.sort();
        names.dedup();
        assert_eq!(names.len(), 22);
        let e = StanzaError::new(ErrorType::Modify, Condition::JidMalformed).to_element(None);
        assert!(e.child("jid-malformed", ns::STANZA_ERRORS).is_some());
        assert_eq!(StanzaError::bad_request().condition, Condition::BadRequest);
    }
}
