//! XEP-0050 Ad-Hoc Commands (`mod_adhoc`) with the XEP-0133 Service
//! Administration set.
//!
//! The commands are a second front end to the `rookery ctl` registry: each
//! XEP-0133 form is turned into ctl command calls through
//! [`ServerContext::run_command`], so the XMPP and command-line paths share
//! one implementation. Who may run them comes from
//! [`ServerContext::may_run_command`] (the `configure` access rule, and
//! `announce` for announcements, as in ejabberd); disco#items on
//! `http://jabber.org/protocol/commands` lists only what the requester may
//! run (an empty list for ordinary users, which clients such as Pidgin ask
//! for at login).
//!
//! Every command has one form: `execute` returns it (with a session id),
//! `complete` (or `execute`/no action with a submitted form) runs it,
//! `cancel` ends the session. Sessions are remembered per requester for
//! [`SESSION_TTL`], at most [`MAX_SESSIONS`].

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use jid::{FullJid, Jid};

use crate::element::Element;
use crate::module::{Hooks, Identity, IqRequest, IqResult, Module, ServerContext};
use crate::ns;
use crate::stanza::{Condition, ErrorType, StanzaError};

/// `http://jabber.org/protocol/commands`.
pub const NS_COMMANDS: &str = "http://jabber.org/protocol/commands";
const NS_DATA: &str = "jabber:x:data";
const ADMIN: &str = "http://jabber.org/protocol/admin";
/// How long a command session stays open between its steps.
pub const SESSION_TTL: Duration = Duration::from_secs(600);
/// Open command sessions remembered at most (all requesters).
pub const MAX_SESSIONS: usize = 1000;

/// One XEP-0133 command: its node suffix (`add-user`), name, and fields
/// `(var, type, label, required)`.
struct AdminCommand {
    id: &'static str,
    name: &'static str,
    fields: &'static [(&'static str, &'static str, &'static str, bool)],
}

const COMMANDS: &[AdminCommand] = &[
    AdminCommand {
        id: "add-user",
        name: "Add a User",
        fields: &[
            (
                "accountjid",
                "jid-single",
                "The Jabber ID for the account to be added",
                true,
            ),
            (
                "password",
                "text-private",
                "The password for this account",
                true,
            ),
            ("password-verify", "text-private", "Retype password", true),
        ],
    },
    AdminCommand {
        id: "delete-user",
        name: "Delete a User",
        fields: &[(
            "accountjids",
            "jid-multi",
            "The Jabber ID(s) to delete",
            true,
        )],
    },
    AdminCommand {
        id: "change-user-password",
        name: "Change User Password",
        fields: &[
            (
                "accountjid",
                "jid-single",
                "The Jabber ID for this account",
                true,
            ),
            (
                "password",
                "text-private",
                "The password for this account",
                true,
            ),
        ],
    },
    AdminCommand {
        id: "disable-user",
        name: "Disable a User",
        fields: &[(
            "accountjids",
            "jid-multi",
            "The Jabber ID(s) to disable",
            true,
        )],
    },
    AdminCommand {
        id: "reenable-user",
        name: "Re-Enable a User",
        fields: &[(
            "accountjids",
            "jid-multi",
            "The Jabber ID(s) to re-enable",
            true,
        )],
    },
    AdminCommand {
        id: "end-user-session",
        name: "End User Session",
        fields: &[(
            "accountjids",
            "jid-multi",
            "The Jabber ID(s) for which to end sessions",
            true,
        )],
    },
    AdminCommand {
        id: "get-online-users-num",
        name: "Get Number of Online Users",
        fields: &[],
    },
    AdminCommand {
        id: "get-registered-users-num",
        name: "Get Number of Registered Users",
        fields: &[],
    },
    AdminCommand {
        id: "announce",
        name: "Send Announcement to Online Users",
        fields: &[
            ("subject", "text-single", "Subject", false),
            ("announcement", "text-multi", "Announcement", true),
        ],
    },
];

fn node_of(c: &AdminCommand) -> String {
    format!("{ADMIN}#{}", c.id)
}

fn find(node: &str) -> Option<&'static AdminCommand> {
    let id = node.strip_prefix(ADMIN)?.strip_prefix('#')?;
    COMMANDS.iter().find(|c| c.id == id)
}

