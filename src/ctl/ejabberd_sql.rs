//! `rookery ctl import_ejabberd_sql HOST`: make an ejabberd PostgreSQL
//! database (the `sql_*` options) Rookery's, for one virtual host.
//!
//! Most of ejabberd's tables Rookery reads as they are (`users`,
//! `rosterusers`, `rostergroups`, `spool`, `vcard`, `private_storage`):
//! opening the database runs the migrations, which add Rookery's columns
//! and tables beside them and count the offline messages. This command
//! converts the two whose layout or value format differ:
//!
//! - the message archive: ejabberd's `archive` rows of HOST (one per
//!   message and owner; `username` is the user, or the room's JID for
//!   group chat) become Rookery's archives, with ejabberd's timestamps
//!   (microseconds) as message ids, the peer's bare JID, the direction
//!   from the stanza's `from`, and the XEP-0359 origin-id from the stanza;
//! - MUC rooms: `muc_room.opts` of HOST's services, an Erlang term list,
//!   becomes Rookery's room record (title, description, password,
//!   max_users, the boolean options both servers share, subject,
//!   affiliations); the original row is kept in
//!   `rookery_ejabberd_muc_room`.
//!
//! Invariants: ejabberd's `archive` table is only read; running the
//! command again changes nothing more (archive ids are the timestamps and
//! are skipped when present; rooms already converted are left alone); a
//! row that cannot be converted is reported by name and skipped, and the
//! command then exits 1 after converting the rest.

use jid::BareJid;
use xep_support::archive::{Direction, NewMessage};
use xep_support::element::Element;

use super::commands::CtlOutput;
use super::erlang_term::{self, Term};
use crate::config::Config;
use crate::storage::{ArchiveAccess, PgStorage, StorageError};

/// Rookery's stored-room namespace (xep-support's `muc` module).
const NS_STORED: &str = "urn:rookery:muc:room";
/// Boolean room options ejabberd and Rookery both have, by the same name.
const ROOM_BOOLS: &[&str] = &[
    "persistent",
    "public",
    "public_list",
    "members_only",
    "moderated",
    "members_by_default",
    "password_protected",
    "anonymous",
    "allow_change_subj",
    "allow_private_messages",
    "allow_user_invites",
    "mam",
    "allow_voice_requests",
];

/// One `archive` row.
struct ArchiveRow {
    timestamp: i64,
    bare_peer: String,
    xml: String,
}

/// Rookery's room record for ejabberd's options.
pub fn room_record(opts: &Term) -> Result<String, String> {
    let Term::List(items) = opts else {
        return Err("the options are not a list".into());
    };
    let mut e = Element::new("room", NS_STORED).with_attr("persistent", "true");
    let mut subject: Option<String> = None;
    let mut subject_by = String::new();
    for item in items {
        let Term::Tuple(kv) = item else { continue };
        let (Some(key), Some(value)) = (kv.first().and_then(Term::atom), kv.get(1)) else {
            continue;
        };
        match key {
            "title" | "description" | "password" => {
                if let Some(t) = value.text() {
                    e.set_attr(key, t);
                }
            }
            "max_users" | "voice_request_min_interval" => {
                if let Term::Int(n) = value {
                    e.set_attr(key, n.to_string());
                }
            }
            "allowpm" => {
                // ejabberd 21+: anyone | participants | moderators | none.
                let on = value.atom().is_some_and(|a| a != "none");
                e.set_attr("allow_private_messages", if on { "true" } else { "false" });
            }
            k if ROOM_BOOLS.contains(&k) => {
                if let Some(b) = value.atom().filter(|a| matches!(*a, "true" | "false")) {
                    e.set_attr(k, b);
                }
            }
            // ejabberd 23.01: [{text, Lang, Text}]; older: a binary.
            "subject" => {
                subject = match value {
                    Term::List(l) => l.iter().find_map(|t| match t {
                        Term::Tuple(p) if p.first().and_then(Term::atom) == Some("text") => {
                            p.get(2).and_then(Term::text)
                        }
                        _ => None,
                    }),
                    other => other.text(),
                }
                .filter(|s| !s.is_empty())
            }
            "subject_author" => {
                subject_by = match value {
                    Term::Tuple(t) => t.first().and_then(Term::text).unwrap_or_default(),
                    other => other.text().unwrap_or_default(),
                }
            }
            "affiliations" => {
                let Term::List(affs) = value else { continue };
                for a in affs {
                    let Term::Tuple(pair) = a else { continue };
                    let (Some(Term::Tuple(j)), Some(aff)) = (pair.first(), pair.get(1)) else {
                        continue;
                    };
                    let aff = match aff {
                        Term::Tuple(t) => t.first().and_then(Term::atom),
                        other => other.atom(),
                    };
                    let user = j.first().and_then(Term::text).unwrap_or_default();
                    let server = j.get(1).and_then(Term::text).unwrap_or_default();
                    let (Some(aff), false) = (aff, server.is_empty()) else {
                        continue;
                    };
                    if !matches!(aff, "owner" | "admin" | "member" | "outcast") {
                        continue;
                    }
                    let jid = if user.is_empty() {
                        server
                    } else {
                        format!("{user}@{server}")
                    };
                    e = e.with_child(
                        Element::new("affiliation", NS_STORED)
                            .with_attr("jid", jid)
                            .with_attr("affiliation", aff),
                    );
                }
            }
            _ => {}
        }
    }
    if let Some(s) = subject {
        e = e.with_child(
            Element::new("subject", NS_STORED)
                .with_attr("by", subject_by)
                .with_text(s),
        );
    }
    Ok(e.to_xml(""))
}

