//! API tokens of hosted services: GitHub, Stripe, Slack and Google.
//!
//! Each scanner looks for the fixed prefix the service puts in front of its
//! tokens (`ghp_`, `sk_live_`, `xoxb-`, `AIza` ...) and then checks the shape
//! of what follows: enough characters of the token's alphabet, not glued to a
//! word before it, and not a placeholder (`sk_live_XXXXXXXXXXXXXXXXXXXXXXXX`).
//! The prefix alone, in prose or in a variable name, is not a token.
//!
//! Strings shorter than the shortest token are not searched at all: most
//! strings of a payload (and most map keys) are, so the rules cost a length
//! comparison there. Every prefix but Google's holds a `_`, `-` or `/`
//! ([`needs_punctuation`]): the walker looks for one of those once per string
//! and skips these rules (and the PEM ones) for strings without.

use std::sync::LazyLock;

use memchr::memmem::Finder;

/// Fewest distinct characters in a token body: a random body of 20 or more
/// characters has far more; `XXXX...`, `0000...` and `xxxx...` placeholders
/// in documentation and fixtures have one or two.
const MIN_DISTINCT: usize = 6;

/// Whether a string can hold a GitHub, Stripe or Slack token, a Slack
/// webhook URL, a PEM block or a PuTTY key file: each has a `_`, `-` or
/// `/` in its fixed part.
pub(super) fn needs_punctuation(s: &[u8]) -> bool {
    memchr::memchr3(b'_', b'-', b'/', s).is_some()
}

/// Whether `b` can be part of a word (as `\w` in a regular expression).
fn is_word(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_'
}

/// Whether the token starting at `at` is not glued to a word before it.
fn word_start(s: &[u8], at: usize) -> bool {
    at == 0 || s.get(at - 1).is_none_or(|&b| !is_word(b))
}

/// Length of the run of bytes satisfying `ok` at `from`, up to `max + 1`.
fn span(s: &[u8], from: usize, max: usize, ok: impl Fn(u8) -> bool) -> usize {
    s.get(from..).map_or(0, |r| {
        r.iter().take(max + 1).take_while(|&&b| ok(b)).count()
    })
}

/// Whether `body` has at least [`MIN_DISTINCT`] distinct bytes.
fn varied(body: &[u8]) -> bool {
    let mut seen = [false; 256];
    let mut distinct = 0;
    for &b in body {
        if !seen[usize::from(b)] {
            seen[usize::from(b)] = true;
            distinct += 1;
            if distinct >= MIN_DISTINCT {
                return true;
            }
        }
    }
    false
}

/// GitHub token prefixes and the fewest body characters after each:
/// classic personal, OAuth, user-to-server, server-to-server and refresh
/// tokens (`ghp_` + 36 base62), and fine-grained personal access tokens
/// (`github_pat_` + 22 base62, `_`, 59 base62).
const GITHUB: [(&str, usize); 6] = [
    ("ghp_", 36),
    ("gho_", 36),
    ("ghu_", 36),
    ("ghs_", 36),
    ("ghr_", 36),
    ("github_pat_", 70),
];

/// The prefix of the first GitHub token in `s` (`ghp_`, ..., `github_pat_`).
///
/// Anchored on `_`: every GitHub prefix ends with one.
pub(super) fn find_github_token(s: &[u8]) -> Option<&'static str> {
    const MIN_LEN: usize = 4 + 36;
    if s.len() < MIN_LEN {
        return None;
    }
    for us in memchr::memchr_iter(b'_', s) {
        for (prefix, min_body) in GITHUB {
            let p = prefix.as_bytes();
            let Some(at) = (us + 1).checked_sub(p.len()) else {
                continue;
            };
            if s.get(at..=us) != Some(p) || !word_start(s, at) {
                continue;
            }
            let body_at = us + 1;
            let alphabet = |b: u8| b.is_ascii_alphanumeric() || (p.len() > 4 && b == b'_');
            let n = span(s, body_at, 255, alphabet);
            if (min_body..=255).contains(&n) && varied(&s[body_at..body_at + n]) {
                return Some(prefix);
            }
        }
    }
    None
}

/// A Stripe key found in a string.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct StripeKey {
    /// The prefix: `sk_live_`, `rk_live_`, `sk_test_` or `rk_test_`.
    pub(super) prefix: &'static str,
    /// Whether it is a test-mode key (`_test_`).
    pub(super) test: bool,
}

