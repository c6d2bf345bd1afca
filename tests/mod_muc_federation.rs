//! Federated rooms (XEP-0045 over s2s) between two real Rookery servers on
//! 127.0.0.1: a.test serves rooms on `conference.a.test`, b.test is another
//! server (with its own `conference.b.test`). The service domain federates
//! like a host: its own s2s streams in both directions, authenticated by
//! SASL EXTERNAL (a.test's certificate names `conference.a.test` too) or by
//! dialback (neither trusts the CA: b.test connects back to
//! `conference.a.test`), as `rookery ctl s2s_connections` shows.
//!
//! Checked: a remote user joins, chats both ways, exchanges private
//! messages, is kicked (307) and banned (301, then refused with
//! `forbidden`); a groupchat from a remote non-occupant gets
//! `not-acceptable`; a remote occupant whose session ends leaves by its
//! server's unavailable presence (RFC 6121 directed presence); a remote
//! occupant whose server is gone is removed with status 333 when the room's
//! messages to it bounce (XEP-0045 §7.2), or, when its server goes silent
//! (stopped with its streams open), when the room's ping to it goes
//! unanswered (`occupant_ping_interval`, `occupant_ping_timeout`), while an
//! occupant that answers stays; a local user joins a room on the
//! other server and leaves it when its session ends; under
//! `s2s_secure_auth` an unverified peer is refused for the service domain as
//! for a host. Bad input: a stanza to
//! the service domain from an s2s stream not authenticated for its sender's
//! domain is refused like one to a host (`<invalid-from/>`,
//! `<not-authorized/>`), and a stream to a subdomain that is not a service
//! gets `<host-unknown/>`.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::AsyncWriteExt;

use crate::common::muc::*;
use crate::common::*;
use crate::s2s::{
    free_port, raw_peer_to, read_until, s2s_header, start, start_with_modules, user, write, Ca,
    Side,
};

const ROOM: &str = "lounge@conference.a.test";

/// a.test (its certificate names its MUC service too) and b.test, both
/// reaching each other's hosts and services through `s2s_hosts`; `trust`:
/// whether both trust the test CA (SASL EXTERNAL) or neither (dialback).
fn pair(trust: bool, extra_a: &str) -> (Server, Server, u16, Ca, tempfile::TempDir) {
    pair_with(trust, extra_a, server::DEFAULT_MODULES)
}

/// [`pair`] with these `modules:` lines for a.test.
fn pair_with(
    trust: bool,
    extra_a: &str,
    modules_a: &str,
) -> (Server, Server, u16, Ca, tempfile::TempDir) {
    let files = tempfile::tempdir().unwrap();
    let ca = Ca::new("Rookery MUC federation CA");
    let ca_file = write(files.path(), "ca.pem", &ca.pem);
    let (pa, pb) = (free_port(), free_port());
    let cert_a = ca.issue_names(&["a.test", "conference.a.test"]);
    let cert_b = ca.issue_names(&["b.test", "conference.b.test"]);
    let a = start_with_modules(
        &Side {
            domain: "a.test",
            s2s_port: pa,
            cert: &cert_a,
            cafile: trust.then_some(ca_file.as_path()),
            extra: extra_a,
        },
        &[("b.test", pb), ("conference.b.test", pb)],
        files.path(),
        modules_a,
    );
    let b = start(
        &Side {
            domain: "b.test",
            s2s_port: pb,
            cert: &cert_b,
            cafile: trust.then_some(ca_file.as_path()),
            extra: "",
        },
        &[("a.test", pa), ("conference.a.test", pa)],
        files.path(),
    );
    b.register("carol", "b.test", "secret");
    (a, b, pa, ca, files)
}