/// The ctl registry name behind a command, for permission checks.
fn ctl_name(c: &AdminCommand) -> &'static str {
    match c.id {
        "add-user" => "register",
        "delete-user" => "unregister",
        "disable-user" => "ban_account",
        "reenable-user" => "unban_account",
        "change-user-password" => "change_password",
        "end-user-session" => "kick_user",
        "get-online-users-num" | "get-registered-users-num" => "stats_host",
        "announce" => "announce",
        _ => "help",
    }
}

/// `mod_adhoc`.
#[derive(Default)]
pub struct AdHoc {
    /// session id -> (requester, node, opened)
    sessions: Mutex<HashMap<String, (FullJid, String, Instant)>>,
}

fn command_error(condition: Condition, specific: Option<&'static str>, text: &str) -> StanzaError {
    let kind = match condition {
        Condition::Forbidden => ErrorType::Auth,
        Condition::ItemNotFound | Condition::NotAllowed => ErrorType::Cancel,
        _ => ErrorType::Modify,
    };
    let mut e = StanzaError::new(kind, condition);
    if !text.is_empty() {
        e = e.with_text(text);
    }
    if let Some(s) = specific {
        e = e.with_app(Element::new(s, NS_COMMANDS));
    }
    e
}

/// Values of a submitted form field.
fn values(form: &Element, var: &str) -> Vec<String> {
    form.child_elements()
        .filter(|f| f.name == "field" && f.attr("var") == Some(var))
        .flat_map(|f| {
            f.child_elements()
                .filter(|v| v.name == "value")
                .map(|v| v.text())
        })
        .collect()
}

fn value(form: &Element, var: &str) -> Option<String> {
    values(form, var).into_iter().next()
}

fn form_for(c: &AdminCommand) -> Element {
    let mut x = Element::new("x", NS_DATA)
        .with_attr("type", "form")
        .with_child(Element::new("title", NS_DATA).with_text(c.name))
        .with_child(
            Element::new("field", NS_DATA)
                .with_attr("type", "hidden")
                .with_attr("var", "FORM_TYPE")
                .with_child(Element::new("value", NS_DATA).with_text(ADMIN)),
        );
    for (var, kind, label, required) in c.fields {
        let mut f = Element::new("field", NS_DATA)
            .with_attr("type", *kind)
            .with_attr("var", *var)
            .with_attr("label", *label);
        if *required {
            f = f.with_child(Element::new("required", NS_DATA));
        }
        x = x.with_child(f);
    }
    x
}

fn result_form(var: &str, label: &str, value: &str) -> Element {
    Element::new("x", NS_DATA)
        .with_attr("type", "result")
        .with_child(
            Element::new("field", NS_DATA)
                .with_attr("type", "hidden")
                .with_attr("var", "FORM_TYPE")
                .with_child(Element::new("value", NS_DATA).with_text(ADMIN)),
        )
        .with_child(
            Element::new("field", NS_DATA)
                .with_attr("var", var)
                .with_attr("label", label)
                .with_child(Element::new("value", NS_DATA).with_text(value)),
        )
}

fn note(kind: &str, text: &str) -> Element {
    Element::new("note", NS_COMMANDS)
        .with_attr("type", kind)
        .with_text(text)
}

/// Split `user@host` (a bare account JID) for ctl arguments.
fn account_parts(text: &str) -> Result<(String, String), StanzaError> {
    let bad = || {
        command_error(
            Condition::BadRequest,
            Some("bad-payload"),
            &format!("'{text}' is not an account JID"),
        )
    };
    let j = Jid::new(text.trim()).map_err(|_| bad())?;
    let node = j.node().ok_or_else(bad)?;
    Ok((node.as_str().to_string(), j.domain().as_str().to_string()))
}

fn required(form: &Element, var: &str) -> Result<String, StanzaError> {
    value(form, var)
        .filter(|v| !v.trim().is_empty())
        .ok_or_else(|| {
            command_error(
                Condition::BadRequest,
                Some("bad-payload"),
                &format!("the field {var} is required"),
            )
        })
}

/// A failed ctl command as an iq error: its output becomes the text.
fn failed(out: &crate::module::CommandOutcome) -> StanzaError {
    let condition = if out.output.contains("already registered") {
        Condition::Conflict
    } else if out.output.contains("does not exist") || out.output.contains("No session") {
        Condition::ItemNotFound
    } else {
        Condition::NotAcceptable
    };
    let kind = if condition == Condition::NotAcceptable {
        ErrorType::Modify
    } else {
        ErrorType::Cancel
    };
    StanzaError::new(kind, condition).with_text(out.output.trim().to_string())
}

