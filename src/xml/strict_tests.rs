//! Tests of the stream reader against XML 1.0 + Namespaces in XML 1.0 and
//! RFC 6120's restrictions: every malformed input is refused with the
//! right condition (raw and referenced, in text, attribute values and
//! names), the limits hold, and the bombs of a hostile peer are cut after
//! a few KiB.

use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, ReadBuf};
use xep_support::ns;

use super::reader::{StreamEvent, StreamReader, MAX_ATTRIBUTES, MAX_DEPTH};

const HEADER: &str = "<?xml version='1.0'?><stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' to='localhost' version='1.0' xml:lang='en'>";

/// A byte source that counts what the reader took from it.
struct Counting {
    data: Vec<u8>,
    pos: usize,
    taken: Arc<AtomicUsize>,
}

impl AsyncRead for Counting {
    fn poll_read(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let n = buf.remaining().min(self.data.len() - self.pos);
        let from = self.pos;
        buf.put_slice(&self.data[from..from + n]);
        self.pos += n;
        self.taken.fetch_add(n, Ordering::Relaxed);
        Poll::Ready(Ok(()))
    }
}

/// Reads `input` to its end or first error: the stanzas (as XML) and the
/// error condition, if any; also how many bytes the reader took.
async fn read_all(input: Vec<u8>, limit: Option<usize>) -> (Vec<String>, Option<String>, usize) {
    let taken = Arc::new(AtomicUsize::new(0));
    let src = Counting {
        data: input,
        pos: 0,
        taken: taken.clone(),
    };
    let mut r = StreamReader::new(src, limit);
    let mut stanzas = Vec::new();
    let error = loop {
        match r.next().await {
            Ok(StreamEvent::Header(_)) => {}
            Ok(StreamEvent::Stanza(e)) => stanzas.push(e.to_xml(ns::CLIENT)),
            Ok(StreamEvent::End) => break None,
            Err(e) => break e.condition().map(|c| c.as_str().to_string()),
        }
    };
    (stanzas, error, taken.load(Ordering::Relaxed))
}

/// The condition `stanza` (after a good header) is refused with; "ok" if
/// it is read.
async fn verdict(stanza: &[u8]) -> String {
    let mut input = HEADER.as_bytes().to_vec();
    input.extend_from_slice(stanza);
    input.extend_from_slice(b"</stream:stream>");
    match read_all(input, None).await {
        (_, Some(cond), _) => cond,
        (s, None, _) if s.len() == 1 => "ok".into(),
        (s, None, _) => panic!(
            "{} stanzas from {:?}",
            s.len(),
            String::from_utf8_lossy(stanza)
        ),
    }
}

/// The characters outside XML 1.0's `Char`.
const BAD: [u32; 9] = [0x0, 0x1, 0x8, 0xB, 0xC, 0xE, 0x1F, 0xFFFE, 0xFFFF];

#[tokio::test]
async fn invalid_characters_raw_are_not_well_formed_everywhere() {
    for code in BAD {
        let c = char::from_u32(code).unwrap();
        for place in [
            format!("<message><body>a{c}b</body></message>"),
            format!("<message id='a{c}b'/>"),
            format!("<message id=\"{c}\"/>"),
            format!("<mess{c}age/>"),
            format!("<message><b{c}/></message>"),
            format!("<message i{c}d='1'/>"),
            format!("<message><body><![CDATA[a{c}b]]></body></message>"),
            format!("<message>{c}</message>"),
            format!("<message></message{c}>"),
            format!("<message xmlns:p='urn:{c}' p:a='1'/>"),
        ] {
            assert_eq!(
                verdict(place.as_bytes()).await,
                "not-well-formed",
                "U+{code:04X}: {place:?}"
            );
        }
        // In the stream header itself.
        let header = format!("<stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' to='local{c}host'>");
        let (_, cond, _) = read_all(header.into_bytes(), None).await;
        assert_eq!(
            cond.as_deref(),
            Some("not-well-formed"),
            "U+{code:04X} in the header"
        );
        // Between stanzas.
        let between = format!("{HEADER}<presence/>{c}<presence/>");
        let (s, cond, _) = read_all(between.into_bytes(), None).await;
        assert_eq!((s.len(), cond.as_deref()), (1, Some("not-well-formed")));
    }
}

