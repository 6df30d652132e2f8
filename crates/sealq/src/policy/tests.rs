//! Tests of the policy as a producer uses it: MessagePack payloads in, errors
//! and findings out.

use std::sync::{Arc, Mutex};

use proptest::prelude::*;
use serde_json::{Value, json};

use super::*;

const JWT: &str = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.\
    eyJzdWIiOiIxMjM0NTY3ODkwIiwibmFtZSI6IkpvaG4gRG9lIiwiaWF0IjoxNTE2MjM5MDIyfQ.\
    SflKxwRJSMeKKF2QT4fwpMeJf36POk6yJV_adQssw5c";
const AWS_KEY: &str = "AKIAIOSFODNN7EXAMPLE";
const PEM: &str = "-----BEGIN RSA PRIVATE KEY-----\nMIIEowIBAAKCAQEAu1SU1LfVLPHCozMxH2Mo\n-----END RSA PRIVATE KEY-----";

fn mp(value: &Value) -> Vec<u8> {
    rmp_serde::to_vec_named(value).expect("serializable")
}

fn check(policy: &PayloadPolicy, queue: &str, value: Value) -> Result<(), Error> {
    policy.check(queue, &mp(&value))
}

/// `(rule, path, detail)` of a policy violation.
fn violation(result: Result<(), Error>) -> (String, String, String) {
    match result {
        Err(Error::PolicyViolation { rule, path, detail }) => (rule, path, detail),
        other => panic!("expected a policy violation, got {other:?}"),
    }
}

#[test]
fn clean_payloads_pass() {
    let policy = PayloadPolicy::default();
    let payload = json!({
        "order_id": 1234567890123u64,
        "order_ref": "ORD-1234567890123456",
        "created_at_ms": 1712345678901u64,
        "created_at_us": 1712345678901234u64,
        "request_id": "550e8400-e29b-41d4-a716-446655440000",
        "trace": "01890a5d-ac96-774b-bcce-b302099a8057",
        "customer": {
            "id": "cus_NffrFeUfNV2Hib",
            "phone": "+44 20 7946 0958",
            "mobile": "+4915123456784",
            "email": "a@example.com",
        },
        "amount": 4242.42,
        "card": { "brand": "visa", "last4": "4242", "exp": "12/29", "number": "**** **** **** 4242" },
        "cvv_check": "pass",
        "cid": "c0ffee-correlation-id",
        "digest": "sha256:9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08",
        "note": "-----BEGIN PUBLIC KEY-----",
        "dates": ["2023-10-05 2023-10-06", "2024-01-01T00:00:00Z"],
        "blob": null,
        "flags": [true, false],
        "ids": [9007199254740993u64, 18446744073709551615u64, -4242424242424242i64],
    });
    assert!(check(&policy, "default", payload.clone()).is_ok());
    assert!(policy.scan("default", &mp(&payload)).is_empty());
}

#[test]
fn card_numbers_are_rejected_with_last_four_only() {
    let policy = PayloadPolicy::default();
    for (number, last4) in [
        (json!("4242424242424242"), "4242"),
        (json!("4242 4242 4242 4242"), "4242"),
        (json!("4242-4242-4242-4242"), "4242"),
        (json!("paid with 5555 5555 5555 4444 yesterday"), "4444"),
        (json!(378282246310005u64), "0005"),
        (json!(6011111111111117u64), "1117"),
    ] {
        let secret = number.to_string().trim_matches('"').to_owned();
        let err = check(&policy, "q", json!({ "customer": { "note": number } })).unwrap_err();
        let shown = err.to_string();
        assert!(
            !shown.contains(&secret) && !shown.contains(&secret[..12]),
            "{shown}"
        );
        assert!(!format!("{err:?}").contains(&secret[..12]), "{err:?}");
        let (rule, path, detail) = violation(Err(err));
        assert_eq!(rule, "card_number");
        assert_eq!(path, "customer.note");
        assert_eq!(detail, format!(", card ending {last4}"));
    }
}