/// The first Stripe secret (`sk_`) or restricted (`rk_`) API key in `s`,
/// live or test mode: the prefix and at least 24 letters or digits.
/// Publishable keys (`pk_live_`) are public by design and not reported.
///
/// `live` and `test` say which kinds to look for (their rules are allowed
/// separately).
pub(super) fn find_stripe_key(s: &[u8], live: bool, test: bool) -> Option<StripeKey> {
    const PREFIXES: [(&str, bool); 4] = [
        ("sk_live_", false),
        ("rk_live_", false),
        ("sk_test_", true),
        ("rk_test_", true),
    ];
    const MIN_BODY: usize = 24;
    if s.len() < 8 + MIN_BODY || !(live || test) {
        return None;
    }
    // Anchored on the first `_` of the prefix.
    for us in memchr::memchr_iter(b'_', s) {
        let Some(at) = us.checked_sub(2) else {
            continue;
        };
        for (prefix, is_test) in PREFIXES {
            if (is_test && !test) || (!is_test && !live) {
                continue;
            }
            let p = prefix.as_bytes();
            if s.get(at..at + p.len()) != Some(p) || !word_start(s, at) {
                continue;
            }
            let body_at = at + p.len();
            let n = span(s, body_at, 255, |b| b.is_ascii_alphanumeric());
            if (MIN_BODY..=255).contains(&n) && varied(&s[body_at..body_at + n]) {
                return Some(StripeKey {
                    prefix,
                    test: is_test,
                });
            }
        }
    }
    None
}

/// The prefix (`xoxb-`, `xoxp-`, `xoxa-`, `xoxr-`, `xoxs-`) of the first
/// Slack token in `s`: the prefix, then at least 20 letters, digits and
/// dashes, among them a dash and a digit (`xoxb-<team>-<bot>-<secret>`).
pub(super) fn find_slack_token(s: &[u8]) -> Option<&'static str> {
    const PREFIXES: [&str; 5] = ["xoxb-", "xoxp-", "xoxa-", "xoxr-", "xoxs-"];
    const MIN_BODY: usize = 20;
    if s.len() < 5 + MIN_BODY {
        return None;
    }
    static FINDER: LazyLock<Finder<'static>> = LazyLock::new(|| Finder::new("xox"));
    for at in FINDER.find_iter(s) {
        let Some(prefix) = PREFIXES
            .into_iter()
            .find(|p| s.get(at..at + p.len()) == Some(p.as_bytes()))
        else {
            continue;
        };
        if !word_start(s, at) {
            continue;
        }
        let body_at = at + prefix.len();
        let n = span(s, body_at, 512, |b| b.is_ascii_alphanumeric() || b == b'-');
        let body = &s[body_at..body_at + n];
        if (MIN_BODY..=512).contains(&n)
            && body.contains(&b'-')
            && body.iter().any(u8::is_ascii_digit)
            && varied(body)
        {
            return Some(prefix);
        }
    }
    None
}

/// Whether `s` contains a Slack incoming-webhook or workflow URL:
/// `hooks.slack.com/services/`, `/workflows/` or `/triggers/` followed by at
/// least 20 letters, digits and slashes (the URL is the credential).
pub(super) fn find_slack_webhook(s: &[u8]) -> bool {
    const HOST: &[u8] = b"hooks.slack.com/";
    const KINDS: [&[u8]; 3] = [b"services/", b"workflows/", b"triggers/"];
    const MIN_BODY: usize = 20;
    if s.len() < HOST.len() + 9 + MIN_BODY {
        return false;
    }
    static FINDER: LazyLock<Finder<'static>> = LazyLock::new(|| Finder::new(HOST));
    for at in FINDER.find_iter(s) {
        let after_host = at + HOST.len();
        let Some(kind) = KINDS
            .into_iter()
            .find(|k| s.get(after_host..after_host + k.len()) == Some(*k))
        else {
            continue;
        };
        let body_at = after_host + kind.len();
        let n = span(s, body_at, MIN_BODY, |b| {
            b.is_ascii_alphanumeric() || b == b'/'
        });
        if n >= MIN_BODY && varied(&s[body_at..body_at + n]) {
            return true;
        }
    }
    false
}

