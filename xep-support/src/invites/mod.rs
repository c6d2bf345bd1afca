//! `mod_invites` (ejabberd 26.01's name and options): invitations instead
//! of open registration.
//!
//! - XEP-0445 pre-authenticated in-band registration: the stream feature
//!   `<register xmlns='urn:xmpp:ibr-token:0'/>`; before authentication a
//!   client sends `<preauth xmlns='urn:xmpp:pars:0' token='…'/>`, which is
//!   checked and remembered for the stream ([`PreAuthIq::preauth`]); the
//!   `jabber:iq:register` set that follows (handled by `mod_register`)
//!   redeems it through [`redeem_registration`], whatever `ip_access` and
//!   `allow_modules` say about open registration.
//! - XEP-0379 pre-authenticated roster subscription: a `subscribe`
//!   presence carrying `<preauth/>` with a valid invitation of the account
//!   it is addressed to makes the two mutual contacts (a local subscriber)
//!   or pre-approves the request (a remote one) — [`Module::filter_inbound`].
//! - XEP-0401 ad-hoc commands `urn:xmpp:invite#invite` (any local user: a
//!   contact invitation, which also creates an account when
//!   `access_create_account` allows the user) and
//!   `urn:xmpp:invite#create-account` (users `access_create_account`
//!   allows; at most `max_invites` each, admins exempt), through
//!   `mod_adhoc` ([`Module::adhoc_nodes`]).
//! - In-band use needs `mod_register` (it handles the registration itself,
//!   with `mod_invites` in its `allow_modules`); the web form does not.
//! - The landing page and web form are served by the server's HTTP
//!   listener (`src/http/invites.rs`) with [`Invites::landing_url`].
//!
//! Tokens, their storage and their atomic redemption are in [`token`].

pub mod token;

use jid::{BareJid, FullJid, Jid};

use crate::element::Element;
use crate::module::{
    AccountError, Globals, Hooks, IqRequest, IqResult, Module, PreAuthIq, ServerContext, Verdict,
};
use crate::options::{Kind as OptKind, ModuleSpec, OptSpec};
use crate::opts::Opts;
use crate::stanza::{Condition, ErrorType, StanzaError};
use token::{Invalid, Invite, Kind, RedeemError};

/// XEP-0379/XEP-0445 `<preauth/>`.
pub const NS_PARS: &str = "urn:xmpp:pars:0";
/// XEP-0445 stream feature.
pub const NS_IBR_TOKEN: &str = "urn:xmpp:ibr-token:0";
/// XEP-0401 ad-hoc node: a contact invitation.
pub const NODE_INVITE: &str = "urn:xmpp:invite#invite";
/// XEP-0401 ad-hoc node: an account invitation.
pub const NODE_CREATE_ACCOUNT: &str = "urn:xmpp:invite#create-account";
const NS_COMMANDS: &str = "http://jabber.org/protocol/commands";
const NS_DATA: &str = "jabber:x:data";

/// The options of `mod_invites` (ejabberd's).
pub const SPEC: ModuleSpec = ModuleSpec::module(
    "mod_invites",
    &[
        OptSpec::honoured(
            "access_create_account",
            OptKind::AccessRule,
            "none",
            "who may create account invitations (admins always may)",
        ),
        OptSpec::honoured(
            "max_invites",
            OptKind::Count,
            "infinity",
            "account invitations one user may create (admins exempt)",
        ),
        OptSpec::honoured(
            "token_expire_seconds",
            OptKind::Int {
                min: 1,
                max: u32::MAX as u64,
            },
            "432000",
            "how long an invitation is valid (five days)",
        ),
        OptSpec::honoured(
            "landing_page",
            OptKind::Text,
            "none",
            "`none`, `auto` (the built-in page of an ejabberd_http listener with `/invites: mod_invites`) or a URL template with {{ host }}, {{ invite.token }}, {{ invite.uri }}",
        ),
        OptSpec::honoured(
            "site_name",
            OptKind::Text,
            "",
            "the name the landing page shows (default: the host)",
        ),
        OptSpec::ignored("templates_dir", OptKind::Any, "custom page templates"),
    ],
    true,
);

