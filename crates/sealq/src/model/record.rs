//! A task as it is stored: [`NewTask`] on its way in, [`TaskRecord`] on
//! its way out. Both carry the sealed envelope as opaque bytes beside the
//! clear [`TaskMeta`].

use crate::model::id::TaskId;
use crate::model::state::{ArchiveReason, TaskState};
use crate::model::task::TaskMeta;

/// A task ready to be stored: sealed envelope plus clear metadata.
#[derive(Debug, Clone)]
pub struct NewTask {
    /// Task id (UUID v7).
    pub id: TaskId,
    /// Queue name.
    pub queue: String,
    /// Task type name.
    pub kind: String,
    /// The sealed envelope bytes (see `docs/envelope.md`).
    pub envelope: Vec<u8>,
    /// Clear metadata.
    pub meta: TaskMeta,
    /// When it may run, Unix ms. At or before now: `Pending`; later: `Scheduled`.
    pub run_at_ms: i64,
    /// Uniqueness constraint: key and how long it holds, ms.
    pub unique: Option<(String, u64)>,
}

/// A stored task as the broker returns it.
#[derive(Clone)]
pub struct TaskRecord {
    /// Task id.
    pub id: TaskId,
    /// Queue name.
    pub queue: String,
    /// Task type name.
    pub kind: String,
    /// Sealed envelope.
    pub envelope: Vec<u8>,
    /// Clear metadata.
    pub meta: TaskMeta,
    /// Current state.
    pub state: TaskState,
    /// How many times it has been leased (1 during the first attempt).
    pub attempts: u32,
    /// When it may next run, Unix ms.
    pub run_at_ms: i64,
    /// Sealed error of the last failed attempt.
    pub last_error: Option<Vec<u8>>,
    /// Sealed result, once completed.
    pub result: Option<Vec<u8>>,
    /// Why it was archived.
    pub archive_reason: Option<ArchiveReason>,
    /// Lease expiry while active, Unix ms.
    pub lease_expires_at_ms: Option<i64>,
    /// When it completed or was archived, Unix ms.
    pub finished_at_ms: Option<i64>,
    /// Last state change, Unix ms.
    pub updated_at_ms: i64,
}

impl std::fmt::Debug for TaskRecord {
    /// Ids, types, sizes and states only: never envelope, result or error bytes.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TaskRecord")
            .field("id", &self.id)
            .field("queue", &self.queue)
            .field("kind", &self.kind)
            .field("state", &self.state)
            .field("attempts", &self.attempts)
            .field("envelope_len", &self.envelope.len())
            .field("result_len", &self.result.as_ref().map(Vec::len))
            .field("archive_reason", &self.archive_reason)
            .finish_non_exhaustive()
    }
}
