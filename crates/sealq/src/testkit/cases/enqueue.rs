//! Enqueue: what a batch stores, what it answers, and which ids it refuses.

use super::complete;
use crate::model::id::TaskId;
use crate::model::state::TaskState;
use crate::store::broker::EnqueueResult;
use crate::testkit::fixtures::{Ctx, LEASE, subject, task_at};

/// Every field of a stored task comes back exactly, envelope bytes included.
pub async fn enqueue_get_roundtrip(ctx: Ctx) {
    let mut t = ctx.task("roundtrip");
    t.meta.subject_tag = Some(subject(7));
    t.meta.not_after_ms = None;
    t.meta.backoff = crate::model::backoff::Backoff::Exponential {
        base_ms: 250,
        max_ms: 10_000,
        jitter: 0.25,
    };
    t.envelope = (0..=255u8).cycle().take(4099).collect();
    let expected = t.clone();
    ctx.enqueue_ok(vec![t]).await;

    let r = ctx.record(expected.id).await;
    assert_eq!(r.id, expected.id);
    assert_eq!(r.queue, "roundtrip");
    assert_eq!(r.kind, expected.kind);
    assert_eq!(
        r.envelope, expected.envelope,
        "envelope bytes must be kept exactly"
    );
    assert_eq!(r.meta, expected.meta, "meta must round-trip");
    assert_eq!(r.state, TaskState::Pending);
    assert_eq!(r.attempts, 0);
    assert_eq!(r.run_at_ms, expected.run_at_ms);
    assert_eq!(r.last_error, None);
    assert_eq!(r.result, None);
    assert_eq!(r.archive_reason, None);
    assert_eq!(r.lease_expires_at_ms, None);
    assert_eq!(r.finished_at_ms, None);
    assert_eq!(r.updated_at_ms, ctx.now());

    // The other fixture meta (all options set) round-trips too.
    let t2 = ctx.task("roundtrip");
    let m2 = t2.meta.clone();
    let id2 = ctx.enqueue_ok(vec![t2]).await[0];
    assert_eq!(ctx.record(id2).await.meta, m2);

    assert!(ctx.broker.get(TaskId::new()).await.unwrap().is_none());
    assert!(!ctx.broker.describe().is_empty());
}

/// A batch reports one result per task, in the order given.
pub async fn enqueue_batch_results_in_order(ctx: Ctx) {
    let existing = ctx.task("batch");
    let existing_id = existing.id;
    ctx.enqueue_ok(vec![existing.clone()]).await;

    let a = ctx.task("batch");
    let mut u1 = ctx.task("batch");
    u1.unique = Some(("batch-key".into(), 60_000));
    let mut u2 = ctx.task("batch");
    u2.unique = Some(("batch-key".into(), 60_000));
    let b = ctx.task("batch");
    let (a_id, u1_id, u2_id, b_id) = (a.id, u1.id, u2.id, b.id);
    let res = ctx
        .broker
        .enqueue(vec![a, existing, u1, u2, b])
        .await
        .unwrap();
    assert_eq!(
        res,
        vec![
            EnqueueResult::Enqueued,
            EnqueueResult::IdExists,
            EnqueueResult::Enqueued,
            EnqueueResult::Duplicate { existing: u1_id },
            EnqueueResult::Enqueued,
        ]
    );
    for id in [a_id, u1_id, b_id, existing_id] {
        assert_eq!(ctx.state(id).await, TaskState::Pending);
    }
    assert!(
        ctx.broker.get(u2_id).await.unwrap().is_none(),
        "a duplicate is not stored"
    );
}

/// A batch without unique keys (the brokers' fast path) that holds a
/// stored id and one id twice: every other task is stored, the stored id
/// and the repeat are `IdExists`, and the first of the two with one id is
/// the one kept (its envelope, not the repeat's).
pub async fn enqueue_batch_with_a_stored_id_and_a_repeated_id(ctx: Ctx) {
    let existing = ctx.task("batch-ids");
    ctx.enqueue_ok(vec![existing.clone()]).await;
    let a = ctx.task("batch-ids");
    let mut again = ctx.task("batch-ids");
    again.id = a.id;
    again.envelope = vec![0x5a; again.envelope.len()];
    let b = ctx.task("batch-ids");
    let many: Vec<_> = (0..40).map(|_| ctx.task("batch-ids")).collect();
    let mut batch = vec![a.clone(), existing.clone(), b.clone(), again];
    batch.extend(many.iter().cloned());
    let res = ctx.broker.enqueue(batch).await.unwrap();
    let mut want = vec![
        EnqueueResult::Enqueued,
        EnqueueResult::IdExists,
        EnqueueResult::Enqueued,
        EnqueueResult::IdExists,
    ];
    want.extend(many.iter().map(|_| EnqueueResult::Enqueued));
    assert_eq!(res, want);
    let kept = ctx.broker.get(a.id).await.unwrap().expect("stored");
    assert_eq!(kept.envelope, a.envelope, "the first of one id is kept");
    for t in [&existing, &b].into_iter().chain(many.iter()) {
        let rec = ctx.broker.get(t.id).await.unwrap().expect("stored");
        assert_eq!(rec.envelope, t.envelope);
        assert_eq!(rec.state, TaskState::Pending);
    }
    let counts = ctx.broker.stats().await.unwrap();
    let pending: u64 = counts
        .iter()
        .filter(|s| s.queue == "batch-ids")
        .map(|s| s.pending)
        .sum();
    assert_eq!(pending, 43, "each task stored once");
}