/// `mod_invites`.
pub struct Invites {
    access_create_account: String,
    max_invites: Option<u64>,
    /// Seconds an invitation is valid.
    pub expire_secs: u64,
    landing_page: String,
    site_name: Option<String>,
    /// The built-in landing page's base URL (`https://@HOST@:PORT/invites`).
    auto_url: Option<String>,
}

impl Invites {
    /// Build from the module's options.
    pub fn new(options: &serde_yaml_ng::Value, globals: &Globals) -> (Invites, Vec<String>) {
        let mut o = Opts::new(options, &SPEC);
        let mut warnings = Vec::new();
        let landing_page = o.text("landing_page");
        let auto_url = globals.invites_url.clone();
        if landing_page == "auto" && auto_url.is_none() {
            warnings.push("landing_page: auto needs an ejabberd_http listener with a `mod_invites` request handler (e.g. /invites: mod_invites); no landing page is given".to_string());
        }
        let m = Invites {
            access_create_account: o.text("access_create_account"),
            max_invites: o.count("max_invites"),
            expire_secs: o.uint("token_expire_seconds").max(1),
            landing_page,
            site_name: o.string("site_name").filter(|s| !s.is_empty()),
            auto_url,
        };
        warnings.extend(o.warnings);
        (m, warnings)
    }

    /// The name the landing page shows for `host`.
    pub fn site_name(&self, host: &str) -> String {
        self.site_name.clone().unwrap_or_else(|| host.to_string())
    }

    /// The landing page of an invitation, if one is configured.
    pub fn landing_url(&self, invite: &Invite, token: &str) -> Option<String> {
        match self.landing_page.as_str() {
            "" | "none" => None,
            "auto" => self
                .auto_url
                .as_ref()
                .map(|base| format!("{}/{token}", base.replace("@HOST@", &invite.host))),
            template => Some(
                template
                    .replace("{{ host }}", &invite.host)
                    .replace("{{ invite.token }}", token)
                    .replace("{{ invite.uri }}", &invite.uri(token))
                    .replace(
                        "{{ invite.uri|strip_protocol }}",
                        invite.uri(token).trim_start_matches("xmpp:"),
                    ),
            ),
        }
    }

    fn is_admin(ctx: &dyn ServerContext, user: &str, host: &str) -> bool {
        ctx.acl_matches("admin", Some((user, host)), None)
    }

    /// Whether `user@host` may create account invitations.
    pub fn may_create_accounts(&self, ctx: &dyn ServerContext, user: &str, host: &str) -> bool {
        Self::is_admin(ctx, user, host)
            || (self.access_create_account != "none"
                && ctx.access_allows(&self.access_create_account, Some((user, host)), None))
    }

    /// Whether `user@host` is under `max_invites`.
    fn under_max(
        &self,
        ctx: &dyn ServerContext,
        user: &str,
        host: &str,
    ) -> Result<bool, StanzaError> {
        let Some(max) = self.max_invites else {
            return Ok(true);
        };
        if Self::is_admin(ctx, user, host) {
            return Ok(true);
        }
        let made = token::account_invites_of(ctx.store(token::MODULE), host, user)?;
        Ok((made as u64) < max)
    }

    fn result_form(&self, invite: &Invite, token: &str) -> Element {
        let field = |var: &str, label: &str, value: String| {
            Element::new("field", NS_DATA)
                .with_attr("var", var)
                .with_attr("label", label)
                .with_attr("type", "text-single")
                .with_child(Element::new("value", NS_DATA).with_text(value))
        };
        let mut x = Element::new("x", NS_DATA)
            .with_attr("type", "result")
            .with_child(Element::new("title", NS_DATA).with_text("New invitation"))
            .with_child(field("uri", "Invitation URI", invite.uri(token)));
        if let Some(url) = self.landing_url(invite, token) {
            x = x.with_child(field("landing-url", "Invitation web page", url));
        }
        x.with_child(field(
            "expire",
            "Valid until",
            crate::date::xep0082(invite.expires as i64, 0),
        ))
    }

