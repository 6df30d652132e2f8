//! Issue 20, "Cost": `Client::enqueue_bulk` keeps two batches sent on
//! one Redis connection; each task's outcome still lands in its own place.

mod support;

use std::sync::Arc;

use sealq::broker::Broker;
use sealq::{Client, EnqueueOptions, Keyring, RawTask, Task, TaskId, TaskState};
use sealq_redis::{RedisBroker, RedisOptions};
use serde::{Deserialize, Serialize};

#[derive(Debug, Serialize, Deserialize, PartialEq)]
struct Greet {
    name: String,
}
impl Task for Greet {
    const KIND: &'static str = "test.greet";
}

/// 1,000 tasks in batches of 50 (so up to two calls in flight at a time):
/// every result is the task's own id in call order, a task reusing an
/// earlier batch's id is refused at its own place, and every `Ok` task is
/// stored, pending, under its id.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cost_bulk_enqueue_with_two_batches_in_flight_reports_each_task_in_order() {
    let server = support::RedisServer::start();
    server.load_library();
    let redis = RedisBroker::connect_with(&server.url(), RedisOptions::default())
        .await
        .unwrap();
    let broker: Arc<dyn Broker> = Arc::new(redis);
    let client = Client::builder(broker.clone(), Arc::new(Keyring::generate()))
        .producer("tests")
        .build();
    const N: usize = 1000;
    const REUSED: usize = 523; // takes the id of task 10
    let mut ids: Vec<TaskId> = (0..N).map(|_| TaskId::default()).collect();
    ids[REUSED] = ids[10];
    let tasks = ids.iter().enumerate().map(|(n, id)| {
        let mut options = EnqueueOptions::new();
        options.id = Some(*id);
        RawTask::typed(
            &Greet {
                name: format!("g{n}"),
            },
            options,
        )
        .unwrap()
    });
    let results = client.enqueue_bulk(tasks, 50).await;
    assert_eq!(results.len(), N, "one result per task");
    for (n, r) in results.iter().enumerate() {
        if n == REUSED {
            assert!(
                matches!(r, Err(sealq::Error::IdExists(id)) if *id == ids[10]),
                "{r:?}"
            );
        } else {
            assert_eq!(r.as_ref().ok(), Some(&ids[n]), "task {n}: {r:?}");
        }
    }
    let pending: u64 = broker
        .stats()
        .await
        .unwrap()
        .iter()
        .map(|q| q.pending)
        .sum();
    assert_eq!(pending, (N - 1) as u64);
    for n in (0..N).step_by(97) {
        let rec = broker
            .get(ids[n])
            .await
            .unwrap()
            .expect("an Ok task is kept");
        assert_eq!(rec.state, TaskState::Pending, "task {n}");
    }
}