#[test]
fn nested_paths_name_the_field() {
    let policy = PayloadPolicy::default();
    let payload = json!({
        "customer": {
            "name": "Ann",
            "cards": [
                { "token": "tok_1" },
                { "token": "tok_2" },
                { "number": "4111 1111 1111 1111" },
            ],
        },
    });
    let (rule, path, detail) = violation(check(&policy, "q", payload));
    assert_eq!(rule, "card_number");
    assert_eq!(path, "customer.cards[2].number");
    assert_eq!(detail, ", card ending 1111");

    let (_, path, _) = violation(check(&policy, "q", json!([[1, ["x", "4111111111111111"]]])));
    assert_eq!(path, "[0][1][1]");
    let (_, path, _) = violation(check(&policy, "q", json!("4111111111111111")));
    assert_eq!(path, "$");
}

#[test]
fn non_string_map_keys_render_sensibly() {
    // rmp-serde writes integer keys for maps keyed by integers.
    let mut by_id = std::collections::BTreeMap::new();
    by_id.insert(7u32, "4111111111111111");
    let payload = rmp_serde::to_vec_named(&by_id).unwrap();
    let (_, path, _) = violation(PayloadPolicy::default().check("q", &payload));
    assert_eq!(path, "7");
}

#[test]
fn each_rule_rejects_and_never_shows_the_value() {
    let policy = PayloadPolicy::default();
    let cases: [(Value, &str, &str, &str, &str); 5] = [
        (
            json!({"pay": {"cvv": "737"}}),
            "card_field",
            "pay.cvv",
            "",
            "737",
        ),
        (
            json!({"pay": {"Card-Number": "4000 1234 5678 9010"}}),
            "card_field",
            "pay.Card-Number",
            "",
            "5678",
        ),
        (
            json!({"deploy": {"key": PEM}}),
            "private_key",
            "deploy.key",
            ", RSA PRIVATE KEY block",
            "MIIEow",
        ),
        (
            json!({"env": [{"value": format!("id={AWS_KEY}")}]}),
            "aws_access_key",
            "env[0].value",
            ", AKIA key id",
            "IOSFODNN7",
        ),
        (
            json!({"headers": {"authorization": format!("Bearer {JWT}")}}),
            "jwt",
            "headers.authorization",
            "",
            "eyJzdWIi",
        ),
    ];
    for (payload, want_rule, want_path, want_detail, secret) in cases {
        let err = check(&policy, "q", payload).unwrap_err();
        let shown = err.to_string();
        assert!(!shown.contains(secret), "{shown}");
        assert!(shown.contains(want_path), "{shown}");
        let (rule, path, detail) = violation(Err(err));
        assert_eq!(
            (rule.as_str(), path.as_str(), detail.as_str()),
            (want_rule, want_path, want_detail)
        );
    }
}

#[test]
fn card_fields_need_a_value_shaped_like_card_data() {
    let policy = PayloadPolicy::default();
    for payload in [
        json!({"cvv": null}),
        json!({"cvv": ""}),
        json!({"cvc": "***"}),
        json!({"cvv": true}),
        json!({"card_number": "424242******4242"}),
        json!({"pan": "ABCDE1234F"}),
        json!({"cid": "7f9c2ba4e88f827d616045507605853e"}),
    ] {
        assert!(check(&policy, "q", payload.clone()).is_ok(), "{payload}");
    }
    for payload in [
        json!({"CVV2": 123}),
        json!({"security_code": "0123"}),
        json!({"card_verification": "123"}),
        json!({"cid": "1234"}),
        json!({"cardnumber": 4000123456789010u64}),
        json!({"PAN": "4000123456789010"}),
    ] {
        let (rule, _, _) = violation(check(&policy, "q", payload.clone()));
        assert_eq!(rule, "card_field", "{payload}");
    }
}

#[test]
fn scan_reports_everything_check_reports_the_first() {
    let policy = PayloadPolicy::default();
    let payload = mp(&json!({
        "a": "4242424242424242",
        "b": { "cvv": "123", "t": JWT },
        "c": [AWS_KEY, PEM],
    }));
    let findings = policy.scan("q", &payload);
    let got: Vec<_> = findings.iter().map(|f| (f.rule, f.path.as_str())).collect();
    assert_eq!(
        got,
        [
            (Rule::CardNumber, "a"),
            (Rule::CardField, "b.cvv"),
            (Rule::Jwt, "b.t"),
            (Rule::AwsAccessKey, "c[0]"),
            (Rule::PrivateKey, "c[1]"),
        ]
    );
    assert_eq!(
        findings[0].to_string(),
        "`card_number` at field `a`, card ending 4242"
    );
    let (rule, path, _) = violation(policy.check("q", &payload));
    assert_eq!((rule.as_str(), path.as_str()), ("card_number", "a"));
    assert_eq!(policy.try_scan("q", &payload).unwrap(), findings);
}

