//! Card numbers written in text: digit runs, the separators people (and
//! people evading a filter) put between digit groups, and which parts of a
//! run may form a card number.
//!
//! A *run* is digits joined by separators:
//!
//! - **visible separators** split a run into groups: a space (also NBSP
//!   U+00A0, figure space U+2007, thin space U+2009, narrow NBSP U+202F, all
//!   one kind), `-`, `.` or `/`; one between two digits;
//! - **invisible characters** (zero-width space U+200B, non-joiner U+200C,
//!   joiner U+200D, word joiner U+2060, BOM U+FEFF, soft hyphen U+00AD) are
//!   not shown, so a reader sees the digits around them as adjacent: they are
//!   skipped wherever they appear between digits.
//!
//! Whether a run holds a card is then [`super::card::card`]'s Luhn + issuer
//! prefix + length check over the digits of a window of whole groups.

use super::card::{CardHit, MAX_PAN_DIGITS, MIN_PAN_DIGITS, card};

/// A separator between digit groups.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Sep {
    /// A space or a no-break/figure/thin space.
    Space,
    /// `-`.
    Dash,
    /// `.`: also the decimal point and the version separator, so a `.` is
    /// only accepted between groups of a printed card (`4242.4242.4242.4242`).
    Dot,
    /// `/`: also the date separator; treated like [`Sep::Dot`].
    Slash,
}

impl Sep {
    /// Whether an ungrouped digit string may sit beside this separator and
    /// still be read as a card (`4242424242424242-12-29` is a card and its
    /// expiry; `4242424242424242.5` is a decimal, `1/4242424242424242` a
    /// fraction).
    fn loose(self) -> bool {
        matches!(self, Sep::Space | Sep::Dash)
    }
}

/// One character of text, as the run grammar sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Tok {
    Digit(u8),
    Sep(Sep),
    Invisible,
    Other,
}

/// The character at `s[k..]` and its length in bytes (1 for anything the
/// grammar does not know, so invalid UTF-8 is just `Other`).
fn tok(s: &[u8], k: usize) -> (Tok, usize) {
    match s.get(k..).unwrap_or_default() {
        [d @ b'0'..=b'9', ..] => (Tok::Digit(d - b'0'), 1),
        [b' ', ..] => (Tok::Sep(Sep::Space), 1),
        [b'-', ..] => (Tok::Sep(Sep::Dash), 1),
        [b'.', ..] => (Tok::Sep(Sep::Dot), 1),
        [b'/', ..] => (Tok::Sep(Sep::Slash), 1),
        // U+00A0 no-break space, U+00AD soft hyphen
        [0xC2, 0xA0, ..] => (Tok::Sep(Sep::Space), 2),
        [0xC2, 0xAD, ..] => (Tok::Invisible, 2),
        // U+2007 figure space, U+2009 thin space, U+202F narrow no-break space
        [0xE2, 0x80, 0x87 | 0x89 | 0xAF, ..] => (Tok::Sep(Sep::Space), 3),
        // U+200B zero-width space, U+200C ZWNJ, U+200D ZWJ
        [0xE2, 0x80, 0x8B..=0x8D, ..] => (Tok::Invisible, 3),
        // U+2060 word joiner
        [0xE2, 0x81, 0xA0, ..] => (Tok::Invisible, 3),
        // U+FEFF zero-width no-break space (BOM)
        [0xEF, 0xBB, 0xBF, ..] => (Tok::Invisible, 3),
        _ => (Tok::Other, 1),
    }
}

/// Bytes that can occur inside a run: digits, the ASCII separators and every
/// byte of the multi-byte separators and invisible characters above. The
/// skip-ahead in [`find_in_str`] relies on this being complete.
const RUN_BYTE: [bool; 256] = {
    let mut t = [false; 256];
    let mut d = b'0';
    while d <= b'9' {
        t[d as usize] = true;
        d += 1;
    }
    let extra: &[u8] = &[
        b' ', b'-', b'.', b'/', 0xC2, 0xA0, 0xAD, 0xE2, 0x80, 0x81, 0x87, 0x89, 0xAF, 0x8B, 0x8C,
        0x8D, 0xEF, 0xBB, 0xBF,
    ];
    let mut i = 0;
    while i < extra.len() {
        t[extra[i] as usize] = true;
        i += 1;
    }
    t
};

