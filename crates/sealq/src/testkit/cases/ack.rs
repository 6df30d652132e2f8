//! Acks: what each outcome stores, and that only the current lease holder's ack counts.

use super::{LEASE_MS, complete};
use crate::model::id::TaskId;
use crate::model::state::{ArchiveReason, TaskState};
use crate::store::broker::{Ack, AckResult, Lease, Outcome, Recovered};
use crate::testkit::fixtures::Ctx;

/// Complete stores the result and sets Completed.
pub async fn ack_complete_keeps_result(ctx: Ctx) {
    let id = ctx.enqueue_n("c", 1).await[0];
    let l = ctx.lease_one("c").await;
    ctx.advance(42);
    let res = ctx.ack1(&l, complete(Some(b"sealed-result\0\xff"))).await;
    assert_eq!(res, AckResult::Applied);
    let r = ctx.record(id).await;
    assert_eq!(r.state, TaskState::Completed);
    assert_eq!(r.result.as_deref(), Some(&b"sealed-result\0\xff"[..]));
    assert_eq!(r.finished_at_ms, Some(ctx.now()));
    assert_eq!(r.updated_at_ms, ctx.now());
    assert_eq!(r.lease_expires_at_ms, None);
    assert_eq!(r.attempts, 1);
    // A second ack with the same lease is stale.
    assert_eq!(ctx.ack1(&l, complete(None)).await, AckResult::LeaseLost);
    assert!(ctx.lease(&["c"], 10).await.is_empty());
}

/// Retry stores the error, waits for run_at, then is dequeued again.
pub async fn ack_retry_waits_for_run_at(ctx: Ctx) {
    let id = ctx.enqueue_n("r", 1).await[0];
    let l = ctx.lease_one("r").await;
    let at = ctx.now() + 5_000;
    let res = ctx
        .ack1(
            &l,
            Outcome::Retry {
                at_ms: at,
                error: Some(b"sealed-error".to_vec()),
            },
        )
        .await;
    assert_eq!(res, AckResult::Applied);
    let r = ctx.record(id).await;
    assert_eq!(r.state, TaskState::Retry);
    assert_eq!(r.run_at_ms, at);
    assert_eq!(r.last_error.as_deref(), Some(&b"sealed-error"[..]));
    assert_eq!(r.lease_expires_at_ms, None);

    assert!(ctx.lease(&["r"], 1).await.is_empty(), "not before run_at");
    ctx.advance(4_999);
    assert!(ctx.lease(&["r"], 1).await.is_empty(), "not before run_at");
    ctx.advance(1);
    let again = ctx.lease_one("r").await;
    assert_eq!(again.record.id, id);
    assert_eq!(again.record.attempts, 2);
    assert_ne!(again.lease.token, l.lease.token, "a new lease, a new token");
    assert_eq!(ctx.ack1(&l, complete(None)).await, AckResult::LeaseLost);
}

/// Archive stores the reason and error and sets Archived.
pub async fn ack_archive_with_reason(ctx: Ctx) {
    let ids = ctx.enqueue_n("ar", 2).await;
    let ls = ctx.lease(&["ar"], 2).await;
    ctx.advance(7);
    let acks = vec![
        Ack {
            lease: ls[0].lease,
            outcome: Outcome::Archive {
                reason: ArchiveReason::Integrity,
                error: Some(b"bad-tag".to_vec()),
            },
        },
        Ack {
            lease: ls[1].lease,
            outcome: Outcome::Archive {
                reason: ArchiveReason::Other("custom reason".into()),
                error: None,
            },
        },
    ];
    let res = ctx.broker.ack(acks).await.unwrap();
    assert_eq!(res, vec![AckResult::Applied, AckResult::Applied]);
    let r0 = ctx.record(ls[0].record.id).await;
    assert_eq!(r0.state, TaskState::Archived);
    assert_eq!(r0.archive_reason, Some(ArchiveReason::Integrity));
    assert_eq!(r0.last_error.as_deref(), Some(&b"bad-tag"[..]));
    assert_eq!(r0.finished_at_ms, Some(ctx.now()));
    let r1 = ctx.record(ls[1].record.id).await;
    assert_eq!(
        r1.archive_reason,
        Some(ArchiveReason::Other("custom reason".into()))
    );
    assert!(ids.contains(&r1.id));
    assert!(ctx.lease(&["ar"], 10).await.is_empty());
}

