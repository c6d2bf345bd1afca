//! XEP-0227 portable import/export (`export_piefxis DIR`,
//! `import_piefxis FILE`), for what Rookery stores: accounts (SCRAM
//! credentials, or a plaintext `password` turned into SCRAM on import),
//! rosters and offline messages.
//!
//! Export writes `DIR/<host>.xml` per host, with both SCRAM secrets
//! (`urn:xmpp:pie:0#scram`, SCRAM-SHA-1 and SCRAM-SHA-256). Import reads
//! accounts with a plaintext password (as ejabberd exports them with its
//! default `auth_password_format: plain`) or with both SCRAM secrets (as
//! Rookery exports them). Accounts that carry only a SCRAM-SHA-1 secret
//! (Prosody's export) cannot be imported yet: Rookery keeps a SHA-256 secret
//! for every account, which cannot be computed without the password; they
//! are reported and skipped. Existing accounts are skipped too (never
//! overwritten).

use std::path::Path;

use base64::Engine;
use xep_support::element::Element;

use super::commands::{CtlEnv, CtlOutput};
use crate::auth::credentials::{ScramSecret, StoredCredentials};
use crate::storage::{RosterItem, Subscription};

const NS_PIE: &str = "urn:xmpp:pie:0";
const NS_SCRAM: &str = "urn:xmpp:pie:0#scram";
const NS_ROSTER: &str = "jabber:iq:roster";

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

fn scram_element(mechanism: &str, s: &ScramSecret) -> Element {
    let child = |name: &str, text: String| Element::new(name, NS_SCRAM).with_text(text);
    Element::new("scram-credentials", NS_SCRAM)
        .with_attr("mechanism", mechanism)
        .with_child(child("iter-count", s.iterations.to_string()))
        .with_child(child("salt", b64(&s.salt)))
        .with_child(child("server-key", b64(&s.server_key)))
        .with_child(child("stored-key", b64(&s.stored_key)))
}

fn fail(e: impl std::fmt::Display) -> CtlOutput {
    CtlOutput::failed(format!("Error: {e}"))
}

/// `export_piefxis DIR`.
pub fn export(env: &CtlEnv, dir: &str) -> CtlOutput {
    let dir = Path::new(dir);
    if let Err(e) = std::fs::create_dir_all(dir) {
        return fail(format!("cannot create {}: {e}", dir.display()));
    }
    let mut lines = Vec::new();
    for host in env.hosts() {
        let mut h = Element::new("host", NS_PIE).with_attr("jid", host.clone());
        let users = match env.storage.list_users(&host) {
            Ok(u) => u,
            Err(e) => return fail(e),
        };
        for user in &users {
            let mut u = Element::new("user", NS_PIE).with_attr("name", user.clone());
            match env.storage.get_credentials(&host, user) {
                Ok(Some(c)) => {
                    u = u
                        .with_child(scram_element("SCRAM-SHA-1", &c.sha1))
                        .with_child(scram_element("SCRAM-SHA-256", &c.sha256));
                }
                Ok(None) => continue,
                Err(e) => return fail(e),
            }
            let roster = match env.storage.roster_get(&host, user) {
                Ok(r) => r,
                Err(e) => return fail(e),
            };
            if !roster.is_empty() {
                let mut q = Element::new("query", NS_ROSTER);
                for item in roster {
                    q = q.with_child(crate::im::subscription::roster_item_xml(&item));
                }
                u = u.with_child(q);
            }
            let offline = match env.storage.offline_peek(&host, user, usize::MAX) {
                Ok(o) => o,
                Err(e) => return fail(e),
            };
            if !offline.is_empty() {
                let mut o = Element::new("offline-messages", NS_PIE);
                for (_, xml) in offline {
                    if let Some(m) = crate::storage::stanza_codec::parse_stanza(&xml) {
                        o = o.with_child(m);
                    }
                }
                u = u.with_child(o);
            }
            h = h.with_child(u);
        }
        let doc = Element::new("server-data", NS_PIE).with_child(h);
        let path = dir.join(format!("{host}.xml"));
        let text = format!(
            "<?xml version='1.0' encoding='UTF-8'?>\n{}\n",
            doc.to_xml("")
        );
        if let Err(e) = write_private(&path, &text) {
            return fail(format!("cannot write {}: {e}", path.display()));
        }
        lines.push(format!(
            "{host}: {} accounts written to {}",
            users.len(),
            path.display()
        ));
    }
    CtlOutput::ok(lines.join("\n"))
}

fn write_private(path: &Path, text: &str) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    f.write_all(text.as_bytes())?;
    f.sync_all()
}

fn scram_from(el: &Element) -> Option<ScramSecret> {
    let text = |name: &str| {
        el.child(name, NS_SCRAM)
            .map(|c| c.text().trim().to_string())
    };
    let dec = |name: &str| {
        text(name).and_then(|t| base64::engine::general_purpose::STANDARD.decode(t).ok())
    };
    Some(ScramSecret {
        iterations: text("iter-count")?.parse().ok()?,
        salt: dec("salt")?,
        server_key: dec("server-key")?,
        stored_key: dec("stored-key")?,
    })
}