#[tokio::test]
async fn invalid_characters_referenced_are_not_well_formed() {
    let refs = BAD
        .iter()
        .flat_map(|c| {
            [
                format!("&#{c};"),
                format!("&#x{c:X};"),
                format!("&#x{c:04x};"),
            ]
        })
        // Surrogates and values past Unicode cannot be characters either.
        .chain(
            [
                "&#xD800;",
                "&#55296;",
                "&#xDFFF;",
                "&#x110000;",
                "&#4294967296;",
            ]
            .map(String::from),
        );
    for r in refs {
        for place in [
            format!("<message><body>a{r}b</body></message>"),
            format!("<message id='a{r}b'/>"),
            format!("<message><body>{r}</body></message>"),
        ] {
            assert_eq!(
                verdict(place.as_bytes()).await,
                "not-well-formed",
                "{place}"
            );
        }
    }
    // Malformed references.
    for r in [
        "&#;", "&#x;", "&#X41;", "&#x+41;", "&#+65;", "&# 65;", "&#65", "& amp;", "&1a;",
    ] {
        for place in [
            format!("<message><body>{r}</body></message>"),
            format!("<message id='{r}'/>"),
        ] {
            assert_eq!(
                verdict(place.as_bytes()).await,
                "not-well-formed",
                "{place}"
            );
        }
    }
    // Names cannot hold references at all.
    assert_eq!(verdict(b"<mess&#65;age/>").await, "not-well-formed");
    assert_eq!(verdict(b"<message i&#65;d='1'/>").await, "not-well-formed");
}

#[tokio::test]
async fn invalid_utf8_is_not_well_formed() {
    for bad in [
        &b"\x80"[..],
        b"\xC3",
        b"\xC3(",
        b"\xE2\x82",
        b"\xED\xA0\x80",
        b"\xC0\xAF",
        b"\xF4\x90\x80\x80",
        b"\xFF",
    ] {
        for (pre, post) in [
            (&b"<message><body>"[..], &b"</body></message>"[..]),
            (b"<message id='", b"'/>"),
            (b"<message a", b"='1'/>"),
            (b"<mess", b"age/>"),
        ] {
            let stanza = [pre, bad, post].concat();
            assert_eq!(verdict(&stanza).await, "not-well-formed", "{stanza:?}");
        }
    }
}

#[tokio::test]
async fn valid_characters_and_references_pass() {
    let body = "tab\t é € 😀 \u{FFFD} \u{E000} \u{10FFFF} \u{FEFF} &#9;&#x10FFFF;&#xE000;&#65533;&lt;&amp;&gt;&apos;&quot;";
    let input = format!("{HEADER}<message id='&#xA;x&#9;&#x1F600;'><body>{body}</body></message>");
    let (s, cond, _) = read_all(input.into_bytes(), None).await;
    assert_eq!(cond, None);
    assert_eq!(
        s,
        ["<message id='&#10;x&#9;😀'><body>tab\t é € 😀 \u{FFFD} \u{E000} \u{10FFFF} \u{FEFF} \t\u{10FFFF}\u{E000}\u{FFFD}&lt;&amp;&gt;'\"</body></message>"]
    );
}

#[tokio::test]
async fn attribute_syntax_quick_xml_lets_through_is_refused() {
    for bad in [
        "<message a='1'b='2'/>",
        "<message a=\"1\"b=\"2\"/>",
        "<message x='<![CDATA[y]]>'/>",
        "<message x='a<b'/>",
        "<message x=\"<\"/>",
        "<message x/>",
        "<message x=/>",
        "<message x=1/>",
        "<message x='1' / >",
        "<message ='1'/>",
        "<message a='1' a='2'/>",
        "<message a='1' a=\"1\"/>",
        "< message/>",
        "<message></ message>",
        "<message></message x='1'>",
    ] {
        assert_eq!(verdict(bad.as_bytes()).await, "not-well-formed", "{bad}");
    }
    for ok in [
        "<message a='1' b='2'/>",
        "<message\na = '1'\tb\r\n=\r\n\"2\" />",
        "<message x='>'></message >",
        "<message x='\"' y=\"'\"/>",
    ] {
        assert_eq!(verdict(ok.as_bytes()).await, "ok", "{ok}");
    }
}

#[tokio::test]
async fn names_must_be_qnames() {
    for bad in [
        "<1message/>",
        "<-message/>",
        "<.message/>",
        "<message><1a/></message>",
        "<a:b:c xmlns:a='urn:a'/>",
        "<:message/>",
        "<message: xmlns:message='urn:a'/>",
        "<message 1a='1'/>",
        "<message a:b:c='1' xmlns:a='urn:a'/>",
        "<message :a='1'/>",
        "<message a$='1'/>",
        "<mes$age/>",
        "<message xmlns:1p='urn:a'/>",
        "<\u{B7}message/>",
        "<message \u{300}a='1'/>",
        "<message\u{2028}a='1'/>",
    ] {
        assert_eq!(verdict(bad.as_bytes()).await, "not-well-formed", "{bad}");
    }
    for ok in [
        "<message é-ñ.x_1='1'/>",
        "<message><名前 xmlns='urn:a'/></message>",
        "<message a\u{B7}\u{300}b='1'/>",
    ] {
        assert_eq!(verdict(ok.as_bytes()).await, "ok", "{ok}");
    }
}