/// Position after the invisible characters at `k`.
fn skip_invisible(s: &[u8], mut k: usize) -> usize {
    loop {
        match tok(s, k) {
            (Tok::Invisible, n) => k += n,
            _ => return k,
        }
    }
}

/// What joins the digit before `k` to the next digit, if one follows: the
/// visible separator (or `None` when only invisible characters, or nothing,
/// stand between them) and the position of that digit.
fn joint(s: &[u8], k: usize) -> Option<(Option<Sep>, usize)> {
    let mut j = skip_invisible(s, k);
    let mut sep = None;
    if let (Tok::Sep(kind), n) = tok(s, j) {
        sep = Some(kind);
        j = skip_invisible(s, j + n);
    }
    match tok(s, j) {
        (Tok::Digit(_), _) => Some((sep, j)),
        _ => None,
    }
}

/// The first card number in a string's bytes.
///
/// A candidate is a run (see the [module documentation](self)) of 13-19
/// digits that is not glued to a letter or digit (so hex ids, UUIDs and
/// base64 stay quiet), does not follow a `+` (phone numbers) and is not the
/// fraction of a decimal number. Grouped candidates must look like printed
/// cards: a first group of four digits, later groups of 2-6, one kind of
/// separator. Any window of whole groups of a run is tried, so a card number
/// followed by its expiry or CVV in the same string is still found; windows
/// do not start after a `.` or `/`.
pub(super) fn find_in_str(s: &[u8]) -> Option<CardHit> {
    if s.len() < MIN_PAN_DIGITS {
        return None;
    }
    let mut i = 0;
    while i + MIN_PAN_DIGITS <= s.len() {
        // A run with enough digits spans at least MIN_PAN_DIGITS bytes of
        // run bytes from its first digit, so if the byte that far ahead is
        // not one, no candidate starts in between: skip them. (Most strings
        // are checked about a byte in ten.)
        let probe = i + MIN_PAN_DIGITS - 1;
        if !RUN_BYTE[usize::from(s[probe])] {
            i = probe + 1;
            continue;
        }
        // Likewise for the last byte before the probe that is not a run
        // byte: no candidate starts at or before it. In most text the byte
        // just before the probe is already such a byte.
        if let Some(q) = (i..probe).rev().find(|&q| !RUN_BYTE[usize::from(s[q])]) {
            i = q + 1;
            continue;
        }
        let (end, hit) = next_run(s, i)?;
        if hit.is_some() {
            return hit;
        }
        i = end;
    }
    None
}

/// The first run at or after `i`: where it ends, and the card number in it if
/// it is a candidate. `None` when no digit follows `i`.
pub(super) fn next_run(s: &[u8], i: usize) -> Option<(usize, Option<CardHit>)> {
    let start = s.get(i..)?.iter().position(u8::is_ascii_digit)? + i;
    let mut end = start;
    let mut digits = 0usize;
    loop {
        while s.get(end).is_some_and(u8::is_ascii_digit) {
            end += 1;
            digits += 1;
        }
        match joint(s, end) {
            Some((_, next)) => end = next,
            None => break,
        }
    }
    let hit = if digits >= MIN_PAN_DIGITS && standalone(s, start, end) {
        find_in_run(&s[start..end])
    } else {
        None
    };
    Some((end, hit))
}

/// Whether the run `s[start..end]` stands on its own.
fn standalone(s: &[u8], start: usize, end: usize) -> bool {
    let before = start.checked_sub(1).and_then(|p| s.get(p)).copied();
    let after = s.get(end).copied();
    let glued = |b: Option<u8>| b.is_some_and(|b| b.is_ascii_alphanumeric());
    !(glued(before) || glued(after) || before == Some(b'+'))
}

