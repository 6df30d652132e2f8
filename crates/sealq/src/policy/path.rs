//! Field paths inside a payload: the segment stack the scanner keeps, how it
//! is rendered for a finding (`customer.cards[2].number`), and the patterns
//! allow-lists match it against.

use std::fmt::Write as _;

use rmpv::ValueRef;

/// Keys longer than this are shortened when a path is rendered.
const MAX_RENDERED_KEY_CHARS: usize = 64;

/// A map key, as much of it as paths need.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) enum KeyRef<'a> {
    /// A string key (raw bytes: MessagePack strings may hold invalid UTF-8).
    Str(&'a [u8]),
    /// An unsigned integer key.
    Uint(u64),
    /// A negative integer key.
    Int(i64),
    /// Any other key, by the name of its kind (`null`, `true`, `<binary>` ...).
    Other(&'static str),
}

impl<'a> KeyRef<'a> {
    /// The path view of a decoded map key.
    pub(super) fn of(key: &'a ValueRef<'_>) -> Self {
        match key {
            ValueRef::String(s) => KeyRef::Str(s.as_bytes()),
            ValueRef::Integer(i) => match (i.as_u64(), i.as_i64()) {
                (Some(u), _) => KeyRef::Uint(u),
                (None, Some(n)) => KeyRef::Int(n),
                (None, None) => KeyRef::Other("<integer>"),
            },
            ValueRef::Nil => KeyRef::Other("null"),
            ValueRef::Boolean(true) => KeyRef::Other("true"),
            ValueRef::Boolean(false) => KeyRef::Other("false"),
            ValueRef::F32(_) | ValueRef::F64(_) => KeyRef::Other("<float>"),
            ValueRef::Binary(_) => KeyRef::Other("<binary>"),
            ValueRef::Array(_) => KeyRef::Other("<array>"),
            ValueRef::Map(_) => KeyRef::Other("<map>"),
            ValueRef::Ext(..) => KeyRef::Other("<ext>"),
        }
    }

    /// Whether this key equals the pattern text `name`.
    fn matches_name(self, name: &str) -> bool {
        match self {
            KeyRef::Str(b) => b == name.as_bytes(),
            KeyRef::Uint(u) => name.parse::<u64>().is_ok_and(|n| n == u),
            KeyRef::Int(i) => name.parse::<i64>().is_ok_and(|n| n == i),
            KeyRef::Other(kind) => kind == name,
        }
    }
}

/// One step from the payload root to a value.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) enum PathSeg<'a> {
    /// The value of a map entry.
    Key(KeyRef<'a>),
    /// An array element.
    Index(usize),
}

/// Render a path for a finding: keys joined with `.`, array elements as
/// `[i]`, the root as `$`.
///
/// Keys that are not plain text (contain `.`, `[`, `]`, control characters,
/// or are empty) are quoted as `["..."]`; keys that are not UTF-8 render as
/// `<binary>`; very long keys are shortened. `is_sensitive` is asked about
/// every string key: a key that itself looks like a secret (a card number used
/// as a map key, say) renders as `<redacted>`, so a path never carries one.
pub(super) fn render(segs: &[PathSeg<'_>], is_sensitive: impl Fn(&[u8]) -> bool) -> String {
    if segs.is_empty() {
        return "$".to_owned();
    }
    let mut out = String::with_capacity(segs.len() * 8);
    for seg in segs {
        match *seg {
            PathSeg::Index(i) => {
                let _ = write!(out, "[{i}]");
            }
            PathSeg::Key(key) => {
                match key {
                    KeyRef::Str(b) if is_sensitive(b) => push_plain(&mut out, "<redacted>"),
                    KeyRef::Str(b) => match std::str::from_utf8(b) {
                        Ok(s) if is_plain(s) => push_plain(&mut out, s),
                        Ok(s) => push_quoted(&mut out, s),
                        Err(_) => push_plain(&mut out, "<binary>"),
                    },
                    KeyRef::Uint(u) => {
                        if !out.is_empty() {
                            out.push('.');
                        }
                        let _ = write!(out, "{u}");
                    }
                    KeyRef::Int(i) => {
                        if !out.is_empty() {
                            out.push('.');
                        }
                        let _ = write!(out, "{i}");
                    }
                    KeyRef::Other(kind) => push_plain(&mut out, kind),
                };
            }
        }
    }
    out
}

fn is_plain(s: &str) -> bool {
    !s.is_empty()
        && s.chars().count() <= MAX_RENDERED_KEY_CHARS
        && !s
            .chars()
            .any(|c| matches!(c, '.' | '[' | ']' | '"' | '\\') || c.is_control())
}

fn push_plain(out: &mut String, s: &str) {
    if !out.is_empty() {
        out.push('.');
    }
    out.push_str(s);
}

fn push_quoted(out: &mut String, s: &str) {
    out.push_str("[\"");
    for c in s.chars().take(MAX_RENDERED_KEY_CHARS) {
        let _ = write!(out, "{}", c.escape_debug());
    }
    if s.chars().nth(MAX_RENDERED_KEY_CHARS).is_some() {
        out.push('…');
    }
    out.push_str("\"]");
}

/// One segment of a [`PathPattern`].
#[derive(Debug, Clone, PartialEq, Eq)]
enum PatSeg {
    /// A map key with exactly this text (integer keys match their decimal form).
    Key(String),
    /// `*`: any map key.
    AnyKey,
    /// `[i]`: array element `i`.
    Index(usize),
    /// `[*]`: any array element.
    AnyIndex,
}

/// A field path an allow-list entry applies to, such as
/// `customer.cards[*].number` or `items.*.token`.
///
/// Syntax: map keys joined with `.`; `[i]` an array element, `[*]` any array
/// element; a key of `*` any map key; `$` (or the empty string) the payload
/// root. A pattern matches a path with exactly as many segments: it never
/// reaches into children of the field it names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct PathPattern {
    segs: Vec<PatSeg>,
}

impl PathPattern {
    /// Parse a pattern; the error says what is wrong with it.
    pub(super) fn parse(pattern: &str) -> Result<Self, String> {
        let pattern = pattern.trim();
        if pattern.is_empty() || pattern == "$" {
            return Ok(PathPattern { segs: Vec::new() });
        }
        let mut segs = Vec::new();
        for part in pattern.split('.') {
            let (name, mut rest) = match part.find('[') {
                Some(i) => part.split_at(i),
                None => (part, ""),
            };
            if name.contains(']') {
                return Err(format!("unexpected `]` in `{part}`"));
            }
            match name {
                "" if rest.is_empty() => {
                    return Err(format!("empty segment in `{pattern}`"));
                }
                "" => {}
                "*" => segs.push(PatSeg::AnyKey),
                key => segs.push(PatSeg::Key(key.to_owned())),
            }
            while !rest.is_empty() {
                let inner_end = rest
                    .find(']')
                    .ok_or_else(|| format!("unclosed `[` in `{part}`"))?;
                let inner = rest.get(1..inner_end).unwrap_or_default();
                if inner == "*" {
                    segs.push(PatSeg::AnyIndex);
                } else {
                    let index = inner.parse::<usize>().map_err(|_| {
                        format!("`[{inner}]` in `{part}` is not an array index or `[*]`")
                    })?;
                    segs.push(PatSeg::Index(index));
                }
                rest = rest.get(inner_end + 1..).unwrap_or_default();
                if !rest.is_empty() && !rest.starts_with('[') {
                    return Err(format!("unexpected `{rest}` after `]` in `{part}`"));
                }
            }
        }
        Ok(PathPattern { segs })
    }

    /// Whether the pattern matches the path `segs`.
    pub(super) fn matches(&self, segs: &[PathSeg<'_>]) -> bool {
        self.segs.len() == segs.len()
            && self.segs.iter().zip(segs).all(|(p, s)| match (p, s) {
                (PatSeg::AnyKey, PathSeg::Key(_)) => true,
                (PatSeg::Key(name), PathSeg::Key(key)) => key.matches_name(name),
                (PatSeg::AnyIndex, PathSeg::Index(_)) => true,
                (PatSeg::Index(i), PathSeg::Index(j)) => i == j,
                _ => false,
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(s: &str) -> PathSeg<'_> {
        PathSeg::Key(KeyRef::Str(s.as_bytes()))
    }

    fn never(_: &[u8]) -> bool {
        false
    }

    #[test]
    fn renders_keys_and_indexes() {
        let path = [
            key("customer"),
            key("cards"),
            PathSeg::Index(2),
            key("number"),
        ];
        assert_eq!(render(&path, never), "customer.cards[2].number");
        assert_eq!(render(&[], never), "$");
        assert_eq!(
            render(&[PathSeg::Index(0), key("x")], never),
            "[0].x",
            "root arrays start with the index"
        );
    }

    #[test]
    fn renders_odd_keys_sensibly() {
        let path = [
            PathSeg::Key(KeyRef::Uint(7)),
            PathSeg::Key(KeyRef::Int(-1)),
            PathSeg::Key(KeyRef::Other("null")),
            key("a.b"),
            PathSeg::Key(KeyRef::Str(&[0xff, 0xfe])),
            key(""),
        ];
        assert_eq!(render(&path, never), "7.-1.null[\"a.b\"].<binary>[\"\"]");
        let long = "k".repeat(100);
        let rendered = render(&[key(&long)], never);
        assert!(rendered.len() < 80, "{rendered}");
        assert!(rendered.ends_with("…\"]"));
    }

    #[test]
    fn sensitive_keys_are_redacted() {
        let path = [key("by_card"), key("4242424242424242"), key("limit")];
        let rendered = render(&path, |b| b == b"4242424242424242");
        assert_eq!(rendered, "by_card.<redacted>.limit");
    }

    #[test]
    fn parses_patterns() {
        let p = PathPattern::parse("customer.cards[*].number").unwrap();
        assert_eq!(
            p.segs,
            vec![
                PatSeg::Key("customer".into()),
                PatSeg::Key("cards".into()),
                PatSeg::AnyIndex,
                PatSeg::Key("number".into()),
            ]
        );
        let p = PathPattern::parse("[0][*].*").unwrap();
        assert_eq!(
            p.segs,
            vec![PatSeg::Index(0), PatSeg::AnyIndex, PatSeg::AnyKey]
        );
        assert_eq!(PathPattern::parse("$").unwrap().segs, vec![]);
        for bad in ["a..b", ".a", "a.", "a[", "a[x]", "a[1]b", "a]", "a[-1]"] {
            assert!(PathPattern::parse(bad).is_err(), "{bad} should not parse");
        }
    }

    #[test]
    fn matches_exactly_and_with_wildcards() {
        let path = [key("invoice"), key("lines"), PathSeg::Index(3), key("ref")];
        let yes = [
            "invoice.lines[3].ref",
            "invoice.lines[*].ref",
            "*.lines[*].*",
            "invoice.*[3].ref",
        ];
        for p in yes {
            assert!(PathPattern::parse(p).unwrap().matches(&path), "{p}");
        }
        let no = [
            "invoice.lines[2].ref",
            "invoice.lines",
            "invoice.lines[*]",
            "invoice.lines[*].ref.x",
            "invoice.*.*.ref",
            "Invoice.lines[3].ref",
            "$",
        ];
        for p in no {
            assert!(!PathPattern::parse(p).unwrap().matches(&path), "{p}");
        }
        assert!(PathPattern::parse("$").unwrap().matches(&[]));
    }

    #[test]
    fn integer_keys_match_their_decimal_form() {
        let path = [key("by_id"), PathSeg::Key(KeyRef::Uint(42))];
        assert!(PathPattern::parse("by_id.42").unwrap().matches(&path));
        assert!(!PathPattern::parse("by_id.43").unwrap().matches(&path));
        assert!(!PathPattern::parse("by_id[42]").unwrap().matches(&path));
    }
}
