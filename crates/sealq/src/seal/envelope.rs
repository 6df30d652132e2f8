//! The sealed envelope: XChaCha20-Poly1305 over a payload, result or error,
//! bound by associated data to the task's identity. See `docs/envelope.md`.
//!
//! An envelope is
//!
//! ```text
//! version u8 (2; 1 still opens) | alg u8 (=1) | key_id_len u8 | key_id | nonce [24] | ciphertext | tag [16]
//! ```
//!
//! The header (version, algorithm, key id, nonce) is in the clear; it is
//! authenticated because version, algorithm and key id are part of the
//! associated data (see [`associated_data`]) and the nonce is an input of the
//! AEAD. Sealing and opening live on [`crate::Keyring`]; this module holds the
//! byte layout.

use crate::error::IntegrityError;
use crate::model::backoff::Backoff;
use crate::model::id::{SubjectTag, TaskId};
use crate::model::record::TaskRecord;
use crate::model::task::{TaskMeta, TaskPolicy};

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
    /// The producer's policy (bound by version-2 envelopes only).
    pub policy: TaskPolicy,
}

impl<'a> Aad<'a> {
    /// The associated data of a task with this id, queue, type and metadata.
    pub fn new(
        purpose: Purpose,
        task_id: TaskId,
        queue: &'a str,
        kind: &'a str,
        meta: &'a TaskMeta,
    ) -> Self {
        Aad {
            purpose,
            task_id,
            queue,
            kind,
            producer: &meta.producer,
            created_at_ms: meta.created_at_ms,
            not_after_ms: meta.not_after_ms,
            subject_tag: meta.subject_tag,
            policy: meta.policy(),
        }
    }

    /// The associated data of a stored task, for `purpose`.
    pub fn for_record(record: &'a TaskRecord, purpose: Purpose) -> Self {
        Self::new(
            purpose,
            record.id,
            &record.queue,
            &record.kind,
            &record.meta,
        )
    }
}

// ---------------------------------------------------------------------------
// Wire format
// ---------------------------------------------------------------------------

/// Envelope format version written by this code (first byte of every envelope).
/// Version 2 binds the task's policy ([`TaskPolicy`]) as well as its identity.
pub const VERSION: u8 = 2;

/// The first envelope version: identity only. Still opened (tasks stored
/// before version 2), never written.
pub const VERSION_V1: u8 = 1;

/// A payload envelope that also carries the producer's W3C trace context
/// inside its plaintext (`seal::trace_frame`); otherwise version 2. Written
/// only for a task enqueued with a trace context.
pub const VERSION_V3: u8 = 3;

/// Domain-separation string that starts the associated data of a version-2
/// envelope.
pub const AAD_DOMAIN: &str = "sealq-envelope-v2";

/// Domain-separation string that starts the associated data of a version-3
/// envelope.
pub const AAD_DOMAIN_V3: &str = "sealq-envelope-v3";

/// Domain-separation string that starts the associated data of a version-1
/// envelope.
pub const AAD_DOMAIN_V1: &str = "sealq-envelope-v1";

/// Length of the random nonce (XChaCha20-Poly1305: 192 bits).
pub const NONCE_LEN: usize = 24;

/// Length of the authentication tag at the end of an envelope.
pub const TAG_LEN: usize = 16;

/// Longest key id allowed, in bytes.
pub const MAX_KEY_ID_LEN: usize = 64;

/// Smallest possible envelope: header with a 1-byte key id, empty plaintext, tag.
pub const MIN_ENVELOPE_LEN: usize = 3 + 1 + NONCE_LEN + TAG_LEN;

/// The AEAD algorithm an envelope was sealed with (second byte of an envelope).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
#[non_exhaustive]
pub enum Algorithm {
    /// XChaCha20-Poly1305 (192-bit nonce, 128-bit tag). Byte `1`.
    XChaCha20Poly1305 = 1,
    // 2 is reserved for AES-256-GCM-SIV.
}

