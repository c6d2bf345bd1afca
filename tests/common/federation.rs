//! What every federation test checks first, whoever the remote server is:
//! `alice@rookery.test/pc` and `pat@DOMAIN/laptop` exchange messages both
//! ways, then subscribe to each other and see each other's presence.

use super::client::Client;

pub async fn chat_and_subscribe(alice: &mut Client, pat: &mut Client, domain: &str) {
    let pat_bare = format!("pat@{domain}");
    let pat_full = format!("pat@{domain}/laptop");
    alice
        .send(&format!(
            "<message to='{pat_bare}' type='chat'><body>hi pat</body></message>"
        ))
        .await;
    let m = pat.recv_message().await;
    assert_eq!(m.attr("from"), Some("alice@rookery.test/pc"), "{m}");
    assert_eq!(m.child_text("body"), Some("hi pat"));
    pat.send("<message to='alice@rookery.test/pc' type='chat'><body>hi alice</body></message>")
        .await;
    let m = alice.recv_message().await;
    assert_eq!(m.attr("from"), Some(pat_full.as_str()), "{m}");
    assert_eq!(m.child_text("body"), Some("hi alice"));

    // Subscription alice -> pat, with presence.
    alice
        .send(&format!("<presence to='{pat_bare}' type='subscribe'/>"))
        .await;
    let s = pat
        .recv_where("subscribe", |e| {
            e.name == "presence" && e.attr("type") == Some("subscribe")
        })
        .await;
    assert_eq!(s.attr("from"), Some("alice@rookery.test"));
    pat.send("<presence to='alice@rookery.test' type='subscribed'/>")
        .await;
    alice
        .recv_where("pat's presence", |e| {
            e.name == "presence"
                && e.attr("type").is_none()
                && e.attr("from") == Some(pat_full.as_str())
        })
        .await;
    // And pat -> alice.
    pat.send("<presence to='alice@rookery.test' type='subscribe'/>")
        .await;
    let s = alice
        .recv_where("subscribe", |e| {
            e.name == "presence" && e.attr("type") == Some("subscribe")
        })
        .await;
    assert_eq!(s.attr("from"), Some(pat_bare.as_str()));
    alice
        .send(&format!("<presence to='{pat_bare}' type='subscribed'/>"))
        .await;
    pat.recv_where("alice's presence", |e| {
        e.name == "presence"
            && e.attr("type").is_none()
            && e.attr("from") == Some("alice@rookery.test/pc")
    })
    .await;
}
