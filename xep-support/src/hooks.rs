//! Which per-event hooks of [`crate::module::Module`] a module implements:
//! a small bitset ([`Hooks`]) a module returns from
//! [`crate::module::Module::hooks`]. The server builds one list of modules
//! per hook from it when it builds the modules (start-up and
//! `reload_config`), so a message calls only the modules that do
//! something in each hook, not a no-op default in every enabled module.
//!
//! Invariants: a module that declares nothing gets [`Hooks::ALL`] (called
//! for every hook, as if there were no lists), so a hook can only be
//! skipped for a module that said it does not implement it; every module of
//! this crate declares its hooks, and [`undeclared_overrides`] (run by the
//! tests below over this crate's sources, and by the server's tests over
//! its own) finds a module that overrides a hook method without declaring
//! it. Adding a hook: a constant here, its name in [`Hooks::NAMED`], and a
//! list in `crate::hook_lists::HookLists`, which the server keeps with its
//! modules and calls the hook through. (This file names no other module of
//! the crate: `module.rs` imports it.)

use std::fmt;

/// A set of per-event hooks (see [`crate::module::Module::hooks`]).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Hooks(u16);

impl Hooks {
    /// No hook: the module only answers iqs, disco, services and the like.
    pub const NONE: Hooks = Hooks(0);
    /// [`crate::module::Module::filter_inbound`].
    pub const FILTER_INBOUND: Hooks = Hooks(1 << 0);
    /// [`crate::module::Module::filter_outbound`].
    pub const FILTER_OUTBOUND: Hooks = Hooks(1 << 1);
    /// [`crate::module::Module::message_from_session`].
    pub const MESSAGE_FROM_SESSION: Hooks = Hooks(1 << 2);
    /// [`crate::module::Module::filter_message_to_account`].
    pub const FILTER_MESSAGE_TO_ACCOUNT: Hooks = Hooks(1 << 3);
    /// [`crate::module::Module::message_delivered`].
    pub const MESSAGE_DELIVERED: Hooks = Hooks(1 << 4);
    /// [`crate::module::Module::message_stored_offline`].
    pub const MESSAGE_STORED_OFFLINE: Hooks = Hooks(1 << 5);
    /// [`crate::module::Module::session_opened`].
    pub const SESSION_OPENED: Hooks = Hooks(1 << 6);
    /// [`crate::module::Module::session_closed`].
    pub const SESSION_CLOSED: Hooks = Hooks(1 << 7);
    /// [`crate::module::Module::presence_available`].
    pub const PRESENCE_AVAILABLE: Hooks = Hooks(1 << 8);
    /// [`crate::module::Module::room_mention`].
    pub const ROOM_MENTION: Hooks = Hooks(1 << 9);
    /// [`crate::module::Module::tick`].
    pub const TICK: Hooks = Hooks(1 << 10);
    /// Every hook (the default: nothing is skipped).
    pub const ALL: Hooks = Hooks((1 << 11) - 1);

    /// Each hook with the name of the method it stands for, and of its
    /// constant.
    pub const NAMED: [(Hooks, &'static str, &'static str); 11] = [
        (Hooks::FILTER_INBOUND, "filter_inbound", "FILTER_INBOUND"),
        (Hooks::FILTER_OUTBOUND, "filter_outbound", "FILTER_OUTBOUND"),
        (
            Hooks::MESSAGE_FROM_SESSION,
            "message_from_session",
            "MESSAGE_FROM_SESSION",
        ),
        (
            Hooks::FILTER_MESSAGE_TO_ACCOUNT,
            "filter_message_to_account",
            "FILTER_MESSAGE_TO_ACCOUNT",
        ),
        (
            Hooks::MESSAGE_DELIVERED,
            "message_delivered",
            "MESSAGE_DELIVERED",
        ),
        (
            Hooks::MESSAGE_STORED_OFFLINE,
            "message_stored_offline",
            "MESSAGE_STORED_OFFLINE",
        ),
        (Hooks::SESSION_OPENED, "session_opened", "SESSION_OPENED"),
        (Hooks::SESSION_CLOSED, "session_closed", "SESSION_CLOSED"),
        (
            Hooks::PRESENCE_AVAILABLE,
            "presence_available",
            "PRESENCE_AVAILABLE",
        ),
        (Hooks::ROOM_MENTION, "room_mention", "ROOM_MENTION"),
        (Hooks::TICK, "tick", "TICK"),
    ];

