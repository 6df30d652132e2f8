//! Claim-check over a real SQLite broker: large payloads go to a blob store
//! (memory and filesystem), the worker opens them transparently, blobs are
//! deleted on completion and swept when their task is gone; a missing or
//! tampered blob ends the task in a clear state and the worker keeps going.

use std::sync::Arc;
use std::time::Duration;

use sealq::blob::{BLOB_MISSING, BlobKey, BlobStore, FsBlobStore, MemoryBlobStore, sweep_orphans};
use sealq::broker::{Broker, TaskRecord};
use sealq::{
    ArchiveReason, Client, EnqueueOptions, Error, Keyring, Task, TaskContext, TaskId, TaskState,
    Worker,
};
use sealq_sqlite::{SqliteBlobStore, SqliteBroker};
use serde::{Deserialize, Serialize};

#[derive(Debug, Serialize, Deserialize, PartialEq)]
struct Render {
    name: String,
    #[serde(with = "serde_bytes_vec")]
    pdf: Vec<u8>,
}
impl Task for Render {
    const KIND: &'static str = "test.render";
}

/// Bytes as a MessagePack string of hex (keeps the test free of serde_bytes).
mod serde_bytes_vec {
    use serde::{Deserialize, Deserializer, Serializer};
    pub(crate) fn serialize<S: Serializer>(v: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&String::from_utf8_lossy(v))
    }
    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        Ok(String::deserialize(d)?.into_bytes())
    }
}

fn render(n: usize) -> Render {
    Render {
        name: format!("doc-{n}"),
        pdf: "%PDF-1.7 lorem ipsum ".repeat(n / 21 + 1).into_bytes()[..n].to_vec(),
    }
}

struct Env {
    _dir: tempfile::TempDir,
    broker: Arc<dyn Broker>,
    keyring: Arc<Keyring>,
}

fn env() -> Env {
    let dir = tempfile::tempdir().expect("tempdir");
    let broker: Arc<dyn Broker> =
        Arc::new(SqliteBroker::open(dir.path().join("q.db")).expect("open broker"));
    Env {
        _dir: dir,
        broker,
        keyring: Arc::new(Keyring::generate()),
    }
}

fn client(e: &Env, store: Arc<dyn BlobStore>) -> Client {
    Client::builder(e.broker.clone(), e.keyring.clone())
        .blob_store(store, 4096)
        .build()
}

fn worker(
    e: &Env,
    store: Option<Arc<dyn BlobStore>>,
    seen: Arc<std::sync::Mutex<Vec<Render>>>,
) -> sealq::WorkerHandle {
    let mut b = Worker::builder(e.broker.clone(), e.keyring.clone())
        .maintenance_interval(Duration::from_millis(20))
        .shutdown_timeout(Duration::from_secs(5));
    if let Some(s) = store {
        b = b.blob_store(s);
    }
    b.handle(move |task: Render, _ctx: TaskContext| {
        let seen = seen.clone();
        async move {
            seen.lock().unwrap().push(task);
            Ok(())
        }
    })
    .build()
    .expect("worker")
    .spawn()
}

