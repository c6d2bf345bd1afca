//! A leaf node of the publish-subscribe service: its configuration (the
//! `pubsub#node_config` form, XEP-0060 §16.4.4), its affiliations and
//! subscriptions, and their stored form.
//!
//! Invariants: [`Config::set`] is the one place a configuration value is
//! read, whether from a node_config form, publish-options, or the module's
//! `default_node_config` / `force_node_config` options, so all four accept
//! and refuse the same values. A node keeps at least one owner. The stored
//! node record (`node:NAME`) holds the configuration and affiliations;
//! subscriptions are stored one key each (`sub:NAME\0JID`, see
//! `subscriptions.rs`), so a node with many subscribers is not rewritten
//! when one of them changes.

use std::collections::BTreeMap;

use super::forms::{bool_value, field, form, list_field, parse_bool, pubsub_error};
use crate::element::Element;
use crate::ns;
use crate::stanza::{Condition, ErrorType, StanzaError};

pub const NODE_CONFIG: &str = "http://jabber.org/protocol/pubsub#node_config";
pub const META_DATA: &str = "http://jabber.org/protocol/pubsub#meta-data";
/// Namespace of stored node records (never on the wire).
const NS_STORED: &str = "urn:rookery:pubsub:0";

/// Who may subscribe and retrieve items (§4.5).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    Open,
    Presence,
    Roster,
    Whitelist,
    Authorize,
}

impl Access {
    pub const ALL: [&'static str; 5] = ["authorize", "open", "presence", "roster", "whitelist"];
    pub fn parse(s: &str) -> Option<Access> {
        Some(match s {
            "open" => Access::Open,
            "presence" => Access::Presence,
            "roster" => Access::Roster,
            "whitelist" => Access::Whitelist,
            "authorize" => Access::Authorize,
            _ => return None,
        })
    }
    pub fn as_str(self) -> &'static str {
        match self {
            Access::Open => "open",
            Access::Presence => "presence",
            Access::Roster => "roster",
            Access::Whitelist => "whitelist",
            Access::Authorize => "authorize",
        }
    }
}

/// Who may publish (`pubsub#publish_model`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PublishModel {
    Publishers,
    Subscribers,
    Open,
}

impl PublishModel {
    pub const ALL: [&'static str; 3] = ["publishers", "subscribers", "open"];
    fn parse(s: &str) -> Option<PublishModel> {
        Some(match s {
            "publishers" => PublishModel::Publishers,
            "subscribers" => PublishModel::Subscribers,
            "open" => PublishModel::Open,
            _ => return None,
        })
    }
    pub fn as_str(self) -> &'static str {
        match self {
            PublishModel::Publishers => "publishers",
            PublishModel::Subscribers => "subscribers",
            PublishModel::Open => "open",
        }
    }
}

/// When the last item goes to a subscriber (`pubsub#send_last_published_item`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SendLast {
    Never,
    OnSub,
    OnSubAndPresence,
}

impl SendLast {
    pub const ALL: [&'static str; 3] = ["never", "on_sub", "on_sub_and_presence"];
    fn parse(s: &str) -> Option<SendLast> {
        Some(match s {
            "never" => SendLast::Never,
            "on_sub" => SendLast::OnSub,
            "on_sub_and_presence" => SendLast::OnSubAndPresence,
            _ => return None,
        })
    }
    pub fn as_str(self) -> &'static str {
        match self {
            SendLast::Never => "never",
            SendLast::OnSub => "on_sub",
            SendLast::OnSubAndPresence => "on_sub_and_presence",
        }
    }
}

/// An entity's affiliation with a node (§4.1).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Affiliation {
    Outcast,
    None,
    Member,
    PublishOnly,
    Publisher,
    Owner,
}

impl Affiliation {
    pub fn parse(s: &str) -> Option<Affiliation> {
        Some(match s {
            "owner" => Affiliation::Owner,
            "publisher" => Affiliation::Publisher,
            "publish-only" => Affiliation::PublishOnly,
            "member" => Affiliation::Member,
            "none" => Affiliation::None,
            "outcast" => Affiliation::Outcast,
            _ => return None,
        })
    }
    pub fn as_str(self) -> &'static str {
        match self {
            Affiliation::Owner => "owner",
            Affiliation::Publisher => "publisher",
            Affiliation::PublishOnly => "publish-only",
            Affiliation::Member => "member",
            Affiliation::None => "none",
            Affiliation::Outcast => "outcast",
        }
    }
}