    /// Both sets together (a `const` form of `|`).
    pub const fn with(self, other: Hooks) -> Hooks {
        Hooks(self.0 | other.0)
    }

    /// Whether every hook of `other` is in this set.
    pub const fn contains(self, other: Hooks) -> bool {
        self.0 & other.0 == other.0
    }

    /// Whether the set has no hook.
    pub const fn is_empty(self) -> bool {
        self.0 == 0
    }
}

impl std::ops::BitOr for Hooks {
    type Output = Hooks;
    fn bitor(self, other: Hooks) -> Hooks {
        self.with(other)
    }
}

impl fmt::Debug for Hooks {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<&str> = Hooks::NAMED
            .iter()
            .filter(|(h, _, _)| self.contains(*h))
            .map(|(_, _, c)| *c)
            .collect();
        write!(f, "Hooks({})", names.join(" | "))
    }
}

/// Every `impl Module for TYPE` block of a Rust source file that overrides
/// a hook method of [`Hooks::NAMED`] without declaring it: a block with an
/// `fn hooks` must name each overridden hook's constant in it (a block
/// without one gets [`Hooks::ALL`], which is safe). Returns
/// `TYPE: method` for each omission. For the tests of this crate and of
/// the server (a textual check: comments and string literals are skipped).
pub fn undeclared_overrides(source: &str) -> Vec<String> {
    let mut missing = Vec::new();
    for block in module_impls(source) {
        if let Some(declared) = &block.declared {
            for (_, method, constant) in Hooks::NAMED {
                if block.overrides.contains(&method) && !mentions(declared, constant) {
                    missing.push(format!("{}: {method}", block.ty));
                }
            }
        }
    }
    missing
}

/// One `impl Module for TYPE` block as the checks see it.
struct ModuleImpl {
    ty: String,
    /// The text of its `fn hooks` body, if it has one.
    declared: Option<String>,
    /// The hook methods (of [`Hooks::NAMED`]) it overrides.
    overrides: Vec<&'static str>,
}

/// The `impl Module for TYPE` blocks of a source file.
fn module_impls(source: &str) -> Vec<ModuleImpl> {
    let code = blank_comments_and_strings(source);
    let mut blocks = Vec::new();
    let mut rest = code.as_str();
    while let Some(at) = find_impl_module(rest) {
        let after = &rest[at..];
        let Some(open) = after.find('{') else { break };
        let ty = after[..open]
            .split_whitespace()
            .last()
            .unwrap_or("?")
            .to_string();
        let body_start = open + 1;
        let mut depth = 1usize;
        let mut end = after.len();
        for (i, c) in after[body_start..].char_indices() {
            match c {
                '{' => depth += 1,
                '}' => {
                    depth -= 1;
                    if depth == 0 {
                        end = body_start + i;
                        break;
                    }
                }
                _ => {}
            }
        }
        let body = &after[body_start..end];
        blocks.push(ModuleImpl {
            ty,
            declared: fn_body(body, "hooks").map(str::to_string),
            overrides: Hooks::NAMED
                .iter()
                .filter(|(_, m, _)| fn_body(body, m).is_some())
                .map(|(_, m, _)| *m)
                .collect(),
        });
        rest = &after[end..];
    }
    blocks
}

/// The byte offset of the next `impl ... Module for` (the trait named
/// plainly or by a path ending in `Module`).
fn find_impl_module(code: &str) -> Option<usize> {
    let mut from = 0;
    while let Some(i) = code[from..].find("impl") {
        let at = from + i;
        let line_end = code[at..].find('{').map_or(code.len(), |e| at + e);
        let header = &code[at..line_end];
        let words: Vec<&str> = header.split_whitespace().collect();
        let is_word = at == 0 || !is_ident(code[..at].chars().next_back().unwrap_or(' '));
        if is_word
            && words.first() == Some(&"impl")
            && words
                .windows(2)
                .any(|w| (w[0] == "Module" || w[0].ends_with("::Module")) && w[1] == "for")
        {
            return Some(at);
        }
        from = at + 4;
    }
    None
}

