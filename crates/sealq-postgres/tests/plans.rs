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
    client
        .batch_execute("SELECT pg_stat_force_next_flush()")
        .await
        .unwrap();
    client
        .query_one(
            "SELECT coalesce(sum(seq_scan), 0)::bigint FROM pg_stat_user_tables \
             WHERE schemaname = 'sealq' AND relname = $1",
            &[&table],
        )
        .await
        .unwrap()
        .get(0)
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
        let rows = client
            .query(
                "SELECT id FROM sealq.dequeue(ARRAY['many'], 500, $1, 30000, 'w', 7)",
                &[&now],
            )
            .await
            .unwrap();
        assert_eq!(rows.len(), 500, "claim {round}");
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
            "every ack of round {round} applied, none a repeated success"
        );
    }
    assert_eq!(
        seq_scans(&client, "tasks").await,
        before,
        "a claim or an ack read the whole task table"
    );
    // The replay memory took every completed id, once.
    let remembered: i64 = client
        .query_one("SELECT count(*) FROM sealq.completed_ids", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(remembered, 1500);
}
