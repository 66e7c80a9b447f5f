//! Quoted strings of the scenario language: bytes with placeholders that
//! are filled in when a step runs.
//!
//! A string is written between double or single quotes. Escapes: `\"`,
//! `\'`, `\\`, `\0` (a zero byte), `\xNN` (any byte, so ill-formed UTF-8
//! can be written) and `\u{XXXX}` (a Unicode scalar value). Placeholders:
//!
//! | placeholder | becomes |
//! | --- | --- |
//! | `{p}` | the run's prefix: letters and digits only, unique per scenario run over TCP |
//! | `{p:N}` | the prefix padded with letters and digits to exactly `N` bytes |
//! | `{unix}`, `{unix+N}`, `{unix-N}` | the wall clock in Unix seconds, plus or minus `N` (fractions allowed) |
//!
//! Any other `{` is an ordinary character, so JSON payloads need no
//! escaping beyond their quotes.

use std::fmt;

/// Letters used to pad `{p:N}`: a fixed, readable sequence.
const PAD: &[u8] = b"0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ";

/// What placeholders stand for in one run.
#[derive(Debug, Clone, PartialEq)]
pub struct Env {
    /// The prefix that `{p}` stands for: letters and digits only.
    pub prefix: String,
    /// The wall clock, in Unix seconds.
    pub unix_now: f64,
}

/// One piece of a [`Text`].
#[derive(Debug, Clone, PartialEq)]
enum Part {
    Bytes(Vec<u8>),
    Prefix,
    PrefixPadded(usize),
    Unix(f64),
}

/// A string of the scenario language: literal bytes and placeholders.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Text {
    parts: Vec<Part>,
}

impl Text {
    /// A text holding exactly `bytes`, without placeholders.
    pub fn literal(bytes: impl Into<Vec<u8>>) -> Self {
        Self { parts: vec![Part::Bytes(bytes.into())] }
    }

    /// Parses the inside of a quoted string (quotes removed); `quote` is
    /// the quote character, which may appear escaped.
    pub(crate) fn parse(inner: &str) -> Result<Self, String> {
        let mut parts = Vec::new();
        let mut bytes = Vec::new();
        let mut chars = inner.char_indices().peekable();
        while let Some((at, c)) = chars.next() {
            match c {
                '\\' => {
                    let Some((_, e)) = chars.next() else { return Err("string ends with a lone backslash".into()) };
                    match e {
                        '"' | '\'' | '\\' | '{' => push_char(&mut bytes, e),
                        '0' => bytes.push(0),
                        'n' => bytes.push(b'\n'),
                        'x' => {
                            let hex: String = (0..2).filter_map(|_| chars.next().map(|(_, h)| h)).collect();
                            let byte = u8::from_str_radix(&hex, 16).map_err(|_| format!("bad escape \\x{hex}"))?;
                            bytes.push(byte);
                        }
                        'u' => {
                            let rest = &inner[at + 2..];
                            let Some(body) = rest.strip_prefix('{').and_then(|r| r.split_once('}')).map(|(b, _)| b)
                            else {
                                return Err("\\u must be written \\u{XXXX}".into());
                            };
                            let code =
                                u32::from_str_radix(body, 16).map_err(|_| format!("bad escape \\u{{{body}}}"))?;
                            let ch = char::from_u32(code)
                                .ok_or_else(|| format!("\\u{{{body}}} is not a scalar value; use \\x escapes"))?;
                            push_char(&mut bytes, ch);
                            for _ in 0..body.len() + 2 {
                                chars.next();
                            }
                        }
                        other => return Err(format!("unknown escape \\{other}")),
                    }
                }
                '{' => match placeholder(&inner[at..]) {
                    Some((part, len)) => {
                        if !bytes.is_empty() {
                            parts.push(Part::Bytes(std::mem::take(&mut bytes)));
                        }
                        parts.push(part);
                        for _ in 1..len {
                            chars.next();
                        }
                    }
                    None => bytes.push(b'{'),
                },
                c => push_char(&mut bytes, c),
            }
        }
        if !bytes.is_empty() || parts.is_empty() {
            parts.push(Part::Bytes(bytes));
        }
        Ok(Self { parts })
    }

