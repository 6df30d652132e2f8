//! The audit log in Redis streams on a real run: a producer and a worker on
//! the Redis broker, each with its own auditor writing to the broker's
//! audit streams, then verification, one task's history, and tampering
//! with the stream (`XDEL`) named by verification.

mod support;

use std::sync::Arc;
use std::time::Duration;

use sealq::audit::{AuditKeys, AuditSink, Auditor, Fault, VerifyOptions, verify_sink};
use sealq::broker::Broker;
use sealq::{Client, EnqueueOptions, Keyring, RawTask, TaskError, Worker};
use sealq_redis::RedisAuditSink;

async fn wait_for(mut f: impl FnMut() -> bool) {
    for _ in 0..1000 {
        if f() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("condition not reached in 10 s");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_real_run_verifies_and_an_xdel_is_named_as_deleted() {
    let redis = support::shared_broker(sealq::clock::system_clock()).await;
    let broker: Arc<dyn Broker> = Arc::new(redis.clone());
    let sink = Arc::new(RedisAuditSink::open(&redis).await.unwrap());
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
    let handle = Worker::builder(broker.clone(), keyring.clone())
        .maintenance_interval(Duration::from_millis(20))
        .audit(worker_audit.clone())
        .handle_raw("ok", |_p, _c| async { Ok(()) })
        .handle_raw("fail", |_p, _c| async {
            Err(TaskError::skip_retry("boom: the secret text"))
        })
        .build()
        .unwrap()
        .spawn();

    let ok = client
        .enqueue_raw(
            RawTask::from_json("ok", &serde_json::json!({"x": 1}), EnqueueOptions::new()).unwrap(),
        )
        .await
        .unwrap();
    client
        .enqueue_raw(
            RawTask::from_json("fail", &serde_json::json!({"x": 2}), EnqueueOptions::new())
                .unwrap(),
        )
        .await
        .unwrap();
    let batch = (0..200)
        .map(|i| {
            RawTask::from_json("ok", &serde_json::json!({ "i": i }), EnqueueOptions::new()).unwrap()
        })
        .collect();
    client.enqueue_batch(batch).await.unwrap();
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

    // One task's history, from the `t` field of the entries.
    let mut history: Vec<_> = sink
        .records_for_task(ok)
        .await
        .unwrap()
        .into_iter()
        .map(|l| l.item.unwrap())
        .collect();
    history.sort_by_key(|r| (r.event.time_for_task(ok).unwrap_or(r.time_ms), r.seq));
    // Batch records (`leased_batch`, `succeeded_batch`) stand for their entry.
    let names: Vec<_> = history
        .iter()
        .map(|r| {
            r.event
                .for_task(ok)
                .expect("a record about the task")
                .name()
        })
        .collect();
    assert_eq!(names, ["enqueued", "leased", "started", "succeeded"]);
    let all = sink.read_records().await.unwrap();
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
        .map(|l| sealq::audit::record_line(l.item.as_ref().unwrap()))
        .collect();
    assert!(!text.contains("secret text"));
    assert!(text.contains(r#""type":"subject_erased""#));

    // XDEL one record from the middle of the worker's chain.
    let s = support::shared();
    let entries = s.cli(&["XRANGE", sink.records_key(), "-", "+"]);
    assert!(!entries.is_empty());
    let mut conn = redis::Client::open(s.url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let raw: Vec<(String, Vec<(String, String)>)> = redis::cmd("XRANGE")
        .arg(sink.records_key())
        .arg("-")
        .arg("+")
        .query_async(&mut conn)
        .await
        .unwrap();
    let (victim, _) = raw
        .iter()
        .find(|(_, f)| {
            let get = |name: &str| {
                f.iter()
                    .find(|(k, _)| k == name)
                    .and_then(|(_, v)| v.parse::<u64>().ok())
            };
            f.iter().any(|(k, v)| k == "w" && v == "worker-1")
                && matches!((get("s"), get("n")), (Some(s), Some(n)) if s <= 10 && 10 < s + n)
        })
        .expect("the entry holding worker-1 seq 10");
    let n: i64 = redis::cmd("XDEL")
        .arg(sink.records_key())
        .arg(victim)
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(n, 1);
    let report = verify_sink(&*sink, &keys, &VerifyOptions::default())
        .await
        .unwrap();
    assert!(!report.is_ok());
    assert!(
        report.faults.iter().any(|f| matches!(
            f,
            Fault::Deleted { writer, from_seq, to_seq, .. }
                if writer == "worker-1" && *from_seq <= 10 && 10 <= *to_seq
        )),
        "{:?}",
        report.faults
    );
    let text = report
        .faults
        .iter()
        .map(|f| f.describe("entry"))
        .collect::<Vec<_>>()
        .join("\n");
    assert!(text.contains("deleted"), "{text}");

    // Deleting the checkpoint stream is reported too.
    let _: i64 = redis::cmd("DEL")
        .arg(sink.checkpoints_key())
        .query_async(&mut conn)
        .await
        .unwrap();
    let report = verify_sink(&*sink, &keys, &VerifyOptions::default())
        .await
        .unwrap();
    assert!(
        report
            .faults
            .iter()
            .any(|f| matches!(f, Fault::CheckpointsMissing)),
        "{:?}",
        report.faults
    );
}

#[tokio::test]
async fn the_cap_is_never_smaller_than_the_checkpoint_window() {
    let redis = support::shared_broker(sealq::clock::system_clock()).await;
    let err = RedisAuditSink::with_limits(&redis, 999, 1000)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("checkpoint window"), "{err}");
    let sink = RedisAuditSink::with_limits(&redis, 1000, 1000)
        .await
        .unwrap();
    assert_eq!(sink.max_len(), 1000);
    // A fresh sink has an empty checkpoint stream, not a missing one.
    assert_eq!(
        sink.read_checkpoints().await.unwrap().map(|c| c.len()),
        Some(0)
    );
    assert!(sink.read_records().await.unwrap().is_empty());
    // Opening again leaves existing checkpoints alone.
    let keyring = Keyring::generate();
    let a = Auditor::start(Arc::new(sink.clone()), &keyring).unwrap();
    a.record(sealq::audit::AuditEvent::QueuePaused {
        queue: "q".into(),
        operator: "op".into(),
    });
    a.close().await.unwrap();
    let again = RedisAuditSink::open(&redis).await.unwrap();
    assert_eq!(
        again.read_checkpoints().await.unwrap().map(|c| c.len()),
        Some(1)
    );
    let report = verify_sink(
        &again,
        &AuditKeys::from_keyring(&keyring).unwrap(),
        &VerifyOptions::default(),
    )
    .await
    .unwrap();
    assert!(report.is_ok(), "{:?}", report.faults);
}
