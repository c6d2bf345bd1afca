//! Items of a leaf node: publish (with item ids, auto-creation and
//! publish-options), retract, purge, and retrieval with XEP-0059 result
//! set management; the notifications each of these sends.
//!
//! Invariants: items are stored one key each, ordered by a per-node
//! sequence number (`item:NAME\0SEQ`), with an id index (`iid:NAME\0ID`);
//! publishing an id again replaces the item and makes it the newest. After
//! each publish the node keeps at most `pubsub#max_items` items: the oldest
//! are removed in one batch (range retention, never a scan of the rest).
//! The last write of a publish is durable, so an acknowledged item is on
//! disk. Retrieval without RSM returns the newest items oldest first (as
//! Prosody and ejabberd do); with RSM, pages run from the newest item
//! backwards (`<after/>`: older, `<before/>`: newer) and `<count/>` is the
//! node's item count, kept in memory.

use std::ops::Bound;

use jid::Jid;

use super::forms::{form_fields, node_name, pubsub_error};
use super::node::{apply_form, bare_of, event, Affiliation, Node, PublishModel};
use super::service::{iid_key, item_key, item_prefix, seq_key, Call, Service};
use super::{access_check, PUBLISH_OPTIONS};
use crate::element::Element;
use crate::mam::NS_RSM;
use crate::ns;
use crate::stanza::{Condition, ErrorType, StanzaError};
use crate::store::KeyRange;

/// Most items one retrieval returns.
pub const MAX_PAGE: usize = 1000;

fn item_id() -> String {
    use rand::Rng;
    let n: u128 = rand::thread_rng().gen();
    format!("{n:032x}")
}

/// The item as stored and retrieved (`<item id publisher>payload</item>`).
fn item_element(id: &str, publisher: &str, payload: Option<&Element>) -> Element {
    let mut e = Element::new("item", ns::PUBSUB)
        .with_attr("id", id)
        .with_attr("publisher", publisher);
    if let Some(p) = payload {
        e = e.with_child(p.clone());
    }
    e
}

/// `item` re-namespaced for an event (`pubsub#event`).
fn as_event_item(item: &Element, with_payload: bool) -> Element {
    let mut e = Element::new("item", ns::PUBSUB_EVENT);
    e.attrs = item.attrs.clone();
    if with_payload {
        e.children = item.children.clone();
    }
    e
}

/// Messages carrying `ev` (an `<event/>` payload) to every approved
/// subscriber that wants deliveries. They are streamed: the server builds
/// and routes them one at a time on the service's queue (in order across
/// publishes), so a node with many subscribers never has all its
/// notifications in memory; only the subscribers' JIDs are copied here.
pub fn notify(c: &Call<'_>, node: &Node, ev: &Element) {
    if !node.config.deliver_notifications {
        return;
    }
    let hosts = match node.config.presence_based_delivery {
        true => c.ctx.hosts(),
        false => Vec::new(),
    };
    let to: Vec<String> = node
        .subscriptions
        .iter()
        .filter(|(_, s)| s.subscribed && s.deliver)
        .filter(|(j, _)| !node.config.presence_based_delivery || available(c, &hosts, j))
        .map(|(j, _)| j.clone())
        .collect();
    if to.is_empty() {
        return;
    }
    let (from, kind, ev) = (
        c.service.to_string(),
        node.config.notification_type,
        ev.clone(),
    );
    c.ctx.route_stream(
        c.service,
        Box::new(
            to.into_iter()
                .map(move |jid| notification(&from, kind, &jid, ev.clone())),
        ),
    );
}

/// For `presence_based_delivery`: whether subscriber `jid` (bare or full)
/// may be notified now. A local account needs an available session (that
/// resource, for a full JID; a detached XEP-0198 session counts, as its
/// client comes back); a remote one always may (its presence is not
/// tracked here).
fn available(c: &Call<'_>, hosts: &[String], jid: &str) -> bool {
    let Ok(j) = jid.parse::<Jid>() else {
        return false;
    };
    if !hosts.iter().any(|h| h == j.domain().as_str()) {
        return true;
    }
    let bare = j.to_bare();
    if !c.ctx.has_sessions(&bare) {
        return false;
    }
    c.ctx
        .sessions(&bare)
        .iter()
        .any(|s| s.available && j.resource().is_none_or(|r| s.jid.resource() == r))
}

/// One notification message.
fn notification(from: &str, kind: &str, to: &str, ev: Element) -> Element {
    Element::new("message", ns::CLIENT)
        .with_attr("from", from)
        .with_attr("to", to)
        .with_attr("type", kind)
        .with_attr("id", item_id())
        .with_child(ev)
}

