//! A reader for the Erlang terms ejabberd writes as text into its SQL
//! tables (`muc_room.opts`: a list of `{Option, Value}` tuples printed
//! with `~p`), for `rookery ctl import_ejabberd_sql`.
//!
//! Reads atoms (bare and quoted), integers, floats, binaries
//! (`<<"text">>`, `<<"text"/utf8>>`, `<<104,105>>`, `<<>>`), strings (as
//! lists of characters, turned into text), lists, tuples and maps (`#{}`,
//! keys and values kept as pairs). Bad input is an error with the byte
//! offset, never a panic; nesting is bounded.

/// An Erlang term.
#[derive(Clone, Debug, PartialEq)]
pub enum Term {
    Atom(String),
    Int(i64),
    Float(f64),
    /// A binary; ejabberd's binaries are UTF-8 text.
    Bin(Vec<u8>),
    /// A string literal (a list of characters in Erlang).
    Str(String),
    List(Vec<Term>),
    Tuple(Vec<Term>),
    Map(Vec<(Term, Term)>),
}

impl Term {
    /// The text of a binary or string.
    pub fn text(&self) -> Option<String> {
        match self {
            Term::Bin(b) => Some(String::from_utf8_lossy(b).into_owned()),
            Term::Str(s) => Some(s.clone()),
            Term::List(l) if l.is_empty() => Some(String::new()),
            _ => None,
        }
    }

    /// The name of an atom.
    pub fn atom(&self) -> Option<&str> {
        match self {
            Term::Atom(a) => Some(a),
            _ => None,
        }
    }
}

/// Nesting deeper than this is refused.
const MAX_DEPTH: usize = 64;

struct Reader<'a> {
    s: &'a [u8],
    at: usize,
}

type R<T> = Result<T, String>;

