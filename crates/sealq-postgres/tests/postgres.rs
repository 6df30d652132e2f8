//! Postgres-specific behaviour: connecting, the schema version check.

mod support;

use sealq::BrokerErrorKind;
use sealq_postgres::{PostgresBroker, SCHEMA_VERSION};

#[tokio::test]
async fn connect_migrates_a_new_database_to_the_current_version() {
    let url = support::fresh_db().await;
    let broker = PostgresBroker::connect(&url).await.expect("connect");
    assert_eq!(broker.schema_version().await.unwrap(), SCHEMA_VERSION);
    // A second connect finds the current version and changes nothing.
    let again = PostgresBroker::connect(&url).await.expect("connect again");
    assert_eq!(again.schema_version().await.unwrap(), SCHEMA_VERSION);
}

#[tokio::test]
async fn a_newer_schema_is_refused_naming_both_versions() {
    let url = support::fresh_db().await;
    PostgresBroker::connect(&url).await.expect("connect");
    let client = support::client(&url).await;
    let newer = SCHEMA_VERSION + 5;
    client
        .execute(
            "INSERT INTO sealq.schema_version (version, name) VALUES ($1, 'future')",
            &[&newer],
        )
        .await
        .unwrap();
    let e = PostgresBroker::connect(&url).await.expect_err("refused");
    assert_eq!(e.kind, BrokerErrorKind::Config);
    let text = e.to_string();
    assert!(text.contains(&format!("version {newer}")), "{text}");
    assert!(
        text.contains(&format!("version {SCHEMA_VERSION}")),
        "{text}"
    );
}

/// A raw connection to `url`, its notifications forwarded to the receiver.
async fn listener(
    url: &str,
) -> (
    tokio_postgres::Client,
    tokio::sync::mpsc::UnboundedReceiver<(String, String)>,
) {
    use futures::StreamExt;
    let (client, mut conn) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .unwrap();
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        let mut messages = futures::stream::poll_fn(move |cx| conn.poll_message(cx));
        while let Some(Ok(m)) = messages.next().await {
            if let tokio_postgres::AsyncMessage::Notification(n) = m {
                let _ = tx.send((n.channel().to_owned(), n.payload().to_owned()));
            }
        }
    });
    client.batch_execute("LISTEN sealq_wake").await.unwrap();
    (client, rx)
}

/// The `LISTEN` connections on this database.
async fn listeners(client: &tokio_postgres::Client) -> i64 {
    client
        .query_one(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() \
             AND query ILIKE 'LISTEN%'",
            &[],
        )
        .await
        .unwrap()
        .get(0)
}

/// Wait (up to 20 s) until this database has exactly one `LISTEN`
/// connection; `what` names the failure.
async fn one_listener(client: &tokio_postgres::Client, what: &str) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let n = listeners(client).await;
        if n == 1 {
            return;
        }
        assert!(std::time::Instant::now() < deadline, "{what}");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

