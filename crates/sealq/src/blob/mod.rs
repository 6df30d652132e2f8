//! Claim-check: the rare payload that must be large (a generated PDF, an
//! image) goes to a blob store; the task in the broker carries only a small
//! sealed claim.
//!
//! # How
//!
//! - **Producer** ([`ClientBuilder::blob_store`](crate::ClientBuilder::blob_store)):
//!   a payload whose sealed envelope is over the threshold is sealed as usual
//!   (same keyring, same associated data: bound to the task id, queue, type,
//!   producer, times and subject), the sealed bytes are put in the blob store
//!   under the task id, and the envelope stored in the broker is replaced by
//!   a sealed *claim*: 44 bytes naming the blob's length and SHA-256. The
//!   queue's size budget applies to what the broker stores, so offloaded
//!   payloads pass it; the sensitive-data scanner still runs on the whole
//!   payload.
//! - **Worker** ([`WorkerBuilder::blob_store`](crate::WorkerBuilder::blob_store)):
//!   a payload that opens to a claim is fetched from the store, checked
//!   against the claim's length and hash and opened with the task's
//!   associated data; the handler sees the original payload. A blob that is
//!   missing archives the task (`blob_missing`); tampered or swapped bytes
//!   are an integrity failure (`integrity`); a store error retries it.
//! - **Deletion**: the worker deletes a task's blob once the broker applied
//!   the task's completion. Blobs of archived tasks stay (the task can be
//!   re-run); [`sweep_orphans`] deletes the blobs whose task no longer exists
//!   in the broker (purged, deleted, erased). Run it periodically.
//!
//! Stores: [`FsBlobStore`] (a directory per task, files written atomically,
//! mode 0600), [`MemoryBlobStore`] (tests, one process), and
//! `sealq_sqlite::SqliteBlobStore` (a table in the broker's file). Others
//! (Redis with a TTL, S3) implement [`BlobStore`].
//!
//! A blob store holds only sealed bytes: like the broker, it can neither read
//! nor forge them, and a blob cannot be moved to another task.

mod claim;
mod fs;

use std::collections::BTreeMap;
use std::sync::Mutex;

use async_trait::async_trait;

use crate::broker::{Broker, BrokerResult};
use crate::task::TaskId;

pub(crate) use claim::{
    ClaimAction, ClaimError, Sealer, check_policy, claimed_blob, delete_completed, offload_all,
    open_claimed, reseal_blob,
};
pub use fs::FsBlobStore;

/// Archive reason of a task whose blob is not in the blob store, as stored in
/// [`ArchiveReason::Other`](crate::ArchiveReason::Other).
pub const BLOB_MISSING: &str = "blob_missing";

/// Default threshold: sealed payloads larger than this are offloaded (32 KiB).
pub const DEFAULT_OFFLOAD_THRESHOLD: usize = 32 * 1024;

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
/// [`BrokerError`](crate::BrokerError)s (`Unavailable` for "try again").
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

/// Blobs in memory: for tests and single-process setups.
#[derive(Debug, Default)]
pub struct MemoryBlobStore {
    blobs: Mutex<BTreeMap<BlobKey, Vec<u8>>>,
}

impl MemoryBlobStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    fn map(&self) -> std::sync::MutexGuard<'_, BTreeMap<BlobKey, Vec<u8>>> {
        // Plain map operations only: a poisoned lock is still consistent.
        self.blobs.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// How many blobs are stored.
    pub fn len(&self) -> usize {
        self.map().len()
    }

    /// Whether no blob is stored.
    pub fn is_empty(&self) -> bool {
        self.map().is_empty()
    }

    /// The stored bytes of task `id`'s blobs (tests).
    pub fn blobs_of(&self, id: TaskId) -> Vec<Vec<u8>> {
        self.map()
            .iter()
            .filter(|(k, _)| k.task == id)
            .map(|(_, v)| v.clone())
            .collect()
    }

    /// Replace the bytes of every blob of task `id` (tests of tampering);
    /// returns how many were replaced.
    pub fn overwrite(&self, id: TaskId, bytes: &[u8]) -> usize {
        let mut m = self.map();
        let mut n = 0;
        for (_, v) in m.iter_mut().filter(|(k, _)| k.task == id) {
            *v = bytes.to_vec();
            n += 1;
        }
        n
    }
}

#[async_trait]
impl BlobStore for MemoryBlobStore {
    async fn put(&self, key: &BlobKey, sealed: Vec<u8>) -> BrokerResult<()> {
        self.map().insert(*key, sealed);
        Ok(())
    }

    async fn get(&self, key: &BlobKey) -> BrokerResult<Option<Vec<u8>>> {
        Ok(self.map().get(key).cloned())
    }

    async fn delete_tasks(&self, ids: &[TaskId]) -> BrokerResult<u64> {
        let mut m = self.map();
        let before = m.len();
        m.retain(|k, _| !ids.contains(&k.task));
        Ok((before - m.len()) as u64)
    }

    async fn list_tasks(&self, after: Option<TaskId>, limit: usize) -> BrokerResult<Vec<TaskId>> {
        let mut ids: Vec<TaskId> = self
            .map()
            .keys()
            .map(|k| k.task)
            .filter(|id| after.is_none_or(|a| *id > a))
            .collect();
        ids.dedup();
        ids.truncate(limit.max(1));
        Ok(ids)
    }

    fn describe(&self) -> String {
        "memory".into()
    }
}

/// Delete every blob whose task no longer exists in `broker` (purged after
/// its retention, deleted by an operator, erased). Returns how many blobs
/// were deleted.
///
/// A producer puts a blob just before it enqueues the task, so blobs of
/// tasks younger than `min_age` (by the time in their UUID v7 id) are left
/// alone: use a minute or more. Run it every few minutes, from one process.
pub async fn sweep_orphans(
    broker: &dyn Broker,
    store: &dyn BlobStore,
    min_age: std::time::Duration,
) -> BrokerResult<u64> {
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    let young = |id: &TaskId| {
        id.0.get_timestamp().is_some_and(|t| {
            let (secs, nanos) = t.to_unix();
            let created_ms = secs * 1000 + u64::from(nanos / 1_000_000);
            now_ms.saturating_sub(created_ms) < min_age.as_millis() as u64
        })
    };
    const PAGE: usize = 500;
    let mut after = None;
    let mut deleted = 0;
    loop {
        let ids = store.list_tasks(after, PAGE).await?;
        let mut orphans = Vec::new();
        for id in ids.iter().filter(|id| !young(id)) {
            if broker.get(*id).await?.is_none() {
                orphans.push(*id);
            }
        }
        if !orphans.is_empty() {
            deleted += store.delete_tasks(&orphans).await?;
        }
        match ids.last() {
            Some(last) if ids.len() == PAGE => after = Some(*last),
            _ => return Ok(deleted),
        }
    }
}
