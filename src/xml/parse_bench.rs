//! Not a test but a measurement (ignored by default): the reader's speed on
//! a stream of typical chat stanzas, to compare builds. Run with
//! `cargo test --release --bin rookery xml::parse_bench -- --ignored --nocapture`
//! (`PARSE_BENCH_N` stanzas, 100,000 by default); under
//! `valgrind --tool=callgrind` for instruction counts.

use std::time::Instant;

use super::reader::{StreamEvent, StreamReader};

const HEADER: &str = "<?xml version='1.0'?><stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' to='localhost' version='1.0' xml:lang='en'>";

#[tokio::test]
#[ignore]
async fn parse_chat_stanzas() {
    let n: usize = std::env::var("PARSE_BENCH_N")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000);
    let mut input = String::from(HEADER);
    for i in 0..n {
        input.push_str(&format!(
            "<message to='bob@localhost/phone' from='alice@localhost/pc' type='chat' id='msg-{i:08}' xml:lang='en'>\
             <body>Hello Bob, this is message number {i} &amp; more; how are you today? \u{1F600}\nSee you.</body>\
             <active xmlns='http://jabber.org/protocol/chatstates'/>\
             <origin-id xmlns='urn:xmpp:sid:0' id='0a1b2c3d-{i:08}'/>\
             <request xmlns='urn:xmpp:receipts'/></message>\n"
        ));
    }
    let started = Instant::now();
    let mut r = StreamReader::new(input.as_bytes(), None);
    let mut count = 0;
    loop {
        match r.next().await {
            Ok(StreamEvent::Stanza(_)) => count += 1,
            Ok(StreamEvent::Header(_)) => {}
            _ => break,
        }
    }
    let took = started.elapsed();
    assert_eq!(count, n);
    println!(
        "parsed {n} stanzas ({} bytes) in {took:?}: {:.0} stanzas/s, {:.1} MB/s",
        input.len(),
        n as f64 / took.as_secs_f64(),
        input.len() as f64 / took.as_secs_f64() / 1e6
    );
}
