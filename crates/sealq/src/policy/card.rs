//! Card data: primary account numbers (Luhn check + issuer prefix) and map
//! keys that name card data. How card numbers are found in text is in
//! [`card_text`](super::card_text).
//!
//! A number is reported as a card only if it passes the Luhn check **and** its
//! prefix and length belong to a real card network. Together the two keep
//! ordinary identifiers quiet: a random 16-digit number passes Luhn one time in
//! ten, and millisecond timestamps, most order numbers and snowflake ids start
//! with a digit no network issues under.

use rmpv::ValueRef;

/// Fewest digits of a card number we look for. (Maestro issued 12-digit cards;
/// 12-digit numbers are too common elsewhere to be worth flagging.)
pub(super) const MIN_PAN_DIGITS: usize = 13;
/// Most digits of a card number.
pub(super) const MAX_PAN_DIGITS: usize = 19;
/// PCI DSS lets the first six and last four digits be shown: a value with no
/// more digits than that cannot hold a whole card number.
const MAX_MASKED_DIGITS: usize = 10;

/// Card networks whose issuer prefixes (IIN ranges) we know.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Network {
    Visa,
    Mastercard,
    Amex,
    Discover,
    Jcb,
    Diners,
    Mir,
    UnionPay,
    Maestro,
}

/// A card number found in a value. Holds only its last four digits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct CardHit {
    /// The network the number's prefix belongs to (not reported: the detail
    /// of a finding stays the last four digits).
    #[cfg_attr(not(test), allow(dead_code))]
    pub(super) network: Network,
    last4: [u8; 4],
}

impl CardHit {
    /// The last four digits, the only part of a card number PCI DSS lets
    /// anyone display.
    pub(super) fn last4(&self) -> String {
        self.last4.iter().map(|d| char::from(b'0' + d)).collect()
    }
}

/// The Luhn (mod 10) check over digit values `0..=9`.
fn luhn_valid(digits: &[u8]) -> bool {
    let sum: u32 = digits
        .iter()
        .rev()
        .enumerate()
        .map(|(i, &d)| {
            let d = u32::from(d);
            if i % 2 == 1 {
                let d2 = d * 2;
                if d2 > 9 { d2 - 9 } else { d2 }
            } else {
                d
            }
        })
        .sum();
    sum.is_multiple_of(10)
}

/// The first `n` digits as a number.
fn prefix(digits: &[u8], n: usize) -> u32 {
    digits
        .iter()
        .take(n)
        .fold(0, |acc, &d| acc * 10 + u32::from(d))
}

/// The network whose issuer prefix and length match `digits`, if any.
fn network(digits: &[u8]) -> Option<Network> {
    let len = digits.len();
    let (p1, p2, p3, p4, p6) = (
        prefix(digits, 1),
        prefix(digits, 2),
        prefix(digits, 3),
        prefix(digits, 4),
        prefix(digits, 6),
    );
    let long = (16..=19).contains(&len);
    if p1 == 4 && matches!(len, 13 | 16 | 19) {
        Some(Network::Visa)
    } else if ((51..=55).contains(&p2) || (2221..=2720).contains(&p4)) && len == 16 {
        Some(Network::Mastercard)
    } else if (p2 == 34 || p2 == 37) && len == 15 {
        Some(Network::Amex)
    } else if (p4 == 6011
        || (644..=649).contains(&p3)
        || p2 == 65
        || (622_126..=622_925).contains(&p6))
        && long
    {
        Some(Network::Discover)
    } else if (3528..=3589).contains(&p4) && long {
        Some(Network::Jcb)
    } else if ((300..=305).contains(&p3) || p4 == 3095 || p2 == 36 || p2 == 38 || p2 == 39)
        && (14..=19).contains(&len)
    {
        Some(Network::Diners)
    } else if (2200..=2204).contains(&p4) && long {
        Some(Network::Mir)
    } else if p2 == 62 && long {
        Some(Network::UnionPay)
    } else if (p2 == 50 || (56..=69).contains(&p2))
        && (MIN_PAN_DIGITS..=MAX_PAN_DIGITS).contains(&len)
    {
        Some(Network::Maestro)
    } else {
        None
    }
}

