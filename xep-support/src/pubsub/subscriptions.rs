//! Subscriptions to a leaf node: subscribe (§6.1, with subscription
//! options §6.3 and pending approval for the `authorize` access model
//! §6.1.3.2), unsubscribe (§6.2), an entity's own subscriptions (§5.6),
//! and their management by owners (§8.8, and the authorization form of
//! §8.6 sent as a message).
//!
//! Invariants: one subscription per JID (bare or full, as asked); a
//! subscription is stored (`sub:NAME\0JID`, durable) before its answer
//! goes out; only approved subscriptions that want delivery
//! (`pubsub#deliver`) get notifications; an outcast never holds one.

use jid::Jid;

use super::affiliations::access_check;
use super::forms::{bool_value, field, form, form_fields, parse_bool, pubsub_error};
use super::items::send_last;
use super::node::{bare_of, Access, Affiliation, Node, SendLast, Subscription};
use super::service::{Call, Service};
use super::Out;
use crate::element::Element;
use crate::ns;
use crate::stanza::{Condition, ErrorType, StanzaError};

const SUBSCRIBE_OPTIONS: &str = "http://jabber.org/protocol/pubsub#subscribe_options";
const SUBSCRIBE_AUTHORIZATION: &str = "http://jabber.org/protocol/pubsub#subscribe_authorization";

fn sub_element(ns_: &str, node: &str, jid: &str, sub: Option<&Subscription>) -> Element {
    let mut e = Element::new("subscription", ns_)
        .with_attr("node", node)
        .with_attr("jid", jid)
        .with_attr("subscription", sub.map_or("none", |s| s.state()));
    if let Some(s) = sub {
        e.set_attr("subid", s.subid.as_str());
    }
    e
}

fn not_subscribed() -> StanzaError {
    pubsub_error(
        ErrorType::Cancel,
        Condition::UnexpectedRequest,
        "not-subscribed",
    )
}

fn node_and_jid(op: &Element) -> Result<(&str, &str), StanzaError> {
    let node = op
        .attr("node")
        .filter(|n| !n.is_empty())
        .ok_or_else(|| pubsub_error(ErrorType::Modify, Condition::BadRequest, "nodeid-required"))?;
    let jid = op
        .attr("jid")
        .ok_or_else(|| pubsub_error(ErrorType::Modify, Condition::BadRequest, "jid-required"))?;
    Ok((node, jid))
}

/// The JID as given must be a valid JID of the sender's own account.
fn own_jid(from: &Jid, jid: &str) -> Result<String, StanzaError> {
    let parsed = Jid::new(jid)
        .map_err(|_| pubsub_error(ErrorType::Modify, Condition::BadRequest, "invalid-jid"))?;
    if parsed.to_bare() != from.to_bare() {
        return Err(
            pubsub_error(ErrorType::Modify, Condition::BadRequest, "invalid-jid")
                .with_text("the JID is not the sender's"),
        );
    }
    Ok(parsed.to_string())
}

/// `pubsub#deliver` from a subscribe_options form (default: deliver).
fn deliver_option(x: &Element) -> Result<bool, StanzaError> {
    let f = form_fields(x);
    if let Some(ft) = f.get("FORM_TYPE") {
        if ft.first().map(String::as_str) != Some(SUBSCRIBE_OPTIONS) {
            return Err(StanzaError::bad_request().with_text("wrong FORM_TYPE"));
        }
    }
    match f.get("pubsub#deliver").and_then(|v| v.first()) {
        Some(v) => parse_bool(v).ok_or_else(|| {
            pubsub_error(ErrorType::Modify, Condition::BadRequest, "invalid-options")
        }),
        None => Ok(true),
    }
}

fn options_form(sub: &Subscription) -> Element {
    form("form", SUBSCRIBE_OPTIONS).with_child(field(
        "pubsub#deliver",
        "boolean",
        &[bool_value(sub.deliver)],
    ))
}

fn new_subid() -> String {
    use rand::Rng;
    let n: u64 = rand::thread_rng().gen();
    format!("{n:016x}")
}

