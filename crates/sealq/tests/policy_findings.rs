//! Regression tests for the payload-policy findings of the security review,
//! each named after its finding, through the public API only.

use std::collections::BTreeMap;

use sealq::Error;
use sealq::policy::{PayloadPolicy, Rule};
use serde_json::{Value, json};

fn mp(value: &Value) -> Vec<u8> {
    rmp_serde::to_vec_named(value).expect("serializable")
}

/// `(rule, path, detail, message)` of the policy violation `check` returns.
fn violation(policy: &PayloadPolicy, payload: &[u8]) -> (String, String, String, String) {
    match policy.check("q", payload) {
        Err(e @ Error::PolicyViolation { .. }) => {
            let shown = e.to_string();
            let Error::PolicyViolation { rule, path, detail } = e else {
                unreachable!()
            };
            (rule, path, detail, shown)
        }
        other => panic!("expected a policy violation, got {other:?}"),
    }
}

/// Keys that are data, not field names: none may appear in a path.
const DATA_KEYS: &[&str] = &[
    "alice@example.com",
    "ann.example+orders@example.com",
    "+44 20 7946 0958",
    "+4915123456784",
    "07946095812",
    "550e8400-e29b-41d4-a716-446655440000",
    "550e8400e29b41d4a716446655440000",
    "deadbeefcafebabe",
    "2024-10-05",
    "DE89370400440532013000",
    "Ann Example",
    "Jürgen",
    "192.168.0.1",
    "https://example.com/u/42",
    "user 12345",
    "12345678",
    "AKIAIOSFODNN7EXAMPLE",
    "a.b",
    "",
    "line\nbreak",
    "<key#0>",
];

#[test]
fn finding_8_field_paths_never_carry_map_keys_verbatim() {
    let policy = PayloadPolicy::default();
    // The reported case: an e-mail address as a map key above a card.
    let payload = mp(&json!({
        "by_user": { "alice@example.com": { "card": "4111 1111 1111 1111" } }
    }));
    let (rule, path, detail, shown) = violation(&policy, &payload);
    assert_eq!(
        (rule.as_str(), path.as_str(), detail.as_str()),
        ("card_number", "by_user.<key#0>.card", ", card ending 1111")
    );
    assert!(!shown.contains("alice"), "{shown}");
    assert!(!shown.contains("example.com"), "{shown}");

    // Every data-shaped key, at several positions and depths, in `check`'s
    // error (message and fields) and in every `scan` finding.
    for key in DATA_KEYS {
        let mut users = serde_json::Map::new();
        users.insert("ann".into(), json!({ "note": "ok" }));
        users.insert("bob".into(), json!({ "note": "ok" }));
        users.insert((*key).to_owned(), json!({ "cvv": "123" }));
        let payload = mp(&json!({ "users": users, "list": [{ *key: "4111111111111111" }] }));
        let err = policy.check("q", &payload).unwrap_err();
        let findings = policy.scan("q", &payload);
        assert!(findings.len() >= 2, "{key:?}: {findings:?}");
        let shown = format!("{err} {err:?} {findings:?}");
        // (`<key#0>` is a key that looks like a placeholder: it renders as
        // one, which is no leak.)
        if key.len() >= 3 && !key.starts_with('<') {
            assert!(!shown.contains(key), "{key:?} leaked: {shown}");
        }
        // Positions count from 0 in serialized (here: sorted) order.
        let pos = users.keys().position(|k| k == key).unwrap();
        let paths: Vec<_> = findings.iter().map(|f| f.path.as_str()).collect();
        assert!(
            paths.contains(&format!("users.<key#{pos}>.cvv").as_str()),
            "{key:?}: {paths:?}"
        );
        assert!(paths.contains(&"list[0].<key#0>"), "{key:?}: {paths:?}");
    }

    // Integer keys: small ones are shown, long ones (ids, phone numbers,
    // card numbers) are not.
    let mut by_id = BTreeMap::new();
    by_id.insert(7u64, json!({ "cvv": 123 }));
    by_id.insert(4_915_123_456_784, json!({ "cvv": 123 }));
    let paths: Vec<_> = PayloadPolicy::default()
        .scan("q", &rmp_serde::to_vec_named(&by_id).unwrap())
        .into_iter()
        .map(|f| f.path)
        .collect();
    assert_eq!(paths, ["7.cvv", "<key#1>.cvv"]);
}