#[tokio::test]
async fn namespaces_in_xml_are_enforced() {
    for bad in [
        // Unbound prefixes, on elements and attributes.
        "<p:message/>",
        "<message p:a='1'/>",
        "<message><p:x/></message>",
        "<message><x xmlns:p='urn:p'/><y p:a='1'/></message>",
        // Duplicates after resolution.
        "<message xmlns:a='urn:x' xmlns:b='urn:x' a:x='1' b:x='2'/>",
        "<message xmlns:a='urn:x'><x xmlns:b='urn:x' a:y='1' b:y='2'/></message>",
        "<message xml:lang='en' xml:lang='fr'/>",
        // Declared twice on one element.
        "<message xmlns:a='urn:x' xmlns:a='urn:y'/>",
        "<message xmlns='urn:x' xmlns='urn:y'/>",
        // xml and xmlns misuse.
        "<message xmlns:xml='urn:other'/>",
        "<message xmlns:xmlns='urn:x'/>",
        "<message xmlns:xmlns='http://www.w3.org/2000/xmlns/'/>",
        "<message xmlns:p='http://www.w3.org/XML/1998/namespace'/>",
        "<message xmlns='http://www.w3.org/XML/1998/namespace'/>",
        "<message xmlns:p='http://www.w3.org/2000/xmlns/'/>",
        "<message xmlns='http://www.w3.org/2000/xmlns/'/>",
        "<xmlns:message/>",
        // Undeclaring a prefix is XML 1.1 only.
        "<message xmlns:p=''/>",
    ] {
        assert_eq!(verdict(bad.as_bytes()).await, "not-well-formed", "{bad}");
    }
    for ok in [
        "<message xmlns:a='urn:x' xmlns:b='urn:x' a:x='1' b:y='2'/>",
        "<message xmlns:a='urn:x' a:x='1' x='2'/>",
        "<message xmlns:xml='http://www.w3.org/XML/1998/namespace' xml:lang='en'/>",
        "<message><x xmlns=''/></message>",
        "<message xmlns:p='urn:1'><p:x xmlns:p='urn:2'/></message>",
    ] {
        assert_eq!(verdict(ok.as_bytes()).await, "ok", "{ok}");
    }
    // Resolution itself.
    let input = format!("{HEADER}<message xmlns:a='urn:x' a:x='1' x='2'><a:y/></message>");
    let (s, _, _) = read_all(input.into_bytes(), None).await;
    assert_eq!(
        s,
        ["<message x='2' xmlns:a0='urn:x' a0:x='1'><y xmlns='urn:x'/></message>"]
    );
}

#[tokio::test]
async fn text_and_prolog_rules() {
    for bad in [
        "<message><body>a ]]> b</body></message>",
        "<message><body>a & b</body></message>",
    ] {
        assert_eq!(verdict(bad.as_bytes()).await, "not-well-formed", "{bad}");
    }
    // Line ends are normalised in text and CDATA; attribute whitespace too.
    let input =
        format!("{HEADER}<message a='x\r\ny\tz'><body>1\r\n2\r3<![CDATA[4\r\n]]></body></message>");
    let (s, cond, _) = read_all(input.into_bytes(), None).await;
    assert_eq!(cond, None);
    assert_eq!(s, ["<message a='x y z'><body>1\n2\n34\n</body></message>"]);
    // Before the header: whitespace only; no CDATA, reference or text.
    let tail =
        "<stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams'>";
    for (pre, want) in [
        (" \r\n\t", None),
        ("<![CDATA[ ]]>", Some("not-well-formed")),
        ("&#32;", Some("not-well-formed")),
        ("x", Some("not-well-formed")),
        (
            "<?xml version='1.0'?><?xml version='1.0'?>",
            Some("restricted-xml"),
        ),
        ("<?xml?>", Some("not-well-formed")),
        ("<?xml version='2.0'?>", Some("not-well-formed")),
        (
            "<?xml version='1.0' encoding='latin1'?>",
            Some("unsupported-encoding"),
        ),
    ] {
        let (_, cond, _) =
            read_all(format!("{pre}{tail}</stream:stream>").into_bytes(), None).await;
        assert_eq!(cond.as_deref(), want, "{pre:?}");
    }
    // At stream level: whitespace only, literally.
    for (between, want) in [
        (" \n ", None),
        ("&#32;", Some("not-well-formed")),
        ("<![CDATA[ ]]>", Some("not-well-formed")),
    ] {
        let input = format!("{HEADER}<presence/>{between}<presence/></stream:stream>");
        let (_, cond, _) = read_all(input.into_bytes(), None).await;
        assert_eq!(cond.as_deref(), want, "{between:?}");
    }
}

