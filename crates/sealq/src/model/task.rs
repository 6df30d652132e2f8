//! The typed [`Task`] trait, the metadata every task carries in the clear,
//! and the payload wire form.

use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::model::backoff::Backoff;
use crate::model::id::SubjectTag;
use crate::model::options::EnqueueOptions;

/// Metadata a task carries in the clear beside its sealed envelope. Fixed
/// at enqueue. Every field is bound into a version-2 envelope's associated
/// data (identity and [`TaskPolicy`]), so editing any of them in the broker
/// makes the envelope fail to open. Version-1 envelopes (sealed before
/// 0.x, still opened) bind only producer, created-at, not-after and subject
/// tag; see `docs/envelope.md`.
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
    /// The earliest start the producer asked for (`run_at` / `delay`), Unix
    /// ms; `None` for "as soon as possible". Absent from metas stored before
    /// it existed (decoded as `None`).
    #[serde(default)]
    pub not_before_ms: Option<i64>,
}

/// The producer's policy for a task: what a version-2 envelope binds besides
/// the task's identity, so a broker cannot edit it without the envelope
/// failing to open.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TaskPolicy {
    /// Earliest start, Unix ms ([`TaskMeta::not_before_ms`]).
    pub not_before_ms: Option<i64>,
    /// Deadline, Unix ms.
    pub deadline_ms: Option<i64>,
    /// Per-attempt timeout, ms.
    pub timeout_ms: Option<u64>,
    /// Retries after the first attempt.
    pub max_retries: u32,
    /// Delay policy between attempts.
    pub backoff: Backoff,
    /// Retention of a completed task, ms.
    pub retention_ms: u64,
}

impl TaskMeta {
    /// The policy part of this metadata.
    pub fn policy(&self) -> TaskPolicy {
        TaskPolicy {
            not_before_ms: self.not_before_ms,
            deadline_ms: self.deadline_ms,
            timeout_ms: self.timeout_ms,
            max_retries: self.max_retries,
            backoff: self.backoff,
            retention_ms: self.retention_ms,
        }
    }
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
pub fn encode_payload<T: Serialize + ?Sized>(value: &T) -> Result<Vec<u8>> {
    encode("payload", value)
}

/// Encode a handler's result value, in the same wire form as a payload.
pub(crate) fn encode_result<T: Serialize + ?Sized>(value: &T) -> Result<Vec<u8>> {
    encode("result", value)
}

fn encode<T: Serialize + ?Sized>(what: &'static str, value: &T) -> Result<Vec<u8>> {
    rmp_serde::to_vec_named(value).map_err(|e| Error::Codec {
        what,
        reason: e.to_string(),
    })
}

/// Decode a payload from sealq's wire form.
pub fn decode_payload<T: DeserializeOwned>(bytes: &[u8]) -> Result<T> {
    rmp_serde::from_slice(bytes).map_err(|e| Error::Codec {
        what: "payload",
        reason: e.to_string(),
    })
}

/// Convert a `Duration` to whole milliseconds, saturating.
pub(crate) fn duration_ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}