fn task(queue: &str, run_at_ms: i64) -> sealq::broker::NewTask {
    let now = sealq::clock::system_clock().now_ms();
    sealq::testkit::fixtures::task_at(queue, run_at_ms, now)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waking_notifies_once_per_queue_per_batch_with_the_queue_name_only() {
    use sealq::broker::Broker;
    let url = support::fresh_db().await;
    let broker = PostgresBroker::connect(&url).await.unwrap();
    let (_client, mut rx) = listener(&url).await;
    let now = sealq::clock::system_clock().now_ms();
    let mut batch: Vec<_> = (0..10).map(|_| task("alpha", now)).collect();
    batch.extend((0..3).map(|_| task("beta", now)));
    // Scheduled tasks are not ready: no notification for their queue.
    batch.push(task("later", now + 3_600_000));
    broker.enqueue(batch).await.unwrap();
    let mut got = Vec::new();
    while let Ok(Some(n)) =
        tokio::time::timeout(std::time::Duration::from_millis(500), rx.recv()).await
    {
        got.push(n);
    }
    got.sort();
    assert_eq!(
        got,
        vec![
            ("sealq_wake".to_owned(), "alpha".to_owned()),
            ("sealq_wake".to_owned(), "beta".to_owned()),
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn poll_only_mode_listens_to_nothing_and_still_wakes_on_the_interval() {
    use sealq::broker::{Ack, Broker, DequeueRequest, Outcome};
    let url = support::fresh_db().await;
    let poller = PostgresBroker::connect(&format!("{url}?poll_only=true&poll_interval_ms=200"))
        .await
        .unwrap();
    // Another process enqueues.
    let producer = PostgresBroker::connect(&url).await.unwrap();
    let waiter = {
        let poller = poller.clone();
        tokio::spawn(async move {
            let start = std::time::Instant::now();
            poller
                .wait_for_work(&["q".to_owned()], std::time::Duration::from_secs(120))
                .await
                .unwrap();
            start.elapsed()
        })
    };
    let now = sealq::clock::system_clock().now_ms();
    producer.enqueue(vec![task("q", now)]).await.unwrap();
    let waited = tokio::time::timeout(std::time::Duration::from_secs(30), waiter)
        .await
        .expect("a poll-only waiter wakes on its interval, not its 120 s timeout")
        .unwrap();
    assert!(waited < std::time::Duration::from_secs(30));
    // No LISTEN session on this database.
    let client = support::client(&url).await;
    let listening = listeners(&client).await;
    assert_eq!(listening, 0);
    // The whole path works with unnamed statements (as behind PgBouncer).
    let leased = poller
        .dequeue(&DequeueRequest {
            queues: vec!["q".to_owned()],
            max: 10,
            lease: std::time::Duration::from_secs(30),
            worker: "w".to_owned(),
        })
        .await
        .unwrap();
    assert_eq!(leased.len(), 1);
    let acked = poller
        .ack(vec![Ack {
            lease: leased[0].lease,
            outcome: Outcome::Complete { result: None },
        }])
        .await
        .unwrap();
    assert_eq!(acked, vec![sealq::broker::AckResult::Applied]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn opposite_queue_orders_and_key_orders_never_deadlock() {
    use sealq::broker::{Ack, Broker, DequeueRequest, Outcome, RateLimit};
    let url = support::fresh_db().await;
    let broker = PostgresBroker::connect(&url).await.unwrap();
    let limit = RateLimit {
        limit: 1_000_000,
        period_ms: 1_000,
    };
    for q in ["q1", "q2"] {
        broker.set_rate_limit(q, Some(limit)).await.unwrap();
        broker.set_max_depth(q, Some(1_000_000)).await.unwrap();
    }
    let now = sealq::clock::system_clock().now_ms();
    let run = |order: [&'static str; 2]| {
        let broker = broker.clone();
        tokio::spawn(async move {
            for i in 0..150u32 {
                // Unique keys and capped queues in this worker's order.
                let mut a = task(order[0], now);
                a.unique = Some((format!("k-{}-{i}", order[0]), 60_000));
                let mut b = task(order[1], now);
                b.unique = Some((format!("k-{}-{i}", order[1]), 60_000));
                broker.enqueue(vec![a, b]).await.expect("enqueue");
                let leased = broker
                    .dequeue(&DequeueRequest {
                        queues: order.iter().map(|q| q.to_string()).collect(),
                        max: 4,
                        lease: std::time::Duration::from_secs(60),
                        worker: "w".into(),
                    })
                    .await
                    .expect("dequeue");
                let acks = leased
                    .iter()
                    .map(|t| Ack {
                        lease: t.lease,
                        outcome: Outcome::Complete { result: None },
                    })
                    .collect();
                broker.ack(acks).await.expect("ack");
            }
        })
    };
    let (a, b) = (run(["q1", "q2"]), run(["q2", "q1"]));
    a.await.unwrap();
    b.await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bodies_go_with_their_tasks_on_delete_and_erasure() {
    use sealq::broker::Broker;
    let url = support::fresh_db().await;
    let broker = PostgresBroker::connect(&url).await.unwrap();
    let now = sealq::clock::system_clock().now_ms();
    let tasks: Vec<_> = (0..5).map(|_| task("q", now)).collect();
    let ids: Vec<_> = tasks.iter().map(|t| t.id).collect();
    broker.enqueue(tasks).await.unwrap();
    let client = support::client(&url).await;
    let bodies = || async {
        client
            .query_one("SELECT count(*) FROM sealq.task_bodies", &[])
            .await
            .unwrap()
            .get::<_, i64>(0)
    };
    assert_eq!(bodies().await, 5);
    assert_eq!(broker.delete(&ids[..2]).await.unwrap(), 2);
    assert_eq!(bodies().await, 3);
    broker.erase_tasks(&ids[2..]).await.unwrap();
    assert_eq!(bodies().await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_enqueues_with_one_unique_key_store_one_task() {
    use sealq::broker::{Broker, EnqueueResult};
    let url = support::fresh_db().await;
    let a = PostgresBroker::connect(&url).await.unwrap();
    let b = PostgresBroker::connect(&url).await.unwrap();
    let now = sealq::clock::system_clock().now_ms();
    for round in 0..20 {
        let key = format!("order-{round}");
        let mut t1 = task("q", now);
        t1.unique = Some((key.clone(), 60_000));
        let mut t2 = task("q", now);
        t2.unique = Some((key, 60_000));
        let (r1, r2) = tokio::join!(a.enqueue(vec![t1]), b.enqueue(vec![t2]));
        let mut results = vec![r1.unwrap().remove(0), r2.unwrap().remove(0)];
        results.sort_by_key(|r| matches!(r, EnqueueResult::Enqueued));
        assert!(
            matches!(results[0], EnqueueResult::Duplicate { .. })
                && results[1] == EnqueueResult::Enqueued,
            "round {round}: {results:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_listen_connection_comes_back_and_wakes_again() {
    use sealq::broker::Broker;
    let url = support::fresh_db().await;
    let worker = PostgresBroker::connect(&format!("{url}?poll_interval_ms=60000"))
        .await
        .unwrap();
    let producer = PostgresBroker::connect(&url).await.unwrap();
    let client = support::client(&url).await;
    // Start the listener, then cut its connection from the server side.
    worker
        .wait_for_work(&["q".to_owned()], std::time::Duration::from_millis(300))
        .await
        .unwrap();
    let cut: i64 = client
        .query_one(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity \
             WHERE datname = current_database() AND query ILIKE 'LISTEN%'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(cut, 1, "one LISTEN connection");
    // Wait for it to come back.
    one_listener(&client, "the listener never came back").await;
    // A notification from another process wakes a waiter well before the
    // (one minute) poll interval.
    let waiter = {
        let worker = worker.clone();
        tokio::spawn(async move {
            worker
                .wait_for_work(&["q".to_owned()], std::time::Duration::from_secs(120))
                .await
        })
    };
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    let now = sealq::clock::system_clock().now_ms();
    producer.enqueue(vec![task("q", now)]).await.unwrap();
    tokio::time::timeout(std::time::Duration::from_secs(20), waiter)
        .await
        .expect("woken by the notification after the listener reconnected")
        .unwrap()
        .unwrap();
}

/// Issue 23 (p99 enqueue-to-start): a wake-up that arrives after a
/// dequeue started and before the wait after it is not lost. A worker
/// whose dequeue found nothing waits only once that dequeue has returned;
/// a task committed meanwhile (too late for the dequeue's snapshot) used
/// to be noticed only at the next notification or poll. Here the poll
/// interval is ten minutes, so a lost wake-up would hold the wait for
/// ten minutes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn latency_a_wake_up_between_dequeue_and_wait_is_not_lost() {
    use sealq::broker::{Broker, DequeueRequest};
    use std::time::Duration;
    let url = support::fresh_db().await;
    let worker = PostgresBroker::connect(&format!("{url}?poll_interval_ms=600000"))
        .await
        .unwrap();
    let producer = PostgresBroker::connect(&url).await.unwrap();
    let queues = vec!["late".to_owned()];
    let dequeue = |worker: PostgresBroker| {
        let queues = queues.clone();
        async move {
            worker
                .dequeue(&DequeueRequest {
                    queues,
                    max: 10,
                    lease: Duration::from_secs(30),
                    worker: "w".to_owned(),
                })
                .await
                .unwrap()
        }
    };
    let wait = |worker: PostgresBroker| {
        let queues = queues.clone();
        async move {
            tokio::time::timeout(
                Duration::from_secs(60),
                worker.wait_for_work(&queues, Duration::from_secs(600)),
            )
            .await
        }
    };

    // The same process: its own enqueue wakes it without the listener.
    assert!(dequeue(worker.clone()).await.is_empty());
    let now = sealq::clock::system_clock().now_ms();
    worker.enqueue(vec![task("late", now)]).await.unwrap();
    wait(worker.clone())
        .await
        .expect("a local wake-up between dequeue and wait returns the wait at once")
        .unwrap();
    assert_eq!(dequeue(worker.clone()).await.len(), 1);

    // Another process: the notification reaches the listener between this
    // worker's dequeue and its wait. A second waiter, subscribed before
    // the enqueue, shows when it has arrived.
    let witness = {
        let worker = worker.clone();
        let queues = queues.clone();
        tokio::spawn(async move {
            worker
                .wait_for_work(&queues, Duration::from_secs(600))
                .await
        })
    };
    // The listener runs (the witness started it) before the enqueue.
    let client = support::client(&url).await;
    one_listener(&client, "no listener").await;
    assert!(dequeue(worker.clone()).await.is_empty());
    let now = sealq::clock::system_clock().now_ms();
    producer.enqueue(vec![task("late", now)]).await.unwrap();
    tokio::time::timeout(Duration::from_secs(60), witness)
        .await
        .expect("the notification arrives")
        .unwrap()
        .unwrap();
    wait(worker.clone())
        .await
        .expect("a notification between dequeue and wait returns the wait at once")
        .unwrap();
    assert_eq!(dequeue(worker.clone()).await.len(), 1);
}

/// How many scans `pg_stat_user_indexes` counts for index `index` of
/// `sealq.tasks`, this session's own scans included (flushed first).
async fn index_scans(client: &tokio_postgres::Client, index: &str) -> i64 {
    support::flushed_stats(
        client,
        "SELECT coalesce(sum(idx_scan), 0)::bigint FROM pg_stat_user_indexes \
         WHERE schemaname = 'sealq' AND indexrelname = $1",
        &[&index],
    )
    .await
    .get(0)
}

/// Issue 23: `sealq.ack` and `sealq.extend_leases` find their tasks by
/// primary key, never through `tasks_lease` (every active task), in the
/// plan a session caches for them: a generic plan (forced here; a session
/// gets one after five calls), made while the statistics still say that
/// no task is active (autovacuum off: a new schema before its first
/// analyze). Migration 5's ack read every active task on each call here.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ack_by_key_the_cached_plan_never_scans_the_active_tasks() {
    use sealq::broker::{Broker, DequeueRequest};
    use std::time::Duration;
    let url = support::fresh_db().await;
    let broker = PostgresBroker::connect(&url).await.unwrap();
    let client = support::client(&url).await;
    client
        .batch_execute(
            "ALTER TABLE sealq.tasks SET (autovacuum_enabled = false); \
             SET plan_cache_mode = force_generic_plan",
        )
        .await
        .unwrap();
    let now = sealq::clock::system_clock().now_ms();
    broker
        .enqueue((0..2000).map(|_| task("many", now)).collect())
        .await
        .unwrap();
    let leased = broker
        .dequeue(&DequeueRequest {
            queues: vec!["many".to_owned()],
            max: 2000,
            lease: Duration::from_secs(300),
            worker: "w".to_owned(),
        })
        .await
        .unwrap();
    assert_eq!(leased.len(), 2000);
    let before = index_scans(&client, "tasks_lease").await;
    for chunk in leased.chunks(64).take(4) {
        let ids: Vec<uuid::Uuid> = chunk.iter().map(|t| t.lease.task_id.0).collect();
        let tokens: Vec<i64> = chunk.iter().map(|t| t.lease.token as i64).collect();
        let extended = client
            .query(
                "SELECT * FROM sealq.extend_leases($1, $2, $3)",
                &[&ids, &tokens, &(now + 600_000)],
            )
            .await
            .unwrap();
        assert_eq!(extended.len(), chunk.len());
        let kinds = vec!["complete"; chunk.len()];
        let none_i64: Vec<Option<i64>> = vec![None; chunk.len()];
        let none_bytes: Vec<Option<Vec<u8>>> = vec![None; chunk.len()];
        let none_text: Vec<Option<String>> = vec![None; chunk.len()];
        let acked = client
            .query(
                "SELECT applied FROM sealq.ack($1, $2, $3, $4, $5, $6, $7)",
                &[
                    &now,
                    &ids,
                    &tokens,
                    &kinds,
                    &none_i64,
                    &none_bytes,
                    &none_text,
                ],
            )
            .await
            .unwrap();
        assert!(
            acked.iter().all(|r| r.get::<_, bool>(0)),
            "every ack applied"
        );
    }
    assert_eq!(
        index_scans(&client, "tasks_lease").await,
        before,
        "acks and lease extensions read tasks_lease"
    );
}

/// A claim's commit does not wait for the WAL flush (migration 7):
/// `sealq.dequeue` turns `synchronous_commit` off for its own transaction
/// only. The session is back to durable commits as soon as it ends, so
/// the enqueue, the ack or anything else a pooled connection runs next
/// still waits for the disk.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn claim_commit_skips_the_flush_wait_and_the_session_keeps_durable_commits() {
    use sealq::broker::Broker;
    let url = support::fresh_db().await;
    let broker = PostgresBroker::connect(&url).await.unwrap();
    let client = support::client(&url).await;
    let now = sealq::clock::system_clock().now_ms();
    broker
        .enqueue((0..3).map(|_| task("claims", now)).collect())
        .await
        .unwrap();
    async fn setting(c: &tokio_postgres::Client) -> String {
        c.query_one("SHOW synchronous_commit", &[])
            .await
            .unwrap()
            .get(0)
    }
    // The test servers run with `synchronous_commit = off` (speed); this
    // session asks for durable commits, as a production server gives.
    client
        .batch_execute("SET synchronous_commit = on")
        .await
        .unwrap();
    assert_eq!(setting(&client).await, "on");
    client.batch_execute("BEGIN").await.unwrap();
    let claimed = client
        .query(
            "SELECT id FROM sealq.dequeue(ARRAY['claims'], 2, $1, 30000, 'w', 7)",
            &[&now],
        )
        .await
        .unwrap();
    assert_eq!(claimed.len(), 2);
    assert_eq!(
        setting(&client).await,
        "off",
        "inside the claim's transaction"
    );
    client.batch_execute("COMMIT").await.unwrap();
    assert_eq!(setting(&client).await, "on", "after it: durable again");
    // In autocommit (as the worker calls it) the same holds after the call.
    let claimed = client
        .query(
            "SELECT id FROM sealq.dequeue(ARRAY['claims'], 2, $1, 30000, 'w', 8)",
            &[&now],
        )
        .await
        .unwrap();
    assert_eq!(claimed.len(), 1);
    assert_eq!(setting(&client).await, "on");
    // The claims are committed all the same (visible to another session).
    let id = sealq::TaskId(claimed[0].get::<_, uuid::Uuid>(0));
    let rec = broker.get(id).await.unwrap().expect("stored");
    assert_eq!(rec.state, sealq::TaskState::Active);
}
