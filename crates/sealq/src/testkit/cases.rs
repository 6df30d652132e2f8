//! The conformance cases. Each is an `async fn(Ctx)` that panics on a
//! violation of the [`crate::Broker`] contract; [`crate::conformance_tests!`]
//! turns each into a named test.

use std::collections::HashSet;
use std::time::Duration;

use super::fixtures::{Ctx, LEASE, subject, task_at};
use crate::broker::{
    Ack, AckResult, DequeueRequest, EnqueueResult, Forwarded, Lease, ListQuery, Outcome, Recovered,
};
use crate::task::{ArchiveReason, TaskId, TaskState};

const LEASE_MS: i64 = LEASE.as_millis() as i64;

fn complete(result: Option<&[u8]>) -> Outcome {
    Outcome::Complete {
        result: result.map(<[u8]>::to_vec),
    }
}

/// Every field of a stored task comes back exactly, envelope bytes included.
pub async fn enqueue_get_roundtrip(ctx: Ctx) {
    let mut t = ctx.task("roundtrip");
    t.meta.subject_tag = Some(subject(7));
    t.meta.not_after_ms = None;
    t.meta.backoff = crate::Backoff::Exponential {
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

/// Dequeue moves to Active, counts the attempt and sets the lease expiry.
pub async fn dequeue_leases(ctx: Ctx) {
    let t = ctx.task("lease");
    let envelope = t.envelope.clone();
    let id = ctx.enqueue_ok(vec![t]).await[0];
    ctx.advance(5);
    let l = ctx.lease_one("lease").await;
    assert_eq!(l.record.id, id);
    assert_eq!(l.record.state, TaskState::Active);
    assert_eq!(l.record.attempts, 1);
    assert_eq!(l.record.envelope, envelope);
    assert!(!l.replayed);
    assert_eq!(l.lease.task_id, id);
    assert_eq!(l.lease.expires_at_ms, ctx.now() + LEASE_MS);
    assert_eq!(l.record.lease_expires_at_ms, Some(ctx.now() + LEASE_MS));

    let r = ctx.record(id).await;
    assert_eq!(r.state, TaskState::Active);
    assert_eq!(r.attempts, 1);
    assert_eq!(r.lease_expires_at_ms, Some(ctx.now() + LEASE_MS));
    assert_eq!(r.updated_at_ms, ctx.now());
    assert!(
        ctx.lease(&["lease"], 10).await.is_empty(),
        "a leased task is not handed out again"
    );
}

/// Never more than `max`.
pub async fn dequeue_respects_max(ctx: Ctx) {
    ctx.enqueue_n("max", 7).await;
    assert_eq!(ctx.lease(&["max"], 3).await.len(), 3);
    assert_eq!(ctx.lease(&["max"], 3).await.len(), 3);
    assert_eq!(ctx.lease(&["max"], 3).await.len(), 1);
    assert_eq!(ctx.lease(&["max"], 3).await.len(), 0);
}

/// Within a queue: earliest run_at first, then lowest id.
pub async fn dequeue_orders_by_run_at_then_id(ctx: Ctx) {
    let now = ctx.now();
    let late = task_at("o", now - 10, now);
    let early = task_at("o", now - 30, now);
    let mid_a = task_at("o", now - 20, now);
    let mid_b = task_at("o", now - 20, now);
    let (lo, hi) = if mid_a.id < mid_b.id {
        (mid_a.id, mid_b.id)
    } else {
        (mid_b.id, mid_a.id)
    };
    let (late_id, early_id) = (late.id, early.id);
    ctx.enqueue_ok(vec![late, mid_b, early, mid_a]).await;
    let got: Vec<TaskId> = ctx
        .lease(&["o"], 10)
        .await
        .iter()
        .map(|l| l.record.id)
        .collect();
    assert_eq!(got, vec![early_id, lo, hi, late_id]);
}

/// The first queue is drained before the next one is touched.
pub async fn dequeue_drains_first_queue_first(ctx: Ctx) {
    let b = ctx.enqueue_n("b", 3).await;
    let a = ctx.enqueue_n("a", 3).await;
    let got = ctx.lease(&["a", "b"], 4).await;
    let got_ids: Vec<TaskId> = got.iter().map(|l| l.record.id).collect();
    assert_eq!(got_ids.len(), 4);
    assert_eq!(&got_ids[..3], &a[..], "all of `a` first, in order");
    assert!(b.contains(&got_ids[3]));
    assert_eq!(got[3].record.queue, "b");
    let rest = ctx.lease(&["b", "a"], 10).await;
    assert_eq!(rest.len(), 2);
    assert!(rest.iter().all(|l| l.record.queue == "b"));
}

/// Paused queues are skipped, other queues still served; resume restores.
pub async fn dequeue_skips_paused_until_resumed(ctx: Ctx) {
    let p = ctx.enqueue_n("paused", 2).await;
    let o = ctx.enqueue_n("open", 1).await;
    ctx.broker.pause("paused").await.unwrap();
    ctx.broker.pause("paused").await.unwrap(); // idempotent
    let got = ctx.lease(&["paused", "open"], 10).await;
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].record.id, o[0]);
    assert!(ctx.lease(&["paused"], 10).await.is_empty());
    // Enqueue into a paused queue still works.
    ctx.enqueue_n("paused", 1).await;
    ctx.broker.resume("paused").await.unwrap();
    let got = ctx.lease(&["paused"], 10).await;
    assert_eq!(got.len(), 3);
    assert!(got.iter().any(|l| l.record.id == p[0]));
    ctx.broker.resume("never-paused").await.unwrap(); // harmless
}