/// The archived message of one ejabberd row of `owner`'s archive.
fn message_of(owner: &BareJid, row: ArchiveRow) -> Result<(u64, NewMessage), String> {
    let stanza = crate::storage::stanza_codec::parse_stored(&row.xml, Some(owner.as_str()))
        .ok_or_else(|| format!("message {} of {owner} is not XML", row.timestamp))?;
    let peer = BareJid::new(&row.bare_peer).map_err(|e| {
        format!(
            "message {} of {owner}: peer {:?}: {e}",
            row.timestamp, row.bare_peer
        )
    })?;
    let from_owner = stanza
        .attr("from")
        .and_then(|f| jid::Jid::new(f).ok())
        .is_some_and(|f| f.to_bare() == *owner);
    let origin_id = stanza
        .child("origin-id", "urn:xmpp:sid:0")
        .and_then(|o| o.attr("id"))
        .filter(|o| !o.is_empty())
        .map(str::to_string);
    Ok((
        row.timestamp.max(1) as u64,
        NewMessage {
            owner: owner.clone(),
            peer,
            direction: if from_owner {
                Direction::Outgoing
            } else {
                Direction::Incoming
            },
            origin_id,
            xml: stanza.to_xml(xep_support::ns::CLIENT),
        },
    ))
}

fn storage_failed(what: &str, e: StorageError) -> CtlOutput {
    CtlOutput::failed(format!("{what}: {e}"))
}