    fn create_account_form() -> Element {
        Element::new("x", NS_DATA)
            .with_attr("type", "form")
            .with_child(Element::new("title", NS_DATA).with_text("Account invitation"))
            .with_child(
                Element::new("field", NS_DATA)
                    .with_attr("var", "username")
                    .with_attr("type", "text-single")
                    .with_attr("label", "User name (optional)"),
            )
            .with_child(
                Element::new("field", NS_DATA)
                    .with_attr("var", "roster-subscription")
                    .with_attr("type", "boolean")
                    .with_attr("label", "Add me as a contact of the new account"),
            )
    }
}

fn form_value(form: &Element, var: &str) -> Option<String> {
    form.child_elements()
        .find(|f| f.name == "field" && f.attr("var") == Some(var))
        .and_then(|f| f.child("value", NS_DATA))
        .map(|v| v.text().trim().to_string())
}

/// The stanza error for an unusable token.
pub fn invalid_error(why: Invalid) -> StanzaError {
    match why {
        Invalid::Malformed => StanzaError::bad_request().with_text(why.text()),
        Invalid::Store => StanzaError::internal_server_error(),
        _ => StanzaError::item_not_found().with_text(why.text()),
    }
}

fn account_error(e: AccountError) -> StanzaError {
    e.stanza_error()
}

/// Redeem `token` to register `user@host` with `password` (or, for a
/// reset link, to set the password of its account): the one path IBR and
/// the web form share. Returns the account's localpart.
pub fn redeem_registration(
    ctx: &dyn ServerContext,
    host: &str,
    token: &str,
    user: &str,
    password: &str,
) -> Result<String, StanzaError> {
    let user = jid::NodePart::new(user.trim())
        .map_err(|_| {
            StanzaError::new(ErrorType::Modify, Condition::JidMalformed)
                .with_text("This user name is not allowed in an address")
        })?
        .as_str()
        .to_string();
    if password.is_empty() {
        return Err(
            StanzaError::new(ErrorType::Modify, Condition::NotAcceptable)
                .with_text("The password must not be empty"),
        );
    }
    let store = ctx.store(token::MODULE);
    let redeemed = token::redeem(
        store,
        host,
        token,
        |_: &Invite| format!("{user}@{host}"),
        |invite: &Invite| {
            if let Some(account) = &invite.account {
                if *account != user {
                    return Err(StanzaError::not_allowed()
                        .with_text(format!("This invitation is for the user name {account}")));
                }
            }
            match invite.kind {
                Kind::Reset => ctx
                    .change_password(&user, host, password)
                    .map_err(account_error),
                Kind::Register => ctx
                    .create_account(&user, host, password)
                    .map_err(account_error),
                Kind::Roster => Err(StanzaError::not_allowed()
                    .with_text("This invitation adds a contact; it does not create accounts")),
            }
            .map(|()| invite.clone())
        },
    );
    let invite = match redeemed {
        Ok(invite) => invite,
        Err(RedeemError::Invalid(why)) => return Err(invalid_error(why)),
        Err(RedeemError::Action(e)) => return Err(e),
    };
    // Mutual contacts with the inviter (XEP-0379 via XEP-0401's ibr=y).
    if invite.kind == Kind::Register && invite.roster {
        let new = BareJid::new(&format!("{user}@{host}"));
        let inviter = invite
            .inviter
            .as_ref()
            .and_then(|i| BareJid::new(&format!("{i}@{host}")).ok());
        if let (Some(inviter), Ok(new)) = (inviter, new) {
            link_mutual(ctx, &inviter, &new);
        }
    }
    match invite.kind {
        Kind::Reset => tracing::info!("{user}@{host} set a new password with a reset link"),
        _ => tracing::info!("{user}@{host} registered with an invitation"),
    }
    Ok(user)
}

/// Make `a` and `b` (both local accounts) mutual contacts, and exchange
/// their current presence by probes.
fn link_mutual(ctx: &dyn ServerContext, a: &BareJid, b: &BareJid) {
    for (owner, contact) in [(a, b), (b, a)] {
        if let Err(e) = ctx.roster_invite_link(owner, contact, true) {
            tracing::error!("invitation: could not add {contact} to {owner}'s roster: {e:?}");
        }
    }
    for (from, to) in [(a, b), (b, a)] {
        ctx.route(
            Element::new("presence", crate::ns::CLIENT)
                .with_attr("type", "probe")
                .with_attr("from", from.to_string())
                .with_attr("to", to.to_string()),
        );
    }
}

