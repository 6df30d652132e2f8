//! A task whose type no running worker handles waits for one (issue 21):
//! retried with backoff, not held to its retry budget, archived
//! `unknown_type` at its sealed expiry.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use super::{Greet, Other, Scene, fast, wait_state};
use crate::model::backoff::Backoff;
use crate::model::options::EnqueueOptions;
use crate::model::state::{ArchiveReason, TaskState};
use crate::seal::envelope::{Aad, Purpose};
use crate::worker::{TaskContext, Worker};

/// Deploy the producer first: a task of a type the running worker has no
/// handler for is retried (even with `max_retries = 0`), and runs once a
/// worker with the handler starts.
pub async fn rough_edge_a_task_with_no_handler_waits_for_a_worker_that_has_one(e: Scene) {
    let opts = EnqueueOptions::new()
        .max_retries(0)
        .backoff(Backoff::Fixed { delay_ms: 0 });
    let id = e.client.enqueue(&Other { n: 7 }, opts).await.unwrap();

    // The old worker: Greet only.
    let old = fast(Worker::builder(e.broker.clone(), e.keyring.clone()))
        .handle(|_: Greet, _ctx: TaskContext| async { Ok(()) })
        .build()
        .unwrap()
        .spawn();
    let rec = wait_state(&e.broker, id, TaskState::Retry).await;
    assert_eq!(rec.archive_reason, None, "not archived: it waits");
    assert_eq!(rec.attempts, 1);
    assert!(
        rec.run_at_ms >= rec.updated_at_ms + 900,
        "retried after at least a second (a zero backoff is raised to 1 s), \
         not leased again at once: run at {} after update {}",
        rec.run_at_ms,
        rec.updated_at_ms
    );
    let report = old.shutdown().await.unwrap();
    assert_eq!(report.archived, 0);

    // The new worker has the handler: the task runs although it used more
    // attempts than `max_retries` allows.
    let ran = Arc::new(AtomicU32::new(0));
    let r = ran.clone();
    let new = fast(Worker::builder(e.broker.clone(), e.keyring.clone()))
        .handle(move |t: Other, _ctx: TaskContext| {
            let r = r.clone();
            async move {
                r.fetch_add(t.n, Ordering::SeqCst);
                Ok(())
            }
        })
        .build()
        .unwrap()
        .spawn();
    wait_state(&e.broker, id, TaskState::Completed).await;
    new.shutdown().await.unwrap();
    assert_eq!(ran.load(Ordering::SeqCst), 7);
}

/// With no worker ever handling its type, the task is archived
/// `unknown_type` once its next attempt would fall after its sealed expiry,
/// with a sealed error saying so; it is never handed to a handler.
pub async fn rough_edge_a_task_with_no_handler_is_archived_unknown_type_at_its_expiry(e: Scene) {
    let not_after = crate::model::clock::wall_clock_ms() + 2_500;
    let opts = EnqueueOptions::new()
        .max_retries(0)
        .backoff(Backoff::Fixed { delay_ms: 0 })
        .not_after_ms(not_after);
    let id = e.client.enqueue(&Other { n: 1 }, opts).await.unwrap();
    let worker = fast(Worker::builder(e.broker.clone(), e.keyring.clone()))
        .handle(|_: Greet, _ctx: TaskContext| async { Ok(()) })
        .build()
        .unwrap()
        .spawn();
    let rec = wait_state(&e.broker, id, TaskState::Archived).await;
    worker.shutdown().await.unwrap();
    assert_eq!(rec.archive_reason, Some(ArchiveReason::UnknownType));
    assert!(
        rec.attempts >= 2,
        "retried before its expiry although max_retries = 0: {} attempt(s)",
        rec.attempts
    );
    assert!(
        rec.updated_at_ms <= not_after,
        "archived before its expiry, not refused `expired` after it"
    );
    let sealed = rec.last_error.clone().expect("an error is stored");
    let error = e
        .keyring
        .open(&Aad::for_record(&rec, Purpose::Error), &sealed)
        .expect("the error is sealed for this task");
    let error = String::from_utf8(error.to_vec()).unwrap();
    assert!(
        error.contains("no handler for task type `test.other`"),
        "{error}"
    );
}
