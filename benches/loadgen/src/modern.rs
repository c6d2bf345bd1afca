//! The "modern client" of the idle scenario (`idle --modern`): what
//! Conversations, Dino, Gajim or Monal do after binding a resource, and what
//! such a client then owes the server while it sits idle.
//!
//! Setup, in one write after bind: enable stream management with resumption
//! (XEP-0198), enable carbons (XEP-0280), send initial presence with entity
//! capabilities (XEP-0115), tell the server the client is inactive (XEP-0352),
//! then a ping; the session is ready when `<enabled/>`, the carbons result
//! and the ping's answer have all arrived. A server that does not offer one
//! of these fails the login with kind `protocol` (SM refused) or `modern`
//! (carbons refused).
//!
//! While idle: every stanza received after `<enabled/>` is counted (the
//! XEP-0198 `h`), each `<r/>` is answered with `<a h='…'/>`, and a disco#info
//! query for our caps node is answered with the features the hash covers
//! (servers such as ejabberd ask once per new hash). Invariant: the caps
//! `ver` below is the XEP-0115 SHA-1 of exactly `IDENTITY` and `FEATURES`
//! (the unit test recomputes it).

use tokio::time::Instant;

use crate::conn::{self, Conn, Error};
use crate::xml::Unit;

/// The caps node URI.
pub const NODE: &str = "https://rookery.invalid/loadgen";
/// XEP-0115 verification string of IDENTITY and FEATURES (SHA-1, base64).
pub const VER: &str = "tSOUGLE+mBT4PfqrjOwlPykDn8U=";
/// category/type//name of our one identity.
pub const IDENTITY: (&str, &str, &str) = ("client", "phone", "loadgen");
/// Features, sorted bytewise (as the hash requires).
pub const FEATURES: [&str; 10] = [
    "http://jabber.org/protocol/caps",
    "http://jabber.org/protocol/chatstates",
    "http://jabber.org/protocol/disco#info",
    "urn:xmpp:avatar:metadata+notify",
    "urn:xmpp:carbons:2",
    "urn:xmpp:chat-markers:0",
    "urn:xmpp:message-correct:0",
    "urn:xmpp:ping",
    "urn:xmpp:receipts",
    "urn:xmpp:time",
];

const CARBONS_ID: &str = "carbons1";

/// Stream-management state of a modern session.
#[derive(Debug, Default, Clone, Copy)]
pub struct Sm {
    /// Stanzas received since `<enabled/>`.
    pub h: u32,
}

fn is_stanza(name: &[u8]) -> bool {
    name == b"message" || name == b"presence" || name == b"iq"
}

/// The answer to a disco#info query on our caps node (or on us), if `u` is one.
fn disco_reply(c: &Conn, u: &Unit) -> Option<String> {
    if c.get(&u.name) != b"iq" || c.opt(&u.typ) != b"get" || c.opt(&u.child) != b"query" {
        return None;
    }
    let raw = c.get(&u.raw);
    if !conn::contains(raw, b"http://jabber.org/protocol/disco#info") {
        return None;
    }
    let node = if conn::contains(raw, NODE.as_bytes()) {
        format!(" node='{NODE}#{VER}'")
    } else {
        String::new()
    };
    let id = c.str(&u.id);
    let to = match c.str(&u.from) {
        "" => String::new(),
        f => format!(" to='{f}'"),
    };
    let mut s = format!(
        "<iq type='result' id='{id}'{to}><query xmlns='http://jabber.org/protocol/disco#info'{node}>\
         <identity category='{}' type='{}' name='{}'/>",
        IDENTITY.0, IDENTITY.1, IDENTITY.2
    );
    for f in FEATURES {
        s.push_str(&format!("<feature var='{f}'/>"));
    }
    s.push_str("</query></iq>");
    Some(s)
}

/// What the client owes for unit `u` (an `<a/>`, an iq answer), counting it
/// if it is a stanza.
pub fn on_unit(c: &Conn, u: &Unit, sm: &mut Sm) -> Option<String> {
    let name = c.get(&u.name);
    if is_stanza(name) {
        sm.h = sm.h.wrapping_add(1);
    }
    if name == b"r" {
        return Some(format!("<a xmlns='urn:xmpp:sm:3' h='{}'/>", sm.h));
    }
    disco_reply(c, u).or_else(|| c.iq_reply(u))
}

/// After bind: SM with resumption, carbons, presence with caps, CSI
/// inactive, ping; returns once all are answered.
pub async fn setup(
    c: &mut Conn,
    domain: &str,
    ping_id: &str,
    deadline: Instant,
) -> Result<Sm, Error> {
    let msg = format!(
        "<enable xmlns='urn:xmpp:sm:3' resume='true'/>\
         <iq type='set' id='{CARBONS_ID}'><enable xmlns='urn:xmpp:carbons:2'/></iq>\
         <presence><c xmlns='http://jabber.org/protocol/caps' hash='sha-1' node='{NODE}' ver='{VER}'/></presence>\
         <inactive xmlns='urn:xmpp:csi:0'/>{}",
        conn::ping(domain, ping_id)
    );
    c.send(msg.as_bytes(), deadline).await?;
    let mut sm: Option<Sm> = None;
    let (mut carbons, mut pong) = (false, false);
    loop {
        let u = c.recv(deadline).await?;
        let name = c.get(&u.name).to_vec();
        match name.as_slice() {
            b"enabled" => {
                sm = Some(Sm::default());
                continue;
            }
            b"failed" => {
                return Err(Error {
                    kind: "protocol",
                    msg: "stream management refused (<failed/>)".into(),
                })
            }
            _ => {}
        }
        if name == b"iq" {
            let (id, typ) = (c.opt(&u.id).to_vec(), c.opt(&u.typ).to_vec());
            if id == CARBONS_ID.as_bytes() {
                if typ != b"result" {
                    return Err(Error {
                        kind: "modern",
                        msg: "carbons refused".into(),
                    });
                }
                carbons = true;
            } else if id == ping_id.as_bytes() && (typ == b"result" || typ == b"error") {
                pong = true;
            }
        }
        let mut scratch = Sm::default();
        let reply = on_unit(c, &u, sm.as_mut().unwrap_or(&mut scratch));
        if let Some(r) = reply {
            c.send(r.as_bytes(), deadline).await?;
        }
        if carbons && pong {
            return sm.ok_or(Error {
                kind: "protocol",
                msg: "no <enabled/> before the ping's answer (server offers no XEP-0198?)".into(),
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn features_are_sorted_and_ver_matches() {
        let mut sorted = FEATURES;
        sorted.sort();
        assert_eq!(sorted, FEATURES);
        // XEP-0115 §5.1: S = category/type/lang/name< then each feature<.
        let mut s = format!("{}/{}//{}<", IDENTITY.0, IDENTITY.1, IDENTITY.2);
        for f in FEATURES {
            s.push_str(f);
            s.push('<');
        }
        use base64::Engine;
        use sha1::Digest;
        let want =
            base64::engine::general_purpose::STANDARD.encode(sha1::Sha1::digest(s.as_bytes()));
        assert_eq!(VER, want);
    }
}
