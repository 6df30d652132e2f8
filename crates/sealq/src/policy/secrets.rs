//! Credentials: PEM private keys, AWS access key ids and JSON Web Tokens.
//!
//! Hand-written scanners over bytes: each looks for a cheap anchor (`-----BEGIN `,
//! `A`, `eyJ`) and only then checks the shape around it.

use std::sync::LazyLock;

use memchr::memmem::Finder;

/// Longest label between `-----BEGIN ` and `-----` we accept.
const MAX_PEM_LABEL: usize = 48;
/// Shortest base64url JWT header and claims segments (`{"alg":"none"}` is 19).
const MIN_JWT_SEGMENT: usize = 10;
/// Shortest JWT signature segment (an HS256 signature is 43).
const MIN_JWT_SIGNATURE: usize = 16;

/// Position of `needle` in `hay` at or after `from` (SIMD search: the
/// scanners run over every string of every payload).
fn find(hay: &[u8], needle: &[u8], from: usize) -> Option<usize> {
    if needle.is_empty() {
        return None;
    }
    memchr::memmem::find(hay.get(from..)?, needle).map(|at| at + from)
}

/// Like [`find`] with a searcher built once: building one costs about as
/// much as searching a short string, and these needles are looked for in
/// every string.
fn find_with(finder: &Finder<'_>, hay: &[u8], from: usize) -> Option<usize> {
    finder.find(hay.get(from..)?).map(|at| at + from)
}

static PEM_BEGIN: LazyLock<Finder<'static>> = LazyLock::new(|| Finder::new("-----BEGIN "));
static PUTTY_HEADER: LazyLock<Finder<'static>> =
    LazyLock::new(|| Finder::new("PuTTY-User-Key-File-"));
static JWT_START: LazyLock<Finder<'static>> = LazyLock::new(|| Finder::new("eyJ"));

/// The label of the first private key block in `s`: `RSA PRIVATE KEY`,
/// `OPENSSH PRIVATE KEY`, `ENCRYPTED PRIVATE KEY`, `PGP PRIVATE KEY BLOCK`,
/// `PRIVATE KEY` ..., or `PuTTY` for a PuTTY `.ppk` file.
///
/// The label is made of upper-case letters, digits and spaces only, and
/// contains `PRIVATE KEY`: it never carries key material.
pub(super) fn find_private_key(s: &[u8]) -> Option<&[u8]> {
    const BEGIN: &[u8] = b"-----BEGIN ";
    const END: &[u8] = b"-----";
    const PUTTY: &[u8] = b"PuTTY-User-Key-File-";
    // Shorter than the shortest header: most strings and map keys.
    if s.len() < PUTTY.len() {
        return None;
    }
    let mut from = 0;
    while let Some(at) = find_with(&PEM_BEGIN, s, from) {
        from = at + 1;
        let label_start = at + BEGIN.len();
        let Some(rest) = s.get(label_start..) else {
            break;
        };
        let label_len = rest
            .iter()
            .take(MAX_PEM_LABEL + 1)
            .position(|&b| !(b.is_ascii_uppercase() || b.is_ascii_digit() || b == b' '))
            .unwrap_or(rest.len().min(MAX_PEM_LABEL + 1));
        if label_len > MAX_PEM_LABEL {
            continue;
        }
        let label = &rest[..label_len];
        if rest.get(label_len..label_len + END.len()) == Some(END)
            && find(label, b"PRIVATE KEY", 0).is_some()
        {
            return Some(label);
        }
    }
    if find_with(&PUTTY_HEADER, s, 0).is_some() {
        return Some(b"PuTTY");
    }
    None
}

/// Whether `b` can be part of a word (as `\w` in a regular expression).
fn is_word(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_'
}

