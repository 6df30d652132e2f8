//! How sealq values are stored in Redis and read back from function replies.
//!
//! Ids are 32 lowercase hex digits (the UUID without dashes, so lexical order
//! is id order), states and archive reasons their snake_case names, times
//! decimal Unix ms, [`TaskMeta`] named MessagePack, lease tokens 16 hex digits.

use redis::Value;
use sealq::broker::TaskRecord;
use sealq::{ArchiveReason, SubjectTag, TaskId, TaskMeta, TaskState};

/// A task id as stored.
pub(crate) fn id_str(id: &TaskId) -> String {
    id.0.simple().to_string()
}

/// Parse a stored id.
pub(crate) fn parse_id(s: &[u8]) -> Option<TaskId> {
    uuid::Uuid::try_parse_ascii(s).ok().map(TaskId)
}

/// A lease token as stored.
pub(crate) fn token_str(token: u64) -> String {
    format!("{token:016x}")
}

/// The elements of an array reply.
pub(crate) fn array(v: Value) -> Result<Vec<Value>, String> {
    match v {
        Value::Array(a) | Value::Set(a) => Ok(a),
        Value::Nil => Ok(Vec::new()),
        other => Err(format!("expected an array, got {}", kind(&other))),
    }
}

/// The bytes of a string reply (`None` for nil/false).
pub(crate) fn opt_bytes(v: Value) -> Result<Option<Vec<u8>>, String> {
    match v {
        Value::BulkString(b) => Ok(Some(b)),
        Value::SimpleString(s) => Ok(Some(s.into_bytes())),
        Value::Int(i) => Ok(Some(i.to_string().into_bytes())),
        Value::Nil => Ok(None),
        other => Err(format!("expected a string, got {}", kind(&other))),
    }
}

/// The bytes of a string reply.
pub(crate) fn bytes(v: Value) -> Result<Vec<u8>, String> {
    opt_bytes(v)?.ok_or_else(|| "expected a string, got nil".to_owned())
}

/// An integer reply (or a decimal string).
pub(crate) fn int(v: &Value) -> Result<i64, String> {
    match v {
        Value::Int(i) => Ok(*i),
        Value::BulkString(b) => parse_i64(b).ok_or_else(|| "expected an integer".to_owned()),
        Value::SimpleString(s) => s.parse().map_err(|_| "expected an integer".to_owned()),
        other => Err(format!("expected an integer, got {}", kind(other))),
    }
}

fn parse_i64(b: &[u8]) -> Option<i64> {
    std::str::from_utf8(b).ok()?.parse().ok()
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Nil => "nil",
        Value::Int(_) => "integer",
        Value::BulkString(_) => "string",
        Value::Array(_) => "array",
        Value::SimpleString(_) => "status",
        _ => "another type",
    }
}

/// Layout version of a task's stored bytes (`PREFIX:{queue}:b:ID`).
const STORED_V1: u8 = 1;

/// A task's stored bytes: what the broker keeps of it apart from its state.
///
/// ```text
/// u8      layout version (1)
/// u16 BE  kind length, then the kind (UTF-8)
/// u32 BE  metadata length, then the metadata (named MessagePack)
/// ...     the sealed envelope, exactly as sealed
/// ```
///
/// The envelope is never re-encoded: the bytes the worker opens are the
/// bytes the producer sealed.
pub(crate) struct Stored {
    /// Task type name.
    pub(crate) kind: String,
    /// Clear metadata.
    pub(crate) meta: TaskMeta,
    /// The sealed envelope.
    pub(crate) envelope: Vec<u8>,
}

/// Encode a task's stored bytes (see [`Stored`]).
pub(crate) fn encode_stored(
    kind: &str,
    meta: &TaskMeta,
    envelope: &[u8],
) -> Result<Vec<u8>, String> {
    let meta =
        rmp_serde::to_vec_named(meta).map_err(|e| format!("cannot encode task metadata: {e}"))?;
    let klen = u16::try_from(kind.len()).map_err(|_| "task type name longer than 65535 bytes")?;
    let mlen = u32::try_from(meta.len()).map_err(|_| "task metadata too large")?;
    let mut out = Vec::with_capacity(7 + kind.len() + meta.len() + envelope.len());
    out.push(STORED_V1);
    out.extend_from_slice(&klen.to_be_bytes());
    out.extend_from_slice(kind.as_bytes());
    out.extend_from_slice(&mlen.to_be_bytes());
    out.extend_from_slice(&meta);
    out.extend_from_slice(envelope);
    Ok(out)
}

