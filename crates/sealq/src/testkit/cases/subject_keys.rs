//! The subject key store ([`crate::subject_keys::SubjectKeyStore`]) each
//! broker provides through [`crate::Broker::subject_key_store`]: one wrapped
//! key per subject, first writer wins, destroy for good, epoch on every
//! destroy, list and compare-and-swap for re-wrapping.
//!
//! The store only keeps bytes; the cases use arbitrary ones (wrapping is
//! [`crate::subject_keys::SubjectKeys`]' business).

use std::sync::Arc;

use crate::store::subject_keys::SubjectKeyStore;
use crate::testkit::fixtures::{Ctx, subject};

/// The broker's subject key store, asserting it has one.
fn store(ctx: &Ctx) -> Arc<dyn SubjectKeyStore> {
    ctx.broker
        .subject_key_store()
        .expect("the broker provides a subject key store (Broker::subject_key_store)")
}

/// `put_if_absent` stores the first key and answers every later call with
/// it; `get` finds it, and nothing for another subject.
pub async fn subject_key_put_if_absent_keeps_the_first(ctx: Ctx) {
    let keys = store(&ctx);
    let (a, b) = (subject(0xA1), subject(0xB2));
    assert_eq!(keys.get(&a).await.unwrap(), None);
    let first = vec![1u8, 0, 255, 7, 42];
    assert_eq!(keys.put_if_absent(&a, first.clone()).await.unwrap(), first);
    assert_eq!(
        keys.put_if_absent(&a, b"second writer".to_vec())
            .await
            .unwrap(),
        first,
        "a later writer gets the stored key, not its own"
    );
    assert_eq!(keys.get(&a).await.unwrap(), Some(first.clone()));
    assert_eq!(
        keys.get(&b).await.unwrap(),
        None,
        "subjects are independent"
    );
    // Many concurrent writers agree on one key.
    let c = subject(0xC3);
    let writers: Vec<_> = (0..8u8)
        .map(|i| {
            let keys = keys.clone();
            tokio::spawn(async move { keys.put_if_absent(&c, vec![i; 16]).await.unwrap() })
        })
        .collect();
    let mut got = Vec::new();
    for w in writers {
        got.push(w.await.expect("writer"));
    }
    let stored = keys.get(&c).await.unwrap().expect("stored");
    assert!(
        got.iter().all(|k| *k == stored),
        "writers disagree: {got:?}"
    );
}

/// `get_many` and `put_many_if_absent` answer in the order asked, keep
/// existing keys and agree with the one-subject calls.
pub async fn subject_key_batches_agree_with_single_calls(ctx: Ctx) {
    let keys = store(&ctx);
    let (a, b, c) = (subject(1), subject(2), subject(3));
    keys.put_if_absent(&b, b"b-old".to_vec()).await.unwrap();
    assert_eq!(
        keys.get_many(&[a, b, c]).await.unwrap(),
        vec![None, Some(b"b-old".to_vec()), None]
    );
    assert!(keys.get_many(&[]).await.unwrap().is_empty());
    let stored = keys
        .put_many_if_absent(vec![
            (a, b"a-new".to_vec()),
            (b, b"b-new".to_vec()),
            (c, b"c-new".to_vec()),
        ])
        .await
        .unwrap();
    assert_eq!(
        stored,
        vec![b"a-new".to_vec(), b"b-old".to_vec(), b"c-new".to_vec()],
        "an existing key is kept and returned"
    );
    assert!(keys.put_many_if_absent(vec![]).await.unwrap().is_empty());
    for (tag, want) in [(a, &b"a-new"[..]), (b, b"b-old"), (c, b"c-new")] {
        assert_eq!(keys.get(&tag).await.unwrap().as_deref(), Some(want));
    }
    assert_eq!(
        keys.get_many(&[c, a]).await.unwrap(),
        vec![Some(b"c-new".to_vec()), Some(b"a-new".to_vec())]
    );
}

