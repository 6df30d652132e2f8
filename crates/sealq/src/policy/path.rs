//! Field paths inside a payload: the segment stack the scanner keeps, how it
//! is rendered for a finding (`customer.cards[2].number`,
//! `by_user.<key#0>.card`), and the patterns allow-lists match it against.
//!
//! Rendered paths end up in error messages, logs and the append-only audit
//! log, so they must never carry data: map keys are data as often as they are
//! field names (`{"by_user": {"alice@example.com": ...}}`). A key is shown
//! only when its shape is that of a field name ([`shown_key`]); any other key
//! renders as `<key#i>`, its position among its map's entries. Patterns are
//! matched against the real keys, never the rendering.

use std::fmt::Write as _;

use rmpv::ValueRef;

/// Longest map key shown verbatim in a path. A UUID (36) and most tokens are
/// longer; field names are shorter.
pub(super) const MAX_SHOWN_KEY_CHARS: usize = 32;
/// Most ASCII digits a map key shown verbatim may contain: enough for
/// `line2`, `sha256` or `x509`, too few for a phone number, a date, a numeric
/// id or a UUID.
pub(super) const MAX_SHOWN_KEY_DIGITS: usize = 4;
/// Largest integer map key shown verbatim (at most four digits either way).
const MAX_SHOWN_INT_KEY: u64 = 9999;
/// Hex-only keys this long or longer are hidden even with few digits
/// (digests, ids: `deadbeefcafebabe`).
const MIN_HIDDEN_HEX_KEY: usize = 12;

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
    /// The value of a map entry: its key, and the entry's position in the map
    /// (from 0, in serialized order), shown instead of a key that is not.
    Key(KeyRef<'a>, usize),
    /// An array element.
    Index(usize),
}

/// Render a path for a finding: keys joined with `.`, array elements as
/// `[i]`, the root as `$`.
///
/// A key is shown verbatim only if [`shown_key`] accepts it and
/// `is_sensitive` (asked about every such key: does it trip a scanner rule?)
/// does not; integer keys only up to four digits; `null`, `true`, `false` and
/// the kind of other non-string keys (`<float>`, `<binary>` ...) as such.
/// Every other key renders as `<key#i>`, `i` being the entry's position in
/// its map, counting from 0 in the order the payload was serialized: enough
/// for someone holding the payload to find the field, nothing about the key
/// for anyone else. (A hash of the key would not do: e-mail addresses and
/// phone numbers are few enough to be found again from their hash.)
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
            PathSeg::Key(key, pos) => {
                if !out.is_empty() {
                    out.push('.');
                }
                match key {
                    KeyRef::Str(b) if shown_key(b) && !is_sensitive(b) => {
                        // Shown keys are ASCII (checked by `shown_key`).
                        out.extend(b.iter().map(|&c| char::from(c)));
                    }
                    KeyRef::Uint(u) if u <= MAX_SHOWN_INT_KEY => {
                        let _ = write!(out, "{u}");
                    }
                    KeyRef::Int(i) if i.unsigned_abs() <= MAX_SHOWN_INT_KEY => {
                        let _ = write!(out, "{i}");
                    }
                    KeyRef::Other(kind) => out.push_str(kind),
                    KeyRef::Str(_) | KeyRef::Uint(_) | KeyRef::Int(_) => {
                        let _ = write!(out, "<key#{pos}>");
                    }
                }
            }
        }
    }
    out
}