/// One notification message to `to`.
pub fn message(c: &Call<'_>, node: &Node, to: &str, ev: Element) -> Element {
    notification(c.service, node.config.notification_type, to, ev)
}

/// Send the last item to `to` on the service's queue (after the
/// notifications already queued), if the node has one.
pub fn send_last(c: &Call<'_>, name: &str, node: &Node, to: &str) {
    if let Some(m) = last_item_message(c, name, node, to) {
        c.ctx.route_stream(c.service, Box::new(std::iter::once(m)));
    }
}

/// The newest item of a node, if any is stored.
pub fn last_item(c: &Call<'_>, name: &str) -> Option<Element> {
    let prefix = item_prefix(name);
    let rows = c
        .store()
        .scan_range(&c.owner, &KeyRange::prefix(&prefix), true, 1)
        .ok()?;
    let (_, v) = rows.into_iter().next()?;
    c.ctx
        .parse_stored_xml(&String::from_utf8_lossy(&v), c.service)
}

/// The last item as a notification to `to` (on subscription).
pub fn last_item_message(c: &Call<'_>, name: &str, node: &Node, to: &str) -> Option<Element> {
    let item = last_item(c, name)?;
    let ev = event(
        Element::new("items", ns::PUBSUB_EVENT)
            .with_attr("node", name)
            .with_child(as_event_item(&item, node.config.deliver_payloads)),
    );
    Some(message(c, node, to, ev))
}

fn seq_of(c: &Call<'_>, name: &str, id: &str) -> Result<Option<u64>, StanzaError> {
    Ok(c.store()
        .get(&c.owner, &iid_key(name, id))?
        .and_then(|v| String::from_utf8_lossy(&v).parse().ok()))
}

/// Whether `who` may publish to `node`.
fn may_publish(node: &Node, who: &str) -> bool {
    match node.affiliation(who) {
        Affiliation::Outcast => false,
        Affiliation::Owner | Affiliation::Publisher | Affiliation::PublishOnly => true,
        _ => match node.config.publish_model {
            PublishModel::Open => true,
            PublishModel::Subscribers => node.subscribed(who),
            PublishModel::Publishers => false,
        },
    }
}

/// `<publish/>` (§7.1), with `<publish-options/>` (§7.1.5) in `pubsub`.
pub fn publish(
    c: &Call<'_>,
    svc: &mut Service,
    pubsub: &Element,
    op: &Element,
    from: &Jid,
) -> Result<Option<Element>, StanzaError> {
    let name = node_name(op)?.to_string();
    let who = from.to_bare().to_string();
    let items: Vec<&Element> = op.child_elements().collect();
    if items.len() > 1 || items.iter().any(|i| !i.is("item", ns::PUBSUB)) {
        return Err(
            pubsub_error(ErrorType::Modify, Condition::BadRequest, "invalid-payload")
                .with_text("publish one item at a time"),
        );
    }
    let item = items.first().copied();
    let payloads: Vec<&Element> = item
        .map(|i| i.child_elements().collect())
        .unwrap_or_default();
    if payloads.len() > 1 {
        return Err(
            pubsub_error(ErrorType::Modify, Condition::BadRequest, "invalid-payload")
                .with_text("an item carries one payload element"),
        );
    }
    let payload = payloads.first().copied();
    if let Some(p) = payload {
        let size = p.to_xml("").len();
        if size > c.ps.max_payload_size {
            return Err(pubsub_error(
                ErrorType::Modify,
                Condition::NotAcceptable,
                "payload-too-big",
            )
            .with_text(format!(
                "payloads are at most {} bytes",
                c.ps.max_payload_size
            )));
        }
    }
    let options = pubsub
        .child("publish-options", ns::PUBSUB)
        .and_then(|o| o.child("x", ns::DATA_FORMS))
        .map(form_fields);
    if !svc.nodes.contains_key(&name) {
        // Auto-create (§7.1.4), with the publish-options as configuration.
        if !c.ps.may_create(c.ctx, from) {
            return Err(StanzaError::item_not_found());
        }
        let mut node = c.ps.new_node(&name, &who);
        if let Some(f) = &options {
            apply_form(&mut node.config, f, PUBLISH_OPTIONS, c.ps.max_items_node)?;
            c.ps.force(&name, &mut node.config);
        }
        c.save_node(&name, &node)?;
        svc.nodes.insert(name.clone(), node);
    } else if let Some(f) = &options {
        // Preconditions (§7.1.5): each option must already be the node's.
        let node = &svc.nodes[&name];
        let mut wanted = node.config.clone();
        apply_form(&mut wanted, f, PUBLISH_OPTIONS, c.ps.max_items_node).map_err(|_| {
            pubsub_error(
                ErrorType::Cancel,
                Condition::Conflict,
                "precondition-not-met",
            )
        })?;
        if wanted != node.config {
            return Err(pubsub_error(
                ErrorType::Cancel,
                Condition::Conflict,
                "precondition-not-met",
            )
            .with_text("the node's configuration differs from the publish-options"));
        }
    }
    let node = svc
        .nodes
        .get_mut(&name)
        .ok_or_else(StanzaError::item_not_found)?;
    if !may_publish(node, &who) {
        return Err(StanzaError::forbidden());
    }
    if node.config.persist_items || node.config.deliver_payloads {
        if item.is_none() {
            return Err(pubsub_error(
                ErrorType::Modify,
                Condition::BadRequest,
                "item-required",
            ));
        }
        if node.config.deliver_payloads && payload.is_none() {
            return Err(pubsub_error(
                ErrorType::Modify,
                Condition::BadRequest,
                "payload-required",
            ));
        }
    }
    let id = item
        .and_then(|i| i.attr("id"))
        .filter(|id| !id.is_empty())
        .map(str::to_string)
        .unwrap_or_else(item_id);
    let stored = item_element(&id, &who, payload);
    let mut removed = Vec::new();
    if node.config.persist_items {
        removed = store_item(c, &name, node, &id, &stored)?;
    }
    let reply_item = Element::new("item", ns::PUBSUB).with_attr("id", id.as_str());
    let reply = Element::new("pubsub", ns::PUBSUB).with_child(
        Element::new("publish", ns::PUBSUB)
            .with_attr("node", name.as_str())
            .with_child(reply_item),
    );
    let ev = event(
        Element::new("items", ns::PUBSUB_EVENT)
            .with_attr("node", name.as_str())
            .with_child(as_event_item(&stored, node.config.deliver_payloads)),
    );
    notify(c, node, &ev);
    if !removed.is_empty() && node.config.notify_retract {
        let mut items = Element::new("items", ns::PUBSUB_EVENT).with_attr("node", name.as_str());
        for id in removed {
            items = items.with_child(Element::new("retract", ns::PUBSUB_EVENT).with_attr("id", id));
        }
        notify(c, node, &event(items));
    }
    Ok(Some(reply))
}

