//! XEP-0060 Publish-Subscribe (`mod_pubsub`), a service on a domain of its
//! own (`host`, default `pubsub.@HOST@` for each served host), with
//! ejabberd's option names.
//!
//! Like `mod_muc`, the server hands the module every stanza addressed to a
//! service domain ([`Module::handle_service_stanza`]); the module answers
//! and returns the iq's answer (and messages to owners, such as
//! authorization forms). Notifications (to each subscriber's bare or full
//! JID, local or on another server: the service domain federates like a
//! host, so remote subscribers get them over s2s from `pubsub.HOST`) go on
//! the service domain's stream queue ([`ServerContext::route_stream`]):
//! built and routed one at a time, in publication order, never all at once
//! in memory.
//!
//! Leaf nodes only (no collections). The folder holds one file per
//! concern: `node.rs` (the node model, its configuration form and stored
//! record, meta-data), `service.rs` (the process-wide nodes and the store
//! keys), `items.rs` (publish, retract, purge, retrieval with XEP-0059),
//! `subscriptions.rs` (subscribe, options, pending approval, management),
//! `affiliations.rs` (access models, affiliations), `forms.rs` (data-form
//! and error helpers shared with `mod_pep`). This file holds the options,
//! the module, the dispatch of iqs, node creation, configuration and
//! deletion, and disco.
//!
//! Invariants: every change is written to the module store (durable)
//! before its answer is returned; every notification of one service
//! domain (and the last items sent on subscription or presence) leaves
//! through its one queue, so each subscriber gets them in publication
//! order; an iq never gets two answers (errors replace the result).

use jid::{FullJid, Jid};

use crate::element::Element;
use crate::module::{Hooks, Identity, Module, ServerContext};
use crate::ns;
use crate::options::{Kind, ModuleSpec, OptSpec};
use crate::opts::Opts;
use crate::stanza::{error_reply, iq_error, iq_result, StanzaError};

mod affiliations;
pub mod forms;
mod items;
mod node;
mod service;
mod subscriptions;

pub use affiliations::access_check;
use forms::{form_fields, node_name};
use node::{apply_form, bare_of, event, Affiliation, Config, Node, NODE_CONFIG};
use service::{state, Call, Service};

/// Module name in the store.
const MODULE: &str = "mod_pubsub";
pub const PUBLISH_OPTIONS: &str = "http://jabber.org/protocol/pubsub#publish-options";

/// ejabberd's `max_items_node` default.
pub const DEFAULT_MAX_ITEMS: usize = 1000;
/// ejabberd's `max_payload_size` default (bytes).
pub const DEFAULT_MAX_PAYLOAD: usize = 250_000;
/// ejabberd's `max_nodes_discoitems` default.
pub const DEFAULT_MAX_NODES_DISCOITEMS: usize = 100;