/// Due scheduled tasks are eligible even before forward_due runs.
pub async fn dequeue_takes_due_scheduled_without_forward(ctx: Ctx) {
    let id = ctx.enqueue_ok(vec![ctx.task_in("d", 1_000)]).await[0];
    assert!(ctx.lease(&["d"], 1).await.is_empty());
    ctx.advance(999);
    assert!(ctx.lease(&["d"], 1).await.is_empty(), "not due yet");
    ctx.advance(1);
    let l = ctx.lease_one("d").await;
    assert_eq!(l.record.id, id);
    assert_eq!(l.record.attempts, 1);
}

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

/// extend_leases: true and a new expiry for held leases; false for lost ones.
pub async fn extend_leases_held_and_lost(ctx: Ctx) {
    ctx.enqueue_n("ex", 2).await;
    let held = ctx.lease(&["ex"], 1).await.remove(0);
    let lost = ctx.lease(&["ex"], 1).await.remove(0);
    ctx.advance(LEASE_MS / 2);
    // `lost` is completed: its lease is gone.
    assert_eq!(ctx.ack1(&lost, complete(None)).await, AckResult::Applied);
    let wrong_token = Lease {
        token: held.lease.token.wrapping_add(1),
        ..held.lease
    };
    let res = ctx
        .broker
        .extend_leases(
            &[held.lease, lost.lease, wrong_token],
            Duration::from_secs(120),
        )
        .await
        .unwrap();
    assert_eq!(res, vec![true, false, false]);
    let r = ctx.record(held.record.id).await;
    assert_eq!(r.lease_expires_at_ms, Some(ctx.now() + 120_000));
    assert_eq!(r.state, TaskState::Active);

    // Past the original expiry but within the extension: recovery leaves it alone.
    ctx.advance(LEASE_MS);
    assert_eq!(
        ctx.broker.recover_expired().await.unwrap(),
        Recovered::default()
    );
    assert_eq!(ctx.state(held.record.id).await, TaskState::Active);
    assert_eq!(ctx.ack1(&held, complete(None)).await, AckResult::Applied);
}

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

    // A deleted (never completed) id may be enqueued again.
    let d = ctx.task("id");
    ctx.enqueue_ok(vec![d.clone()]).await;
    ctx.broker.delete(&[d.id]).await.unwrap();
    ctx.enqueue_ok(vec![d]).await;
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

