//! Maintenance: expired leases recovered, due tasks forwarded, completed tasks purged.

use super::{LEASE_MS, complete};
use crate::model::state::{ArchiveReason, TaskState};
use crate::store::broker::{AckResult, Forwarded, Outcome, Recovered};
use crate::testkit::fixtures::Ctx;

/// Expired leases go to Retry while attempts <= max_retries, then Archived.
pub async fn recover_expired_retries_then_archives(ctx: Ctx) {
    let mut t = ctx.task("rec");
    t.meta.max_retries = 1;
    let id = ctx.enqueue_ok(vec![t]).await[0];
    let fresh = ctx.enqueue_n("rec-other", 1).await[0];

    let l1 = ctx.lease_one("rec").await;
    assert_eq!(
        ctx.broker.recover_expired().await.unwrap(),
        Recovered::default(),
        "nothing expired yet"
    );
    ctx.advance(LEASE_MS + 1);
    assert_eq!(
        ctx.broker.recover_expired().await.unwrap(),
        Recovered {
            retried: 1,
            archived: 0
        }
    );
    let r = ctx.record(id).await;
    assert_eq!(r.state, TaskState::Retry);
    assert_eq!(r.attempts, 1);
    assert_eq!(r.lease_expires_at_ms, None);
    assert_eq!(ctx.ack1(&l1, complete(None)).await, AckResult::LeaseLost);

    let l2 = ctx.lease_one("rec").await;
    assert_eq!(l2.record.attempts, 2);
    ctx.advance(LEASE_MS + 1);
    assert_eq!(
        ctx.broker.recover_expired().await.unwrap(),
        Recovered {
            retried: 0,
            archived: 1
        }
    );
    let r = ctx.record(id).await;
    assert_eq!(r.state, TaskState::Archived);
    assert_eq!(r.archive_reason, Some(ArchiveReason::Exhausted));
    assert_eq!(r.finished_at_ms, Some(ctx.now()));
    assert_eq!(ctx.state(fresh).await, TaskState::Pending, "untouched");
}

/// forward_due moves due scheduled and retry tasks and reports the next due time.
pub async fn forward_due_moves_due_tasks(ctx: Ctx) {
    assert_eq!(
        ctx.broker.forward_due().await.unwrap(),
        Forwarded::default()
    );
    let now = ctx.now();
    let s1 = ctx.task_in("f", 1_000);
    let s2 = ctx.task_in("f", 3_000);
    let (s1_id, s2_id) = (s1.id, s2.id);
    ctx.enqueue_ok(vec![s1, s2]).await;
    let rid = ctx.enqueue_n("f2", 1).await[0];
    let l = ctx.lease_one("f2").await;
    ctx.ack1(
        &l,
        Outcome::Retry {
            at_ms: now + 2_000,
            error: None,
        },
    )
    .await;

    assert_eq!(
        ctx.broker.forward_due().await.unwrap(),
        Forwarded {
            moved: 0,
            next_due_ms: Some(now + 1_000)
        }
    );
    ctx.advance(2_000);
    assert_eq!(
        ctx.broker.forward_due().await.unwrap(),
        Forwarded {
            moved: 2,
            next_due_ms: Some(now + 3_000)
        }
    );
    assert_eq!(ctx.state(s1_id).await, TaskState::Pending);
    assert_eq!(ctx.state(rid).await, TaskState::Pending);
    assert_eq!(ctx.state(s2_id).await, TaskState::Scheduled);
    ctx.advance(1_000);
    assert_eq!(
        ctx.broker.forward_due().await.unwrap(),
        Forwarded {
            moved: 1,
            next_due_ms: None
        }
    );
    assert_eq!(ctx.state(s2_id).await, TaskState::Pending);
}

/// purge_completed removes completed tasks past retention, nothing else.
pub async fn purge_completed_respects_retention(ctx: Ctx) {
    let mut short = ctx.task("p");
    short.meta.retention_ms = 1_000;
    let mut long = ctx.task("p");
    long.meta.retention_ms = 10_000;
    let (short_id, long_id) = (short.id, long.id);
    ctx.enqueue_ok(vec![short, long]).await;
    let pending = ctx.enqueue_n("p-pending", 1).await[0];
    for l in ctx.lease(&["p"], 2).await {
        ctx.ack1(&l, complete(Some(b"r"))).await;
    }
    let archived = ctx.enqueue_n("p-arch", 1).await[0];
    let l = ctx.lease_one("p-arch").await;
    ctx.ack1(
        &l,
        Outcome::Archive {
            reason: ArchiveReason::Decode,
            error: None,
        },
    )
    .await;

    assert_eq!(ctx.broker.purge_completed().await.unwrap(), 0);
    ctx.advance(999);
    assert_eq!(ctx.broker.purge_completed().await.unwrap(), 0);
    ctx.advance(1);
    assert_eq!(ctx.broker.purge_completed().await.unwrap(), 1);
    assert!(ctx.broker.get(short_id).await.unwrap().is_none());
    assert_eq!(ctx.state(long_id).await, TaskState::Completed);
    ctx.advance(1_000_000);
    assert_eq!(ctx.broker.purge_completed().await.unwrap(), 1);
    assert!(ctx.broker.get(long_id).await.unwrap().is_none());
    assert_eq!(ctx.state(pending).await, TaskState::Pending);
    assert_eq!(ctx.state(archived).await, TaskState::Archived);
}
