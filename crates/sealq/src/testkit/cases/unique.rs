//! Unique keys: who holds a key, for how long, and when it is free again.

use super::complete;
use crate::model::state::{ArchiveReason, TaskState};
use crate::store::broker::{EnqueueResult, Outcome};
use crate::testkit::fixtures::Ctx;

/// A live holder makes duplicates; the key is free again once its TTL passed.
pub async fn unique_key_duplicate_until_ttl(ctx: Ctx) {
    let mut a = ctx.task("u");
    a.unique = Some(("k".into(), 10_000));
    let a_id = a.id;
    ctx.enqueue_ok(vec![a]).await;

    let mut b = ctx.task("u");
    b.unique = Some(("k".into(), 10_000));
    let res = ctx.broker.enqueue(vec![b.clone()]).await.unwrap();
    assert_eq!(res, vec![EnqueueResult::Duplicate { existing: a_id }]);
    // Another key is independent.
    let mut other = ctx.task("u");
    other.unique = Some(("k2".into(), 10_000));
    ctx.enqueue_ok(vec![other]).await;

    ctx.advance(9_999);
    let mut b2 = ctx.task("u");
    b2.unique = Some(("k".into(), 10_000));
    let res = ctx.broker.enqueue(vec![b2]).await.unwrap();
    assert_eq!(res, vec![EnqueueResult::Duplicate { existing: a_id }]);

    ctx.advance(1);
    ctx.enqueue_ok(vec![b.clone()]).await;
    assert_eq!(
        ctx.state(a_id).await,
        TaskState::Pending,
        "the old holder stays"
    );
    let mut c = ctx.task("u");
    c.unique = Some(("k".into(), 10_000));
    let res = ctx.broker.enqueue(vec![c]).await.unwrap();
    assert_eq!(res, vec![EnqueueResult::Duplicate { existing: b.id }]);
}

/// The key is free again once its holder completed, was archived or deleted.
pub async fn unique_key_released_when_holder_finishes(ctx: Ctx) {
    let with_key = |ctx: &Ctx| {
        let mut t = ctx.task("uk");
        t.unique = Some(("held".into(), 3_600_000));
        t
    };
    // Completed.
    let h1 = with_key(&ctx);
    ctx.enqueue_ok(vec![h1]).await;
    let l = ctx.lease_one("uk").await;
    let dup = ctx.broker.enqueue(vec![with_key(&ctx)]).await.unwrap();
    assert!(
        matches!(dup[0], EnqueueResult::Duplicate { .. }),
        "active holds the key"
    );
    ctx.ack1(&l, complete(None)).await;
    // Archived.
    ctx.enqueue_ok(vec![with_key(&ctx)]).await;
    let l = ctx.lease_one("uk").await;
    ctx.ack1(
        &l,
        Outcome::Archive {
            reason: ArchiveReason::SkipRetry,
            error: None,
        },
    )
    .await;
    // Retry still holds it.
    let h3 = with_key(&ctx);
    let h3_id = h3.id;
    ctx.enqueue_ok(vec![h3]).await;
    let l = ctx.lease_one("uk").await;
    ctx.ack1(
        &l,
        Outcome::Retry {
            at_ms: ctx.now() + 1_000,
            error: None,
        },
    )
    .await;
    let dup = ctx.broker.enqueue(vec![with_key(&ctx)]).await.unwrap();
    assert_eq!(dup, vec![EnqueueResult::Duplicate { existing: h3_id }]);
    // Deleted.
    assert_eq!(ctx.broker.delete(&[h3_id]).await.unwrap(), 1);
    ctx.enqueue_ok(vec![with_key(&ctx)]).await;
}
