//! The audit log on a real run: a producer and a worker on an SQLite broker,
//! each with its own auditor, then verification and one task's history.

use std::sync::Arc;
use std::time::Duration;

use sealq::audit::{AuditEvent, AuditKeys, AuditSink, Auditor, Fault, VerifyOptions, verify_sink};
use sealq::broker::Broker;
use sealq::{Client, EnqueueOptions, Keyring, RawTask, TaskError, Worker};
use sealq_sqlite::{SqliteAuditSink, SqliteBroker};

async fn wait_for(mut f: impl FnMut() -> bool) {
    for _ in 0..500 {
        if f() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("condition not reached in 5 s");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_real_run_verifies_and_shows_each_tasks_history() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("q.db");
    let broker: Arc<dyn Broker> = Arc::new(SqliteBroker::open(&db).unwrap());
    let sink = Arc::new(SqliteAuditSink::open(&db).unwrap());
    let keyring = Arc::new(Keyring::generate());

    let producer_audit = Auditor::builder(sink.clone(), &keyring)
        .writer("producer-1")
        .start()
        .unwrap();
    let worker_audit = Auditor::builder(sink.clone(), &keyring)
        .writer("worker-1")
        .checkpoint_every(50)
        .start()
        .unwrap();
    let client = Client::builder(broker.clone(), keyring.clone())
        .producer("producer-1")
        .audit(producer_audit.clone())
        .build();
    let worker = Worker::builder(broker.clone(), keyring.clone())
        .maintenance_interval(Duration::from_millis(20))
        .audit(worker_audit.clone())
        .handle_raw("ok", |_p, _c| async { Ok(()) })
        .handle_raw("fail", |_p, _c| async {
            Err(TaskError::skip_retry("boom: the secret text"))
        })
        .build()
        .unwrap();
    let handle = worker.spawn();

    let ok = client
        .enqueue_raw(
            RawTask::from_json("ok", &serde_json::json!({"x": 1}), EnqueueOptions::new()).unwrap(),
        )
        .await
        .unwrap();
    let failing = client
        .enqueue_raw(
            RawTask::from_json("fail", &serde_json::json!({"x": 2}), EnqueueOptions::new())
                .unwrap(),
        )
        .await
        .unwrap();
    let mut batch = Vec::new();
    for i in 0..200 {
        batch.push(
            RawTask::from_json("ok", &serde_json::json!({ "i": i }), EnqueueOptions::new())
                .unwrap(),
        );
    }
    client.enqueue_batch(batch).await.unwrap();
    // Refused by the policy: recorded with rule and path, never the value.
    let card = serde_json::json!({"card": "4242 4242 4242 4242"});
    assert!(
        client
            .enqueue_raw(RawTask::from_json("ok", &card, EnqueueOptions::new()).unwrap())
            .await
            .is_err()
    );

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

    let keys = AuditKeys::from_keyring(&keyring).unwrap();
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

    let names = |events: Vec<AuditEvent>| events.iter().map(|e| e.name()).collect::<Vec<_>>();
    let history = |id| {
        let sink = sink.clone();
        async move {
            let mut rs: Vec<_> = sink
                .records_for_task(id)
                .await
                .unwrap()
                .into_iter()
                .map(|l| l.item.unwrap())
                .collect();
            rs.sort_by_key(|r| r.event.time_for_task(id).unwrap_or(r.time_ms));
            // A batch record stands for its entry about this task.
            rs.into_iter()
                .map(|r| r.event.for_task(id).expect("a record about the task"))
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(
        names(history(ok).await),
        ["enqueued", "leased", "started", "succeeded"]
    );
    assert_eq!(
        names(history(failing).await),
        ["enqueued", "leased", "started", "failed", "archived"]
    );
    let all = sink.read_records().await.unwrap();
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
    let text: String = all
        .iter()
        .map(|l| sealq::audit::record_line(l.item.as_ref().unwrap()))
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

    // Editing one stored row is named by its row id.
    let conn = rusqlite::Connection::open(&db).unwrap();
    // Which row holds an `"attempt":1` depends on how the writers interleaved.
    let target: i64 = conn
        .query_row(
            "SELECT min(pos) FROM audit_records WHERE line LIKE '%\"attempt\":1%'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    conn.execute(
        "UPDATE audit_records SET line = replace(line, '\"attempt\":1', '\"attempt\":2') WHERE pos = ?1",
        [target],
    )
    .unwrap();
    let report = verify_sink(&*sink, &keys, &VerifyOptions::default())
        .await
        .unwrap();
    assert!(
        matches!(
            report.faults.as_slice(),
            [Fault::Edited { position, .. }] if *position as i64 == target
        ),
        "{:?}",
        report.faults
    );
    // Deleting the last rows of the worker is caught by its final checkpoint.
    conn.execute(
        "DELETE FROM audit_records WHERE pos IN (SELECT pos FROM audit_records WHERE writer = 'worker-1' ORDER BY pos DESC LIMIT 3)",
        [],
    )
    .unwrap();
    let report = verify_sink(&*sink, &keys, &VerifyOptions::default())
        .await
        .unwrap();
    assert!(
        report
            .faults
            .iter()
            .any(|f| matches!(f, Fault::Truncated { writer, .. } if writer == "worker-1")),
        "{:?}",
        report.faults
    );
}

#[tokio::test]
async fn integrity_refusals_are_audited() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("q.db");
    let broker: Arc<dyn Broker> = Arc::new(SqliteBroker::open(&db).unwrap());
    let sink = Arc::new(sealq::audit::MemorySink::new());
    let producer_keys = Arc::new(Keyring::generate());
    let worker_keys = Arc::new(Keyring::generate());
    let client = Client::builder(broker.clone(), producer_keys).build();
    // Sealed with another keyring: the worker cannot open it.
    let id = client
        .enqueue_raw(
            RawTask::from_json("ok", &serde_json::json!({}), EnqueueOptions::new()).unwrap(),
        )
        .await
        .unwrap();
    let audit = Auditor::start(sink.clone(), &worker_keys).unwrap();
    let worker = Worker::builder(broker.clone(), worker_keys.clone())
        .audit(audit.clone())
        .handle_raw("ok", |_p, _c| async { Ok(()) })
        .build()
        .unwrap();
    let handle = worker.spawn();
    wait_for(|| handle.stats().report().archived >= 1).await;
    handle.shutdown().await.unwrap();
    audit.close().await.unwrap();
    let events: Vec<AuditEvent> = sink
        .read_records()
        .await
        .unwrap()
        .into_iter()
        .filter_map(|l| l.item.ok())
        .map(|r| r.event)
        .filter_map(|e| e.for_task(id))
        .collect();
    assert!(
        matches!(events.as_slice(), [AuditEvent::Leased { .. }, AuditEvent::Archived { reason, .. }] if reason == "integrity"),
        "{events:?}"
    );
}
