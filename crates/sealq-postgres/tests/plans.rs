//! Issue 23, processing cost: the hot path's plans. A claim and an ack
//! reach their tasks by primary key whatever the planner estimates
//! (migration 9), so their cost follows the batch, not the size of the
//! task table.

mod support;

use sealq::broker::Broker;
use sealq_postgres::PostgresBroker;

/// Sequential scans of one `sealq` table so far (this session's counters
/// flushed first).
async fn seq_scans(client: &tokio_postgres::Client, table: &str) -> i64 {
    support::flushed_stats(
        client,
        "SELECT coalesce(sum(seq_scan), 0)::bigint FROM pg_stat_user_tables \
         WHERE schemaname = 'sealq' AND relname = $1",
        &[&table],
    )
    .await
    .get(0)
}

/// Claim `max` tasks of `queue` through `sealq.dequeue` on `client`'s
/// session and ack them all as completed, checking that every claim and
/// ack applied.
async fn claim_and_ack(
    client: &tokio_postgres::Client,
    queue: &str,
    max: i32,
    now: i64,
    what: &str,
) {
    let rows = client
        .query(
            "SELECT id FROM sealq.dequeue(ARRAY[$1], $2, $3, 30000, 'w', 7)",
            &[&queue, &max, &now],
        )
        .await
        .unwrap();
    assert_eq!(rows.len(), max as usize, "claim of {what}");
    let ids: Vec<uuid::Uuid> = rows.iter().map(|r| r.get(0)).collect();
    let n = ids.len();
    let acked = client
        .query(
            "SELECT applied, repeated FROM sealq.ack($1, $2, $3, $4, $5, $6, $7)",
            &[
                &now,
                &ids,
                &vec![7i64; n],
                &vec!["complete"; n],
                &vec![None::<i64>; n],
                &vec![None::<Vec<u8>>; n],
                &vec![None::<String>; n],
            ],
        )
        .await
        .unwrap();
    assert_eq!(acked.len(), n);
    assert!(
        acked
            .iter()
            .all(|r| r.get::<_, bool>(0) && !r.get::<_, bool>(1)),
        "every ack of {what} applied, none a repeated success"
    );
}

/// Claims of 500 tasks and their acks on a table of 5,000, each call
/// planned with the batch in view (custom plans, forced here; a session
/// makes them for its first five calls, and keeps making them while they
/// look cheaper than a generic one). Before migration 9 the planner chose
/// to read the whole table for both: a hash join of every task with the
/// claimed ids, and a filter of every task by the acked ids.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn processing_cost_claims_and_acks_never_read_the_whole_task_table() {
    let url = support::fresh_db().await;
    let broker = PostgresBroker::connect(&url).await.unwrap();
    let client = support::client(&url).await;
    let now = sealq::clock::system_clock().now_ms();
    for _ in 0..5 {
        broker
            .enqueue(
                (0..1000)
                    .map(|_| sealq::testkit::fixtures::task_at("many", now, now))
                    .collect(),
            )
            .await
            .unwrap();
    }
    client
        .batch_execute(
            "ALTER TABLE sealq.tasks SET (autovacuum_enabled = false); \
             ANALYZE sealq.tasks; SET plan_cache_mode = force_custom_plan",
        )
        .await
        .unwrap();
    let before = seq_scans(&client, "tasks").await;
    for round in 0..3 {
        claim_and_ack(&client, "many", 500, now, &format!("round {round}")).await;
    }
    assert_eq!(
        seq_scans(&client, "tasks").await,
        before,
        "a claim or an ack read the whole task table"
    );
    // Every claimed task completed, once (its row is its replay memory
    // while it is kept: migration 14).
    let completed: i64 = client
        .query_one(
            "SELECT count(*) FROM sealq.tasks WHERE state = 'completed'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(completed, 1500);
}

