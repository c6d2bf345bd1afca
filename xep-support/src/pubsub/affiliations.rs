//! Who may do what on a leaf node: the access models (§4.5) and
//! affiliations (§4.1), an entity's own affiliations (§5.7) and their
//! management by owners (§8.9).
//!
//! Invariants: an outcast may neither subscribe nor retrieve; owners,
//! publishers and members always may; publish-only entities may publish but
//! neither subscribe nor retrieve. The presence and roster access models
//! look in the rosters of the node's owners that are local accounts
//! (through [`ServerContext`](crate::module::ServerContext), from memory
//! for accounts with sessions); `roster` accepts any contact of an owner's
//! roster (roster groups are not checked). A node always keeps an owner,
//! and making an entity an outcast removes its subscriptions.

use jid::{BareJid, Jid};

use super::forms::pubsub_error;
use super::node::{bare_of, Access, Affiliation, Node};
use super::service::{Call, Service};
use crate::element::Element;
use crate::ns;
use crate::stanza::{Condition, ErrorType, StanzaError};

/// Whether `from` may subscribe (`for_items` false) or retrieve items
/// (`for_items` true); the error says why not.
pub fn access_check(
    c: &Call<'_>,
    node: &Node,
    from: &Jid,
    for_items: bool,
) -> Result<(), StanzaError> {
    let who = from.to_bare();
    let bare = who.to_string();
    match node.affiliation(&bare) {
        Affiliation::Outcast => return Err(StanzaError::forbidden()),
        Affiliation::Owner | Affiliation::Publisher | Affiliation::Member => return Ok(()),
        Affiliation::PublishOnly => return Err(StanzaError::forbidden()),
        Affiliation::None => {}
    }
    let local_owners = || {
        let hosts = c.ctx.hosts();
        node.owners()
            .filter_map(|o| BareJid::new(o).ok())
            .filter(move |o| hosts.iter().any(|h| h == o.domain().as_str()))
            .collect::<Vec<_>>()
    };
    match node.config.access {
        Access::Open => Ok(()),
        Access::Presence => {
            if local_owners()
                .iter()
                .any(|o| c.ctx.subscription(o, &who).has_from())
            {
                Ok(())
            } else {
                Err(pubsub_error(
                    ErrorType::Auth,
                    Condition::NotAuthorized,
                    "presence-subscription-required",
                ))
            }
        }
        Access::Roster => {
            if local_owners()
                .iter()
                .any(|o| c.ctx.roster_contacts(o).iter().any(|(j, _)| *j == who))
            {
                Ok(())
            } else {
                Err(pubsub_error(
                    ErrorType::Auth,
                    Condition::NotAuthorized,
                    "not-in-roster-group",
                ))
            }
        }
        Access::Whitelist => Err(pubsub_error(
            ErrorType::Cancel,
            Condition::NotAllowed,
            "closed-node",
        )),
        Access::Authorize => {
            if for_items && node.subscribed(&bare) {
                Ok(())
            } else {
                Err(pubsub_error(
                    ErrorType::Auth,
                    Condition::NotAuthorized,
                    "not-subscribed",
                ))
            }
        }
    }
}

/// `<affiliations/>` in the pubsub namespace: the sender's own (§5.7).
pub fn own(svc: &Service, op: &Element, from: &Jid) -> Result<Option<Element>, StanzaError> {
    let bare = from.to_bare().to_string();
    let mut list = Element::new("affiliations", ns::PUBSUB);
    for (name, node) in &svc.nodes {
        if op.attr("node").is_some_and(|n| n != name) {
            continue;
        }
        let a = node.affiliation(&bare);
        if a != Affiliation::None {
            list = list.with_child(
                Element::new("affiliation", ns::PUBSUB)
                    .with_attr("node", name.as_str())
                    .with_attr("affiliation", a.as_str()),
            );
        }
    }
    Ok(Some(Element::new("pubsub", ns::PUBSUB).with_child(list)))
}

/// `<affiliations/>` in pubsub#owner: list or change them (§8.9).
pub fn manage(
    c: &Call<'_>,
    svc: &mut Service,
    op: &Element,
    from: &Jid,
    is_set: bool,
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
        let mut list = Element::new("affiliations", ns::PUBSUB_OWNER).with_attr("node", name);
        for (jid, a) in &node.affiliations {
            list = list.with_child(
                Element::new("affiliation", ns::PUBSUB_OWNER)
                    .with_attr("jid", jid.as_str())
                    .with_attr("affiliation", a.as_str()),
            );
        }
        return Ok(Some(
            Element::new("pubsub", ns::PUBSUB_OWNER).with_child(list),
        ));
    }
    let mut next = node.affiliations.clone();
    for e in op.child_elements().filter(|e| e.name == "affiliation") {
        let jid = e
            .attr("jid")
            .and_then(|j| Jid::new(j).ok())
            .ok_or_else(|| {
                StanzaError::bad_request().with_text("an affiliation needs a valid jid")
            })?
            .to_bare()
            .to_string();
        let a = e
            .attr("affiliation")
            .and_then(Affiliation::parse)
            .ok_or_else(|| StanzaError::not_acceptable().with_text("unknown affiliation"))?;
        if a == Affiliation::None {
            next.remove(&jid);
        } else {
            next.insert(jid, a);
        }
    }
    if !next.values().any(|a| *a == Affiliation::Owner) {
        return Err(StanzaError::not_acceptable().with_text("a node keeps at least one owner"));
    }
    let outcasts: Vec<String> = next
        .iter()
        .filter(|(_, a)| **a == Affiliation::Outcast)
        .map(|(j, _)| j.clone())
        .collect();
    let mut updated = node.clone();
    updated.affiliations = next;
    c.save_node(name, &updated)?;
    node.affiliations = updated.affiliations;
    let gone: Vec<String> = node
        .subscriptions
        .keys()
        .filter(|j| outcasts.iter().any(|o| o == bare_of(j)))
        .cloned()
        .collect();
    for jid in gone {
        c.save_sub(name, &jid, None)?;
        node.subscriptions.remove(&jid);
    }
    Ok(None)
}