/// `<subscribe/>`, with `<options/>` beside it.
pub fn subscribe(
    c: &Call<'_>,
    svc: &mut Service,
    pubsub: &Element,
    op: &Element,
    from: &Jid,
    out: &mut Out,
) -> Result<Option<Element>, StanzaError> {
    let (name, jid) = node_and_jid(op)?;
    let jid = own_jid(from, jid)?;
    let deliver = match pubsub
        .child("options", ns::PUBSUB)
        .and_then(|o| o.child("x", ns::DATA_FORMS))
    {
        Some(x) => deliver_option(x)?,
        None => true,
    };
    let node = svc
        .nodes
        .get_mut(name)
        .ok_or_else(StanzaError::item_not_found)?;
    let bare = bare_of(&jid).to_string();
    let aff = node.affiliation(&bare);
    let pending = match access_check(c, node, from, false) {
        Ok(()) => false,
        Err(_) if node.config.access == Access::Authorize && aff != Affiliation::Outcast => true,
        Err(e) => return Err(e),
    };
    if let Some(existing) = node.subscriptions.get(&jid) {
        // Already subscribed (or waiting): the same subscription again.
        let e = sub_element(ns::PUBSUB, name, &jid, Some(existing));
        return Ok(Some(Element::new("pubsub", ns::PUBSUB).with_child(e)));
    }
    let sub = Subscription {
        subscribed: !pending,
        subid: new_subid(),
        deliver,
    };
    c.save_sub(name, &jid, Some(&sub))?;
    node.subscriptions.insert(jid.clone(), sub.clone());
    if pending {
        for owner in node.owners() {
            out.push(authorization_request(c, name, node, owner, &jid));
        }
    } else if node.config.send_last != SendLast::Never {
        send_last(c, name, node, &jid);
    }
    let e = sub_element(ns::PUBSUB, name, &jid, Some(&sub));
    Ok(Some(Element::new("pubsub", ns::PUBSUB).with_child(e)))
}

/// The §8.6 authorization form an owner gets for a pending subscription.
fn authorization_request(c: &Call<'_>, name: &str, node: &Node, owner: &str, jid: &str) -> Element {
    let x = form("form", SUBSCRIBE_AUTHORIZATION)
        .with_child(field("pubsub#node", "text-single", &[name]))
        .with_child(field("pubsub#subscriber_jid", "jid-single", &[jid]))
        .with_child(field("pubsub#allow", "boolean", &["0"]));
    let mut m = Element::new("message", ns::CLIENT)
        .with_attr("from", c.service)
        .with_attr("to", owner)
        .with_child(x);
    if !node.config.title.is_empty() {
        m = m.with_child(
            Element::new("body", ns::CLIENT)
                .with_text(format!("{jid} asks to subscribe to {}", node.config.title)),
        );
    }
    m
}

/// `<unsubscribe/>` (§6.2).
pub fn unsubscribe(
    c: &Call<'_>,
    svc: &mut Service,
    op: &Element,
    from: &Jid,
) -> Result<Option<Element>, StanzaError> {
    let (name, jid) = node_and_jid(op)?;
    let node = svc
        .nodes
        .get_mut(name)
        .ok_or_else(StanzaError::item_not_found)?;
    let jid = match own_jid(from, jid) {
        Ok(j) => j,
        // Owners may unsubscribe others (§6.2.3.3 otherwise: forbidden).
        Err(_) if node.affiliation(bare_of(from.as_str())) == Affiliation::Owner => jid.to_string(),
        Err(_) => return Err(StanzaError::forbidden()),
    };
    let sub = node.subscriptions.get(&jid).ok_or_else(not_subscribed)?;
    if let Some(subid) = op.attr("subid") {
        if subid != sub.subid {
            return Err(pubsub_error(
                ErrorType::Modify,
                Condition::NotAcceptable,
                "invalid-subid",
            ));
        }
    }
    c.save_sub(name, &jid, None)?;
    node.subscriptions.remove(&jid);
    let e = sub_element(ns::PUBSUB, name, &jid, None);
    Ok(Some(Element::new("pubsub", ns::PUBSUB).with_child(e)))
}

/// `<options/>` get or set (§6.3).
pub fn options(
    c: &Call<'_>,
    svc: &mut Service,
    op: &Element,
    from: &Jid,
    is_set: bool,
) -> Result<Option<Element>, StanzaError> {
    let (name, jid) = node_and_jid(op)?;
    let jid = own_jid(from, jid).map_err(|_| StanzaError::forbidden())?;
    let node = svc
        .nodes
        .get_mut(name)
        .ok_or_else(StanzaError::item_not_found)?;
    let sub = node
        .subscriptions
        .get_mut(&jid)
        .ok_or_else(not_subscribed)?;
    if !is_set {
        let o = Element::new("options", ns::PUBSUB)
            .with_attr("node", name)
            .with_attr("jid", jid.as_str())
            .with_child(options_form(sub));
        return Ok(Some(Element::new("pubsub", ns::PUBSUB).with_child(o)));
    }
    let x = op
        .child("x", ns::DATA_FORMS)
        .ok_or_else(|| pubsub_error(ErrorType::Modify, Condition::BadRequest, "invalid-options"))?;
    sub.deliver = deliver_option(x)?;
    let sub = sub.clone();
    c.save_sub(name, &jid, Some(&sub))?;
    Ok(None)
}

/// `<subscriptions/>` in the pubsub namespace: the sender's own (§5.6).
pub fn own(svc: &Service, op: &Element, from: &Jid) -> Result<Option<Element>, StanzaError> {
    let bare = from.to_bare().to_string();
    let mut list = Element::new("subscriptions", ns::PUBSUB);
    for (name, node) in &svc.nodes {
        if op.attr("node").is_some_and(|n| n != name) {
            continue;
        }
        for (jid, sub) in &node.subscriptions {
            if bare_of(jid) == bare {
                list = list.with_child(sub_element(ns::PUBSUB, name, jid, Some(sub)));
            }
        }
    }
    Ok(Some(Element::new("pubsub", ns::PUBSUB).with_child(list)))
}