/// A session that never sends initial presence.
async fn without_presence(server: &Server, domain: &str, name: &str) -> Client {
    let mut c = Client::connect(server.c2s()).await;
    c.domain = domain.to_string();
    c.open_stream().await;
    c.starttls().await;
    c.login_scram(name, "secret").await;
    c.bind(Some("bot")).await.unwrap();
    c
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn remote_occupants_by_certificate() {
    let (a, b, _pa, _ca, _files) = pair(true, "");
    let mut alice = user(&a, "a.test", "alice", "pc").await;
    let mut bob = user(&b, "b.test", "bob", "phone").await;

    let own = join(&mut alice, ROOM, "alice").await;
    assert!(codes(&own).iter().any(|c| c == "201"), "created: {own}");
    federated_room(ROOM, &mut alice, "alice", &mut bob, "bob").await;

    // Kicked, bob is no occupant: his groupchat is refused by the room.
    bob.send(&format!(
        "<message type='groupchat' to='{ROOM}' id='x1'><body>let me in</body></message>"
    ))
    .await;
    let e = bob.expect_message_error("x1", "not-acceptable").await;
    assert_eq!(e.attr("from"), Some(ROOM), "{e}");

    // Banned by his bare JID: told with 301, then refused.
    join(&mut bob, ROOM, "bob").await;
    presence_from(&mut alice, &format!("{ROOM}/bob"), None).await;
    let r = set_affiliation(&mut alice, ROOM, "bob@b.test", "outcast").await;
    assert_eq!(r.attr("type"), Some("result"), "ban: {r}");
    let p = presence_from(&mut bob, &format!("{ROOM}/bob"), Some("unavailable")).await;
    assert!(codes(&p).iter().any(|c| c == "301"), "banned: {p}");
    assert_eq!(join_refused(&mut bob, ROOM, "bob").await, "forbidden");

    // The service domain's own streams, both ways, by certificate.
    let conns = a.ctl_ok(&["s2s_connections"]);
    assert!(
        conns.contains("out conference.a.test b.test sasl-external tls"),
        "{conns}"
    );
    assert!(
        conns.contains("in conference.a.test b.test sasl-external tls"),
        "{conns}"
    );

    // A remote occupant's session ends: its server's unavailable presence
    // (directed presence tracking) takes it out of the room — also for a
    // session that never sent initial presence (a bot).
    let mut carol = without_presence(&b, "b.test", "carol").await;
    join(&mut carol, ROOM, "carol").await;
    presence_from(&mut alice, &format!("{ROOM}/carol"), None).await;
    carol.close().await;
    presence_from(&mut alice, &format!("{ROOM}/carol"), Some("unavailable")).await;

    // A local user in a room on the other server, and out of it when its
    // session ends.
    let den = "den@conference.b.test";
    join(&mut bob, den, "bob").await;
    federated_room(den, &mut bob, "bob", &mut alice, "alice").await;
    join(&mut alice, den, "alice").await;
    presence_from(&mut bob, &format!("{den}/alice"), None).await;
    say(&mut alice, den, "bye").await;
    heard(&mut bob, &format!("{den}/alice"), "bye").await;
    drop(alice);
    presence_from(&mut bob, &format!("{den}/alice"), Some("unavailable")).await;
    let conns = b.ctl_ok(&["s2s_connections"]);
    assert!(
        conns.contains("out conference.b.test a.test sasl-external tls"),
        "{conns}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn remote_occupants_by_dialback() {
    let (a, b, _pa, _ca, _files) = pair(false, "");
    let mut alice = user(&a, "a.test", "alice", "pc").await;
    let mut bob = user(&b, "b.test", "bob", "phone").await;
    join(&mut alice, ROOM, "alice").await;
    federated_room(ROOM, &mut alice, "alice", &mut bob, "bob").await;
    let conns = a.ctl_ok(&["s2s_connections"]);
    assert!(
        conns.contains("out conference.a.test b.test dialback tls"),
        "{conns}"
    );
    assert!(
        conns.contains("in conference.a.test b.test dialback tls"),
        "{conns}"
    );
}

/// `s2s_secure_auth` on a.test, whose roots do not know b.test's CA: the
/// service domain refuses b.test's stream as a host would, and b.test's
/// user gets `remote-server-not-found` for the room.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secure_auth_refuses_unverified_peers_for_the_service_domain() {
    let (a, b, _pa, _ca, _files) = pair(false, "s2s_secure_auth: true\n");
    let mut alice = user(&a, "a.test", "alice", "pc").await;
    join(&mut alice, ROOM, "alice").await;
    let mut bob = user(&b, "b.test", "bob", "phone").await;
    let id = bob.id();
    let r = bob
        .request(
            &format!("<iq type='get' to='{ROOM}' id='{id}'><query xmlns='http://jabber.org/protocol/disco#info'/></iq>"),
            &id,
        )
        .await;
    assert_eq!(r.attr("type"), Some("error"), "{r}");
    assert_eq!(
        r.stanza_error().map(|e| e.1).as_deref(),
        Some("remote-server-not-found"),
        "{r}"
    );
    assert_eq!(a.ctl_ok(&["incoming_s2s_number"]).trim(), "0");
}

/// The remote occupant's server disappears without a word: the room's next
/// message to it bounces (`remote-server-not-found`), and the room removes
/// it with status 333 for everyone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn remote_occupant_removed_when_its_server_is_gone() {
    let (a, mut b, _pa, _ca, _files) = pair(true, "");
    let mut alice = user(&a, "a.test", "alice", "pc").await;
    let mut bob = user(&b, "b.test", "bob", "phone").await;
    join(&mut alice, ROOM, "alice").await;
    join(&mut bob, ROOM, "bob").await;
    presence_from(&mut alice, &format!("{ROOM}/bob"), None).await;
    say(&mut bob, ROOM, "about to vanish").await;
    heard(&mut alice, &format!("{ROOM}/bob"), "about to vanish").await;

    b.kill_hard();
    drop(bob);
    // Let a.test notice its streams to b.test ended (a write on a stream
    // whose peer vanished unnoticed could still be taken by the kernel).
    tokio::time::sleep(Duration::from_millis(1000)).await;
    say(&mut alice, ROOM, "anyone there?").await;
    heard(&mut alice, &format!("{ROOM}/alice"), "anyone there?").await;
    let p = presence_from(&mut alice, &format!("{ROOM}/bob"), Some("unavailable")).await;
    assert!(codes(&p).iter().any(|c| c == "333"), "removed: {p}");
    // Gone for good: the room counts alice alone.
    let id = alice.id();
    let info = alice
        .request(
            &format!("<iq type='get' to='{ROOM}' id='{id}'><query xmlns='http://jabber.org/protocol/disco#info'/></iq>"),
            &id,
        )
        .await;
    let count = info
        .child("query")
        .and_then(|q| q.child("x"))
        .and_then(|x| {
            x.children_named("field")
                .find(|f| f.attr("var") == Some("muc#roominfo_occupants"))
        })
        .and_then(|f| f.child_text("value"))
        .map(str::to_string);
    assert_eq!(count.as_deref(), Some("1"), "{info}");
}