/// The first card number made of whole groups of `run` (which starts and
/// ends with a digit).
fn find_in_run(run: &[u8]) -> Option<CardHit> {
    let mut g = 0;
    loop {
        if let Some(hit) = find_from_group(run, g) {
            return Some(hit);
        }
        // Next window: the next group that follows a space or a dash.
        g = next_group(run, g)?;
    }
}

/// Start of the first group after `k` that follows a loose separator
/// (groups after `.` or `/` are the fraction of a decimal, a version or a
/// date, never the start of a card).
fn next_group(run: &[u8], mut k: usize) -> Option<usize> {
    loop {
        while let (Tok::Digit(_) | Tok::Invisible, n) = tok(run, k) {
            k += n;
        }
        let (sep, next) = joint(run, k)?;
        k = next;
        if sep.is_some_and(Sep::loose) {
            return Some(k);
        }
    }
}

/// A card number made of the groups of `run` from `k` (which starts a group).
fn find_from_group(run: &[u8], mut k: usize) -> Option<CardHit> {
    let mut buf = [0u8; MAX_PAN_DIGITS];
    let mut n = 0;
    let mut sep = None;
    let mut groups = 0;
    loop {
        let mut group_len = 0;
        loop {
            match tok(run, k) {
                (Tok::Digit(d), len) => {
                    *buf.get_mut(n)? = d;
                    n += 1;
                    group_len += 1;
                    k += len;
                }
                (Tok::Invisible, len) => k += len,
                _ => break,
            }
        }
        groups += 1;
        if groups > 1 && !(2..=6).contains(&group_len) {
            return None;
        }
        let next = joint(run, k);
        if n >= MIN_PAN_DIGITS
            && let Some(hit) = card(&buf[..n])
        {
            // An ungrouped number directly before a `.` or `/` and more
            // digits is a decimal or a fraction, not a card.
            let fraction = groups == 1 && next.is_some_and(|(s, _)| s.is_some_and(|s| !s.loose()));
            return if fraction { None } else { Some(hit) };
        }
        // More groups only form a card if this one was a 4-digit first group.
        if groups == 1 && group_len != 4 {
            return None;
        }
        let (this_sep, next_k) = next?;
        let this_sep = this_sep?;
        if *sep.get_or_insert(this_sep) != this_sep {
            return None;
        }
        k = next_k;
    }
}

#[cfg(test)]
mod tests {
    use super::super::card::Network;
    use super::*;
    use proptest::prelude::*;

    /// The scan without the skip-ahead: every run, in order.
    fn find_in_str_reference(s: &[u8]) -> Option<CardHit> {
        let mut i = 0;
        while i < s.len() {
            let (end, hit) = next_run(s, i)?;
            if hit.is_some() {
                return hit;
            }
            i = end;
        }
        None
    }

    proptest! {
        /// Skipping ahead finds exactly what looking at every run finds:
        /// strings of digits, separators, invisible characters and glue,
        /// with real card numbers (plain and grouped) dropped in at random
        /// places.
        #[test]
        fn skip_ahead_finds_what_every_run_finds(
            parts in prop::collection::vec(prop_oneof![
                "[0-9 +.a/-]{0,24}",
                "[0-9\u{a0}\u{200b}\u{200d}\u{feff}\u{2009}é€]{0,12}",
                Just("4242424242424242".to_owned()),
                Just("4242 4242 4242 4242".to_owned()),
                Just("4242.4242.4242.4242".to_owned()),
                Just("4242\u{200b}4242\u{200b}4242\u{200b}4242".to_owned()),
                Just("3782-822463-10005".to_owned()),
                Just("5555555555554444".to_owned()),
            ], 0..12)
        ) {
            let s = parts.concat();
            prop_assert_eq!(find_in_str(s.as_bytes()), find_in_str_reference(s.as_bytes()), "{:?}", s);
        }
    }