impl Module for Invites {
    fn name(&self) -> &'static str {
        "mod_invites"
    }
    fn hooks(&self) -> Hooks {
        Hooks::FILTER_INBOUND
    }

    fn pre_auth_iq_namespaces(&self) -> Vec<&'static str> {
        vec![NS_PARS]
    }

    fn pre_auth_stream_features(
        &self,
        _ctx: &dyn ServerContext,
        _host: &str,
        _ip: std::net::IpAddr,
    ) -> Vec<Element> {
        vec![Element::new("register", NS_IBR_TOKEN)]
    }

    fn handle_pre_auth_iq(&self, ctx: &dyn ServerContext, req: &PreAuthIq<'_>) -> IqResult {
        if !req.is_set || req.payload.name != "preauth" {
            return Err(StanzaError::bad_request());
        }
        let token = req.payload.attr("token").unwrap_or("");
        let invite = token::check(ctx.store(token::MODULE), req.host, token).map_err(|why| {
            tracing::info!(ip = %req.ip, "pre-authentication token refused: {}", why.text());
            invalid_error(why)
        })?;
        if invite.kind == Kind::Roster {
            return Err(invalid_error(Invalid::Unknown)
                .with_text("This invitation adds a contact; it does not create accounts"));
        }
        *req.preauth.lock().unwrap_or_else(|e| e.into_inner()) = Some(token.to_string());
        Ok(None)
    }

    fn filter_inbound(
        &self,
        ctx: &dyn ServerContext,
        account: &BareJid,
        from: &Jid,
        stanza: &Element,
    ) -> Verdict {
        if stanza.name != "presence" || stanza.attr("type") != Some("subscribe") {
            return Verdict::Pass;
        }
        let Some(token) = stanza
            .child("preauth", NS_PARS)
            .and_then(|p| p.attr("token"))
        else {
            return Verdict::Pass;
        };
        let host = account.domain().as_str();
        let Some(owner) = account.node().map(|n| n.as_str().to_string()) else {
            return Verdict::Pass;
        };
        let contact = from.to_bare();
        let local = ctx.account_exists(&contact);
        let result = token::redeem(
            ctx.store(token::MODULE),
            host,
            token,
            |_: &()| contact.to_string(),
            |invite: &Invite| {
                let ours = invite.inviter.as_deref() == Some(owner.as_str())
                    && (invite.kind == Kind::Roster || invite.roster);
                if ours {
                    Ok(())
                } else {
                    Err(())
                }
            },
        );
        match result {
            Ok(()) if local => {
                link_mutual(ctx, account, &contact);
                tracing::info!("{contact} and {account} are contacts through an invitation");
                Verdict::Drop
            }
            Ok(()) => {
                // A remote contact: pre-approve, and let RFC 6121 answer.
                if let Err(e) = ctx.roster_invite_link(account, &contact, false) {
                    tracing::error!("invitation: pre-approving {contact} for {account}: {e:?}");
                }
                Verdict::Pass
            }
            Err(_) => {
                tracing::info!(
                    "{contact} sent {account} a subscription with an unusable invitation"
                );
                Verdict::Pass
            }
        }
    }

    fn adhoc_nodes(
        &self,
        ctx: &dyn ServerContext,
        from: &FullJid,
    ) -> Vec<(&'static str, &'static str)> {
        let host = from.domain().as_str();
        let Some(user) = from.node() else {
            return Vec::new();
        };
        if !ctx.hosts().iter().any(|h| h == host) {
            return Vec::new();
        }
        let mut nodes = vec![(NODE_INVITE, "Invite a contact")];
        if self.may_create_accounts(ctx, user.as_str(), host) {
            nodes.push((NODE_CREATE_ACCOUNT, "Create an account invitation"));
        }
        nodes
    }

    fn as_any(&self) -> Option<&dyn std::any::Any> {
        Some(self)
    }

    fn disco_node_info(
        &self,
        ctx: &dyn ServerContext,
        from: &FullJid,
        node: &str,
    ) -> Option<(Vec<crate::module::Identity>, Vec<String>)> {
        let (_, name) = self
            .adhoc_nodes(ctx, from)
            .into_iter()
            .find(|(n, _)| *n == node)?;
        Some((
            vec![crate::module::Identity {
                category: "automation".into(),
                kind: "command-node".into(),
                name: Some(name.to_string()),
            }],
            vec![NS_COMMANDS.to_string(), NS_DATA.to_string()],
        ))
    }

    fn adhoc_execute(&self, ctx: &dyn ServerContext, req: &IqRequest<'_>) -> Option<IqResult> {
        let node = req.payload.attr("node")?;
        if node != NODE_INVITE && node != NODE_CREATE_ACCOUNT {
            return None;
        }
        Some(self.adhoc(ctx, req, node))
    }
}

