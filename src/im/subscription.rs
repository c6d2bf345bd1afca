//! The presence subscription state machine of RFC 6121 Appendix A, as pure
//! functions, and the `jabber:iq:roster` item elements of roster pushes.
//!
//! A subscription between a user and a contact is one of the nine states of
//! Appendix A.1, seen from the user's side, kept in a [`SubState`]:
//! `subscription` (None / To / From / Both), `ask` ("Pending Out": the user
//! asked to subscribe to the contact) and `pending_in` ("Pending In": the
//! contact asked to subscribe to the user), plus `approved`, the user's
//! pre-approval of a future request from the contact (§3.4). A contact that
//! is not in the roster is in state "None" (the A.1 implementation note);
//! callers pass `None` for it, or a state with `pending_in` set when they
//! hold a pending request from that contact outside the roster.
//!
//! [`outbound`] applies Appendix A.2 (the user sends `subscribe`,
//! `subscribed`, `unsubscribe` or `unsubscribed` to the contact) and
//! [`inbound`] Appendix A.3 (such a stanza from the contact reaches the
//! user's server). Both return the new state and what the server must do:
//! route or deliver the stanza, push the roster item, auto-reply.
//!
//! Beyond the tables, following §3.1.3 and §3.4: an outbound `subscribed`
//! with no request to answer records a pre-approval (creating the roster
//! item if needed); an inbound `subscribe` that was pre-approved, or from a
//! contact already subscribed, is answered `subscribed` by the server
//! without bothering the user; an outbound `unsubscribed` cancels a
//! pre-approval.

use xep_support::Element;

use crate::storage::{RosterItem, Subscription};

/// The roster namespace (RFC 6121 §2).
const NS_ROSTER: &str = "jabber:iq:roster";

/// A subscription state of RFC 6121 Appendix A.1, from the user's side.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SubState {
    /// None / To / From / Both.
    pub subscription: Subscription,
    /// "Pending Out": the user asked to subscribe, no answer yet.
    pub ask: bool,
    /// "Pending In": the contact asked to subscribe, the user has not
    /// answered.
    pub pending_in: bool,
    /// The user pre-approved a subscription request from the contact.
    pub approved: bool,
}

impl Default for SubState {
    /// State "None", as for a contact not in the roster.
    fn default() -> Self {
        SubState {
            subscription: Subscription::None,
            ask: false,
            pending_in: false,
            approved: false,
        }
    }
}

impl SubState {
    /// What a roster push shows of the state (`pending_in` is not shown).
    fn visible(&self) -> (&Subscription, bool, bool) {
        (&self.subscription, self.ask, self.approved)
    }
}

/// The four subscription-related presence types.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SubKind {
    Subscribe,
    Subscribed,
    Unsubscribe,
    Unsubscribed,
}

impl SubKind {
    /// The kind named by a presence `type` attribute, if it is one of the four.
    pub fn parse(type_attr: &str) -> Option<SubKind> {
        match type_attr {
            "subscribe" => Some(SubKind::Subscribe),
            "subscribed" => Some(SubKind::Subscribed),
            "unsubscribe" => Some(SubKind::Unsubscribe),
            "unsubscribed" => Some(SubKind::Unsubscribed),
            _ => None,
        }
    }

    /// The presence `type` attribute value.
    pub fn as_str(&self) -> &'static str {
        match self {
            SubKind::Subscribe => "subscribe",
            SubKind::Subscribed => "subscribed",
            SubKind::Unsubscribe => "unsubscribe",
            SubKind::Unsubscribed => "unsubscribed",
        }
    }
}

/// What the user's server does with a subscription stanza the user sends
/// (Appendix A.2).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Outbound {
    /// The state afterwards.
    pub new_state: SubState,
    /// Route the stanza to the contact (stamped with the user's bare JID).
    pub route: bool,
    /// Push the changed roster item to the user's interested resources.
    pub push: bool,
    /// Create the roster item if the contact is not in the roster yet.
    pub create_item: bool,
}