/// Decode a task's stored bytes, naming what is wrong (never the bytes).
pub(crate) fn decode_stored(mut b: Vec<u8>) -> Result<Stored, String> {
    let short = || format!("stored task bytes are truncated ({} bytes)", b.len());
    if b.first() != Some(&STORED_V1) {
        return Err(match b.first() {
            None => "stored task bytes are empty".to_owned(),
            Some(v) => format!("stored task bytes have unknown layout version {v}"),
        });
    }
    let klen = usize::from(u16::from_be_bytes(
        b.get(1..3)
            .ok_or_else(short)?
            .try_into()
            .map_err(|_| short())?,
    ));
    let kind = b.get(3..3 + klen).ok_or_else(short)?;
    let kind = std::str::from_utf8(kind)
        .map_err(|_| "stored task type is not UTF-8".to_owned())?
        .to_owned();
    let at = 3 + klen;
    let mlen = u32::from_be_bytes(
        b.get(at..at + 4)
            .ok_or_else(short)?
            .try_into()
            .map_err(|_| short())?,
    ) as usize;
    let meta = b.get(at + 4..at + 4 + mlen).ok_or_else(short)?;
    let meta = rmp_serde::from_slice::<TaskMeta>(meta)
        .map_err(|e| format!("task meta does not decode: {e}"))?;
    let envelope = b.split_off(at + 4 + mlen);
    Ok(Stored {
        kind,
        meta,
        envelope,
    })
}

/// Build a record from a task hash (`HGETALL` field/value pairs), the
/// task's stored bytes and the queue whose key holds it.
pub(crate) fn record(
    id: TaskId,
    queue: &str,
    fields: Vec<Value>,
    stored: Option<Vec<u8>>,
) -> Result<TaskRecord, String> {
    let mut state = None;
    let mut attempts = 0i64;
    let mut run_at = None;
    let mut last_error = None;
    let mut result = None;
    let mut reason = None;
    let mut lease = None;
    let mut finished = None;
    let mut updated = None;
    let mut it = fields.into_iter();
    while let (Some(k), Some(v)) = (it.next(), it.next()) {
        let k = bytes(k)?;
        let v = bytes(v)?;
        let num = || {
            parse_i64(&v)
                .ok_or_else(|| format!("field `{}` is not a number", String::from_utf8_lossy(&k)))
        };
        match k.as_slice() {
            b"s" => {
                let s = std::str::from_utf8(&v).map_err(|_| "state is not UTF-8")?;
                state = Some(
                    s.parse::<TaskState>()
                        .map_err(|_| format!("unknown state `{s}`"))?,
                );
            }
            b"a" => attempts = num()?,
            b"r" => run_at = Some(num()?),
            b"le" => last_error = Some(v),
            b"res" => result = Some(v),
            b"ar" => reason = Some(ArchiveReason::parse(&String::from_utf8_lossy(&v))),
            b"lx" => lease = Some(num()?),
            b"fin" => finished = Some(num()?),
            b"upd" => updated = Some(num()?),
            _ => {}
        }
    }
    let missing = |f: &str| format!("task {id} has no `{f}` field");
    let state = state.ok_or_else(|| missing("s"))?;
    // (An erased task keeps its kind and metadata, not its envelope.)
    let stored = decode_stored(stored.ok_or_else(|| format!("task {id} has no stored bytes"))?)?;
    // Acks leave the lease fields behind (one command less per task): they
    // mean something only while the task is active.
    let lease = if state == TaskState::Active {
        lease
    } else {
        None
    };
    Ok(TaskRecord {
        id,
        queue: queue.to_owned(),
        kind: stored.kind,
        envelope: stored.envelope,
        meta: stored.meta,
        state,
        attempts: u32::try_from(attempts.max(0)).unwrap_or(u32::MAX),
        run_at_ms: run_at.ok_or_else(|| missing("r"))?,
        last_error,
        result,
        archive_reason: reason,
        lease_expires_at_ms: lease,
        finished_at_ms: finished,
        updated_at_ms: updated.ok_or_else(|| missing("upd"))?,
    })
}

/// A subject tag as stored (hex).
pub(crate) fn subject_str(s: &SubjectTag) -> String {
    s.to_hex()
}
