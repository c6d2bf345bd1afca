//! XEP-0313 Message Archive Management (`mod_mam`, `urn:xmpp:mam:2`) for
//! one-to-one chats, with XEP-0359 stanza ids.
//!
//! Archiving: every `chat` or `normal` message with a `<body/>` is kept in
//! the sender's archive when a local session sends it
//! ([`Module::message_from_session`]) and in the recipient's archive when it
//! reaches a local account ([`Module::filter_message_to_account`], which runs
//! before delivery and before offline storage, so messages to an offline
//! account are archived too). The copy delivered to the recipient carries
//! `<stanza-id by='account' id='archive id'/>`; stanza ids claiming to be by
//! the account that came from outside are removed first.
//!
//! Storage: the module's key/value space of the account; key = archive id,
//! 20 digits of microseconds since the Unix epoch made strictly increasing
//! by the module, so keys sort by time; value = `<archived with stamp>`
//! wrapping the message. Written without waiting for the disk
//! ([`ServerContext::kv_put_lazy`]; sled flushes within 500 ms): a flush per
//! archived message (two per chat message) made the message path several
//! times slower.
//!
//! Query: an iq set `<query/>` from the owner, with the optional form fields
//! `with`, `start`, `end` and RSM `max` (capped at [`MAX_PAGE`]), `after`,
//! `before` (empty: the last page). Results come as messages to the
//! querying resource, routed in order before the iq result with `<fin/>`
//! ([`Module::handle_account_iq_ordered`]). A query reads the account's
//! archive from storage (it is not on the message path).

use std::sync::atomic::{AtomicU64, Ordering};

use jid::{BareJid, FullJid, Jid};

use crate::element::Element;
use crate::module::{IqRequest, IqResult, Module, ServerContext};
use crate::ns;
use crate::stanza::StanzaError;

/// The module's name (its key/value space).
pub const MODULE: &str = "mod_mam";
pub const NS_MAM: &str = "urn:xmpp:mam:2";
pub const NS_SID: &str = "urn:xmpp:sid:0";
pub const NS_RSM: &str = "http://jabber.org/protocol/rsm";
/// Most results one query returns (a larger RSM `max` is capped).
pub const MAX_PAGE: usize = 250;
/// Results of a query without RSM `max`.
pub const DEFAULT_PAGE: usize = 50;
/// Options accepted under `mod_mam:` (ejabberd's names).
pub const OPTIONS: &[&str] = &[
    "default",
    "db_type",
    "use_cache",
    "cache_size",
    "cache_life_time",
    "cache_missed",
];

/// `mod_mam`.
#[derive(Default)]
pub struct Mam {
    last_id: AtomicU64,
}

fn now_micros() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or_default()
}

/// Days since 1970-01-01 to a civil date (Howard Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// A civil date to days since 1970-01-01.
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = if m > 2 { m - 3 } else { m + 9 };
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// XEP-0082 DateTime (UTC, microseconds) of `micros` since the epoch.
pub fn stamp(micros: u64) -> String {
    let secs = (micros / 1_000_000) as i64;
    let (y, m, d) = civil_from_days(secs.div_euclid(86_400));
    let rem = secs.rem_euclid(86_400);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:06}Z",
        rem / 3600,
        (rem % 3600) / 60,
        rem % 60,
        micros % 1_000_000
    )
}