/// Requeue puts the task back to Pending without counting the attempt.
pub async fn ack_requeue_does_not_count_attempt(ctx: Ctx) {
    let id = ctx.enqueue_n("rq", 1).await[0];
    let l = ctx.lease_one("rq").await;
    assert_eq!(l.record.attempts, 1);
    assert_eq!(ctx.ack1(&l, Outcome::Requeue).await, AckResult::Applied);
    let r = ctx.record(id).await;
    assert_eq!(r.state, TaskState::Pending);
    assert_eq!(r.attempts, 0, "a requeued attempt is not counted");
    assert_eq!(r.lease_expires_at_ms, None);
    let again = ctx.lease_one("rq").await;
    assert_eq!(again.record.attempts, 1);
}

/// An ack after the lease expired, was recovered and re-leased changes nothing.
pub async fn stale_ack_is_lease_lost(ctx: Ctx) {
    let id = ctx.enqueue_n("st", 1).await[0];
    let first = ctx.lease_one("st").await;
    ctx.advance(LEASE_MS + 1);
    let rec = ctx.broker.recover_expired().await.unwrap();
    assert_eq!(
        rec,
        Recovered {
            retried: 1,
            archived: 0
        }
    );
    let second = ctx.lease_one("st").await;
    assert_eq!(second.record.id, id);
    assert_eq!(second.record.attempts, 2);
    assert_ne!(second.lease.token, first.lease.token);

    for outcome in [
        complete(Some(b"stale")),
        Outcome::Retry {
            at_ms: ctx.now(),
            error: None,
        },
        Outcome::Archive {
            reason: ArchiveReason::Exhausted,
            error: None,
        },
        Outcome::Requeue,
    ] {
        assert_eq!(ctx.ack1(&first, outcome).await, AckResult::LeaseLost);
    }
    let r = ctx.record(id).await;
    assert_eq!(r.state, TaskState::Active);
    assert_eq!(r.attempts, 2);
    assert_eq!(r.result, None);
    assert_eq!(r.lease_expires_at_ms, Some(second.lease.expires_at_ms));
    // The current holder still acks fine.
    assert_eq!(ctx.ack1(&second, complete(None)).await, AckResult::Applied);
}

/// Acking a task that was deleted reports LeaseLost.
pub async fn ack_of_deleted_task_is_lease_lost(ctx: Ctx) {
    let id = ctx.enqueue_n("del", 1).await[0];
    let l = ctx.lease_one("del").await;
    assert_eq!(ctx.broker.delete(&[id]).await.unwrap(), 1);
    assert_eq!(ctx.ack1(&l, complete(None)).await, AckResult::LeaseLost);
    assert!(ctx.broker.get(id).await.unwrap().is_none());
    let forged = Lease {
        task_id: TaskId::new(),
        token: 1,
        expires_at_ms: ctx.now() + 1,
    };
    let res = ctx
        .broker
        .ack(vec![Ack {
            lease: forged,
            outcome: Outcome::Requeue,
        }])
        .await
        .unwrap();
    assert_eq!(res, vec![AckResult::LeaseLost]);
}

/// One ack call with 500 mixed outcomes applies all of them.
pub async fn batch_ack_many(ctx: Ctx) {
    ctx.enqueue_n("ba", 500).await;
    let ls = ctx.lease(&["ba"], 500).await;
    assert_eq!(ls.len(), 500);
    let acks: Vec<Ack> = ls
        .iter()
        .enumerate()
        .map(|(i, l)| Ack {
            lease: l.lease,
            outcome: match i % 4 {
                0 => complete(Some(&[i as u8])),
                1 => Outcome::Retry {
                    at_ms: ctx.now() + 1_000,
                    error: None,
                },
                2 => Outcome::Archive {
                    reason: ArchiveReason::Cancelled,
                    error: None,
                },
                _ => Outcome::Requeue,
            },
        })
        .collect();
    let mut acks_with_stale = acks.clone();
    // A stale duplicate at the end must not disturb the rest.
    acks_with_stale.push(Ack {
        lease: Lease {
            token: ls[0].lease.token.wrapping_add(1),
            ..ls[0].lease
        },
        outcome: Outcome::Requeue,
    });
    let res = ctx.broker.ack(acks_with_stale).await.unwrap();
    assert_eq!(res.len(), 501);
    assert!(res[..500].iter().all(|r| *r == AckResult::Applied));
    assert_eq!(res[500], AckResult::LeaseLost);
    let stats = ctx.broker.stats().await.unwrap();
    assert_eq!(stats.len(), 1);
    let s = &stats[0];
    assert_eq!(
        (s.completed, s.retry, s.archived, s.pending, s.active),
        (125, 125, 125, 125, 0)
    );
    let r = ctx.record(ls[4].record.id).await;
    assert_eq!(r.result.as_deref(), Some(&[4u8][..]));
}
