//! Checks `modules.mod_disco.server_info` (XEP-0157 contact addresses) as
//! ejabberd writes it: a list of `{modules: all | [MODULE], name: FIELD,
//! urls: [URI]}`. A wrong shape, a missing `name` or `urls`, or an address
//! that is not a URI is a config error with its line; a field name outside
//! XEP-0157's registry, or an entry only for other modules (Rookery shows
//! the addresses in the server's disco#info only), is a warning.

use super::check::{self, Notes, Problem};
use super::yaml::{Kind, Node};

/// The field names XEP-0157 registers.
pub const FIELDS: &[&str] = &[
    "abuse-addresses",
    "admin-addresses",
    "feedback-addresses",
    "sales-addresses",
    "security-addresses",
    "status-addresses",
    "support-addresses",
];

/// Whether `text` looks like a URI: `scheme:rest`, scheme per RFC 3986.
fn is_uri(text: &str) -> bool {
    let Some((scheme, rest)) = text.split_once(':') else {
        return false;
    };
    let mut chars = scheme.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'))
        && !rest.is_empty()
        && !text.chars().any(char::is_whitespace)
}

/// Check the `server_info` option of `mod_disco` (its node, at `path`).
pub fn check(node: &Node, path: &str, notes: &mut Notes) -> Result<(), Problem> {
    let entries = match &node.kind {
        Kind::Seq(items) => items.as_slice(),
        _ if node.is_null() => return Ok(()),
        _ => {
            return Err(check::expected(
                node,
                path,
                "a list of {modules, name, urls} entries",
            ))
        }
    };
    for (i, entry) in entries.iter().enumerate() {
        let at = check::index(path, i);
        let fields = match &entry.kind {
            Kind::Map(fields) => fields,
            _ => {
                return Err(check::expected(
                    entry,
                    &at,
                    "a map with name, urls and (optionally) modules",
                ))
            }
        };
        for (key, _) in fields {
            let k = check::key(key, &at)?;
            if !matches!(k, "modules" | "name" | "urls") {
                return Err(Problem::at(
                    key,
                    format!(
                        "{}: unknown key; expected modules, name or urls",
                        check::join(&at, k)
                    ),
                ));
            }
        }
        let name_path = check::join(&at, "name");
        let Some(name_node) = entry.get("name") else {
            return Err(Problem::at(
                entry,
                format!("{name_path}: missing (e.g. abuse-addresses)"),
            ));
        };
        let name = check::string(name_node, &name_path, "a field name like abuse-addresses")?;
        if !FIELDS.contains(&name) {
            notes.warn(
                name_node,
                format!(
                    "{name_path}: {name} is not a XEP-0157 field (expected one of {}); shown anyway",
                    FIELDS.join(", ")
                ),
            );
        }
        let urls_path = check::join(&at, "urls");
        let Some(urls) = entry.get("urls") else {
            return Err(Problem::at(
                entry,
                format!(
                    "{urls_path}: missing (a list of addresses such as mailto:abuse@example.org)"
                ),
            ));
        };
        let list = check::list_or_single(urls);
        if list.is_empty() {
            return Err(check::expected(urls, &urls_path, "at least one address"));
        }
        for (j, url) in list.into_iter().enumerate() {
            let p = check::index(&urls_path, j);
            let text = check::string(url, &p, "a URI such as mailto:abuse@example.org")?;
            if !is_uri(text) {
                return Err(check::expected(
                    url,
                    &p,
                    "a URI such as mailto:abuse@example.org, xmpp:admin@example.org or https://example.org/contact",
                ));
            }
        }
        if let Some(modules) = entry.get("modules") {
            let mp = check::join(&at, "modules");
            let for_server = match &modules.kind {
                Kind::Scalar { value, .. } if value == "all" => true,
                Kind::Scalar { value, .. } if value.starts_with("mod_") => value == "mod_disco",
                Kind::Seq(items) => {
                    let mut names = Vec::new();
                    for (j, m) in items.iter().enumerate() {
                        names.push(check::string(m, &check::index(&mp, j), "a module name")?);
                    }
                    names.contains(&"mod_disco")
                }
                _ => {
                    return Err(check::expected(
                        modules,
                        &mp,
                        "all, or a list of module names",
                    ))
                }
            };
            if !for_server {
                notes.warn(
                    modules,
                    format!(
                        "{mp}: Rookery shows server_info in the server's disco#info only \
                         (modules: all, or a list with mod_disco); this entry is not shown"
                    ),
                );
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(yaml: &str) -> (Result<(), Problem>, Vec<(usize, String)>) {
        let root = super::super::yaml::parse(yaml).unwrap().unwrap();
        let node = root.get("server_info").unwrap();
        let mut notes = Notes::default();
        let r = check(node, "modules.mod_disco.server_info", &mut notes);
        (r, notes.warnings)
    }

    #[test]
    fn accepts_ejabberds_format() {
        let (r, w) = run("server_info:\n  - modules: all\n    name: abuse-addresses\n    urls: [\"mailto:abuse@example.org\"]\n  - modules: [mod_disco, mod_muc]\n    name: admin-addresses\n    urls:\n      - xmpp:admin@example.org\n      - https://example.org/admin\n");
        assert_eq!(r, Ok(()));
        assert!(w.is_empty(), "{w:?}");
    }

    #[test]
    fn refuses_bad_values_with_their_line() {
        let (r, _) =
            run("server_info:\n  - name: abuse-addresses\n    urls: [\"abuse at example.org\"]\n");
        let p = r.unwrap_err();
        assert_eq!(p.line, 3, "{p:?}");
        assert!(
            p.message.contains("server_info[0].urls[0]"),
            "{}",
            p.message
        );
        let (r, _) = run("server_info:\n  - urls: [\"mailto:a@b\"]\n");
        assert!(r.unwrap_err().message.contains("name: missing"));
        let (r, _) = run("server_info:\n  - name: abuse-addresses\n");
        assert!(r.unwrap_err().message.contains("urls: missing"));
        let (r, _) = run("server_info: yes\n");
        assert_eq!(r.unwrap_err().line, 1);
        let (r, _) = run("server_info:\n  - name: abuse-addresses\n    url: [\"mailto:a@b\"]\n");
        assert!(r.unwrap_err().message.contains("unknown key"));
    }

    #[test]
    fn warns_about_unknown_fields_and_other_modules() {
        let (r, w) = run("server_info:\n  - modules: [mod_muc]\n    name: abuse-address\n    urls: [\"mailto:a@b\"]\n");
        assert_eq!(r, Ok(()));
        assert_eq!(w.len(), 2, "{w:?}");
        assert_eq!(w[0].0, 3);
        assert_eq!(w[1].0, 2);
    }
}