/// Whether `s` contains a Google API key: `AIza` and exactly 35 letters,
/// digits, `_` or `-`, on word boundaries.
pub(super) fn find_google_api_key(s: &[u8]) -> bool {
    const BODY: usize = 35;
    if s.len() < 4 + BODY {
        return false;
    }
    let key_char = |b: u8| b.is_ascii_alphanumeric() || b == b'_' || b == b'-';
    static FINDER: LazyLock<Finder<'static>> = LazyLock::new(|| Finder::new("AIza"));
    for at in FINDER.find_iter(s) {
        let before_ok = at == 0 || s.get(at - 1).is_none_or(|&b| !key_char(b));
        let body_at = at + 4;
        let n = span(s, body_at, BODY, key_char);
        if before_ok && n == BODY && varied(&s[body_at..body_at + n]) {
            return true;
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fake token body: `n` characters cycling through base62.
    fn body(n: usize) -> String {
        const A: &[u8] = b"aB3dE5gH7jK9mN1pQ2sT4vW6yZ8cF0";
        (0..n).map(|i| char::from(A[(i * 7) % A.len()])).collect()
    }

    #[test]
    fn github_tokens() {
        for prefix in ["ghp_", "gho_", "ghu_", "ghs_", "ghr_"] {
            let t = format!("{prefix}{}", body(36));
            assert_eq!(find_github_token(t.as_bytes()), Some(prefix), "{t}");
            let t = format!("token={prefix}{} ", body(36));
            assert_eq!(find_github_token(t.as_bytes()), Some(prefix), "{t}");
        }
        let pat = format!("github_pat_{}_{}", body(22), body(59));
        assert_eq!(find_github_token(pat.as_bytes()), Some("github_pat_"));
        for t in [
            format!("ghp_{}", body(35)),
            format!("xghp_{}", body(36)),
            format!("my_ghp_{}", body(36)),
            format!("ghp_{}", "X".repeat(36)),
            format!("github_pat_{}", body(40)),
            "set GITHUB_TOKEN to your ghp_ token and github_pat_ tokens".to_owned(),
        ] {
            assert_eq!(find_github_token(t.as_bytes()), None, "{t}");
        }
    }

    #[test]
    fn stripe_keys() {
        for (prefix, test) in [
            ("sk_live_", false),
            ("rk_live_", false),
            ("sk_test_", true),
            ("rk_test_", true),
        ] {
            let t = format!("STRIPE_KEY={prefix}{}", body(24));
            let want = Some(StripeKey { prefix, test });
            assert_eq!(find_stripe_key(t.as_bytes(), true, true), want, "{t}");
            assert_eq!(
                find_stripe_key(t.as_bytes(), !test, test),
                want,
                "only its own kind enabled: {t}"
            );
            assert_eq!(
                find_stripe_key(t.as_bytes(), test, !test),
                None,
                "other kind only: {t}"
            );
        }
        for t in [
            format!("pk_live_{}", body(24)),
            format!("sk_live_{}", body(23)),
            format!("ask_live_{}", body(24)),
            format!("sk_live_{}", "X".repeat(24)),
            "rotate sk_live_ keys yearly; sk_live_key is the variable".to_owned(),
        ] {
            assert_eq!(find_stripe_key(t.as_bytes(), true, true), None, "{t}");
        }
    }

    #[test]
    fn slack_tokens_and_webhooks() {
        for prefix in ["xoxb-", "xoxp-", "xoxa-", "xoxr-", "xoxs-"] {
            let t = format!("{prefix}2048-4096-{}", body(24));
            assert_eq!(find_slack_token(t.as_bytes()), Some(prefix), "{t}");
        }
        for t in [
            "xoxb-your-bot-token-goes-here",
            "xoxb-1234",
            "nxoxb-2048-4096-aB3dE5gH7jK9mN1pQ2sT4vW6",
            "xoxb-aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
        ] {
            assert_eq!(find_slack_token(t.as_bytes()), None, "{t}");
        }
        let url = format!(
            "https://hooks.slack.com/services/T0ABC1234/B0DEF5678/{}",
            body(24)
        );
        assert!(find_slack_webhook(url.as_bytes()));
        let url = format!(
            "https://hooks.slack.com/workflows/T0ABC1234/A0/{}",
            body(24)
        );
        assert!(find_slack_webhook(url.as_bytes()));
        for t in [
            "post to https://hooks.slack.com/services/ with the URL from the app page",
            "https://hooks.slack.com/services/T000/B000/XXXXXXXXXXXX",
            "https://hooks.slack.com/services/T0ABC",
        ] {
            assert!(!find_slack_webhook(t.as_bytes()), "{t}");
        }
    }

    #[test]
    fn google_api_keys() {
        let key = format!("AIza{}", body(35));
        assert!(find_google_api_key(key.as_bytes()));
        assert!(find_google_api_key(format!("?key={key}&q=x").as_bytes()));
        for t in [
            format!("AIza{}", body(34)),
            format!("AIza{}", body(36)),
            format!("xAIza{}", body(35)),
            format!("AIza{}", "X".repeat(35)),
            "keys start with AIza and are 39 characters long".to_owned(),
        ] {
            assert!(!find_google_api_key(t.as_bytes()), "{t}");
        }
    }

    #[test]
    fn every_gated_prefix_needs_punctuation() {
        let prefixes = GITHUB
            .map(|(p, _)| p)
            .into_iter()
            .chain(["sk_live_", "rk_live_", "sk_test_", "rk_test_"])
            .chain(["xoxb-", "xoxp-", "xoxa-", "xoxr-", "xoxs-"])
            .chain(["hooks.slack.com/", "-----BEGIN ", "PuTTY-User-Key-File-"]);
        for p in prefixes {
            assert!(needs_punctuation(p.as_bytes()), "{p}");
        }
        assert!(!needs_punctuation(b"AIzaJ7nBPGLuT35ItaJuXPpUi6DPvldcP"));
    }

    #[test]
    fn varied_counts_distinct_bytes() {
        assert!(varied(b"abcdef"));
        assert!(!varied(b"abcde"));
        assert!(!varied(b"XXXXXXXXXXXXXXXXXXXXXXXXXXXX"));
        assert!(!varied(b""));
    }
}
