//! The bounded differential fuzz run inside `cargo test` (what CI runs),
//! and checks that the references refuse every malformation of issue 12.
//!
//! `ROOKERY_FUZZ_ITERS` (default 8,000) caps the mutated inputs and
//! `ROOKERY_FUZZ_SECS` (default 60) bounds the time, `ROOKERY_FUZZ_SEED`
//! (default fixed) seeds the mutations: with the defaults every machine
//! fast enough to finish the iterations in time checks exactly the same
//! inputs, so CI is reproducible (a longer exploration sets a larger cap,
//! another seed, or runs libFuzzer: fuzz/README.md); a failure prints each
//! distinct finding with its minimised input and the seed.

use super::mutate::{minimise, mutate, Rng};
use super::property::{check, check_with_limit, memory_bound, reference_accepts, Finding};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

const DEFAULT_SEED: u64 = 0x526f_6f6b_6572_7921;

fn env_num(name: &str) -> Option<u64> {
    let v = std::env::var(name).ok()?;
    let v = v.trim();
    match v.strip_prefix("0x") {
        Some(hex) => u64::from_str_radix(hex, 16).ok(),
        None => v.parse().ok(),
    }
}

fn corpus_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/xml_reader")
}

fn load_corpus() -> Vec<(String, Vec<u8>)> {
    let mut seeds: Vec<(String, Vec<u8>)> = std::fs::read_dir(corpus_dir())
        .expect("fuzz/corpus/xml_reader is in the repository")
        .map(|e| {
            let e = e.expect("corpus entry");
            let name = e.file_name().to_string_lossy().into_owned();
            (name, std::fs::read(e.path()).expect("corpus file"))
        })
        .collect();
    seeds.sort();
    seeds
}

/// Rust-style escaping of an input, readable in a test failure.
fn show(input: &[u8]) -> String {
    input.escape_ascii().to_string()
}

/// Run `check` without printing the panics it catches.
fn quiet_check(input: &[u8]) -> Result<(), Finding> {
    QUIET.set(true);
    let r = check(input).map(|_| ());
    QUIET.set(false);
    r
}

thread_local! {
    static QUIET: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

fn install_quiet_hook() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let prev = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if !QUIET.with(|q| q.get()) {
                prev(info)
            }
        }));
    });
}

#[test]
fn reader_accepts_only_what_the_references_accept() {
    install_quiet_hook();
    let secs = env_num("ROOKERY_FUZZ_SECS").unwrap_or(60);
    let max_iters = env_num("ROOKERY_FUZZ_ITERS").unwrap_or(8_000);
    let seed = env_num("ROOKERY_FUZZ_SEED").unwrap_or(DEFAULT_SEED);
    let corpus = load_corpus();
    assert!(corpus.len() >= 100, "corpus has {} seeds", corpus.len());

    // Distinct findings (by kind), each with its first input and where it came from.
    let mut found: BTreeMap<String, (Finding, Vec<u8>, String)> = BTreeMap::new();
    let mut note = |f: Finding, input: &[u8], origin: String| {
        found.entry(f.key()).or_insert((f, input.to_vec(), origin));
    };
    let (mut stanzas, mut refused) = (0usize, 0usize);
    // Inputs the reader read to their end without refusing: half of the
    // mutations start from one of them, so that most mutated inputs get
    // past their first bytes (a refused stream ends at its first fault).
    let mut pool: Vec<Vec<u8>> = Vec::new();
    for (name, data) in &corpus {
        QUIET.set(true);
        let r = check(data);
        QUIET.set(false);
        match r {
            Ok(o) if !o.refused => pool.push(data.clone()),
            Ok(_) => {}
            Err(f) => note(f, data, format!("seed {name}")),
        }
    }
    let mut rng = Rng::new(seed);
    let start = Instant::now();
    let deadline = Duration::from_secs(secs);
    let mut iters = 0u64;
    while iters < max_iters && start.elapsed() < deadline {
        iters += 1;
        let mut input = if rng.below(2) == 0 && !pool.is_empty() {
            rng.pick(&pool).clone()
        } else {
            rng.pick(&corpus).1.clone()
        };
        let (_, other) = rng.pick(&corpus);
        mutate(&mut input, other, &mut rng, 16 * 1024);
        QUIET.set(true);
        let r = check(&input);
        QUIET.set(false);
        match r {
            Ok(o) => {
                stanzas += o.stanzas;
                refused += o.refused as usize;
                if !o.refused && pool.len() < 2000 {
                    pool.push(input);
                }
            }
            Err(f) => note(f, &input, format!("iteration {iters}")),
        }
    }
    eprintln!(
        "xml reader differential fuzz: seed {seed:#x}, {} seeds, {iters} mutated inputs in {:.1} s, {stanzas} stanzas read, {refused} inputs refused, {} distinct findings",
        corpus.len(),
        start.elapsed().as_secs_f64(),
        found.len()
    );
    if found.is_empty() {
        return;
    }
    // Shrink each while it fails the same way (same key), then report
    // each distinct shrunk finding once.
    let mut shrunk: BTreeMap<String, String> = BTreeMap::new();
    for (f, input, origin) in found.values() {
        let key = f.key();
        let small = minimise(
            input,
            |c| matches!(quiet_check(c), Err(g) if g.key() == key),
            Duration::from_secs(2),
        );
        let why = quiet_check(&small).err().unwrap_or_else(|| f.clone());
        shrunk.entry(why.key()).or_insert_with(|| {
            format!(
                "\n- {why}\n  from {origin}; minimised input ({} bytes): b\"{}\"\n",
                small.len(),
                show(&small)
            )
        });
    }
    let report: String = shrunk.into_values().collect();
    panic!(
        "the XML reader fails the differential property ({} distinct findings, ROOKERY_FUZZ_SEED={seed:#x}):{report}",
        found.len()
    );
}