/// `destroy` removes the key for good (`true` once, then `false`), leaves
/// other subjects alone, and bumps the erasure epoch every time; a later
/// put stores a new key.
pub async fn subject_key_destroy_bumps_the_epoch(ctx: Ctx) {
    let keys = store(&ctx);
    let (a, b) = (subject(0x11), subject(0x22));
    keys.put_if_absent(&a, b"a-key".to_vec()).await.unwrap();
    keys.put_if_absent(&b, b"b-key".to_vec()).await.unwrap();
    let e0 = keys.epoch().await.unwrap();
    assert_eq!(keys.epoch().await.unwrap(), e0, "reading does not bump");
    assert!(keys.destroy(&a).await.unwrap(), "a key existed");
    let e1 = keys.epoch().await.unwrap();
    assert!(e1 > e0, "destroy bumps the epoch ({e0} -> {e1})");
    assert_eq!(keys.get(&a).await.unwrap(), None);
    assert_eq!(keys.get_many(&[a]).await.unwrap(), vec![None]);
    assert_eq!(keys.get(&b).await.unwrap().as_deref(), Some(&b"b-key"[..]));
    assert!(!keys.destroy(&a).await.unwrap(), "no key any more");
    let e2 = keys.epoch().await.unwrap();
    assert!(e2 > e1, "every destroy bumps the epoch ({e1} -> {e2})");
    // A new key for the erased subject is a new key.
    assert_eq!(
        keys.put_if_absent(&a, b"a-fresh".to_vec()).await.unwrap(),
        b"a-fresh".to_vec()
    );
    // The epoch is shared by every handle on the store.
    let again = ctx.broker.subject_key_store().expect("store");
    assert_eq!(again.epoch().await.unwrap(), e2);
}

/// `list` returns every stored key with its subject; `replace` swaps a key
/// only while it still holds what was read, and never resurrects a
/// destroyed one.
pub async fn subject_key_list_and_replace(ctx: Ctx) {
    let keys = store(&ctx);
    assert!(
        keys.list().await.unwrap().is_empty(),
        "a fresh store is empty"
    );
    let tags = [subject(5), subject(6), subject(7)];
    for (i, t) in tags.iter().enumerate() {
        keys.put_if_absent(t, vec![i as u8; 3]).await.unwrap();
    }
    let mut listed = keys.list().await.unwrap();
    listed.sort_by_key(|(t, _)| t.0);
    let want: Vec<_> = tags
        .iter()
        .enumerate()
        .map(|(i, t)| (*t, vec![i as u8; 3]))
        .collect();
    assert_eq!(listed, want);

    let t = tags[0];
    assert!(
        !keys
            .replace(&t, b"not stored", b"x".to_vec())
            .await
            .unwrap(),
        "a stale expectation replaces nothing"
    );
    assert_eq!(keys.get(&t).await.unwrap(), Some(vec![0; 3]));
    assert!(
        keys.replace(&t, &[0; 3], b"rewrapped".to_vec())
            .await
            .unwrap()
    );
    assert_eq!(
        keys.get(&t).await.unwrap().as_deref(),
        Some(&b"rewrapped"[..])
    );
    assert!(
        !keys.replace(&t, &[0; 3], b"y".to_vec()).await.unwrap(),
        "the old bytes are gone"
    );
    // Destroyed: replace never brings it back.
    assert!(keys.destroy(&tags[1]).await.unwrap());
    assert!(
        !keys
            .replace(&tags[1], &[1; 3], b"z".to_vec())
            .await
            .unwrap()
    );
    assert_eq!(keys.get(&tags[1]).await.unwrap(), None);
    // Never stored: nothing to replace.
    assert!(
        !keys
            .replace(&subject(99), b"", b"w".to_vec())
            .await
            .unwrap()
    );
    assert_eq!(keys.get(&subject(99)).await.unwrap(), None);
    let mut listed = keys.list().await.unwrap();
    listed.sort_by_key(|(t, _)| t.0);
    assert_eq!(
        listed,
        vec![(tags[0], b"rewrapped".to_vec()), (tags[2], vec![2; 3])]
    );
}
