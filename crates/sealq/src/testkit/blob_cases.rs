//! Blob store conformance ([`crate::blob::BlobStore`], feature `testkit`):
//! every blob store a backend ships runs these cases through
//! [`crate::blob_store_tests!`], each on a fresh, isolated store.
//!
//! ```ignore
//! sealq::blob_store_tests!(async |clock: SharedClock| {
//!     let dir = tempfile::tempdir().unwrap();
//!     let broker = MyBroker::open(dir.path().join("q.db"), clock).unwrap();
//!     let blobs = Arc::new(MyBlobStore::open(dir.path().join("q.db")).unwrap());
//!     Harness::new(broker).with_blob_store(blobs).with_guard(dir)
//! });
//! ```

use std::future::Future;
use std::sync::Arc;

use crate::model::clock::SharedClock;
use crate::model::id::TaskId;
use crate::store::blob::{BlobKey, BlobStore};
use crate::testkit::{Harness, ManualClock, START_MS};

/// Run one blob store case on the store of a fresh harness.
///
/// Used by [`crate::blob_store_tests!`].
pub async fn run<F, R, C, Fut>(factory: F, case: C)
where
    F: AsyncFnOnce(SharedClock) -> R,
    R: Into<Harness>,
    C: FnOnce(Arc<dyn BlobStore>) -> Fut,
    Fut: Future<Output = ()>,
{
    let clock: SharedClock = ManualClock::new(START_MS);
    let harness: Harness = factory(clock).await.into();
    let store = harness
        .blob_store
        .clone()
        .expect("blob_store_tests! needs Harness::with_blob_store");
    case(store).await;
    drop(harness);
}

/// A key for `task` whose digest is filled with `byte`.
fn key(task: TaskId, byte: u8) -> BlobKey {
    BlobKey {
        task,
        digest: [byte; 32],
    }
}

/// Blobs come back byte for byte under their exact key: task and digest
/// both name a blob, so two blobs of one task live side by side.
pub async fn blob_put_get_roundtrip(store: Arc<dyn BlobStore>) {
    let (t1, t2) = (TaskId::new(), TaskId::new());
    let big: Vec<u8> = (0..=255u8).cycle().take(300_000).collect();
    store.put(&key(t1, 1), big.clone()).await.unwrap();
    store.put(&key(t1, 2), b"second".to_vec()).await.unwrap();
    store.put(&key(t2, 1), vec![0, 255, 0]).await.unwrap();
    assert_eq!(store.get(&key(t1, 1)).await.unwrap(), Some(big));
    assert_eq!(
        store.get(&key(t1, 2)).await.unwrap().as_deref(),
        Some(&b"second"[..])
    );
    assert_eq!(store.get(&key(t2, 1)).await.unwrap(), Some(vec![0, 255, 0]));
    assert_eq!(
        store.get(&key(t2, 2)).await.unwrap(),
        None,
        "another digest"
    );
    assert_eq!(store.get(&key(TaskId::new(), 1)).await.unwrap(), None);
    store.put(&key(t2, 3), Vec::new()).await.unwrap();
    assert_eq!(store.get(&key(t2, 3)).await.unwrap(), Some(Vec::new()));
    assert!(!store.describe().is_empty());
}

/// `delete_tasks` removes every blob of the given tasks, counts the blobs
/// that existed, ignores unknown tasks and leaves the others.
pub async fn blob_delete_tasks_counts_blobs(store: Arc<dyn BlobStore>) {
    let (t1, t2, t3) = (TaskId::new(), TaskId::new(), TaskId::new());
    for (t, b) in [(t1, 1), (t1, 2), (t2, 1), (t3, 1)] {
        store.put(&key(t, b), vec![b; 10]).await.unwrap();
    }
    assert_eq!(store.delete_tasks(&[]).await.unwrap(), 0);
    assert_eq!(
        store.delete_tasks(&[t1, t2, TaskId::new()]).await.unwrap(),
        3,
        "two blobs of t1, one of t2"
    );
    for k in [key(t1, 1), key(t1, 2), key(t2, 1)] {
        assert_eq!(store.get(&k).await.unwrap(), None);
    }
    assert_eq!(store.get(&key(t3, 1)).await.unwrap(), Some(vec![1; 10]));
    assert_eq!(store.delete_tasks(&[t1, t2]).await.unwrap(), 0);
    assert_eq!(store.list_tasks(None, 10).await.unwrap(), vec![t3]);
}

/// `list_tasks` lists each task with a blob once, ordered, after `after`,
/// at most `limit`: paging through it visits every task exactly once.
pub async fn blob_list_tasks_pages_in_order(store: Arc<dyn BlobStore>) {
    assert!(store.list_tasks(None, 10).await.unwrap().is_empty());
    let mut all: Vec<TaskId> = (0..25).map(|_| TaskId::new()).collect();
    for (i, t) in all.iter().enumerate() {
        store.put(&key(*t, 1), vec![i as u8]).await.unwrap();
        if i % 3 == 0 {
            // A second blob does not list the task twice.
            store.put(&key(*t, 2), vec![i as u8]).await.unwrap();
        }
    }
    all.sort();
    assert_eq!(store.list_tasks(None, 100).await.unwrap(), all);
    assert_eq!(store.list_tasks(None, 4).await.unwrap(), all[..4].to_vec());
    let mut seen = Vec::new();
    let mut after = None;
    loop {
        let page = store.list_tasks(after, 7).await.unwrap();
        assert!(page.len() <= 7);
        let Some(last) = page.last().copied() else {
            break;
        };
        after = Some(last);
        seen.extend(page);
    }
    assert_eq!(seen, all);
    assert_eq!(
        store.list_tasks(Some(all[23]), 10).await.unwrap(),
        vec![all[24]]
    );
    assert!(
        store
            .list_tasks(Some(all[24]), 10)
            .await
            .unwrap()
            .is_empty()
    );
    // Deleted tasks leave the listing.
    store.delete_tasks(&all[..10]).await.unwrap();
    assert_eq!(
        store.list_tasks(None, 100).await.unwrap(),
        all[10..].to_vec()
    );
}

/// Expand to one `#[tokio::test]` per blob store case, each on the blob
/// store of a fresh harness from the given factory (see [`blob_cases`](crate::testkit::blob_cases)).
#[macro_export]
macro_rules! blob_store_tests {
    ($factory:expr $(,)?) => {
        $crate::blob_store_tests!(@cases $factory;
            blob_put_get_roundtrip,
            blob_delete_tasks_counts_blobs,
            blob_list_tasks_pages_in_order,
        );
    };
    (@cases $factory:expr; $($case:ident),* $(,)?) => {
        $(
            #[::tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $case() {
                $crate::testkit::blob_cases::run($factory, $crate::testkit::blob_cases::$case).await;
            }
        )*
    };
}