/// A hit if `digits` (values `0..=9`) is a card number.
pub(super) fn card(digits: &[u8]) -> Option<CardHit> {
    if !(MIN_PAN_DIGITS..=MAX_PAN_DIGITS).contains(&digits.len()) || !luhn_valid(digits) {
        return None;
    }
    let network = network(digits)?;
    let last4 = digits.get(digits.len() - 4..)?.try_into().ok()?;
    Some(CardHit { network, last4 })
}

/// A card number stored as an unsigned integer.
pub(super) fn find_in_u64(v: u64) -> Option<CardHit> {
    const MIN: u64 = 1_000_000_000_000; // the smallest 13-digit number
    if v < MIN {
        return None;
    }
    let mut buf = [0u8; 20];
    let mut n = 0;
    let mut rest = v;
    while rest > 0 {
        *buf.get_mut(n)? = (rest % 10) as u8;
        rest /= 10;
        n += 1;
    }
    let digits = buf.get_mut(..n)?;
    digits.reverse();
    card(digits)
}

/// A card number stored as a float with an integral value.
pub(super) fn find_in_f64(v: f64) -> Option<CardHit> {
    if v.is_finite() && v.fract() == 0.0 && (1e12..1e19).contains(&v) {
        find_in_u64(v as u64)
    } else {
        None
    }
}

/// Which card data a map key names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum CardFieldKind {
    /// The card number (PAN).
    Pan,
    /// The card verification code (CVV, CVC, CID ...).
    Cvv,
}

/// Normalised key names (lower case, `_`, `-`, `.` and spaces removed).
const PAN_KEYS: &[&[u8]] = &[
    b"pan",
    b"cardnumber",
    b"cardno",
    b"cardnum",
    b"creditcard",
    b"creditcardnumber",
    b"debitcardnumber",
    b"ccnumber",
    b"ccnum",
    b"ccno",
    b"primaryaccountnumber",
];
const CVV_KEYS: &[&[u8]] = &[
    b"cvv",
    b"cvc",
    b"cvv2",
    b"cvc2",
    b"cvn",
    b"csc",
    b"cid",
    b"cardcvv",
    b"cardcvc",
    b"cvvcode",
    b"cvccode",
    b"securitycode",
    b"cardsecuritycode",
    b"cardverification",
    b"cardverificationcode",
    b"cardverificationvalue",
];

/// Which card data the map key `key` names, if any: compared case-insensitively
/// with `_`, `-`, `.` and spaces removed, so `Card-Number`, `card_number` and
/// `cardNumber` are one name.
pub(super) fn field_kind(key: &[u8]) -> Option<CardFieldKind> {
    const MAX: usize = 24;
    if key.len() > 2 * MAX {
        return None;
    }
    // Every name starts with c, d, p or s: most keys stop here.
    let first = key
        .iter()
        .find(|b| !matches!(b, b'_' | b'-' | b'.' | b' '))?
        .to_ascii_lowercase();
    if !matches!(first, b'c' | b'd' | b'p' | b's') {
        return None;
    }
    let mut buf = [0u8; MAX];
    let mut n = 0;
    for &b in key {
        if matches!(b, b'_' | b'-' | b'.' | b' ') {
            continue;
        }
        *buf.get_mut(n)? = b.to_ascii_lowercase();
        n += 1;
    }
    let name = &buf[..n];
    if PAN_KEYS.contains(&name) {
        Some(CardFieldKind::Pan)
    } else if CVV_KEYS.contains(&name) {
        Some(CardFieldKind::Cvv)
    } else {
        None
    }
}