/// The references refuse every malformation of issue 12 (and accept their
/// well-formed neighbours), so the property holds the reader to them.
#[test]
fn references_refuse_what_xml_forbids() {
    let bad = [
        "<a>\u{1}</a>",
        "<a x='\u{1}'/>",
        "<a>&#1;</a>",
        "<a x='&#1;'/>",
        "<a>&#xFFFE;</a>",
        "<a>\u{FFFE}</a>",
        "<a x='&#xFFFF;'/>",
        "<a>&#xD800;</a>",
        "<a>&#0;</a>",
        "<a>&#x110000;</a>",
        "<a x='<![CDATA[y]]>'/>",
        "<a a='1'b='2'/>",
        "<1a/>",
        "<a 1b='x'/>",
        "<a\u{D7}b/>",
        "<a:b:c xmlns:a='u'/>",
        "<:a/>",
        "<q:a/>",
        "<a q:b='1'/>",
        "<a x='1' x='2'/>",
        "<a xmlns:p='u' xmlns:q='u' p:x='1' q:x='2'/>",
        "<a xmlns:p=''/>",
        "<a xmlns:xml='urn:x'/>",
        "<a xmlns:xmlns='urn:x'/>",
        "<a xmlns:p='http://www.w3.org/XML/1998/namespace'/>",
        "<a>x]]>y</a>",
        "<a>x & y</a>",
        "<a x/>",
        "<a x=1/>",
        "<a></b>",
        "<a/><b/>",
    ];
    for doc in bad {
        assert!(reference_accepts(doc.as_bytes()).is_err(), "{doc:?}");
    }
    let good = [
        "<a x='1' y=\"2\">hi &amp; &#65; <p:b xmlns:p='urn:p' p:z='3'/></a>",
        "<a>\u{7F}\u{85}\u{FFFD}\u{10FFFF}&#x9;&#xD;&#xE000;</a>",
        "<a x='>' xml:lang='en'>></a>",
        "<?xml version='1.0'?><a xmlnsx='1'><![CDATA[<&]]></a>",
        "<a><xml:g xml:lang='en'/></a>",
    ];
    for doc in good {
        assert_eq!(reference_accepts(doc.as_bytes()), Ok(()), "{doc:?}");
    }
}

/// The memory the reader holds grows with the limit, not with the input
/// (nor with its square):
/// many stanzas, each near the limit and within the shape limits, built to
/// amplify (a long default namespace inherited by many small children, many
/// siblings, nesting, many attributes and declarations).
#[test]
fn reader_memory_is_bounded_by_the_limit() {
    const LIMIT: usize = 16 * 1024;
    let header =
        "<stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams'>";
    let long_ns = format!("urn:{}", "n".repeat(LIMIT / 2 - 64));
    let nest = format!("{}{}", "<a>".repeat(60), "</a>".repeat(60));
    let attrs: String = (0..99).map(|i| format!(" a{i}=''")).collect();
    let decls: String = (0..99).map(|i| format!(" xmlns:p{i}='u'")).collect();
    let cases = [
        format!(
            "<message xmlns='{long_ns}'>{}</message>",
            "<a/>".repeat(LIMIT / 2 / 4)
        ),
        format!("<message>{}</message>", "<a/>".repeat(LIMIT / 4 - 8)),
        format!("<message>{}</message>", nest.repeat(LIMIT / nest.len() - 1)),
        format!(
            "<message>{}</message>",
            format!("<a{attrs}/>").repeat(LIMIT / (attrs.len() + 5) - 1)
        ),
        format!(
            "<message{decls}>{}</message>",
            "<p1:a/>".repeat(LIMIT / 2 / 7)
        ),
    ];
    let mut failures = Vec::new();
    for (i, stanza) in cases.iter().enumerate() {
        assert!(stanza.len() <= LIMIT, "case {i}: {} bytes", stanza.len());
        let input = format!("{header}{}", stanza.repeat(10));
        match check_with_limit(input.as_bytes(), LIMIT) {
            Err(f) => failures.push(format!("case {i}: {f}")),
            Ok(o) => {
                assert!(o.peak.is_some(), "the test binary counts allocations");
                assert!(o.peak.unwrap() <= memory_bound(LIMIT));
                // Case 0 (a long namespace inherited by many children) is
                // refused by the reader's bound on a stanza's names and
                // namespaces (reader::TREE_FACTOR); the others are legal.
                if i == 0 {
                    assert!(
                        o.refused && o.stanzas == 0,
                        "case 0: refused by the tree bound"
                    );
                } else {
                    assert!(o.stanzas > 0, "case {i}: the stanzas are within the limits");
                }
                eprintln!("case {i}: peak {} bytes", o.peak.unwrap());
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// Each corpus seed's verdict, for a developer reading what the reader
/// gets wrong: `cargo test --bin rookery xml::fuzz::tests::corpus_verdicts -- --ignored --nocapture`.
#[test]
#[ignore = "prints; a developer's tool"]
fn corpus_verdicts() {
    install_quiet_hook();
    for (name, data) in load_corpus() {
        match quiet_check(&data) {
            Ok(()) => println!("{name}: ok"),
            Err(f) => println!("{name}: {f}"),
        }
    }
}