fn roster_item(el: &Element) -> Option<RosterItem> {
    let jid = jid::BareJid::new(el.attr("jid")?).ok()?.to_string();
    let subscription = match el.attr("subscription").unwrap_or("none") {
        "to" => Subscription::To,
        "from" => Subscription::From,
        "both" => Subscription::Both,
        _ => Subscription::None,
    };
    let mut groups: Vec<String> = el
        .child_elements()
        .filter(|g| g.name == "group")
        .map(|g| g.text())
        .filter(|g| !g.is_empty())
        .collect();
    groups.sort();
    groups.dedup();
    Some(RosterItem {
        jid,
        name: el
            .attr("name")
            .filter(|n| !n.is_empty())
            .map(str::to_string),
        groups,
        subscription,
        ask: el.attr("ask") == Some("subscribe"),
        approved: false,
        pending_in: false,
        ver: 0,
    })
}

/// `import_piefxis FILE`.
pub fn import(env: &CtlEnv, file: &str) -> CtlOutput {
    let text = match std::fs::read_to_string(file) {
        Ok(t) => t,
        Err(e) => return fail(format!("cannot read {file}: {e}")),
    };
    // The stanza parser refuses processing instructions: drop the XML declaration.
    let body = match text.trim_start().strip_prefix("<?xml") {
        Some(rest) => match rest.find("?>") {
            Some(end) => &rest[end + 2..],
            None => return fail(format!("{file}: malformed XML declaration")),
        },
        None => text.trim_start(),
    };
    let Some(doc) = crate::storage::stanza_codec::parse_stanza(body.trim()) else {
        return fail(format!("{file}: not a well-formed XML document"));
    };
    if !doc.is("server-data", NS_PIE) {
        return fail(format!(
            "{file}: not a XEP-0227 file (no <server-data xmlns='{NS_PIE}'/>)"
        ));
    }
    let served = env.hosts();
    let (mut imported, mut notes) = (0usize, Vec::new());
    for host_el in doc.child_elements().filter(|e| e.is("host", NS_PIE)) {
        let host = host_el.attr("jid").unwrap_or("").to_lowercase();
        if !served.contains(&host) {
            notes.push(format!("host {host} is not served here; skipped"));
            continue;
        }
        for u in host_el.child_elements().filter(|e| e.is("user", NS_PIE)) {
            let Some(user) = u.attr("name").and_then(|n| jid::NodePart::new(n).ok()) else {
                notes.push(format!(
                    "{host}: invalid user name {:?}; skipped",
                    u.attr("name")
                ));
                continue;
            };
            let user = user.as_str().to_string();
            let scram = |mech: &str| {
                u.child_elements()
                    .find(|c| {
                        c.is("scram-credentials", NS_SCRAM) && c.attr("mechanism") == Some(mech)
                    })
                    .and_then(scram_from)
            };
            let creds = match (
                u.attr("password"),
                scram("SCRAM-SHA-1"),
                scram("SCRAM-SHA-256"),
            ) {
                (_, Some(sha1), Some(sha256)) => StoredCredentials { sha1, sha256 },
                (Some(pw), _, _) if !pw.is_empty() => {
                    match StoredCredentials::derive(pw, env.scram_iterations) {
                        Ok(c) => c,
                        Err(e) => {
                            notes.push(format!("{user}@{host}: {e}; skipped"));
                            continue;
                        }
                    }
                }
                (_, Some(_), None) => {
                    notes.push(format!(
                        "{user}@{host}: only SCRAM-SHA-1 credentials (no password); Rookery needs the \
                         password to make SCRAM-SHA-256 ones; skipped (set one with change_password)"
                    ));
                    continue;
                }
                _ => {
                    notes.push(format!(
                        "{user}@{host}: no password or credentials; skipped"
                    ));
                    continue;
                }
            };
            match env.storage.create_user(&host, &user, &creds) {
                Ok(()) => {}
                Err(crate::storage::StorageError::AlreadyExists) => {
                    notes.push(format!("{user}@{host} already exists; skipped"));
                    continue;
                }
                Err(e) => return fail(e),
            }
            for q in u.child_elements().filter(|c| c.is("query", NS_ROSTER)) {
                for item in q
                    .child_elements()
                    .filter(|i| i.name == "item")
                    .filter_map(roster_item)
                {
                    if let Err(e) = env.storage.roster_put(&host, &user, item) {
                        return fail(e);
                    }
                }
            }
            for o in u
                .child_elements()
                .filter(|c| c.is("offline-messages", NS_PIE))
            {
                for m in o.child_elements().filter(|m| m.name == "message") {
                    let mut m = m.clone();
                    m.ns = xep_support::ns::CLIENT.to_string();
                    let xml = m.to_xml(xep_support::ns::CLIENT);
                    if let Err(e) = env.storage.offline_store(&host, &user, &xml, None) {
                        return fail(e);
                    }
                }
            }
            imported += 1;
        }
    }
    let mut out = format!("Imported {imported} account(s) from {file}");
    for n in notes {
        out.push_str("\nnote: ");
        out.push_str(&n);
    }
    CtlOutput::ok(out)
}
