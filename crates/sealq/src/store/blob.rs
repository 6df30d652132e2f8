//! The [`BlobStore`] trait: where offloaded (claim-checked) sealed payloads
//! live, named by [`BlobKey`].

use async_trait::async_trait;

use crate::model::id::TaskId;
use crate::store::broker::BrokerResult;

/// Names one blob: its task and the SHA-256 of its sealed bytes (so a task
/// enqueued twice under one id, or re-sent after a failed enqueue, never
/// overwrites the blob another claim names).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BlobKey {
    /// The task.
    pub task: TaskId,
    /// SHA-256 of the sealed blob.
    pub digest: [u8; 32],
}

impl std::fmt::Display for BlobKey {
    /// `<task id>.<first 16 bytes of the digest in hex>`: safe as a file name
    /// or a Redis key.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}", self.task, hex::encode(&self.digest[..16]))
    }
}

/// Storage for sealed payload blobs. Failures are
/// `BrokerError`s (`Unavailable` for "try again").
#[async_trait]
pub trait BlobStore: Send + Sync + std::fmt::Debug + 'static {
    /// Store `sealed` under `key`.
    async fn put(&self, key: &BlobKey, sealed: Vec<u8>) -> BrokerResult<()>;

    /// The blob under `key`, if any.
    async fn get(&self, key: &BlobKey) -> BrokerResult<Option<Vec<u8>>>;

    /// Delete every blob of the tasks `ids` (missing ones are ignored);
    /// returns how many blobs existed.
    async fn delete_tasks(&self, ids: &[TaskId]) -> BrokerResult<u64>;

    /// Distinct task ids that have a blob, ordered, after `after`, at most `limit`.
    async fn list_tasks(&self, after: Option<TaskId>, limit: usize) -> BrokerResult<Vec<TaskId>>;

    /// A short, secret-free description for logs.
    fn describe(&self) -> String;
}