/// The options of `mod_pubsub` (ejabberd's).
pub const SPEC: ModuleSpec = ModuleSpec::module(
    "mod_pubsub",
    &[
        OptSpec::honoured(
            "host",
            Kind::Text,
            "pubsub.@HOST@",
            "the service domain; `@HOST@` is each served host",
        ),
        OptSpec::honoured(
            "hosts",
            Kind::TextList,
            "",
            "a list of service domains, instead of `host`",
        ),
        OptSpec::honoured(
            "name",
            Kind::Text,
            "Publish-Subscribe",
            "the service's name in disco",
        ),
        OptSpec::honoured(
            "access_createnode",
            Kind::AccessRule,
            "all",
            "who may create nodes (and auto-create them by publishing)",
        ),
        OptSpec::honoured(
            "max_items_node",
            Kind::Int {
                min: 1,
                max: u32::MAX as u64,
            },
            "1000",
            "most items a node keeps (what `pubsub#max_items` = `max` means)",
        ),
        OptSpec::honoured(
            "max_payload_size",
            Kind::Int {
                min: 1,
                max: u32::MAX as u64,
            },
            "250000",
            "largest item payload in bytes (larger: `payload-too-big`)",
        ),
        OptSpec::honoured(
            "max_nodes_discoitems",
            Kind::Count,
            "100",
            "nodes listed in the service's disco#items (`infinity`: all)",
        ),
        OptSpec::honoured(
            "default_node_config",
            Kind::Map,
            "",
            "the configuration of a new node (option names without `pubsub#`)",
        ),
        OptSpec::honoured(
            "force_node_config",
            Kind::Map,
            "",
            "per node-name regular expression, options every matching node is given whatever its owner asks",
        ),
        OptSpec::honoured(
            "plugins",
            Kind::TextList,
            "flat",
            "`flat` (the nodes of this service) and `pep` (PEP on accounts, as mod_pep, when mod_pep is not listed)",
        ),
        OptSpec::storage("ram_db_type", Kind::Any),
        OptSpec::ignored("nodetree", Kind::Any, "node trees (nodes are flat)"),
        OptSpec::ignored("pep_mapping", Kind::Any, "PEP node to plugin mapping"),
        OptSpec::ignored(
            "ignore_pep_from_offline",
            Kind::Any,
            "PEP from offline contacts",
        ),
        OptSpec::ignored("last_item_cache", Kind::Any, "an in-memory last-item cache"),
        OptSpec::ignored(
            "max_subscriptions_node",
            Kind::Any,
            "most subscriptions per node",
        ),
        OptSpec::ignored("item_expire", Kind::Any, "item expiry"),
        OptSpec::ignored("vcard", Kind::Any, "the service's vCard"),
    ],
    true,
);

/// `force_node_config`: a node-name pattern and the options it forces.
type Forced = (regex::Regex, Vec<(String, Vec<String>)>);

/// Collects the stanzas to route after the answer.
pub type Out = Vec<Element>;

/// `mod_pubsub`.
pub struct Pubsub {
    /// Service domain templates (`@HOST@` is each served host).
    hosts: Vec<String>,
    name: String,
    access_createnode: String,
    pub max_items_node: usize,
    pub max_payload_size: usize,
    max_nodes_discoitems: Option<usize>,
    /// `default_node_config` applied over the service's defaults.
    defaults: Config,
    /// `force_node_config`: (node-name pattern, options).
    forced: Vec<Forced>,
    /// Whether `plugins` lists `pep`.
    pub pep_plugin: bool,
}

/// A YAML option value as form values.
fn yaml_values(v: &serde_yaml_ng::Value) -> Option<Vec<String>> {
    use serde_yaml_ng::Value;
    match v {
        Value::String(s) => Some(vec![s.clone()]),
        Value::Bool(b) => Some(vec![b.to_string()]),
        Value::Number(n) => Some(vec![n.to_string()]),
        Value::Sequence(s) => s
            .iter()
            .map(|x| yaml_values(x)?.into_iter().next())
            .collect(),
        _ => None,
    }
}