    /// The bytes this text stands for in `env`.
    pub fn render(&self, env: &Env) -> Vec<u8> {
        let mut out = Vec::new();
        for part in &self.parts {
            match part {
                Part::Bytes(b) => out.extend_from_slice(b),
                Part::Prefix => out.extend_from_slice(env.prefix.as_bytes()),
                Part::PrefixPadded(n) => {
                    let mut id = env.prefix.as_bytes().to_vec();
                    id.truncate(*n);
                    let mut i = 0;
                    while id.len() < *n {
                        id.push(PAD[i % PAD.len()]);
                        i += 1;
                    }
                    out.extend_from_slice(&id);
                }
                Part::Unix(offset) => out.extend_from_slice(format_seconds(env.unix_now + offset).as_bytes()),
            }
        }
        out
    }

    /// Whether the text uses the wall clock (`{unix…}`).
    pub fn uses_clock(&self) -> bool {
        self.parts.iter().any(|p| matches!(p, Part::Unix(_)))
    }
}

impl fmt::Display for Text {
    /// The text as it would be written in a scenario, in double quotes.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("\"")?;
        for part in &self.parts {
            match part {
                Part::Bytes(b) => {
                    for chunk in b.utf8_chunks() {
                        for c in chunk.valid().chars() {
                            match c {
                                '"' => f.write_str("\\\"")?,
                                '\\' => f.write_str("\\\\")?,
                                '\0' => f.write_str("\\0")?,
                                c if c.is_control() => write!(f, "\\u{{{:x}}}", u32::from(c))?,
                                c => write!(f, "{c}")?,
                            }
                        }
                        for byte in chunk.invalid() {
                            write!(f, "\\x{byte:02x}")?;
                        }
                    }
                }
                Part::Prefix => f.write_str("{p}")?,
                Part::PrefixPadded(n) => write!(f, "{{p:{n}}}")?,
                Part::Unix(o) if *o == 0.0 => f.write_str("{unix}")?,
                Part::Unix(o) if *o > 0.0 => write!(f, "{{unix+{o}}}")?,
                Part::Unix(o) => write!(f, "{{unix{o}}}")?,
            }
        }
        f.write_str("\"")
    }
}

fn push_char(bytes: &mut Vec<u8>, c: char) {
    let mut buf = [0; 4];
    bytes.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
}

/// The placeholder at the start of `s` (which starts with `{`) and its
/// length in bytes, or `None` if `s` does not start with one.
fn placeholder(s: &str) -> Option<(Part, usize)> {
    let end = s.find('}')?;
    let body = &s[1..end];
    let part = match body {
        "p" => Part::Prefix,
        "unix" => Part::Unix(0.0),
        _ => {
            if let Some(n) = body.strip_prefix("p:") {
                Part::PrefixPadded(n.parse().ok()?)
            } else if let Some(offset) = body.strip_prefix("unix") {
                let value: f64 = offset.strip_prefix('+').unwrap_or(offset).parse().ok()?;
                if !offset.starts_with(['+', '-']) || !value.is_finite() {
                    return None;
                }
                Part::Unix(value)
            } else {
                return None;
            }
        }
    };
    Some((part, end + 1))
}

/// Seconds with at most three decimals and no trailing zeros.
fn format_seconds(secs: f64) -> String {
    let s = format!("{secs:.3}");
    s.trim_end_matches('0').trim_end_matches('.').to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env() -> Env {
        Env { prefix: "cx".into(), unix_now: 1000.0 }
    }

    fn render(s: &str) -> Vec<u8> {
        Text::parse(s).map(|t| t.render(&env())).unwrap_or_default()
    }

    #[test]
    fn placeholders_are_filled() {
        assert_eq!(render("{p}/a"), b"cx/a");
        assert_eq!(render("{p:6}"), b"cx0123");
        assert_eq!(render(r#"{"expired_at": {unix-1.5}}"#), br#"{"expired_at": 998.5}"#);
        assert_eq!(render("{unix+2}"), b"1002");
    }

    #[test]
    fn escapes_give_raw_bytes() {
        assert_eq!(render(r"a\xed\xa0\x80\0"), b"a\xed\xa0\x80\0");
        assert_eq!(render(r"\u{feff}x"), "\u{feff}x".as_bytes());
        assert_eq!(render(r#"say \"hi\" \{p}"#), br#"say "hi" {p}"#);
    }

    #[test]
    fn unknown_braces_are_literal() {
        assert_eq!(render("{q} {p"), b"{q} {p");
    }

    #[test]
    fn display_round_trips() {
        for s in [r"a\xed\x80", "{p}/x", r#"\"q\""#, "{unix-2}", "{p:23}"] {
            let text = Text::parse(s).unwrap_or_default();
            let shown = text.to_string();
            let again = Text::parse(&shown[1..shown.len() - 1]).unwrap_or_default();
            assert_eq!(text, again, "{s} shown as {shown}");
        }
    }
}
