//! Integration tests of offline message storage (XEP-0160, RFC 6121 §8.5.2.2)
//! and of message ordering on the real `rookery` binary.
//!
//! Storage: messages for an account without available resource are stored
//! with a XEP-0203 `<delay/>` and handed over after the next initial
//! presence, in order and exactly once; chat-state-only, headline and error
//! messages are not stored; the per-user limit
//! (`shaper_rules: max_user_offline_messages`) bounces the excess; stored
//! messages survive a SIGKILL of the server, also when it is killed in the
//! middle of traffic (every message confirmed by a later ping round trip
//! must arrive exactly once, and nothing twice). Ordering: 10,000 messages
//! between two online users, 1,000 stored messages, and live messages sent
//! while the recipient comes online, all arrive in the order sent.

use crate::common;

use std::collections::HashSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::im::*;
use common::*;
use tokio::time::Instant;

const B: &str = "bob@localhost";

/// Messages among `els` carrying a body, as (element, body).
fn messages(els: &[Element]) -> Vec<(&Element, &str)> {
    els.iter()
        .filter(|e| e.name == "message")
        .filter_map(|e| e.child_text("body").map(|b| (e, b)))
        .collect()
}

/// `count` chat messages to `to` with bodies `{prefix}{i}` for i in
/// `start..start + count`, written in chunks of 100 stanzas.
async fn send_numbered(c: &mut Client, to: &str, prefix: &str, start: usize, count: usize) {
    let mut i = start;
    while i < start + count {
        let end = (i + 100).min(start + count);
        let chunk: String = (i..end)
            .map(|n| chat(to, &format!("{prefix}{n}"), &format!("{prefix}{n}")))
            .collect();
        c.send(&chunk).await;
        i = end;
    }
}

/// Indices `n` of bodies `{prefix}{n}` in `els`, in arrival order.
fn numbered(els: &[Element], prefix: &str) -> Vec<usize> {
    messages(els)
        .into_iter()
        .filter_map(|(_, b)| b.strip_prefix(prefix).and_then(|n| n.parse().ok()))
        .collect()
}

/// Asserts `got` is exactly `0..n`.
fn assert_sequence(got: &[usize], n: usize, ctx: &str) {
    if got.len() == n && got.iter().enumerate().all(|(i, &v)| i == v) {
        return;
    }
    let mut seen = HashSet::new();
    let dups: Vec<usize> = got.iter().copied().filter(|v| !seen.insert(*v)).collect();
    let missing: Vec<usize> = (0..n).filter(|v| !seen.contains(v)).collect();
    let first_disorder = got.windows(2).position(|w| w[1] <= w[0]);
    panic!(
        "{ctx}: expected 0..{n} in order; got {} messages, duplicates {:?}, missing {:?} \
         (first {} shown), first disorder at position {first_disorder:?}",
        got.len(),
        &dups[..dups.len().min(20)],
        &missing[..missing.len().min(20)],
        missing.len().min(20)
    );
}

/// A server whose users may each keep at most `n` offline messages.
fn server_with_offline_limit(n: usize) -> Server {
    let s = Server::start_with_yaml_edit(Config::default(), |y| {
        let marker = "shaper_rules:\n";
        assert!(
            y.contains(marker),
            "rendered config has no shaper_rules: {y}"
        );
        y.replacen(
            marker,
            &format!("{marker}  max_user_offline_messages: {n}\n"),
            1,
        )
    });
    s.register(ALICE.0, "localhost", ALICE.1);
    s.register(BOB.0, "localhost", BOB.1);
    s
}

#[test]
fn xep0082_stamp_parser() {
    assert_eq!(parse_stamp("1970-01-01T00:00:00Z"), Some(0));
    assert_eq!(parse_stamp("2024-01-01T00:00:00.123Z"), Some(1_704_067_200));
    assert_eq!(
        parse_stamp("2024-01-01T01:00:00+01:00"),
        Some(1_704_067_200)
    );
    assert_eq!(parse_stamp("2024-01-01 00:00:00Z"), None);
    assert_eq!(parse_stamp("2024-01-01T00:00:00"), None);
}