impl Pubsub {
    /// Read the options; warnings are for the registry to report.
    pub fn from_opts(opts: &serde_yaml_ng::Value, warnings: &mut Vec<String>) -> Pubsub {
        let mut o = Opts::new(opts, &SPEC);
        let mut hosts = o.list("hosts");
        if hosts.is_empty() {
            hosts.push(o.text("host"));
        }
        let max_items_node = (o.uint("max_items_node") as usize).max(1);
        let mut pep_plugin = false;
        for p in o.list("plugins") {
            match p.as_str() {
                "flat" => {}
                "pep" => pep_plugin = true,
                other => warnings.push(format!(
                    "option plugins: plugin {other} is not supported; nodes behave as flat nodes"
                )),
            }
        }
        let mut defaults = Config::new(max_items_node);
        if let Some(v) = o.get("default_node_config") {
            match v.as_mapping() {
                Some(map) => {
                    for (k, v) in map {
                        let k = k.as_str().unwrap_or("?");
                        match yaml_values(v) {
                            Some(vals) => {
                                if let Err(e) = defaults.set(k, &vals, max_items_node) {
                                    warnings.push(format!(
                                        "option default_node_config: {}; using the default",
                                        e.text.unwrap_or_else(|| format!("bad value for {k}"))
                                    ));
                                }
                            }
                            None => warnings.push(format!(
                                "option default_node_config: bad value for {k}; using the default"
                            )),
                        }
                    }
                }
                None => warnings
                    .push("option default_node_config: expected a map of node options".into()),
            }
        }
        let mut forced = Vec::new();
        if let Some(v) = o.get("force_node_config") {
            match v.as_mapping() {
                Some(map) => {
                    for (k, v) in map {
                        let pattern = k.as_str().unwrap_or("");
                        let re = match regex::Regex::new(&format!("^(?:{pattern})$")) {
                            Ok(re) => re,
                            Err(e) => {
                                warnings.push(format!(
                                    "option force_node_config: {pattern:?} is not a regular expression ({e}); ignored"
                                ));
                                continue;
                            }
                        };
                        let mut opts = Vec::new();
                        for (ok, ov) in v.as_mapping().into_iter().flatten() {
                            let name = ok.as_str().unwrap_or("?").to_string();
                            let mut probe = Config::new(max_items_node);
                            match yaml_values(ov) {
                                Some(vals) if probe.set(&name, &vals, max_items_node).is_ok() => {
                                    opts.push((name, vals))
                                }
                                _ => warnings.push(format!(
                                    "option force_node_config: bad value for {name} of {pattern:?}; ignored"
                                )),
                            }
                        }
                        if v.as_mapping().is_none() {
                            warnings.push(format!(
                                "option force_node_config: {pattern:?} needs a map of node options"
                            ));
                        }
                        forced.push((re, opts));
                    }
                }
                None => warnings.push(
                    "option force_node_config: expected a map of node names to node options".into(),
                ),
            }
        }
        let ps = Pubsub {
            hosts,
            name: o.text("name"),
            access_createnode: o.text("access_createnode"),
            max_items_node,
            max_payload_size: (o.uint("max_payload_size") as usize).max(1),
            max_nodes_discoitems: o
                .count("max_nodes_discoitems")
                .map(|n| usize::try_from(n).unwrap_or(usize::MAX)),
            defaults,
            forced,
            pep_plugin,
        };
        warnings.extend(o.warnings);
        ps
    }

    /// Whether `who` may create nodes (`access_createnode`).
    fn may_create(&self, ctx: &dyn ServerContext, who: &Jid) -> bool {
        match self.access_createnode.as_str() {
            "all" => true,
            "none" => false,
            rule => match who.node() {
                Some(n) => ctx.access_allows(rule, Some((n.as_str(), who.domain().as_str())), None),
                None => false,
            },
        }
    }

    /// A new node with the service's defaults, owned by `creator`.
    fn new_node(&self, name: &str, creator: &str) -> Node {
        let mut config = self.defaults.clone();
        self.force(name, &mut config);
        Node::new(config, creator, crate::date::now_utc())
    }

    /// Apply `force_node_config` to a node's configuration.
    fn force(&self, name: &str, config: &mut Config) {
        for (re, opts) in &self.forced {
            if re.is_match(name) {
                for (k, v) in opts {
                    let _ = config.set(k, v, self.max_items_node);
                }
            }
        }
    }

