//! The import graph of the server crate holds the layering issue 14 set up
//! (see docs/architecture.md, "Folders"):
//! - `server.rs` is shared state and imports nothing above it: only the
//!   modules in [`SERVER_MAY_IMPORT`], none of which imports it back;
//! - `config/` does not import `ctl/`: the ctl command catalog both use is
//!   the leaf `ctl_catalog.rs`;
//! - `s2s/` and `component/` do not import `c2s/`: the stream plumbing they
//!   share (`BoxIo`, stream errors) is the leaf `stream.rs`;
//! - `router.rs` (the router) imports neither `s2s/` nor `component/`:
//!   it asks the route table (`routes.rs`), where they register;
//! - `im/` does not import `router.rs`: its handlers return the stanzas
//!   to send and the router sends them;
//! - the session table (`sessions.rs`) does not import `c2s/`: the XEP-0198
//!   state its handle carries is the leaf `sm_state.rs`;
//! - no import circle spans more than one module, except those in
//!   [`KNOWN_CIRCLES`] (each to be broken, not added to);
//! - `tls/` does not import `server.rs` (`accept_transport` takes an
//!   acceptor), and the leaves stay leaves.
//!
//! Reads `src/` as text: a top-level module is `src/NAME.rs` or the folder
//! `src/NAME/` (all its files, nested folders included); every `crate::NAME`
//! outside comments is an edge from that module to `NAME`. `main.rs`, which
//! declares every module, is not a module here.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// What `server.rs` may import: configuration types, the link tables,
/// the session table, the route table, storage (with its caches), TLS.
const SERVER_MAY_IMPORT: &[&str] = &["config", "links", "routes", "sessions", "storage", "tls"];

/// Import circles between top-level modules that remain, sorted (none:
/// the rule evaluator is `config/acl.rs`, inside the configuration it reads).
const KNOWN_CIRCLES: &[&[&str]] = &[];

/// Modules that import nothing from the crate.
const LEAVES: &[&str] = &[
    "ctl_catalog",
    "links",
    "metrics",
    "routes",
    "sm_state",
    "stream",
];

fn read_tree(dir: &Path, text: &mut String) {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .expect("reading a module folder")
        .map(|e| e.expect("a folder entry").path())
        .collect();
    entries.sort();
    for path in entries {
        if path.is_dir() {
            read_tree(&path, text);
        } else if path.extension().is_some_and(|e| e == "rs") {
            text.push_str(&std::fs::read_to_string(&path).expect("reading a module file"));
            text.push('\n');
        }
    }
}

/// Top-level module name → the text of its file(s).
fn modules() -> BTreeMap<String, String> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut out: BTreeMap<String, String> = BTreeMap::new();
    for entry in std::fs::read_dir(&src).expect("reading src/") {
        let path = entry.expect("a src/ entry").path();
        let name = path.file_stem().unwrap().to_string_lossy().to_string();
        let mut text = String::new();
        if path.is_dir() {
            read_tree(&path, &mut text);
        } else if path.extension().is_some_and(|e| e == "rs") && name != "main" {
            text = std::fs::read_to_string(&path).expect("reading a module file");
        } else {
            continue;
        }
        out.entry(name).or_default().push_str(&text);
    }
    out
}

/// The code of a line: up to a `//` comment (one not inside `://`, as in
/// a URL in a string).
fn code_of(line: &str) -> &str {
    let bytes = line.as_bytes();
    let mut i = 0;
    while let Some(at) = line[i..].find("//") {
        let pos = i + at;
        if pos == 0 || bytes[pos - 1] != b':' {
            return &line[..pos];
        }
        i = pos + 2;
    }
    line
}

/// Each module's dependencies on other modules of the crate.
fn graph() -> BTreeMap<String, BTreeSet<String>> {
    let mods = modules();
    let mut g = BTreeMap::new();
    for (name, text) in &mods {
        let mut deps = BTreeSet::new();
        for line in text.lines() {
            let code = code_of(line);
            for (i, _) in code.match_indices("crate::") {
                let rest = &code[i + "crate::".len()..];
                let dep: String = rest
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect();
                if dep != *name && mods.contains_key(&dep) {
                    deps.insert(dep);
                }
            }
        }
        g.insert(name.clone(), deps);
    }
    g
}

#[test]
fn the_graph_is_read() {
    let g = graph();
    for m in [
        "server",
        "serve",
        "c2s",
        "s2s",
        "component",
        "config",
        "ctl",
        "stream",
    ] {
        assert!(g.contains_key(m), "module {m} not found: {:?}", g.keys());
    }
    // The reader finds edges (a check that finds none proves nothing).
    assert!(g["serve"].contains("server") && g["serve"].contains("c2s"));
    assert!(g["ctl"].contains("ctl_catalog") && g["config"].contains("ctl_catalog"));
}

#[test]
fn server_imports_nothing_above_it() {
    let g = graph();
    let allowed: BTreeSet<String> = SERVER_MAY_IMPORT.iter().map(|s| s.to_string()).collect();
    let extra: Vec<&String> = g["server"].difference(&allowed).collect();
    assert!(
        extra.is_empty(),
        "server.rs imports {extra:?}: it holds shared state only; start-up and \
         adapters belong in serve/"
    );
    for below in SERVER_MAY_IMPORT {
        assert!(
            !g[*below].contains("server"),
            "{below} is below server.rs but imports it"
        );
    }
}