async fn wait_final(broker: &Arc<dyn Broker>, id: TaskId) -> TaskRecord {
    let give_up = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let rec = broker.get(id).await.expect("get").expect("task exists");
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

async fn eventually(mut check: impl AsyncFnMut() -> bool) -> bool {
    for _ in 0..400 {
        if check().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    false
}

async fn round_trip(e: &Env, store: Arc<dyn BlobStore>) {
    let c = client(e, store.clone());
    // 100 KiB: over the default 64 KiB budget, accepted because it is offloaded.
    let big = c
        .enqueue(&render(100 * 1024), EnqueueOptions::new())
        .await
        .unwrap();
    let small = c
        .enqueue(&render(100), EnqueueOptions::new())
        .await
        .unwrap();

    let stored = e.broker.get(big).await.unwrap().unwrap();
    assert!(
        stored.envelope.len() < 200,
        "the broker holds a claim: {stored:?}"
    );
    assert!(e.broker.get(small).await.unwrap().unwrap().envelope.len() > 100);
    assert_eq!(store.list_tasks(None, 10).await.unwrap(), vec![big]);

    let seen = Arc::default();
    let w = worker(e, Some(store.clone()), Arc::clone(&seen));
    assert_eq!(wait_final(&e.broker, big).await.state, TaskState::Completed);
    assert_eq!(
        wait_final(&e.broker, small).await.state,
        TaskState::Completed
    );
    // Deleted once the completion is acknowledged.
    assert!(eventually(async || store.list_tasks(None, 10).await.unwrap().is_empty()).await);
    w.shutdown().await.unwrap();
    let seen = seen.lock().unwrap();
    assert!(
        seen.contains(&render(100 * 1024)),
        "the handler got the full payload"
    );
    assert!(seen.contains(&render(100)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offload_round_trip_in_memory() {
    let e = env();
    round_trip(&e, Arc::new(MemoryBlobStore::new())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offload_round_trip_on_disk() {
    let e = env();
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(FsBlobStore::open(dir.path().join("blobs")).unwrap());
    round_trip(&e, store.clone()).await;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(store.dir()).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o700);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offload_round_trip_in_the_broker_file() {
    let e = env();
    let store = Arc::new(SqliteBlobStore::open(e._dir.path().join("q.db")).unwrap());
    round_trip(&e, store.clone()).await;
    // Rows are sealed bytes: the document text is nowhere in the table.
    let conn = rusqlite::Connection::open(e._dir.path().join("q.db")).unwrap();
    let n: i64 = conn
        .query_row("SELECT count(*) FROM blobs", [], |r| r.get(0))
        .unwrap();
    assert_eq!(n, 0, "deleted after completion");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_blob_store_basics() {
    let e = env();
    let store = SqliteBlobStore::open(e._dir.path().join("q.db")).unwrap();
    let (a, b) = (TaskId::new(), TaskId::new());
    let key = |task, d: u8| BlobKey {
        task,
        digest: [d; 32],
    };
    store.put(&key(a, 1), b"one".to_vec()).await.unwrap();
    store.put(&key(a, 2), b"two".to_vec()).await.unwrap();
    store.put(&key(b, 1), b"three".to_vec()).await.unwrap();
    assert_eq!(
        store.get(&key(a, 2)).await.unwrap().as_deref(),
        Some(&b"two"[..])
    );
    assert_eq!(store.get(&key(b, 2)).await.unwrap(), None);
    assert_eq!(store.list_tasks(None, 10).await.unwrap(), vec![a, b]);
    assert_eq!(store.list_tasks(Some(a), 10).await.unwrap(), vec![b]);
    assert_eq!(store.list_tasks(None, 1).await.unwrap(), vec![a]);
    assert_eq!(store.delete_tasks(&[a, TaskId::new()]).await.unwrap(), 2);
    assert_eq!(store.list_tasks(None, 10).await.unwrap(), vec![b]);
    // The broker still works on the same file.
    assert!(e.broker.stats().await.unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_and_tampered_blobs_end_in_clear_states() {
    let e = env();
    let store = Arc::new(MemoryBlobStore::new());
    let c = client(&e, store.clone());
    let missing = c
        .enqueue(&render(10_000), EnqueueOptions::new())
        .await
        .unwrap();
    let tampered = c
        .enqueue(&render(10_000), EnqueueOptions::new())
        .await
        .unwrap();
    let fine = c
        .enqueue(&render(10_000), EnqueueOptions::new())
        .await
        .unwrap();
    store.delete_tasks(&[missing]).await.unwrap();
    assert_eq!(store.overwrite(tampered, b"not the sealed blob"), 1);

    let w = worker(&e, Some(store.clone()), Arc::default());
    let rec = wait_final(&e.broker, missing).await;
    assert_eq!(
        rec.archive_reason,
        Some(ArchiveReason::Other(BLOB_MISSING.into()))
    );
    let rec = wait_final(&e.broker, tampered).await;
    assert_eq!(rec.archive_reason, Some(ArchiveReason::Integrity));
    assert_eq!(
        wait_final(&e.broker, fine).await.state,
        TaskState::Completed
    );
    let report = w.shutdown().await.unwrap();
    assert_eq!(
        (report.succeeded, report.archived, report.integrity_failures),
        (1, 2, 1)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_blob_cannot_be_moved_to_another_task() {
    let e = env();
    let store = Arc::new(MemoryBlobStore::new());
    let c = client(&e, store.clone());
    let a = c
        .enqueue(&render(10_000), EnqueueOptions::new())
        .await
        .unwrap();
    let b = c
        .enqueue(&render(10_000), EnqueueOptions::new())
        .await
        .unwrap();
    // Give b the sealed bytes of a's blob (same size, other task).
    let a_blob = store.blobs_of(a).pop().unwrap();
    assert_eq!(store.overwrite(b, &a_blob), 1);
    let w = worker(&e, Some(store.clone()), Arc::default());
    assert_eq!(wait_final(&e.broker, a).await.state, TaskState::Completed);
    let rec = wait_final(&e.broker, b).await;
    assert_eq!(rec.archive_reason, Some(ArchiveReason::Integrity));
    w.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_without_the_blob_store_retries() {
    let e = env();
    let store = Arc::new(MemoryBlobStore::new());
    let c = client(&e, store.clone());
    let id = c
        .enqueue(&render(10_000), EnqueueOptions::new().max_retries(0))
        .await
        .unwrap();
    let w = worker(&e, None, Arc::default());
    let rec = wait_final(&e.broker, id).await;
    assert_eq!(rec.archive_reason, Some(ArchiveReason::Exhausted));
    w.shutdown().await.unwrap();
    assert_eq!(
        store.len(),
        1,
        "kept: the task can be re-run by a worker that has the store"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sweep_deletes_blobs_of_deleted_tasks() {
    let e = env();
    let store = Arc::new(MemoryBlobStore::new());
    let c = client(&e, store.clone());
    let gone = c
        .enqueue(&render(10_000), EnqueueOptions::new())
        .await
        .unwrap();
    let kept = c
        .enqueue(&render(10_000), EnqueueOptions::new())
        .await
        .unwrap();
    e.broker.delete(&[gone]).await.unwrap(); // as erasure or an operator would
    // Young blobs are left alone (their task may be being enqueued).
    assert_eq!(
        sweep_orphans(&*e.broker, &*store, Duration::from_secs(60))
            .await
            .unwrap(),
        0
    );
    assert_eq!(
        sweep_orphans(&*e.broker, &*store, Duration::ZERO)
            .await
            .unwrap(),
        1
    );
    assert_eq!(store.list_tasks(None, 10).await.unwrap(), vec![kept]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_that_sweeps_deletes_orphaned_blobs_by_itself() {
    let e = env();
    let store = Arc::new(MemoryBlobStore::new());
    let c = client(&e, store.clone());
    let gone = c
        .enqueue(&render(10_000), EnqueueOptions::new())
        .await
        .unwrap();
    // Scheduled for later: its blob must outlive every sweep.
    let kept = c
        .enqueue(
            &render(10_000),
            EnqueueOptions::new().delay(Duration::from_secs(3600)),
        )
        .await
        .unwrap();
    e.broker.delete(&[gone]).await.unwrap();
    assert_eq!(store.len(), 2);
    let w = Worker::builder(e.broker.clone(), e.keyring.clone())
        .maintenance_interval(Duration::from_millis(20))
        .blob_store(store.clone())
        .sweep_blobs(Duration::from_millis(20), Duration::ZERO)
        .handle(|_task: Render, _ctx: TaskContext| async { Ok(()) })
        .build()
        .unwrap()
        .spawn();
    assert!(
        eventually(async || store.list_tasks(None, 10).await.unwrap() == vec![kept]).await,
        "the deleted task's blob is swept, the scheduled task's kept"
    );
    let report = w.shutdown().await.unwrap();
    assert_eq!(report.blobs_swept, 1, "{report:?}");
    assert_eq!(store.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offloaded_payloads_are_still_scanned() {
    let e = env();
    let c = client(&e, Arc::new(MemoryBlobStore::new()));
    let mut task = render(10_000);
    task.name = "card 4242 4242 4242 4242".into();
    let err = c.enqueue(&task, EnqueueOptions::new()).await.unwrap_err();
    assert!(matches!(err, Error::PolicyViolation { .. }), "{err}");
}

/// The one blob file of task `id` in an [`FsBlobStore`] (`DIR/<id>/<digest>.blob`).
fn blob_file(store: &FsBlobStore, id: TaskId) -> Vec<u8> {
    let files: Vec<_> = std::fs::read_dir(store.dir().join(id.to_string()))
        .expect("the task's blob directory")
        .map(|f| f.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "blob"))
        .collect();
    assert_eq!(files.len(), 1, "{files:?}");
    std::fs::read(&files[0]).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subject_task_is_offloaded_under_its_data_key_and_erasure_shreds_the_blob() {
    use sealq::envelope::{Aad, Purpose};
    use sealq::subject_keys::{SubjectKeys, is_subject_sealed};

    let e = env();
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(FsBlobStore::open(dir.path().join("blobs")).unwrap());
    let c = client(&e, store.clone());
    let big42 = c
        .enqueue(
            &render(100 * 1024),
            EnqueueOptions::new().subject("user-42"),
        )
        .await
        .unwrap();
    let big7 = c
        .enqueue(&render(90 * 1024), EnqueueOptions::new().subject("user-7"))
        .await
        .unwrap();

    // The broker holds a claim sealed with the subject's key, the store the
    // subject-sealed envelope: neither opens with the keyring.
    let rec42 = e.broker.get(big42).await.unwrap().unwrap();
    assert!(rec42.envelope.len() < 200, "a claim: {rec42:?}");
    assert!(is_subject_sealed(&rec42.envelope));
    let aad42 = Aad::for_record(&rec42, Purpose::Payload);
    assert!(e.keyring.open(&aad42, &rec42.envelope).is_err());
    let blob42 = blob_file(&store, big42);
    assert!(is_subject_sealed(&blob42));
    assert!(e.keyring.open(&aad42, &blob42).is_err());
    let rec7 = e.broker.get(big7).await.unwrap().unwrap();
    let blob7 = blob_file(&store, big7);

    // user-42 is erased before any worker runs; user-7's task runs, whole.
    c.erase_subject("user-42", "dpo").await.unwrap();
    assert!(e.broker.get(big42).await.unwrap().is_none());
    let seen = Arc::default();
    let w = worker(&e, Some(store.clone()), Arc::clone(&seen));
    assert_eq!(
        wait_final(&e.broker, big7).await.state,
        TaskState::Completed
    );
    w.shutdown().await.unwrap();
    assert_eq!(*seen.lock().unwrap(), vec![render(90 * 1024)]);

    // Copies of both blobs taken earlier (a backup of the blob store): the
    // erased subject's no longer opens, the other subject's still does.
    let keys = SubjectKeys::new(e.broker.subject_key_store().unwrap(), &e.keyring);
    assert!(
        keys.for_open(&e.keyring.subject_tag("user-42"))
            .await
            .unwrap()
            .is_none(),
        "the key survived erasure"
    );
    let k7 = keys
        .for_open(&e.keyring.subject_tag("user-7"))
        .await
        .unwrap()
        .unwrap();
    let opened = k7
        .open(&Aad::for_record(&rec7, Purpose::Payload), &blob7)
        .unwrap();
    let back: Render = rmp_serde::from_slice(&opened).unwrap();
    assert_eq!(back, render(90 * 1024));
}
