//! The payload scanner against two corpora in `tests/data/`: fake secrets
//! every rule must catch (`policy_true_positives.txt`, at least three per
//! rule) and benign strings no rule may flag (`policy_false_positives.txt`).
//! Each text is checked as a map value and as a map key.

use std::collections::BTreeMap;

use sealq::Error;
use sealq::policy::{PayloadPolicy, Rule};
use serde_json::{Value, json};

const TRUE_POSITIVES: &str = include_str!("data/policy_true_positives.txt");
const FALSE_POSITIVES: &str = include_str!("data/policy_false_positives.txt");

/// Undo the corpus escapes: `\n`, `\\`, `\u{XXXX}`.
fn unescape(line: &str) -> String {
    let mut out = String::new();
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('n') => out.push('\n'),
            Some('\\') => out.push('\\'),
            Some('u') => {
                assert_eq!(chars.next(), Some('{'), "bad escape in {line}");
                let hex: String = chars.by_ref().take_while(|&c| c != '}').collect();
                let code = u32::from_str_radix(&hex, 16).expect("hex code point");
                out.push(char::from_u32(code).expect("a character"));
            }
            other => panic!("unknown escape \\{other:?} in {line}"),
        }
    }
    out
}

/// The corpus lines that are not comments or blank, unescaped.
fn lines(corpus: &str) -> impl Iterator<Item = String> + '_ {
    corpus
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .map(unescape)
}

fn mp(value: &Value) -> Vec<u8> {
    rmp_serde::to_vec_named(value).expect("serializable")
}

/// `{"data": {"note": text}}` and `{"data": {text: 1}}`.
fn as_value_and_key(text: &str) -> [(Vec<u8>, &'static str); 2] {
    let mut keyed = serde_json::Map::new();
    keyed.insert(text.to_owned(), json!(1));
    [
        (mp(&json!({ "data": { "note": text } })), "data.note"),
        (mp(&json!({ "data": keyed })), "data.<key#0>"),
    ]
}

/// Whether `shown` contains any 10-character window of the longest run of
/// letters and digits in `secret` (its key material, for all our rules).
fn leaks(shown: &str, secret: &str) -> bool {
    let core = secret
        .split(|c: char| !c.is_ascii_alphanumeric())
        .max_by_key(|s| s.len())
        .unwrap_or_default();
    core.len() >= 10
        && core
            .as_bytes()
            .windows(10)
            .any(|w| shown.contains(std::str::from_utf8(w).unwrap()))
}

#[test]
fn every_true_positive_is_caught_as_value_and_as_key() {
    let policy = PayloadPolicy::default();
    let mut per_rule: BTreeMap<&str, usize> = BTreeMap::new();
    let mut cases = 0;
    for line in lines(TRUE_POSITIVES) {
        let (name, text) = line.split_once(' ').expect("`rule text`");
        let rule: Rule = name.parse().expect("a rule name");
        *per_rule.entry(rule.as_str()).or_default() += 1;
        for (payload, want_path) in as_value_and_key(text) {
            cases += 1;
            let findings = policy.scan("q", &payload);
            let finding = findings
                .iter()
                .find(|f| f.rule == rule)
                .unwrap_or_else(|| panic!("{name} missed at {want_path}: {text:?}"));
            assert_eq!(finding.path, want_path, "{text:?}");
            assert_eq!(
                finding.detail.ends_with(", in a map key"),
                want_path.ends_with("<key#0>"),
                "{text:?}: {}",
                finding.detail
            );
            let err = policy.check("q", &payload).unwrap_err();
            assert!(matches!(err, Error::PolicyViolation { .. }), "{err}");
            let shown = format!("{err} {err:?} {findings:?}");
            assert!(!leaks(&shown, text), "{text:?} leaked: {shown}");
            // Allowed for the queue, this rule no longer fires.
            let allowed = PayloadPolicy::default().allow_in_queue(rule, "q");
            assert!(
                allowed.scan("q", &payload).iter().all(|f| f.rule != rule),
                "{text:?}"
            );
        }
    }
    for rule in Rule::ALL {
        if rule == Rule::CardField {
            continue; // a key/value pair, not a string: see policy_findings.rs
        }
        let n = per_rule.get(rule.as_str()).copied().unwrap_or(0);
        assert!(n >= 3, "rule {rule} has {n} true positives; want 3 or more");
    }
    assert!(cases >= 2 * 45, "{cases}");
}

#[test]
fn no_false_positive_is_flagged_as_value_or_as_key() {
    let policy = PayloadPolicy::default();
    let mut n = 0;
    for text in lines(FALSE_POSITIVES) {
        n += 1;
        for (payload, path) in as_value_and_key(&text) {
            let findings = policy.scan("q", &payload);
            assert!(findings.is_empty(), "{text:?} at {path}: {findings:?}");
            assert!(policy.check("q", &payload).is_ok(), "{text:?}");
        }
    }
    assert!(n >= 90, "the corpus shrank to {n} lines");
}