/// Store one item (replacing one with the same id), then keep the node to
/// its `max_items`. Returns the ids of the items removed by retention.
fn store_item(
    c: &Call<'_>,
    name: &str,
    node: &mut Node,
    id: &str,
    item: &Element,
) -> Result<Vec<String>, StanzaError> {
    let store = c.store();
    let old = seq_of(c, name, id)?;
    let seq = node.next_seq;
    let key = item_key(name, seq);
    let seq_text = seq.to_string();
    let xml = item.to_xml("");
    store.put_many_lazy(
        &c.owner,
        &[
            (key.as_str(), xml.as_bytes()),
            (iid_key(name, id).as_str(), seq_text.as_bytes()),
        ],
    )?;
    node.next_seq += 1;
    node.count += 1;
    let mut gone_keys = Vec::new();
    if let Some(old) = old {
        gone_keys.push(item_key(name, old));
        node.count -= 1;
    }
    let removed = trim(c, name, node, &mut gone_keys)?;
    if !gone_keys.is_empty() {
        store.delete_many(&c.owner, &gone_keys)?;
    }
    // Durable: flushes the item and its index with it.
    store.put(&c.owner, &seq_key(name), seq_text.as_bytes())?;
    Ok(removed)
}

/// Keep `node` to its `max_items`: the oldest items beyond it are read in
/// one range scan; their keys are added to `gone_keys` (for the caller's
/// one batch delete, which may hold other keys already, skipped here) and
/// their ids returned.
pub fn trim(
    c: &Call<'_>,
    name: &str,
    node: &mut Node,
    gone_keys: &mut Vec<String>,
) -> Result<Vec<String>, StanzaError> {
    let mut removed = Vec::new();
    let excess = node.count.saturating_sub(node.config.max_items);
    if excess == 0 {
        return Ok(removed);
    }
    let prefix = item_prefix(name);
    let skip = gone_keys.len();
    let rows = c
        .store()
        .scan_range(&c.owner, &KeyRange::prefix(&prefix), false, excess + skip)?;
    for (k, v) in rows {
        if removed.len() == excess || gone_keys.contains(&k) {
            continue;
        }
        if let Some(old_id) = c
            .ctx
            .parse_stored_xml(&String::from_utf8_lossy(&v), c.service)
            .and_then(|e| e.attr("id").map(str::to_string))
        {
            gone_keys.push(iid_key(name, &old_id));
            removed.push(old_id);
        }
        gone_keys.push(k);
    }
    node.count -= removed.len();
    Ok(removed)
}