/// Empty batches are answered with empty results, not errors.
pub async fn enqueue_empty_batches(ctx: Ctx) {
    assert!(ctx.broker.enqueue(vec![]).await.unwrap().is_empty());
    assert!(ctx.broker.ack(vec![]).await.unwrap().is_empty());
    assert!(
        ctx.broker
            .extend_leases(&[], LEASE)
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(ctx.broker.delete(&[]).await.unwrap(), 0);
    assert_eq!(ctx.broker.rerun(&[]).await.unwrap(), 0);
    assert!(ctx.lease(&["nothing"], 10).await.is_empty());
    assert!(ctx.lease(&[], 10).await.is_empty());
    ctx.enqueue_n("q", 2).await;
    assert!(ctx.lease(&["q"], 0).await.is_empty(), "max 0 takes nothing");
}

/// run_at at or before now is Pending; later is Scheduled.
pub async fn pending_vs_scheduled(ctx: Ctx) {
    let now = ctx.now();
    let past = task_at("s", now - 1_000, now);
    let exact = task_at("s", now, now);
    let future = task_at("s", now + 1, now);
    let ids = ctx.enqueue_ok(vec![past, exact, future]).await;
    assert_eq!(ctx.state(ids[0]).await, TaskState::Pending);
    assert_eq!(ctx.state(ids[1]).await, TaskState::Pending);
    let f = ctx.record(ids[2]).await;
    assert_eq!(f.state, TaskState::Scheduled);
    assert_eq!(f.run_at_ms, now + 1);
    let got: Vec<TaskId> = ctx
        .lease(&["s"], 10)
        .await
        .iter()
        .map(|l| l.record.id)
        .collect();
    assert_eq!(got.len(), 2, "the scheduled task is not ready yet");
    assert!(!got.contains(&ids[2]));
}

/// IdExists for an id that is stored, and for one that completed and was purged.
pub async fn id_exists_for_live_and_purged_ids(ctx: Ctx) {
    let t = ctx.task("id");
    ctx.enqueue_ok(vec![t.clone()]).await;
    assert_eq!(
        ctx.broker.enqueue(vec![t.clone()]).await.unwrap(),
        vec![EnqueueResult::IdExists]
    );
    // Even into another queue.
    let mut moved = t.clone();
    moved.queue = "elsewhere".into();
    assert_eq!(
        ctx.broker.enqueue(vec![moved]).await.unwrap(),
        vec![EnqueueResult::IdExists]
    );

    let l = ctx.lease_one("id").await;
    ctx.ack1(&l, complete(None)).await;
    assert_eq!(
        ctx.broker.enqueue(vec![t.clone()]).await.unwrap(),
        vec![EnqueueResult::IdExists],
        "a completed id comes back: replay"
    );
    ctx.advance(t.meta.retention_ms as i64 + 1);
    assert_eq!(ctx.broker.purge_completed().await.unwrap(), 1);
    assert!(ctx.broker.get(t.id).await.unwrap().is_none());
    assert_eq!(
        ctx.broker.enqueue(vec![t.clone()]).await.unwrap(),
        vec![EnqueueResult::IdExists],
        "the broker remembers completed ids after purging them"
    );
    assert!(ctx.lease(&["id"], 10).await.is_empty());

    // A deleted (never completed) id is remembered too (finding 2 of the
    // security review): refused, not run again.
    let d = ctx.task("id");
    ctx.enqueue_ok(vec![d.clone()]).await;
    ctx.broker.delete(&[d.id]).await.unwrap();
    assert_eq!(
        ctx.broker.enqueue(vec![d]).await.unwrap(),
        vec![EnqueueResult::IdExists],
        "an operator-deleted id does not come back"
    );
}