/// Issue 23 (p99 enqueue-to-start): a session keeps the plans it made
/// while the tables were small. Claims and acks planned on empty tables
/// (a worker started on a fresh store; generic plans forced here, which a
/// session otherwise adopts after its first five calls) still reach each
/// row by key once the tables have grown, before any ANALYZE. Before
/// migration 12 the claim hashed the whole body table at every call, and
/// the ack read the whole task table: a run of 20,000 tasks at 1,000 a
/// second on a fresh table read 19.9 million body rows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn latency_claims_and_acks_planned_on_empty_tables_never_scan_them_once_grown() {
    let url = support::fresh_db().await;
    let broker = PostgresBroker::connect(&url).await.unwrap();
    let client = support::client(&url).await;
    let now = sealq::clock::system_clock().now_ms();
    client
        .batch_execute(
            "ALTER TABLE sealq.tasks SET (autovacuum_enabled = false); \
             ALTER TABLE sealq.task_bodies SET (autovacuum_enabled = false); \
             ALTER TABLE sealq.completed_ids SET (autovacuum_enabled = false); \
             SET plan_cache_mode = force_generic_plan",
        )
        .await
        .unwrap();
    let task = || sealq::testkit::fixtures::task_at("grow", now, now);
    broker.enqueue(vec![task()]).await.unwrap();
    claim_and_ack(&client, "grow", 1, now, "the first task").await;
    for _ in 0..5 {
        broker
            .enqueue((0..1000).map(|_| task()).collect())
            .await
            .unwrap();
    }
    let before = (
        seq_scans(&client, "tasks").await,
        seq_scans(&client, "task_bodies").await,
    );
    for round in 0..3 {
        claim_and_ack(&client, "grow", 500, now, &format!("round {round}")).await;
    }
    assert_eq!(
        (
            seq_scans(&client, "tasks").await,
            seq_scans(&client, "task_bodies").await
        ),
        before,
        "a claim or an ack planned on empty tables read a whole table (tasks, bodies)"
    );
}

