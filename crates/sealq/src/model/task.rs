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

impl TaskMeta {
    /// Room for a typical stored form (75-80 bytes with a short producer
    /// name), so that encoding does not reallocate.
    const STORED_CAPACITY: usize = 96;

    /// The bytes a broker stores beside the envelope: positional
    /// MessagePack (an array of the fields in declaration order), 75-80
    /// bytes without a subject tag where the named form is about 220. Every stored byte is
    /// written to the write-ahead log, so this is a tenth of a task's rows
    /// (issues 22 and 23). The price: stored rows depend on the order of
    /// the fields, so a field may only be added at the end, with
    /// `#[serde(default)]`; `tests::stored_meta_is_positional_in_field_order`
    /// pins the order. [`TaskMeta::from_stored_bytes`] reads this and the
    /// named form rows written before hold.
    pub fn to_stored_bytes(&self) -> Result<Vec<u8>> {
        let mut out = Vec::with_capacity(Self::STORED_CAPACITY);
        rmp_serde::encode::write(&mut out, self).map_err(|e| Error::Codec {
            what: "task metadata",
            reason: e.to_string(),
        })?;
        Ok(out)
    }

    /// Read stored metadata, positional ([`TaskMeta::to_stored_bytes`]) or
    /// named (`rmp_serde::to_vec_named`, what brokers wrote before).
    pub fn from_stored_bytes(bytes: &[u8]) -> Result<TaskMeta> {
        rmp_serde::from_slice(bytes).map_err(|e| Error::Codec {
            what: "task metadata",
            reason: e.to_string(),
        })
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

#[cfg(test)]
mod tests {
    use super::*;

    fn full() -> TaskMeta {
        TaskMeta {
            producer: "sealq-bench".into(),
            created_at_ms: 1_796_654_632_022,
            not_after_ms: Some(1_796_741_032_022),
            deadline_ms: Some(1_796_658_232_022),
            timeout_ms: Some(1_800_000),
            max_retries: 25,
            backoff: Backoff::default(),
            retention_ms: 86_400_000,
            subject_tag: Some(SubjectTag([7; 32])),
            not_before_ms: Some(1_796_654_700_000),
        }
    }

    /// Issues 22 and 23: stored metadata is an array of the fields in
    /// declaration order (rows already stored depend on it), and reads
    /// back whole, as do rows in the named form written before.
    #[test]
    fn stored_meta_is_positional_in_field_order() {
        let meta = full();
        let bytes = meta.to_stored_bytes().unwrap();
        let value = rmpv::decode::read_value(&mut &bytes[..]).unwrap();
        let fields = value.as_array().expect("an array, not a map");
        assert_eq!(fields.len(), 10);
        assert_eq!(fields[0].as_str(), Some("sealq-bench"));
        assert_eq!(fields[1].as_i64(), Some(1_796_654_632_022));
        assert_eq!(fields[2].as_i64(), Some(1_796_741_032_022));
        assert_eq!(fields[3].as_i64(), Some(1_796_658_232_022));
        assert_eq!(fields[4].as_u64(), Some(1_800_000));
        assert_eq!(fields[5].as_u64(), Some(25));
        assert_eq!(fields[7].as_u64(), Some(86_400_000));
        assert_eq!(fields[9].as_i64(), Some(1_796_654_700_000));
        assert_eq!(TaskMeta::from_stored_bytes(&bytes).unwrap(), meta);
        let named = rmp_serde::to_vec_named(&meta).unwrap();
        assert!(
            named.len() > 2 * bytes.len(),
            "{} against {}",
            bytes.len(),
            named.len()
        );
        assert_eq!(TaskMeta::from_stored_bytes(&named).unwrap(), meta);
        let bare = TaskMeta {
            producer: String::new(),
            not_after_ms: None,
            deadline_ms: None,
            timeout_ms: None,
            subject_tag: None,
            not_before_ms: None,
            backoff: Backoff::Fixed { delay_ms: 0 },
            ..meta
        };
        let back = TaskMeta::from_stored_bytes(&bare.to_stored_bytes().unwrap()).unwrap();
        assert_eq!(back, bare);
        assert!(TaskMeta::from_stored_bytes(b"\x93\x01").is_err());
    }
}