/// What the user's server does with a subscription stanza from the contact
/// (Appendix A.3).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Inbound {
    /// The state afterwards.
    pub new_state: SubState,
    /// Deliver the stanza to the user's available resources (for
    /// `subscribe`: and keep it as a pending request until answered).
    pub deliver: bool,
    /// Push the changed roster item to the user's interested resources.
    pub push: bool,
    /// Answer `subscribed` to the contact on the user's behalf (the contact
    /// is already subscribed, or the user pre-approved it).
    pub auto_reply_subscribed: bool,
    /// Create the roster item if the contact is not in the roster yet.
    pub create_item: bool,
}

/// Whether a roster push is due: the item is new, or what it shows changed.
fn push_due(current: Option<&SubState>, new: &SubState, create_item: bool) -> bool {
    match current {
        Some(old) => old.visible() != new.visible(),
        None => create_item,
    }
}

/// The user sends `kind` to the contact, whose current state is `current`
/// (`None`: not in the roster). RFC 6121 Appendix A.2.
pub fn outbound(current: Option<&SubState>, kind: SubKind) -> Outbound {
    let old = current.cloned().unwrap_or_default();
    let to = old.subscription.has_to();
    let from = old.subscription.has_from();
    let mut new = old.clone();
    let (route, create_item) = match kind {
        // A.2.1: always routed (the contact's server may have lost the
        // state; it auto-replies if we are already subscribed); Pending Out
        // unless already subscribed to the contact.
        SubKind::Subscribe => {
            if !to {
                new.ask = true;
            }
            (true, true)
        }
        // A.2.2: approves a pending request; otherwise, without a
        // subscription from the contact, records a pre-approval (§3.4).
        SubKind::Subscribed => {
            if from {
                (false, false)
            } else if old.pending_in {
                new.subscription = Subscription::from_halves(to, true);
                new.pending_in = false;
                new.approved = false;
                (true, true)
            } else {
                new.approved = true;
                (false, true)
            }
        }
        // A.2.3: always routed; drops the "to" half and Pending Out.
        SubKind::Unsubscribe => {
            new.subscription = Subscription::from_halves(false, from);
            new.ask = false;
            (true, false)
        }
        // A.2.4: routed if it cancels the contact's subscription or denies
        // a pending request; also cancels a pre-approval.
        SubKind::Unsubscribed => {
            new.subscription = Subscription::from_halves(to, false);
            new.pending_in = false;
            new.approved = false;
            (from || old.pending_in, false)
        }
    };
    Outbound {
        push: push_due(current, &new, create_item),
        new_state: new,
        route,
        create_item,
    }
}

/// A `kind` stanza from the contact reaches the user's server; the
/// contact's current state in the user's roster is `current` (`None`: not
/// in the roster). RFC 6121 Appendix A.3.
pub fn inbound(current: Option<&SubState>, kind: SubKind) -> Inbound {
    let old = current.cloned().unwrap_or_default();
    let to = old.subscription.has_to();
    let from = old.subscription.has_from();
    let mut new = old.clone();
    let mut auto_reply_subscribed = false;
    let deliver = match kind {
        // A.3.1 (and §3.1.3, §3.4).
        SubKind::Subscribe => {
            if from {
                // Already subscribed: the server answers, the user is not asked.
                auto_reply_subscribed = true;
                false
            } else if old.approved {
                // Pre-approved: subscription granted at once.
                new.subscription = Subscription::from_halves(to, true);
                new.approved = false;
                new.pending_in = false;
                auto_reply_subscribed = true;
                false
            } else if old.pending_in {
                // Already pending: the user has it.
                false
            } else {
                new.pending_in = true;
                true
            }
        }
        // A.3.2: only answers a request of ours; otherwise ignored.
        SubKind::Subscribed => {
            if old.ask && !to {
                new.subscription = Subscription::from_halves(true, from);
                new.ask = false;
                true
            } else {
                false
            }
        }
        // A.3.3: the contact cancels its subscription (or its request).
        SubKind::Unsubscribe => {
            if from || old.pending_in {
                new.subscription = Subscription::from_halves(to, false);
                new.pending_in = false;
                true
            } else {
                false
            }
        }
        // A.3.4: the contact cancels our subscription (or denies our request).
        SubKind::Unsubscribed => {
            if to || old.ask {
                new.subscription = Subscription::from_halves(false, from);
                new.ask = false;
                true
            } else {
                false
            }
        }
    };
    // A contact never gets into the user's roster by its own stanzas
    // (§3.1.3): a request from outside the roster is kept as pending only.
    let create_item = false;
    Inbound {
        push: push_due(current, &new, create_item),
        new_state: new,
        deliver,
        auto_reply_subscribed,
        create_item,
    }
}