/// The room pings a remote occupant it has not heard from: one that
/// answers stays; when its server is stopped (its streams still open, so
/// nothing bounces), the unanswered ping removes it with status 333.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_remote_occupant_is_pinged_then_removed() {
    let modules = server::DEFAULT_MODULES.replace(
        "mod_muc: {}",
        "mod_muc: {occupant_ping_interval: 1, occupant_ping_timeout: 2}",
    );
    let (a, b, _pa, _ca, _files) = pair_with(true, "", &modules);
    let mut alice = user(&a, "a.test", "alice", "pc").await;
    let mut bob = user(&b, "b.test", "bob", "phone").await;
    join(&mut alice, ROOM, "alice").await;
    join(&mut bob, ROOM, "bob").await;
    presence_from(&mut alice, &format!("{ROOM}/bob"), None).await;

    // Silent for a second: the room pings bob from his own room JID; he
    // answers each ping for four seconds and stays.
    let me = format!("{ROOM}/bob");
    let until = std::time::Instant::now() + Duration::from_secs(4);
    let mut answered = 0;
    while let Some(left) = until.checked_duration_since(std::time::Instant::now()) {
        let StreamEvent::Stanza(e) = bob.recv_event_within(left).await else {
            continue;
        };
        if e.name == "iq" && e.attr("type") == Some("get") && e.child("ping").is_some() {
            assert_eq!(e.attr("from"), Some(me.as_str()), "{e}");
            bob.send(&format!(
                "<iq type='result' to='{me}' id='{}'/>",
                e.attr("id").unwrap_or("")
            ))
            .await;
            answered += 1;
        }
    }
    assert!(answered >= 2, "{answered} pings in 4 s");
    // Still there; alice (local) was never pinged nor told bob left.
    say(&mut alice, ROOM, "still with us?").await;
    let got = alice
        .recv_where("her own message back", |e| {
            e.name == "message"
                || (e.name == "iq" && e.child("ping").is_some())
                || (e.name == "presence" && e.attr("type") == Some("unavailable"))
        })
        .await;
    assert_eq!(got.name, "message", "{got}");
    heard(&mut bob, &format!("{ROOM}/alice"), "still with us?").await;

    // b.test stops answering anything, its streams open: the next ping
    // goes unanswered, and bob is removed with 333.
    let pid = b.pid().expect("b.test runs").to_string();
    let stop = std::process::Command::new("kill")
        .args(["-STOP", &pid])
        .status()
        .expect("kill -STOP");
    assert!(stop.success());
    let p = presence_from(&mut alice, &me, Some("unavailable")).await;
    let cont = std::process::Command::new("kill")
        .args(["-CONT", &pid])
        .status()
        .expect("kill -CONT");
    assert!(cont.success());
    assert!(codes(&p).iter().any(|c| c == "333"), "removed: {p}");
    drop(bob);
}

