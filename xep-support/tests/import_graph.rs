//! The import graph of this crate has no circle (issue 14): a module that
//! names `crate::X` depends on `X`, and following those edges never leads
//! back to where it started. Bridges between modules (bookmarks, avatars)
//! depend on what they bridge and are reached through hooks, never named
//! by the bridged modules.
//!
//! Reads `src/` as text: a top-level module is `src/NAME.rs` or the folder
//! `src/NAME/` (its files together); every `crate::NAME` outside `//`
//! comments is an edge. Edges inside one folder are not checked here.
//!
//! [`WAIVED`] lists edges the check ignores; it is empty (`KeyRange` and
//! `StoreError` live in `store.rs`, re-exported by `module.rs`). Do not add
//! to it.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// Edges (from, to) left out of the graph; see the header.
const WAIVED: &[(&str, &str)] = &[];

/// Top-level module name → the text of its file(s).
fn modules() -> BTreeMap<String, String> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut out = BTreeMap::new();
    for entry in std::fs::read_dir(&src).expect("reading src/") {
        let path = entry.expect("a src/ entry").path();
        let name = path.file_stem().unwrap().to_string_lossy().to_string();
        let mut text = String::new();
        if path.is_dir() {
            for f in std::fs::read_dir(&path).expect("reading a module folder") {
                let f = f.expect("a folder entry").path();
                if f.extension().is_some_and(|e| e == "rs") {
                    text.push_str(&std::fs::read_to_string(&f).expect("reading a module file"));
                }
            }
        } else if path.extension().is_some_and(|e| e == "rs") {
            text = std::fs::read_to_string(&path).expect("reading a module file");
        } else {
            continue;
        }
        out.insert(name, text);
    }
    out
}

/// Each module's dependencies on other modules of the crate.
fn graph() -> BTreeMap<String, BTreeSet<String>> {
    let mods = modules();
    let mut g = BTreeMap::new();
    for (name, text) in &mods {
        let mut deps = BTreeSet::new();
        for line in text.lines() {
            let code = line.split("//").next().unwrap_or("");
            for (i, _) in code.match_indices("crate::") {
                let rest = &code[i + "crate::".len()..];
                let dep: String = rest
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect();
                let waived = WAIVED.contains(&(name.as_str(), dep.as_str()));
                if dep != *name && mods.contains_key(&dep) && !waived {
                    deps.insert(dep);
                }
            }
        }
        g.insert(name.clone(), deps);
    }
    g
}

/// A circle through `node`, if the graph has one reachable from it.
fn find_cycle(
    g: &BTreeMap<String, BTreeSet<String>>,
    node: &str,
    path: &mut Vec<String>,
    done: &mut BTreeSet<String>,
) -> Option<Vec<String>> {
    if let Some(at) = path.iter().position(|p| p == node) {
        let mut cycle = path[at..].to_vec();
        cycle.push(node.to_string());
        return Some(cycle);
    }
    if done.contains(node) {
        return None;
    }
    path.push(node.to_string());
    for dep in &g[node] {
        if let Some(c) = find_cycle(g, dep, path, done) {
            return Some(c);
        }
    }
    path.pop();
    done.insert(node.to_string());
    None
}

#[test]
fn the_crate_has_no_import_circle() {
    let g = graph();
    assert!(g.contains_key("pep") && g.contains_key("module"), "{g:?}");
    let mut done = BTreeSet::new();
    for node in g.keys() {
        if let Some(cycle) = find_cycle(&g, node, &mut Vec::new(), &mut done) {
            panic!("import circle in xep-support: {}", cycle.join(" -> "));
        }
    }
}

#[test]
fn bridges_depend_on_what_they_bridge_and_not_back() {
    let g = graph();
    for (bridge, bridged) in [
        ("avatar", "pep"),
        ("avatar", "vcard"),
        ("bookmarks", "pep"),
        ("bookmarks", "private"),
    ] {
        assert!(g[bridge].contains(bridged), "{bridge} should use {bridged}");
        assert!(
            !g[bridged].contains(bridge),
            "{bridged} names {bridge}; it should call it through its hook"
        );
    }
}