impl Algorithm {
    /// The algorithm's byte in the envelope header.
    pub const fn as_u8(self) -> u8 {
        self as u8
    }

    /// The algorithm named by a header byte, if supported.
    pub const fn from_u8(b: u8) -> Option<Self> {
        match b {
            1 => Some(Self::XChaCha20Poly1305),
            _ => None,
        }
    }
}

/// Whether `id` is a valid key id: 1..=64 bytes of `A-Z a-z 0-9 . _ -`.
///
/// The restricted alphabet keeps ids printable in logs and error messages
/// and usable as TOML keys.
pub fn is_valid_key_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= MAX_KEY_ID_LEN
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// The clear-text (but authenticated) header of an envelope, borrowed from it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header<'a> {
    /// Format version ([`VERSION`] or [`VERSION_V1`] for a parsed header).
    pub version: u8,
    /// AEAD algorithm.
    pub alg: Algorithm,
    /// Id of the key the envelope was sealed with.
    pub key_id: &'a str,
    /// The envelope's nonce.
    pub nonce: [u8; NONCE_LEN],
}

impl Header<'_> {
    /// Length of the encoded header in bytes: `3 + key_id.len() + 24`.
    pub fn encoded_len(&self) -> usize {
        header_len(self.key_id)
    }
}

/// Length of an encoded header for `key_id`.
pub(crate) fn header_len(key_id: &str) -> usize {
    3 + key_id.len() + NONCE_LEN
}

/// Append the header bytes for (`version`, `alg`, `key_id`, `nonce`) to `out`.
///
/// `key_id` must satisfy [`is_valid_key_id`] (callers hold validated ids).
pub(crate) fn write_header(
    out: &mut Vec<u8>,
    version: u8,
    alg: Algorithm,
    key_id: &str,
    nonce: &[u8; NONCE_LEN],
) {
    debug_assert!(is_valid_key_id(key_id));
    out.push(version);
    out.push(alg.as_u8());
    // Invariant: validated key ids are at most 64 bytes, so the length fits a u8.
    out.push(key_id.len() as u8);
    out.extend_from_slice(key_id.as_bytes());
    out.extend_from_slice(nonce);
}

/// Parse the header of an envelope without opening it.
///
/// Checks, in order: at least 3 bytes ([`IntegrityError::Truncated`]), the
/// version ([`IntegrityError::UnsupportedVersion`]), the algorithm
/// ([`IntegrityError::UnsupportedAlgorithm`]), that the key id and nonce fit
/// and that a full tag follows ([`IntegrityError::Truncated`]). A key id that
/// is empty, longer than 64 bytes or outside `A-Z a-z 0-9 . _ -` can only come
/// from edited bytes and gives [`IntegrityError::Tampered`].
///
/// Never panics, whatever the input.
pub fn parse_header(envelope: &[u8]) -> Result<Header<'_>, IntegrityError> {
    let truncated = IntegrityError::Truncated {
        len: envelope.len(),
    };
    let [version, alg, key_id_len, rest @ ..] = envelope else {
        return Err(truncated);
    };
    if *version != VERSION && *version != VERSION_V1 && *version != VERSION_V3 {
        return Err(IntegrityError::UnsupportedVersion(*version));
    }
    let alg = Algorithm::from_u8(*alg).ok_or(IntegrityError::UnsupportedAlgorithm(*alg))?;
    let key_id_len = usize::from(*key_id_len);
    if key_id_len == 0 || key_id_len > MAX_KEY_ID_LEN {
        return Err(IntegrityError::Tampered);
    }
    let (key_id, rest) = rest.split_at_checked(key_id_len).ok_or(truncated.clone())?;
    let (nonce, rest) = rest.split_at_checked(NONCE_LEN).ok_or(truncated.clone())?;
    if rest.len() < TAG_LEN {
        return Err(truncated);
    }
    let key_id = std::str::from_utf8(key_id).map_err(|_| IntegrityError::Tampered)?;
    if !is_valid_key_id(key_id) {
        return Err(IntegrityError::Tampered);
    }
    let nonce: [u8; NONCE_LEN] = nonce.try_into().map_err(|_| IntegrityError::Tampered)?;
    Ok(Header {
        version: *version,
        alg,
        key_id,
        nonce,
    })
}