#[tokio::test]
async fn depth_attribute_and_namespace_limits() {
    let nest = |n: usize| format!("{}{}", "<a>".repeat(n), "</a>".repeat(n));
    // MAX_DEPTH elements in a stanza, the stanza included.
    let ok = format!("<message>{}</message>", nest(MAX_DEPTH - 1));
    assert_eq!(verdict(ok.as_bytes()).await, "ok");
    let deep = format!("<message>{}</message>", nest(MAX_DEPTH));
    assert_eq!(verdict(deep.as_bytes()).await, "policy-violation");
    let deep_empty = format!(
        "<message>{}<b/>{}</message>",
        "<a>".repeat(MAX_DEPTH - 1),
        "</a>".repeat(MAX_DEPTH - 1)
    );
    assert_eq!(verdict(deep_empty.as_bytes()).await, "policy-violation");

    let attrs = |n: usize| (0..n).map(|i| format!(" a{i}='x'")).collect::<String>();
    assert_eq!(
        verdict(format!("<message{}/>", attrs(MAX_ATTRIBUTES)).as_bytes()).await,
        "ok"
    );
    assert_eq!(
        verdict(format!("<message{}/>", attrs(MAX_ATTRIBUTES + 1)).as_bytes()).await,
        "policy-violation"
    );
    // Namespace declarations count as attributes...
    let decls = |n: usize, tag: &str| {
        (0..n)
            .map(|i| format!(" xmlns:{tag}{i}='urn:{i}'"))
            .collect::<String>()
    };
    assert_eq!(
        verdict(format!("<message{}/>", decls(MAX_ATTRIBUTES + 1, "p")).as_bytes()).await,
        "policy-violation"
    );
    // ... and at most MAX_NAMESPACES are in scope at once (siblings do not add up).
    let siblings = format!(
        "<message><x{}/><y{}/></message>",
        decls(90, "p"),
        decls(90, "q")
    );
    assert_eq!(verdict(siblings.as_bytes()).await, "ok");
    let nested = format!(
        "<message{}><y{}/></message>",
        decls(90, "p"),
        decls(90, "q")
    );
    assert_eq!(verdict(nested.as_bytes()).await, "policy-violation");
}

#[tokio::test]
async fn the_stanza_size_limit_can_change() {
    let big = format!(
        "{HEADER}<message><body>{}</body></message>",
        "a".repeat(20_000)
    );
    let (_, cond, _) = read_all(big.clone().into_bytes(), Some(8192)).await;
    assert_eq!(cond.as_deref(), Some("policy-violation"));
    // Raised after the header (as after authentication): read.
    let mut r = StreamReader::new(big.as_bytes(), Some(8192));
    assert!(matches!(r.next().await, Ok(StreamEvent::Header(_))));
    r.set_max_stanza_size(Some(65536));
    assert!(matches!(r.next().await, Ok(StreamEvent::Stanza(_))));
}

/// The bombs of issue 12, sent before authentication: each is cut with
/// policy-violation after the reader took at most a few KiB past the
/// pre-authentication limit, and at once.
#[tokio::test]
async fn pre_auth_bombs_are_cut_early() {
    const PRE_AUTH: usize = 8192;
    let bombs: Vec<(&str, Vec<u8>)> = vec![
        (
            "10 MB attribute",
            format!("<auth a='{}'/>", "x".repeat(10_000_000)).into_bytes(),
        ),
        (
            "100,000 nested elements",
            "<a>".repeat(100_000).into_bytes(),
        ),
        (
            "100,000 attributes",
            format!(
                "<auth{}/>",
                (0..100_000)
                    .map(|i| format!(" a{i}='x'"))
                    .collect::<String>()
            )
            .into_bytes(),
        ),
        (
            "50,000 namespace declarations",
            format!(
                "<auth{}/>",
                (0..50_000)
                    .map(|i| format!(" xmlns:p{i}='urn:{i}'"))
                    .collect::<String>()
            )
            .into_bytes(),
        ),
        (
            "a million sibling elements",
            format!("<auth>{}</auth>", "<a/>".repeat(1_000_000)).into_bytes(),
        ),
        (
            "50,000 nested namespace declarations",
            (0..50_000)
                .map(|i| format!("<a xmlns:p{i}='urn:{i}'>"))
                .collect::<String>()
                .into_bytes(),
        ),
    ];
    for (what, bomb) in bombs {
        let mut input = HEADER.as_bytes().to_vec();
        input.extend_from_slice(&bomb);
        let started = std::time::Instant::now();
        let (_, cond, taken) = read_all(input, Some(PRE_AUTH)).await;
        assert_eq!(cond.as_deref(), Some("policy-violation"), "{what}");
        assert!(
            taken <= HEADER.len() + PRE_AUTH + 4096,
            "{what}: read {taken} bytes"
        );
        assert!(
            started.elapsed() < std::time::Duration::from_millis(500),
            "{what}"
        );
    }
}

