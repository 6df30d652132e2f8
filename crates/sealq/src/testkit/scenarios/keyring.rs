//! Failing closed with the wrong keyring (finding 7 of the security
//! review): a worker with another keyring refuses to start and changes
//! nothing; a task sealed with a key the keyring lacks is held, not
//! archived; revealing with a keyring that cannot open the task writes no
//! `payload_revealed` record.

use std::sync::Arc;
use std::time::Duration;

use super::{Greet, Scene, fast, wait_state};
use crate::audit::Auditor;
use crate::client::Client;
use crate::error::Error;
use crate::model::audit_event::AuditEvent;
use crate::model::options::EnqueueOptions;
use crate::model::state::TaskState;
use crate::seal::keyring::Keyring;
use crate::store::audit::AuditSink;
use crate::worker::{TaskContext, Worker};

/// Finding 7: a worker started with another keyring refuses to start,
/// names the keys the tasks need, and leases, archives and audits nothing.
pub async fn finding_7_a_worker_with_another_keyring_refuses_to_start_and_changes_nothing(
    e: Scene,
) {
    let mut ids = Vec::new();
    for n in 0..3 {
        let task = Greet {
            name: format!("n{n}"),
        };
        ids.push(
            e.client
                .enqueue(&task, EnqueueOptions::new())
                .await
                .unwrap(),
        );
    }
    let wrong = Arc::new(Keyring::generate());
    let sink = e.audit_sink.clone();
    let auditor = sink
        .clone()
        .map(|s| Auditor::start(s, &wrong).expect("auditor"));
    let mut builder = fast(Worker::builder(e.broker.clone(), wrong.clone()))
        .handle(|_: Greet, _ctx: TaskContext| async { Ok(()) });
    if let Some(a) = &auditor {
        builder = builder.audit(a.clone());
    }
    let worker = builder.build().unwrap();
    let run = tokio::time::timeout(
        Duration::from_secs(10),
        worker.run_until(std::future::pending()),
    )
    .await
    .expect("a wrong keyring must stop the worker at once");
    match run {
        Err(Error::Keyring(message)) => {
            assert!(message.contains(e.keyring.primary_key_id()), "{message}");
            assert!(message.contains("nothing was leased"), "{message}");
        }
        other => panic!("expected a keyring refusal, got {other:?}"),
    }
    for id in ids {
        let rec = e.broker.get(id).await.unwrap().unwrap();
        assert_eq!(rec.state, TaskState::Pending, "{id}");
        assert_eq!(rec.attempts, 0, "{id} was leased");
    }
    if let (Some(a), Some(sink)) = (auditor, sink) {
        a.close().await.unwrap();
        let leased = sink
            .read_records()
            .await
            .unwrap()
            .into_iter()
            .filter_map(|l| l.item.ok())
            .filter(|r| {
                !matches!(
                    r.event,
                    AuditEvent::Enqueued { .. } | AuditEvent::EnqueuedBatch { .. }
                )
            })
            .count();
        assert_eq!(leased, 0, "the refused worker wrote task records");
    }
    // The right keyring runs them all.
    let handle = fast(Worker::builder(e.broker.clone(), e.keyring.clone()))
        .handle(|_: Greet, _ctx: TaskContext| async { Ok(()) })
        .build()
        .unwrap()
        .spawn();
    let all = e.client.broker().list(&Default::default()).await.unwrap();
    for rec in all {
        wait_state(&e.broker, rec.id, TaskState::Completed).await;
    }
    handle.shutdown().await.unwrap();
}

/// Finding 7: a task sealed with a key this keyring lacks is held (back to
/// `retry`, no error, not archived) while the worker runs what it can open.
pub async fn finding_7_a_task_whose_key_the_keyring_lacks_is_held_not_archived(e: Scene) {
    let ours = e
        .client
        .enqueue(&Greet { name: "y".into() }, EnqueueOptions::new())
        .await
        .unwrap();
    // Another keyring on the same broker: accepted only as a deliberate
    // new deployment (its check values are then recorded beside ours).
    let other = Client::builder(e.broker.clone(), Keyring::generate())
        .producer("elsewhere")
        .accept_new_keyring(true)
        .build();
    let theirs = other
        .enqueue(&Greet { name: "x".into() }, EnqueueOptions::new())
        .await
        .unwrap();
    let handle = fast(Worker::builder(e.broker.clone(), e.keyring.clone()))
        .handle(|_: Greet, _ctx: TaskContext| async { Ok(()) })
        .build()
        .unwrap()
        .spawn();
    wait_state(&e.broker, ours, TaskState::Completed).await;
    let held = wait_state(&e.broker, theirs, TaskState::Retry).await;
    assert_eq!(held.archive_reason, None);
    assert!(held.last_error.is_none(), "a hold stores no error");
    assert!(
        held.run_at_ms >= crate::model::clock::wall_clock_ms() + 20_000,
        "held for about 30 s, not retried at once"
    );
    let report = handle.shutdown().await.unwrap();
    assert_eq!(
        report.integrity_failures, 0,
        "a missing key is not tampering"
    );
    assert_eq!(report.archived, 0);
}

/// Finding 7: revealing with a keyring that cannot open the task fails and
/// writes no `payload_revealed` record; the right keyring writes one.
pub async fn finding_7_reveal_with_a_wrong_keyring_writes_no_payload_revealed_record(e: Scene) {
    let sink = e.audit_sink();
    let id = e
        .client
        .enqueue(&Greet { name: "x".into() }, EnqueueOptions::new())
        .await
        .unwrap();
    let revealed_records = |sink: Arc<dyn AuditSink>| async move {
        sink.read_records()
            .await
            .unwrap()
            .into_iter()
            .filter_map(|l| l.item.ok())
            .filter(|r| matches!(&r.event, AuditEvent::PayloadRevealed { task, .. } if *task == id))
            .count()
    };

    let wrong = Arc::new(Keyring::generate());
    let auditor = Auditor::start(sink.clone(), &wrong).unwrap();
    let client = Client::builder(e.broker.clone(), wrong.clone())
        .audit(auditor.clone())
        .build();
    let err = client.reveal(id, "mallory").await.unwrap_err();
    assert!(matches!(err, Error::Integrity(_)), "{err:?}");
    auditor.close().await.unwrap();
    assert_eq!(
        revealed_records(sink.clone()).await,
        0,
        "recorded a reveal that did not happen"
    );

    let auditor = Auditor::start(sink.clone(), &e.keyring).unwrap();
    let client = Client::builder(e.broker.clone(), e.keyring.clone())
        .audit(auditor.clone())
        .build();
    let shown = client.reveal(id, "alice").await.unwrap();
    assert!(!shown.payload.is_empty());
    auditor.close().await.unwrap();
    assert_eq!(revealed_records(sink).await, 1);
}