/// A node's configuration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    pub title: String,
    pub description: String,
    /// `pubsub#type`: the payload's namespace, as the owner says.
    pub payload_type: String,
    pub access: Access,
    pub publish_model: PublishModel,
    pub max_items: usize,
    pub persist_items: bool,
    pub deliver_notifications: bool,
    pub deliver_payloads: bool,
    pub notify_config: bool,
    pub notify_delete: bool,
    pub notify_retract: bool,
    pub send_last: SendLast,
    /// `pubsub#presence_based_delivery`: notify a local subscriber only
    /// while it has an available session (a remote one always: the
    /// service does not track remote presence).
    pub presence_based_delivery: bool,
    /// `headline` (the default) or `normal` messages.
    pub notification_type: &'static str,
}

impl Config {
    /// The service's defaults before `default_node_config`.
    pub fn new(max_items: usize) -> Config {
        Config {
            title: String::new(),
            description: String::new(),
            payload_type: String::new(),
            access: Access::Open,
            publish_model: PublishModel::Publishers,
            max_items,
            persist_items: true,
            deliver_notifications: true,
            deliver_payloads: true,
            notify_config: false,
            notify_delete: true,
            notify_retract: true,
            send_last: SendLast::OnSubAndPresence,
            presence_based_delivery: false,
            notification_type: "headline",
        }
    }

    /// Set one option from its form field (`pubsub#NAME`, or `NAME` as in
    /// the module's options) and values. `limit` is the service's
    /// `max_items_node` (what `max` means). Unknown fields are ignored
    /// (clients echo whole forms); bad values are `not-acceptable`.
    pub fn set(&mut self, var: &str, values: &[String], limit: usize) -> Result<(), StanzaError> {
        let name = var.strip_prefix("pubsub#").unwrap_or(var);
        let v = values.first().map(String::as_str).unwrap_or("");
        let bad = || {
            StanzaError::not_acceptable().with_text(format!("bad value {v:?} for pubsub#{name}"))
        };
        let boolean = || parse_bool(v).ok_or_else(bad);
        match name {
            "title" => self.title = v.to_string(),
            "description" => self.description = v.to_string(),
            "type" => self.payload_type = v.to_string(),
            "access_model" => {
                self.access = Access::parse(v).ok_or_else(|| {
                    pubsub_error(
                        ErrorType::Modify,
                        Condition::NotAcceptable,
                        "unsupported-access-model",
                    )
                    .with_text(format!("access model {v:?} is not supported"))
                })?
            }
            "publish_model" => self.publish_model = PublishModel::parse(v).ok_or_else(bad)?,
            "max_items" => {
                self.max_items = if v == "max" {
                    limit
                } else {
                    let n: usize = v.trim().parse().map_err(|_| bad())?;
                    if n > limit {
                        return Err(pubsub_error(
                            ErrorType::Modify,
                            Condition::NotAcceptable,
                            "max-items-exceeded",
                        )
                        .with_text(format!("at most {limit} items per node")));
                    }
                    n.max(1)
                }
            }
            "persist_items" => self.persist_items = boolean()?,
            "deliver_notifications" => self.deliver_notifications = boolean()?,
            "deliver_payloads" => self.deliver_payloads = boolean()?,
            "notify_config" => self.notify_config = boolean()?,
            "notify_delete" => self.notify_delete = boolean()?,
            "notify_retract" => self.notify_retract = boolean()?,
            "send_last_published_item" => self.send_last = SendLast::parse(v).ok_or_else(bad)?,
            "presence_based_delivery" => self.presence_based_delivery = boolean()?,
            // Roster groups are not checked by the `roster` access model:
            // refuse a list rather than ignore it (which would open the node
            // to every contact).
            "roster_groups_allowed" if values.iter().any(|g| !g.trim().is_empty()) => {
                return Err(StanzaError::not_acceptable().with_text(
                    "pubsub#roster_groups_allowed is not supported: the roster access model admits every contact of an owner",
                ));
            }
            "notification_type" => {
                self.notification_type = match v {
                    "headline" => "headline",
                    "normal" => "normal",
                    _ => return Err(bad()),
                }
            }
            _ => {}
        }
        Ok(())
    }

