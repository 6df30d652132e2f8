//! What never reaches a handler (tampered, moved, foreign-keyed (held),
//! expired, of a type with no handler (retried), malformed tasks) and what is refused at enqueue (duplicates, replays,
//! policy violations).

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use super::{Greet, Other, Scene, fast, wait_state};
use crate::client::{Client, RawTask};
use crate::error::Error;
use crate::model::options::EnqueueOptions;
use crate::model::state::{ArchiveReason, TaskState};
use crate::model::task::Task;
use crate::seal::keyring::Keyring;
use crate::store::broker::ListQuery;
use crate::worker::{TaskContext, Worker};

/// Tampered moved foreign expired and unknown tasks never reach a handler.
pub async fn tampered_moved_foreign_expired_and_unknown_tasks_never_reach_a_handler(e: Scene) {
    let called = Arc::new(AtomicU32::new(0));
    let c = called.clone();
    let other_keyring = Keyring::generate();
    let foreign = Client::builder(e.broker.clone(), other_keyring)
        .producer("intruder")
        .build();

    // Bit flip in the ciphertext.
    let mut flipped = e
        .client
        .seal(RawTask::typed(&Greet { name: "x".into() }, EnqueueOptions::new()).unwrap())
        .unwrap();
    let last = flipped.envelope.len() - 1;
    flipped.envelope[last] ^= 0x01;
    // Sealed for queue `default`, stored under another queue.
    let mut moved = e
        .client
        .seal(
            RawTask::typed(
                &Greet { name: "x".into() },
                EnqueueOptions::new().queue("payroll"),
            )
            .unwrap(),
        )
        .unwrap();
    moved.queue = "default".into();
    // Relabelled as another type.
    let mut relabelled = e
        .client
        .seal(RawTask::typed(&Other { n: 1 }, EnqueueOptions::new()).unwrap())
        .unwrap();
    relabelled.kind = Greet::KIND.into();
    // Truncated.
    let mut truncated = e
        .client
        .seal(RawTask::typed(&Greet { name: "x".into() }, EnqueueOptions::new()).unwrap())
        .unwrap();
    truncated.envelope.truncate(10);
    let ids = [flipped.id, moved.id, relabelled.id, truncated.id];
    e.broker
        .enqueue(vec![flipped, moved, relabelled, truncated])
        .await
        .unwrap();
    // Sealed with a key this worker does not have, stored by a broker
    // writer (a client with that keyring would be refused: its keyring
    // holds none of the keys the broker recorded).
    let foreign_task = foreign
        .seal(RawTask::typed(&Greet { name: "x".into() }, EnqueueOptions::new()).unwrap())
        .unwrap();
    let wrong_key = foreign_task.id;
    e.broker.enqueue(vec![foreign_task]).await.unwrap();
    // Past its not-after.
    let expired = e
        .client
        .enqueue(
            &Greet { name: "x".into() },
            EnqueueOptions::new().not_after_ms(1),
        )
        .await
        .unwrap();
    // No handler for this type.
    let unknown = e
        .client
        .enqueue(&Other { n: 2 }, EnqueueOptions::new())
        .await
        .unwrap();

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
    for id in ids {
        let rec = wait_state(&e.broker, id, TaskState::Archived).await;
        assert_eq!(rec.archive_reason, Some(ArchiveReason::Integrity), "{id}");
        assert_eq!(rec.attempts, 1, "integrity failures are never retried");
    }
    // A key this keyring lacks is held, not archived (finding 7).
    let rec = wait_state(&e.broker, wrong_key, TaskState::Retry).await;
    assert_eq!(rec.archive_reason, None);
    let rec = wait_state(&e.broker, expired, TaskState::Archived).await;
    assert_eq!(rec.archive_reason, Some(ArchiveReason::Expired));
    // No handler: waits for a worker that has one (issue 21).
    let rec = wait_state(&e.broker, unknown, TaskState::Retry).await;
    assert_eq!(rec.archive_reason, None);
    let report = worker.shutdown().await.unwrap();
    assert_eq!(
        called.load(Ordering::SeqCst),
        0,
        "a refused task reached the handler"
    );
    assert_eq!(report.integrity_failures, 5);
}

/// Payload of the wrong shape is archived as decode.
pub async fn payload_of_the_wrong_shape_is_archived_as_decode(e: Scene) {
    let raw = RawTask::from_json(
        Greet::KIND,
        &serde_json::json!({"unexpected": 1}),
        EnqueueOptions::new(),
    )
    .unwrap();
    let id = e.client.enqueue_raw(raw).await.unwrap();
    let worker = fast(Worker::builder(e.broker.clone(), e.keyring.clone()))
        .handle(|_: Greet, _ctx: TaskContext| async move { Ok(()) })
        .build()
        .unwrap()
        .spawn();
    let rec = wait_state(&e.broker, id, TaskState::Archived).await;
    worker.shutdown().await.unwrap();
    assert_eq!(rec.archive_reason, Some(ArchiveReason::Decode));
}

/// Unique keys and replayed ids are refused at enqueue.
pub async fn unique_keys_and_replayed_ids_are_refused_at_enqueue(e: Scene) {
    let opts = EnqueueOptions::new().unique("welcome:42", Duration::from_secs(60));
    let first = e
        .client
        .enqueue(&Greet { name: "a".into() }, opts.clone())
        .await
        .unwrap();
    match e.client.enqueue(&Greet { name: "a".into() }, opts).await {
        Err(Error::Duplicate { existing, key }) => {
            assert_eq!(existing, first);
            assert_eq!(key, "welcome:42");
        }
        other => panic!("expected Duplicate, got {other:?}"),
    }
    let worker = fast(Worker::builder(e.broker.clone(), e.keyring.clone()))
        .handle(|_: Greet, _ctx: TaskContext| async move { Ok(()) })
        .build()
        .unwrap()
        .spawn();
    wait_state(&e.broker, first, TaskState::Completed).await;
    worker.shutdown().await.unwrap();
    // The same id coming back after completion is a replay.
    let again = e
        .client
        .enqueue(&Greet { name: "a".into() }, EnqueueOptions::new().id(first))
        .await;
    assert!(
        matches!(again, Err(Error::IdExists(id)) if id == first),
        "{again:?}"
    );
}

/// Policy rejections store nothing.
pub async fn policy_rejections_store_nothing(e: Scene) {
    let res = e
        .client
        .enqueue(
            &Greet {
                name: "card 4242 4242 4242 4242".into(),
            },
            EnqueueOptions::new(),
        )
        .await;
    match res {
        Err(err @ Error::PolicyViolation { .. }) => {
            let text = err.to_string();
            assert!(text.contains("name"), "{text}");
            assert!(!text.contains("4242 4242"), "{text}");
        }
        other => panic!("expected a policy violation, got {other:?}"),
    }
    let big = Greet {
        name: "x".repeat(70 * 1024),
    };
    assert!(matches!(
        e.client.enqueue(&big, EnqueueOptions::new()).await,
        Err(Error::PayloadTooLarge { limit: 65536, .. })
    ));
    let all = e.broker.list(&ListQuery::default()).await.unwrap();
    assert!(all.is_empty());
}