fn is_ident(c: char) -> bool {
    c.is_alphanumeric() || c == '_'
}

/// The text between the braces of `fn NAME` directly in `body`, if any.
fn fn_body<'a>(body: &'a str, name: &str) -> Option<&'a str> {
    let pattern = format!("fn {name}");
    let mut from = 0;
    while let Some(i) = body[from..].find(&pattern) {
        let at = from + i;
        let next = body[at + pattern.len()..].chars().next().unwrap_or(' ');
        if is_ident(next) {
            from = at + pattern.len();
            continue;
        }
        let open = at + body[at..].find('{')?;
        let mut depth = 0usize;
        for (j, c) in body[open..].char_indices() {
            match c {
                '{' => depth += 1,
                '}' => {
                    depth -= 1;
                    if depth == 0 {
                        return Some(&body[open + 1..open + j]);
                    }
                }
                _ => {}
            }
        }
        return None;
    }
    None
}

/// Whether `text` names the constant `Hooks::NAME` (or `ALL`).
fn mentions(text: &str, constant: &str) -> bool {
    mentions_exactly(text, constant) || mentions_exactly(text, "ALL")
}

/// Whether `text` has the word `word`.
fn mentions_exactly(text: &str, word: &str) -> bool {
    text.match_indices(word).any(|(i, _)| {
        let before = text[..i].chars().next_back().unwrap_or(' ');
        let after = text[i + word.len()..].chars().next().unwrap_or(' ');
        !is_ident(before) && !is_ident(after)
    })
}