#[tokio::test]
async fn offline_messages_delivered_after_initial_presence_in_order_once() {
    let server = server_with_users();
    let t0 = now_secs();
    let mut alice = online(&server, ALICE, "a1").await;
    let tag = unique("off");
    let sent = [
        format!("<message to='{B}' type='chat' id='o0'><body>{tag}-0</body></message>"),
        format!("<message to='{B}' id='o1'><body>{tag}-1</body></message>"),
        format!("<message to='{B}' type='normal' id='o2'><subject>s</subject><body>{tag}-2</body></message>"),
        // A full JID of a resource that does not exist: as to the bare JID.
        format!("<message to='bob@localhost/gone' type='chat' id='o3'><body>{tag}-3</body></message>"),
        format!("<message to='{B}' type='chat' id='o4'><body>{tag}-4</body><thread>th</thread></message>"),
    ];
    for s in &sent {
        alice.send(s).await;
    }
    let back = sync(&mut alice).await;
    assert!(
        back.iter().all(|e| e.name != "message"),
        "messages for an offline user were answered: {}",
        show(&back)
    );

    let mut bob = login(&server, BOB, "b1").await;
    let before = sync(&mut bob).await;
    assert!(
        messages(&before).is_empty(),
        "offline messages delivered before initial presence: {}",
        show(&before)
    );
    bob.send("<presence/>").await;
    let got = sync(&mut bob).await;
    let msgs = messages(&got);
    let bodies: Vec<&str> = msgs.iter().map(|(_, b)| *b).collect();
    let want: Vec<String> = (0..5).map(|i| format!("{tag}-{i}")).collect();
    assert_eq!(bodies, want, "offline messages: {}", show(&got));
    for (i, (m, _)) in msgs.iter().enumerate() {
        assert_eq!(m.attr("from"), Some("alice@localhost/a1"), "{m}");
        assert_eq!(m.attr("id"), Some(format!("o{i}").as_str()), "{m}");
        assert_offline_delay(m, t0);
    }
    assert_eq!(msgs[0].0.attr("type"), Some("chat"));
    assert!(matches!(msgs[1].0.attr("type"), None | Some("normal")));
    assert_eq!(msgs[2].0.child_text("subject"), Some("s"));
    assert_eq!(msgs[4].0.child_text("thread"), Some("th"));

    // Exactly once: neither this session nor the next gets them again.
    let again = sync(&mut bob).await;
    assert!(messages(&again).is_empty(), "{}", show(&again));
    bob.close().await;
    let (mut bob, got) = online_with(&server, BOB, "b2", "<presence/>").await;
    assert!(
        messages(&got).is_empty(),
        "offline messages delivered twice: {}",
        show(&got)
    );
    // Live messages to the now-available bob carry no delay.
    let live = unique("live");
    alice.send(&chat(B, "l1", &live)).await;
    let m = bob.recv_message().await;
    assert_eq!(m.child_text("body"), Some(live.as_str()), "{m}");
    assert!(
        m.child_ns("delay", NS_DELAY).is_none(),
        "live message with delay: {m}"
    );
}

#[tokio::test]
async fn second_resource_does_not_get_already_delivered_offline_messages() {
    let server = server_with_users();
    let mut alice = online(&server, ALICE, "a1").await;
    send_numbered(&mut alice, B, "once-", 0, 20).await;
    sync(&mut alice).await;
    let (_b1, got) = online_with(&server, BOB, "b1", "<presence/>").await;
    assert_sequence(&numbered(&got, "once-"), 20, "first resource");
    let (_b2, got) = online_with(&server, BOB, "b2", "<presence/>").await;
    assert!(
        numbered(&got, "once-").is_empty(),
        "second resource got offline messages again: {}",
        show(&got)
    );
}