#[test]
fn rules_can_be_allowed_for_a_queue() {
    let policy = PayloadPolicy::default().allow_in_queue(Rule::Jwt, "auth");
    let payload = json!({ "refresh": JWT });
    assert!(check(&policy, "auth", payload.clone()).is_ok());
    let (rule, ..) = violation(check(&policy, "emails", payload));
    assert_eq!(rule, "jwt");
    // Other rules still apply in the queue.
    let (rule, ..) = violation(check(&policy, "auth", json!({ "k": AWS_KEY })));
    assert_eq!(rule, "aws_access_key");

    let everything = Rule::ALL
        .into_iter()
        .fold(PayloadPolicy::default(), |p, r| {
            p.allow_in_queue(r, "vault")
        });
    assert!(check(&everything, "vault", json!({ "k": AWS_KEY, "cvv": 123 })).is_ok());
    // ... but the payload must still decode.
    assert!(matches!(
        everything.check("vault", &[0x92]),
        Err(Error::Codec { .. })
    ));
}

#[test]
fn rules_can_be_allowed_for_a_field() {
    let policy = PayloadPolicy::default()
        .allow_field("billing", "invoice.card_last_charge_id", Rule::CardNumber)
        .allow_field("billing", "lines[*].ref", Rule::CardNumber)
        .allow_field("billing", "meta.*.id", Rule::CardNumber);
    let card = "4242424242424242";
    for payload in [
        json!({ "invoice": { "card_last_charge_id": card } }),
        json!({ "lines": [{ "ref": card }, { "ref": card }] }),
        json!({ "meta": { "a": { "id": card }, "b": { "id": card } } }),
    ] {
        assert!(
            check(&policy, "billing", payload.clone()).is_ok(),
            "{payload}"
        );
        assert!(
            check(&policy, "other", payload.clone()).is_err(),
            "{payload}"
        );
    }
    for (payload, path) in [
        // a sibling field
        (json!({ "invoice": { "card": card } }), "invoice.card"),
        // below the allowed field
        (
            json!({ "invoice": { "card_last_charge_id": [card] } }),
            "invoice.card_last_charge_id[0]",
        ),
        // `*` is one key, not an index or several segments
        (json!({ "meta": [{ "id": card }] }), "meta[0].id"),
        (
            json!({ "meta": { "a": { "b": { "id": card } } } }),
            "meta.a.b.id",
        ),
    ] {
        let (_, got, _) = violation(check(&policy, "billing", payload));
        assert_eq!(got, path);
    }
    // Only the named rule is allowed at the field.
    let (rule, ..) = violation(check(
        &policy,
        "billing",
        json!({ "invoice": { "card_last_charge_id": AWS_KEY } }),
    ));
    assert_eq!(rule, "aws_access_key");
}

#[test]
fn malformed_field_paths() {
    let err = PayloadPolicy::default()
        .try_allow_field("q", "a[x]", Rule::CardNumber)
        .unwrap_err();
    assert!(matches!(err, Error::InvalidArgument { .. }), "{err}");
    assert!(
        PayloadPolicy::default()
            .try_allow_field("q", "a[0].b", Rule::CardNumber)
            .is_ok()
    );
    // `allow_field` ignores it: nothing is allowed.
    let policy = PayloadPolicy::default().allow_field("q", "a..b", Rule::CardNumber);
    assert!(check(&policy, "q", json!({ "a": { "b": "4242424242424242" } })).is_err());
}