/// Run the command for `host`.
pub fn run(config: &Config, host: &str) -> CtlOutput {
    let Some(o) = config.sql_options.as_ref() else {
        return CtlOutput::failed(
            "no PostgreSQL database is configured: set the sql_* options to ejabberd's (docs/configuration.md)",
        );
    };
    let pg = match PgStorage::open(o) {
        Ok(pg) => pg,
        Err(e) => {
            return storage_failed(
                &format!("cannot open the PostgreSQL database {}", o.describe()),
                e,
            )
        }
    };
    let mut problems: Vec<String> = Vec::new();
    // The archive, owner by owner.
    let host_s = host.to_string();
    let owners: Vec<(String, String)> = match pg.call(|sh| async move {
        let c = sh.pool.get().await?;
        let exists: bool = c
            .query_one("SELECT to_regclass('archive') IS NOT NULL", &[])
            .await?
            .get(0);
        if !exists {
            return Ok(Vec::new());
        }
        let rows = c
            .query(
                "SELECT DISTINCT username, coalesce(kind, 'chat') FROM archive WHERE server_host = $1 ORDER BY 1",
                &[&host_s],
            )
            .await?;
        Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
    }) {
        Ok(o) => o,
        Err(e) => return storage_failed("reading ejabberd's archive table", e),
    };
    let archive = pg.archive();
    let (mut archives, mut messages) = (0u64, 0u64);
    for (username, kind) in owners {
        let owner_text = if kind == "groupchat" || username.contains('@') {
            username.clone()
        } else {
            format!("{username}@{host}")
        };
        let owner = match BareJid::new(&owner_text) {
            Ok(j) => j,
            Err(e) => {
                problems.push(format!("archive owner {owner_text:?}: {e}"));
                continue;
            }
        };
        let (u, h) = (username.clone(), host.to_string());
        let rows: Vec<ArchiveRow> = match pg.call(|sh| async move {
            let c = sh.pool.get().await?;
            let rows = c
                .query(
                    "SELECT timestamp, bare_peer, xml FROM archive WHERE server_host = $1 AND username = $2 \
                     ORDER BY timestamp, id",
                    &[&h, &u],
                )
                .await?;
            Ok(rows
                .iter()
                .map(|r| ArchiveRow {
                    timestamp: r.get(0),
                    bare_peer: r.get(1),
                    xml: r.get(2),
                })
                .collect())
        }) {
            Ok(r) => r,
            Err(e) => return storage_failed(&format!("reading the archive of {owner}"), e),
        };
        let mut msgs = Vec::with_capacity(rows.len());
        let mut last = 0u64;
        for row in rows {
            match message_of(&owner, row) {
                Ok((mut id, m)) => {
                    // Two messages of one microsecond: ids stay distinct.
                    if id <= last {
                        id = last + 1;
                    }
                    last = id;
                    msgs.push((id, m));
                }
                Err(e) => problems.push(e),
            }
        }
        let n = msgs.len();
        match archive.import(&owner, msgs) {
            Ok(stored) => {
                archives += 1;
                messages += stored as u64;
                let _ = n;
            }
            Err(e) => problems.push(format!("archive of {owner}: {e}")),
        }
    }
    // MUC rooms of the host's services.
    let host_s = host.to_string();
    let rooms: Vec<(String, String, String)> = match pg.call(|sh| async move {
        let c = sh.pool.get().await?;
        c.batch_execute(
            "CREATE TABLE IF NOT EXISTS rookery_ejabberd_muc_room (name text NOT NULL, host text NOT NULL, \
             server_host text NOT NULL, opts text NOT NULL, PRIMARY KEY (name, host))",
        )
        .await?;
        let rows = c
            .query(
                "SELECT name, host, opts FROM muc_room WHERE server_host = $1 AND opts NOT LIKE '<%' ORDER BY host, name",
                &[&host_s],
            )
            .await?;
        Ok(rows.iter().map(|r| (r.get(0), r.get(1), r.get(2))).collect())
    }) {
        Ok(r) => r,
        Err(e) => return storage_failed("reading ejabberd's muc_room table", e),
    };
    let mut converted = 0u64;
    for (name, service, opts) in rooms {
        let record = match erlang_term::parse(&opts).and_then(|t| room_record(&t)) {
            Ok(r) => r,
            Err(e) => {
                problems.push(format!("room {name}@{service}: {e}"));
                continue;
            }
        };
        let server_host = host.to_string();
        let r = pg.call(|sh| async move {
            let mut c = sh.pool.get().await?;
            let tx = c.transaction().await?;
            tx.execute(
                "INSERT INTO rookery_ejabberd_muc_room (name, host, server_host, opts) VALUES ($1, $2, $3, $4) \
                 ON CONFLICT DO NOTHING",
                &[&name, &service, &server_host, &opts],
            )
            .await?;
            tx.execute(
                "UPDATE muc_room SET opts = $3 WHERE name = $1 AND host = $2",
                &[&name, &service, &record],
            )
            .await?;
            tx.commit().await?;
            Ok(())
        });
        match r {
            Ok(()) => converted += 1,
            Err(e) => return storage_failed("converting a room", e),
        }
    }
    // What the migrations left as it was, counted for the report.
    let host_s = host.to_string();
    let counts: (i64, i64, i64) = match pg.call(|sh| async move {
        let c = sh.pool.get().await?;
        let r = c
            .query_one(
                "SELECT (SELECT count(*) FROM users WHERE server_host = $1), \
                 (SELECT count(*) FROM rosterusers WHERE server_host = $1), \
                 (SELECT count(*) FROM spool WHERE server_host = $1)",
                &[&host_s],
            )
            .await?;
        Ok((r.get(0), r.get(1), r.get(2)))
    }) {
        Ok(c) => c,
        Err(e) => return storage_failed("counting", e),
    };
    let mut out = format!(
        "ejabberd's data for {host} in {}: {} accounts, {} roster items and {} offline messages read as they are; \
         {messages} archived messages in {archives} archives and {converted} MUC rooms converted",
        o.describe(),
        counts.0,
        counts.1,
        counts.2
    );
    if problems.is_empty() {
        CtlOutput::ok(out)
    } else {
        out.push_str(&format!("\n{} record(s) skipped:", problems.len()));
        for p in problems.iter().take(50) {
            out.push_str(&format!("\n  {p}"));
        }
        CtlOutput::failed(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ejabberd_room_options_become_rookerys_record() {
        let opts = erlang_term::parse(
            "[{title,<<\"Lobby\">>},{description,<<\"The lobby\">>},{allow_change_subj,true},\
             {allowpm,anyone},{members_only,false},{moderated,true},{persistent,true},{public,true},\
             {max_users,200},{password,<<>>},{subject,[{text,<<>>,<<\"Welcome\">>}]},{subject_author,{<<\"alice\">>,{jid,<<\"a\">>}}},\
             {affiliations,[{{<<\"alice\">>,<<\"ejabberd.test\">>,<<>>},{owner,<<>>}},\
             {{<<\"bob\">>,<<\"ejabberd.test\">>,<<>>},member}]},{captcha_protected,false}]",
        )
        .unwrap();
        let xml = room_record(&opts).unwrap();
        let e = crate::storage::stanza_codec::parse_stored(&xml, None).unwrap();
        assert_eq!(e.attr("title"), Some("Lobby"));
        assert_eq!(e.attr("max_users"), Some("200"));
        assert_eq!(e.attr("moderated"), Some("true"));
        assert_eq!(e.attr("allow_private_messages"), Some("true"));
        let s = e.child("subject", NS_STORED).unwrap();
        assert_eq!(
            (s.text(), s.attr("by")),
            ("Welcome".to_string(), Some("alice"))
        );
        let affs: Vec<(String, String)> = e
            .child_elements()
            .filter(|c| c.name == "affiliation")
            .map(|c| {
                (
                    c.attr("jid").unwrap().to_string(),
                    c.attr("affiliation").unwrap().to_string(),
                )
            })
            .collect();
        assert_eq!(
            affs,
            [
                ("alice@ejabberd.test".to_string(), "owner".to_string()),
                ("bob@ejabberd.test".to_string(), "member".to_string())
            ]
        );
        assert!(room_record(&Term::Atom("x".into())).is_err());
    }
}