/// `source` with comments, string and char literals replaced by spaces
/// (lengths kept), so braces and names in them do not count.
fn blank_comments_and_strings(source: &str) -> String {
    let chars: Vec<char> = source.chars().collect();
    let mut out = String::with_capacity(source.len());
    let mut i = 0;
    let blank = |out: &mut String, c: char| out.push(if c == '\n' { '\n' } else { ' ' });
    while i < chars.len() {
        let c = chars[i];
        let next = chars.get(i + 1).copied();
        if c == '/' && next == Some('/') {
            while i < chars.len() && chars[i] != '\n' {
                blank(&mut out, chars[i]);
                i += 1;
            }
        } else if c == '/' && next == Some('*') {
            let mut depth = 0usize;
            while i < chars.len() {
                if chars[i] == '/' && chars.get(i + 1) == Some(&'*') {
                    depth += 1;
                    out.push_str("  ");
                    i += 2;
                } else if chars[i] == '*' && chars.get(i + 1) == Some(&'/') {
                    depth -= 1;
                    out.push_str("  ");
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    blank(&mut out, chars[i]);
                    i += 1;
                }
            }
        } else if c == 'r'
            && (next == Some('"') || next == Some('#'))
            && (i == 0 || !is_ident(chars[i - 1]))
        {
            // A raw string: r"…", r#"…"#, …
            let mut j = i + 1;
            let mut hashes = 0;
            while chars.get(j) == Some(&'#') {
                hashes += 1;
                j += 1;
            }
            if chars.get(j) != Some(&'"') {
                out.push(c);
                i += 1;
                continue;
            }
            j += 1;
            loop {
                match chars.get(j) {
                    None => break,
                    Some('"') if (1..=hashes).all(|k| chars.get(j + k) == Some(&'#')) => {
                        j += 1 + hashes;
                        break;
                    }
                    _ => j += 1,
                }
            }
            for &ch in &chars[i..j.min(chars.len())] {
                blank(&mut out, ch);
            }
            i = j;
        } else if c == '"' {
            blank(&mut out, c);
            i += 1;
            while i < chars.len() && chars[i] != '"' {
                if chars[i] == '\\' {
                    blank(&mut out, chars[i]);
                    i += 1;
                }
                if i < chars.len() {
                    blank(&mut out, chars[i]);
                    i += 1;
                }
            }
            if i < chars.len() {
                blank(&mut out, chars[i]);
                i += 1;
            }
        } else if c == '\'' {
            // A char literal ('x', '\n', '\u{..}') or a lifetime ('a).
            if next == Some('\\') {
                let mut j = i + 2;
                while j < chars.len() && chars[j] != '\'' {
                    j += 1;
                }
                for &ch in &chars[i..(j + 1).min(chars.len())] {
                    blank(&mut out, ch);
                }
                i = j + 1;
            } else if chars.get(i + 2) == Some(&'\'') {
                out.push_str("   ");
                i += 3;
            } else {
                out.push(c);
                i += 1;
            }
        } else {
            out.push(c);
            i += 1;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sets() {
        let h = Hooks::FILTER_INBOUND | Hooks::TICK;
        assert!(h.contains(Hooks::TICK) && h.contains(Hooks::FILTER_INBOUND));
        assert!(!h.contains(Hooks::FILTER_OUTBOUND));
        assert!(Hooks::NONE.is_empty() && !h.is_empty());
        for (one, _, _) in Hooks::NAMED {
            assert!(Hooks::ALL.contains(one));
            assert!(!Hooks::NONE.contains(one));
        }
        let every = Hooks::NAMED
            .iter()
            .fold(Hooks::NONE, |acc, (h, _, _)| acc | *h);
        assert_eq!(every, Hooks::ALL, "NAMED lists every hook");
        assert_eq!(
            format!("{h:?}"),
            "Hooks(FILTER_INBOUND | TICK)",
            "Debug names the constants"
        );
    }

    #[test]
    fn the_check_finds_an_undeclared_override() {
        let src = r#"
            // impl Module for Commented { fn tick(&self) {} fn hooks() { } }
            impl Module for Good {
                fn name(&self) -> &'static str { "a}b" }
                fn hooks(&self) -> Hooks { Hooks::TICK | Hooks::SESSION_CLOSED }
                fn tick(&self, _ctx: &dyn ServerContext) { let c = '{'; }
                fn session_closed(&self, _c: &dyn ServerContext, _j: &FullJid) {}
            }
            impl xep_support::module::Module for Bad {
                fn hooks(&self) -> Hooks { Hooks::FILTER_INBOUND }
                fn filter_inbound(&self) -> Verdict { Verdict::Pass }
                fn filter_outbound(&self) -> Verdict { Verdict::Pass }
                fn session_opened_helper(&self) {}
            }
            impl Module for Undeclared {
                fn message_delivered(&self) -> Vec<Element> { Vec::new() }
            }
            impl Module for Everything {
                fn hooks(&self) -> Hooks { Hooks::ALL }
                fn tick(&self) {}
            }
        "#;
        assert_eq!(undeclared_overrides(src), vec!["Bad: filter_outbound"]);
    }

    /// Every module of this crate declares each hook it overrides.
    #[test]
    fn every_module_of_this_crate_declares_its_hooks() {
        fn walk(dir: &std::path::Path, files: &mut Vec<std::path::PathBuf>) {
            for e in std::fs::read_dir(dir).expect("read the sources") {
                let p = e.expect("a directory entry").path();
                if p.is_dir() {
                    walk(&p, files);
                } else if p.extension().is_some_and(|x| x == "rs") {
                    files.push(p);
                }
            }
        }
        let mut files = Vec::new();
        walk(
            &std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src"),
            &mut files,
        );
        let mut impls = 0;
        let mut missing = Vec::new();
        for f in &files {
            let src = std::fs::read_to_string(f).expect("read a source file");
            for m in undeclared_overrides(&src) {
                missing.push(format!("{}: {m}", f.display()));
            }
            // This crate's modules declare precisely: an `fn hooks` each
            // (no module calls through the "every hook" default), naming
            // only hooks it overrides (test modules aside).
            let code = src.split("#[cfg(test)]").next().unwrap_or_default();
            for block in module_impls(code) {
                impls += 1;
                let Some(declared) = &block.declared else {
                    missing.push(format!("{}: {}: no `fn hooks`", f.display(), block.ty));
                    continue;
                };
                for (_, method, constant) in Hooks::NAMED {
                    if mentions_exactly(declared, constant) && !block.overrides.contains(&method) {
                        missing.push(format!(
                            "{}: {}: declares {constant} but does not override {method}",
                            f.display(),
                            block.ty
                        ));
                    }
                }
            }
        }
        assert!(impls >= 25, "found the modules ({impls})");
        assert!(
            missing.is_empty(),
            "`fn hooks` does not match the hook methods overridden: {missing:#?}"
        );
    }
}
