//! What an audit record says happened: [`AuditEvent`].

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::model::id::TaskId;

/// One lifecycle event. Serialized with a `type` tag in snake_case
/// (`{"type":"enqueued","task":"…",…}`).
///
/// Events carry ids, names, sizes, hashes and reasons, never a payload, a
/// result, an error message or a subject id: a payload is represented by the
/// SHA-256 of its sealed envelope, an error by the size of its sealed form, a
/// data subject by its keyed tag.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
#[non_exhaustive]
pub enum AuditEvent {
    /// A producer stored a sealed task.
    Enqueued {
        /// The task.
        task: TaskId,
        /// Its queue.
        queue: String,
        /// Its type name.
        kind: String,
        /// The producer id bound into the envelope.
        producer: String,
        /// The key id that sealed the envelope.
        key_id: String,
        /// SHA-256 of the sealed envelope, lowercase hex.
        ciphertext_sha256: String,
        /// Size of the sealed envelope, bytes.
        ciphertext_len: u64,
    },
    /// A producer stored several sealed tasks with one broker call: one
    /// record per call instead of one `enqueued` record per task (a call
    /// of one task still writes `enqueued`). [`AuditEvent::for_task`]
    /// gives one task's `enqueued` view of it.
    EnqueuedBatch {
        /// The producer id bound into the envelopes.
        producer: String,
        /// The tasks the broker accepted, in call order.
        tasks: Vec<EnqueuedEntry>,
    },
    /// A worker took a lease on the task.
    Leased {
        /// The task.
        task: TaskId,
        /// Its queue.
        queue: String,
        /// The worker holding the lease.
        worker: String,
        /// The attempt (1 for the first run).
        attempt: u32,
        /// When the lease expires unless extended, Unix ms.
        lease_expires_at_ms: i64,
    },
    /// A worker leased several tasks with one broker call: one record per
    /// call (and lease expiry) instead of one `leased` record per task.
    /// [`AuditEvent::for_task`] gives one task's `leased` view of it.
    LeasedBatch {
        /// The worker holding the leases.
        worker: String,
        /// When the leases expire unless extended, Unix ms.
        lease_expires_at_ms: i64,
        /// The tasks, in the order the broker returned them.
        tasks: Vec<LeasedEntry>,
    },
    /// The envelope opened and the handler was called.
    Started {
        /// The task.
        task: TaskId,
        /// The worker.
        worker: String,
        /// The attempt.
        attempt: u32,
    },
    /// The handlers of several tasks were called: consecutive `started`
    /// events of one worker that its auditor took in one go, one record
    /// for all of them, each task with the time it started (the record's
    /// own time is the first's). [`AuditEvent::for_task`] gives one task's
    /// `started` view of it.
    StartedBatch {
        /// The worker.
        worker: String,
        /// The tasks, in the order they started.
        tasks: Vec<StartedEntry>,
    },
    /// The handler succeeded.
    Succeeded {
        /// The task.
        task: TaskId,
        /// The worker.
        worker: String,
        /// The attempt.
        attempt: u32,
        /// Size of the sealed result, if the handler set one.
        result_len: Option<u64>,
    },
    /// The handlers of several tasks succeeded: one record per batch of
    /// acknowledgements instead of one `succeeded` record per task.
    /// [`AuditEvent::for_task`] gives one task's `succeeded` view of it.
    SucceededBatch {
        /// The worker.
        worker: String,
        /// The tasks, in the order their handlers finished.
        tasks: Vec<SucceededEntry>,
    },
    /// The handler failed (returned an error, panicked or timed out).
    Failed {
        /// The task.
        task: TaskId,
        /// The worker.
        worker: String,
        /// The attempt.
        attempt: u32,
        /// Size of the sealed error message, bytes (never the text).
        error_len: u64,
    },
    /// The failed task is scheduled to run again.
    Retried {
        /// The task.
        task: TaskId,
        /// The worker.
        worker: String,
        /// The attempt that failed.
        attempt: u32,
        /// When it runs next, Unix ms.
        next_run_at_ms: i64,
    },
    /// The task was dead-lettered.
    Archived {
        /// The task.
        task: TaskId,
        /// The worker, when a worker archived it.
        worker: Option<String>,
        /// The attempt.
        attempt: u32,
        /// Why: `exhausted`, `integrity`, `expired`, `replay`, `erased`, …
        reason: String,
    },
    /// A worker gave the task back unfinished (shutdown); the attempt does not count.
    Requeued {
        /// The task.
        task: TaskId,
        /// The worker.
        worker: String,
        /// The attempt given back.
        attempt: u32,
    },
    /// An operator deleted the task.
    Deleted {
        /// The task.
        task: TaskId,
        /// Who.
        operator: String,
    },
    /// An operator re-ran an archived or completed task.
    Rerun {
        /// The task.
        task: TaskId,
        /// Who.
        operator: String,
    },
    /// An operator deleted or re-ran a batch of tasks chosen by a filter
    /// (`sealq tasks delete|rerun --queue … --state … --reason …
    /// --older-than …`): one record per batch, naming every task of it.
    /// [`AuditEvent::for_task`] gives one task's `deleted` or `rerun` view
    /// of it.
    BulkAction {
        /// `delete` or `rerun`.
        action: String,
        /// The filter that chose the tasks (`queue=q state=archived
        /// reason=exhausted older_than=3600s`; `all` for none).
        filter: String,
        /// The tasks of this batch the action was applied to, in id order.
        tasks: Vec<TaskId>,
        /// How many of them it changed (a task deleted or re-run by someone
        /// else between listing and acting is not counted).
        count: u64,
        /// Who.
        operator: String,
    },
    /// An operator revealed the task's plaintext payload.
    PayloadRevealed {
        /// The task.
        task: TaskId,
        /// Who.
        operator: String,
    },
    /// The keyring's primary key was rotated.
    KeyRotated {
        /// The previous primary key id.
        previous_key_id: Option<String>,
        /// The new primary key id.
        new_key_id: String,
        /// Who.
        operator: String,
    },
    /// An open-only key was removed from the keyring (after re-sealing).
    KeyRemoved {
        /// The removed key id.
        key_id: String,
        /// Parts of stored tasks still sealed with it when it was removed
        /// (0 unless forced).
        still_sealed: u64,
        /// Who.
        operator: String,
    },
    /// A task's envelope was re-sealed under another key.
    Resealed {
        /// The task.
        task: TaskId,
        /// The key that sealed it before.
        from_key_id: String,
        /// The key that seals it now.
        to_key_id: String,
        /// SHA-256 of the new sealed bytes, lowercase hex.
        ciphertext_sha256: String,
        /// Who.
        operator: String,
        /// Which sealed bytes: `payload`, `result`, `error`, or `blob` (an
        /// offloaded payload in the claim-check store). Absent in records
        /// written before it existed (then: the payload).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        part: Option<String>,
    },
    /// Subject data keys were re-wrapped under the key-encryption key of a
    /// new primary key (`sealq keys reseal` after `keys rotate`). Names no
    /// subject: only how many.
    SubjectKeysRewrapped {
        /// The primary key whose KEK wraps them now.
        to_key_id: String,
        /// How many wrapped keys were replaced.
        rewrapped: u64,
        /// Who.
        operator: String,
    },
    /// The erasure receipt: a data subject's tasks and key were destroyed.
    /// Names the subject by its keyed tag only, never its id.
    SubjectErased {
        /// Receipt id, to quote to the data subject or a regulator.
        receipt_id: String,
        /// The subject tag (HMAC of the subject id), lowercase hex.
        subject_tag: String,
        /// Tasks removed, by state (`pending`, `completed`, …).
        counts: BTreeMap<String, u64>,
        /// Whether a wrapped subject key existed and was destroyed.
        key_destroyed: bool,
        /// Who.
        operator: String,
        /// Tasks carrying the subject's clear tag that were not erased
        /// because their envelope does not authenticate as the subject's
        /// (`tag_mismatch`) or could not be checked (`unverified`), by id
        /// with that word (`<id> tag_mismatch`). Absent when none.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        not_erased: Vec<String>,
    },
    /// Erasures were finalised (`sealq erase --finalize`): every stored
    /// subject key re-wrapped under a new key-encryption-key epoch and the
    /// older epochs dropped from the keyring, so no earlier copy of the
    /// subject key store opens with it. Names no subject.
    ErasureFinalised {
        /// The KEK epoch that wraps every subject key now.
        kek_epoch: String,
        /// The epochs dropped from the keyring.
        retired: Vec<String>,
        /// Whether the legacy wrapped-key formats (KEKs derived from the
        /// sealing keys and the subject tag key) were closed too.
        legacy_closed: bool,
        /// Wrapped keys re-wrapped under the new epoch.
        rewrapped: u64,
        /// Who.
        operator: String,
    },
    /// The payload policy refused a task before it was sealed.
    PolicyRejected {
        /// The queue it was meant for.
        queue: String,
        /// Its type name.
        kind: String,
        /// The producer.
        producer: String,
        /// The rule that matched (e.g. `card_number`, `size_budget`).
        rule: String,
        /// Path of the offending field (empty for size budgets). Never the value.
        path: String,
    },
    /// An operator paused a queue.
    QueuePaused {
        /// The queue.
        queue: String,
        /// Who.
        operator: String,
    },
    /// An operator resumed a queue.
    QueueResumed {
        /// The queue.
        queue: String,
        /// Who.
        operator: String,
    },
    /// An operator set or removed a queue's rate limit.
    QueueRateLimited {
        /// The queue.
        queue: String,
        /// Tasks per period, or `None` once removed.
        limit: Option<u64>,
        /// The period, ms, or `None` once removed.
        period_ms: Option<u64>,
        /// Who.
        operator: String,
    },
    /// An operator set or removed a queue's cap on waiting tasks.
    QueueLimited {
        /// The queue.
        queue: String,
        /// The cap, or `None` once removed.
        max_depth: Option<u64>,
        /// Who.
        operator: String,
    },
    /// A writer's first record (seq 0, its genesis): which audit keys it
    /// writes with and the head of the whole log it saw when it started
    /// (finding 5 of the security review). Logs written before it have no
    /// such record; verification warns about them.
    WriterStarted {
        /// This record's format (1).
        format: u32,
        /// The audit key id of the MAC key the writer chains with (a check
        /// value, 16 hex digits).
        mac_key_id: String,
        /// The audit public key its checkpoints verify with, standard base64.
        public_key: String,
        /// How many entries of the checkpoint store it read, or `None` when
        /// it could not read them (see `head_error`).
        checkpoints_seen: Option<u64>,
        /// The Merkle tree head over those entries, lowercase hex.
        checkpoints_root: Option<String>,
        /// Why the checkpoint store could not be read (no secret), if so.
        head_error: Option<String>,
    },
}