/// Remove one item by id; whether it existed.
fn remove_item(c: &Call<'_>, name: &str, node: &mut Node, id: &str) -> Result<bool, StanzaError> {
    let Some(seq) = seq_of(c, name, id)? else {
        return Ok(false);
    };
    c.store()
        .delete_many(&c.owner, &[item_key(name, seq), iid_key(name, id)])?;
    node.count = node.count.saturating_sub(1);
    Ok(true)
}

/// `<retract/>` (§7.2).
pub fn retract(
    c: &Call<'_>,
    svc: &mut Service,
    op: &Element,
    from: &Jid,
) -> Result<Option<Element>, StanzaError> {
    let name = node_name(op)?;
    let node = svc
        .nodes
        .get_mut(name)
        .ok_or_else(StanzaError::item_not_found)?;
    let ids: Vec<&str> = op
        .child_elements()
        .filter(|i| i.is("item", ns::PUBSUB))
        .filter_map(|i| i.attr("id"))
        .collect();
    if ids.is_empty() {
        return Err(pubsub_error(
            ErrorType::Modify,
            Condition::BadRequest,
            "item-required",
        ));
    }
    let who = from.to_bare().to_string();
    let aff = node.affiliation(&who);
    for id in &ids {
        let Some(seq) = seq_of(c, name, id)? else {
            return Err(StanzaError::item_not_found());
        };
        // Owners and publishers retract any item; others only their own.
        if !matches!(aff, Affiliation::Owner | Affiliation::Publisher) {
            let mine = aff != Affiliation::Outcast
                && c.store()
                    .get(&c.owner, &item_key(name, seq))?
                    .and_then(|v| {
                        c.ctx
                            .parse_stored_xml(&String::from_utf8_lossy(&v), c.service)
                    })
                    .is_some_and(|e| e.attr("publisher") == Some(who.as_str()));
            if !mine {
                return Err(StanzaError::forbidden());
            }
        }
    }
    for id in &ids {
        remove_item(c, name, node, id)?;
    }
    let notify_wanted = match op.attr("notify") {
        Some(v) => matches!(v, "1" | "true"),
        None => node.config.notify_retract,
    };
    if notify_wanted {
        let mut items = Element::new("items", ns::PUBSUB_EVENT).with_attr("node", name);
        for id in ids {
            items = items.with_child(Element::new("retract", ns::PUBSUB_EVENT).with_attr("id", id));
        }
        notify(c, node, &event(items));
    }
    Ok(None)
}

/// `<purge/>` (§8.5), owners only.
pub fn purge(
    c: &Call<'_>,
    svc: &mut Service,
    op: &Element,
    from: &Jid,
) -> Result<Option<Element>, StanzaError> {
    let name = node_name(op)?;
    let node = svc
        .nodes
        .get_mut(name)
        .ok_or_else(StanzaError::item_not_found)?;
    if node.affiliation(bare_of(from.as_str())) != Affiliation::Owner {
        return Err(StanzaError::forbidden());
    }
    c.delete_prefix(&item_prefix(name))?;
    c.delete_prefix(&format!("iid:{name}\0"))?;
    node.count = 0;
    if node.config.notify_retract {
        notify(
            c,
            node,
            &event(Element::new("purge", ns::PUBSUB_EVENT).with_attr("node", name)),
        );
    }
    Ok(None)
}

