//! The audit log on a real run: a producer and a worker, each with its own
//! auditor writing to the backend's audit sink, then verification and each
//! task's history. Tampering with the stored log is backend-specific: the
//! backends' own tests call [`real_run`] and then edit their store.

use std::sync::Arc;

use super::{Scene, wait_for};
use crate::audit::{Auditor, MemorySink, VerifyOptions, verify_sink};
use crate::client::{Client, RawTask};
use crate::model::audit_event::AuditEvent;
use crate::model::id::TaskId;
use crate::model::options::EnqueueOptions;
use crate::seal::audit_chain::AuditKeys;
use crate::worker::{TaskError, Worker};

/// What [`real_run`] leaves for a backend's tampering test.
#[derive(Debug)]
pub struct RealRun {
    /// The keys that verify the log.
    pub keys: AuditKeys,
    /// A task that succeeded.
    pub ok: TaskId,
    /// A task that failed and was archived `skip_retry`.
    pub failing: TaskId,
    /// Records the worker's auditor wrote.
    pub worker_records: u64,
}

/// A run every backend's audit log must record faithfully: producer
/// `producer-1` enqueues one task that succeeds, one that fails
/// (`skip_retry`), a batch of 200, one the payload policy refuses, and an
/// erasure; worker `worker-1` (checkpoint every 50 records) runs them. The
/// log then verifies with two writers and enough checkpoints, each task's
/// history reads `enqueued, leased, started, succeeded` (or `failed,
/// archived`), every task is in exactly one record of each kind, batch or
/// not, and neither the error text nor the card number is in the log.
pub async fn real_run(e: &Scene) -> RealRun {
    let sink = e.audit_sink();
    let keyring = &e.keyring;
    let producer_audit = Auditor::builder(sink.clone(), keyring)
        .writer("producer-1")
        .start()
        .unwrap();
    let worker_audit = Auditor::builder(sink.clone(), keyring)
        .writer("worker-1")
        .checkpoint_every(50)
        .start()
        .unwrap();
    let client = Client::builder(e.broker.clone(), keyring.clone())
        .producer("producer-1")
        .audit(producer_audit.clone())
        .build();
    let handle = Worker::builder(e.broker.clone(), keyring.clone())
        .maintenance_interval(std::time::Duration::from_millis(20))
        .audit(worker_audit.clone())
        .handle_raw("ok", |_p, _c| async { Ok(()) })
        .handle_raw("fail", |_p, _c| async {
            Err(TaskError::skip_retry("boom: the secret text"))
        })
        .build()
        .unwrap()
        .spawn();

    let json = |kind: &str, v: serde_json::Value| {
        RawTask::from_json(kind, &v, EnqueueOptions::new()).unwrap()
    };
    let ok = client
        .enqueue_raw(json("ok", serde_json::json!({"x": 1})))
        .await
        .unwrap();
    let failing = client
        .enqueue_raw(json("fail", serde_json::json!({"x": 2})))
        .await
        .unwrap();
    let batch = (0..200)
        .map(|i| json("ok", serde_json::json!({ "i": i })))
        .collect();
    client.enqueue_batch(batch).await.unwrap();
    // Refused by the policy: recorded with rule and path, never the value.
    let card = serde_json::json!({"card": "4242 4242 4242 4242"});
    assert!(client.enqueue_raw(json("ok", card)).await.is_err());
    // An erasure receipt goes to the same log.
    client.erase_subject("user-42", "dpo").await.unwrap();

    wait_for(|| {
        let r = handle.stats().report();
        r.succeeded + r.archived >= 202
    })
    .await;
    handle.shutdown().await.unwrap();
    producer_audit.close().await.unwrap();
    let stats = worker_audit.close().await.unwrap();
    // Leases, starts and successes share batch records (counted below).
    assert!(stats.records >= 3, "{stats:?}");

    let keys = AuditKeys::from_keyring(keyring).unwrap();
    let report = verify_sink(&*sink, &keys, &VerifyOptions::default())
        .await
        .unwrap();
    assert!(report.is_ok(), "{:?}", report.faults);
    assert_eq!(report.writers, 2);
    // The worker checkpoints every 50 of its records and at close (unless
    // the last one covers everything); the producer at close.
    assert!(
        report.checkpoints > stats.records.div_ceil(50),
        "{} checkpoints for {} worker records",
        report.checkpoints,
        stats.records
    );

    let all = sink.read_records().await.unwrap();
    // One task's history, in time order; a batch record stands for its
    // entry about the task.
    let history = |id: TaskId| {
        let mut rs: Vec<_> = all
            .iter()
            .map(|l| l.item.as_ref().unwrap())
            .filter(|r| r.event.for_task(id).is_some())
            .collect();
        rs.sort_by_key(|r| (r.event.time_for_task(id).unwrap_or(r.time_ms), r.seq));
        rs.iter()
            .map(|r| {
                r.event
                    .for_task(id)
                    .expect("a record about the task")
                    .name()
            })
            .collect::<Vec<_>>()
    };
    assert_eq!(history(ok), ["enqueued", "leased", "started", "succeeded"]);
    assert_eq!(
        history(failing),
        ["enqueued", "leased", "started", "failed", "archived"]
    );

    // Every task was leased once and every `ok` task succeeded once, in
    // batch records that each name several tasks.
    let (mut leased, mut succeeded, mut batches) = (Vec::new(), Vec::new(), 0);
    let (mut enqueued, mut started) = (Vec::new(), Vec::new());
    for r in all.iter().map(|l| &l.item.as_ref().unwrap().event) {
        match r {
            AuditEvent::Enqueued { .. } | AuditEvent::EnqueuedBatch { .. } => {
                enqueued.extend(r.tasks())
            }
            AuditEvent::Started { .. } | AuditEvent::StartedBatch { .. } => {
                started.extend(r.tasks())
            }
            AuditEvent::LeasedBatch { tasks, .. } => {
                batches += 1;
                leased.extend(tasks.iter().map(|e| e.task));
            }
            AuditEvent::SucceededBatch { tasks, .. } => {
                succeeded.extend(tasks.iter().map(|e| e.task));
            }
            AuditEvent::Leased { .. } | AuditEvent::Succeeded { .. } => {
                panic!("a worker wrote a one-task lease or success record: {r:?}")
            }
            _ => {}
        }
    }
    assert_eq!(leased.len(), 202);
    assert_eq!(started.len(), 202);
    // Two one-task calls and one call of 200: two `enqueued`, one batch.
    assert_eq!(enqueued.len(), 202);
    assert!(all.iter().any(|l| matches!(
        &l.item.as_ref().unwrap().event,
        AuditEvent::EnqueuedBatch { tasks, .. } if tasks.len() == 200
    )));
    assert_eq!(succeeded.len(), 201);
    assert!(leased.contains(&ok) && leased.contains(&failing));
    assert!(succeeded.contains(&ok) && !succeeded.contains(&failing));
    assert!(batches < 202, "no lease call took several tasks");
    // Every task is in exactly one record of each kind, batch or not.
    let covered = |kinds: &[&str]| {
        all.iter()
            .map(|l| &l.item.as_ref().unwrap().event)
            .filter(|e| kinds.contains(&e.name()))
            .flat_map(|e| e.tasks())
            .count()
    };
    assert_eq!(covered(&["enqueued", "enqueued_batch"]), 202);
    assert_eq!(covered(&["leased", "leased_batch"]), 202);
    assert_eq!(covered(&["started", "started_batch"]), 202);
    assert_eq!(covered(&["succeeded", "succeeded_batch"]), 201);
    let text: String = all
        .iter()
        .map(|l| crate::audit::record_line(l.item.as_ref().unwrap()))
        .collect();
    assert!(
        !text.contains("secret text"),
        "error text leaked into the audit log"
    );
    assert!(
        !text.contains("4242 4242"),
        "card number leaked into the audit log"
    );
    assert!(text.contains(r#""type":"policy_rejected""#));
    assert!(text.contains(r#""reason":"skip_retry""#));
    assert!(text.contains(r#""type":"subject_erased""#));
    RealRun {
        keys,
        ok,
        failing,
        worker_records: stats.records,
    }
}

/// [`real_run`] on the backend's audit sink.
pub async fn a_real_run_verifies_and_shows_each_tasks_history(e: Scene) {
    real_run(&e).await;
}

/// A task the worker cannot open (its ciphertext altered in the broker) is
/// recorded as leased then archived `integrity`, nothing else.
pub async fn integrity_refusals_are_audited(e: Scene) {
    let sink = Arc::new(MemorySink::new());
    let worker_keys = e.keyring.clone();
    // One bit of the ciphertext flipped, as a broker writer could.
    let mut task = e
        .client
        .seal(RawTask::from_json("ok", &serde_json::json!({}), EnqueueOptions::new()).unwrap())
        .unwrap();
    let last = task.envelope.len() - 1;
    task.envelope[last] ^= 0x01;
    let id = task.id;
    e.broker.enqueue(vec![task]).await.unwrap();
    // A task that opens, so the worker's keyring check passes.
    e.client
        .enqueue_raw(
            RawTask::from_json("ok", &serde_json::json!({}), EnqueueOptions::new()).unwrap(),
        )
        .await
        .unwrap();
    let audit = Auditor::start(sink.clone(), &worker_keys).unwrap();
    let handle = Worker::builder(e.broker.clone(), worker_keys.clone())
        .audit(audit.clone())
        .handle_raw("ok", |_p, _c| async { Ok(()) })
        .build()
        .unwrap()
        .spawn();
    wait_for(|| handle.stats().report().archived >= 1).await;
    handle.shutdown().await.unwrap();
    audit.close().await.unwrap();
    let events: Vec<AuditEvent> = crate::audit::AuditSink::read_records(&*sink)
        .await
        .unwrap()
        .into_iter()
        .filter_map(|l| l.item.ok())
        .map(|r| r.event)
        .filter_map(|ev| ev.for_task(id))
        .collect();
    assert!(
        matches!(events.as_slice(), [AuditEvent::Leased { .. }, AuditEvent::Archived { reason, .. }] if reason == "integrity"),
        "{events:?}"
    );
}