#[tokio::test]
async fn chat_states_headlines_and_errors_are_not_stored() {
    let server = server_with_users();
    let mut alice = online(&server, ALICE, "a1").await;
    alice
        .send(&format!(
            "<message to='{B}' type='chat' id='cs1'><composing xmlns='{NS_CHATSTATES}'/></message>\
             <message to='{B}' type='chat' id='cs2'><active xmlns='{NS_CHATSTATES}'/></message>\
             <message to='{B}' type='headline' id='h1'><body>headline body</body></message>\
             <message to='{B}' type='error' id='e1'><body>error body</body>\
             <error type='cancel'><item-not-found xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error></message>\
             <message to='{B}' type='chat' id='k1'><body>kept</body><active xmlns='{NS_CHATSTATES}'/></message>"
        ))
        .await;
    let back = sync(&mut alice).await;
    assert!(
        back.iter().all(|e| e.name != "message"),
        "unstorable messages must be dropped silently: {}",
        show(&back)
    );
    let (mut bob, got) = online_with(&server, BOB, "b1", "<presence/>").await;
    let msgs: Vec<&Element> = got.iter().filter(|e| e.name == "message").collect();
    assert_eq!(
        msgs.len(),
        1,
        "only the message with a body may be stored: {}",
        show(&got)
    );
    assert_eq!(msgs[0].attr("id"), Some("k1"), "{}", msgs[0]);
    assert_eq!(msgs[0].child_text("body"), Some("kept"));
    bob.close().await;
    let (_bob, got) = online_with(&server, BOB, "b2", "<presence/>").await;
    assert!(got.iter().all(|e| e.name != "message"), "{}", show(&got));
}

#[tokio::test]
async fn offline_limit_bounces_the_excess() {
    let server = server_with_offline_limit(3);
    let mut alice = online(&server, ALICE, "a1").await;
    for i in 0..5 {
        alice
            .send(&chat(B, &format!("q{i}"), &format!("lim-{i}")))
            .await;
    }
    let back = sync(&mut alice).await;
    let errors: Vec<&Element> = back
        .iter()
        .filter(|e| e.name == "message" && e.attr("type") == Some("error"))
        .collect();
    let ids: Vec<&str> = errors.iter().filter_map(|e| e.attr("id")).collect();
    assert_eq!(
        ids,
        vec!["q3", "q4"],
        "errors for the messages beyond the limit of 3: {}",
        show(&back)
    );
    for e in &errors {
        let (_, cond) = e.stanza_error().unwrap_or_else(|| panic!("{e}"));
        assert!(
            cond == "resource-constraint" || cond == "service-unavailable",
            "condition {cond}: {e}"
        );
        assert_eq!(e.attr("from"), Some(B), "{e}");
    }
    let (mut bob, got) = online_with(&server, BOB, "b1", "<presence/>").await;
    assert_sequence(&numbered(&got, "lim-"), 3, "stored messages");
    bob.close().await;

    // Delivered messages free the space.
    alice.send(&chat(B, "q5", "lim-again")).await;
    let back = sync(&mut alice).await;
    assert!(back.iter().all(|e| e.name != "message"), "{}", show(&back));
    let (_bob, got) = online_with(&server, BOB, "b2", "<presence/>").await;
    let b: Vec<&str> = messages(&got).into_iter().map(|(_, b)| b).collect();
    assert_eq!(b, vec!["lim-again"], "{}", show(&got));
}

#[tokio::test]
async fn offline_messages_survive_sigkill() {
    const M: usize = 200;
    let mut server = server_with_users();
    let mut alice = online(&server, ALICE, "a1").await;
    send_numbered(&mut alice, B, "dur-", 0, M).await;
    let back = sync(&mut alice).await; // the server has handled all M
    assert!(back.iter().all(|e| e.name != "message"), "{}", show(&back));
    let st = server.kill_hard();
    assert!(!st.success(), "SIGKILL'd server exited successfully?");
    drop(alice);
    server.restart();

    let (mut bob, got) = online_with(&server, BOB, "b1", "<presence/>").await;
    assert_sequence(&numbered(&got, "dur-"), M, "after SIGKILL and restart");
    bob.close().await;
    let (_bob, got) = online_with(&server, BOB, "b2", "<presence/>").await;
    assert!(
        numbered(&got, "dur-").is_empty(),
        "delivered again at the next login: {} messages",
        numbered(&got, "dur-").len()
    );
}