#[test]
fn config_does_not_import_ctl() {
    let g = graph();
    assert!(
        !g["config"].contains("ctl"),
        "config imports ctl: {:?}",
        g["config"]
    );
}

#[test]
fn s2s_and_component_do_not_import_c2s() {
    let g = graph();
    for m in ["s2s", "component"] {
        assert!(!g[m].contains("c2s"), "{m} imports c2s: {:?}", g[m]);
    }
}

#[test]
fn the_router_imports_no_transport() {
    let g = graph();
    assert!(g["router"].contains("routes"), "{:?}", g["router"]);
    for m in ["s2s", "component"] {
        assert!(
            !g["router"].contains(m),
            "router imports {m}: it routes through the route table ({:?})",
            g["router"]
        );
    }
    // The transports register in the table.
    assert!(g["s2s"].contains("routes") && g["component"].contains("routes"));
}

#[test]
fn im_does_not_import_the_router() {
    let g = graph();
    assert!(g["router"].contains("im"), "{:?}", g["router"]);
    assert!(
        !g["im"].contains("router"),
        "im imports router: {:?}",
        g["im"]
    );
}

#[test]
fn the_session_table_does_not_import_c2s() {
    let g = graph();
    assert!(g["sessions"].contains("sm_state"), "{:?}", g["sessions"]);
    assert!(
        !g["sessions"].contains("c2s"),
        "sessions imports c2s: {:?}",
        g["sessions"]
    );
    assert!(!g["sessions"].contains("router"), "{:?}", g["sessions"]);
}

#[test]
fn tls_does_not_import_the_server() {
    let g = graph();
    assert!(!g["tls"].contains("server"), "tls: {:?}", g["tls"]);
}

#[test]
fn leaves_stay_leaves() {
    let g = graph();
    for leaf in LEAVES {
        assert!(g[*leaf].is_empty(), "{leaf} imports {:?}", g[*leaf]);
    }
}

/// The strongly connected components of `g` with more than one module,
/// each sorted (Tarjan's algorithm).
fn circles(g: &BTreeMap<String, BTreeSet<String>>) -> Vec<Vec<String>> {
    struct State<'a> {
        g: &'a BTreeMap<String, BTreeSet<String>>,
        next: usize,
        index: BTreeMap<&'a str, usize>,
        low: BTreeMap<&'a str, usize>,
        stack: Vec<&'a str>,
        out: Vec<Vec<String>>,
    }
    fn visit<'a>(st: &mut State<'a>, v: &'a str) {
        st.index.insert(v, st.next);
        st.low.insert(v, st.next);
        st.next += 1;
        st.stack.push(v);
        let g = st.g;
        for w in &g[v] {
            let w = w.as_str();
            if !st.index.contains_key(w) {
                visit(st, w);
                let lw = st.low[w];
                let lv = st.low.get_mut(v).unwrap();
                *lv = (*lv).min(lw);
            } else if st.stack.contains(&w) {
                let iw = st.index[w];
                let lv = st.low.get_mut(v).unwrap();
                *lv = (*lv).min(iw);
            }
        }
        if st.low[v] == st.index[v] {
            let mut comp = Vec::new();
            while let Some(w) = st.stack.pop() {
                comp.push(w.to_string());
                if w == v {
                    break;
                }
            }
            if comp.len() > 1 {
                comp.sort();
                st.out.push(comp);
            }
        }
    }
    let mut st = State {
        g,
        next: 0,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        out: Vec::new(),
    };
    for v in g.keys() {
        if !st.index.contains_key(v.as_str()) {
            visit(&mut st, v);
        }
    }
    st.out.sort();
    st.out
}

#[test]
fn no_circle_spans_modules_but_the_known_ones() {
    let found = circles(&graph());
    let known: Vec<Vec<String>> = KNOWN_CIRCLES
        .iter()
        .map(|c| c.iter().map(|s| s.to_string()).collect())
        .collect();
    assert_eq!(
        found, known,
        "import circles between modules (a new one is a layering error; a \
         known one gone: remove it from KNOWN_CIRCLES)"
    );
}

#[test]
fn circles_are_found() {
    let mut g: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let edge = |g: &mut BTreeMap<String, BTreeSet<String>>, a: &str, b: &str| {
        g.entry(a.into()).or_default().insert(b.into());
        g.entry(b.into()).or_default();
    };
    edge(&mut g, "a", "b");
    edge(&mut g, "b", "c");
    edge(&mut g, "c", "a");
    edge(&mut g, "c", "d");
    edge(&mut g, "d", "e");
    edge(&mut g, "e", "d");
    assert_eq!(
        circles(&g),
        vec![vec!["a", "b", "c"], vec!["d", "e"]]
            .into_iter()
            .map(|c| c.into_iter().map(String::from).collect::<Vec<_>>())
            .collect::<Vec<_>>()
    );
}

#[test]
fn comments_and_urls_are_read_right() {
    assert_eq!(code_of("use crate::a; // crate::b"), "use crate::a; ");
    assert_eq!(
        code_of(r#"x("http://e.org/x", crate::c) // y"#),
        r#"x("http://e.org/x", crate::c) "#
    );
    assert_eq!(code_of("//! crate::d"), "");
}
