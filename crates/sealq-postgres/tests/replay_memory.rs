//! Finding 2 on Postgres, migration 14: a completed task's own row is its
//! replay memory while it is kept, and its id is copied into
//! `sealq.completed_ids` by triggers at the moment the row goes or stops
//! being completed, whichever statement does it. A completion itself
//! writes nothing there (issue 23: an ack's heap row, two index entries
//! and a quarter of its WAL, measured in docs/benchmarks.md).

mod support;

use std::sync::Arc;

use sealq::broker::{AckResult, EnqueueResult, Outcome};
use sealq::testkit::{Ctx, ManualClock, START_MS};
use sealq_postgres::{PostgresBroker, PostgresOptions};
use uuid::Uuid;

/// A fresh database, a broker on it on a manual clock, and an owner's
/// connection to look at the tables.
async fn setup() -> (Ctx, tokio_postgres::Client) {
    let url = support::fresh_db().await;
    let clock = ManualClock::new(START_MS);
    let broker = PostgresBroker::connect_with(&url, PostgresOptions::with_clock(clock.clone()))
        .await
        .expect("connect");
    (
        Ctx::new(Arc::new(broker), clock),
        support::client(&url).await,
    )
}

/// When the replay memory says `id` completed, if it holds it.
async fn remembered(client: &tokio_postgres::Client, id: Uuid) -> Option<i64> {
    client
        .query_opt(
            "SELECT completed_at FROM sealq.completed_ids WHERE id = $1",
            &[&id],
        )
        .await
        .unwrap()
        .map(|r| r.get(0))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn finding_2_every_way_a_completed_row_goes_leaves_its_id_remembered() {
    let (ctx, client) = setup().await;
    let q = "rm-ways";
    let tasks: Vec<_> = (0..6).map(|_| ctx.task(q)).collect();
    ctx.enqueue_ok(tasks.clone()).await;
    let leased = ctx.lease(&[q], 10).await;
    assert_eq!(leased.len(), 6);
    let done_at = ctx.now();
    for l in &leased {
        let acked = ctx.ack1(l, Outcome::Complete { result: None }).await;
        assert_eq!(acked, AckResult::Applied);
    }
    let ids: Vec<Uuid> = tasks.iter().map(|t| t.id.0).collect();

    // Kept: each completed row is the memory. Nothing was written to the
    // memory's table, and every id is refused.
    let held: i64 = client
        .query_one("SELECT count(*) FROM sealq.completed_ids", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(held, 0, "a completion writes no replay-memory row");
    for t in &tasks {
        let again = ctx.broker.enqueue(vec![t.clone()]).await.unwrap();
        assert_eq!(again, vec![EnqueueResult::IdExists], "retained");
    }

    ctx.advance(1_000);
    // An operator's delete (which remembers the id itself, at its time).
    assert_eq!(ctx.broker.delete(&[tasks[0].id]).await.unwrap(), 1);
    assert_eq!(remembered(&client, ids[0]).await, Some(ctx.now()));
    // A plain DELETE, as someone with write access to the table could.
    let n = client
        .execute("DELETE FROM sealq.tasks WHERE id = $1", &[&ids[1]])
        .await
        .unwrap();
    assert_eq!(n, 1);
    // Erasure's delete, which remembers nothing itself.
    let erased = client
        .query(
            "SELECT * FROM sealq.erase_delete(ARRAY[$1::uuid])",
            &[&ids[2]],
        )
        .await
        .unwrap();
    assert_eq!(erased.len(), 1);
    // A state edited away from completed, the row kept.
    let n = client
        .execute(
            "UPDATE sealq.tasks SET state = 'archived' WHERE id = $1",
            &[&ids[3]],
        )
        .await
        .unwrap();
    assert_eq!(n, 1);
    // Retention's purge, one task (the oldest `purge_at` first or not: one).
    let purged: Vec<Uuid> = client
        .query("SELECT * FROM sealq.purge_completed($1, 1)", &[&i64::MAX])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(purged.len(), 1);
    assert!(purged[0] == ids[4] || purged[0] == ids[5]);
    // The table truncated (the last one).
    client.batch_execute("TRUNCATE sealq.tasks").await.unwrap();

    // Every id is in the memory, from its completion (the replay horizon
    // counts from there), and refused at enqueue.
    for (i, id) in ids.iter().enumerate().skip(1) {
        assert_eq!(
            remembered(&client, *id).await,
            Some(done_at),
            "task {i} remembered from its completion"
        );
    }
    for (i, t) in tasks.iter().enumerate() {
        if i == 3 {
            continue; // its row is still there (archived): refused as stored
        }
        let again = ctx.broker.enqueue(vec![t.clone()]).await.unwrap();
        assert_eq!(again, vec![EnqueueResult::IdExists], "task {i} gone");
    }
    assert!(ctx.lease(&[q], 10).await.is_empty());
}

/// Only a completed row that goes or changes state writes the memory:
/// retries, archives and requeues do not, nor does an edit of a completed
/// row that leaves it completed. A row flipped back and completed again
/// (a second success) is reported as repeated and refreshes its entry.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn finding_2_only_a_completed_row_leaving_writes_the_memory() {
    let (ctx, client) = setup().await;
    let q = "rm-other";
    let tasks: Vec<_> = (0..4).map(|_| ctx.task(q)).collect();
    ctx.enqueue_ok(tasks.clone()).await;
    let leased = ctx.lease(&[q], 10).await;
    assert_eq!(leased.len(), 4);
    let by_id: std::collections::HashMap<_, _> =
        leased.iter().map(|l| (l.record.id, l.clone())).collect();
    let outcome_of = |i: usize| match i {
        0 => Outcome::Retry {
            at_ms: ctx.now() + 60_000,
            error: None,
        },
        1 => Outcome::Archive {
            reason: sealq::ArchiveReason::Exhausted,
            error: None,
        },
        2 => Outcome::Requeue,
        _ => Outcome::Complete { result: None },
    };
    for (i, t) in tasks.iter().enumerate() {
        let l = &by_id[&t.id];
        assert_eq!(ctx.ack1(l, outcome_of(i)).await, AckResult::Applied);
    }
    let completed = tasks[3].id.0;
    let n = client
        .execute(
            "UPDATE sealq.tasks SET purge_at = purge_at + 1 WHERE id = $1 AND state = 'completed'",
            &[&completed],
        )
        .await
        .unwrap();
    assert_eq!(n, 1);
    let held: i64 = client
        .query_one("SELECT count(*) FROM sealq.completed_ids", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(held, 0, "no row left completed");

    // Flipped back to pending: remembered from its completion, claimed
    // flagged replayed; completed again: reported repeated, entry refreshed.
    let done_at = ctx.now();
    ctx.advance(5_000);
    client
        .execute(
            "UPDATE sealq.tasks SET state = 'pending', run_at = 0 WHERE id = $1",
            &[&completed],
        )
        .await
        .unwrap();
    assert_eq!(remembered(&client, completed).await, Some(done_at));
    let again = ctx.lease(&[q], 10).await;
    let flipped = again.iter().find(|l| l.record.id.0 == completed).unwrap();
    assert!(flipped.replayed);
    let acked = ctx.ack1(flipped, Outcome::Complete { result: None }).await;
    assert_eq!(acked, AckResult::Applied);
    assert_eq!(remembered(&client, completed).await, Some(ctx.now()));
}