/// Wait until no other session is connected to this database: a backend
/// reports its statistics when it exits, so the counters then hold
/// everything the closed sessions read.
async fn others_gone(client: &tokio_postgres::Client) {
    for _ in 0..200 {
        let n: i64 = client
            .query_one(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() \
                 AND pid <> pg_backend_pid()",
                &[],
            )
            .await
            .unwrap()
            .get(0);
        if n == 0 {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    panic!("the broker's sessions did not close within 10 s");
}

/// Index entries of `sealq.tasks` read so far, and rows read by sequential
/// scans, as reported (this session's counters flushed first; other
/// sessions report theirs when they end: [`others_gone`]).
async fn task_reads(client: &tokio_postgres::Client) -> (i64, i64) {
    let row = support::flushed_stats(
        client,
        "SELECT (SELECT coalesce(sum(idx_tup_read), 0)::bigint FROM pg_stat_user_indexes \
                 WHERE schemaname = 'sealq' AND relname = 'tasks'), \
                (SELECT coalesce(sum(seq_tup_read), 0)::bigint FROM pg_stat_user_tables \
                 WHERE schemaname = 'sealq' AND relname = 'tasks')",
        &[],
    )
    .await;
    (row.get(0), row.get(1))
}

/// The keyring check at worker start (session 8's known slowness): on a
/// backlog loaded moments before, with no statistics yet, it sampled each
/// waiting state by id, and each of its three lists read and sorted every
/// waiting task of the queue (15,000 index entries here; 43-80 ms each at
/// 100,000 tasks). Migration 10's sample reads the first tasks in claim
/// order, as many index entries as it returns.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keyring_check_on_an_unanalyzed_backlog_reads_only_its_sample() {
    use std::sync::Arc;

    let (url, broker, client) = unanalyzed_db().await;
    let keyring = Arc::new(sealq::Keyring::generate());
    let producer = sealq::Client::builder(Arc::new(broker.clone()), keyring.clone())
        .producer("tests")
        .build();
    let raw = |n: u32| {
        sealq::RawTask::from_json("k", &serde_json::json!({ "n": n }), Default::default()).unwrap()
    };
    let stored = producer.enqueue_bulk((0..5000).map(raw), 1000).await;
    assert!(stored.iter().all(Result::is_ok), "5,000 tasks enqueued");
    drop((producer, broker));
    others_gone(&client).await;

    // A worker's start: its own broker, the check, and the broker closed
    // (its sessions' counters reported).
    let before = task_reads(&client).await;
    let worker = PostgresBroker::connect(&url).await.unwrap();
    let queues = vec!["default".to_owned()];
    let check = sealq::keyring_check::check_keyring(&worker, &keyring, Some(&queues))
        .await
        .unwrap();
    drop(worker);
    others_gone(&client).await;
    let after = task_reads(&client).await;
    assert_eq!(
        after.1, before.1,
        "the check read the task table sequentially"
    );
    let index_entries = after.0 - before.0;
    assert!(
        index_entries <= 100,
        "the keyring check read {index_entries} index entries of sealq.tasks for a sample of 24"
    );
    assert_eq!(check.sampled, 24, "the check sampled 24 tasks: {check:?}");
    assert_eq!(check.opened, 24, "the keyring opened every sampled task");
    assert!(!check.is_wrong_keyring());

    // A wrong keyring is still refused from the same sample.
    let broker = PostgresBroker::connect(&url).await.unwrap();
    let wrong =
        sealq::keyring_check::check_keyring(&broker, &sealq::Keyring::generate(), Some(&queues))
            .await
            .unwrap();
    assert!(wrong.is_wrong_keyring(), "{wrong:?}");

    // The sample is the first waiting tasks in claim order.
    let sample = broker.sample_waiting("default", 5).await.unwrap();
    assert_eq!(sample.len(), 5);
    let mut by_claim = sample.clone();
    by_claim.sort_by_key(|r| (r.run_at_ms, r.id.0));
    assert_eq!(
        sample.iter().map(|r| r.id).collect::<Vec<_>>(),
        by_claim.iter().map(|r| r.id).collect::<Vec<_>>()
    );
    assert!(sample.iter().all(|r| r.state == sealq::TaskState::Pending));
}

/// One row of `sealq.queue_depths()`: queue, state, count, estimated.
type Depth = (String, String, i64, bool);

/// `sealq.queue_depths()` called by this session, with the index entries
/// of `sealq.tasks` it read and the rows it read sequentially.
async fn queue_depths(client: &tokio_postgres::Client) -> (Vec<Depth>, i64, i64) {
    let before = task_reads(client).await;
    let rows = client
        .query(
            "SELECT r_queue, r_state, r_count, r_estimated FROM sealq.queue_depths()",
            &[],
        )
        .await
        .unwrap();
    let after = task_reads(client).await;
    let rows = rows
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3)))
        .collect();
    (rows, after.0 - before.0, after.1 - before.1)
}

/// [`queue_depths`], asserting that it read the task table through its
/// indexes only, at most 10,100 entries (the completed ones counted up to
/// 10,001; 8 live tasks in the test below).
async fn queue_depths_reading_only_indexes(client: &tokio_postgres::Client) -> Vec<Depth> {
    let (rows, index_entries, seq_rows) = queue_depths(client).await;
    eprintln!("queue_depths read {index_entries} index entries of sealq.tasks");
    assert_eq!(seq_rows, 0, "the depths read the task table sequentially");
    assert!(
        index_entries <= 10_100,
        "the depths read {index_entries} index entries of sealq.tasks for 8 live tasks"
    );
    rows
}