    fn features() -> Vec<String> {
        let mut f: Vec<String> = [
            ns::PUBSUB,
            ns::DISCO_INFO,
            ns::DISCO_ITEMS,
            crate::mam::NS_RSM,
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        for x in [
            "access-authorize",
            "access-open",
            "access-presence",
            "access-roster",
            "access-whitelist",
            "auto-create",
            "config-node",
            "create-and-configure",
            "create-nodes",
            "delete-items",
            "delete-nodes",
            "instant-nodes",
            "item-ids",
            "manage-subscriptions",
            "member-affiliation",
            "meta-data",
            "modify-affiliations",
            "multi-items",
            "outcast-affiliation",
            "persistent-items",
            "publish",
            "publish-only-affiliation",
            "publish-options",
            "publisher-affiliation",
            "purge-nodes",
            "retract-items",
            "retrieve-affiliations",
            "retrieve-default",
            "retrieve-items",
            "retrieve-subscriptions",
            "subscribe",
            "subscription-options",
            "subscription-notifications",
            "last-published",
        ] {
            f.push(format!("{}#{x}", ns::PUBSUB));
        }
        f
    }
}

fn error_to(stanza: &Element, e: StanzaError) -> Option<Element> {
    if stanza.attr("type") == Some("error")
        || (stanza.name == "iq" && stanza.attr("type") == Some("result"))
    {
        return None;
    }
    Some(if stanza.name == "iq" {
        iq_error(stanza, &e)
    } else {
        error_reply(stanza, &e)
    })
}

impl Module for Pubsub {
    fn name(&self) -> &'static str {
        "mod_pubsub"
    }
    fn hooks(&self) -> Hooks {
        Hooks::PRESENCE_AVAILABLE
    }

    fn service_domains(&self, hosts: &[String]) -> Vec<(String, String)> {
        let mut v = Vec::new();
        for host in hosts {
            for t in &self.hosts {
                let domain = t.replace("@HOST@", host).to_lowercase();
                if !v.iter().any(|(d, _)| d == &domain) {
                    v.push((domain, host.clone()));
                }
            }
        }
        v
    }

    /// A local session's first available presence: the last item of each
    /// node configured `on_sub_and_presence` that its bare or full JID is
    /// subscribed to (XEP-0060 §6.1.7), to the session.
    fn presence_available(
        &self,
        ctx: &dyn ServerContext,
        jid: &FullJid,
        _presence: &Element,
        initial: bool,
    ) {
        if !initial {
            return;
        }
        let (full, bare) = (jid.to_string(), jid.to_bare().to_string());
        let domains: Vec<String> = self
            .service_domains(&ctx.hosts())
            .into_iter()
            .map(|(d, _)| d)
            .collect();
        let mut guard = state().lock().unwrap_or_else(|e| e.into_inner());
        for service in &domains {
            let Some(c) = Call::new(ctx, self, service) else {
                continue;
            };
            let svc = guard.entry(service.clone()).or_default();
            c.load(svc);
            for (name, node) in &svc.nodes {
                if node.config.send_last != node::SendLast::OnSubAndPresence {
                    continue;
                }
                let subscribed = [&full, &bare].iter().any(|j| {
                    node.subscriptions
                        .get(*j)
                        .is_some_and(|s| s.subscribed && s.deliver)
                });
                if subscribed {
                    items::send_last(&c, name, node, &full);
                }
            }
        }
    }

    fn handle_service_stanza(&self, ctx: &dyn ServerContext, stanza: &Element) -> Vec<Element> {
        let (Some(to), Some(from)) = (
            stanza.attr("to").and_then(|t| Jid::new(t).ok()),
            stanza.attr("from").and_then(|f| Jid::new(f).ok()),
        ) else {
            return Vec::new();
        };
        let service = to.domain().as_str().to_string();
        let mut out = Vec::new();
        if to.node().is_some() || to.resource().is_some() {
            out.extend(error_to(stanza, StanzaError::service_unavailable()));
            return out;
        }
        let Some(c) = Call::new(ctx, self, &service) else {
            return out;
        };
        let mut guard = state().lock().unwrap_or_else(|e| e.into_inner());
        let svc = guard.entry(service.clone()).or_default();
        c.load(svc);
        match (stanza.name.as_str(), stanza.attr("type").unwrap_or("")) {
            ("iq", kind @ ("get" | "set")) => {
                let mut after = Vec::new();
                let answer = match stanza.first_child() {
                    Some(p) => self.iq(&c, svc, stanza, p, &from, kind == "set", &mut after),
                    None => Err(StanzaError::bad_request()),
                };
                out.push(match answer {
                    Ok(payload) => iq_result(stanza, payload),
                    Err(e) => iq_error(stanza, &e),
                });
                out.extend(after);
            }
            ("message", t) if t != "error" => {
                if let Err(e) =
                    subscriptions::authorization_answer(&c, svc, stanza, &from, &mut out)
                {
                    out.extend(error_to(stanza, e));
                }
            }
            _ => {}
        }
        out
    }
}

