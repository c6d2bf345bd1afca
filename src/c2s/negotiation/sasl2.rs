//! XEP-0388 Extensible SASL Profile (SASL2) on a client stream: the
//! `<authentication/>` stream feature (offered beside RFC 6120 SASL, with
//! the same mechanisms and the inline features: XEP-0198 resumption and
//! XEP-0386 Bind 2), and `<authenticate/>` — the mechanism exchange is the
//! one RFC 6120 SASL runs (`Negotiation::sasl_exchange`: the same
//! mechanisms, failure conditions, per-address delays and failure limit),
//! only the wrapper elements differ ([`Profile`]).
//!
//! Between the mechanism's success and `<success/>`, a XEP-0480 upgrade
//! task may run (`upgrade.rs`). After `<success/>` the stream is not restarted: an inline resumption
//! hands the resumed session over (its `<resumed/>` inside `<success/>`),
//! an inline bind request makes a new session (`bind2.rs`), and without
//! either the post-authentication stream features follow the `<success/>`
//! so the client can bind the RFC 6120 way. SCRAM's server-final message
//! travels in `<additional-data/>`; the authorization identifier is the
//! bare JID, or the full JID of the bound or resumed session.

use base64::Engine;
use xep_support::element::Element;
use xep_support::ns;

use super::upgrade::Upgrade;
use super::{Bound, Negotiation, Stop};
use crate::auth::{self, SaslContext};
use crate::c2s::sm::resume::{take_over, Resumption};

/// Longest `<user-agent id/>` kept (a UUID is 36 characters).
const MAX_USER_AGENT_ID: usize = 128;

/// Which SASL profile an exchange runs under.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Profile {
    /// RFC 6120 §6: `<auth/>`, `<success/>` and a stream restart.
    Sasl1,
    /// XEP-0388: `<authenticate/>`, `<success/>` without a restart.
    Sasl2,
}

impl Profile {
    /// The namespace of the profile's `<challenge/>`, `<response/>`,
    /// `<abort/>`, `<success/>` and `<failure/>`.
    pub(super) fn ns(self) -> &'static str {
        match self {
            Profile::Sasl1 => ns::SASL,
            Profile::Sasl2 => ns::SASL2,
        }
    }

    /// A `<failure/>` with an RFC 6120 §6.5 condition (in SASL2 the
    /// condition keeps its RFC 6120 namespace, XEP-0388 §2.7).
    pub(super) fn failure(self, condition: &str) -> String {
        match self {
            Profile::Sasl1 => format!("<failure xmlns='{}'><{condition}/></failure>", ns::SASL),
            Profile::Sasl2 => format!(
                "<failure xmlns='{}'><{condition} xmlns='{}'/></failure>",
                ns::SASL2,
                ns::SASL
            ),
        }
    }
}

/// A mechanism's success: the authenticated (normalised) localpart and the
/// mechanism's additional data (SCRAM's server-final message).
pub(super) struct Authenticated {
    pub user: String,
    pub data: Vec<u8>,
}

impl Negotiation {
    /// The `<authentication/>` feature for the mechanisms of `ctx`.
    pub(super) fn sasl2_feature(&self, ctx: &SaslContext) -> Element {
        let mut f = Element::new("authentication", ns::SASL2);
        for m in auth::offered_mechanisms(ctx) {
            f = f.with_child(Element::new("mechanism", ns::SASL2).with_text(m));
        }
        let live = self.server.live();
        let mut inline = Element::new("inline", ns::SASL2);
        if live.sm.is_some() {
            inline = inline.with_child(Element::new("sm", ns::SM));
        }
        inline = inline.with_child(self.bind2_feature());
        if let Some(fast) = self.fast_feature(ctx) {
            inline = inline.with_child(fast);
        }
        f = f.with_child(inline);
        for u in self.upgrade_features() {
            f = f.with_child(u);
        }
        f
    }

    /// One `<authenticate/>`: `Some` when it bound or resumed a session.
    pub(super) async fn sasl2(&mut self, req: Element) -> Result<Option<Bound>, Stop> {
        let name = req.attr("mechanism").unwrap_or("").to_string();
        let initial = req.child("initial-response", ns::SASL2).map(|e| e.text());
        if let Some(ua) = req.child("user-agent", ns::SASL2) {
            self.user_agent = ua
                .attr("id")
                .map(str::trim)
                .filter(|id| !id.is_empty() && id.len() <= MAX_USER_AGENT_ID)
                .map(str::to_owned);
        }
        // Only a SASL2 exchange can use a FAST token (the HT mechanisms
        // exist only with this context).
        self.fast = self.fast_context(&req);
        let result = self.sasl_exchange(Profile::Sasl2, &name, initial).await;
        let fast = self.fast.take();
        let Some(ok) = result? else {
            crate::metrics::auth(&name, false);
            return Ok(None);
        };
        let user = ok.user.clone();
        // XEP-0480 tasks, after the mechanism and before the success.
        let upgraded = match self.upgrade_task(&req, &user, &ok.data).await? {
            Upgrade::Failed => {
                crate::metrics::auth(&name, false);
                return Ok(None);
            }
            Upgrade::Done => true,
            Upgrade::NotRun => false,
        };
        self.authenticated(ok.user, &name);
        let host = self.host.clone().unwrap_or_default();
        let bare = format!("{user}@{host}");
        let mut success = Element::new("success", ns::SASL2);
        if !ok.data.is_empty() && !upgraded {
            let b64 = base64::engine::general_purpose::STANDARD.encode(&ok.data);
            success = success.with_child(Element::new("additional-data", ns::SASL2).with_text(b64));
        }
        if let Some(token) = self.fast_token(&req, &user, &fast) {
            success = success.with_child(token);
        }
        // XEP-0198 inline resumption first (XEP-0386 §3.2's note): when it
        // succeeds, any bind request is ignored.
        let mut sm_failed = None;
        let resume = req
            .child("resume", ns::SM)
            .filter(|_| self.server.live().sm.is_some());
        if let Some(resume) = resume {
            match take_over(&self.server, resume, &bare).await {
                Resumption::Taken {
                    handle,
                    queue,
                    resumed,
                } => {
                    tracing::info!(peer = %self.peer, "session resumed inline (SASL2): {}", handle.jid);
                    let success = success
                        .with_child(authorization_identifier(&handle.jid.to_string()))
                        .with_child(resumed);
                    // The writer sends the <success/> first, then the
                    // unacknowledged stanzas again.
                    return Ok(Some(self.hand_over(handle, queue, Some(success))));
                }
                Resumption::Refused(failed) => sm_failed = Some(failed),
            }
        }
        if let Some(bind) = req.child("bind", ns::BIND2) {
            return self.bind2(bind, success, sm_failed).await;
        }
        success = success.with_child(authorization_identifier(&bare));
        if let Some(failed) = sm_failed {
            success = success.with_child(failed);
        }
        let xml = self.framing.to_xml(&success) + &self.framing.to_xml(&self.features());
        self.send(&xml).await?;
        Ok(None)
    }
}

fn authorization_identifier(jid: &str) -> Element {
    Element::new("authorization-identifier", ns::SASL2).with_text(jid)
}
