//! The check values of the keyring in use (`Broker::key_checks`,
//! `Broker::record_key_checks`), and the refusal they allow before any task
//! exists (finding 7 of the security review).

use crate::error::Error;
use crate::keyring_check::stored::{RecordOptions, check_recorded_keys};
use crate::model::key_check::KeyCheck;
use crate::seal::keyring::Keyring;
use crate::testkit::fixtures::Ctx;

fn check(id: &str, byte: u8) -> KeyCheck {
    KeyCheck {
        key_id: id.to_owned(),
        value: [byte; 16],
    }
}

/// Check values are kept put-if-absent per key id, read back in key id
/// order; recording nothing is harmless.
pub async fn key_checks_are_put_if_absent_per_key_id(ctx: Ctx) {
    let b = &ctx.broker;
    assert_eq!(
        b.key_checks().await.unwrap(),
        Some(Vec::new()),
        "a new broker"
    );
    assert!(b.record_key_checks(&[check("k-b", 1)]).await.unwrap());
    assert!(
        b.record_key_checks(&[check("k-b", 2), check("k-a", 3)])
            .await
            .unwrap()
    );
    assert!(b.record_key_checks(&[]).await.unwrap());
    assert_eq!(
        b.key_checks().await.unwrap(),
        Some(vec![check("k-a", 3), check("k-b", 1)]),
        "the first value recorded for an id is kept"
    );
}

/// Finding 7: once a keyring's check values are recorded, another keyring
/// is refused with no task waiting (naming both sides), a different key
/// under the same id is refused even when accepted as new, the right
/// keyring (and a rotated one) starts, and an operator keyring is neither
/// refused nor recorded.
pub async fn finding_7_recorded_key_checks_refuse_a_wrong_keyring_with_no_task_waiting(ctx: Ctx) {
    let b = &*ctx.broker;
    let record = RecordOptions {
        accept_new_keyring: false,
        record: true,
    };
    let mut a = Keyring::generate();
    check_recorded_keys(b, &a, record).await.unwrap();
    assert_eq!(b.key_checks().await.unwrap(), Some(a.key_checks()));
    assert!(b.stats().await.unwrap().is_empty(), "no task anywhere");

    let other = Keyring::generate();
    match check_recorded_keys(b, &other, record).await {
        Err(Error::Keyring(m)) => {
            assert!(m.contains(a.primary_key_id()), "{m}");
            assert!(m.contains(other.primary_key_id()), "{m}");
            assert!(m.contains("--accept-new-keyring"), "{m}");
        }
        r => panic!("another keyring was not refused: {r:?}"),
    }
    // Same id, another secret.
    let text = a.to_toml_secret();
    let line = text.lines().find(|l| l.starts_with("secret")).unwrap();
    let twin = Keyring::from_toml(&text.replace(
        line,
        "secret = \"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\"",
    ))
    .unwrap();
    let accept = RecordOptions {
        accept_new_keyring: true,
        record: true,
    };
    match check_recorded_keys(b, &twin, accept).await {
        Err(Error::Keyring(m)) => assert!(m.contains("same id"), "{m}"),
        r => panic!("a different key under the same id was accepted: {r:?}"),
    }
    assert_eq!(
        b.key_checks().await.unwrap(),
        Some(a.key_checks()),
        "refusals record nothing"
    );
    // The right keyring, then after a rotation (its new key is recorded).
    check_recorded_keys(b, &a, record).await.unwrap();
    a.rotate();
    check_recorded_keys(b, &a, record).await.unwrap();
    assert_eq!(b.key_checks().await.unwrap().unwrap().len(), 2);
    // An operator keyring holds no sealing key: not refused, records nothing.
    let op = other.operator_keyring().unwrap();
    check_recorded_keys(b, &op, record).await.unwrap();
    assert_eq!(b.key_checks().await.unwrap().unwrap().len(), 2);
    // A deliberate new deployment is accepted and recorded.
    check_recorded_keys(b, &other, accept).await.unwrap();
    assert_eq!(b.key_checks().await.unwrap().unwrap().len(), 3);
}