/// `<subscriptions/>` in pubsub#owner: list or change them (§8.8).
pub fn manage(
    c: &Call<'_>,
    svc: &mut Service,
    op: &Element,
    from: &Jid,
    is_set: bool,
    out: &mut Out,
) -> Result<Option<Element>, StanzaError> {
    let name = op
        .attr("node")
        .filter(|n| !n.is_empty())
        .ok_or_else(|| pubsub_error(ErrorType::Modify, Condition::BadRequest, "nodeid-required"))?;
    let node = svc
        .nodes
        .get_mut(name)
        .ok_or_else(StanzaError::item_not_found)?;
    if node.affiliation(bare_of(from.as_str())) != Affiliation::Owner {
        return Err(StanzaError::forbidden());
    }
    if !is_set {
        let mut list = Element::new("subscriptions", ns::PUBSUB_OWNER).with_attr("node", name);
        for (jid, sub) in &node.subscriptions {
            let mut e = sub_element(ns::PUBSUB_OWNER, name, jid, Some(sub));
            e.remove_attr("node");
            list = list.with_child(e);
        }
        return Ok(Some(
            Element::new("pubsub", ns::PUBSUB_OWNER).with_child(list),
        ));
    }
    // Check every entry before changing any.
    let mut changes = Vec::new();
    for e in op.child_elements().filter(|e| e.name == "subscription") {
        let jid = e
            .attr("jid")
            .and_then(|j| Jid::new(j).ok())
            .ok_or_else(|| pubsub_error(ErrorType::Modify, Condition::BadRequest, "invalid-jid"))?;
        let state = match e.attr("subscription") {
            Some("subscribed") => Some(true),
            Some("pending") => Some(false),
            Some("none") => None,
            _ => return Err(StanzaError::not_acceptable().with_text("unknown subscription state")),
        };
        changes.push((jid.to_string(), state));
    }
    for (jid, state) in changes {
        set_subscription(c, name, node, &jid, state, out)?;
    }
    Ok(None)
}

/// Set one JID's subscription (`None`: remove) and tell it (§8.8.2.4).
fn set_subscription(
    c: &Call<'_>,
    name: &str,
    node: &mut Node,
    jid: &str,
    state: Option<bool>,
    out: &mut Out,
) -> Result<(), StanzaError> {
    let sub = match state {
        None => {
            if node.subscriptions.remove(jid).is_none() {
                return Ok(());
            }
            c.save_sub(name, jid, None)?;
            None
        }
        Some(subscribed) => {
            let sub = node
                .subscriptions
                .entry(jid.to_string())
                .or_insert_with(|| Subscription {
                    subscribed,
                    subid: new_subid(),
                    deliver: true,
                });
            let was = sub.subscribed;
            sub.subscribed = subscribed;
            let sub = sub.clone();
            c.save_sub(name, jid, Some(&sub))?;
            if subscribed && !was && node.config.send_last != SendLast::Never {
                send_last(c, name, node, jid);
            }
            Some(sub)
        }
    };
    out.push(
        Element::new("message", ns::CLIENT)
            .with_attr("from", c.service)
            .with_attr("to", jid)
            .with_child(Element::new("pubsub", ns::PUBSUB).with_child(sub_element(
                ns::PUBSUB,
                name,
                jid,
                sub.as_ref(),
            ))),
    );
    Ok(())
}

/// A message to the service: an owner's answer to an authorization form.
pub fn authorization_answer(
    c: &Call<'_>,
    svc: &mut Service,
    msg: &Element,
    from: &Jid,
    out: &mut Out,
) -> Result<(), StanzaError> {
    let Some(x) = msg.child("x", ns::DATA_FORMS) else {
        return Ok(());
    };
    let f = form_fields(x);
    if f.get("FORM_TYPE")
        .and_then(|v| v.first())
        .map(String::as_str)
        != Some(SUBSCRIBE_AUTHORIZATION)
        || x.attr("type") != Some("submit")
    {
        return Ok(());
    }
    let one = |k: &str| {
        f.get(k)
            .and_then(|v| v.first())
            .cloned()
            .unwrap_or_default()
    };
    let (name, jid) = (one("pubsub#node"), one("pubsub#subscriber_jid"));
    let allow = parse_bool(&one("pubsub#allow")).ok_or_else(StanzaError::bad_request)?;
    let node = svc
        .nodes
        .get_mut(&name)
        .ok_or_else(StanzaError::item_not_found)?;
    if node.affiliation(bare_of(from.as_str())) != Affiliation::Owner {
        return Err(StanzaError::forbidden());
    }
    if node.subscriptions.get(&jid).is_none_or(|s| s.subscribed) {
        return Ok(());
    }
    set_subscription(c, &name, node, &jid, allow.then_some(true), out)
}