/// Operations, queue metrics (session 8's finding): every worker samples
/// its queue depths at start and every 15 s, and `sealq.task_counts` read
/// the whole task table for it, completed (retained) tasks included.
/// Migration 11's `sealq.queue_depths` counts the live and archived states
/// through the partial indexes that hold them and the completed tasks
/// exactly up to 10,000, estimated from the table's statistics above: with
/// 60,000 completed tasks and a few live ones it reads no table
/// sequentially and at most 10,001 entries for the completed ones, with or
/// without statistics.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operations_queue_metrics_never_read_the_retained_completed_tasks() {
    let (_, broker, client) = unanalyzed_db().await;
    let now = sealq::clock::system_clock().now_ms();
    let task = |q: &str| sealq::testkit::fixtures::task_at(q, now, now);
    broker
        .enqueue((0..5).map(|_| task("big")).collect())
        .await
        .unwrap();
    broker
        .enqueue((0..3).map(|_| task("small")).collect())
        .await
        .unwrap();
    broker
        .enqueue(vec![sealq::testkit::fixtures::task_at(
            "later",
            now + 3_600_000,
            now,
        )])
        .await
        .unwrap();
    // Two tasks of "small" claimed, one of them completed.
    let claimed = client
        .query(
            "SELECT id FROM sealq.dequeue(ARRAY['small'], 2, $1, 30000, 'w', 7)",
            &[&now],
        )
        .await
        .unwrap();
    assert_eq!(claimed.len(), 2);
    let done: uuid::Uuid = claimed[0].get(0);
    client
        .query(
            "SELECT * FROM sealq.ack($1, $2, $3, $4, $5, $6, $7)",
            &[
                &now,
                &vec![done],
                &vec![7i64],
                &vec!["complete"],
                &vec![None::<i64>],
                &vec![None::<Vec<u8>>],
                &vec![None::<String>],
            ],
        )
        .await
        .unwrap();

    // Few completed tasks: the gauges are exact, as `stats` is.
    let exact = broker.stats().await.unwrap();
    assert_eq!(broker.queue_depths().await.unwrap(), exact);

    // A store retaining 60,000 completed tasks of "big".
    client
        .batch_execute(&format!(
            "INSERT INTO sealq.tasks (id, queue, kind, max_retries, retention_ms, state, \
                                      attempts, run_at, finished_at, purge_at, updated_at) \
             SELECT gen_random_uuid(), 'big', 'k', 0, 86400000, 'completed', 1, {now}, {now}, \
                    {now} + 86400000, {now} FROM generate_series(1, 60000)"
        ))
        .await
        .unwrap();

    let live = |rows: &[Depth]| {
        let mut l: Vec<Depth> = rows
            .iter()
            .filter(|r| r.1 != "completed")
            .cloned()
            .collect();
        l.sort();
        l
    };
    let want_live = vec![
        ("big".to_owned(), "pending".to_owned(), 5, false),
        ("later".to_owned(), "scheduled".to_owned(), 1, false),
        ("small".to_owned(), "active".to_owned(), 1, false),
        ("small".to_owned(), "pending".to_owned(), 1, false),
    ];

    // No statistics yet (a table loaded moments before).
    let rows = queue_depths_reading_only_indexes(&client).await;
    assert_eq!(live(&rows), want_live, "live depths are exact: {rows:?}");

    // With statistics: the completed depth is an estimate, labelled so.
    client.batch_execute("ANALYZE sealq.tasks").await.unwrap();
    let rows = queue_depths_reading_only_indexes(&client).await;
    assert_eq!(live(&rows), want_live, "live depths are exact: {rows:?}");
    let big = rows
        .iter()
        .find(|r| r.0 == "big" && r.1 == "completed")
        .unwrap_or_else(|| panic!("an estimate of big's completed tasks: {rows:?}"));
    assert!(big.3, "an estimate is flagged as one: {big:?}");
    assert!(
        (54_000..=66_000).contains(&big.2),
        "big's completed estimate {} is within 10 % of 60,000",
        big.2
    );

    // What the gauges read before migration 11 (and `stats` still reads,
    // exactly): every task, sequentially.
    let before = task_reads(&client).await;
    client
        .query("SELECT * FROM sealq.task_counts()", &[])
        .await
        .unwrap();
    let after = task_reads(&client).await;
    assert!(
        after.1 - before.1 >= 60_000,
        "task_counts reads the table: the counters would see a table read"
    );

    // The broker's gauges carry the same numbers; `stats` stays exact.
    let gauges = broker.queue_depths().await.unwrap();
    let g = gauges.iter().find(|q| q.queue == "big").unwrap();
    assert_eq!((g.pending, g.completed), (5, big.2 as u64));
    let exact = broker.stats().await.unwrap();
    let e = exact.iter().find(|q| q.queue == "big").unwrap();
    assert_eq!((e.pending, e.completed), (5, 60_000));
}

