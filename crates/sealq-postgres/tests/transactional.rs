//! Transactional enqueue (`PostgresBroker::enqueue_in`): a task sealed by
//! a client and enqueued inside the application's own transaction exists
//! only if that transaction commits.

mod support;

use std::sync::Arc;
use std::time::Duration;

use sealq::broker::{Broker, DequeueRequest, EnqueueResult, ListQuery};
use sealq::{Client, Keyring, RawTask};
use sealq_postgres::PostgresBroker;

async fn setup() -> (PostgresBroker, Client, tokio_postgres::Client) {
    let url = support::fresh_db().await;
    let broker = PostgresBroker::connect(&url).await.unwrap();
    let client = Client::builder(Arc::new(broker.clone()), Arc::new(Keyring::generate()))
        .producer("tests")
        .build();
    let (pg, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    pg.batch_execute("CREATE TABLE orders (id integer PRIMARY KEY)")
        .await
        .unwrap();
    (broker, client, pg)
}

fn raw(n: u32) -> RawTask {
    RawTask::from_json(
        "invoice.send",
        &serde_json::json!({ "order": n }),
        Default::default(),
    )
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transactional_enqueue_a_rolled_back_transaction_leaves_no_task() {
    let (broker, client, mut pg) = setup().await;
    let task = client.seal_async(raw(1)).await.unwrap();
    let id = task.id;
    let tx = pg.transaction().await.unwrap();
    tx.execute("INSERT INTO orders (id) VALUES (1)", &[])
        .await
        .unwrap();
    let r = broker.enqueue_in(&tx, vec![task]).await.unwrap();
    assert_eq!(r, vec![EnqueueResult::Enqueued]);
    // Inside the transaction the task is there; outside, not yet.
    assert!(
        broker.get(id).await.unwrap().is_none(),
        "not visible before commit"
    );
    tx.rollback().await.unwrap();

    assert!(broker.get(id).await.unwrap().is_none());
    assert!(broker.list(&ListQuery::default()).await.unwrap().is_empty());
    let stats = broker.stats().await.unwrap();
    assert!(stats.iter().all(|s| s.pending == 0), "{stats:?}");
    let orders: i64 = pg
        .query_one("SELECT count(*) FROM orders", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(orders, 0);
    // The id was never stored, so it is not remembered either: the same
    // sealed task can be enqueued again later.
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transactional_enqueue_a_committed_transaction_stores_the_task_and_wakes_workers() {
    let (broker, client, mut pg) = setup().await;
    let task = client.seal_async(raw(2)).await.unwrap();
    let id = task.id;
    let waiter = {
        let broker = broker.clone();
        tokio::spawn(async move {
            broker
                .wait_for_work(&["default".to_owned()], Duration::from_secs(120))
                .await
        })
    };
    // Let the waiter's LISTEN connection come up.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let tx = pg.transaction().await.unwrap();
    tx.execute("INSERT INTO orders (id) VALUES (2)", &[])
        .await
        .unwrap();
    broker.enqueue_in(&tx, vec![task]).await.unwrap();
    tx.commit().await.unwrap();

    tokio::time::timeout(Duration::from_secs(30), waiter)
        .await
        .expect("the commit wakes a waiting worker")
        .unwrap()
        .unwrap();
    let leased = broker
        .dequeue(&DequeueRequest {
            queues: vec!["default".to_owned()],
            max: 10,
            lease: Duration::from_secs(30),
            worker: "w".to_owned(),
        })
        .await
        .unwrap();
    assert_eq!(leased.len(), 1);
    assert_eq!(leased[0].record.id, id);
}

/// A client auditing to the broker's own audit tables, its transactional
/// wrapper, the sink and the audit keys.
async fn audited() -> (
    PostgresBroker,
    sealq_postgres::PostgresTxClient,
    sealq_postgres::PostgresAuditSink,
    sealq::audit::AuditKeys,
    sealq::Auditor,
    tokio_postgres::Client,
) {
    let (broker, _, pg) = setup().await;
    let keyring = Keyring::generate();
    let sink = sealq_postgres::PostgresAuditSink::from_broker(&broker);
    let auditor = sealq::Auditor::start(Arc::new(sink.clone()), &keyring).unwrap();
    let keys = sealq::audit::AuditKeys::from_keyring(&keyring).unwrap();
    let client = Client::builder(Arc::new(broker.clone()), Arc::new(keyring))
        .producer("tests")
        .audit(auditor.clone())
        .build();
    let txq = sealq_postgres::PostgresTxClient::new(client, broker.clone()).unwrap();
    (broker, txq, sink, keys, auditor, pg)
}

async fn verify(sink: &sealq_postgres::PostgresAuditSink, keys: &sealq::audit::AuditKeys) {
    let report = sealq::audit::verify_sink(sink, keys, &Default::default())
        .await
        .unwrap();
    assert!(report.is_ok(), "{:?}", report.faults);
    assert!(report.uncovered.is_empty(), "{:?}", report.uncovered);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transactional_enqueue_audited_commit_stores_the_task_and_its_audit_record() {
    let (broker, txq, sink, keys, auditor, mut pg) = audited().await;
    let tx = pg.transaction().await.unwrap();
    tx.execute("INSERT INTO orders (id) VALUES (3)", &[])
        .await
        .unwrap();
    let results = txq
        .enqueue_batch_in(&tx, vec![raw(3), raw(4)])
        .await
        .unwrap();
    let ids: Vec<sealq::TaskId> = results.into_iter().map(Result::unwrap).collect();
    // Before the commit nobody else sees the record either.
    assert!(sink.records_for_task(ids[0]).await.unwrap().is_empty());
    tx.commit().await.unwrap();

    for id in &ids {
        assert!(broker.get(*id).await.unwrap().is_some(), "task stored");
        let records = sink.records_for_task(*id).await.unwrap();
        let names: Vec<&str> = records
            .iter()
            .map(|l| l.item.as_ref().unwrap().event.name())
            .collect();
        assert_eq!(names, ["enqueued_batch"], "{id}");
        let r = records[0].item.as_ref().unwrap();
        assert!(r.writer.contains(":tx:"), "{}", r.writer);
    }
    verify(&sink, &keys).await;

    // One task alone: an `enqueued` record of its own chain.
    let tx = pg.transaction().await.unwrap();
    let id = txq.enqueue_raw_in(&tx, raw(5)).await.unwrap();
    tx.commit().await.unwrap();
    let records = sink.records_for_task(id).await.unwrap();
    assert_eq!(records.len(), 1);
    assert_eq!(records[0].item.as_ref().unwrap().event.name(), "enqueued");
    auditor.close().await.unwrap();
    verify(&sink, &keys).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transactional_enqueue_audited_rollback_leaves_neither_task_nor_audit_record() {
    let (broker, txq, sink, keys, auditor, mut pg) = audited().await;
    let before = sink.read_records_count().await;
    let tx = pg.transaction().await.unwrap();
    tx.execute("INSERT INTO orders (id) VALUES (6)", &[])
        .await
        .unwrap();
    let id = txq.enqueue_raw_in(&tx, raw(6)).await.unwrap();
    tx.rollback().await.unwrap();

    assert!(broker.get(id).await.unwrap().is_none(), "no task");
    assert!(
        sink.records_for_task(id).await.unwrap().is_empty(),
        "no audit record claiming it was enqueued"
    );
    assert_eq!(sink.read_records_count().await, before, "no record at all");
    auditor.close().await.unwrap();
    // Nothing half-written: the log still verifies.
    verify(&sink, &keys).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transactional_enqueue_audited_refuses_an_audit_log_outside_the_database() {
    let (broker, _, _pg) = setup().await;
    let keyring = Keyring::generate();
    let auditor =
        sealq::Auditor::start(Arc::new(sealq::audit::MemorySink::new()), &keyring).unwrap();
    let client = Client::builder(Arc::new(broker.clone()), Arc::new(keyring))
        .audit(auditor.clone())
        .build();
    let e = sealq_postgres::PostgresTxClient::new(client, broker)
        .expect_err("a memory audit log is refused");
    assert!(matches!(e, sealq::Error::Config(_)), "{e}");
    assert!(e.to_string().contains("audit"), "{e}");
    auditor.close().await.unwrap();
}

/// How many records a sink holds.
trait Count {
    async fn read_records_count(&self) -> usize;
}

impl Count for sealq_postgres::PostgresAuditSink {
    async fn read_records_count(&self) -> usize {
        sealq::AuditSink::read_records(self).await.unwrap().len()
    }
}

/// The value of the Prometheus sample `name{labels…}` in `text` whose
/// labels include every one of `labels` (0 when there is none).
fn sample(text: &str, name: &str, labels: &[&str]) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(&format!("{name}{{")))
        .filter(|l| labels.iter().all(|want| l.contains(want)))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Issue 23: a transactional enqueue counts what it stores in
/// `sealq_tasks_enqueued_total` and a queue-full refusal in
/// `sealq_policy_rejections_total`, as `Client::enqueue_batch` does (one
/// function, `sealq::client::settle_enqueue`, for both). On one thread, so
/// that the recorder set for this thread sees every count.
#[tokio::test(flavor = "current_thread")]
async fn transactional_enqueue_counts_enqueued_tasks_like_the_client() {
    let recorder = metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder();
    let handle = recorder.handle();
    let _local = metrics::set_default_local_recorder(&recorder);

    let (broker, client, mut pg) = setup().await;
    let txq = sealq_postgres::PostgresTxClient::new(client.clone(), broker.clone()).unwrap();
    let in_queue = |n: u32, queue: &str| {
        RawTask::from_json(
            "invoice.send",
            &serde_json::json!({ "order": n }),
            sealq::EnqueueOptions::new().queue(queue),
        )
        .unwrap()
    };
    let tx = pg.transaction().await.unwrap();
    let results = txq
        .enqueue_batch_in(&tx, vec![in_queue(1, "txm"), in_queue(2, "txm")])
        .await
        .unwrap();
    assert!(results.iter().all(Result::is_ok), "{results:?}");
    tx.commit().await.unwrap();
    let text = handle.render();
    let counted = |text: &str, queue: &str| {
        sample(
            text,
            "sealq_tasks_enqueued_total",
            &[&format!("queue=\"{queue}\""), "task_type=\"invoice.send\""],
        )
    };
    assert_eq!(counted(&text, "txm"), 2.0, "{text}");

    // The client counts the same way: one more task, one more count.
    client.enqueue_raw(in_queue(3, "plain")).await.unwrap();
    assert_eq!(counted(&handle.render(), "plain"), 1.0);

    // A full queue: refused in the transaction, counted as a refusal by
    // the depth cap, not as enqueued.
    broker.set_max_depth("capped", Some(1)).await.unwrap();
    let tx = pg.transaction().await.unwrap();
    let results = txq
        .enqueue_batch_in(&tx, vec![in_queue(4, "capped"), in_queue(5, "capped")])
        .await
        .unwrap();
    tx.commit().await.unwrap();
    assert!(results[0].is_ok(), "{:?}", results[0]);
    assert!(
        matches!(
            results[1],
            Err(sealq::Error::QueueFull { max_depth: 1, .. })
        ),
        "{:?}",
        results[1]
    );
    let text = handle.render();
    assert_eq!(counted(&text, "capped"), 1.0, "{text}");
    assert_eq!(
        sample(
            &text,
            "sealq_policy_rejections_total",
            &["queue=\"capped\"", "rule=\"max_depth\""]
        ),
        1.0,
        "{text}"
    );
}