impl Reader<'_> {
    fn err<T>(&self, what: &str) -> R<T> {
        Err(format!("{what} at byte {}", self.at))
    }

    fn skip_ws(&mut self) {
        while let Some(c) = self.s.get(self.at) {
            if c.is_ascii_whitespace() {
                self.at += 1;
            } else if *c == b'%' {
                while self.s.get(self.at).is_some_and(|c| *c != b'\n') {
                    self.at += 1;
                }
            } else {
                break;
            }
        }
    }

    fn peek(&mut self) -> Option<u8> {
        self.skip_ws();
        self.s.get(self.at).copied()
    }

    fn eat(&mut self, c: u8) -> R<()> {
        if self.peek() == Some(c) {
            self.at += 1;
            Ok(())
        } else {
            self.err(&format!("expected `{}`", c as char))
        }
    }

    /// Quoted text; in a binary (`bytes`) a numeric escape is one byte,
    /// elsewhere one character.
    fn quoted_raw(&mut self, q: u8, bytes: bool) -> R<Vec<u8>> {
        self.at += 1;
        let mut out = Vec::new();
        loop {
            let Some(&c) = self.s.get(self.at) else {
                return self.err("unterminated quoted text");
            };
            self.at += 1;
            match c {
                c if c == q => break,
                b'\\' => {
                    let Some(&e) = self.s.get(self.at) else {
                        return self.err("unterminated escape");
                    };
                    self.at += 1;
                    match e {
                        b'n' => out.push(b'\n'),
                        b't' => out.push(b'\t'),
                        b'r' => out.push(b'\r'),
                        b's' => out.push(b' '),
                        b'e' => out.push(0x1b),
                        b'0'..=b'7' => {
                            let mut n = u32::from(e - b'0');
                            for _ in 0..2 {
                                match self.s.get(self.at) {
                                    Some(d @ b'0'..=b'7') => {
                                        n = n * 8 + u32::from(d - b'0');
                                        self.at += 1;
                                    }
                                    _ => break,
                                }
                            }
                            push(&mut out, n, bytes);
                        }
                        b'x' => {
                            let (n, len) = hex(&self.s[self.at..]);
                            if len == 0 {
                                return self.err("bad \\x escape");
                            }
                            self.at += len;
                            push(&mut out, n, bytes);
                        }
                        other => out.push(other),
                    }
                }
                c => out.push(c),
            }
        }
        Ok(out)
    }

    fn quoted(&mut self, q: u8) -> R<String> {
        let out = self.quoted_raw(q, false)?;
        String::from_utf8(out).or_else(|_| self.err("quoted text is not UTF-8"))
    }

    fn number(&mut self) -> R<Term> {
        let start = self.at;
        if self.s.get(self.at) == Some(&b'-') {
            self.at += 1;
        }
        while self
            .s
            .get(self.at)
            .is_some_and(|c| c.is_ascii_digit() || matches!(c, b'.' | b'e' | b'E' | b'#' | b'_'))
        {
            self.at += 1;
        }
        let text = std::str::from_utf8(&self.s[start..self.at]).unwrap_or("");
        let text = text.replace('_', "");
        if let Ok(n) = text.parse::<i64>() {
            return Ok(Term::Int(n));
        }
        if let Ok(f) = text.parse::<f64>() {
            return Ok(Term::Float(f));
        }
        self.err(&format!("bad number {text:?}"))
    }

    fn binary(&mut self) -> R<Term> {
        self.at += 2; // <<
        let mut out = Vec::new();
        if self.peek() == Some(b'>') {
            self.eat(b'>')?;
            self.eat(b'>')?;
            return Ok(Term::Bin(out));
        }
        loop {
            match self.peek() {
                Some(b'"') => {
                    let s = self.quoted_raw(b'"', true)?;
                    if self.s[self.at..].starts_with(b"/utf8") {
                        self.at += 5;
                    }
                    out.extend_from_slice(&s);
                }
                Some(c) if c.is_ascii_digit() => match self.number()? {
                    Term::Int(n) if (0..=255).contains(&n) => out.push(n as u8),
                    _ => return self.err("binary element out of range"),
                },
                _ => return self.err("unexpected binary element"),
            }
            match self.peek() {
                Some(b',') => self.at += 1,
                Some(b'>') => {
                    self.eat(b'>')?;
                    self.eat(b'>')?;
                    return Ok(Term::Bin(out));
                }
                _ => return self.err("expected `,` or `>>` in a binary"),
            }
        }
    }

    fn seq(&mut self, close: u8, depth: usize) -> R<Vec<Term>> {
        let mut items = Vec::new();
        if self.peek() == Some(close) {
            self.at += 1;
            return Ok(items);
        }
        loop {
            items.push(self.term(depth + 1)?);
            match self.peek() {
                Some(b',') => self.at += 1,
                Some(b'|') if close == b']' => {
                    // An improper list tail: kept as one more element.
                    self.at += 1;
                    items.push(self.term(depth + 1)?);
                }
                Some(c) if c == close => {
                    self.at += 1;
                    return Ok(items);
                }
                _ => return self.err(&format!("expected `,` or `{}`", close as char)),
            }
        }
    }

    fn term(&mut self, depth: usize) -> R<Term> {
        if depth > MAX_DEPTH {
            return self.err("terms nested too deeply");
        }
        match self.peek() {
            None => self.err("unexpected end"),
            Some(b'[') => {
                self.at += 1;
                Ok(Term::List(self.seq(b']', depth)?))
            }
            Some(b'{') => {
                self.at += 1;
                Ok(Term::Tuple(self.seq(b'}', depth)?))
            }
            Some(b'#') => {
                self.at += 1;
                self.eat(b'{')?;
                let mut pairs = Vec::new();
                if self.peek() == Some(b'}') {
                    self.at += 1;
                    return Ok(Term::Map(pairs));
                }
                loop {
                    let k = self.term(depth + 1)?;
                    self.eat(b'=')?;
                    self.eat(b'>')?;
                    let v = self.term(depth + 1)?;
                    pairs.push((k, v));
                    match self.peek() {
                        Some(b',') => self.at += 1,
                        Some(b'}') => {
                            self.at += 1;
                            return Ok(Term::Map(pairs));
                        }
                        _ => return self.err("expected `,` or `}` in a map"),
                    }
                }
            }
            Some(b'<') if self.s[self.at..].starts_with(b"<<") => self.binary(),
            Some(b'"') => Ok(Term::Str(self.quoted(b'"')?)),
            Some(b'\'') => Ok(Term::Atom(self.quoted(b'\'')?)),
            Some(c) if c.is_ascii_digit() || c == b'-' => self.number(),
            Some(c) if c.is_ascii_lowercase() => {
                let start = self.at;
                while self
                    .s
                    .get(self.at)
                    .is_some_and(|c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'@'))
                {
                    self.at += 1;
                }
                Ok(Term::Atom(
                    String::from_utf8_lossy(&self.s[start..self.at]).into_owned(),
                ))
            }
            Some(_) => self.err("unexpected character"),
        }
    }
}

