//! The sealed envelope: XChaCha20-Poly1305 over a payload, result or error,
//! bound by associated data to the task's identity. See `docs/envelope.md`.
//!
//! STUB: API fixed, implementation pending (helper H1 fills this file).

use crate::broker::TaskRecord;
use crate::task::{SubjectTag, TaskId};

/// What the sealed bytes are; bound into the associated data so a result can
/// never be passed off as a payload or an error message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Purpose {
    /// The task's payload.
    Payload = 1,
    /// The handler's result.
    Result = 2,
    /// A handler's error message.
    Error = 3,
}

/// The task identity bound into an envelope's associated data.
#[derive(Debug, Clone, Copy)]
pub struct Aad<'a> {
    /// What is sealed.
    pub purpose: Purpose,
    /// Task id.
    pub task_id: TaskId,
    /// Queue.
    pub queue: &'a str,
    /// Task type.
    pub kind: &'a str,
    /// Producer id.
    pub producer: &'a str,
    /// Creation time, Unix ms.
    pub created_at_ms: i64,
    /// Not-after time, Unix ms.
    pub not_after_ms: Option<i64>,
    /// Subject tag.
    pub subject_tag: Option<SubjectTag>,
}

impl<'a> Aad<'a> {
    /// The associated data of a stored task, for `purpose`.
    pub fn for_record(record: &'a TaskRecord, purpose: Purpose) -> Self {
        Aad {
            purpose,
            task_id: record.id,
            queue: &record.queue,
            kind: &record.kind,
            producer: &record.meta.producer,
            created_at_ms: record.meta.created_at_ms,
            not_after_ms: record.meta.not_after_ms,
            subject_tag: record.meta.subject_tag,
        }
    }
}
