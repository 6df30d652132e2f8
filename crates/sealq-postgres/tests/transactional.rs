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
