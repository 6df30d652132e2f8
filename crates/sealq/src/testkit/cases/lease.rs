//! Dequeue and leases: what is handed out, in which order, to whom, and for how long.

use std::collections::HashSet;
use std::time::Duration;

use super::{LEASE_MS, complete};
use crate::model::id::TaskId;
use crate::model::state::TaskState;
use crate::store::broker::{Ack, AckResult, DequeueRequest, Lease, Outcome, Recovered};
use crate::testkit::fixtures::{Ctx, LEASE, task_at};

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