/// Whether a field named as card data of `kind` holds a value shaped like it.
///
/// - A card-number field is flagged when its value has more than 10 digits
///   (string or integer): masked or truncated numbers (`**** 4242`,
///   `424242******4242`, PCI DSS 3.4) and tokens without long digit runs pass.
///   Whole card numbers the Luhn/IIN rule would miss (a typo, a test number)
///   are caught here.
/// - A verification-code field is flagged when its value is 3-4 digits, as a
///   string or an integer `0..=9999`; results like `"M"`, `"pass"`, `true` and
///   masks like `"***"` pass, as do correlation ids in a field called `cid`.
///
/// Null, empty, boolean, binary and container values are never flagged
/// (containers are walked and their scalars scanned on their own).
pub(super) fn field_value_is_sensitive(kind: CardFieldKind, value: &ValueRef<'_>) -> bool {
    match (kind, value) {
        (CardFieldKind::Pan, ValueRef::String(s)) => {
            s.as_bytes().iter().filter(|b| b.is_ascii_digit()).count() > MAX_MASKED_DIGITS
        }
        (CardFieldKind::Pan, ValueRef::Integer(i)) => {
            i.as_u64().is_some_and(|u| u >= 10u64.pow(10))
        }
        (CardFieldKind::Pan, ValueRef::F64(f)) => f.is_finite() && f.fract() == 0.0 && *f >= 1e10,
        (CardFieldKind::Pan, ValueRef::F32(f)) => f.is_finite() && f.fract() == 0.0 && *f >= 1e10,
        (CardFieldKind::Cvv, ValueRef::String(s)) => {
            let t = s.as_bytes().trim_ascii();
            (3..=4).contains(&t.len()) && t.iter().all(u8::is_ascii_digit)
        }
        (CardFieldKind::Cvv, ValueRef::Integer(i)) => i.as_u64().is_some_and(|u| u <= 9999),
        (CardFieldKind::Cvv, ValueRef::F64(f)) => f.fract() == 0.0 && (0.0..=9999.0).contains(f),
        (CardFieldKind::Cvv, ValueRef::F32(f)) => f.fract() == 0.0 && (0.0..=9999.0).contains(f),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `body` plus the Luhn check digit that makes it valid.
    fn with_check_digit(body: &str) -> String {
        (0..=9)
            .map(|d| format!("{body}{d}"))
            .find(|s| luhn_valid(&digits(s)))
            .unwrap()
    }

    fn digits(s: &str) -> Vec<u8> {
        s.bytes().map(|b| b - b'0').collect()
    }

    fn found(s: &str) -> Option<Network> {
        super::super::card_text::find_in_str(s.as_bytes()).map(|h| h.network)
    }

    #[test]
    fn luhn() {
        assert!(luhn_valid(&digits("4242424242424242")));
        assert!(luhn_valid(&digits("79927398713")));
        assert!(!luhn_valid(&digits("4242424242424241")));
        assert!(!luhn_valid(&digits("1234567890123")));
    }

    #[test]
    fn every_network_is_recognised() {
        use Network::*;
        let cases: &[(&str, Network)] = &[
            ("4242424242424242", Visa),
            ("4111111111111111", Visa),
            ("4222222222222", Visa),
            (&with_check_digit("400000000000000000"), Visa),
            ("5555555555554444", Mastercard),
            ("5105105105105100", Mastercard),
            ("2223003122003222", Mastercard),
            (&with_check_digit("272099999999999"), Mastercard),
            ("378282246310005", Amex),
            ("371449635398431", Amex),
            ("6011111111111117", Discover),
            ("6011000990139424", Discover),
            (&with_check_digit("644000000000000"), Discover),
            (&with_check_digit("650000000000000000"), Discover),
            (&with_check_digit("622126000000000"), Discover),
            ("3530111333300000", Jcb),
            ("3566002020360505", Jcb),
            ("30569309025904", Diners),
            ("38520000023237", Diners),
            (&with_check_digit("3600000000000"), Diners),
            (&with_check_digit("309500000000000"), Diners),
            (&with_check_digit("220000000000000"), Mir),
            ("6200000000000005", UnionPay),
            (&with_check_digit("620550000000000000"), UnionPay),
            ("6759649826438453", Maestro),
            (&with_check_digit("501800000000"), Maestro),
            (&with_check_digit("5600000000000000"), Maestro),
        ];
        for (number, network) in cases {
            assert_eq!(found(number), Some(*network), "{number}");
            let n: u64 = number.parse().unwrap();
            assert_eq!(
                find_in_u64(n).map(|h| h.network),
                Some(*network),
                "{number}"
            );
        }
    }

    #[test]
    fn ordinary_integers_are_not_cards() {
        for n in [
            1_700_000_000_000u64,
            1_234_567_890_123,
            999_999_999_999,
            u64::MAX,
        ] {
            assert!(find_in_u64(n).is_none(), "{n}");
        }
    }

    #[test]
    fn phone_numbers_with_card_shaped_digits() {
        // A German mobile number whose 13 digits pass Luhn and start with 4
        // (Visa-13): only the leading `+` keeps it quiet.
        let digits = with_check_digit("491512345678");
        assert!(found(&digits).is_some());
        assert_eq!(found(&format!("+{digits}")), None);
        assert_eq!(found(&format!("call +{digits} now")), None);
    }

    #[test]
    fn floats_holding_card_numbers() {
        assert!(find_in_f64(4_242_424_242_424_242.0).is_some());
        assert!(find_in_f64(f64::NAN).is_none());
        assert!(find_in_f64(1.5).is_none());
        assert!(find_in_f64(-4_242_424_242_424_242.0).is_none());
    }

    #[test]
    fn field_names() {
        for k in [
            "cvv",
            "CVV",
            "cvc2",
            "CID",
            "card_number",
            "cardNumber",
            "Card-Number",
            "pan",
            "card_verification",
            "security_code",
            "cvv2",
        ] {
            assert!(field_kind(k.as_bytes()).is_some(), "{k}");
        }
        for k in [
            "card",
            "card_last4",
            "cvv_result",
            "pane",
            "panel",
            "order_id",
            "card_brand",
            "",
            "a_very_long_key_name_that_is_not_anything_we_know_about_at_all",
        ] {
            assert!(field_kind(k.as_bytes()).is_none(), "{k}");
        }
    }

    #[test]
    fn field_values() {
        use CardFieldKind::*;
        let yes: &[(CardFieldKind, ValueRef<'_>)] = &[
            (Cvv, ValueRef::from("123")),
            (Cvv, ValueRef::from(" 1234 ")),
            (Cvv, ValueRef::from(12)),
            (Cvv, ValueRef::F64(123.0)),
            (Pan, ValueRef::from("4000 1234 5678 9010")),
            (Pan, ValueRef::from(4_000_123_456_789_010u64)),
        ];
        for (kind, v) in yes {
            assert!(field_value_is_sensitive(*kind, v), "{kind:?} {v:?}");
        }
        let no: &[(CardFieldKind, ValueRef<'_>)] = &[
            (Cvv, ValueRef::Nil),
            (Cvv, ValueRef::from("")),
            (Cvv, ValueRef::from("***")),
            (Cvv, ValueRef::from("M")),
            (Cvv, ValueRef::from("12345")),
            (Cvv, ValueRef::from("c0ffee-1234-correlation")),
            (Cvv, ValueRef::Boolean(true)),
            (Cvv, ValueRef::from(-1)),
            (Cvv, ValueRef::from(12345)),
            (Pan, ValueRef::Nil),
            (Pan, ValueRef::from("")),
            (Pan, ValueRef::from("**** **** **** 4242")),
            (Pan, ValueRef::from("424242******4242")),
            (Pan, ValueRef::from("tok_1NzXyZ2eZvKYlo2C")),
            (Pan, ValueRef::from(4242)),
            (Pan, ValueRef::F64(0.5)),
            (
                Pan,
                ValueRef::Array(vec![ValueRef::from("4242424242424242")]),
            ),
        ];
        for (kind, v) in no {
            assert!(!field_value_is_sensitive(*kind, v), "{kind:?} {v:?}");
        }
    }
}
