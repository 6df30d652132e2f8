//! Queue limits: the depth cap on waiting tasks and the lease rate limit.

use std::time::Duration;

use crate::model::id::TaskId;
use crate::store::broker::{AckResult, EnqueueResult, Outcome};
use crate::testkit::fixtures::Ctx;

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
    use crate::store::broker::RateLimit;
    let by_queue = |ls: &[crate::store::broker::LeasedTask], q: &str| {
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