impl Pubsub {
    /// One iq to the service.
    #[allow(clippy::too_many_arguments)]
    fn iq(
        &self,
        c: &Call<'_>,
        svc: &mut Service,
        stanza: &Element,
        payload: &Element,
        from: &Jid,
        is_set: bool,
        out: &mut Out,
    ) -> Result<Option<Element>, StanzaError> {
        let _ = stanza;
        if payload.is("query", ns::DISCO_INFO) && !is_set {
            return self.disco_info(svc, payload);
        }
        if payload.is("query", ns::DISCO_ITEMS) && !is_set {
            return self.disco_items(c, svc, payload, from);
        }
        if payload.is("ping", ns::PING) && !is_set {
            return Ok(None);
        }
        let owner_ns = payload.is("pubsub", ns::PUBSUB_OWNER);
        if !owner_ns && !payload.is("pubsub", ns::PUBSUB) {
            return Err(StanzaError::service_unavailable());
        }
        const OPS: &[&str] = &[
            "create",
            "publish",
            "subscribe",
            "unsubscribe",
            "options",
            "items",
            "retract",
            "subscriptions",
            "affiliations",
            "configure",
            "delete",
            "purge",
            "default",
        ];
        let op = payload
            .child_elements()
            .find(|e| OPS.contains(&e.name.as_str()))
            .ok_or_else(|| StanzaError::bad_request().with_text("no pubsub operation"))?;
        match (owner_ns, is_set, op.name.as_str()) {
            (false, true, "create") => self.create(c, svc, payload, op, from),
            (false, true, "publish") => items::publish(c, svc, payload, op, from),
            (false, true, "retract") => items::retract(c, svc, op, from),
            (false, false, "items") => items::items(c, svc, payload, op, from),
            (false, true, "subscribe") => subscriptions::subscribe(c, svc, payload, op, from, out),
            (false, true, "unsubscribe") => subscriptions::unsubscribe(c, svc, op, from),
            (false, set, "options") => subscriptions::options(c, svc, op, from, set),
            (false, false, "subscriptions") => subscriptions::own(svc, op, from),
            (false, false, "affiliations") => affiliations::own(svc, op, from),
            (false, false, "default") | (true, false, "default") => Ok(Some(
                Element::new("pubsub", ns::PUBSUB_OWNER).with_child(
                    Element::new("default", ns::PUBSUB_OWNER)
                        .with_child(self.defaults.to_form("form", self.max_items_node)),
                ),
            )),
            (true, set, "configure") => self.configure(c, svc, op, from, set),
            (true, true, "delete") => self.delete(c, svc, op, from),
            (true, true, "purge") => items::purge(c, svc, op, from),
            (true, set, "subscriptions") => subscriptions::manage(c, svc, op, from, set, out),
            (true, set, "affiliations") => affiliations::manage(c, svc, op, from, set),
            _ => Err(StanzaError::feature_not_implemented()),
        }
    }