/// Operations, queue metrics under a backlog (session 9's finding): the
/// waiting tasks were counted exactly, each one's row visited (278-296 ms
/// at 500,000 pending tasks), by every worker every 15 s. Migration 13
/// counts them queue by queue, exactly up to 10,000 and estimated above:
/// a queue of 12,000 pending tasks reads at most 10,001 of them once the
/// table has statistics (and shows what it read, flagged as an estimate,
/// before), while a small queue beside it stays exact.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operations_queue_metrics_read_at_most_ten_thousand_waiting_tasks_a_queue() {
    let (_, broker, client) = unanalyzed_db().await;
    let now = sealq::clock::system_clock().now_ms();
    let task = |q: &str| sealq::testkit::fixtures::task_at(q, now, now);
    for _ in 0..12 {
        broker
            .enqueue((0..1000).map(|_| task("backlog")).collect())
            .await
            .unwrap();
    }
    broker
        .enqueue((0..5).map(|_| task("small")).collect())
        .await
        .unwrap();
    broker
        .enqueue(vec![sealq::testkit::fixtures::task_at(
            "small",
            now + 3_600_000,
            now,
        )])
        .await
        .unwrap();
    let small_is_exact = |rows: &[Depth]| {
        assert!(
            rows.contains(&("small".into(), "pending".into(), 5, false)),
            "{rows:?}"
        );
        assert!(
            rows.contains(&("small".into(), "scheduled".into(), 1, false)),
            "{rows:?}"
        );
    };

    // No statistics yet: what the probe saw, flagged.
    let (rows, _, seq_rows) = queue_depths(&client).await;
    assert_eq!(seq_rows, 0, "the depths read the task table sequentially");
    small_is_exact(&rows);
    let backlog: Vec<&Depth> = rows.iter().filter(|r| r.0 == "backlog").collect();
    assert_eq!(
        backlog,
        vec![&("backlog".to_owned(), "pending".to_owned(), 10_001, true)]
    );

    // With statistics: an estimate, and at most 10,001 of the backlog read.
    client.batch_execute("ANALYZE sealq.tasks").await.unwrap();
    let (rows, index_entries, seq_rows) = queue_depths(&client).await;
    assert_eq!(seq_rows, 0, "the depths read the task table sequentially");
    assert!(
        index_entries <= 10_100,
        "the depths read {index_entries} index entries of sealq.tasks for 12,006 waiting tasks"
    );
    small_is_exact(&rows);
    let estimate = rows
        .iter()
        .find(|r| r.0 == "backlog" && r.1 == "pending")
        .expect("the backlog's pending depth");
    assert!(
        estimate.3 && (10_800..=13_200).contains(&estimate.2),
        "{estimate:?}"
    );
}

/// A fresh database, a broker and a plain client on it, with autovacuum off
/// for the task table: no statistics unless a test gathers them (autovacuum
/// would analyze the table behind the test).
async fn unanalyzed_db() -> (String, PostgresBroker, tokio_postgres::Client) {
    let url = support::fresh_db().await;
    let broker = PostgresBroker::connect(&url).await.unwrap();
    let client = support::client(&url).await;
    client
        .batch_execute("ALTER TABLE sealq.tasks SET (autovacuum_enabled = false)")
        .await
        .unwrap();
    (url, broker, client)
}
