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
