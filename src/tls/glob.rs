//! ejabberd-style `certfiles` patterns: each entry is a path whose components
//! may hold shell wildcards (`*`, `?`, `[abc]`, `[a-z]`, `[!abc]`), e.g.
//! `/etc/letsencrypt/live/*/*.pem`. Wildcards never match a leading `.` and
//! never cross `/`. Entries without wildcards are kept as they are (a missing
//! file is then reported when it is read).

use std::collections::HashSet;
use std::io::ErrorKind;
use std::path::{Component, Path, PathBuf};

use super::TlsError;

fn has_magic(s: &str) -> bool {
    s.contains(['*', '?', '['])
}

/// Expand the `certfiles` patterns into existing regular files, in pattern
/// order (matches of one pattern sorted), without duplicates. A pattern
/// matching nothing adds a warning; a directory that exists but cannot be
/// listed is an error naming it.
pub fn expand_certfiles(
    patterns: &[PathBuf],
    warnings: &mut Vec<String>,
) -> Result<Vec<PathBuf>, TlsError> {
    let mut out = Vec::new();
    let mut seen = HashSet::new();
    for pattern in patterns {
        let matches = if pattern.to_str().is_some_and(has_magic) {
            let matches = expand_one(pattern)?;
            if matches.is_empty() {
                warnings.push(format!(
                    "certfiles pattern {} matches no file",
                    pattern.display()
                ));
            }
            matches
        } else {
            vec![pattern.clone()]
        };
        for path in matches {
            if seen.insert(path.clone()) {
                out.push(path);
            }
        }
    }
    Ok(out)
}

/// All regular files matching one pattern, sorted per directory level.
fn expand_one(pattern: &Path) -> Result<Vec<PathBuf>, TlsError> {
    let mut current = vec![PathBuf::new()];
    for component in pattern.components() {
        let glob = match component {
            Component::Normal(os) => os.to_str().filter(|s| has_magic(s)),
            _ => None,
        };
        let Some(glob) = glob else {
            for path in &mut current {
                path.push(component.as_os_str());
            }
            continue;
        };
        let glob: Vec<char> = glob.chars().collect();
        let mut next = Vec::new();
        for dir in &current {
            let listed = if dir.as_os_str().is_empty() {
                Path::new(".")
            } else {
                dir.as_path()
            };
            let read = match std::fs::read_dir(listed) {
                Ok(read) => read,
                Err(e) if matches!(e.kind(), ErrorKind::NotFound | ErrorKind::NotADirectory) => {
                    continue
                }
                Err(e) => {
                    return Err(TlsError::file(
                        listed,
                        format!("cannot list directory: {e}"),
                    ))
                }
            };
            let mut found = Vec::new();
            for entry in read {
                let entry = entry
                    .map_err(|e| TlsError::file(listed, format!("cannot list directory: {e}")))?;
                let name = entry.file_name();
                if let Some(name) = name.to_str() {
                    if wildcard_match(&glob, name) {
                        found.push(dir.join(name));
                    }
                }
            }
            found.sort();
            next.extend(found);
        }
        current = next;
    }
    Ok(current.into_iter().filter(|p| p.is_file()).collect())
}

/// Parse the bracket expression starting at `pat[start] == '['` against
/// `c`: `Some((matched, index after ']'))`, or `None` when unterminated
/// (then `[` is literal).
fn match_class(pat: &[char], start: usize, c: char) -> Option<(bool, usize)> {
    let mut i = start + 1;
    let negate = matches!(pat.get(i), Some('!') | Some('^'));
    if negate {
        i += 1;
    }
    let mut matched = false;
    let mut first = true;
    loop {
        let &lo = pat.get(i)?;
        if lo == ']' && !first {
            return Some((matched != negate, i + 1));
        }
        first = false;
        if pat.get(i + 1) == Some(&'-') && pat.get(i + 2).is_some_and(|&hi| hi != ']') {
            let hi = pat[i + 2];
            if lo <= c && c <= hi {
                matched = true;
            }
            i += 3;
        } else {
            if lo == c {
                matched = true;
            }
            i += 1;
        }
    }
}

/// Shell-style match of one path component `name` against `pat`.
pub(crate) fn wildcard_match(pat: &[char], name: &str) -> bool {
    let name: Vec<char> = name.chars().collect();
    if name.first() == Some(&'.') && pat.first() != Some(&'.') {
        return false;
    }
    let (mut p, mut n) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while n < name.len() {
        let step = match pat.get(p) {
            Some('*') => {
                star = Some((p, n));
                p += 1;
                continue;
            }
            Some('?') => Some(p + 1),
            Some('[') => match match_class(pat, p, name[n]) {
                Some((true, next)) => Some(next),
                Some((false, _)) => None,
                None => (name[n] == '[').then_some(p + 1),
            },
            Some(&c) => (c == name[n]).then_some(p + 1),
            None => None,
        };
        if let Some(next) = step {
            p = next;
            n += 1;
        } else if let Some((star_p, star_n)) = star {
            p = star_p + 1;
            n = star_n + 1;
            star = Some((star_p, star_n + 1));
        } else {
            return false;
        }
    }
    pat[p..].iter().all(|&c| c == '*')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(pat: &str, name: &str) -> bool {
        wildcard_match(&pat.chars().collect::<Vec<_>>(), name)
    }

    #[test]
    fn wildcards() {
        assert!(m("*.pem", "fullchain.pem"));
        assert!(!m("*.pem", "fullchain.pem.bak"));
        assert!(m("*", "x"));
        assert!(m("a*b*c", "aXXbYYc"));
        assert!(!m("a*b*c", "aXXbYY"));
        assert!(m("cert?.pem", "cert1.pem"));
        assert!(!m("cert?.pem", "cert12.pem"));
        assert!(m("cert[0-9].pem", "cert7.pem"));
        assert!(!m("cert[!0-9].pem", "cert7.pem"));
        assert!(m("cert[!0-9].pem", "certx.pem"));
        assert!(m("[]x]", "]"));
        assert!(m("a[b", "a[b"));
        assert!(!m("*.pem", ".hidden.pem"));
        assert!(m(".*.pem", ".hidden.pem"));
        assert!(m("", ""));
        assert!(!m("", "a"));
    }

    #[test]
    fn expands_directories_and_files() {
        let dir = tempfile::tempdir().expect("tempdir");
        for (sub, file) in [
            ("a.example", "fullchain.pem"),
            ("a.example", "privkey.pem"),
            ("b.example", "fullchain.pem"),
            ("b.example", "README"),
        ] {
            std::fs::create_dir_all(dir.path().join(sub)).expect("mkdir");
            std::fs::write(dir.path().join(sub).join(file), "x").expect("write");
        }
        std::fs::create_dir_all(dir.path().join("c.pem")).expect("mkdir dir named like a file");
        let literal = dir.path().join("literal-missing.pem");
        let mut warnings = Vec::new();
        let files = expand_certfiles(
            &[
                dir.path().join("*/*.pem"),
                dir.path().join("a.example/fullchain.pem"),
                dir.path().join("nothing/*.pem"),
                dir.path().join("*.pem"),
                literal.clone(),
            ],
            &mut warnings,
        )
        .expect("expand");
        assert_eq!(
            files,
            vec![
                dir.path().join("a.example/fullchain.pem"),
                dir.path().join("a.example/privkey.pem"),
                dir.path().join("b.example/fullchain.pem"),
                literal,
            ]
        );
        assert_eq!(warnings.len(), 2, "{warnings:?}");
        assert!(warnings[0].contains("nothing/*.pem"));
        assert!(warnings[1].contains("matches no file"));
    }
}