/// Sends numbered messages in batches of 20, each batch followed by a ping;
/// returns `(sent, confirmed)`: how many were written and how many were
/// followed by an answered ping, stopping at the first I/O failure.
async fn send_until_killed(
    c: &mut Client,
    confirmed_out: &AtomicUsize,
    limit: usize,
) -> (usize, usize) {
    let mut sent = 0;
    let mut confirmed = 0;
    let deadline = Instant::now() + Duration::from_secs(60);
    while sent < limit && Instant::now() < deadline {
        let batch: String = (sent..sent + 20)
            .map(|n| chat(B, &format!("k{n}"), &format!("kill-{n}")))
            .collect();
        let id = format!("kp{sent}");
        let xml = format!(
            "{batch}<iq type='get' to='localhost' id='{id}'><ping xmlns='urn:xmpp:ping'/></iq>"
        );
        if c.try_send_bytes(xml.as_bytes()).await.is_err() {
            break;
        }
        sent += 20;
        let answered = loop {
            match c.recv_event_within(Duration::from_secs(10)).await {
                StreamEvent::Stanza(e) if e.name == "iq" && e.attr("id") == Some(id.as_str()) => {
                    break e.attr("type") == Some("result");
                }
                StreamEvent::Stanza(e)
                    if e.name == "message" && e.attr("type") == Some("error") =>
                {
                    panic!("message bounced while the server was up: {e}");
                }
                StreamEvent::Stanza(_) => {}
                _ => break false,
            }
        };
        if !answered {
            break;
        }
        confirmed = sent;
        confirmed_out.store(confirmed, Ordering::SeqCst);
    }
    (sent, confirmed)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_mid_traffic_keeps_every_confirmed_message_exactly_once() {
    let mut server = server_with_users();
    let pid = server.pid().expect("server pid");
    let mut alice = online(&server, ALICE, "a1").await;
    let confirmed = Arc::new(AtomicUsize::new(0));

    // The killer waits for some confirmed traffic, then strikes at a moment
    // unrelated to the sender's batches.
    let c2 = confirmed.clone();
    let killer = tokio::spawn(async move {
        let deadline = Instant::now() + Duration::from_secs(30);
        while c2.load(Ordering::SeqCst) < 150 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        tokio::time::sleep(Duration::from_millis(7)).await;
        // SAFETY: kill(2) on the PID of the server child this test started;
        // it is not reaped before `kill_hard` below, so the PID is ours.
        unsafe {
            libc::kill(pid as libc::pid_t, libc::SIGKILL);
        }
    });
    let (sent, confirmed_n) = send_until_killed(&mut alice, &confirmed, 100_000).await;
    tokio::time::timeout(Duration::from_secs(40), killer)
        .await
        .expect("killer task bound")
        .expect("killer task");
    assert!(
        confirmed_n >= 150,
        "the server died before 150 messages were confirmed ({confirmed_n} of {sent})"
    );
    assert!(
        sent < 100_000,
        "the server was not killed while traffic was flowing"
    );
    server.kill_hard();
    drop(alice);
    server.restart();

    let (_bob, got) = online_with(&server, BOB, "b1", "<presence/>").await;
    let idx = numbered(&got, "kill-");
    let mut seen = HashSet::new();
    let dups: Vec<usize> = idx.iter().copied().filter(|v| !seen.insert(*v)).collect();
    assert!(dups.is_empty(), "duplicates after the crash: {dups:?}");
    let missing: Vec<usize> = (0..confirmed_n).filter(|v| !seen.contains(v)).collect();
    assert!(
        missing.is_empty(),
        "confirmed messages lost in the crash ({} of {confirmed_n} confirmed, {sent} sent): \
         first missing {:?}",
        missing.len(),
        &missing[..missing.len().min(20)]
    );
    assert!(
        idx.windows(2).all(|w| w[0] < w[1]),
        "out of order after the crash: {idx:?}"
    );
    // Messages are handled one by one: what survived is a prefix of what was sent.
    assert!(
        idx.iter().enumerate().all(|(i, &v)| i == v) && idx.len() <= sent,
        "survivors are not a prefix of the sent messages ({} survived, {sent} sent)",
        idx.len()
    );
    eprintln!(
        "mid-traffic SIGKILL: {sent} sent, {confirmed_n} confirmed, {} survived",
        idx.len()
    );
}

#[tokio::test]
async fn thousand_offline_messages_arrive_in_order() {
    const N: usize = 1000;
    let server = server_with_users();
    let mut alice = online(&server, ALICE, "a1").await;
    send_numbered(&mut alice, B, "q-", 0, N).await;
    let back = sync(&mut alice).await;
    assert!(back.iter().all(|e| e.name != "message"), "{}", show(&back));
    let (_bob, got) = online_with(&server, BOB, "b1", "<presence/>").await;
    assert_sequence(&numbered(&got, "q-"), N, "1,000 offline messages");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_messages_do_not_overtake_stored_ones() {
    let server = server_with_users();
    let mut alice = online(&server, ALICE, "a1").await;
    send_numbered(&mut alice, B, "mix-", 0, 300).await;
    sync(&mut alice).await;
    // Alice keeps sending while bob comes online.
    let sender = tokio::spawn(async move {
        for start in (300..900).step_by(20) {
            send_numbered(&mut alice, B, "mix-", start, 20).await;
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        sync(&mut alice).await;
        alice
    });
    tokio::time::sleep(Duration::from_millis(10)).await;
    let mut bob = login(&server, BOB, "b1").await;
    bob.send("<presence/>").await;
    let mut got = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while got.len() < 900 && Instant::now() < deadline {
        let e = bob.recv_message().await;
        if let Some(n) = e
            .child_text("body")
            .and_then(|b| b.strip_prefix("mix-"))
            .and_then(|n| n.parse::<usize>().ok())
        {
            got.push(n);
        }
    }
    let _alice = tokio::time::timeout(Duration::from_secs(60), sender)
        .await
        .expect("sender bound")
        .expect("sender task");
    let rest = sync(&mut bob).await;
    got.extend(numbered(&rest, "mix-"));
    assert_sequence(&got, 900, "stored then live messages");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_messages_arrive_in_order() {
    const N: usize = 10_000;
    let server = server_with_users();
    let mut alice = online(&server, ALICE, "a1").await;
    let mut bob = online(&server, BOB, "b1").await;
    let started = std::time::Instant::now();
    let reader = tokio::spawn(async move {
        let mut got = Vec::with_capacity(N);
        let deadline = Instant::now() + Duration::from_secs(60);
        while got.len() < N {
            assert!(
                Instant::now() < deadline,
                "only {} of {N} messages within 60 s",
                got.len()
            );
            let e = bob.recv_message().await;
            let n: usize = e
                .child_text("body")
                .and_then(|b| b.strip_prefix("ord-"))
                .and_then(|n| n.parse().ok())
                .unwrap_or_else(|| panic!("unexpected message {e}"));
            assert_eq!(
                n,
                got.len(),
                "message {n} arrived at position {}",
                got.len()
            );
            got.push(n);
        }
        bob
    });
    send_numbered(&mut alice, B, "ord-", 0, N).await;
    // The server handles alice's 10,000 messages (each archived twice by
    // mod_mam) before the sync's ping: in a debug build on a busy machine
    // that can take longer than the client's default wait.
    alice.timeout = Duration::from_secs(60);
    let back = sync(&mut alice).await;
    assert!(
        back.iter().all(|e| e.name != "message"),
        "errors while sending: {}",
        show(&back[..back.len().min(5)])
    );
    let mut bob = tokio::time::timeout(Duration::from_secs(70), reader)
        .await
        .expect("reader bound")
        .expect("reader");
    let extra = sync(&mut bob).await;
    assert!(messages(&extra).is_empty(), "extra: {}", show(&extra));
    eprintln!("{N} messages in {:?}", started.elapsed());
}