/// Stats count every state per queue and show paused queues.
pub async fn stats_per_queue(ctx: Ctx) {
    assert!(ctx.broker.stats().await.unwrap().is_empty());
    ctx.enqueue_n("s1", 6).await;
    ctx.enqueue_ok(vec![ctx.task_in("s1", 10_000)]).await;
    ctx.enqueue_n("s2", 1).await;
    let ls = ctx.lease(&["s1"], 4).await;
    ctx.ack1(&ls[0], complete(None)).await;
    ctx.ack1(
        &ls[1],
        Outcome::Retry {
            at_ms: ctx.now() + 1_000,
            error: None,
        },
    )
    .await;
    ctx.ack1(
        &ls[2],
        Outcome::Archive {
            reason: ArchiveReason::Expired,
            error: None,
        },
    )
    .await;
    ctx.broker.pause("s2").await.unwrap();
    ctx.broker.pause("empty-paused").await.unwrap();

    let mut stats = ctx.broker.stats().await.unwrap();
    stats.sort_by(|a, b| a.queue.cmp(&b.queue));
    let names: Vec<&str> = stats.iter().map(|s| s.queue.as_str()).collect();
    assert_eq!(names, vec!["empty-paused", "s1", "s2"]);
    let s1 = &stats[1];
    assert!(!s1.paused);
    assert_eq!(s1.scheduled, 1);
    assert_eq!(s1.pending, 2);
    assert_eq!(s1.active, 1);
    assert_eq!(s1.retry, 1);
    assert_eq!(s1.completed, 1);
    assert_eq!(s1.archived, 1);
    assert_eq!(s1.get(TaskState::Active), 1);
    assert!(stats[2].paused);
    assert_eq!(stats[2].pending, 1);
    assert!(stats[0].paused);
    assert_eq!(stats[0].pending, 0);

    ctx.broker.resume("empty-paused").await.unwrap();
    let stats = ctx.broker.stats().await.unwrap();
    assert!(
        stats.iter().all(|s| s.queue != "empty-paused"),
        "an empty, unpaused queue is not listed"
    );
}

