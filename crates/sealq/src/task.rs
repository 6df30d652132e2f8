//! The task model: ids, states, archive reasons, the typed [`Task`] trait and
//! the metadata every task carries in the clear.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::backoff::Backoff;
use crate::options::EnqueueOptions;

/// A task's id: a UUID v7 (time-sortable). It is the idempotency key handlers
/// can rely on: delivery is at-least-once, and every delivery of one task
/// carries the same id.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct TaskId(pub uuid::Uuid);

impl TaskId {
    /// A fresh, time-ordered id.
    pub fn new() -> Self {
        TaskId(uuid::Uuid::now_v7())
    }

    /// The 16 raw bytes (used in associated data).
    pub fn as_bytes(&self) -> &[u8; 16] {
        self.0.as_bytes()
    }
}

impl Default for TaskId {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Display for TaskId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

impl fmt::Debug for TaskId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TaskId({})", self.0)
    }
}

impl FromStr for TaskId {
    type Err = crate::Error;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        uuid::Uuid::parse_str(s)
            .map(TaskId)
            .map_err(|e| crate::Error::InvalidArgument {
                what: "task id",
                reason: format!("`{s}` is not a UUID: {e}"),
            })
    }
}

/// Where a task is in its life.
///
/// - `Scheduled`: enqueued with a future run time; the broker's forwarder
///   (called by workers' maintenance loop) moves it to `Pending` when due.
/// - `Pending`: ready; a worker's dequeue moves it to `Active`.
/// - `Active`: leased by one worker until the lease expires. The worker's ack
///   moves it out; if the worker dies, lease recovery moves it to `Retry`
///   (or `Archived` when retries are exhausted).
/// - `Retry`: failed and waiting for its backoff; forwarded to `Pending` when due.
/// - `Completed`: done; kept with its sealed result for its retention, then purged.
/// - `Archived`: dead letter, with a reason; kept until an operator re-runs or deletes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TaskState {
    /// Waiting for its run time.
    Scheduled,
    /// Ready to run.
    Pending,
    /// Leased by a worker.
    Active,
    /// Waiting to be retried.
    Retry,
    /// Finished successfully.
    Completed,
    /// Dead letter.
    Archived,
}

impl TaskState {
    /// Every state, in lifecycle order.
    pub const ALL: [TaskState; 6] = [
        TaskState::Scheduled,
        TaskState::Pending,
        TaskState::Active,
        TaskState::Retry,
        TaskState::Completed,
        TaskState::Archived,
    ];

    /// The lowercase name used in storage, the CLI and JSON.
    pub fn as_str(&self) -> &'static str {
        match self {
            TaskState::Scheduled => "scheduled",
            TaskState::Pending => "pending",
            TaskState::Active => "active",
            TaskState::Retry => "retry",
            TaskState::Completed => "completed",
            TaskState::Archived => "archived",
        }
    }
}

impl fmt::Display for TaskState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for TaskState {
    type Err = crate::Error;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        TaskState::ALL
            .into_iter()
            .find(|st| st.as_str() == s)
            .ok_or_else(|| crate::Error::InvalidArgument {
                what: "task state",
                reason: format!(
                    "`{s}` is not one of scheduled, pending, active, retry, completed, archived"
                ),
            })
    }
}

/// Why a task was archived (dead-lettered).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum ArchiveReason {
    /// Retries exhausted.
    Exhausted,
    /// The envelope failed to open (tampered, wrong key, moved, corrupt).
    Integrity,
    /// Past its not-after time.
    Expired,
    /// Its id had already completed.
    Replay,
    /// Its subject was erased.
    Erased,
    /// No handler is registered for its type.
    UnknownType,
    /// The payload opened but does not decode as the handler's type.
    Decode,
    /// The handler asked not to retry (`TaskError::skip_retry`).
    SkipRetry,
    /// The handler cancelled the task.
    Cancelled,
    /// Past its deadline.
    DeadlineExceeded,
    /// A reference in the payload does not exist.
    ReferenceMissing,
    /// Any other reason (kept verbatim).
    Other(String),
}

impl ArchiveReason {
    /// The snake_case name stored by brokers.
    pub fn as_str(&self) -> &str {
        match self {
            ArchiveReason::Exhausted => "exhausted",
            ArchiveReason::Integrity => "integrity",
            ArchiveReason::Expired => "expired",
            ArchiveReason::Replay => "replay",
            ArchiveReason::Erased => "erased",
            ArchiveReason::UnknownType => "unknown_type",
            ArchiveReason::Decode => "decode",
            ArchiveReason::SkipRetry => "skip_retry",
            ArchiveReason::Cancelled => "cancelled",
            ArchiveReason::DeadlineExceeded => "deadline_exceeded",
            ArchiveReason::ReferenceMissing => "reference_missing",
            ArchiveReason::Other(s) => s,
        }
    }