fn run(ctx: &dyn ServerContext, name: &str, args: &[&str]) -> Result<String, StanzaError> {
    let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    let out = ctx.run_command(name, &args);
    if out.code == 0 {
        Ok(out.output)
    } else {
        Err(failed(&out))
    }
}

impl AdHoc {
    fn may(&self, ctx: &dyn ServerContext, from: &FullJid, c: &AdminCommand) -> bool {
        ctx.may_run_command(&Jid::from(from.clone()), ctl_name(c))
    }

    fn open_session(&self, from: &FullJid, node: &str) -> String {
        let id = format!("{:016x}", rand_u64());
        let mut table = self.sessions.lock().unwrap_or_else(|e| e.into_inner());
        table.retain(|_, (_, _, t)| t.elapsed() < SESSION_TTL);
        if table.len() >= MAX_SESSIONS {
            // Drop the oldest to stay bounded.
            if let Some(oldest) = table
                .iter()
                .min_by_key(|(_, (_, _, t))| *t)
                .map(|(k, _)| k.clone())
            {
                table.remove(&oldest);
            }
        }
        table.insert(id.clone(), (from.clone(), node.to_string(), Instant::now()));
        id
    }

    /// Take (end) a session; whether it was the requester's, for this node,
    /// and still open.
    fn take_session(&self, id: &str, from: &FullJid, node: &str) -> bool {
        let mut table = self.sessions.lock().unwrap_or_else(|e| e.into_inner());
        match table.remove(id) {
            Some((who, n, t)) => who == *from && n == node && t.elapsed() < SESSION_TTL,
            None => false,
        }
    }

    /// Run a submitted command; returns the children of the completed
    /// `<command/>` (notes, result form).
    fn complete(
        &self,
        ctx: &dyn ServerContext,
        c: &AdminCommand,
        host: &str,
        form: &Element,
    ) -> Result<Vec<Element>, StanzaError> {
        match c.id {
            "add-user" => {
                let (user, h) = account_parts(&required(form, "accountjid")?)?;
                let pw = required(form, "password")?;
                if let Some(verify) = value(form, "password-verify") {
                    if verify != pw {
                        return Err(command_error(
                            Condition::BadRequest,
                            Some("bad-payload"),
                            "the passwords do not match",
                        ));
                    }
                }
                run(ctx, "register", &[&user, &h, &pw])?;
                Ok(vec![note("info", &format!("User {user}@{h} added"))])
            }
            "delete-user" => {
                let jids = values(form, "accountjids");
                if jids.is_empty() {
                    return Err(required(form, "accountjids").unwrap_err());
                }
                let mut parts = Vec::new();
                for j in &jids {
                    parts.push(account_parts(j)?);
                }
                for (user, h) in &parts {
                    run(ctx, "unregister", &[user, h])?;
                }
                Ok(vec![note(
                    "info",
                    &format!("Deleted {} account(s)", parts.len()),
                )])
            }
            "disable-user" | "reenable-user" => {
                let jids = values(form, "accountjids");
                if jids.is_empty() {
                    return Err(required(form, "accountjids").unwrap_err());
                }
                let mut parts = Vec::new();
                for j in &jids {
                    parts.push(account_parts(j)?);
                }
                let disable = c.id == "disable-user";
                for (user, h) in &parts {
                    if disable {
                        run(
                            ctx,
                            "ban_account",
                            &[user, h, "Disabled by an administrator (XEP-0133)"],
                        )?;
                    } else {
                        run(ctx, "unban_account", &[user, h])?;
                    }
                }
                let what = if disable { "Disabled" } else { "Re-enabled" };
                Ok(vec![note(
                    "info",
                    &format!("{what} {} account(s)", parts.len()),
                )])
            }
            "change-user-password" => {
                let (user, h) = account_parts(&required(form, "accountjid")?)?;
                let pw = required(form, "password")?;
                run(ctx, "change_password", &[&user, &h, &pw])?;
                Ok(vec![note(
                    "info",
                    &format!("Password of {user}@{h} changed"),
                )])
            }
            "end-user-session" => {
                let jids = values(form, "accountjids");
                if jids.is_empty() {
                    return Err(required(form, "accountjids").unwrap_err());
                }
                let mut ended = 0u64;
                for text in &jids {
                    let j = Jid::new(text.trim()).map_err(|_| {
                        command_error(
                            Condition::BadRequest,
                            Some("bad-payload"),
                            &format!("'{text}' is not a JID"),
                        )
                    })?;
                    let (user, h) = account_parts(text)?;
                    match j.resource() {
                        Some(r) => {
                            run(
                                ctx,
                                "kick_session",
                                &[&user, &h, r.as_str(), "Ended by an administrator"],
                            )?;
                            ended += 1;
                        }
                        None => {
                            let n = run(ctx, "kick_user", &[&user, &h])?;
                            ended += n.trim().parse::<u64>().unwrap_or(0);
                        }
                    }
                }
                Ok(vec![note("info", &format!("Ended {ended} session(s)"))])
            }
            "get-online-users-num" => {
                let n = run(ctx, "stats_host", &["onlineusers", host])?;
                Ok(vec![result_form(
                    "onlineusersnum",
                    "The number of online users",
                    n.trim(),
                )])
            }
            "get-registered-users-num" => {
                let n = run(ctx, "stats_host", &["registeredusers", host])?;
                Ok(vec![result_form(
                    "registeredusersnum",
                    "The number of registered users",
                    n.trim(),
                )])
            }
            "announce" => {
                let body = values(form, "announcement").join("\n");
                if body.trim().is_empty() {
                    return Err(required(form, "announcement").unwrap_err());
                }
                let subject = value(form, "subject").unwrap_or_default();
                let online = run(ctx, "connected_users", &[])?;
                let suffix = format!("@{host}/");
                let mut sent = 0;
                for full in online.lines().filter(|l| l.contains(&suffix)) {
                    run(
                        ctx,
                        "send_message",
                        &["headline", host, full, &subject, &body],
                    )?;
                    sent += 1;
                }
                Ok(vec![note(
                    "info",
                    &format!("Announcement sent to {sent} session(s)"),
                )])
            }
            _ => Err(StanzaError::item_not_found()),
        }
    }
}