/// The prefix (`AKIA`, `ASIA`, `ABIA`, `ACCA`) of the first AWS access key id
/// in `s`: the prefix and 16 upper-case letters or digits, on word boundaries.
pub(super) fn find_aws_access_key(s: &[u8]) -> Option<&'static str> {
    const LEN: usize = 20;
    const PREFIXES: [&str; 4] = ["AKIA", "ASIA", "ABIA", "ACCA"];
    if s.len() < LEN {
        return None;
    }
    for at in memchr::memchr_iter(b'A', &s[..=s.len() - LEN]) {
        let candidate = &s[at..at + LEN];
        let Some(prefix) = PREFIXES
            .into_iter()
            .find(|p| candidate.starts_with(p.as_bytes()))
        else {
            continue;
        };
        let body_ok = candidate[4..]
            .iter()
            .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit());
        let before_ok = at == 0 || s.get(at - 1).is_none_or(|&b| !is_word(b));
        let after_ok = s.get(at + LEN).is_none_or(|&b| !is_word(b));
        if body_ok && before_ok && after_ok {
            return Some(prefix);
        }
    }
    None
}

/// Whether `b` is a base64url character.
fn is_b64url(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'-' || b == b'_'
}

/// Whether `s` contains a JSON Web Token: `eyJ...` `.` `eyJ...` `.` signature,
/// base64url segments of reasonable length, not glued to other base64url text.
/// (An unsigned `alg: none` token, with an empty signature, is not reported.)
pub(super) fn find_jwt(s: &[u8]) -> bool {
    const MIN_LEN: usize = 2 * MIN_JWT_SEGMENT + MIN_JWT_SIGNATURE + 2;
    if s.len() < MIN_LEN {
        return false;
    }
    let span = |from: usize| {
        s.get(from..)
            .map_or(0, |r| r.iter().take_while(|&&b| is_b64url(b)).count())
    };
    let mut from = 0;
    while let Some(at) = find_with(&JWT_START, s, from) {
        from = at + 1;
        let glued = at > 0 && s.get(at - 1).is_some_and(|&b| is_b64url(b) || b == b'.');
        if glued {
            continue;
        }
        let header = span(at);
        let claims_at = at + header + 1;
        if header < MIN_JWT_SEGMENT
            || s.get(at + header) != Some(&b'.')
            || s.get(claims_at..claims_at + 3) != Some(b"eyJ")
        {
            continue;
        }
        let claims = span(claims_at);
        let sig_at = claims_at + claims + 1;
        if claims < MIN_JWT_SEGMENT || s.get(claims_at + claims) != Some(&b'.') {
            continue;
        }
        if span(sig_at) >= MIN_JWT_SIGNATURE {
            return true;
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    const JWT: &str = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.\
        eyJzdWIiOiIxMjM0NTY3ODkwIiwibmFtZSI6IkpvaG4gRG9lIiwiaWF0IjoxNTE2MjM5MDIyfQ.\
        SflKxwRJSMeKKF2QT4fwpMeJf36POk6yJV_adQssw5c";

    #[test]
    fn finds_needles() {
        assert_eq!(find(b"abcabc", b"bc", 0), Some(1));
        assert_eq!(find(b"abcabc", b"bc", 2), Some(4));
        assert_eq!(find(b"abcabc", b"bd", 0), None);
        assert_eq!(find(b"ab", b"abc", 0), None);
        assert_eq!(find(b"ab", b"", 0), None);
        assert_eq!(find(b"ab", b"a", 9), None);
    }

    #[test]
    fn private_keys() {
        for (text, label) in [
            ("-----BEGIN RSA PRIVATE KEY-----\nMIIEow", "RSA PRIVATE KEY"),
            ("key: -----BEGIN EC PRIVATE KEY-----", "EC PRIVATE KEY"),
            (
                "-----BEGIN OPENSSH PRIVATE KEY-----\nb3Bl",
                "OPENSSH PRIVATE KEY",
            ),
            (
                "-----BEGIN ENCRYPTED PRIVATE KEY-----",
                "ENCRYPTED PRIVATE KEY",
            ),
            ("-----BEGIN PRIVATE KEY-----\nMC4CAQ", "PRIVATE KEY"),
            ("-----BEGIN DSA PRIVATE KEY-----", "DSA PRIVATE KEY"),
            (
                "-----BEGIN PGP PRIVATE KEY BLOCK-----",
                "PGP PRIVATE KEY BLOCK",
            ),
            (
                "-----BEGIN CERTIFICATE-----\n...\n-----BEGIN PRIVATE KEY-----",
                "PRIVATE KEY",
            ),
            ("PuTTY-User-Key-File-3: ssh-ed25519\n", "PuTTY"),
        ] {
            assert_eq!(
                find_private_key(text.as_bytes()),
                Some(label.as_bytes()),
                "{text}"
            );
        }
        for text in [
            "-----BEGIN CERTIFICATE-----\nMIIB",
            "-----BEGIN PUBLIC KEY-----",
            "-----BEGIN PGP PUBLIC KEY BLOCK-----",
            "-----BEGIN PRIVATE KEY",
            "-----BEGIN private key-----",
            "BEGIN RSA PRIVATE KEY",
            "-----BEGIN ",
            "",
        ] {
            assert_eq!(find_private_key(text.as_bytes()), None, "{text}");
        }
        let long = format!("-----BEGIN {}PRIVATE KEY-----", "A".repeat(60));
        assert_eq!(find_private_key(long.as_bytes()), None);
    }

    #[test]
    fn aws_access_keys() {
        for (text, prefix) in [
            ("AKIAIOSFODNN7EXAMPLE", "AKIA"),
            ("aws_access_key_id = AKIAIOSFODNN7EXAMPLE\n", "AKIA"),
            ("ASIAY34FZKBOKMUTVV7A", "ASIA"),
            ("\"ABIA0123456789ABCDEF\"", "ABIA"),
            ("id:ACCA0123456789ABCDEF.", "ACCA"),
            ("AAKIA AKIAIOSFODNN7EXAMPLE", "AKIA"),
        ] {
            assert_eq!(find_aws_access_key(text.as_bytes()), Some(prefix), "{text}");
        }
        for text in [
            "AKIAIOSFODNN7EXAMPL",
            "AKIAIOSFODNN7EXAMPLE1",
            "XAKIAIOSFODNN7EXAMPLE",
            "_AKIAIOSFODNN7EXAMPLE",
            "AKIAiosfodnn7example",
            "AKIDIOSFODNN7EXAMPLE",
            "AKIA-IOSFODNN7EXAMPLE",
            "",
        ] {
            assert_eq!(find_aws_access_key(text.as_bytes()), None, "{text}");
        }
    }

    #[test]
    fn jwts() {
        for text in [
            JWT.to_owned(),
            format!("Bearer {JWT}"),
            format!("{{\"token\":\"{JWT}\"}}"),
            format!("{JWT} trailing"),
        ] {
            assert!(find_jwt(text.as_bytes()), "{text}");
        }
        let unsigned = "eyJhbGciOiJub25lIn0.eyJzdWIiOiIxMjM0NTY3ODkwIn0.";
        let short_sig = "eyJhbGciOiJub25lIn0.eyJzdWIiOiIxMjM0NTY3ODkwIn0.abc";
        for text in [
            unsigned.to_owned(),
            short_sig.to_owned(),
            format!("x{JWT}"),
            format!("a.{JWT}"),
            "eyJ.eyJ.abcdefghijklmnopqrstuvwxyz".to_owned(),
            "eyJhbGciOiJIUzI1NiJ9.notbase64json.SflKxwRJSMeKKF2QT4fwpMeJf36".to_owned(),
            "eyJhbGciOiJIUzI1NiJ9".to_owned(),
            "version 1.2.3 of eyJ-lib".to_owned(),
        ] {
            assert!(!find_jwt(text.as_bytes()), "{text}");
        }
    }
}