#[test]
fn size_budget_rejects_by_default() {
    let policy = PayloadPolicy::default();
    let payload = mp(&json!({ "data": "x".repeat(DEFAULT_MAX_PAYLOAD_BYTES) }));
    match policy.check("emails", &payload) {
        Err(Error::PayloadTooLarge { queue, size, limit }) => {
            assert_eq!(queue, "emails");
            assert_eq!(size, payload.len());
            assert_eq!(limit, DEFAULT_MAX_PAYLOAD_BYTES);
        }
        other => panic!("expected PayloadTooLarge, got {other:?}"),
    }
    let at_limit = vec![0xc0; 1];
    assert!(
        PayloadPolicy::default()
            .max_bytes(1)
            .check("q", &at_limit)
            .is_ok()
    );
}

#[test]
fn size_budget_is_checked_before_decoding() {
    let policy = PayloadPolicy::default().max_bytes(8);
    assert!(matches!(
        policy.check("q", &[0xc1; 9]),
        Err(Error::PayloadTooLarge {
            size: 9,
            limit: 8,
            ..
        })
    ));
}

#[test]
fn size_budget_overrides() {
    let policy = PayloadPolicy::default()
        .max_bytes(128 * 1024)
        .queue_max_bytes("reports", 1 << 20)
        .queue_max_bytes("tiny", 16);
    assert_eq!(policy.max_bytes_for("emails"), 128 * 1024);
    assert_eq!(policy.max_bytes_for("reports"), 1 << 20);
    assert_eq!(policy.max_bytes_for("tiny"), 16);
    let big = mp(&json!({ "data": "x".repeat(200 * 1024) }));
    assert!(policy.check("reports", &big).is_ok());
    assert!(matches!(
        policy.check("emails", &big),
        Err(Error::PayloadTooLarge { limit: 131072, .. })
    ));
    let small = mp(&json!({ "data": "x".repeat(20) }));
    assert!(policy.check("emails", &small).is_ok());
    assert!(matches!(
        policy.check("tiny", &small),
        Err(Error::PayloadTooLarge { limit: 16, .. })
    ));
}

/// Counter increments seen: name, labels, amount.
type CounterLog = Arc<Mutex<Vec<(String, Vec<(String, String)>, u64)>>>;

/// A metrics recorder that remembers counter increments.
#[derive(Default)]
struct Counters(CounterLog);

struct CounterHandle {
    name: String,
    labels: Vec<(String, String)>,
    log: CounterLog,
}

impl metrics::CounterFn for CounterHandle {
    fn increment(&self, value: u64) {
        self.log
            .lock()
            .unwrap()
            .push((self.name.clone(), self.labels.clone(), value));
    }
    fn absolute(&self, _value: u64) {}
}

impl metrics::Recorder for Counters {
    fn describe_counter(
        &self,
        _: metrics::KeyName,
        _: Option<metrics::Unit>,
        _: metrics::SharedString,
    ) {
    }
    fn describe_gauge(
        &self,
        _: metrics::KeyName,
        _: Option<metrics::Unit>,
        _: metrics::SharedString,
    ) {
    }
    fn describe_histogram(
        &self,
        _: metrics::KeyName,
        _: Option<metrics::Unit>,
        _: metrics::SharedString,
    ) {
    }
    fn register_counter(&self, key: &metrics::Key, _: &metrics::Metadata<'_>) -> metrics::Counter {
        metrics::Counter::from_arc(Arc::new(CounterHandle {
            name: key.name().to_owned(),
            labels: key
                .labels()
                .map(|l| (l.key().to_owned(), l.value().to_owned()))
                .collect(),
            log: Arc::clone(&self.0),
        }))
    }
    fn register_gauge(&self, _: &metrics::Key, _: &metrics::Metadata<'_>) -> metrics::Gauge {
        metrics::Gauge::noop()
    }
    fn register_histogram(
        &self,
        _: &metrics::Key,
        _: &metrics::Metadata<'_>,
    ) -> metrics::Histogram {
        metrics::Histogram::noop()
    }
}