    /// The configuration as a `pubsub#node_config` form (`type`: `form` for
    /// a get, `result` in a notification).
    pub fn to_form(&self, kind: &str, limit: usize) -> Element {
        let b = |var: &str, v: bool| field(var, "boolean", &[bool_value(v)]);
        let max = self.max_items.to_string();
        let mut max_field = field("pubsub#max_items", "text-single", &[&max]);
        max_field.set_attr("label", format!("Most items kept (1 to {limit}, or max)"));
        form(kind, NODE_CONFIG)
            .with_child(field("pubsub#title", "text-single", &[&self.title]))
            .with_child(field(
                "pubsub#description",
                "text-single",
                &[&self.description],
            ))
            .with_child(field("pubsub#type", "text-single", &[&self.payload_type]))
            .with_child(list_field(
                "pubsub#access_model",
                &Access::ALL,
                self.access.as_str(),
            ))
            .with_child(list_field(
                "pubsub#publish_model",
                &PublishModel::ALL,
                self.publish_model.as_str(),
            ))
            .with_child(max_field)
            .with_child(b("pubsub#persist_items", self.persist_items))
            .with_child(b(
                "pubsub#deliver_notifications",
                self.deliver_notifications,
            ))
            .with_child(b("pubsub#deliver_payloads", self.deliver_payloads))
            .with_child(b("pubsub#notify_config", self.notify_config))
            .with_child(b("pubsub#notify_delete", self.notify_delete))
            .with_child(b("pubsub#notify_retract", self.notify_retract))
            .with_child(list_field(
                "pubsub#send_last_published_item",
                &SendLast::ALL,
                self.send_last.as_str(),
            ))
            .with_child(list_field(
                "pubsub#notification_type",
                &["headline", "normal"],
                self.notification_type,
            ))
            .with_child(b(
                "pubsub#presence_based_delivery",
                self.presence_based_delivery,
            ))
    }

    /// Every option as (name, value), for the stored record.
    fn pairs(&self) -> Vec<(&'static str, String)> {
        vec![
            ("title", self.title.clone()),
            ("description", self.description.clone()),
            ("type", self.payload_type.clone()),
            ("access_model", self.access.as_str().into()),
            ("publish_model", self.publish_model.as_str().into()),
            ("max_items", self.max_items.to_string()),
            ("persist_items", bool_value(self.persist_items).into()),
            (
                "deliver_notifications",
                bool_value(self.deliver_notifications).into(),
            ),
            ("deliver_payloads", bool_value(self.deliver_payloads).into()),
            ("notify_config", bool_value(self.notify_config).into()),
            ("notify_delete", bool_value(self.notify_delete).into()),
            ("notify_retract", bool_value(self.notify_retract).into()),
            ("send_last_published_item", self.send_last.as_str().into()),
            ("notification_type", self.notification_type.into()),
            (
                "presence_based_delivery",
                bool_value(self.presence_based_delivery).into(),
            ),
        ]
    }
}

/// A leaf node.
#[derive(Clone, Debug)]
pub struct Node {
    pub config: Config,
    /// Bare JID of who created it.
    pub creator: String,
    /// XEP-0082 date of its creation.
    pub created: String,
    /// Affiliations by bare JID (`none` is never kept).
    pub affiliations: BTreeMap<String, Affiliation>,
    /// Subscriptions by the subscribed JID (bare or full) as given.
    pub subscriptions: BTreeMap<String, Subscription>,
    /// The next item's sequence number (item keys are ordered by it).
    pub next_seq: u64,
    /// Items stored.
    pub count: usize,
}

/// One JID's subscription to a node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Subscription {
    /// `false` while it waits for an owner's approval (access model authorize).
    pub subscribed: bool,
    pub subid: String,
    /// `pubsub#deliver` of the subscription options.
    pub deliver: bool,
}