/// `<items/>` (§6.5): all (the newest `max_items`), by id, or a XEP-0059 page.
pub fn items(
    c: &Call<'_>,
    svc: &Service,
    pubsub: &Element,
    op: &Element,
    from: &Jid,
) -> Result<Option<Element>, StanzaError> {
    let name = node_name(op)?;
    let node = svc
        .nodes
        .get(name)
        .ok_or_else(StanzaError::item_not_found)?;
    access_check(c, node, from, true)?;
    let mut out = Element::new("items", ns::PUBSUB).with_attr("node", name);
    let parse = |v: &[u8]| {
        c.ctx
            .parse_stored_xml(&String::from_utf8_lossy(v), c.service)
    };
    let wanted: Vec<&str> = op
        .child_elements()
        .filter(|i| i.is("item", ns::PUBSUB))
        .filter_map(|i| i.attr("id"))
        .collect();
    let reply = |items: Element, set: Option<Element>| {
        let mut p = Element::new("pubsub", ns::PUBSUB).with_child(items);
        if let Some(s) = set {
            p = p.with_child(s);
        }
        Ok(Some(p))
    };
    if !wanted.is_empty() {
        for id in wanted {
            if let Some(seq) = seq_of(c, name, id)? {
                if let Some(e) = c
                    .store()
                    .get(&c.owner, &item_key(name, seq))?
                    .and_then(|v| parse(&v))
                {
                    out = out.with_child(e);
                }
            }
        }
        return reply(out, None);
    }
    let prefix = item_prefix(name);
    let store = c.store();
    if let Some(set) = pubsub.child("set", NS_RSM) {
        let max = match set.child("max", NS_RSM) {
            Some(m) => m
                .text()
                .trim()
                .parse::<usize>()
                .map_err(|_| StanzaError::bad_request().with_text("bad RSM <max/>"))?,
            None => MAX_PAGE,
        }
        .min(MAX_PAGE);
        let key_of = |id: &str| -> Result<String, StanzaError> {
            let seq = seq_of(c, name, id)?.ok_or_else(|| {
                StanzaError::item_not_found().with_text(format!("no item {id:?} to page from"))
            })?;
            Ok(item_key(name, seq))
        };
        let after = set.child("after", NS_RSM).map(|a| a.text());
        let before = set.child("before", NS_RSM).map(|b| b.text());
        // Rows newest first; `newer`: items newer than the page.
        let (rows, newer) = match (after, before) {
            (Some(a), _) => {
                let k = key_of(a.trim())?;
                let range = KeyRange {
                    prefix: &prefix,
                    lower: Bound::Unbounded,
                    upper: Bound::Excluded(&k),
                };
                let rows = store.scan_range(&c.owner, &range, true, max)?;
                let newer = node.count - store.count_range(&c.owner, &range)?;
                (rows, newer)
            }
            (None, Some(b)) if !b.trim().is_empty() => {
                let k = key_of(b.trim())?;
                let range = KeyRange {
                    prefix: &prefix,
                    lower: Bound::Excluded(&k),
                    upper: Bound::Unbounded,
                };
                let mut rows = store.scan_range(&c.owner, &range, false, max)?;
                rows.reverse();
                let newer = store
                    .count_range(&c.owner, &range)?
                    .saturating_sub(rows.len());
                (rows, newer)
            }
            (None, Some(_)) => {
                let mut rows =
                    store.scan_range(&c.owner, &KeyRange::prefix(&prefix), false, max)?;
                rows.reverse();
                let newer = node.count.saturating_sub(rows.len());
                (rows, newer)
            }
            (None, None) => (
                store.scan_range(&c.owner, &KeyRange::prefix(&prefix), true, max)?,
                0,
            ),
        };
        let mut set = Element::new("set", NS_RSM);
        let elements: Vec<Element> = rows.iter().filter_map(|(_, v)| parse(v)).collect();
        if let (Some(first), Some(last)) = (elements.first(), elements.last()) {
            set = set
                .with_child(
                    Element::new("first", NS_RSM)
                        .with_attr("index", newer.to_string())
                        .with_text(first.attr("id").unwrap_or("")),
                )
                .with_child(Element::new("last", NS_RSM).with_text(last.attr("id").unwrap_or("")));
        }
        set = set.with_child(Element::new("count", NS_RSM).with_text(node.count.to_string()));
        for e in elements {
            out = out.with_child(e);
        }
        return reply(out, Some(set));
    }
    let max = match op.attr("max_items") {
        Some(m) => m
            .trim()
            .parse::<usize>()
            .map_err(|_| StanzaError::bad_request().with_text("bad max_items"))?,
        None => MAX_PAGE,
    }
    .min(MAX_PAGE);
    let mut rows = store.scan_range(&c.owner, &KeyRange::prefix(&prefix), true, max)?;
    rows.reverse();
    for (_, v) in rows {
        if let Some(e) = parse(&v) {
            out = out.with_child(e);
        }
    }
    reply(out, None)
}

/// disco#items of a node: its items' ids (§5.5).
pub fn disco_items(c: &Call<'_>, name: &str) -> Result<Vec<Element>, StanzaError> {
    let prefix = item_prefix(name);
    let rows = c
        .store()
        .scan_range(&c.owner, &KeyRange::prefix(&prefix), true, MAX_PAGE)?;
    Ok(rows
        .into_iter()
        .filter_map(|(_, v)| {
            let e = c
                .ctx
                .parse_stored_xml(&String::from_utf8_lossy(&v), c.service)?;
            Some(
                Element::new("item", ns::DISCO_ITEMS)
                    .with_attr("jid", c.service)
                    .with_attr("name", e.attr("id")?),
            )
        })
        .collect())
}
