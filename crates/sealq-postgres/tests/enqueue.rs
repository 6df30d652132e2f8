//! Enqueueing on a real server since migration 15: a lone task without a
//! unique key is one call of `sealq.enqueue_one`, which gives every
//! outcome `sealq.enqueue` gives, and whoever could enqueue before the
//! upgrade can call it after.

mod support;

use sealq::TaskState;
use sealq::broker::{Broker, EnqueueResult, NewTask};
use sealq::testkit::fixtures::task_at;
use sealq_postgres::PostgresBroker;
use sealq_postgres::roles::{self, Role};
use tokio_postgres::error::SqlState;

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

/// How many times this session called `sealq.enqueue_one` and
/// `sealq.enqueue` (`track_functions` is on in the session).
async fn calls(client: &tokio_postgres::Client) -> (i64, i64) {
    let row = support::flushed_stats(
        client,
        "SELECT coalesce(sum(calls) FILTER (WHERE funcname = 'enqueue_one'), 0)::bigint, \
                coalesce(sum(calls) FILTER (WHERE funcname = 'enqueue'), 0)::bigint \
         FROM pg_stat_user_functions WHERE schemaname = 'sealq'",
        &[],
    )
    .await;
    (row.get(0), row.get(1))
}

/// One task through `enqueue_in` on `client`'s session.
async fn one(
    broker: &PostgresBroker,
    client: &tokio_postgres::Client,
    t: NewTask,
) -> EnqueueResult {
    let out = broker.enqueue_in(client, vec![t]).await.expect("enqueue");
    assert_eq!(out.len(), 1);
    out[0].clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enqueue_one_task_is_one_call_of_enqueue_one_with_every_outcome() {
    let url = support::fresh_db().await;
    let broker = PostgresBroker::connect(&url).await.expect("connect");
    let client = support::client(&url).await;
    client
        .batch_execute("SET track_functions = 'pl'")
        .await
        .unwrap();
    let now = now_ms();

    // Stored, task and body, pending now and scheduled later.
    let t = task_at("one", now, now);
    let id = t.id;
    assert_eq!(
        one(&broker, &client, t.clone()).await,
        EnqueueResult::Enqueued
    );
    let stored = broker.get(id).await.unwrap().expect("the task is stored");
    assert_eq!(stored.state, TaskState::Pending);
    assert_eq!(stored.envelope, t.envelope);
    assert_eq!(stored.meta.max_retries, t.meta.max_retries);
    let later = task_at("one", now + 60_000, now);
    let later_id = later.id;
    assert_eq!(one(&broker, &client, later).await, EnqueueResult::Enqueued);
    let stored = broker.get(later_id).await.unwrap().expect("stored");
    assert_eq!(stored.state, TaskState::Scheduled);
    assert_eq!(
        calls(&client).await,
        (2, 0),
        "two calls of enqueue_one alone"
    );

    // The same id again: refused, the stored task untouched.
    let mut again = t.clone();
    again.envelope = b"another envelope".to_vec();
    assert_eq!(one(&broker, &client, again).await, EnqueueResult::IdExists);
    assert_eq!(broker.get(id).await.unwrap().unwrap().envelope, t.envelope);

    // An id in the replay memory (deleted): refused, nothing stored.
    assert_eq!(broker.delete(&[id]).await.unwrap(), 1);
    assert_eq!(
        one(&broker, &client, t.clone()).await,
        EnqueueResult::IdExists
    );
    assert!(broker.get(id).await.unwrap().is_none());

    // A queue with a depth cap: stored while there is room, then full.
    broker.set_max_depth("capped", Some(1)).await.unwrap();
    let a = task_at("capped", now, now);
    let a_id = a.id;
    assert_eq!(one(&broker, &client, a).await, EnqueueResult::Enqueued);
    assert!(broker.get(a_id).await.unwrap().is_some());
    let b = task_at("capped", now, now);
    let b_id = b.id;
    assert_eq!(
        one(&broker, &client, b).await,
        EnqueueResult::QueueFull { max_depth: 1 }
    );
    assert!(broker.get(b_id).await.unwrap().is_none());
    // Each of the three refusals above and the capped enqueue went on to
    // `sealq.enqueue` for its outcome.
    assert_eq!(calls(&client).await, (6, 4));

    // A unique key goes through `sealq.enqueue`, as before.
    let mut u1 = task_at("one", now, now);
    u1.unique = Some(("order-1".to_owned(), 60_000));
    let u1_id = u1.id;
    let mut u2 = task_at("one", now, now);
    u2.unique = Some(("order-1".to_owned(), 60_000));
    assert_eq!(one(&broker, &client, u1).await, EnqueueResult::Enqueued);
    assert_eq!(
        one(&broker, &client, u2).await,
        EnqueueResult::Duplicate { existing: u1_id }
    );
    assert_eq!(calls(&client).await, (6, 6));

    // Through the pool too (`Broker::enqueue`), and a batch stays one call
    // of `sealq.enqueue` with a result per task.
    let c = task_at("one", now, now);
    assert_eq!(
        broker.enqueue(vec![c]).await.unwrap(),
        vec![EnqueueResult::Enqueued]
    );
    let batch: Vec<NewTask> = (0..3).map(|_| task_at("one", now, now)).collect();
    let ids: Vec<_> = batch.iter().map(|t| t.id).collect();
    let out = broker.enqueue_in(&client, batch).await.unwrap();
    assert_eq!(out, vec![EnqueueResult::Enqueued; 3]);
    for id in ids {
        let r = broker.get(id).await.unwrap().expect("batch task stored");
        assert_eq!(r.state, TaskState::Pending);
    }
    assert_eq!(calls(&client).await, (6, 7));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enqueue_one_granted_on_upgrade_to_every_role_that_could_enqueue() {
    let url = support::fresh_db().await;
    let db = url.rsplit('/').next().unwrap().to_owned();
    roles::install(&url).await.expect("install");
    roles::apply_roles(&url).await.expect("apply the roles");
    let su = support::client(&url).await;
    for role in [Role::Producer, Role::Worker] {
        su.batch_execute(&format!(
            "CREATE ROLE {db}_{r} LOGIN IN ROLE {g}",
            r = if role == Role::Producer { "p" } else { "w" },
            g = role.name()
        ))
        .await
        .unwrap();
    }
    // The schema and grants as a role setup applied before migration 15
    // left them; then the migration, as `sealq postgres install` runs it.
    su.batch_execute(
        "DROP FUNCTION sealq.enqueue_one(bigint, uuid, text, text, bytea, integer, bigint, \
         bigint, bytea, bytea)",
    )
    .await
    .unwrap();
    su.batch_execute(include_str!("../src/migrations/0015_cheaper_enqueue.sql"))
        .await
        .expect("migration 15 applies");

    let port = support::shared().port;
    let producer = PostgresBroker::connect(&format!("postgres://{db}_p@127.0.0.1:{port}/{db}"))
        .await
        .expect("a producer login connects");
    let now = now_ms();
    assert_eq!(
        producer
            .enqueue(vec![task_at("up", now, now)])
            .await
            .expect("the producer enqueues one task after the upgrade"),
        vec![EnqueueResult::Enqueued]
    );
    let worker = support::client(&format!("postgres://{db}_w@127.0.0.1:{port}/{db}")).await;
    let err = worker
        .batch_execute(
            "SELECT sealq.enqueue_one(0, gen_random_uuid(), 'up', 'k', NULL, 0, 0, 0, \
             '\\x00', '\\x00')",
        )
        .await
        .expect_err("a worker cannot enqueue");
    assert_eq!(err.code(), Some(&SqlState::INSUFFICIENT_PRIVILEGE), "{err}");
}

/// `(calls, plans)` of the statements whose text starts with `prefix`, at
/// the top level or inside functions.
async fn planned(client: &tokio_postgres::Client, toplevel: bool, prefix: &str) -> (i64, i64) {
    let row = client
        .query_one(
            "SELECT coalesce(sum(calls), 0)::bigint, coalesce(sum(plans), 0)::bigint \
             FROM pg_stat_statements WHERE toplevel = $1 AND starts_with(query, $2)",
            &[&toplevel, &prefix],
        )
        .await
        .unwrap();
    (row.get(0), row.get(1))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enqueue_batches_are_planned_once_per_session() {
    let server = support::PgServer::start(&[
        ("shared_preload_libraries", "pg_stat_statements"),
        ("pg_stat_statements.track", "all"),
        ("pg_stat_statements.track_planning", "on"),
    ]);
    let url = support::fresh_db_on(&server).await;
    let su = support::client(&url).await;
    su.batch_execute("CREATE EXTENSION pg_stat_statements")
        .await
        .unwrap();
    let now = now_ms();
    let batch = || -> Vec<NewTask> { (0..10).map(|_| task_at("plans", now, now)).collect() };
    const TOP: &str = "SELECT idx, outcome, existing, max_depth FROM sealq.enqueue(";
    const BODIES: &str = "INSERT INTO sealq.task_bodies";

    // One pooled session: the call and the statements inside the function
    // are planned once, then the plan is kept (a custom plan for each of
    // the first five calls before).
    let broker = PostgresBroker::connect(&format!("{url}?pool_size=1"))
        .await
        .unwrap();
    su.batch_execute("SELECT pg_stat_statements_reset()")
        .await
        .unwrap();
    for _ in 0..3 {
        let out = broker.enqueue(batch()).await.unwrap();
        assert_eq!(out, vec![EnqueueResult::Enqueued; 10]);
    }
    assert_eq!(planned(&su, true, TOP).await, (3, 1));
    assert_eq!(planned(&su, false, BODIES).await, (3, 1));

    // Poll-only (PgBouncer in transaction mode): unnamed statements and no
    // session setting, so the call is planned each time; inside the
    // function the plans are generic all the same.
    let poll = PostgresBroker::connect(&format!("{url}?pool_size=1&poll_only=true"))
        .await
        .unwrap();
    for _ in 0..3 {
        let out = poll.enqueue(batch()).await.unwrap();
        assert_eq!(out, vec![EnqueueResult::Enqueued; 10]);
    }
    assert_eq!(planned(&su, true, TOP).await, (6, 4));
    assert_eq!(planned(&su, false, BODIES).await, (6, 2));
    drop(broker);
    drop(poll);
    drop(server);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enqueue_batch_refuses_ids_in_the_replay_memory_within_its_id_range() {
    let url = support::fresh_db().await;
    let broker = PostgresBroker::connect(&url).await.expect("connect");
    let now = now_ms();
    // Three ids in the order made (UUID v7); the middle one is stored, then
    // deleted: the replay memory holds it.
    let batch: Vec<NewTask> = (0..3).map(|_| task_at("replay", now, now)).collect();
    let ids: Vec<_> = batch.iter().map(|t| t.id).collect();
    assert!(ids[0] < ids[1] && ids[1] < ids[2]);
    assert_eq!(
        broker.enqueue(vec![batch[1].clone()]).await.unwrap(),
        vec![EnqueueResult::Enqueued]
    );
    assert_eq!(broker.delete(&[ids[1]]).await.unwrap(), 1);

    // A batch whose id range holds the remembered id: refused for it alone.
    let out = broker.enqueue(batch).await.unwrap();
    assert_eq!(
        out,
        vec![
            EnqueueResult::Enqueued,
            EnqueueResult::IdExists,
            EnqueueResult::Enqueued
        ]
    );
    assert!(broker.get(ids[0]).await.unwrap().is_some());
    assert!(broker.get(ids[1]).await.unwrap().is_none());
    assert!(broker.get(ids[2]).await.unwrap().is_some());

    // Fresh ids, newer than any remembered one, into two queues, one task
    // not due yet: all stored, each in its state.
    let mut fresh: Vec<NewTask> = (0..4).map(|_| task_at("replay", now, now)).collect();
    fresh[3].queue = "other".to_owned();
    fresh[3].run_at_ms = now + 60_000;
    let fresh_ids: Vec<_> = fresh.iter().map(|t| t.id).collect();
    assert_eq!(
        broker.enqueue(fresh).await.unwrap(),
        vec![EnqueueResult::Enqueued; 4]
    );
    let last = broker.get(fresh_ids[3]).await.unwrap().unwrap();
    assert_eq!(
        (last.queue.as_str(), last.state),
        ("other", TaskState::Scheduled)
    );
}
