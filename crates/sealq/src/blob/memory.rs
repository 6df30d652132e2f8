//! [`MemoryBlobStore`]: blobs in a map, for tests and one process.

use std::collections::BTreeMap;
use std::sync::Mutex;

use async_trait::async_trait;

use crate::model::id::TaskId;
use crate::store::blob::{BlobKey, BlobStore};
use crate::store::broker::BrokerResult;

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
