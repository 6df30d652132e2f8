//! `wait_for_work`: waiters wake on enqueue and honour their timeout.

use std::time::Duration;

use crate::testkit::fixtures::Ctx;

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
