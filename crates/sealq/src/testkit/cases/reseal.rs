//! Re-sealing: compare-and-swap of sealed bytes (`swap_sealed`).

use super::complete;
use crate::model::id::TaskId;
use crate::model::state::TaskState;
use crate::store::broker::{AckResult, Outcome};
use crate::testkit::fixtures::Ctx;

/// Sealed bytes are swapped only where they still hold what was read; the
/// rest of the task (state, lease, attempts, times) stays as it was, and a
/// held lease still acks.
pub async fn swap_sealed_compare_and_swap(ctx: Ctx) {
    use crate::store::broker::{SealedPart, SealedSwap};
    // ids[1] completes with a result; ids[2] fails once (retry, with an
    // error) and is then leased again and held; ids[0] stays pending.
    let first = ctx.enqueue_n("sw", 2).await;
    let leased = ctx.lease(&["sw"], 2).await;
    let by_id = |id: TaskId| leased.iter().find(|l| l.record.id == id).unwrap().clone();
    let (done, failing) = (by_id(first[0]), by_id(first[1]));
    assert_eq!(
        ctx.ack1(&done, complete(Some(b"old-result"))).await,
        AckResult::Applied
    );
    let res = ctx
        .ack1(
            &failing,
            Outcome::Retry {
                at_ms: ctx.now(),
                error: Some(b"old-error".to_vec()),
            },
        )
        .await;
    assert_eq!(res, AckResult::Applied);
    let held = ctx.lease_one("sw").await;
    assert_eq!(held.record.id, first[1]);
    let ids = [ctx.enqueue_n("sw", 1).await[0], first[0], first[1]];
    let pending = ctx.record(ids[0]).await;
    ctx.advance(7);
    let before_held = ctx.record(ids[2]).await;
    let swap = |id: TaskId, part, expected: &[u8], replacement: &[u8]| SealedSwap {
        task_id: id,
        queue: "sw".into(),
        part,
        expected: expected.to_vec(),
        replacement: replacement.to_vec(),
    };
    let new_env = vec![0xA5u8; pending.envelope.len() + 3];
    let applied = ctx
        .broker
        .swap_sealed(&[
            swap(ids[0], SealedPart::Payload, &pending.envelope, &new_env),
            swap(ids[1], SealedPart::Result, b"old-result", b"new-result"),
            swap(ids[2], SealedPart::Error, b"old-error", b"new-error"),
            // Stale expectations and unknown tasks change nothing.
            swap(ids[1], SealedPart::Payload, b"not what is stored", b"x"),
            swap(ids[0], SealedPart::Result, b"none stored", b"x"),
            swap(TaskId::new(), SealedPart::Payload, b"a", b"b"),
            SealedSwap {
                queue: "elsewhere".into(),
                ..swap(ids[1], SealedPart::Result, b"new-result", b"x")
            },
        ])
        .await
        .unwrap();
    assert_eq!(applied, vec![true, true, true, false, false, false, false]);
    let p = ctx.record(ids[0]).await;
    assert_eq!(p.envelope, new_env);
    assert_eq!(p.state, TaskState::Pending);
    assert_eq!(p.result, None);
    assert_eq!(p.meta, pending.meta);
    let d = ctx.record(ids[1]).await;
    assert_eq!(d.result.as_deref(), Some(&b"new-result"[..]));
    assert_eq!(d.state, TaskState::Completed);
    assert_eq!(d.envelope, done.record.envelope, "other parts untouched");
    let f = ctx.record(ids[2]).await;
    assert_eq!(f.last_error.as_deref(), Some(&b"new-error"[..]));
    assert_eq!(f.state, TaskState::Active);
    assert_eq!(f.attempts, before_held.attempts);
    assert_eq!(f.lease_expires_at_ms, before_held.lease_expires_at_ms);
    assert_eq!(f.updated_at_ms, before_held.updated_at_ms);
    assert_eq!(ctx.ack1(&held, complete(None)).await, AckResult::Applied);
    assert!(ctx.broker.swap_sealed(&[]).await.unwrap().is_empty());
}