/// One task of an [`AuditEvent::EnqueuedBatch`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EnqueuedEntry {
    /// The task.
    pub task: TaskId,
    /// Its queue.
    pub queue: String,
    /// Its type name.
    pub kind: String,
    /// The key id that sealed the envelope.
    pub key_id: String,
    /// SHA-256 of the sealed envelope, lowercase hex.
    pub ciphertext_sha256: String,
    /// Size of the sealed envelope, bytes.
    pub ciphertext_len: u64,
    /// When it was sealed, Unix ms.
    pub time_ms: i64,
}

/// One task of an [`AuditEvent::LeasedBatch`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LeasedEntry {
    /// The task.
    pub task: TaskId,
    /// Its queue.
    pub queue: String,
    /// The attempt (1 for the first run).
    pub attempt: u32,
}

/// One task of an [`AuditEvent::StartedBatch`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StartedEntry {
    /// The task.
    pub task: TaskId,
    /// The attempt.
    pub attempt: u32,
    /// When its handler was called, Unix ms.
    pub time_ms: i64,
}

/// One task of an [`AuditEvent::SucceededBatch`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SucceededEntry {
    /// The task.
    pub task: TaskId,
    /// The attempt.
    pub attempt: u32,
    /// Size of the sealed result, if the handler set one.
    pub result_len: Option<u64>,
}

