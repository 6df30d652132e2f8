//! The producer's policy is sealed (finding 3 of the security review): a
//! broker writer who edits a task's clear retry count, backoff, timeout,
//! deadline, retention or run time gains nothing.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use super::{Greet, Scene, fast, wait_state};
use crate::client::RawTask;
use crate::model::backoff::Backoff;
use crate::model::options::EnqueueOptions;
use crate::model::state::{ArchiveReason, TaskState};
use crate::worker::{TaskContext, Worker};

/// An edit of a stored task's clear metadata, as a broker writer makes it.
type Edit = Box<dyn Fn(&mut crate::model::task::TaskMeta)>;

/// Finding 3: a task whose clear policy was edited in the broker (more
/// retries, another backoff, a longer timeout, no deadline, a longer
/// retention) never reaches a handler; it is archived `integrity`.
pub async fn finding_3_a_policy_edited_in_the_broker_never_runs(e: Scene) {
    let called = Arc::new(AtomicU32::new(0));
    let mut options = EnqueueOptions::new().max_retries(2);
    options.timeout = Some(Duration::from_secs(5));
    options.deadline_ms = Some(crate::model::clock::wall_clock_ms() + 3_600_000);
    options.retention = Some(Duration::from_secs(60));
    let sealed = || {
        e.client
            .seal(RawTask::typed(&Greet { name: "x".into() }, options.clone()).unwrap())
            .unwrap()
    };
    let edits: [(&str, Edit); 5] = [
        ("max_retries", Box::new(|m| m.max_retries = 1_000)),
        (
            "backoff",
            Box::new(|m| m.backoff = Backoff::Fixed { delay_ms: 0 }),
        ),
        ("timeout", Box::new(|m| m.timeout_ms = Some(86_400_000))),
        ("deadline", Box::new(|m| m.deadline_ms = None)),
        ("retention", Box::new(|m| m.retention_ms = 365 * 86_400_000)),
    ];
    let mut ids = Vec::new();
    let mut tasks = Vec::new();
    for (what, edit) in &edits {
        let mut task = sealed();
        edit(&mut task.meta);
        ids.push((*what, task.id));
        tasks.push(task);
    }
    e.broker.enqueue(tasks).await.unwrap();
    // One untouched task, so the worker's keyring check sees a task it opens.
    let good = e
        .client
        .enqueue(&Greet { name: "y".into() }, options.clone())
        .await
        .unwrap();
    let c = called.clone();
    let worker = fast(Worker::builder(e.broker.clone(), e.keyring.clone()))
        .handle(move |_: Greet, _ctx: TaskContext| {
            let c = c.clone();
            async move {
                c.fetch_add(1, Ordering::SeqCst);
                Ok(())
            }
        })
        .build()
        .unwrap()
        .spawn();
    wait_state(&e.broker, good, TaskState::Completed).await;
    for (what, id) in ids {
        let rec = wait_state(&e.broker, id, TaskState::Archived).await;
        assert_eq!(
            rec.archive_reason,
            Some(ArchiveReason::Integrity),
            "edited {what}"
        );
    }
    worker.shutdown().await.unwrap();
    assert_eq!(
        called.load(Ordering::SeqCst),
        1,
        "only the untouched task ran"
    );
}

/// Finding 3: a task sealed to start in an hour but stored to run now is
/// leased early and given back for its sealed start, not run.
pub async fn finding_3_a_task_moved_earlier_waits_for_its_sealed_start(e: Scene) {
    let called = Arc::new(AtomicU32::new(0));
    let mut task = e
        .client
        .seal(
            RawTask::typed(
                &Greet {
                    name: "later".into(),
                },
                EnqueueOptions::new().delay(Duration::from_secs(3600)),
            )
            .unwrap(),
        )
        .unwrap();
    let sealed_start = task.run_at_ms;
    task.run_at_ms = crate::model::clock::wall_clock_ms() - 1_000;
    let id = task.id;
    e.broker.enqueue(vec![task]).await.unwrap();
    let c = called.clone();
    let worker = fast(Worker::builder(e.broker.clone(), e.keyring.clone()))
        .handle(move |_: Greet, _ctx: TaskContext| {
            let c = c.clone();
            async move {
                c.fetch_add(1, Ordering::SeqCst);
                Ok(())
            }
        })
        .build()
        .unwrap()
        .spawn();
    let rec = wait_state(&e.broker, id, TaskState::Retry).await;
    assert!(
        rec.run_at_ms >= sealed_start,
        "given back for {} < sealed start {sealed_start}",
        rec.run_at_ms
    );
    assert!(rec.last_error.is_none());
    worker.shutdown().await.unwrap();
    assert_eq!(
        called.load(Ordering::SeqCst),
        0,
        "ran before its sealed start"
    );
}

/// Finding 3: every task carries a sealed expiry, by default a week or
/// more after it may start.
pub async fn finding_3_every_task_carries_a_sealed_expiry(e: Scene) {
    let id = e
        .client
        .enqueue(&Greet { name: "x".into() }, EnqueueOptions::new())
        .await
        .unwrap();
    let rec = e.broker.get(id).await.unwrap().unwrap();
    let expiry = rec.meta.not_after_ms.expect("a default expiry");
    assert!(
        expiry >= rec.meta.created_at_ms + 7 * 86_400_000,
        "expiry {expiry} is less than a week after {}",
        rec.meta.created_at_ms
    );
}