/// The `<item/>` of a roster result or push (RFC 6121 §2.1):
/// `<item xmlns='jabber:iq:roster' jid=.. name=.. subscription=..
/// ask='subscribe'? approved='true'?><group>..</group></item>`.
pub fn roster_item_xml(item: &RosterItem) -> Element {
    let mut el = Element::new("item", NS_ROSTER).with_attr("jid", item.jid.as_str());
    if let Some(name) = &item.name {
        el.set_attr("name", name.as_str());
    }
    el.set_attr("subscription", item.subscription.as_str());
    if item.ask {
        el.set_attr("ask", "subscribe");
    }
    if item.approved {
        el.set_attr("approved", "true");
    }
    for group in &item.groups {
        el = el.with_child(Element::new("group", NS_ROSTER).with_text(group.as_str()));
    }
    el
}

/// The `<item/>` of a push announcing that `jid` left the roster
/// (`subscription='remove'`, §2.5).
pub fn removed_item_xml(jid: &str) -> Element {
    Element::new("item", NS_ROSTER)
        .with_attr("jid", jid)
        .with_attr("subscription", "remove")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The states of Appendix A.1 by name; " (approved)" adds pre-approval.
    fn state(name: &str) -> SubState {
        let (name, approved) = match name.strip_suffix(" (approved)") {
            Some(n) => (n, true),
            None => (name, false),
        };
        let (subscription, ask, pending_in) = match name {
            "None" => (Subscription::None, false, false),
            "None + Pending Out" => (Subscription::None, true, false),
            "None + Pending In" => (Subscription::None, false, true),
            "None + Pending Out/In" => (Subscription::None, true, true),
            "To" => (Subscription::To, false, false),
            "To + Pending In" => (Subscription::To, false, true),
            "From" => (Subscription::From, false, false),
            "From + Pending Out" => (Subscription::From, true, false),
            "Both" => (Subscription::Both, false, false),
            other => panic!("unknown state {other}"),
        };
        SubState {
            subscription,
            ask,
            pending_in,
            approved,
        }
    }

    /// One row of an A.2 table: `route` and the new state (`to` = `from`
    /// for "no state change").
    fn check_out(kind: SubKind, from: &str, route: bool, to: &str) {
        let old = state(from);
        let out = outbound(Some(&old), kind);
        assert_eq!(out.route, route, "{kind:?} from {from}: route");
        assert_eq!(out.new_state, state(to), "{kind:?} from {from}: state");
        assert_eq!(
            out.push,
            old.visible() != out.new_state.visible(),
            "{kind:?} from {from}: push"
        );
    }

    /// One row of an A.3 table: `deliver` and the new state.
    fn check_in(kind: SubKind, from: &str, deliver: bool, to: &str) {
        let old = state(from);
        let inb = inbound(Some(&old), kind);
        assert_eq!(inb.deliver, deliver, "{kind:?} from {from}: deliver");
        assert_eq!(inb.new_state, state(to), "{kind:?} from {from}: state");
        assert_eq!(
            inb.push,
            old.visible() != inb.new_state.visible(),
            "{kind:?} from {from}: push"
        );
        assert!(!inb.create_item);
    }

    macro_rules! rows {
        ($check:ident, $kind:ident: $($test:ident: $from:literal => $flag:literal, $to:literal;)*) => {
            $(
                #[test]
                fn $test() {
                    $check(SubKind::$kind, $from, $flag, $to);
                }
            )*
        };
    }

    // A.2.1 Outbound "subscribe".
    rows!(check_out, Subscribe:
        a2_1_none: "None" => true, "None + Pending Out";
        a2_1_none_pending_out: "None + Pending Out" => true, "None + Pending Out";
        a2_1_none_pending_in: "None + Pending In" => true, "None + Pending Out/In";
        a2_1_none_pending_out_in: "None + Pending Out/In" => true, "None + Pending Out/In";
        a2_1_to: "To" => true, "To";
        a2_1_to_pending_in: "To + Pending In" => true, "To + Pending In";
        a2_1_from: "From" => true, "From + Pending Out";
        a2_1_from_pending_out: "From + Pending Out" => true, "From + Pending Out";
        a2_1_both: "Both" => true, "Both";
    );

    // A.2.2 Outbound "subscribed" (pre-approval where nothing is pending).
    rows!(check_out, Subscribed:
        a2_2_none: "None" => false, "None (approved)";
        a2_2_none_pending_out: "None + Pending Out" => false, "None + Pending Out (approved)";
        a2_2_none_pending_in: "None + Pending In" => true, "From";
        a2_2_none_pending_out_in: "None + Pending Out/In" => true, "From + Pending Out";
        a2_2_to: "To" => false, "To (approved)";
        a2_2_to_pending_in: "To + Pending In" => true, "Both";
        a2_2_from: "From" => false, "From";
        a2_2_from_pending_out: "From + Pending Out" => false, "From + Pending Out";
        a2_2_both: "Both" => false, "Both";
    );

    // A.2.3 Outbound "unsubscribe".
    rows!(check_out, Unsubscribe:
        a2_3_none: "None" => true, "None";
        a2_3_none_pending_out: "None + Pending Out" => true, "None";
        a2_3_none_pending_in: "None + Pending In" => true, "None + Pending In";
        a2_3_none_pending_out_in: "None + Pending Out/In" => true, "None + Pending In";
        a2_3_to: "To" => true, "None";
        a2_3_to_pending_in: "To + Pending In" => true, "None + Pending In";
        a2_3_from: "From" => true, "From";
        a2_3_from_pending_out: "From + Pending Out" => true, "From";
        a2_3_both: "Both" => true, "From";
    );

    // A.2.4 Outbound "unsubscribed".
    rows!(check_out, Unsubscribed:
        a2_4_none: "None" => false, "None";
        a2_4_none_pending_out: "None + Pending Out" => false, "None + Pending Out";
        a2_4_none_pending_in: "None + Pending In" => true, "None";
        a2_4_none_pending_out_in: "None + Pending Out/In" => true, "None + Pending Out";
        a2_4_to: "To" => false, "To";
        a2_4_to_pending_in: "To + Pending In" => true, "To";
        a2_4_from: "From" => true, "None";
        a2_4_from_pending_out: "From + Pending Out" => true, "None + Pending Out";
        a2_4_both: "Both" => true, "To";
    );

    // A.3.1 Inbound "subscribe".
    rows!(check_in, Subscribe:
        a3_1_none: "None" => true, "None + Pending In";
        a3_1_none_pending_out: "None + Pending Out" => true, "None + Pending Out/In";
        a3_1_none_pending_in: "None + Pending In" => false, "None + Pending In";
        a3_1_none_pending_out_in: "None + Pending Out/In" => false, "None + Pending Out/In";
        a3_1_to: "To" => true, "To + Pending In";
        a3_1_to_pending_in: "To + Pending In" => false, "To + Pending In";
        a3_1_from: "From" => false, "From";
        a3_1_from_pending_out: "From + Pending Out" => false, "From + Pending Out";
        a3_1_both: "Both" => false, "Both";
    );

    // A.3.2 Inbound "subscribed".
    rows!(check_in, Subscribed:
        a3_2_none: "None" => false, "None";
        a3_2_none_pending_out: "None + Pending Out" => true, "To";
        a3_2_none_pending_in: "None + Pending In" => false, "None + Pending In";
        a3_2_none_pending_out_in: "None + Pending Out/In" => true, "To + Pending In";
        a3_2_to: "To" => false, "To";
        a3_2_to_pending_in: "To + Pending In" => false, "To + Pending In";
        a3_2_from: "From" => false, "From";
        a3_2_from_pending_out: "From + Pending Out" => true, "Both";
        a3_2_both: "Both" => false, "Both";
    );

    // A.3.3 Inbound "unsubscribe".
    rows!(check_in, Unsubscribe:
        a3_3_none: "None" => false, "None";
        a3_3_none_pending_out: "None + Pending Out" => false, "None + Pending Out";
        a3_3_none_pending_in: "None + Pending In" => true, "None";
        a3_3_none_pending_out_in: "None + Pending Out/In" => true, "None + Pending Out";
        a3_3_to: "To" => false, "To";
        a3_3_to_pending_in: "To + Pending In" => true, "To";
        a3_3_from: "From" => true, "None";
        a3_3_from_pending_out: "From + Pending Out" => true, "None + Pending Out";
        a3_3_both: "Both" => true, "To";
    );

    // A.3.4 Inbound "unsubscribed".
    rows!(check_in, Unsubscribed:
        a3_4_none: "None" => false, "None";
        a3_4_none_pending_out: "None + Pending Out" => true, "None";
        a3_4_none_pending_in: "None + Pending In" => false, "None + Pending In";
        a3_4_none_pending_out_in: "None + Pending Out/In" => true, "None + Pending In";
        a3_4_to: "To" => true, "None";
        a3_4_to_pending_in: "To + Pending In" => true, "None + Pending In";
        a3_4_from: "From" => false, "From";
        a3_4_from_pending_out: "From + Pending Out" => true, "From";
        a3_4_both: "Both" => true, "From";
    );

    #[test]
    fn inbound_subscribe_auto_replies_only_when_already_subscribed() {
        for name in ["From", "From + Pending Out", "Both"] {
            let inb = inbound(Some(&state(name)), SubKind::Subscribe);
            assert!(inb.auto_reply_subscribed, "{name}");
            assert!(!inb.deliver && !inb.push, "{name}");
        }
        for name in [
            "None",
            "None + Pending Out",
            "None + Pending In",
            "To",
            "To + Pending In",
        ] {
            assert!(
                !inbound(Some(&state(name)), SubKind::Subscribe).auto_reply_subscribed,
                "{name}"
            );
        }
        for kind in [
            SubKind::Subscribed,
            SubKind::Unsubscribe,
            SubKind::Unsubscribed,
        ] {
            assert!(!inbound(Some(&state("Both")), kind).auto_reply_subscribed);
        }
    }

    #[test]
    fn pre_approved_subscribe_is_granted_at_once() {
        for (from, to) in [
            ("None (approved)", "From"),
            ("None + Pending Out (approved)", "From + Pending Out"),
            ("To (approved)", "Both"),
        ] {
            let inb = inbound(Some(&state(from)), SubKind::Subscribe);
            assert_eq!(inb.new_state, state(to), "{from}");
            assert!(inb.auto_reply_subscribed, "{from}");
            assert!(!inb.deliver, "{from}");
            assert!(inb.push, "{from}");
        }
    }

    #[test]
    fn subscribe_from_outside_the_roster_creates_no_item() {
        let inb = inbound(None, SubKind::Subscribe);
        assert!(inb.deliver);
        assert!(!inb.create_item);
        assert!(!inb.push);
        assert!(!inb.auto_reply_subscribed);
        assert_eq!(inb.new_state, state("None + Pending In"));
        // And nothing else from a stranger is delivered or changes anything.
        for kind in [
            SubKind::Subscribed,
            SubKind::Unsubscribe,
            SubKind::Unsubscribed,
        ] {
            let inb = inbound(None, kind);
            assert!(!inb.deliver && !inb.push && !inb.create_item, "{kind:?}");
            assert_eq!(inb.new_state, SubState::default());
        }
    }

    #[test]
    fn outbound_to_contacts_outside_the_roster() {
        // subscribe adds the contact with ask='subscribe' and pushes it.
        let out = outbound(None, SubKind::Subscribe);
        assert!(out.route && out.create_item && out.push);
        assert_eq!(out.new_state, state("None + Pending Out"));
        // subscribed pre-approves, creating the item (§3.4).
        let out = outbound(None, SubKind::Subscribed);
        assert!(!out.route && out.create_item && out.push);
        assert_eq!(out.new_state, state("None (approved)"));
        // Approving a request known only as pending (no roster item yet).
        let out = outbound(Some(&state("None + Pending In")), SubKind::Subscribed);
        assert!(out.route && out.create_item && out.push);
        assert_eq!(out.new_state, state("From"));
        // unsubscribe is routed but creates nothing; unsubscribed is not routed.
        let out = outbound(None, SubKind::Unsubscribe);
        assert!(out.route && !out.create_item && !out.push);
        let out = outbound(None, SubKind::Unsubscribed);
        assert!(!out.route && !out.create_item && !out.push);
        // Denying a request known only as pending is routed.
        let out = outbound(Some(&state("None + Pending In")), SubKind::Unsubscribed);
        assert!(out.route && !out.create_item && !out.push);
        assert_eq!(out.new_state, state("None"));
    }

    #[test]
    fn unsubscribed_cancels_pre_approval() {
        let out = outbound(Some(&state("None (approved)")), SubKind::Unsubscribed);
        assert_eq!(out.new_state, state("None"));
        assert!(!out.route);
        assert!(out.push);
        // Repeating a pre-approval changes nothing.
        let out = outbound(Some(&state("To (approved)")), SubKind::Subscribed);
        assert_eq!(out.new_state, state("To (approved)"));
        assert!(!out.push && !out.route);
    }

    #[test]
    fn pending_in_alone_is_not_pushed() {
        // The user's roster does not show Pending In (§3.1.3).
        let inb = inbound(Some(&state("None")), SubKind::Subscribe);
        assert!(!inb.push);
        let inb = inbound(Some(&state("None + Pending In")), SubKind::Unsubscribe);
        assert!(inb.deliver && !inb.push);
    }

    #[test]
    fn kinds_parse_and_print() {
        for kind in [
            SubKind::Subscribe,
            SubKind::Subscribed,
            SubKind::Unsubscribe,
            SubKind::Unsubscribed,
        ] {
            assert_eq!(SubKind::parse(kind.as_str()), Some(kind));
        }
        for other in ["", "probe", "unavailable", "error", "Subscribe"] {
            assert_eq!(SubKind::parse(other), None);
        }
    }

    #[test]
    fn roster_item_elements() {
        let item = RosterItem {
            jid: "bob@ex".into(),
            name: Some("Bob & co".into()),
            groups: vec!["Friends".into(), "Work".into()],
            subscription: Subscription::None,
            ask: true,
            approved: true,
            pending_in: true,
            ver: 9,
        };
        let el = roster_item_xml(&item);
        assert!(el.is("item", "jabber:iq:roster"));
        assert_eq!(
            el.to_xml("jabber:iq:roster"),
            "<item jid='bob@ex' name='Bob &amp; co' subscription='none' ask='subscribe' \
             approved='true'><group>Friends</group><group>Work</group></item>"
        );
        let plain = RosterItem {
            name: None,
            groups: vec![],
            subscription: Subscription::Both,
            ask: false,
            approved: false,
            ..item
        };
        assert_eq!(
            roster_item_xml(&plain).to_xml("jabber:client"),
            "<item xmlns='jabber:iq:roster' jid='bob@ex' subscription='both'/>"
        );
        for (s, name) in [(Subscription::To, "to"), (Subscription::From, "from")] {
            let i = RosterItem {
                subscription: s,
                ..plain.clone()
            };
            assert_eq!(roster_item_xml(&i).attr("subscription"), Some(name));
        }
        assert_eq!(
            removed_item_xml("carol@ex").to_xml("jabber:iq:roster"),
            "<item jid='carol@ex' subscription='remove'/>"
        );
    }
}