/// The exact associated-data bytes an envelope sealed with `key_id` (and the
/// current [`VERSION`] and [`Algorithm::XChaCha20Poly1305`]) is bound to.
///
/// Layout (all integers big-endian, see `docs/envelope.md`):
///
/// ```text
/// u8  len | "sealq-envelope-v2"
/// u8  version            (2)
/// u8  alg                (1 = XChaCha20-Poly1305)
/// u8  len | key id
/// u8  purpose            (1 payload, 2 result, 3 error)
/// [16] task id           (UUID bytes)
/// u32 len | queue        (UTF-8)
/// u32 len | kind         (UTF-8)
/// u32 len | producer     (UTF-8)
/// i64 created_at_ms
/// u8  0                  | u8 1, i64 not_after_ms
/// u8  0                  | u8 1, [32] subject tag
/// u8  0                  | u8 1, i64 not_before_ms
/// u8  0                  | u8 1, i64 deadline_ms
/// u8  0                  | u8 1, u64 timeout_ms
/// u32 max_retries
/// u64 retention_ms
/// u8  1, u64 base_ms, u64 max_ms, u64 jitter (IEEE 754 bits)  exponential backoff
///   | u8 2, u64 delay_ms                                       fixed backoff
/// ```
///
/// A version-1 envelope's associated data ([`associated_data_v1`]) is the
/// same up to the subject tag, with domain `sealq-envelope-v1` and version 1.
///
/// Exposed for documentation and tests; [`crate::Keyring`] builds it itself.
///
/// # Panics
///
/// If `key_id` is longer than 255 bytes or `queue`, `kind` or `producer` is
/// longer than 4 GiB: such fields cannot be length-prefixed. Valid key ids are
/// at most 64 bytes, and sealing refuses over-long strings with an error
/// instead of calling this.
pub fn associated_data(aad: &Aad<'_>, key_id: &str) -> Vec<u8> {
    // Invariant (documented under Panics): callers pass lengths that fit.
    associated_data_for(aad, VERSION, Algorithm::XChaCha20Poly1305, key_id).expect(
        "queue, kind and producer are shorter than 4 GiB and the key id is at most 255 bytes",
    )
}

/// [`associated_data`] of a version-1 envelope (identity only, no policy).
///
/// # Panics
///
/// As [`associated_data`].
pub fn associated_data_v1(aad: &Aad<'_>, key_id: &str) -> Vec<u8> {
    // Invariant (documented under Panics): callers pass lengths that fit.
    associated_data_for(aad, VERSION_V1, Algorithm::XChaCha20Poly1305, key_id).expect(
        "queue, kind and producer are shorter than 4 GiB and the key id is at most 255 bytes",
    )
}

/// Length of the encoded policy part of version-2 associated data.
fn policy_len(p: &TaskPolicy) -> usize {
    let opt = |present: bool| if present { 9 } else { 1 };
    opt(p.not_before_ms.is_some())
        + opt(p.deadline_ms.is_some())
        + opt(p.timeout_ms.is_some())
        + 4
        + 8
        + match p.backoff {
            Backoff::Exponential { .. } => 1 + 24,
            Backoff::Fixed { .. } => 1 + 8,
        }
}

