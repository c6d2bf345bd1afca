//! XEP-0227 portable import/export (`export_piefxis DIR`,
//! `import_piefxis FILE`), for what Rookery stores: accounts, rosters with
//! pending subscription requests, offline messages, vCards (`mod_vcard`),
//! private XML storage (`mod_private`) and message archives (`mod_mam`:
//! `<archive xmlns='urn:xmpp:pie:0#mam'/>` of XEP-0313 `<result/>`s, ids
//! and stamps kept).
//!
//! Export writes `DIR/<host>.xml` per host, with the SCRAM secrets
//! (`urn:xmpp:pie:0#scram`: SCRAM-SHA-1, and SCRAM-SHA-256 when the account
//! has one). Import reads what ejabberd (`ejabberdctl export_piefxis`) and
//! Prosody (`prosody-migrator` to its `xep0227` store) write:
//!
//! - credentials: a plaintext `password` (ejabberd's default
//!   `auth_password_format: plain`) becomes SCRAM-SHA-1 and SCRAM-SHA-256
//!   secrets; SCRAM-SHA-1 and SCRAM-SHA-256 secrets are kept; a SCRAM-SHA-1
//!   secret alone (Prosody; ejabberd with `auth_password_format: scram`) is
//!   kept as such: the account logs in with SCRAM-SHA-1 or PLAIN and gets
//!   full credentials at its first PLAIN login or password change
//!   ([`StoredCredentials::sha1_only`]). ejabberd 23.01 base64-encodes its
//!   SCRAM values twice; keys of the wrong length are decoded once more.
//! - `<xi:include href='...'/>` (ejabberd's top file names one file per
//!   host), read from the including file's directory.
//! - `<presence type='subscribe'/>` children of `<user>`: pending inbound
//!   subscription requests.
//!
//! Existing accounts are skipped (never overwritten) and reported.
use std::path::{Path, PathBuf};

use base64::Engine;
use xep_support::element::Element;
use xep_support::ns;

use super::commands::{CtlEnv, CtlOutput};
use crate::auth::credentials::{ScramSecret, StoredCredentials};
use crate::storage::{AccountKey, RosterItem, Subscription};

const NS_PIE: &str = "urn:xmpp:pie:0";
const NS_SCRAM: &str = "urn:xmpp:pie:0#scram";
/// XEP-0227's message archive element.
const NS_PIE_MAM: &str = "urn:xmpp:pie:0#mam";
const NS_ROSTER: &str = "jabber:iq:roster";
const NS_XINCLUDE: &str = "http://www.w3.org/2001/XInclude";
/// Where `mod_vcard` keeps an account's vCard (module, key).
const VCARD_STORE: (&str, &str) = ("mod_vcard", "vcard");
/// `mod_private`'s key/value space (one key per namespace).
const PRIVATE_STORE: &str = xep_support::private::MODULE;
/// How many `xi:include`s one import follows.
const MAX_INCLUDES: usize = 1000;

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

/// A stored XML value of `owner` parsed back, if it is one (characters
/// XML 1.0 forbids, stored by earlier versions, are replaced by U+FFFD).
fn stored_xml(bytes: &[u8], owner: &str) -> Option<Element> {
    std::str::from_utf8(bytes)
        .ok()
        .and_then(|xml| crate::storage::stanza_codec::parse_stored(xml, Some(owner)))
}

