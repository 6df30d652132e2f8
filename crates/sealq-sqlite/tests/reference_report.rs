//! `sealq::payload_report` over a real SQLite broker: sizes per queue and
//! type, budgets from the policy (including `warn` mode), largest first.

use std::sync::Arc;

use sealq::broker::Broker;
use sealq::{Client, EnqueueOptions, Keyring, PayloadPolicy, PolicyMode, RawTask, payload_report};
use sealq_sqlite::SqliteBroker;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn report_ranks_types_by_size_and_flags_over_budget() -> Result<(), Box<dyn std::error::Error>>
{
    let dir = tempfile::tempdir().unwrap();
    let broker: Arc<dyn Broker> = Arc::new(SqliteBroker::open(dir.path().join("q.db")).unwrap());
    let keyring = Arc::new(Keyring::generate());
    // `bulk` only warns about its 1 KiB budget, so oversized payloads get in.
    let policy = PayloadPolicy::default()
        .queue_max_bytes("bulk", 1024)
        .queue_size_mode("bulk", PolicyMode::Warn);
    let client = Client::builder(broker.clone(), keyring)
        .policy(policy.clone())
        .build();

    let blob = |n: usize| serde_json::json!({ "data": "x".repeat(n) });
    let mut tasks = Vec::new();
    // 1200 small tasks (more than one page of the broker listing).
    for i in 0..1200 {
        tasks.push(RawTask::from_json(
            "small.ref",
            &serde_json::json!({ "id": i }),
            EnqueueOptions::new(),
        )?);
    }
    for n in [100, 2000, 3000] {
        tasks.push(RawTask::from_json(
            "bulk.export",
            &blob(n),
            EnqueueOptions::new().queue("bulk"),
        )?);
    }
    for n in [500, 600] {
        tasks.push(RawTask::from_json(
            "medium.doc",
            &blob(n),
            EnqueueOptions::new(),
        )?);
    }
    for r in client.enqueue_batch(tasks).await? {
        r?;
    }

    let report = payload_report(&*broker, &policy).await?;
    let rows: Vec<(&str, &str, u64)> = report
        .iter()
        .map(|s| (s.queue.as_str(), s.kind.as_str(), s.count))
        .collect();
    assert_eq!(
        rows,
        [
            ("bulk", "bulk.export", 3),
            ("default", "medium.doc", 2),
            ("default", "small.ref", 1200)
        ]
    );
    let bulk = &report[0];
    assert_eq!((bulk.budget, bulk.budget_mode), (1024, "warn"));
    assert_eq!(bulk.over_budget, 2);
    assert!(bulk.is_over_budget());
    assert!(bulk.sealed_max > 3000 && bulk.sealed_max == bulk.sealed_p99);
    // The payload size is the envelope minus header and tag: exactly the
    // serialized size the policy checked.
    let serialized = sealq::task::encode_payload(&blob(3000))?.len() as u64;
    assert_eq!(bulk.payload_max, serialized);
    assert_eq!(bulk.budget_used_percent, (serialized * 100).div_ceil(1024));

    let medium = &report[1];
    assert_eq!((medium.budget, medium.budget_mode), (64 * 1024, "reject"));
    assert!(!medium.is_over_budget());
    assert!(medium.sealed_p50 < medium.sealed_max);
    Ok(())
}