/// Append the policy part of version-2 associated data. The backoff's jitter
/// is encoded by its IEEE 754 bits: the exact value the worker will read back
/// from the stored metadata, so no two policies share an encoding.
fn write_policy(out: &mut Vec<u8>, p: &TaskPolicy) {
    let opt = |out: &mut Vec<u8>, v: Option<[u8; 8]>| match v {
        None => out.push(0),
        Some(b) => {
            out.push(1);
            out.extend_from_slice(&b);
        }
    };
    opt(out, p.not_before_ms.map(i64::to_be_bytes));
    opt(out, p.deadline_ms.map(i64::to_be_bytes));
    opt(out, p.timeout_ms.map(u64::to_be_bytes));
    out.extend_from_slice(&p.max_retries.to_be_bytes());
    out.extend_from_slice(&p.retention_ms.to_be_bytes());
    match p.backoff {
        Backoff::Exponential {
            base_ms,
            max_ms,
            jitter,
        } => {
            out.push(1);
            out.extend_from_slice(&base_ms.to_be_bytes());
            out.extend_from_slice(&max_ms.to_be_bytes());
            out.extend_from_slice(&jitter.to_bits().to_be_bytes());
        }
        Backoff::Fixed { delay_ms } => {
            out.push(2);
            out.extend_from_slice(&delay_ms.to_be_bytes());
        }
    }
}

/// The associated data of envelope `version` for any algorithm; `None` if
/// the version is unknown or a field is too long to be length-prefixed (key
/// id over 255 bytes, a string over `u32::MAX` bytes).
pub(crate) fn associated_data_for(
    aad: &Aad<'_>,
    version: u8,
    alg: Algorithm,
    key_id: &str,
) -> Option<Vec<u8>> {
    let (domain, with_policy) = match version {
        VERSION => (AAD_DOMAIN, true),
        VERSION_V1 => (AAD_DOMAIN_V1, false),
        VERSION_V3 => (AAD_DOMAIN_V3, true),
        _ => return None,
    };
    let key_id_len = u8::try_from(key_id.len()).ok()?;
    let queue_len = u32::try_from(aad.queue.len()).ok()?;
    let kind_len = u32::try_from(aad.kind.len()).ok()?;
    let producer_len = u32::try_from(aad.producer.len()).ok()?;
    let cap = 1
        + domain.len()
        + 2
        + 1
        + key_id.len()
        + 1
        + 16
        + 4
        + aad.queue.len()
        + 4
        + aad.kind.len()
        + 4
        + aad.producer.len()
        + 8
        + 1
        + if aad.not_after_ms.is_some() { 8 } else { 0 }
        + 1
        + if aad.subject_tag.is_some() { 32 } else { 0 }
        + if with_policy {
            policy_len(&aad.policy)
        } else {
            0
        };
    let mut out = Vec::with_capacity(cap);
    // Invariant: both domain strings are 17-byte constants.
    out.push(domain.len() as u8);
    out.extend_from_slice(domain.as_bytes());
    out.push(version);
    out.push(alg.as_u8());
    out.push(key_id_len);
    out.extend_from_slice(key_id.as_bytes());
    out.push(aad.purpose as u8);
    out.extend_from_slice(aad.task_id.as_bytes());
    out.extend_from_slice(&queue_len.to_be_bytes());
    out.extend_from_slice(aad.queue.as_bytes());
    out.extend_from_slice(&kind_len.to_be_bytes());
    out.extend_from_slice(aad.kind.as_bytes());
    out.extend_from_slice(&producer_len.to_be_bytes());
    out.extend_from_slice(aad.producer.as_bytes());
    out.extend_from_slice(&aad.created_at_ms.to_be_bytes());
    match aad.not_after_ms {
        None => out.push(0),
        Some(t) => {
            out.push(1);
            out.extend_from_slice(&t.to_be_bytes());
        }
    }
    match aad.subject_tag {
        None => out.push(0),
        Some(tag) => {
            out.push(1);
            out.extend_from_slice(&tag.0);
        }
    }
    if with_policy {
        write_policy(&mut out, &aad.policy);
    }
    debug_assert_eq!(out.len(), cap);
    Some(out)
}

impl Purpose {
    /// The purpose's byte in the associated data.
    pub const fn as_u8(self) -> u8 {
        self as u8
    }

    /// The purpose named by a byte, if any.
    pub const fn from_u8(b: u8) -> Option<Self> {
        match b {
            1 => Some(Self::Payload),
            2 => Some(Self::Result),
            3 => Some(Self::Error),
            _ => None,
        }
    }
}