    /// `<create/>` (§8.1), named or instant, with `<configure/>` beside it.
    fn create(
        &self,
        c: &Call<'_>,
        svc: &mut Service,
        pubsub: &Element,
        op: &Element,
        from: &Jid,
    ) -> Result<Option<Element>, StanzaError> {
        if !self.may_create(c.ctx, from) {
            return Err(StanzaError::forbidden().with_text("you may not create nodes here"));
        }
        let given = op.attr("node").filter(|n| !n.is_empty());
        let name = match given {
            Some(n) => {
                if svc.nodes.contains_key(n) {
                    return Err(StanzaError::conflict().with_text("the node exists"));
                }
                n.to_string()
            }
            None => loop {
                use rand::Rng;
                let n = format!("{:016x}", rand::thread_rng().gen::<u64>());
                if !svc.nodes.contains_key(&n) {
                    break n;
                }
            },
        };
        let mut node = self.new_node(&name, &from.to_bare().to_string());
        if let Some(x) = pubsub
            .child("configure", ns::PUBSUB)
            .and_then(|cf| cf.child("x", ns::DATA_FORMS))
        {
            apply_form(
                &mut node.config,
                &form_fields(x),
                NODE_CONFIG,
                self.max_items_node,
            )?;
            self.force(&name, &mut node.config);
        }
        c.save_node(&name, &node)?;
        svc.nodes.insert(name.clone(), node);
        Ok(given.is_none().then(|| {
            Element::new("pubsub", ns::PUBSUB)
                .with_child(Element::new("create", ns::PUBSUB).with_attr("node", name))
        }))
    }

    /// pubsub#owner `<configure/>` get or set (§8.2).
    fn configure(
        &self,
        c: &Call<'_>,
        svc: &mut Service,
        op: &Element,
        from: &Jid,
        is_set: bool,
    ) -> Result<Option<Element>, StanzaError> {
        let name = node_name(op)?;
        let node = svc
            .nodes
            .get_mut(name)
            .ok_or_else(StanzaError::item_not_found)?;
        if node.affiliation(bare_of(from.as_str())) != Affiliation::Owner {
            return Err(StanzaError::forbidden());
        }
        if !is_set {
            return Ok(Some(
                Element::new("pubsub", ns::PUBSUB_OWNER).with_child(
                    Element::new("configure", ns::PUBSUB_OWNER)
                        .with_attr("node", name)
                        .with_child(node.config.to_form("form", self.max_items_node)),
                ),
            ));
        }
        let x = op.child("x", ns::DATA_FORMS).ok_or_else(|| {
            StanzaError::bad_request().with_text("a configure set carries a form")
        })?;
        if x.attr("type") == Some("cancel") {
            return Ok(None);
        }
        let mut config = node.config.clone();
        apply_form(
            &mut config,
            &form_fields(x),
            NODE_CONFIG,
            self.max_items_node,
        )?;
        self.force(name, &mut config);
        let mut updated = node.clone();
        updated.config = config;
        c.save_node(name, &updated)?;
        node.config = updated.config;
        let mut gone = Vec::new();
        let removed = items::trim(c, name, node, &mut gone)?;
        if !gone.is_empty() {
            c.store().delete_many(&c.owner, &gone)?;
        }
        if !removed.is_empty() && node.config.notify_retract {
            let mut items = Element::new("items", ns::PUBSUB_EVENT).with_attr("node", name);
            for id in removed {
                items =
                    items.with_child(Element::new("retract", ns::PUBSUB_EVENT).with_attr("id", id));
            }
            items::notify(c, node, &event(items));
        }
        if node.config.notify_config {
            let mut conf = Element::new("configuration", ns::PUBSUB_EVENT).with_attr("node", name);
            if node.config.deliver_payloads {
                conf = conf.with_child(node.config.to_form("result", self.max_items_node));
            }
            items::notify(c, node, &event(conf));
        }
        Ok(None)
    }

    /// pubsub#owner `<delete/>` (§8.4).
    fn delete(
        &self,
        c: &Call<'_>,
        svc: &mut Service,
        op: &Element,
        from: &Jid,
    ) -> Result<Option<Element>, StanzaError> {
        let name = node_name(op)?;
        let node = svc
            .nodes
            .get(name)
            .ok_or_else(StanzaError::item_not_found)?;
        if node.affiliation(bare_of(from.as_str())) != Affiliation::Owner {
            return Err(StanzaError::forbidden());
        }
        c.delete_node_data(name)?;
        if node.config.notify_delete {
            let mut d = Element::new("delete", ns::PUBSUB_EVENT).with_attr("node", name);
            if let Some(uri) = op
                .child("redirect", ns::PUBSUB_OWNER)
                .and_then(|r| r.attr("uri"))
            {
                d = d.with_child(Element::new("redirect", ns::PUBSUB_EVENT).with_attr("uri", uri));
            }
            items::notify(c, node, &event(d));
        }
        svc.nodes.remove(name);
        Ok(None)
    }