/// The `<user>` element of one account.
fn export_user(env: &CtlEnv, host: &str, user: &str) -> Result<Option<Element>, String> {
    let st = &env.storage;
    let e = |e: crate::storage::StorageError| e.to_string();
    let owner = format!("{user}@{host}");
    let mut u = Element::new("user", NS_PIE).with_attr("name", user);
    match st.get_credentials(AccountKey::new(host, user)).map_err(e)? {
        Some(c) => {
            u = u.with_child(scram_element("SCRAM-SHA-1", &c.sha1));
            if let Some(sha256) = &c.sha256 {
                u = u.with_child(scram_element("SCRAM-SHA-256", sha256));
            }
        }
        None => return Ok(None),
    }
    let roster = st.roster_get(AccountKey::new(host, user)).map_err(e)?;
    if !roster.is_empty() {
        let mut q = Element::new("query", NS_ROSTER);
        for item in roster {
            q = q.with_child(crate::im::subscription::roster_item_xml(&item));
        }
        u = u.with_child(q);
    }
    for (from, xml) in st
        .pending_subscriptions(AccountKey::new(host, user))
        .map_err(e)?
    {
        let mut p =
            stored_xml(xml.as_bytes(), &owner).unwrap_or_else(|| Element::new("presence", ""));
        p.ns = ns::CLIENT.to_string();
        p.set_attr("from", from);
        p.set_attr("to", format!("{user}@{host}"));
        p.set_attr("type", "subscribe");
        u = u.with_child(p);
    }
    let offline = st
        .offline_peek(AccountKey::new(host, user), usize::MAX)
        .map_err(e)?;
    if !offline.is_empty() {
        let mut o = Element::new("offline-messages", NS_PIE);
        for (_, xml) in offline {
            if let Some(m) = stored_xml(xml.as_bytes(), &owner) {
                o = o.with_child(m);
            }
        }
        u = u.with_child(o);
    }
    if let Some(v) = st
        .module_get(AccountKey::new(host, user), VCARD_STORE.0, VCARD_STORE.1)
        .map_err(e)?
        .and_then(|b| stored_xml(&b, &owner))
    {
        u = u.with_child(v);
    }
    if let Some(archive) = export_archive(env, host, user)? {
        u = u.with_child(archive);
    }
    let private = st
        .module_scan(AccountKey::new(host, user), PRIVATE_STORE, "")
        .map_err(e)?;
    let fragments: Vec<Element> = private
        .iter()
        .filter_map(|(_, b)| stored_xml(b, &owner))
        .collect();
    if !fragments.is_empty() {
        let mut q = Element::new("query", ns::PRIVATE);
        for f in fragments {
            q = q.with_child(f);
        }
        u = u.with_child(q);
    }
    Ok(Some(u))
}

/// The account's message archive (XEP-0227 `urn:xmpp:pie:0#mam`): each
/// message as a XEP-0313 `<result/>` with its archive id and a XEP-0203
/// delay stamp; `None` when it is empty.
fn export_archive(env: &CtlEnv, host: &str, user: &str) -> Result<Option<Element>, String> {
    use xep_support::archive::{format_id, PageQuery};
    let Ok(owner) = jid::BareJid::new(&format!("{user}@{host}")) else {
        return Ok(None);
    };
    let store = env.storage.archive();
    let mut archive = Element::new("archive", NS_PIE_MAM);
    let mut lo = 0;
    let mut any = false;
    loop {
        let page = store
            .page(
                &owner,
                &PageQuery {
                    with: None,
                    lo,
                    hi: u64::MAX,
                    reverse: false,
                    limit: 1000,
                },
            )
            .map_err(|e| e.to_string())?;
        let Some(last) = page.last().map(|m| m.id) else {
            break;
        };
        for m in page {
            let Some(msg) = stored_xml(m.xml.as_bytes(), owner.as_str()) else {
                continue;
            };
            any = true;
            archive = archive.with_child(
                Element::new("result", xep_support::mam::NS_MAM)
                    .with_attr("id", format_id(m.id))
                    .with_child(
                        Element::new("forwarded", ns::FORWARD)
                            .with_child(
                                Element::new("delay", ns::DELAY)
                                    .with_attr("stamp", xep_support::mam::stamp(m.id)),
                            )
                            .with_child(msg),
                    ),
            );
        }
        lo = last + 1;
    }
    Ok(any.then_some(archive))
}