/// list filters by queue, state and subject.
pub async fn list_filters(ctx: Ctx) {
    let mut a1 = ctx.task("la");
    a1.meta.subject_tag = Some(subject(1));
    let mut a2 = ctx.task("la");
    a2.meta.subject_tag = Some(subject(2));
    let mut b1 = ctx.task("lb");
    b1.meta.subject_tag = Some(subject(1));
    let b2 = ctx.task_in("lb", 1_000);
    let (a1_id, a2_id, b1_id, b2_id) = (a1.id, a2.id, b1.id, b2.id);
    ctx.enqueue_ok(vec![a1, a2, b1, b2]).await;

    let ids = |q: ListQuery| {
        let ctx = ctx.clone();
        async move {
            ctx.broker
                .list(&q)
                .await
                .unwrap()
                .into_iter()
                .map(|r| r.id)
                .collect::<Vec<_>>()
        }
    };
    let sorted = |mut v: Vec<TaskId>| {
        v.sort();
        v
    };
    assert_eq!(
        ids(ListQuery::default()).await,
        sorted(vec![a1_id, a2_id, b1_id, b2_id])
    );
    assert_eq!(
        ids(ListQuery {
            queue: Some("la".into()),
            ..Default::default()
        })
        .await,
        sorted(vec![a1_id, a2_id])
    );
    assert_eq!(
        ids(ListQuery {
            state: Some(TaskState::Scheduled),
            ..Default::default()
        })
        .await,
        vec![b2_id]
    );
    assert_eq!(
        ids(ListQuery {
            subject: Some(subject(1)),
            ..Default::default()
        })
        .await,
        sorted(vec![a1_id, b1_id])
    );
    assert_eq!(
        ids(ListQuery {
            queue: Some("lb".into()),
            state: Some(TaskState::Pending),
            subject: Some(subject(1)),
            ..Default::default()
        })
        .await,
        vec![b1_id]
    );
    assert!(
        ids(ListQuery {
            state: Some(TaskState::Archived),
            ..Default::default()
        })
        .await
        .is_empty()
    );
    let full = ctx
        .broker
        .list(&ListQuery {
            subject: Some(subject(2)),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(full.len(), 1);
    assert_eq!(full[0].meta.subject_tag, Some(subject(2)));
    assert!(!full[0].envelope.is_empty());
}

/// list orders by id and pages with `after` and `limit` (0 means 100).
pub async fn list_pagination(ctx: Ctx) {
    let mut all = ctx.enqueue_n("pg", 130).await;
    all.sort();
    let page = |after: Option<TaskId>, limit: usize| {
        let ctx = ctx.clone();
        async move {
            ctx.broker
                .list(&ListQuery {
                    queue: Some("pg".into()),
                    after,
                    limit,
                    ..Default::default()
                })
                .await
                .unwrap()
                .into_iter()
                .map(|r| r.id)
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(
        page(None, 0).await,
        all[..100].to_vec(),
        "limit 0 means 100"
    );
    let mut seen = Vec::new();
    let mut after = None;
    loop {
        let p = page(after, 40).await;
        assert!(p.len() <= 40);
        if p.is_empty() {
            break;
        }
        after = p.last().copied();
        seen.extend(p);
    }
    assert_eq!(seen, all);
    assert_eq!(page(Some(all[128]), 10).await, vec![all[129]]);
    assert!(page(Some(all[129]), 10).await.is_empty());
}

/// delete removes tasks in any state and counts only those that existed.
pub async fn delete_tasks(ctx: Ctx) {
    let ids = ctx.enqueue_n("dl", 3).await;
    let sched = ctx.enqueue_ok(vec![ctx.task_in("dl", 5_000)]).await[0];
    let l = ctx.lease_one("dl").await;
    let n = ctx
        .broker
        .delete(&[l.record.id, sched, TaskId::new()])
        .await
        .unwrap();
    assert_eq!(n, 2);
    assert!(ctx.broker.get(l.record.id).await.unwrap().is_none());
    assert!(ctx.broker.get(sched).await.unwrap().is_none());
    let left: Vec<TaskId> = ids.into_iter().filter(|i| *i != l.record.id).collect();
    assert_eq!(ctx.broker.delete(&left).await.unwrap(), 2);
    assert_eq!(ctx.broker.delete(&left).await.unwrap(), 0);
    assert!(ctx.lease(&["dl"], 10).await.is_empty());
    assert!(ctx.broker.stats().await.unwrap().is_empty());
}

/// rerun moves archived tasks back to Pending with attempts 0, and only those.
pub async fn rerun_archived(ctx: Ctx) {
    let ids = ctx.enqueue_n("rr", 2).await;
    let ls = ctx.lease(&["rr"], 2).await;
    ctx.ack1(
        &ls[0],
        Outcome::Archive {
            reason: ArchiveReason::Exhausted,
            error: Some(b"e".to_vec()),
        },
    )
    .await;
    let archived = ls[0].record.id;
    let active = ls[1].record.id;
    assert!(ids.contains(&archived));
    ctx.advance(10);
    let n = ctx
        .broker
        .rerun(&[archived, active, TaskId::new()])
        .await
        .unwrap();
    assert_eq!(n, 1, "only archived tasks are rerun");
    let r = ctx.record(archived).await;
    assert_eq!(r.state, TaskState::Pending);
    assert_eq!(r.attempts, 0);
    assert_eq!(r.archive_reason, None);
    assert_eq!(r.finished_at_ms, None);
    assert_eq!(ctx.state(active).await, TaskState::Active);
    let l = ctx.lease_one("rr").await;
    assert_eq!(l.record.id, archived);
    assert_eq!(l.record.attempts, 1);
}

/// A waiter wakes when another task enqueues, long before its own timeout.
pub async fn wait_for_work_wakes_on_enqueue(ctx: Ctx) {
    let waiter = {
        let broker = ctx.broker.clone();
        tokio::spawn(async move {
            broker
                .wait_for_work(&["wake".to_string()], Duration::from_secs(120))
                .await
        })
    };
    // Give the waiter a moment to start waiting, then produce work until it
    // wakes. The failure bound is generous; no speed is asserted.
    let producer = {
        let ctx = ctx.clone();
        tokio::spawn(async move {
            for _ in 0..200 {
                tokio::time::sleep(Duration::from_millis(100)).await;
                ctx.enqueue_n("wake", 1).await;
            }
        })
    };
    let woke = tokio::time::timeout(Duration::from_secs(15), waiter).await;
    producer.abort();
    let _ = producer.await;
    woke.expect("wait_for_work did not wake within 15 s of an enqueue")
        .expect("waiter task")
        .expect("wait_for_work");
    assert!(!ctx.lease(&["wake"], 1).await.is_empty());
}

/// With nothing happening, wait_for_work returns once its timeout passes.
pub async fn wait_for_work_times_out(ctx: Ctx) {
    let res = tokio::time::timeout(
        Duration::from_secs(15),
        ctx.broker
            .wait_for_work(&["idle".to_string()], Duration::from_millis(200)),
    )
    .await;
    res.expect("wait_for_work ignored its 200 ms timeout")
        .expect("wait_for_work");
}

/// Eight concurrent workers take 2000 tasks: each exactly once, all of them.
pub async fn concurrent_workers_never_share_a_task(ctx: Ctx) {
    const N: usize = 2_000;
    let mut all = Vec::with_capacity(N);
    for _ in 0..4 {
        all.extend(ctx.enqueue_n("conc", N / 4).await);
    }
    let mut workers = Vec::new();
    for w in 0..8 {
        let broker = ctx.broker.clone();
        workers.push(tokio::spawn(async move {
            let req = DequeueRequest {
                queues: vec!["conc".into()],
                max: 16,
                lease: LEASE,
                worker: format!("w{w}"),
            };
            let mut got = Vec::new();
            loop {
                let batch = broker.dequeue(&req).await.expect("dequeue");
                if batch.is_empty() {
                    break;
                }
                let acks = batch
                    .iter()
                    .map(|l| Ack {
                        lease: l.lease,
                        outcome: Outcome::Complete { result: None },
                    })
                    .collect();
                let res = broker.ack(acks).await.expect("ack");
                assert!(res.iter().all(|r| *r == AckResult::Applied));
                got.extend(batch.into_iter().map(|l| l.record.id));
            }
            got
        }));
    }
    let mut seen = HashSet::with_capacity(N);
    for w in workers {
        for id in w.await.expect("worker") {
            assert!(seen.insert(id), "task {id} delivered twice");
        }
    }
    assert_eq!(seen.len(), N, "every task delivered");
    assert!(all.iter().all(|id| seen.contains(id)));
    let stats = ctx.broker.stats().await.unwrap();
    assert_eq!(stats.len(), 1);
    assert_eq!(stats[0].completed, N as u64);
    assert_eq!(stats[0].pending + stats[0].active, 0);
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

/// Sealed bytes are swapped only where they still hold what was read; the
/// rest of the task (state, lease, attempts, times) stays as it was, and a
/// held lease still acks.
pub async fn swap_sealed_compare_and_swap(ctx: Ctx) {
    use crate::broker::{SealedPart, SealedSwap};
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

/// A queue capped at N waiting tasks stores no more while it holds N:
/// scheduled, pending and retry tasks count, active ones do not; a batch
/// fills the room in order and the rest is refused, not stored; other
/// queues are unaffected; retries of leased tasks are never refused; the
/// cap shows in the stats and can be raised or removed.
pub async fn max_depth_caps_waiting_tasks(ctx: Ctx) {
    let full = |n| EnqueueResult::QueueFull { max_depth: n };
    ctx.broker.set_max_depth("capped", Some(3)).await.unwrap();
    ctx.enqueue_ok(vec![
        ctx.task("capped"),
        ctx.task("capped"),
        ctx.task_in("capped", 60_000),
    ])
    .await;
    let refused = ctx.task("capped");
    let refused_id = refused.id;
    let res = ctx
        .broker
        .enqueue(vec![refused, ctx.task("other")])
        .await
        .unwrap();
    assert_eq!(res, vec![full(3), EnqueueResult::Enqueued]);
    assert!(
        ctx.broker.get(refused_id).await.unwrap().is_none(),
        "a refused task was stored"
    );

    // Raised to 5: a batch of 4 gets the 2 places left, in order.
    ctx.broker.set_max_depth("capped", Some(5)).await.unwrap();
    let batch: Vec<_> = (0..4).map(|_| ctx.task("capped")).collect();
    let ids: Vec<TaskId> = batch.iter().map(|t| t.id).collect();
    let res = ctx.broker.enqueue(batch).await.unwrap();
    assert_eq!(
        res,
        vec![
            EnqueueResult::Enqueued,
            EnqueueResult::Enqueued,
            full(5),
            full(5)
        ]
    );
    assert!(ctx.broker.get(ids[3]).await.unwrap().is_none());
    // A refused id is not remembered: it can be sent again once there is room.
    let again = ctx.task("capped");

    // A leased task no longer waits: one place frees up.
    let leased = ctx.lease(&["capped"], 1).await;
    assert_eq!(leased.len(), 1);
    ctx.enqueue_ok(vec![again]).await;
    assert_eq!(
        ctx.broker.enqueue(vec![ctx.task("capped")]).await.unwrap(),
        vec![full(5)]
    );
    // Its retry is applied although the queue is full.
    let retry = Outcome::Retry {
        at_ms: ctx.now() + 60_000,
        error: None,
    };
    assert_eq!(ctx.ack1(&leased[0], retry).await, AckResult::Applied);

    let stats = ctx.broker.stats().await.unwrap();
    let of = |q: &str| stats.iter().find(|s| s.queue == q).cloned();
    let capped = of("capped").expect("capped queue in stats");
    assert_eq!(capped.max_depth, Some(5));
    assert_eq!(capped.scheduled + capped.pending + capped.retry, 6);
    assert_eq!(of("other").expect("other queue").max_depth, None);

    // Removed: the queue takes tasks again.
    ctx.broker.set_max_depth("capped", None).await.unwrap();
    ctx.enqueue_n("capped", 2).await;
    let stats = ctx.broker.stats().await.unwrap();
    let capped = stats.iter().find(|s| s.queue == "capped").unwrap();
    assert_eq!(capped.max_depth, None);
}

/// A rate-limited queue leases at most `limit` tasks per period, counted
/// across calls; the bucket refills evenly with time, up to the limit and
/// no more; other queues are not held back; the limit shows in the stats;
/// removed, it lets every task through.
pub async fn rate_limit_caps_leases(ctx: Ctx) {
    use crate::broker::RateLimit;
    let by_queue = |ls: &[crate::broker::LeasedTask], q: &str| {
        ls.iter().filter(|l| l.record.queue == q).count()
    };
    ctx.enqueue_n("slow", 12).await;
    ctx.enqueue_n("fast", 3).await;
    let limit = RateLimit::per(4, Duration::from_secs(10));
    assert!(RateLimit::per(0, Duration::from_secs(1)).is_none());
    ctx.broker.set_rate_limit("slow", limit).await.unwrap();
    // A full bucket: 4 now, across two calls; the other queue is not held back.
    assert_eq!(ctx.lease(&["slow"], 3).await.len(), 3);
    let got = ctx.lease(&["slow", "fast"], 10).await;
    assert_eq!((by_queue(&got, "slow"), by_queue(&got, "fast")), (1, 3));
    assert!(ctx.lease(&["slow"], 10).await.is_empty());
    // A quarter of the period: one token.
    ctx.advance(2_500);
    assert_eq!(ctx.lease(&["slow"], 10).await.len(), 1);
    assert!(ctx.lease(&["slow"], 10).await.is_empty());
    // A long wait refills the bucket to the limit, no further.
    ctx.advance(60_000);
    assert_eq!(ctx.lease(&["slow"], 10).await.len(), 4);
    assert!(ctx.lease(&["slow"], 10).await.is_empty());

    let stats = ctx.broker.stats().await.unwrap();
    let slow = stats
        .iter()
        .find(|s| s.queue == "slow")
        .expect("slow in stats");
    assert_eq!(slow.rate_limit, limit);
    let fast = stats
        .iter()
        .find(|s| s.queue == "fast")
        .expect("fast in stats");
    assert_eq!(fast.rate_limit, None);
    let names = ["slow".to_owned(), "fast".to_owned(), "none-yet".to_owned()];
    assert_eq!(
        ctx.broker.rate_limits(&names).await.unwrap(),
        vec![limit, None, None]
    );

    // Removed: the 3 left all come at once.
    ctx.broker.set_rate_limit("slow", None).await.unwrap();
    assert_eq!(ctx.lease(&["slow"], 10).await.len(), 3);
    let stats = ctx.broker.stats().await.unwrap();
    let slow = stats.iter().find(|s| s.queue == "slow").unwrap();
    assert_eq!(slow.rate_limit, None);
}