impl Invites {
    fn adhoc(&self, ctx: &dyn ServerContext, req: &IqRequest<'_>, node: &str) -> IqResult {
        let Some(user) = req.from.node().map(|n| n.as_str().to_string()) else {
            return Err(StanzaError::forbidden());
        };
        let host = req.from.domain().as_str().to_string();
        if !ctx.hosts().contains(&host) || req.to.domain().as_str() != host {
            return Err(
                StanzaError::forbidden().with_text("Invitations are for this server's own users")
            );
        }
        let action = req.payload.attr("action").unwrap_or("execute");
        let sid = req
            .payload
            .attr("sessionid")
            .map(str::to_string)
            .unwrap_or_else(|| token::new_token()[..16].to_string());
        let reply = |status: &str, child: Element| {
            Element::new("command", NS_COMMANDS)
                .with_attr("node", node)
                .with_attr("sessionid", sid.clone())
                .with_attr("status", status)
                .with_child(child)
        };
        if action == "cancel" {
            return Ok(Some(
                Element::new("command", NS_COMMANDS)
                    .with_attr("node", node)
                    .with_attr("sessionid", sid.clone())
                    .with_attr("status", "canceled"),
            ));
        }
        let may_create = self.may_create_accounts(ctx, &user, &host);
        let mut invite;
        if node == NODE_INVITE {
            // A contact invitation; it also creates an account when the
            // user may invite new accounts and is under max_invites.
            let accounts = may_create && self.under_max(ctx, &user, &host)?;
            invite = Invite::new(
                if accounts {
                    Kind::Register
                } else {
                    Kind::Roster
                },
                &host,
                self.expire_secs,
                1,
            );
            invite.roster = true;
        } else {
            if !may_create {
                return Err(StanzaError::forbidden()
                    .with_text("You are not allowed to create account invitations"));
            }
            let form = req
                .payload
                .child("x", NS_DATA)
                .filter(|x| x.attr("type") == Some("submit"));
            let Some(form) = form else {
                let mut cmd = reply("executing", Self::create_account_form());
                cmd = cmd.with_child(
                    Element::new("actions", NS_COMMANDS)
                        .with_attr("execute", "complete")
                        .with_child(Element::new("complete", NS_COMMANDS)),
                );
                return Ok(Some(cmd));
            };
            if !self.under_max(ctx, &user, &host)? {
                return Err(
                    StanzaError::new(ErrorType::Cancel, Condition::PolicyViolation).with_text(
                        "You have created as many account invitations as max_invites allows",
                    ),
                );
            }
            invite = Invite::new(Kind::Register, &host, self.expire_secs, 1);
            let wanted = form_value(form, "username").unwrap_or_default();
            if !wanted.is_empty() {
                let name = jid::NodePart::new(&wanted).map_err(|_| {
                    StanzaError::new(ErrorType::Modify, Condition::JidMalformed)
                        .with_text("This user name is not allowed in an address")
                })?;
                let bare = BareJid::new(&format!("{}@{host}", name.as_str()))
                    .map_err(|_| StanzaError::bad_request())?;
                if ctx.account_exists(&bare) {
                    return Err(StanzaError::new(ErrorType::Cancel, Condition::Conflict)
                        .with_text("This user name is already taken"));
                }
                invite.account = Some(name.as_str().to_string());
            }
            invite.roster = matches!(
                form_value(form, "roster-subscription").as_deref(),
                Some("1" | "true")
            );
        }
        invite.inviter = Some(user.clone());
        let token = token::create(ctx.store(token::MODULE), &invite)?;
        tracing::info!("{user}@{host} created an invitation ({node})");
        Ok(Some(reply("completed", self.result_form(&invite, &token))))
    }
}