/// Whether a string map key has the shape of a field name, and so may be
/// shown in a path: 1 to [`MAX_SHOWN_KEY_CHARS`] ASCII letters, digits, `_`
/// and `-`; starting with a letter or `_`; at most [`MAX_SHOWN_KEY_DIGITS`]
/// digits; not a long run of hex digits.
///
/// This keeps out e-mail addresses (`@`, `.`), phone numbers (`+`, digits),
/// numeric ids, dates, UUIDs, card numbers, IBANs, IP addresses, URLs, and
/// names with spaces or non-ASCII letters. It cannot tell a field name from a
/// bare user name (`alice`, `bob_smith`): maps keyed by user names should be
/// keyed by user ids instead, as the payload guidance says anyway.
pub(super) fn shown_key(key: &[u8]) -> bool {
    let Some(&first) = key.first() else {
        return false;
    };
    key.len() <= MAX_SHOWN_KEY_CHARS
        && (first.is_ascii_alphabetic() || first == b'_')
        && key
            .iter()
            .all(|&b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        && key.iter().filter(|b| b.is_ascii_digit()).count() <= MAX_SHOWN_KEY_DIGITS
        && !(key.len() >= MIN_HIDDEN_HEX_KEY && key.iter().all(u8::is_ascii_hexdigit))
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
                key if key.starts_with("<key#") => {
                    return Err(format!(
                        "`{key}` is how a finding shows a map key it does not print; \
                         it is not the key: match it with `*`"
                    ));
                }
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
                (PatSeg::AnyKey, PathSeg::Key(..)) => true,
                (PatSeg::Key(name), PathSeg::Key(key, _)) => key.matches_name(name),
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
        PathSeg::Key(KeyRef::Str(s.as_bytes()), 0)
    }

    fn key_at(s: &str, pos: usize) -> PathSeg<'_> {
        PathSeg::Key(KeyRef::Str(s.as_bytes()), pos)
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
    fn renders_odd_keys_as_positions() {
        let path = [
            PathSeg::Key(KeyRef::Uint(7), 0),
            PathSeg::Key(KeyRef::Int(-1), 1),
            PathSeg::Key(KeyRef::Other("null"), 2),
            key_at("a.b", 3),
            PathSeg::Key(KeyRef::Str(&[0xff, 0xfe]), 4),
            key_at("", 5),
            PathSeg::Key(KeyRef::Uint(4_242_424_242_424_242), 6),
            PathSeg::Key(KeyRef::Int(-10_000), 7),
        ];
        assert_eq!(
            render(&path, never),
            "7.-1.null.<key#3>.<key#4>.<key#5>.<key#6>.<key#7>"
        );
        let long = "k".repeat(MAX_SHOWN_KEY_CHARS + 1);
        assert_eq!(render(&[key_at(&long, 9)], never), "<key#9>");
        let longest = "k".repeat(MAX_SHOWN_KEY_CHARS);
        assert_eq!(render(&[key(&longest)], never), longest);
    }

    #[test]
    fn sensitive_keys_are_never_shown() {
        let path = [
            key("by_card"),
            key_at("AKIAABCDEFGHIJKLMNOP", 2),
            key("limit"),
        ];
        let rendered = render(&path, |b| b == b"AKIAABCDEFGHIJKLMNOP");
        assert_eq!(rendered, "by_card.<key#2>.limit");
    }

    #[test]
    fn field_names_are_shown() {
        for k in [
            "customer",
            "card_number",
            "cardNumber",
            "Card-Number",
            "_meta",
            "line2",
            "sha256",
            "x509_chain",
            "utf8",
            "by_year_2024",
            "X-Request-Id",
            "deadbeef",
        ] {
            assert!(shown_key(k.as_bytes()), "{k}");
        }
    }

    #[test]
    fn data_shaped_keys_are_not_shown() {
        for k in [
            "alice@example.com",
            "+44 20 7946 0958",
            "+4915123456784",
            "07946095812",
            "4242424242424242",
            "4242 4242 4242 4242",
            "2024-10-05",
            "d2024-10-05",
            "550e8400-e29b-41d4-a716-446655440000",
            "550e8400e29b41d4a716446655440000",
            "deadbeefcafebabe",
            "DE89370400440532013000",
            "192.168.0.1",
            "https://example.com/u/1",
            "Ann Example",
            "Jürgen",
            "user 12345",
            "12345",
            "1st",
            "-x",
            "",
            "a\nb",
            "<key#1>",
        ] {
            assert!(!shown_key(k.as_bytes()), "{k}");
        }
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
        for bad in [
            "a..b",
            ".a",
            "a.",
            "a[",
            "a[x]",
            "a[1]b",
            "a]",
            "a[-1]",
            "a.<key#0>",
        ] {
            assert!(PathPattern::parse(bad).is_err(), "{bad} should not parse");
        }
    }

    #[test]
    fn matches_exactly_and_with_wildcards() {
        let path = [
            key("invoice"),
            key_at("lines", 4),
            PathSeg::Index(3),
            key("ref"),
        ];
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
    fn patterns_match_real_keys_not_their_rendering() {
        let path = [key("by_user"), key_at("alice@example.com", 3), key("card")];
        assert_eq!(render(&path, never), "by_user.<key#3>.card");
        assert!(PathPattern::parse("by_user.*.card").unwrap().matches(&path));
        // The real key matches as before, though it is never shown.
        let exact = PathPattern {
            segs: vec![
                PatSeg::Key("by_user".into()),
                PatSeg::Key("alice@example.com".into()),
                PatSeg::Key("card".into()),
            ],
        };
        assert!(exact.matches(&path));
        let err = PathPattern::parse("by_user.<key#3>.card").unwrap_err();
        assert!(err.contains("`*`"), "{err}");
    }

    #[test]
    fn integer_keys_match_their_decimal_form() {
        let path = [key("by_id"), PathSeg::Key(KeyRef::Uint(42), 0)];
        assert!(PathPattern::parse("by_id.42").unwrap().matches(&path));
        assert!(!PathPattern::parse("by_id.43").unwrap().matches(&path));
        assert!(!PathPattern::parse("by_id[42]").unwrap().matches(&path));
    }
}