/// Parse an XEP-0082 DateTime (`CCYY-MM-DDThh:mm:ss[.sss](Z|±hh:mm)`) to
/// microseconds since the epoch.
pub fn parse_stamp(s: &str) -> Option<u64> {
    let b = s.as_bytes();
    let num = |r: std::ops::Range<usize>| -> Option<i64> {
        let t = s.get(r)?;
        if t.bytes().all(|c| c.is_ascii_digit()) && !t.is_empty() {
            t.parse().ok()
        } else {
            None
        }
    };
    if b.len() < 20
        || b[4] != b'-'
        || b[7] != b'-'
        || b[10] != b'T'
        || b[13] != b':'
        || b[16] != b':'
    {
        return None;
    }
    let (y, mo, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (h, mi, se) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || se > 60 {
        return None;
    }
    let mut i = 19;
    let mut frac: u64 = 0;
    if b[i] == b'.' {
        let start = i + 1;
        i = start;
        while i < b.len() && b[i].is_ascii_digit() {
            i += 1;
        }
        if i == start {
            return None;
        }
        let digits = &s[start..i.min(start + 6)];
        frac = digits.parse().ok()?;
        frac *= 10u64.pow(6 - digits.len() as u32);
    }
    let offset = match &s[i..] {
        "Z" => 0,
        tz if tz.len() == 6 && (tz.starts_with('+') || tz.starts_with('-')) && &tz[3..4] == ":" => {
            let (oh, om) = (num(i + 1..i + 3)?, num(i + 4..i + 6)?);
            let o = oh * 3600 + om * 60;
            if tz.starts_with('-') {
                -o
            } else {
                o
            }
        }
        _ => return None,
    };
    let secs = days_from_civil(y, mo, d) * 86_400 + h * 3600 + mi * 60 + se - offset;
    if secs < 0 {
        return Some(0);
    }
    Some(secs as u64 * 1_000_000 + frac)
}

/// Whether a message goes into archives: `chat` or `normal` with a body.
fn archivable(msg: &Element) -> bool {
    matches!(msg.attr("type").unwrap_or("normal"), "chat" | "normal")
        && msg
            .child_elements()
            .any(|c| c.is("body", ns::CLIENT) && !c.text().is_empty())
}

/// A stored entry, parsed.
struct Entry {
    id: String,
    micros: u64,
    with: String,
    message: Element,
}

impl Mam {
    /// A fresh archive id: microseconds now, strictly above every earlier id.
    fn next_id(&self) -> u64 {
        let now = now_micros();
        let mut prev = self.last_id.load(Ordering::Relaxed);
        loop {
            let id = now.max(prev + 1);
            match self
                .last_id
                .compare_exchange(prev, id, Ordering::Relaxed, Ordering::Relaxed)
            {
                Ok(_) => return id,
                Err(p) => prev = p,
            }
        }
    }

    /// Store `msg` in `account`'s archive; its archive id.
    fn archive(
        &self,
        ctx: &dyn ServerContext,
        account: &BareJid,
        with: &BareJid,
        msg: &Element,
    ) -> Option<String> {
        let id = self.next_id();
        let key = format!("{id:020}");
        let value = Element::new("archived", NS_MAM)
            .with_attr("with", with.to_string())
            .with_attr("stamp", stamp(id))
            .with_child(msg.clone());
        match ctx.kv_put_lazy(MODULE, account, &key, value.to_xml(ns::CLIENT).as_bytes()) {
            Ok(()) => Some(key),
            Err(e) => {
                tracing::error!("mod_mam: archiving for {account}: {e}");
                None
            }
        }
    }

    fn entries(
        &self,
        ctx: &dyn ServerContext,
        account: &BareJid,
    ) -> Result<Vec<Entry>, StanzaError> {
        let rows = ctx.kv_scan(MODULE, account, "")?;
        Ok(rows
            .into_iter()
            .filter_map(|(key, value)| {
                let el = ctx.parse_xml(std::str::from_utf8(&value).ok()?)?;
                let message = el.child_elements().next()?.clone();
                Some(Entry {
                    micros: key.parse().ok()?,
                    with: el.attr("with")?.to_string(),
                    id: key,
                    message,
                })
            })
            .collect())
    }

    fn query(
        &self,
        ctx: &dyn ServerContext,
        req: &IqRequest<'_>,
    ) -> Result<(Element, Vec<Element>), StanzaError> {
        if !req.from_owner() {
            return Err(StanzaError::forbidden());
        }
        if req.payload.name != "query" {
            return Err(StanzaError::bad_request());
        }
        if !req.is_set {
            // The search form (XEP-0313 §5.1).
            let field = |var: &str, kind: &str| {
                Element::new("field", ns::DATA_FORMS)
                    .with_attr("var", var)
                    .with_attr("type", kind)
            };
            let form = Element::new("x", ns::DATA_FORMS)
                .with_attr("type", "form")
                .with_child(
                    field("FORM_TYPE", "hidden")
                        .with_child(Element::new("value", ns::DATA_FORMS).with_text(NS_MAM)),
                )
                .with_child(field("with", "jid-single"))
                .with_child(field("start", "text-single"))
                .with_child(field("end", "text-single"));
            return Ok((Element::new("query", NS_MAM).with_child(form), Vec::new()));
        }
        // The form.
        let mut with: Option<Jid> = None;
        let (mut start, mut end) = (None, None);
        if let Some(x) = req.payload.child("x", ns::DATA_FORMS) {
            for f in x.child_elements().filter(|f| f.name == "field") {
                let value = f
                    .child("value", ns::DATA_FORMS)
                    .map(|v| v.text())
                    .unwrap_or_default();
                match f.attr("var").unwrap_or("") {
                    "FORM_TYPE" => {
                        if value != NS_MAM {
                            return Err(StanzaError::bad_request().with_text("FORM_TYPE"));
                        }
                    }
                    "with" => {
                        with = Some(Jid::new(value.trim()).map_err(|_| {
                            StanzaError::bad_request().with_text("malformed 'with'")
                        })?)
                    }
                    "start" => {
                        start = Some(parse_stamp(value.trim()).ok_or_else(|| {
                            StanzaError::bad_request().with_text("malformed 'start'")
                        })?)
                    }
                    "end" => {
                        end = Some(parse_stamp(value.trim()).ok_or_else(|| {
                            StanzaError::bad_request().with_text("malformed 'end'")
                        })?)
                    }
                    other => {
                        return Err(StanzaError::bad_request()
                            .with_text(format!("unsupported field '{other}'")))
                    }
                }
            }
        }
        // RSM.
        let mut max = DEFAULT_PAGE;
        let (mut after, mut before): (Option<String>, Option<String>) = (None, None);
        if let Some(set) = req.payload.child("set", NS_RSM) {
            if let Some(m) = set.child("max", NS_RSM) {
                max = m
                    .text()
                    .trim()
                    .parse::<usize>()
                    .map_err(|_| StanzaError::bad_request().with_text("malformed RSM max"))?
                    .min(MAX_PAGE);
            }
            after = set
                .child("after", NS_RSM)
                .map(|a| a.text().trim().to_string());
            before = set
                .child("before", NS_RSM)
                .map(|b| b.text().trim().to_string());
        }
        let account = req.account();
        let all = self.entries(ctx, &account)?;
        for id in [&after, &before].into_iter().flatten() {
            if !id.is_empty() && !all.iter().any(|e| &e.id == id) {
                return Err(StanzaError::item_not_found());
            }
        }
        let matching: Vec<&Entry> = all
            .iter()
            .filter(|e| match &with {
                None => true,
                Some(j) if j.resource().is_none() => e.with == j.as_str(),
                Some(j) => {
                    // A full JID: the peer's resource must match too.
                    let outgoing = e
                        .message
                        .attr("from")
                        .and_then(|f| Jid::new(f).ok())
                        .is_some_and(|f| f.to_bare() == account);
                    let peer = e.message.attr(if outgoing { "to" } else { "from" });
                    peer == Some(j.as_str())
                }
            })
            .filter(|e| start.is_none_or(|s| e.micros >= s))
            .filter(|e| end.is_none_or(|t| e.micros <= t))
            .collect();
        let count = matching.len();
        let window: Vec<&Entry> = matching
            .iter()
            .copied()
            .filter(|e| after.as_ref().is_none_or(|a| e.id.as_str() > a.as_str()))
            .filter(|e| {
                before
                    .as_ref()
                    .is_none_or(|b| b.is_empty() || e.id.as_str() < b.as_str())
            })
            .collect();
        let (page, complete) = if before.is_some() {
            let skip = window.len().saturating_sub(max);
            (&window[skip..], skip == 0)
        } else {
            let n = window.len().min(max);
            (&window[..n], n == window.len())
        };
        let queryid = req.payload.attr("queryid");
        let results = page
            .iter()
            .map(|e| {
                let mut result = Element::new("result", NS_MAM).with_attr("id", e.id.clone());
                if let Some(q) = queryid {
                    result.set_attr("queryid", q);
                }
                Element::new("message", ns::CLIENT)
                    .with_attr("from", account.to_string())
                    .with_attr("to", req.from.to_string())
                    .with_attr("id", format!("mam-{}", e.id))
                    .with_child(
                        result.with_child(
                            Element::new("forwarded", ns::FORWARD)
                                .with_child(
                                    Element::new("delay", ns::DELAY)
                                        .with_attr("stamp", stamp(e.micros)),
                                )
                                .with_child(e.message.clone()),
                        ),
                    )
            })
            .collect();
        let mut set = Element::new("set", NS_RSM);
        if let (Some(first), Some(last)) = (page.first(), page.last()) {
            set = set
                .with_child(Element::new("first", NS_RSM).with_text(first.id.clone()))
                .with_child(Element::new("last", NS_RSM).with_text(last.id.clone()));
        }
        set = set.with_child(Element::new("count", NS_RSM).with_text(count.to_string()));
        let mut fin = Element::new("fin", NS_MAM).with_attr("complete", complete.to_string());
        if let Some(q) = queryid {
            fin.set_attr("queryid", q);
        }
        Ok((fin.with_child(set), results))
    }
}

impl Module for Mam {
    fn name(&self) -> &'static str {
        MODULE
    }
    fn account_disco_features(&self) -> Vec<&'static str> {
        vec![NS_MAM]
    }
    fn account_iq_namespaces(&self) -> Vec<&'static str> {
        vec![NS_MAM]
    }
    fn handle_account_iq(&self, ctx: &dyn ServerContext, req: &IqRequest<'_>) -> IqResult {
        self.handle_account_iq_ordered(ctx, req).0
    }
    fn handle_account_iq_ordered(
        &self,
        ctx: &dyn ServerContext,
        req: &IqRequest<'_>,
    ) -> (IqResult, Vec<Element>) {
        match self.query(ctx, req) {
            Ok((payload, results)) => (Ok(Some(payload)), results),
            Err(e) => (Err(e), Vec::new()),
        }
    }
    fn message_from_session(
        &self,
        ctx: &dyn ServerContext,
        from: &FullJid,
        msg: &Element,
    ) -> Vec<Element> {
        if archivable(msg) {
            if let Some(to) = msg.attr("to").and_then(|t| Jid::new(t).ok()) {
                self.archive(ctx, &from.to_bare(), &to.to_bare(), msg);
            }
        }
        Vec::new()
    }
    fn filter_message_to_account(
        &self,
        ctx: &dyn ServerContext,
        account: &BareJid,
        msg: &mut Element,
    ) {
        // XEP-0359 §5: stanza ids by this account from anyone else are forged.
        let by = account.to_string();
        msg.children.retain(|n| match n {
            crate::element::Node::Element(c) => {
                !(c.is("stanza-id", NS_SID) && c.attr("by") == Some(by.as_str()))
            }
            _ => true,
        });
        if !archivable(msg) {
            return;
        }
        let Some(from) = msg.attr("from").and_then(|f| Jid::new(f).ok()) else {
            return;
        };
        if let Some(id) = self.archive(ctx, account, &from.to_bare(), msg) {
            msg.children.push(crate::element::Node::Element(
                Element::new("stanza-id", NS_SID)
                    .with_attr("by", by)
                    .with_attr("id", id),
            ));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stamps_round_trip() {
        assert_eq!(stamp(0), "1970-01-01T00:00:00.000000Z");
        let t = 1_704_067_200_123_456; // 2024-01-01T00:00:00.123456Z
        assert_eq!(stamp(t), "2024-01-01T00:00:00.123456Z");
        assert_eq!(parse_stamp("2024-01-01T00:00:00.123456Z"), Some(t));
        assert_eq!(
            parse_stamp("2024-01-01T01:00:00+01:00"),
            Some(1_704_067_200_000_000)
        );
        assert_eq!(
            parse_stamp("2024-01-01T00:00:00.5Z"),
            Some(1_704_067_200_500_000)
        );
        assert_eq!(parse_stamp("yesterday"), None);
        assert_eq!(parse_stamp("2024-13-01T00:00:00Z"), None);
    }

    #[test]
    fn ids_strictly_increase() {
        let m = Mam::default();
        let a = m.next_id();
        let b = m.next_id();
        assert!(b > a);
        assert_eq!(format!("{a:020}").len(), 20);
    }
}
