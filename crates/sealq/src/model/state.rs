//! Where a task is in its life ([`TaskState`]) and why it was archived
//! ([`ArchiveReason`]).

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

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
    type Err = crate::error::Error;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        TaskState::ALL
            .into_iter()
            .find(|st| st.as_str() == s)
            .ok_or_else(|| crate::error::Error::InvalidArgument {
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
    /// No worker that leased it had a handler for its type, up to its
    /// sealed expiry (until then it is retried: a worker with one may come).
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