fn rand_u64() -> u64 {
    use std::collections::hash_map::RandomState;
    use std::hash::{BuildHasher, Hasher};
    let mut h = RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0),
    );
    h.finish()
}

impl Module for AdHoc {
    fn name(&self) -> &'static str {
        "mod_adhoc"
    }
    fn hooks(&self) -> Hooks {
        Hooks::NONE
    }
    fn disco_features(&self) -> Vec<&'static str> {
        vec![NS_COMMANDS]
    }
    fn server_iq_namespaces(&self) -> Vec<&'static str> {
        vec![NS_COMMANDS]
    }

    fn disco_node_items(
        &self,
        ctx: &dyn ServerContext,
        from: &FullJid,
        node: &str,
    ) -> Option<Vec<Element>> {
        if node != NS_COMMANDS {
            return None;
        }
        let host = from.domain().as_str().to_string();
        let mut items: Vec<Element> = COMMANDS
            .iter()
            .filter(|c| self.may(ctx, from, c))
            .map(|c| {
                Element::new("item", ns::DISCO_ITEMS)
                    .with_attr("jid", host.clone())
                    .with_attr("node", node_of(c))
                    .with_attr("name", c.name)
            })
            .collect();
        // Other modules' commands (mod_invites' XEP-0401 nodes).
        items.extend(ctx.module_adhoc_nodes(from).into_iter().map(|(n, name)| {
            Element::new("item", ns::DISCO_ITEMS)
                .with_attr("jid", host.clone())
                .with_attr("node", n)
                .with_attr("name", name)
        }));
        Some(items)
    }

    fn disco_node_info(
        &self,
        ctx: &dyn ServerContext,
        from: &FullJid,
        node: &str,
    ) -> Option<(Vec<Identity>, Vec<String>)> {
        if node == NS_COMMANDS {
            return Some((
                vec![Identity {
                    category: "automation".into(),
                    kind: "command-list".into(),
                    name: Some("Commands".into()),
                }],
                vec![NS_COMMANDS.to_string()],
            ));
        }
        let c = find(node)?;
        if !self.may(ctx, from, c) {
            return None;
        }
        Some((
            vec![Identity {
                category: "automation".into(),
                kind: "command-node".into(),
                name: Some(c.name.into()),
            }],
            vec![NS_COMMANDS.to_string(), NS_DATA.to_string()],
        ))
    }

    fn handle_server_iq(&self, ctx: &dyn ServerContext, req: &IqRequest<'_>) -> IqResult {
        if !req.is_set || req.payload.name != "command" {
            return Err(StanzaError::bad_request());
        }
        let node = req.payload.attr("node").unwrap_or("");
        let Some(c) = find(node) else {
            return ctx
                .module_adhoc(req)
                .unwrap_or_else(|| Err(StanzaError::item_not_found()));
        };
        if !self.may(ctx, req.from, c) {
            return Err(StanzaError::forbidden().with_text("You may not run this command"));
        }
        let host = req.to.domain().as_str().to_string();
        let action = req.payload.attr("action").unwrap_or("execute");
        let form = req
            .payload
            .child("x", NS_DATA)
            .filter(|x| x.attr("type") == Some("submit"));
        let session = req.payload.attr("sessionid");
        let reply = |status: &str, sid: &str| {
            Element::new("command", NS_COMMANDS)
                .with_attr("node", node)
                .with_attr("sessionid", sid)
                .with_attr("status", status)
        };
        match (action, session, form) {
            ("cancel", Some(sid), _) => {
                self.take_session(sid, req.from, node);
                Ok(Some(reply("canceled", sid)))
            }
            ("cancel", None, _) => Err(command_error(
                Condition::BadRequest,
                Some("bad-sessionid"),
                "no session to cancel",
            )),
            ("execute" | "complete" | "next", _, Some(form)) => {
                let sid = match session {
                    Some(sid) => {
                        if !self.take_session(sid, req.from, node) {
                            return Err(command_error(
                                Condition::BadRequest,
                                Some("bad-sessionid"),
                                "unknown or expired session",
                            ));
                        }
                        sid.to_string()
                    }
                    // A form submitted with the first request (one step).
                    None => format!("{:016x}", rand_u64()),
                };
                let children = self.complete(ctx, c, &host, form)?;
                let mut done = reply("completed", &sid);
                for child in children {
                    done = done.with_child(child);
                }
                Ok(Some(done))
            }
            ("execute", None, None) if c.fields.is_empty() => {
                // Nothing to ask: run at once.
                let sid = format!("{:016x}", rand_u64());
                let empty = Element::new("x", NS_DATA).with_attr("type", "submit");
                let children = self.complete(ctx, c, &host, &empty)?;
                let mut done = reply("completed", &sid);
                for child in children {
                    done = done.with_child(child);
                }
                Ok(Some(done))
            }
            ("execute", None, None) => {
                let sid = self.open_session(req.from, node);
                Ok(Some(
                    reply("executing", &sid)
                        .with_child(
                            Element::new("actions", NS_COMMANDS)
                                .with_attr("execute", "complete")
                                .with_child(Element::new("complete", NS_COMMANDS)),
                        )
                        .with_child(form_for(c)),
                ))
            }
            ("execute" | "complete" | "next", Some(_), None) => Err(command_error(
                Condition::BadRequest,
                Some("bad-payload"),
                "submit the command's form",
            )),
            _ => Err(command_error(
                Condition::BadRequest,
                Some("malformed-action"),
                "unknown action",
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nodes_and_forms() {
        for c in COMMANDS {
            assert_eq!(find(&node_of(c)).map(|f| f.id), Some(c.id));
        }
        assert!(find("http://jabber.org/protocol/admin#nope").is_none());
        assert!(find("add-user").is_none());
        let f = form_for(&COMMANDS[0]);
        let vars: Vec<_> = f.child_elements().filter_map(|e| e.attr("var")).collect();
        assert_eq!(
            vars,
            ["FORM_TYPE", "accountjid", "password", "password-verify"]
        );
    }

    #[test]
    fn form_values() {
        let form = Element::new("x", NS_DATA)
            .with_attr("type", "submit")
            .with_child(
                Element::new("field", NS_DATA)
                    .with_attr("var", "accountjids")
                    .with_child(Element::new("value", NS_DATA).with_text("a@x"))
                    .with_child(Element::new("value", NS_DATA).with_text("b@x")),
            );
        assert_eq!(values(&form, "accountjids"), ["a@x", "b@x"]);
        assert!(required(&form, "password").is_err());
        assert_eq!(account_parts("a@x").unwrap(), ("a".into(), "x".into()));
        assert!(account_parts("x").is_err());
    }
}