/// The messages of a XEP-0227 `<archive/>` as (id, message) for the
/// account `owner`: the id from the result (20 digits) or else from the
/// delay stamp; the peer and direction from the message's from/to.
fn import_archive(
    owner: &jid::BareJid,
    el: &Element,
) -> (Vec<(u64, xep_support::archive::NewMessage)>, usize) {
    use xep_support::archive::{parse_id, Direction, NewMessage};
    let mut out = Vec::new();
    let mut skipped = 0;
    for r in el.child_elements().filter(|r| r.name == "result") {
        let Some(fwd) = r.child("forwarded", ns::FORWARD) else {
            skipped += 1;
            continue;
        };
        let stamp = fwd
            .child("delay", ns::DELAY)
            .and_then(|d| d.attr("stamp"))
            .and_then(xep_support::mam::parse_stamp);
        let id = r.attr("id").and_then(parse_id).or(stamp);
        let msg = fwd.child_elements().find(|m| m.name == "message");
        let (Some(id), Some(msg)) = (id, msg) else {
            skipped += 1;
            continue;
        };
        let mut msg = msg.clone();
        msg.ns = ns::CLIENT.to_string();
        let bare = |a: &str| {
            msg.attr(a)
                .and_then(|j| jid::Jid::new(j).ok())
                .map(|j| j.to_bare())
        };
        let (from, to) = (bare("from"), bare("to"));
        let (direction, peer) = if from.as_ref() == Some(owner) {
            (Direction::Outgoing, to)
        } else {
            (Direction::Incoming, from)
        };
        let Some(peer) = peer else {
            skipped += 1;
            continue;
        };
        let origin_id = msg
            .child("origin-id", xep_support::mam::NS_SID)
            .and_then(|o| o.attr("id"))
            .map(str::to_string);
        out.push((
            id,
            NewMessage {
                owner: owner.clone(),
                peer,
                direction,
                origin_id,
                xml: msg.to_xml(ns::CLIENT),
            },
        ));
    }
    (out, skipped)
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
            match export_user(env, &host, user) {
                Ok(Some(u)) => h = h.with_child(u),
                Ok(None) => {}
                Err(e) => return fail(e),
            }
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

/// One SCRAM value: base64, or (ejabberd 23.01) base64 of base64. A key
/// must be as long as the hash (`key_len`); `None` for a salt, which is
/// decoded twice exactly when the keys of its element were.
fn decode_scram_value(text: &str, key_len: Option<usize>, twice: bool) -> Option<(Vec<u8>, bool)> {
    let dec = |t: &[u8]| base64::engine::general_purpose::STANDARD.decode(t).ok();
    let once = dec(text.trim().as_bytes())?;
    match key_len {
        Some(len) if once.len() == len => Some((once, false)),
        Some(len) => {
            let again = dec(&once)?;
            (again.len() == len).then_some((again, true))
        }
        None if twice => Some((dec(&once)?, true)),
        None => Some((once, false)),
    }
}

/// The secret of one `<scram-credentials/>`; `key_len` is the hash's length.
fn scram_from(el: &Element, key_len: usize) -> Option<ScramSecret> {
    let text = |name: &str| el.child(name, NS_SCRAM).map(|c| c.text());
    let (server_key, twice) = decode_scram_value(&text("server-key")?, Some(key_len), false)?;
    let (stored_key, twice2) = decode_scram_value(&text("stored-key")?, Some(key_len), false)?;
    if twice != twice2 {
        return None;
    }
    let (salt, _) = decode_scram_value(&text("salt")?, None, twice)?;
    let iterations: u32 = text("iter-count")?.trim().parse().ok()?;
    if salt.is_empty() || iterations == 0 {
        return None;
    }
    Some(ScramSecret {
        iterations,
        salt,
        server_key,
        stored_key,
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

/// Read and parse one XML file (the XML declaration dropped: the stanza
/// parser refuses processing instructions).
fn read_xml(path: &Path) -> Result<Element, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let body = match text.trim_start().strip_prefix("<?xml") {
        Some(rest) => match rest.find("?>") {
            Some(end) => &rest[end + 2..],
            None => return Err(format!("{}: malformed XML declaration", path.display())),
        },
        None => text.trim_start(),
    };
    crate::storage::stanza_codec::parse_stanza(body.trim())
        .ok_or_else(|| format!("{}: not a well-formed XML document", path.display()))
}

/// The `<host/>` elements of a file, following `xi:include`s (ejabberd)
/// to files in the same directory.
fn collect_hosts(file: &Path, doc: Element, hosts: &mut Vec<Element>) -> Result<(), String> {
    let dir = file.parent().map(Path::to_path_buf).unwrap_or_default();
    let mut includes = 0usize;
    for child in doc.child_elements() {
        if child.is("host", NS_PIE) {
            hosts.push(child.clone());
        } else if child.is("include", NS_XINCLUDE) {
            includes += 1;
            if includes > MAX_INCLUDES {
                return Err(format!("{}: too many xi:include elements", file.display()));
            }
            let href = child.attr("href").unwrap_or("");
            let rel = Path::new(href);
            if href.is_empty()
                || rel.is_absolute()
                || rel
                    .components()
                    .any(|c| !matches!(c, std::path::Component::Normal(_)))
            {
                return Err(format!(
                    "{}: xi:include href {href:?} is not a file name in the same directory",
                    file.display()
                ));
            }
            let path: PathBuf = dir.join(rel);
            let included = read_xml(&path)?;
            if included.is("host", NS_PIE) {
                hosts.push(included);
            } else if included.is("server-data", NS_PIE) {
                hosts.extend(
                    included
                        .child_elements()
                        .filter(|e| e.is("host", NS_PIE))
                        .cloned(),
                );
            } else {
                return Err(format!(
                    "{}: included file is neither <host/> nor <server-data/>",
                    path.display()
                ));
            }
        }
    }
    Ok(())
}

/// The credentials of a `<user/>`, or why there are none.
fn user_credentials(env: &CtlEnv, u: &Element) -> Result<StoredCredentials, String> {
    let scram = |mech: &str, len: usize| -> Result<Option<ScramSecret>, String> {
        match u
            .child_elements()
            .find(|c| c.is("scram-credentials", NS_SCRAM) && c.attr("mechanism") == Some(mech))
        {
            Some(el) => scram_from(el, len)
                .map(Some)
                .ok_or_else(|| format!("malformed {mech} credentials")),
            None => Ok(None),
        }
    };
    if let Some(pw) = u.attr("password").filter(|p| !p.is_empty()) {
        return StoredCredentials::derive(pw, env.scram_iterations).map_err(|e| e.to_string());
    }
    match (scram("SCRAM-SHA-1", 20)?, scram("SCRAM-SHA-256", 32)?) {
        (Some(sha1), None) => Ok(StoredCredentials::sha1_only(sha1)),
        (Some(sha1), Some(sha256)) => Ok(StoredCredentials {
            sha1,
            sha256: Some(sha256),
        }),
        (None, Some(_)) => Err(
            "only SCRAM-SHA-256 credentials (no password, no SCRAM-SHA-1); Rookery needs a \
             SCRAM-SHA-1 secret or the password"
                .into(),
        ),
        (None, None) => Err("no password or credentials".into()),
    }
}

/// Store what a `<user/>` carries besides its credentials; returns notes.
fn import_user_data(
    env: &CtlEnv,
    host: &str,
    user: &str,
    u: &Element,
) -> Result<Vec<String>, crate::storage::StorageError> {
    let st = &env.storage;
    let mut notes = Vec::new();
    let own = format!("{user}@{host}");
    let mut roster: Vec<RosterItem> = Vec::new();
    for q in u.child_elements().filter(|c| c.is("query", NS_ROSTER)) {
        for item in q
            .child_elements()
            .filter(|i| i.name == "item")
            .filter_map(roster_item)
        {
            if item.jid != own {
                roster.push(item);
            }
        }
    }
    // Pending inbound requests (`<presence type='subscribe'/>`, as both
    // ejabberd and Prosody write them; Prosody without a namespace of its
    // own, so in the `<user/>`'s).
    for p in u.child_elements().filter(|c| {
        c.name == "presence"
            && c.attr("type") == Some("subscribe")
            && (c.ns == ns::CLIENT || c.ns == NS_PIE)
    }) {
        let Some(from) = p
            .attr("from")
            .and_then(|f| jid::Jid::new(f).ok())
            .map(|j| j.to_bare().to_string())
        else {
            notes.push(format!(
                "{own}: subscription request without a valid from; skipped"
            ));
            continue;
        };
        if let Some(item) = roster.iter_mut().find(|i| i.jid == from) {
            item.pending_in = true;
        }
        let mut stanza = Element::new("presence", ns::CLIENT)
            .with_attr("from", from.clone())
            .with_attr("to", own.clone())
            .with_attr("type", "subscribe");
        for c in p
            .child_elements()
            .filter(|c| c.name == "status" || c.ns == "http://jabber.org/protocol/nick")
        {
            stanza = stanza.with_child(c.clone());
        }
        st.pending_subscription_add(
            AccountKey::new(host, user),
            &from,
            &stanza.to_xml(ns::CLIENT),
        )?;
    }
    for item in roster {
        st.roster_put(AccountKey::new(host, user), item)?;
    }
    for o in u
        .child_elements()
        .filter(|c| c.is("offline-messages", NS_PIE))
    {
        for m in o.child_elements().filter(|m| m.name == "message") {
            let mut m = m.clone();
            m.ns = ns::CLIENT.to_string();
            if m.attr("to").is_none() {
                m.set_attr("to", own.clone());
            }
            st.offline_store(AccountKey::new(host, user), &m.to_xml(ns::CLIENT), None)?;
        }
    }
    if let (Some(a), Ok(owner)) = (u.child("archive", NS_PIE_MAM), jid::BareJid::new(&own)) {
        let (msgs, skipped) = import_archive(&owner, a);
        if skipped > 0 {
            notes.push(format!(
                "{own}: {skipped} archived messages unreadable; skipped"
            ));
        }
        st.archive()
            .import(&owner, msgs)
            .map_err(crate::storage::StorageError::from)?;
    }
    if let Some(v) = u.child("vCard", ns::VCARD) {
        st.module_put(
            AccountKey::new(host, user),
            VCARD_STORE.0,
            VCARD_STORE.1,
            v.to_xml(ns::CLIENT).as_bytes(),
        )?;
    }
    for q in u.child_elements().filter(|c| c.is("query", ns::PRIVATE)) {
        for frag in q.child_elements() {
            if frag.ns.is_empty()
                || [ns::PRIVATE, ns::CLIENT, ns::SERVER].contains(&frag.ns.as_str())
            {
                notes.push(format!(
                    "{own}: private XML in reserved namespace {:?}; skipped",
                    frag.ns
                ));
                continue;
            }
            st.module_put(
                AccountKey::new(host, user),
                PRIVATE_STORE,
                &frag.ns,
                frag.to_xml(ns::CLIENT).as_bytes(),
            )?;
        }
    }
    Ok(notes)
}

/// `import_piefxis FILE`.
pub fn import(env: &CtlEnv, file: &str) -> CtlOutput {
    let path = Path::new(file);
    let doc = match read_xml(path) {
        Ok(d) => d,
        Err(e) => return fail(e),
    };
    if !doc.is("server-data", NS_PIE) {
        return fail(format!(
            "{file}: not a XEP-0227 file (no <server-data xmlns='{NS_PIE}'/>)"
        ));
    }
    let mut hosts = Vec::new();
    if let Err(e) = collect_hosts(path, doc, &mut hosts) {
        return fail(e);
    }
    let served = env.hosts();
    let (mut imported, mut notes) = (0usize, Vec::new());
    for host_el in &hosts {
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
            let creds = match user_credentials(env, u) {
                Ok(c) => c,
                Err(e) => {
                    notes.push(format!("{user}@{host}: {e}; skipped"));
                    continue;
                }
            };
            match env
                .storage
                .create_user(AccountKey::new(&host, &user), &creds)
            {
                Ok(()) => {}
                Err(crate::storage::StorageError::AlreadyExists) => {
                    notes.push(format!("{user}@{host} already exists; skipped"));
                    continue;
                }
                Err(e) => return fail(e),
            }
            if creds.needs_upgrade() {
                notes.push(format!(
                    "{user}@{host}: SCRAM-SHA-1 credentials only; SCRAM-SHA-256 is refused until \
                     the first PLAIN login over TLS or a password change"
                ));
            }
            match import_user_data(env, &host, &user, u) {
                Ok(n) => notes.extend(n),
                Err(e) => return fail(e),
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
