//! The audit log in Redis streams, edited behind the verifier's back. The
//! run itself is the shared scenario ([`sealq::testkit::scenarios::audit`],
//! run by `tests/scenarios.rs`); here it is followed by Redis-only checks:
//! the per-task lookup from the entries' `t` field, an `XDEL` named as a
//! deletion, a deleted checkpoint stream, and the stream caps.

mod support;

use std::sync::Arc;

use sealq::Keyring;
use sealq::audit::{AuditKeys, AuditSink, Auditor, Fault, VerifyOptions, verify_sink};
use sealq::testkit::Harness;
use sealq::testkit::scenarios::{audit::real_run, scene};
use sealq_redis::RedisAuditSink;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_real_run_verifies_and_an_xdel_is_named_as_deleted() {
    let redis = support::shared_broker(sealq::clock::system_clock()).await;
    let sink = Arc::new(RedisAuditSink::open(&redis).await.unwrap());
    let harness = Harness::new(redis).with_audit_sink(sink.clone());
    let run = real_run(&scene(&harness)).await;
    let (keys, ok) = (run.keys, run.ok);

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