    fn found(s: &str) -> Option<Network> {
        find_in_str(s.as_bytes()).map(|h| h.network)
    }

    #[test]
    fn formatted_numbers_are_found() {
        for s in [
            "4242 4242 4242 4242",
            "4242-4242-4242-4242",
            "card: 4242 4242 4242 4242, exp 12/29",
            "3782 822463 10005",
            "3056 930902 5904",
            "4242 4242 4242 4242 123",
            "ref 2024 4242 4242 4242 4242",
            "4242424242424242-12-29",
            "pay with 4242424242424242.",
            "4242424242424242,4111111111111111",
            "(4242424242424242)",
            "tok_4242424242424242",
            "“4242424242424242”",
        ] {
            assert!(find_in_str(s.as_bytes()).is_some(), "{s}");
        }
        let hit = find_in_str(b"x 4000 0566 5566 5556 y").unwrap();
        assert_eq!(hit.last4(), "5556");
    }

    #[test]
    fn separators_and_invisible_characters_are_seen_through() {
        for s in [
            "4242.4242.4242.4242",
            "4242/4242/4242/4242",
            "3782.822463.10005",
            "card 4111.1111.1111.1111 exp 12/29",
            "4242\u{a0}4242\u{a0}4242\u{a0}4242",
            "4242\u{202f}4242\u{2009}4242\u{2007}4242",
            "4242\u{200b}4242\u{200b}4242\u{200b}4242",
            "4242\u{200c}4242\u{200d}4242\u{2060}4242",
            "\u{feff}4242424242424242",
            "4\u{200b}2\u{200b}4\u{200b}2\u{200b}4\u{200b}2\u{200b}4\u{200b}2\u{200b}4\u{200b}2\u{200b}4\u{200b}2\u{200b}4\u{200b}2\u{200b}4\u{200b}2",
            "4242\u{ad}4242\u{ad}4242\u{ad}4242",
            "4242 \u{200b}4242 \u{200b}4242 \u{200b}4242",
            "4242\u{200b}.4242.4242.4242",
        ] {
            let hit = find_in_str(s.as_bytes());
            assert_eq!(
                hit.map(|h| h.network),
                Some(match s.as_bytes()[0] {
                    b'3' => Network::Amex,
                    _ => Network::Visa,
                }),
                "{s:?}"
            );
        }
    }

    #[test]
    fn ordinary_numbers_are_not_cards() {
        for s in [
            "1234567890123",
            "order 1234567890123456",
            "1700000000000",
            "1712345678901",
            "1712345678901234",
            "550e8400-e29b-41d4-a716-446655440000",
            "01890a5d-ac96-774b-bcce-b302099a8057",
            "a4242424242424242f",
            "sha256:9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08",
            "+1 (555) 123-4567",
            "+44 20 7946 0958",
            // decimals, fractions, versions and dates
            "0.4242424242424242",
            "4242424242424242.5",
            "1/4242424242424242",
            "4242424242424242/7",
            "1.2.4242424242424242",
            "2024.10.05 4242.4242",
            "05.10.2023 12.30.00",
            "2023/10/05 2023/10/06",
            "v1.4242.4242.4242.4242",
            // not Luhn-valid / wrong length for the prefix
            "4242424242424241",
            "4242 4242 4242 424",
            "4242.4242.4242.4241",
            "37828224631000",
            // dates and grouped numbers that do not look like printed cards
            "2023-10-05 2023-10-06",
            "2023-10-05 12:30:00",
            "50 60 70 80 90 10 20 30",
            "4242 4242  4242 4242",
            "4242 4242-4242 4242",
            "4242.4242 4242.4242",
            "42 4242 4242 4242 42",
            // too long to be a card
            "42424242424242424242",
            "IBAN DE89 3704 0044 0532 0130 00",
            "",
            "4",
        ] {
            assert_eq!(found(s), None, "{s}");
        }
    }
}