/// Bad input over s2s, as for a host: a stream authenticated for b.test
/// cannot send from c.test to a room; an unauthenticated stream cannot send
/// at all; a stream to a subdomain nobody serves is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn service_domain_streams_follow_host_rules() {
    let (a, _b, pa, ca, _files) = pair(true, "");
    let addr: SocketAddr = format!("127.0.0.1:{pa}").parse().unwrap();
    let b_cert = ca.issue("b.test");
    let mut alice = user(&a, "a.test", "alice", "pc").await;
    join(&mut alice, ROOM, "alice").await;

    // Authenticated as b.test for conference.a.test: a genuine join works…
    let mut peer = raw_peer_to(addr, &b_cert, "conference.a.test").await;
    peer.write_all(
        format!("<presence from='eve@b.test/x' to='{ROOM}/eve'><x xmlns='{MUC}'/></presence>")
            .as_bytes(),
    )
    .await
    .unwrap();
    presence_from(&mut alice, &format!("{ROOM}/eve"), None).await;
    // …a stanza from another domain ends the stream.
    let mut peer = raw_peer_to(addr, &b_cert, "conference.a.test").await;
    peer.write_all(
        format!("<message from='mallory@c.test/x' to='{ROOM}' type='groupchat'><body>spoof</body></message>")
            .as_bytes(),
    )
    .await
    .unwrap();
    let r = read_until(&mut peer, "</stream:stream>").await;
    assert!(r.contains("<invalid-from"), "{r}");

    // Unauthenticated: refused.
    let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    tcp.write_all(s2s_header("b.test", "conference.a.test").as_bytes())
        .await
        .unwrap();
    read_until(&mut tcp, "</stream:features>").await;
    tcp.write_all(
        format!(
            "<message from='eve@b.test/x' to='{ROOM}' type='groupchat'><body>x</body></message>"
        )
        .as_bytes(),
    )
    .await
    .unwrap();
    let r = read_until(&mut tcp, "</stream:stream>").await;
    assert!(
        r.contains("<not-authorized") || r.contains("<policy-violation"),
        "{r}"
    );

    // A subdomain that is no service of ours.
    let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    tcp.write_all(s2s_header("b.test", "nothing.a.test").as_bytes())
        .await
        .unwrap();
    let r = read_until(&mut tcp, "</stream:stream>").await;
    assert!(r.contains("<host-unknown"), "{r}");

    // Nothing of the refused stanzas reached the room: everything alice
    // gets before her own marker is checked.
    say(&mut alice, ROOM, "marker").await;
    alice
        .recv_where("the marker", |e| {
            let body = e.child_text("body");
            assert!(
                body != Some("spoof") && body != Some("x"),
                "a refused stanza reached the room: {e}"
            );
            body == Some("marker")
        })
        .await;
}