impl Subscription {
    pub fn state(&self) -> &'static str {
        if self.subscribed {
            "subscribed"
        } else {
            "pending"
        }
    }
    /// Stored value: `STATE SUBID DELIVER`.
    pub fn to_stored(&self) -> String {
        format!(
            "{} {} {}",
            self.state(),
            self.subid,
            bool_value(self.deliver)
        )
    }
    pub fn from_stored(s: &str) -> Option<Subscription> {
        let mut it = s.split(' ');
        let subscribed = match it.next()? {
            "subscribed" => true,
            "pending" => false,
            _ => return None,
        };
        let subid = it.next()?.to_string();
        let deliver = parse_bool(it.next().unwrap_or("1")).unwrap_or(true);
        Some(Subscription {
            subscribed,
            subid,
            deliver,
        })
    }
}

impl Node {
    pub fn new(config: Config, creator: &str, created: String) -> Node {
        let mut affiliations = BTreeMap::new();
        affiliations.insert(creator.to_string(), Affiliation::Owner);
        Node {
            config,
            creator: creator.to_string(),
            created,
            affiliations,
            subscriptions: BTreeMap::new(),
            next_seq: 1,
            count: 0,
        }
    }

    /// The affiliation of a bare JID.
    pub fn affiliation(&self, bare: &str) -> Affiliation {
        self.affiliations
            .get(bare)
            .copied()
            .unwrap_or(Affiliation::None)
    }

    pub fn owners(&self) -> impl Iterator<Item = &String> {
        self.affiliations
            .iter()
            .filter(|(_, a)| **a == Affiliation::Owner)
            .map(|(j, _)| j)
    }

    /// Whether some JID of this bare JID has an approved subscription.
    pub fn subscribed(&self, bare: &str) -> bool {
        self.subscriptions
            .iter()
            .any(|(j, s)| s.subscribed && bare_of(j) == bare)
    }

    /// Approved subscriptions.
    pub fn num_subscribers(&self) -> usize {
        self.subscriptions.values().filter(|s| s.subscribed).count()
    }

    /// The stored record (configuration, creator, affiliations).
    pub fn to_stored(&self) -> Element {
        let mut e = Element::new("node", NS_STORED)
            .with_attr("creator", self.creator.as_str())
            .with_attr("created", self.created.as_str());
        for (k, v) in self.config.pairs() {
            e = e.with_child(
                Element::new("c", NS_STORED)
                    .with_attr("k", k)
                    .with_attr("v", v),
            );
        }
        for (jid, a) in &self.affiliations {
            e = e.with_child(
                Element::new("a", NS_STORED)
                    .with_attr("jid", jid.as_str())
                    .with_attr("a", a.as_str()),
            );
        }
        e
    }

    /// A node from its record (no subscriptions, counters zero).
    pub fn from_stored(e: &Element, limit: usize) -> Option<Node> {
        if !e.is("node", NS_STORED) {
            return None;
        }
        let mut config = Config::new(limit);
        let mut affiliations = BTreeMap::new();
        for c in e.child_elements() {
            match c.name.as_str() {
                "c" => {
                    let (Some(k), Some(v)) = (c.attr("k"), c.attr("v")) else {
                        continue;
                    };
                    // A stored max_items above a lowered limit is clamped.
                    let v = if k == "max_items" {
                        v.parse::<usize>()
                            .map_or(v.to_string(), |n| n.min(limit).to_string())
                    } else {
                        v.to_string()
                    };
                    let _ = config.set(k, &[v], limit);
                }
                "a" => {
                    if let (Some(j), Some(a)) =
                        (c.attr("jid"), c.attr("a").and_then(Affiliation::parse))
                    {
                        affiliations.insert(j.to_string(), a);
                    }
                }
                _ => {}
            }
        }
        Some(Node {
            config,
            creator: e.attr("creator").unwrap_or("").to_string(),
            created: e.attr("created").unwrap_or("").to_string(),
            affiliations,
            subscriptions: BTreeMap::new(),
            next_seq: 1,
            count: 0,
        })
    }