#[test]
fn finding_8_field_names_are_still_shown() {
    let payload = mp(&json!({
        "customer": { "Card-Number": { "x509_chain": [{ "line2": "4111111111111111" }] } }
    }));
    let (_, path, _, _) = violation(&PayloadPolicy::default(), &payload);
    assert_eq!(path, "customer.Card-Number.x509_chain[0].line2");
}

#[test]
fn finding_8_allow_lists_match_real_keys_not_their_rendering() {
    let payload = mp(&json!({
        "by_user": { "alice@example.com": { "card": "4111 1111 1111 1111" } }
    }));
    let policy = PayloadPolicy::default()
        .try_allow_field("q", "by_user.*.card", Rule::CardNumber)
        .unwrap();
    assert!(policy.check("q", &payload).is_ok());
    // Field names are matched as before.
    let named = PayloadPolicy::default()
        .try_allow_field("q", "by_user.ann.card", Rule::CardNumber)
        .unwrap();
    let ann = mp(&json!({ "by_user": { "ann": { "card": "4111111111111111" } } }));
    assert!(named.check("q", &ann).is_ok());
    assert!(named.check("q", &payload).is_err());
    // A placeholder copied from an error is not a key: refused, with a hint.
    match PayloadPolicy::default().try_allow_field("q", "by_user.<key#0>.card", Rule::CardNumber) {
        Err(Error::InvalidArgument { reason, .. }) => assert!(reason.contains('*'), "{reason}"),
        other => panic!("expected InvalidArgument, got {other:?}"),
    }
}

#[test]
fn finding_9_card_numbers_used_as_map_keys_are_found() {
    let policy = PayloadPolicy::default();
    for key in [
        "4111111111111111",
        "4111 1111 1111 1111",
        "5555.5555.5555.4444",
    ] {
        let payload = mp(&json!({ "limits": { "daily": 10, key: { "max": 500 } } }));
        let (rule, path, detail, shown) = violation(&policy, &payload);
        assert_eq!(rule, "card_number", "{key}");
        // Entries are sorted: the card sorts before `daily`.
        assert_eq!(path, "limits.<key#0>", "{key}");
        assert!(detail.ends_with(", in a map key"), "{detail}");
        assert!(!shown.contains(&key[..8]), "{shown}");
    }
    // Integer keys too.
    let mut by_card = BTreeMap::new();
    by_card.insert(4_111_111_111_111_111u64, "gold");
    let payload = rmp_serde::to_vec_named(&json!({ "tiers": by_card })).unwrap();
    let (rule, path, detail, _) = violation(&policy, &payload);
    assert_eq!(
        (rule.as_str(), path.as_str(), detail.as_str()),
        (
            "card_number",
            "tiers.<key#0>",
            ", card ending 1111, in a map key"
        )
    );
    let int_keys = rmp_serde::to_vec_named(&by_card).unwrap();
    let (rule, path, _, _) = violation(&policy, &int_keys);
    assert_eq!((rule.as_str(), path.as_str()), ("card_number", "<key#0>"));
    // Allow-listed at the entry's path, like a value there.
    let allowed = PayloadPolicy::default().allow_field("q", "limits.*", Rule::CardNumber);
    let payload = mp(&json!({ "limits": { "4111111111111111": 1 } }));
    assert!(allowed.check("q", &payload).is_ok());
}

#[test]
fn finding_9_card_numbers_with_dots_slashes_or_invisible_separators_are_found() {
    let policy = PayloadPolicy::default();
    for text in [
        "4111.1111.1111.1111",
        "4111/1111/1111/1111",
        "4111\u{a0}1111\u{a0}1111\u{a0}1111",
        "4111\u{200b}1111\u{200b}1111\u{200b}1111",
        "4111\u{200c}1111\u{200d}1111\u{2060}1111",
        "4111\u{feff}1111\u{feff}1111\u{feff}1111",
        "4\u{200b}1\u{200b}1\u{200b}1\u{200b}1111\u{200b}1111\u{200b}1111",
        "card: 4111.1111.1111.1111, exp 12/29",
    ] {
        let (rule, _, detail, _) = violation(&policy, &mp(&json!({ "note": text })));
        assert_eq!(rule, "card_number", "{text:?}");
        assert_eq!(detail, ", card ending 1111", "{text:?}");
    }
    // Decimals, dates and versions with the same separators stay quiet.
    for text in [
        "0.4111111111111111",
        "4111111111111111.5",
        "1/4111111111111111",
        "2024/10/05 12.30.00",
        "1.4111.1111.1111.1111",
        "4111.1111.1111.1112",
    ] {
        assert!(
            policy.check("q", &mp(&json!({ "note": text }))).is_ok(),
            "{text:?}"
        );
    }
}