    fn disco_info(&self, svc: &Service, q: &Element) -> Result<Option<Element>, StanzaError> {
        let Some(name) = q.attr("node") else {
            let ids = vec![Identity {
                category: "pubsub".into(),
                kind: "service".into(),
                name: Some(self.name.clone()),
            }];
            return Ok(Some(crate::disco::info(ids, Self::features())));
        };
        let node = svc
            .nodes
            .get(name)
            .ok_or_else(StanzaError::item_not_found)?;
        let ids = vec![Identity {
            category: "pubsub".into(),
            kind: "leaf".into(),
            name: (!node.config.title.is_empty()).then(|| node.config.title.clone()),
        }];
        let features = vec![ns::PUBSUB.to_string(), ns::DISCO_INFO.to_string()];
        let mut info = crate::disco::info(ids, features);
        info.set_attr("node", name);
        Ok(Some(info.with_child(node.meta_data())))
    }

    fn disco_items(
        &self,
        c: &Call<'_>,
        svc: &Service,
        q: &Element,
        from: &Jid,
    ) -> Result<Option<Element>, StanzaError> {
        let mut out = Element::new("query", ns::DISCO_ITEMS);
        match q.attr("node") {
            None => {
                let limit = self.max_nodes_discoitems.unwrap_or(usize::MAX);
                for (name, node) in svc.nodes.iter().take(limit) {
                    let mut item = Element::new("item", ns::DISCO_ITEMS)
                        .with_attr("jid", c.service)
                        .with_attr("node", name.as_str());
                    if !node.config.title.is_empty() {
                        item.set_attr("name", node.config.title.as_str());
                    }
                    out = out.with_child(item);
                }
            }
            Some(name) => {
                let node = svc
                    .nodes
                    .get(name)
                    .ok_or_else(StanzaError::item_not_found)?;
                access_check(c, node, from, true)?;
                out.set_attr("node", name);
                for item in items::disco_items(c, name)? {
                    out = out.with_child(item);
                }
            }
        }
        Ok(Some(out))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_service_domains_and_forced_config() {
        let opts: serde_yaml_ng::Value = serde_yaml_ng::from_str(
            "host: ps.@HOST@\nmax_items_node: 50\nplugins: [flat, pep, hometree]\n\
             default_node_config: {access_model: whitelist, max_items: 10, bogus: 1, notify_retract: maybe}\n\
             force_node_config: {'storage:bookmarks': {access_model: whitelist}, 'news.*': {max_items: 5}, '(': {}}\n",
        )
        .unwrap();
        let mut w = Vec::new();
        let ps = Pubsub::from_opts(&opts, &mut w);
        assert!(ps.pep_plugin);
        assert_eq!(ps.max_items_node, 50);
        assert_eq!(ps.defaults.access, node::Access::Whitelist);
        assert_eq!(ps.defaults.max_items, 10);
        // hometree, the bad notify_retract value, the bad regex.
        assert_eq!(w.len(), 3, "{w:?}");
        assert_eq!(
            ps.service_domains(&["a.org".into()]),
            vec![("ps.a.org".to_string(), "a.org".to_string())]
        );
        let n = ps.new_node("news/world", "a@a.org");
        assert_eq!(n.config.max_items, 5);
        assert_eq!(n.affiliation("a@a.org"), Affiliation::Owner);
        let b = ps.new_node("storage:bookmarks", "a@a.org");
        assert_eq!(b.config.max_items, 10);
    }
}