#[test]
fn size_budget_warn_mode_counts_and_accepts() {
    let policy = PayloadPolicy::default()
        .max_bytes(32)
        .queue_size_mode("reports", PolicyMode::Warn);
    assert_eq!(policy.size_mode_for("reports"), PolicyMode::Warn);
    assert_eq!(policy.size_mode_for("emails"), PolicyMode::Reject);
    let payload = mp(&json!({ "data": "x".repeat(100) }));
    let counters = Counters::default();
    let (warned, rejected) = metrics::with_local_recorder(&counters, || {
        (
            policy.check("reports", &payload),
            policy.check("emails", &payload),
        )
    });
    assert!(warned.is_ok());
    assert!(matches!(rejected, Err(Error::PayloadTooLarge { .. })));
    let log = counters.0.lock().unwrap().clone();
    assert_eq!(
        log,
        [(
            "sealq_payload_over_budget_total".to_owned(),
            vec![("queue".to_owned(), "reports".to_owned())],
            1
        )]
    );

    // Warn mode does not switch the scanner off.
    let warn_all = PayloadPolicy::default()
        .max_bytes(8)
        .size_mode(PolicyMode::Warn);
    let (rule, ..) = violation(check(&warn_all, "q", json!({ "n": "4242424242424242" })));
    assert_eq!(rule, "card_number");
}

#[test]
fn undecodable_payloads_are_codec_errors() {
    let policy = PayloadPolicy::default();
    let mut trailing = mp(&json!({ "a": 1 }));
    trailing.extend_from_slice(&mp(&json!("4242424242424242")));
    for payload in [&[][..], &[0xdc], &[0x92, 0x01], &[0xa5, b'a'], &trailing] {
        match policy.check("q", payload) {
            Err(Error::Codec { what, .. }) => assert_eq!(what, "payload"),
            other => panic!("expected a codec error, got {other:?}"),
        }
        assert!(policy.scan("q", payload).is_empty());
        assert!(policy.try_scan("q", payload).is_err());
    }
    // Deep nesting is refused by the decoder's depth limit, not the stack.
    let mut deep = vec![0x91; 100_000];
    deep.push(0xc0);
    assert!(matches!(
        PayloadPolicy::default()
            .max_bytes(1 << 20)
            .check("q", &deep),
        Err(Error::Codec { .. })
    ));
}

#[test]
fn strings_with_invalid_utf8_are_still_scanned() {
    // str8 header, then a card number and an invalid byte.
    let mut payload = vec![0xd9, 17];
    payload.extend_from_slice(b"4242424242424242\xff");
    let (rule, ..) = violation(PayloadPolicy::default().check("q", &payload));
    assert_eq!(rule, "card_number");
    // bin8 with the same bytes: binary is not scanned.
    payload[0] = 0xc4;
    assert!(PayloadPolicy::default().check("q", &payload).is_ok());
}

/// Arbitrary JSON-like values, with card- and secret-shaped strings mixed in.
fn arb_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(Value::from),
        ".*".prop_map(Value::from),
        "[0-9 -]{0,40}".prop_map(Value::from),
        "(eyJ[A-Za-z0-9_-]{0,20}\\.?){0,4}".prop_map(Value::from),
        "(-----BEGIN [A-Z ]{0,20}-----)?[A-Z0-9]{0,24}".prop_map(Value::from),
    ];
    leaf.prop_recursive(4, 64, 8, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..8).prop_map(Value::from),
            prop::collection::btree_map("[a-zA-Z_-]{0,12}", inner, 0..8)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

proptest! {
    #[test]
    fn random_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        let policy = PayloadPolicy::default();
        let _ = policy.check("q", &bytes);
        let _ = policy.scan("q", &bytes);
    }

    #[test]
    fn random_payloads_never_panic(value in arb_value()) {
        let policy = PayloadPolicy::default()
            .allow_field("q", "*[*].*", Rule::Jwt);
        let payload = mp(&value);
        let _ = policy.check("q", &payload);
        let findings = policy.scan("q", &payload);
        // check agrees with scan.
        prop_assert_eq!(policy.check("q", &payload).is_err(), !findings.is_empty());
    }

    #[test]
    fn random_strings_never_panic_and_never_leak(s in "\\PC{0,200}", card in "[0-9]{13,19}") {
        let policy = PayloadPolicy::default();
        let payload = mp(&json!({ "s": s, "t": format!("{s} {card} {s}") }));
        if let Err(err) = policy.check("q", &payload) {
            let shown = err.to_string();
            prop_assert!(!shown.contains(&card), "{}", shown);
        }
    }
}
