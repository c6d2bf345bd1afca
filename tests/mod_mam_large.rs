//! XEP-0313 on a large archive, against the real binary: 20,000 messages
//! are written straight into the stopped server's database in the old
//! layout (mod_mam's module key/value records, converted at the next
//! start: `mod_mam_storage` tests the conversion itself), then the last
//! page, a page in the middle (forwards and backwards), a `with` + time
//! range and the RSM count are queried over XMPP. Queries are range scans
//! (docs/benchmarks.md has the timings on 400,000 messages, measured with
//! the ignored `mam_query_times` below; nothing here asserts a time).

use crate::common;

use std::time::{Duration, Instant};

use common::client::Client;
use common::im::{self, bare, sync, ALICE, BOB};
use common::server::Server;
use common::Element;

const NS_MAM: &str = "urn:xmpp:mam:2";
const NS_RSM: &str = "http://jabber.org/protocol/rsm";
const NS_FORWARD: &str = "urn:xmpp:forward:0";
/// Ids of the written messages: 2020-09-13 onwards, one per millisecond.
const BASE: u64 = 1_600_000_000_000_000;

fn id_of(i: usize) -> String {
    format!("{:020}", BASE + i as u64 * 1000)
}

/// A server whose alice has `n` archived messages with bob (`n0`..) plus a
/// last one, `real`, sent over XMPP.
async fn server_with_archive(n: usize) -> Server {
    let mut server = common::server_with_users();
    let mut a = im::login(&server, ALICE, "a").await;
    a.send(&im::chat(&bare(BOB), "r", "real")).await;
    sync(&mut a).await;
    drop(a);
    server.stop();
    {
        let db = sled::open(server.dir().join("data").join("db"))
            .expect("open the stopped server's data");
        // The old layout (mod_mam's module key/value records, converted at
        // the next start): `m:<id>` = `<peer>\n<message XML>`, `w:<peer>\0<id>`.
        let tree = db.open_tree("module_data").unwrap();
        let base = b"localhost\0alice\0mod_mam\0".to_vec();
        let key = |k: &str| {
            let mut v = base.clone();
            v.extend_from_slice(k.as_bytes());
            v
        };
        let template = "bob@localhost\n<message from='alice@localhost/a' to='bob@localhost' \
                        type='chat' id='r'><body>real</body></message>";
        let mut batch = sled::Batch::default();
        for i in 0..n {
            let value = template.replace(">real<", &format!(">n{i}<"));
            batch.insert(key(&format!("m:{}", id_of(i))), value.as_bytes());
            batch.insert(key(&format!("w:bob@localhost\0{}", id_of(i))), &b""[..]);
        }
        tree.apply_batch(batch).unwrap();
        db.flush().unwrap();
    }
    // As in a data directory of a server from before the conversion.
    common::archive_files::ArchiveFiles::open(&server.dir().join("data")).forget_conversion();
    server.restart();
    server
}

/// One query: results, answer, and how long until the answer.
async fn mam(c: &mut Client, inner: &str) -> (Vec<Element>, Element, Duration) {
    let id = c.id();
    let t = Instant::now();
    c.send(&format!(
        "<iq type='set' id='{id}'><query xmlns='{NS_MAM}'>{inner}</query></iq>"
    ))
    .await;
    let mut results = Vec::new();
    for _ in 0..1000 {
        let e = c.recv().await;
        if e.name == "iq" && e.attr("id") == Some(id.as_str()) {
            assert_eq!(e.attr("type"), Some("result"), "{e}");
            return (results, e, t.elapsed());
        }
        if e.name == "message" {
            results.push(e);
        }
    }
    panic!("no answer to the MAM query");
}

fn bodies(rs: &[Element]) -> Vec<String> {
    rs.iter()
        .map(|r| {
            r.child_ns("result", NS_MAM)
                .and_then(|x| x.child_ns("forwarded", NS_FORWARD))
                .and_then(|f| f.child("message"))
                .and_then(|m| m.child_text("body"))
                .unwrap_or("")
                .to_string()
        })
        .collect()
}

fn fin(answer: &Element) -> (bool, String) {
    let fin = answer.child_ns("fin", NS_MAM).expect("fin");
    let count = fin
        .child_ns("set", NS_RSM)
        .and_then(|s| s.child_text("count"))
        .unwrap_or("")
        .to_string();
    (fin.attr("complete") == Some("true"), count)
}

fn form(fields: &[(&str, String)]) -> String {
    let mut x = format!(
        "<x xmlns='jabber:x:data' type='submit'><field var='FORM_TYPE' type='hidden'><value>{NS_MAM}</value></field>"
    );
    for (var, value) in fields {
        x.push_str(&format!(
            "<field var='{var}'><value>{value}</value></field>"
        ));
    }
    x + "</x>"
}