    /// Parse a stored name (unknown names become `Other`).
    pub fn parse(s: &str) -> Self {
        match s {
            "exhausted" => ArchiveReason::Exhausted,
            "integrity" => ArchiveReason::Integrity,
            "expired" => ArchiveReason::Expired,
            "replay" => ArchiveReason::Replay,
            "erased" => ArchiveReason::Erased,
            "unknown_type" => ArchiveReason::UnknownType,
            "decode" => ArchiveReason::Decode,
            "skip_retry" => ArchiveReason::SkipRetry,
            "cancelled" => ArchiveReason::Cancelled,
            "deadline_exceeded" => ArchiveReason::DeadlineExceeded,
            "reference_missing" => ArchiveReason::ReferenceMissing,
            other => ArchiveReason::Other(other.to_owned()),
        }
    }
}

impl fmt::Display for ArchiveReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A keyed hash (HMAC-SHA-256) of a subject id. Lets the broker find a
/// subject's tasks without learning who the subject is.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct SubjectTag(pub [u8; 32]);

impl SubjectTag {
    /// Lowercase hex, for storage and display.
    pub fn to_hex(&self) -> String {
        crate::hexfmt::encode(self.0)
    }

    /// Parse from 64 hex characters.
    pub fn from_hex(s: &str) -> Option<Self> {
        let v = hex::decode(s).ok()?;
        Some(SubjectTag(v.try_into().ok()?))
    }
}

impl fmt::Debug for SubjectTag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SubjectTag({}…)", &self.to_hex()[..12])
    }
}

/// Metadata a task carries in the clear beside its sealed envelope. Fixed
/// at enqueue. The identity fields (producer, created-at, not-after, subject
/// tag) are bound into the envelope's associated data, so editing them in the
/// broker makes the envelope fail to open.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskMeta {
    /// Who enqueued it (producer id).
    pub producer: String,
    /// Creation time, Unix ms.
    pub created_at_ms: i64,
    /// After this time the task must not run (it is archived as `expired`).
    pub not_after_ms: Option<i64>,
    /// The handler must finish by this time, Unix ms.
    pub deadline_ms: Option<i64>,
    /// Per-attempt handler timeout, ms.
    pub timeout_ms: Option<u64>,
    /// Retries after the first attempt.
    pub max_retries: u32,
    /// Delay policy between attempts.
    pub backoff: Backoff,
    /// How long a completed task and its result are kept, ms.
    pub retention_ms: u64,
    /// Keyed hash of the data subject, for erasure.
    pub subject_tag: Option<SubjectTag>,
}

/// A typed task: a payload type with a stable type name and default options.
///
/// ```
/// use serde::{Deserialize, Serialize};
///
/// #[derive(Serialize, Deserialize)]
/// struct SendWelcome { user_id: u64 }
///
/// impl sealq::Task for SendWelcome {
///     const KIND: &'static str = "email.welcome";
/// }
/// ```
pub trait Task: Serialize + DeserializeOwned + Send + Sync + 'static {
    /// The task type name. Bound into the envelope: a task cannot be
    /// re-labelled as another type without failing to open.
    const KIND: &'static str;

    /// Default options for this type (queue, retries ...). Per-call options
    /// given to `Client::enqueue` override these field by field.
    fn options() -> EnqueueOptions {
        EnqueueOptions::default()
    }
}

/// Encode a payload value in sealq's wire form (MessagePack, named fields).
pub fn encode_payload<T: Serialize + ?Sized>(value: &T) -> crate::Result<Vec<u8>> {
    rmp_serde::to_vec_named(value).map_err(|e| crate::Error::Codec {
        what: "payload",
        reason: e.to_string(),
    })
}

/// Decode a payload from sealq's wire form.
pub fn decode_payload<T: DeserializeOwned>(bytes: &[u8]) -> crate::Result<T> {
    rmp_serde::from_slice(bytes).map_err(|e| crate::Error::Codec {
        what: "payload",
        reason: e.to_string(),
    })
}

/// Convert a `Duration` to whole milliseconds, saturating.
pub(crate) fn duration_ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}
