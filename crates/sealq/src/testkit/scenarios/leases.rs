//! Leases under a running worker: shutdown returns tasks, a crashed
//! worker's task is recovered, heartbeats keep a long task.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use super::{Greet, Scene, fast, wait_state};
use crate::model::options::EnqueueOptions;
use crate::model::state::{ArchiveReason, TaskState};
use crate::worker::{TaskContext, TaskError, Worker};

/// Shutdown returns running and prefetched tasks uncounted.
pub async fn shutdown_returns_running_and_prefetched_tasks_uncounted(e: Scene) {
    let started = Arc::new(tokio::sync::Notify::new());
    let st = started.clone();
    let worker = Worker::builder(e.broker.clone(), e.keyring.clone())
        .concurrency(1)
        .prefetch(2)
        .shutdown_timeout(Duration::from_millis(100))
        .handle(move |_: Greet, ctx: TaskContext| {
            let st = st.clone();
            async move {
                st.notify_one();
                ctx.cancellation().cancelled().await;
                Err(TaskError::retry("cancelled by shutdown"))
            }
        })
        .build()
        .unwrap()
        .spawn();
    let mut ids = Vec::new();
    for i in 0..3 {
        ids.push(
            e.client
                .enqueue(
                    &Greet {
                        name: format!("{i}"),
                    },
                    EnqueueOptions::new(),
                )
                .await
                .unwrap(),
        );
    }
    tokio::time::timeout(Duration::from_secs(10), started.notified())
        .await
        .expect("a handler started");
    let report = worker.shutdown().await.unwrap();
    assert_eq!(report.succeeded, 0);
    assert!(report.requeued >= 1, "{report:?}");
    for id in ids {
        let rec = e.broker.get(id).await.unwrap().unwrap();
        assert_eq!(rec.state, TaskState::Pending, "task {id} not returned");
        assert_eq!(rec.attempts, 0, "an interrupted attempt must not count");
    }
}

/// A task leased by a worker that died without acking (through the
/// harness's peer broker, as another process) is recovered once its lease
/// expires and completes; the dead worker's late ack changes nothing.
pub async fn a_crashed_workers_task_is_recovered_after_its_lease_expires(e: Scene) {
    let id = e
        .client
        .enqueue(&Greet { name: "a".into() }, EnqueueOptions::new())
        .await
        .unwrap();
    // A "worker" in another process leases the task and dies without acking.
    let req = crate::store::broker::DequeueRequest {
        queues: vec!["default".into()],
        max: 10,
        lease: Duration::from_millis(200),
        worker: "crashed".into(),
    };
    let leased = e.peer.dequeue(&req).await.unwrap();
    assert_eq!(leased.len(), 1);
    assert_eq!(leased[0].record.id, id);

    let worker = fast(Worker::builder(e.broker.clone(), e.keyring.clone()))
        .handle(|_: Greet, _ctx: TaskContext| async move { Ok(()) })
        .build()
        .unwrap()
        .spawn();
    let rec = wait_state(&e.broker, id, TaskState::Completed).await;
    worker.shutdown().await.unwrap();
    assert_eq!(
        rec.attempts, 2,
        "the crashed attempt counts, the recovered one completes"
    );
    // The dead worker's late ack changes nothing.
    let late = e
        .peer
        .ack(vec![crate::store::broker::Ack {
            lease: leased[0].lease,
            outcome: crate::store::broker::Outcome::Archive {
                reason: ArchiveReason::Cancelled,
                error: None,
            },
        }])
        .await
        .unwrap();
    assert_eq!(late, vec![crate::store::broker::AckResult::LeaseLost]);
    assert_eq!(
        e.broker.get(id).await.unwrap().unwrap().state,
        TaskState::Completed
    );
}

/// Heartbeats keep a long task leased.
pub async fn heartbeats_keep_a_long_task_leased(e: Scene) {
    let calls = Arc::new(AtomicU32::new(0));
    let c = calls.clone();
    let worker = fast(Worker::builder(e.broker.clone(), e.keyring.clone()))
        .lease(Duration::from_millis(300))
        .handle(move |_: Greet, _ctx: TaskContext| {
            let c = c.clone();
            async move {
                c.fetch_add(1, Ordering::SeqCst);
                // Three lease lengths: only heartbeats keep it ours.
                tokio::time::sleep(Duration::from_millis(900)).await;
                Ok(())
            }
        })
        .build()
        .unwrap()
        .spawn();
    let id = e
        .client
        .enqueue(
            &Greet {
                name: "slow".into(),
            },
            EnqueueOptions::new(),
        )
        .await
        .unwrap();
    let rec = wait_state(&e.broker, id, TaskState::Completed).await;
    let report = worker.shutdown().await.unwrap();
    assert_eq!(rec.attempts, 1);
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    assert_eq!(report.leases_lost, 0);
}