fn hex(s: &[u8]) -> (u32, usize) {
    if s.first() == Some(&b'{') {
        let end = s.iter().position(|c| *c == b'}').unwrap_or(0);
        let n = std::str::from_utf8(&s[1..end.max(1)])
            .ok()
            .and_then(|h| u32::from_str_radix(h, 16).ok());
        return match n {
            Some(n) if end > 1 => (n, end + 1),
            _ => (0, 0),
        };
    }
    let len = s
        .iter()
        .take(2)
        .take_while(|c| c.is_ascii_hexdigit())
        .count();
    let n = std::str::from_utf8(&s[..len])
        .ok()
        .and_then(|h| u32::from_str_radix(h, 16).ok())
        .unwrap_or(0);
    (n, len)
}

fn push(out: &mut Vec<u8>, n: u32, bytes: bool) {
    if bytes && n < 256 {
        out.push(n as u8);
        return;
    }
    let c = char::from_u32(n).unwrap_or('\u{fffd}');
    let mut buf = [0; 4];
    out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
}

/// Parse one term (a trailing `.` is allowed).
pub fn parse(text: &str) -> Result<Term, String> {
    let mut r = Reader {
        s: text.as_bytes(),
        at: 0,
    };
    let t = r.term(0)?;
    if r.peek() == Some(b'.') {
        r.at += 1;
    }
    if r.peek().is_some() {
        return r.err("text after the term");
    }
    Ok(t)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ejabberd_room_options_parse() {
        let t = parse(
            "[{title,<<\"Lobby\">>},{persistent,true},{max_users,200},\
             {affiliations,[{{<<\"alice\">>,<<\"localhost\">>,<<>>},owner},\
             {{<<\"bob\">>,<<\"localhost\">>,<<>>},{member,<<>>}}]},\
             {subject,<<\"caf\\303\\251\"/utf8>>},{description,<<104,105>>},{'quoted atom',\"str\"},\
             {vcard,<<>>},{map,#{a => 1}},{f,-1.5}].",
        )
        .unwrap();
        let Term::List(items) = t else { panic!() };
        assert_eq!(items.len(), 10);
        assert_eq!(
            items[0],
            Term::Tuple(vec![
                Term::Atom("title".into()),
                Term::Bin(b"Lobby".to_vec())
            ])
        );
        let Term::Tuple(subject) = &items[4] else {
            panic!()
        };
        assert_eq!(subject[1].text().unwrap(), "café");
        let Term::Tuple(d) = &items[5] else { panic!() };
        assert_eq!(d[1].text().unwrap(), "hi");
        let Term::Tuple(q) = &items[6] else { panic!() };
        assert_eq!(q[0].atom(), Some("quoted atom"));
        assert_eq!(q[1].text().unwrap(), "str");
    }

    #[test]
    fn bad_input_is_an_error_not_a_panic() {
        for bad in [
            "", "[", "{a,", "<<\"x\"", "[1,2", "<<300>>", "'open", "[a]]", "#{a}", "\\",
        ] {
            assert!(parse(bad).is_err(), "{bad:?}");
        }
        let deep = "[".repeat(100) + &"]".repeat(100);
        assert!(parse(&deep).is_err());
    }
}