/// A source that hands out one byte per read (as a slow peer would).
struct ByteByByte(Vec<u8>, usize);

impl AsyncRead for ByteByByte {
    fn poll_read(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        if self.1 < self.0.len() && buf.remaining() > 0 {
            let b = self.0[self.1];
            buf.put_slice(&[b]);
            self.1 += 1;
        }
        Poll::Ready(Ok(()))
    }
}

async fn first_event(input: &[u8], one_at_a_time: bool) -> Result<&'static str, String> {
    let ev = if one_at_a_time {
        StreamReader::new(ByteByByte(input.to_vec(), 0), None)
            .next()
            .await
    } else {
        StreamReader::new(input, None).next().await
    };
    match ev {
        Ok(StreamEvent::Header(_)) => Ok("header"),
        Ok(_) => Ok("other"),
        Err(e) => Err(e.condition().map_or("none", |c| c.as_str()).to_string()),
    }
}

#[tokio::test]
async fn a_bom_opens_the_document_however_it_arrives_and_the_declaration_comes_first() {
    let header =
        "<stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams'>";
    for one in [false, true] {
        let bom = format!("\u{FEFF}<?xml version='1.0'?>{header}");
        assert_eq!(
            first_event(bom.as_bytes(), one).await,
            Ok("header"),
            "BOM, one byte per read: {one}"
        );
        let bom_ws = format!("\u{FEFF}\n {header}");
        assert_eq!(first_event(bom_ws.as_bytes(), one).await, Ok("header"));
        let ws_decl = format!("\n<?xml version='1.0'?>{header}");
        assert_eq!(
            first_event(ws_decl.as_bytes(), one).await,
            Err("not-well-formed".into()),
            "whitespace before the declaration, one byte per read: {one}"
        );
        let two_boms = format!("\u{FEFF}\u{FEFF}{header}");
        assert_eq!(
            first_event(two_boms.as_bytes(), one).await,
            Err("not-well-formed".into())
        );
    }
}

#[tokio::test]
async fn a_restarted_stream_may_follow_whitespace_left_from_the_previous_document() {
    let header =
        "<stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams'>";
    let input = format!("{header}<auth/>\n<?xml version='1.0'?>{header}<iq/>");
    let mut r = StreamReader::new(input.as_bytes(), Some(4096));
    assert!(matches!(r.next().await, Ok(StreamEvent::Header(_))));
    assert!(matches!(r.next().await, Ok(StreamEvent::Stanza(_))));
    let mut r = r.restart();
    assert!(matches!(r.next().await, Ok(StreamEvent::Header(_))));
    assert!(matches!(r.next().await, Ok(StreamEvent::Stanza(_))));
}

#[tokio::test]
async fn names_and_namespaces_of_a_stanza_are_bounded_by_the_size_limit() {
    // An 8 KiB namespace inherited by 2,000 children: 16 KiB on the wire,
    // 16 MB as elements each owning its namespace name.
    let long_ns = format!("urn:{}", "n".repeat(8 * 1024));
    let stanza = format!(
        "<message xmlns='{long_ns}'>{}</message>",
        "<a/>".repeat(2000)
    );
    let (stanzas, error, _) =
        read_all(format!("{HEADER}{stanza}").into_bytes(), Some(32 * 1024)).await;
    assert!(stanzas.is_empty());
    assert_eq!(error.as_deref(), Some("policy-violation"));
    // The same children in a namespace of ordinary length are read.
    let stanza = format!(
        "<message><x xmlns='urn:xmpp:test'>{}</x></message>",
        "<a/>".repeat(2000)
    );
    let (stanzas, error, _) =
        read_all(format!("{HEADER}{stanza}").into_bytes(), Some(32 * 1024)).await;
    assert_eq!((stanzas.len(), error), (1, None));
}