#[test]
fn finding_9_cloud_keys_and_tokens_are_found_by_named_rules() {
    let policy = PayloadPolicy::default();
    let cases = [
        (
            "ghp_kNtaU4i5GpIpatEJc2vPjjeJeRvtQRxFAoCR",
            "github_token",
            ", ghp_ token",
        ),
        (
            "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",
            "github_token",
            ", github_pat_ token",
        ),
        (
            "rk_live_iWPnG4H1gU92He9sh1bzEjHU",
            "stripe_key",
            ", rk_live_ key",
        ),
        (
            "sk_test_7N05ofrXXzuw1EFszGHcBnIn",
            "stripe_test_key",
            ", sk_test_ key",
        ),
        (
            "xoxb-38336555553-99827134737-o8FHzdMoL7yLZ1o8piG6zxvR",
            "slack_token",
            ", xoxb- token",
        ),
        (
            "https://hooks.slack.com/services/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",
            "slack_webhook",
            "",
        ),
        (
            "AIzaJ7nBPGLuT35ItaJuXPpUi6DPvldcP-w5GsI",
            "google_api_key",
            "",
        ),
        (
            "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjE",
            "private_key",
            ", OPENSSH PRIVATE KEY block",
        ),
        (
            "-----BEGIN PGP PRIVATE KEY BLOCK-----\n\nlQOYBGX",
            "private_key",
            ", PGP PRIVATE KEY BLOCK block",
        ),
    ];
    for (secret, want_rule, want_detail) in cases {
        let payload = mp(&json!({ "env": { "value": secret } }));
        let (rule, path, detail, shown) = violation(&policy, &payload);
        assert_eq!(
            (rule.as_str(), path.as_str(), detail.as_str()),
            (want_rule, "env.value", want_detail)
        );
        let tail = &secret[secret.len() - 12..];
        assert!(!shown.contains(tail), "{shown}");
        // The rule is named, parsed and allowed like the old ones.
        let rule: Rule = want_rule.parse().unwrap();
        assert_eq!(rule.as_str(), want_rule);
        assert!(Rule::ALL.contains(&rule));
        let allowed = PayloadPolicy::default().allow_field("q", "env.value", rule);
        assert!(allowed.check("q", &payload).is_ok(), "{want_rule}");
        assert!(allowed.check("other", &payload).is_err(), "{want_rule}");
    }
}

#[test]
fn finding_9_stripe_test_keys_can_be_allowed_without_live_keys() {
    let dev = PayloadPolicy::default().allow_in_queue(Rule::StripeTestKey, "q");
    let test_key = mp(&json!({ "k": "sk_test_7N05ofrXXzuw1EFszGHcBnIn" }));
    let live_key = mp(&json!({ "k": "sk_live_12GcAOEFAtZvGG02I2TcW5xmpkR4NrlZ" }));
    assert!(dev.check("q", &test_key).is_ok());
    let (rule, ..) = violation(&dev, &live_key);
    assert_eq!(rule, "stripe_key");
    // And test keys are refused by default.
    let (rule, ..) = violation(&PayloadPolicy::default(), &test_key);
    assert_eq!(rule, "stripe_test_key");
}

#[test]
fn finding_9_card_fields_are_still_caught() {
    let policy = PayloadPolicy::default();
    for payload in [
        json!({ "pay": { "cvv": "737" } }),
        json!({ "pay": { "CVC2": 123 } }),
        json!({ "pay": { "security_code": "0123" } }),
        json!({ "pay": { "card_number": "4000 1234 5678 9010" } }),
    ] {
        let (rule, ..) = violation(&policy, &mp(&payload));
        assert_eq!(rule, "card_field", "{payload}");
    }
}