    /// The `pubsub#meta-data` form of the node's disco#info (§5.4).
    pub fn meta_data(&self) -> Element {
        let owners: Vec<&str> = self.owners().map(String::as_str).collect();
        let publishers: Vec<&str> = self
            .affiliations
            .iter()
            .filter(|(_, a)| matches!(a, Affiliation::Publisher | Affiliation::PublishOnly))
            .map(|(j, _)| j.as_str())
            .collect();
        let subs = self.num_subscribers().to_string();
        let max = self.config.max_items.to_string();
        form("result", META_DATA)
            .with_child(field("pubsub#title", "text-single", &[&self.config.title]))
            .with_child(field(
                "pubsub#description",
                "text-single",
                &[&self.config.description],
            ))
            .with_child(field(
                "pubsub#type",
                "text-single",
                &[&self.config.payload_type],
            ))
            .with_child(field("pubsub#creator", "jid-single", &[&self.creator]))
            .with_child(field(
                "pubsub#creation_date",
                "text-single",
                &[&self.created],
            ))
            .with_child(field("pubsub#owner", "jid-multi", &owners))
            .with_child(field("pubsub#publisher", "jid-multi", &publishers))
            .with_child(field(
                "pubsub#access_model",
                "list-single",
                &[self.config.access.as_str()],
            ))
            .with_child(field(
                "pubsub#publish_model",
                "list-single",
                &[self.config.publish_model.as_str()],
            ))
            .with_child(field("pubsub#max_items", "text-single", &[&max]))
            .with_child(field(
                "pubsub#persist_items",
                "boolean",
                &[bool_value(self.config.persist_items)],
            ))
            .with_child(field("pubsub#num_subscribers", "text-single", &[&subs]))
    }
}

/// The bare part of a JID string (`a@b/c` → `a@b`).
pub fn bare_of(jid: &str) -> &str {
    jid.split_once('/').map_or(jid, |(b, _)| b)
}

/// A `<configure/>` form with the wrong FORM_TYPE is `bad-request`; any
/// other field goes through [`Config::set`].
pub fn apply_form(
    config: &mut Config,
    fields: &std::collections::HashMap<String, Vec<String>>,
    form_type: &str,
    limit: usize,
) -> Result<(), StanzaError> {
    if let Some(ft) = fields.get("FORM_TYPE") {
        if ft.first().map(String::as_str) != Some(form_type) {
            return Err(StanzaError::bad_request().with_text("wrong FORM_TYPE"));
        }
    }
    for (var, values) in fields {
        if var != "FORM_TYPE" {
            config.set(var, values, limit)?;
        }
    }
    Ok(())
}

/// An event notification's `<event/>` payload.
pub fn event(child: Element) -> Element {
    Element::new("event", ns::PUBSUB_EVENT).with_child(child)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_values_are_checked_and_stored_nodes_round_trip() {
        let mut c = Config::new(100);
        c.set("pubsub#access_model", &["whitelist".into()], 100)
            .unwrap();
        c.set("max_items", &["max".into()], 100).unwrap();
        assert_eq!(c.max_items, 100);
        assert!(c.set("pubsub#max_items", &["101".into()], 100).is_err());
        assert!(c
            .set("pubsub#access_model", &["nobody".into()], 100)
            .is_err());
        assert!(c
            .set("pubsub#persist_items", &["maybe".into()], 100)
            .is_err());
        c.set("pubsub#bogus", &["x".into()], 100).unwrap();
        assert!(c
            .set("pubsub#roster_groups_allowed", &["Friends".into()], 100)
            .is_err());
        c.set("pubsub#roster_groups_allowed", &[], 100).unwrap();
        c.set("pubsub#title", &["News".into()], 100).unwrap();
        let mut n = Node::new(c.clone(), "a@x", "2026-01-01T00:00:00Z".into());
        n.affiliations
            .insert("b@x".into(), Affiliation::PublishOnly);
        let back = Node::from_stored(&n.to_stored(), 100).unwrap();
        assert_eq!(back.config, c);
        assert_eq!(back.affiliations, n.affiliations);
        assert_eq!(back.creator, "a@x");
        let s = Subscription {
            subscribed: false,
            subid: "s1".into(),
            deliver: false,
        };
        assert_eq!(Subscription::from_stored(&s.to_stored()), Some(s));
    }
}