impl AuditEvent {
    /// The snake_case name of the event (its `type` tag).
    pub fn name(&self) -> &'static str {
        match self {
            AuditEvent::Enqueued { .. } => "enqueued",
            AuditEvent::EnqueuedBatch { .. } => "enqueued_batch",
            AuditEvent::Leased { .. } => "leased",
            AuditEvent::LeasedBatch { .. } => "leased_batch",
            AuditEvent::Started { .. } => "started",
            AuditEvent::StartedBatch { .. } => "started_batch",
            AuditEvent::Succeeded { .. } => "succeeded",
            AuditEvent::SucceededBatch { .. } => "succeeded_batch",
            AuditEvent::Failed { .. } => "failed",
            AuditEvent::Retried { .. } => "retried",
            AuditEvent::Archived { .. } => "archived",
            AuditEvent::Requeued { .. } => "requeued",
            AuditEvent::Deleted { .. } => "deleted",
            AuditEvent::Rerun { .. } => "rerun",
            AuditEvent::BulkAction { .. } => "bulk_action",
            AuditEvent::PayloadRevealed { .. } => "payload_revealed",
            AuditEvent::KeyRotated { .. } => "key_rotated",
            AuditEvent::KeyRemoved { .. } => "key_removed",
            AuditEvent::Resealed { .. } => "resealed",
            AuditEvent::SubjectKeysRewrapped { .. } => "subject_keys_rewrapped",
            AuditEvent::SubjectErased { .. } => "subject_erased",
            AuditEvent::ErasureFinalised { .. } => "erasure_finalised",
            AuditEvent::PolicyRejected { .. } => "policy_rejected",
            AuditEvent::QueuePaused { .. } => "queue_paused",
            AuditEvent::QueueResumed { .. } => "queue_resumed",
            AuditEvent::QueueLimited { .. } => "queue_limited",
            AuditEvent::QueueRateLimited { .. } => "queue_rate_limited",
            AuditEvent::WriterStarted { .. } => "writer_started",
        }
    }

    /// Whether the event is about task `id`: its one task, or one of a
    /// batch event's tasks.
    pub fn is_about(&self, id: TaskId) -> bool {
        match self {
            AuditEvent::LeasedBatch { tasks, .. } => tasks.iter().any(|e| e.task == id),
            AuditEvent::EnqueuedBatch { tasks, .. } => tasks.iter().any(|e| e.task == id),
            AuditEvent::StartedBatch { tasks, .. } => tasks.iter().any(|e| e.task == id),
            AuditEvent::SucceededBatch { tasks, .. } => tasks.iter().any(|e| e.task == id),
            AuditEvent::BulkAction { tasks, .. } => tasks.contains(&id),
            other => other.task() == Some(id),
        }
    }

    /// Every task the event is about (none, one, or a batch event's tasks).
    pub fn tasks(&self) -> Vec<TaskId> {
        match self {
            AuditEvent::LeasedBatch { tasks, .. } => tasks.iter().map(|e| e.task).collect(),
            AuditEvent::EnqueuedBatch { tasks, .. } => tasks.iter().map(|e| e.task).collect(),
            AuditEvent::StartedBatch { tasks, .. } => tasks.iter().map(|e| e.task).collect(),
            AuditEvent::SucceededBatch { tasks, .. } => tasks.iter().map(|e| e.task).collect(),
            AuditEvent::BulkAction { tasks, .. } => tasks.clone(),
            other => other.task().into_iter().collect(),
        }
    }

    /// What the event says about task `id`: itself for a one-task event
    /// about `id`, the single-task form (`leased`, `succeeded`) of a batch
    /// event's entry for `id`, `None` when the event is not about `id`.
    /// For per-task histories (`sealq audit show`); verification always
    /// covers the record as stored.
    pub fn for_task(&self, id: TaskId) -> Option<AuditEvent> {
        match self {
            AuditEvent::LeasedBatch {
                worker,
                lease_expires_at_ms,
                tasks,
            } => tasks
                .iter()
                .find(|e| e.task == id)
                .map(|e| AuditEvent::Leased {
                    task: e.task,
                    queue: e.queue.clone(),
                    worker: worker.clone(),
                    attempt: e.attempt,
                    lease_expires_at_ms: *lease_expires_at_ms,
                }),
            AuditEvent::EnqueuedBatch { producer, tasks } => tasks
                .iter()
                .find(|e| e.task == id)
                .map(|e| AuditEvent::Enqueued {
                    task: e.task,
                    queue: e.queue.clone(),
                    kind: e.kind.clone(),
                    producer: producer.clone(),
                    key_id: e.key_id.clone(),
                    ciphertext_sha256: e.ciphertext_sha256.clone(),
                    ciphertext_len: e.ciphertext_len,
                }),
            AuditEvent::StartedBatch { worker, tasks } => {
                tasks
                    .iter()
                    .find(|e| e.task == id)
                    .map(|e| AuditEvent::Started {
                        task: e.task,
                        worker: worker.clone(),
                        attempt: e.attempt,
                    })
            }
            AuditEvent::SucceededBatch { worker, tasks } => tasks
                .iter()
                .find(|e| e.task == id)
                .map(|e| AuditEvent::Succeeded {
                    task: e.task,
                    worker: worker.clone(),
                    attempt: e.attempt,
                    result_len: e.result_len,
                }),
            AuditEvent::BulkAction {
                action,
                tasks,
                operator,
                ..
            } => tasks.contains(&id).then(|| {
                if action == "rerun" {
                    AuditEvent::Rerun {
                        task: id,
                        operator: operator.clone(),
                    }
                } else {
                    AuditEvent::Deleted {
                        task: id,
                        operator: operator.clone(),
                    }
                }
            }),
            other => (other.task() == Some(id)).then(|| other.clone()),
        }
    }

    /// When task `id`'s part of the event happened, when the event records
    /// it apart from the record's own time (an `enqueued_batch` or
    /// `started_batch` entry).
    pub fn time_for_task(&self, id: TaskId) -> Option<i64> {
        match self {
            AuditEvent::EnqueuedBatch { tasks, .. } => {
                tasks.iter().find(|e| e.task == id).map(|e| e.time_ms)
            }
            AuditEvent::StartedBatch { tasks, .. } => {
                tasks.iter().find(|e| e.task == id).map(|e| e.time_ms)
            }
            _ => None,
        }
    }

    /// The task the event is about, if it is about one task (`None` for
    /// batch events: see [`AuditEvent::tasks`]).
    pub fn task(&self) -> Option<TaskId> {
        match self {
            AuditEvent::Enqueued { task, .. }
            | AuditEvent::Leased { task, .. }
            | AuditEvent::Started { task, .. }
            | AuditEvent::Succeeded { task, .. }
            | AuditEvent::Failed { task, .. }
            | AuditEvent::Retried { task, .. }
            | AuditEvent::Archived { task, .. }
            | AuditEvent::Requeued { task, .. }
            | AuditEvent::Deleted { task, .. }
            | AuditEvent::Rerun { task, .. }
            | AuditEvent::PayloadRevealed { task, .. }
            | AuditEvent::Resealed { task, .. } => Some(*task),
            AuditEvent::EnqueuedBatch { .. }
            | AuditEvent::LeasedBatch { .. }
            | AuditEvent::StartedBatch { .. }
            | AuditEvent::SucceededBatch { .. }
            | AuditEvent::BulkAction { .. }
            | AuditEvent::KeyRotated { .. }
            | AuditEvent::KeyRemoved { .. }
            | AuditEvent::SubjectKeysRewrapped { .. }
            | AuditEvent::SubjectErased { .. }
            | AuditEvent::ErasureFinalised { .. }
            | AuditEvent::PolicyRejected { .. }
            | AuditEvent::QueuePaused { .. }
            | AuditEvent::QueueResumed { .. }
            | AuditEvent::QueueLimited { .. }
            | AuditEvent::QueueRateLimited { .. }
            | AuditEvent::WriterStarted { .. } => None,
        }
    }
}
