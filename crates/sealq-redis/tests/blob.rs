//! Claim-check blobs in Redis: a large payload is offloaded to a
//! `RedisBlobStore`, the worker on the Redis broker opens it transparently,
//! the blob is deleted once the task completes, and a missing blob ends the
//! task archived with a clear reason.

mod support;

use std::sync::Arc;
use std::time::Duration;

use sealq::blob::{BLOB_MISSING, BlobKey, BlobStore};
use sealq::broker::{Broker, TaskRecord};
use sealq::{
    ArchiveReason, Client, EnqueueOptions, Keyring, Task, TaskContext, TaskId, TaskState, Worker,
};
use sealq_redis::RedisBlobStore;
use serde::{Deserialize, Serialize};

#[derive(Debug, Serialize, Deserialize, PartialEq)]
struct Render {
    name: String,
    body: String,
}
impl Task for Render {
    const KIND: &'static str = "test.render";
}

fn render(n: usize) -> Render {
    Render {
        name: format!("doc-{n}"),
        body: "%PDF-1.7 lorem ipsum ".repeat(n / 21 + 1)[..n].to_owned(),
    }
}

async fn wait_final(broker: &Arc<dyn Broker>, id: TaskId) -> TaskRecord {
    let give_up = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let rec = broker.get(id).await.unwrap().expect("task exists");
        if matches!(rec.state, TaskState::Completed | TaskState::Archived) {
            return rec;
        }
        assert!(
            tokio::time::Instant::now() < give_up,
            "task {id} stuck in {}",
            rec.state
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offload_round_trip_and_cleanup_on_redis() {
    let redis = support::shared_broker(sealq::clock::system_clock()).await;
    let broker: Arc<dyn Broker> = Arc::new(redis);
    let keyring = Arc::new(Keyring::generate());
    let prefix = format!("{}-blobs", support::unique_prefix());
    let store: Arc<dyn BlobStore> = Arc::new(
        RedisBlobStore::new(
            &support::shared().url(),
            &prefix,
            Duration::from_secs(3600),
            Default::default(),
        )
        .unwrap(),
    );
    let client = Client::builder(broker.clone(), keyring.clone())
        .blob_store(store.clone(), 4096)
        .build();
    let big = client
        .enqueue(&render(100 * 1024), EnqueueOptions::new())
        .await
        .unwrap();
    let gone = client
        .enqueue(&render(50 * 1024), EnqueueOptions::new())
        .await
        .unwrap();
    assert!(
        broker.get(big).await.unwrap().unwrap().envelope.len() < 200,
        "the broker holds a claim"
    );
    let mut listed = store.list_tasks(None, 10).await.unwrap();
    listed.sort();
    let mut want = vec![big, gone];
    want.sort();
    assert_eq!(listed, want);
    // One blob disappears before a worker gets to it.
    assert_eq!(store.delete_tasks(&[gone]).await.unwrap(), 1);

    let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
    let s = seen.clone();
    let worker = Worker::builder(broker.clone(), keyring.clone())
        .maintenance_interval(Duration::from_millis(20))
        .blob_store(store.clone())
        .handle(move |t: Render, _ctx: TaskContext| {
            let s = s.clone();
            async move {
                s.lock().unwrap().push(t);
                Ok(())
            }
        })
        .build()
        .unwrap()
        .spawn();
    assert_eq!(wait_final(&broker, big).await.state, TaskState::Completed);
    let rec = wait_final(&broker, gone).await;
    assert_eq!(
        rec.archive_reason,
        Some(ArchiveReason::Other(BLOB_MISSING.to_owned()))
    );
    // The completed task's blob is deleted after its ack.
    let mut emptied = false;
    for _ in 0..400 {
        if store.list_tasks(None, 10).await.unwrap().is_empty() {
            emptied = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    worker.shutdown().await.unwrap();
    assert!(emptied, "blob not deleted after completion");
    assert_eq!(seen.lock().unwrap().as_slice(), &[render(100 * 1024)]);
    // And it is really gone from Redis.
    assert!(
        store
            .get(&BlobKey {
                task: big,
                digest: [0; 32]
            })
            .await
            .unwrap()
            .is_none()
    );
}