fn names(range: std::ops::Range<usize>) -> Vec<String> {
    range.map(|i| format!("n{i}")).collect()
}

#[tokio::test]
async fn pages_of_a_twenty_thousand_message_archive() {
    const N: usize = 20_000;
    let server = server_with_archive(N).await;
    let mut a = im::login(&server, ALICE, "a").await;

    // The last page.
    let (rs, ans, _) = mam(
        &mut a,
        "<set xmlns='http://jabber.org/protocol/rsm'><max>10</max><before/></set>",
    )
    .await;
    let mut want = names(N - 9..N);
    want.push("real".into());
    assert_eq!(bodies(&rs), want);
    assert_eq!(fin(&ans), (false, (N + 1).to_string()));

    // A page in the middle, forwards and backwards.
    let mid = N / 2;
    let (rs, ans, _) = mam(
        &mut a,
        &format!(
            "<set xmlns='{NS_RSM}'><max>5</max><after>{}</after></set>",
            id_of(mid - 1)
        ),
    )
    .await;
    assert_eq!(bodies(&rs), names(mid..mid + 5));
    assert_eq!(fin(&ans), (false, (N + 1).to_string()));
    let (rs, ans, _) = mam(
        &mut a,
        &format!(
            "<set xmlns='{NS_RSM}'><max>3</max><before>{}</before></set>",
            id_of(mid)
        ),
    )
    .await;
    assert_eq!(bodies(&rs), names(mid - 3..mid));
    assert!(!fin(&ans).0);

    // The first page, backwards from its end: complete.
    let (rs, ans, _) = mam(
        &mut a,
        &format!(
            "<set xmlns='{NS_RSM}'><max>5</max><before>{}</before></set>",
            id_of(3)
        ),
    )
    .await;
    assert_eq!(bodies(&rs), names(0..3));
    assert!(fin(&ans).0);

    // with + a time range in the middle: five messages, counted exactly.
    let f = form(&[
        ("with", bare(BOB)),
        ("start", "2020-09-13T12:26:41Z".into()), // BASE + 1 s = n1000
        ("end", "2020-09-13T12:26:41.004Z".into()),
    ]);
    let (rs, ans, _) = mam(&mut a, &f).await;
    assert_eq!(bodies(&rs), names(1000..1005));
    assert_eq!(fin(&ans), (true, "5".to_string()));
}

/// Timings for docs/benchmarks.md (not a test of speed: it asserts only
/// results). `MAM_BENCH_N=100000 cargo test --release --test integration
/// mod_mam_large::mam_query_times -- --ignored --nocapture`
#[tokio::test]
#[ignore]
async fn mam_query_times() {
    let n: usize = std::env::var("MAM_BENCH_N")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000);
    let server = server_with_archive(n).await;
    let mut a = im::login(&server, ALICE, "a").await;
    let mid = n / 2;
    let queries: Vec<(&str, String)> = vec![
        (
            "last page (max 50, <before/>)",
            format!("<set xmlns='{NS_RSM}'><max>50</max><before/></set>"),
        ),
        (
            "middle page (max 50, <after/>)",
            format!(
                "<set xmlns='{NS_RSM}'><max>50</max><after>{}</after></set>",
                id_of(mid)
            ),
        ),
        ("first page (no RSM, 50)", String::new()),
        (
            "with bob, middle page (max 50)",
            format!(
                "{}<set xmlns='{NS_RSM}'><max>50</max><after>{}</after></set>",
                form(&[("with", bare(BOB))]),
                id_of(mid)
            ),
        ),
        (
            "max 250, last page",
            format!("<set xmlns='{NS_RSM}'><max>250</max><before/></set>"),
        ),
    ];
    let mut queries = queries;
    queries.push((
        "count only (max 0)",
        format!("<set xmlns='{NS_RSM}'><max>0</max></set>"),
    ));
    println!("archive of {} messages", n + 1);
    for (name, q) in &queries {
        let mut times = Vec::new();
        for _ in 0..21 {
            let (rs, ans, t) = mam(&mut a, q).await;
            assert_eq!(rs.is_empty(), name.starts_with("count"));
            assert_eq!(fin(&ans).1, (n + 1).to_string());
            times.push(t);
        }
        times.sort();
        println!(
            "{name}: median {:.2} ms, min {:.2} ms, max {:.2} ms (21 runs, round trip over TLS incl. results)",
            times[10].as_secs_f64() * 1e3,
            times[0].as_secs_f64() * 1e3,
            times[20].as_secs_f64() * 1e3
        );
    }
}
