//! How sealq values are stored in columns and read back.
//!
//! Ids are 16-byte BLOBs (UUID bytes, so byte order is id order), states and
//! archive reasons their snake_case names, [`TaskMeta`] named MessagePack
//! (`rmp_serde::to_vec_named`), lease tokens the `u64` bits as `INTEGER`.

use rusqlite::Row;
use rusqlite::types::Type;
use sealq::broker::TaskRecord;
use sealq::{ArchiveReason, TaskId, TaskMeta, TaskState};

/// `SELECT {RECORD_SELECT} WHERE …`: the columns [`record_from_row`] reads.
pub(crate) const RECORD_SELECT: &str = "t.id, t.queue, t.kind, b.envelope, b.meta, t.state, \
     t.attempts, t.run_at, t.last_error, t.result, t.archive_reason, t.lease_expires_at, \
     t.finished_at, t.updated_at, t.seq FROM tasks t JOIN task_bodies b ON b.seq = t.seq";

/// `UPDATE tasks … RETURNING {RECORD_RETURNING}`: the columns [`record_from_row`] reads.
pub(crate) const RECORD_RETURNING: &str = "id, queue, kind, \
     (SELECT envelope FROM task_bodies b WHERE b.seq = tasks.seq), \
     (SELECT meta FROM task_bodies b WHERE b.seq = tasks.seq), state, attempts, run_at, \
     last_error, result, archive_reason, lease_expires_at, finished_at, updated_at, seq";

/// The column after the record's in [`RECORD_SELECT`] and [`RECORD_RETURNING`]
/// rows: `seq`, the row's stable key (what a malformed row is quarantined by,
/// as its id may be the malformed column).
pub(crate) const SEQ_COLUMN: usize = 14;

/// The first column a `RETURNING {RECORD_RETURNING}, …` statement adds.
pub(crate) const AFTER_RECORD: usize = 15;

/// The id as stored.
pub(crate) fn id_blob(id: &TaskId) -> &[u8; 16] {
    id.as_bytes()
}

/// A lease token as stored (same 64 bits).
pub(crate) fn token_to_sql(token: u64) -> i64 {
    token as i64
}

/// A duration in ms as stored (saturating at `i64::MAX`).
pub(crate) fn ms_to_sql(ms: u64) -> i64 {
    i64::try_from(ms).unwrap_or(i64::MAX)
}

fn conversion(col: usize, ty: Type, msg: String) -> rusqlite::Error {
    rusqlite::Error::FromSqlConversionFailure(col, ty, msg.into())
}

/// Room for a typical encoded [`TaskMeta`] (about 120 bytes with a short
/// producer name): encoding into a buffer that grows from empty reallocated
/// it four times, a tenth of the writer side's cost per task of a bulk
/// enqueue (issue 22).
const META_CAPACITY: usize = 192;

/// Encode task metadata for the `meta` column (the bytes of
/// `rmp_serde::to_vec_named`).
pub(crate) fn encode_meta(meta: &TaskMeta) -> Result<Vec<u8>, rmp_serde::encode::Error> {
    let mut out = Vec::with_capacity(META_CAPACITY);
    rmp_serde::encode::write_named(&mut out, meta)?;
    Ok(out)
}

/// Read a stored id.
pub(crate) fn id_from_row(row: &Row<'_>, col: usize) -> rusqlite::Result<TaskId> {
    let bytes: [u8; 16] = row.get(col)?;
    Ok(TaskId(uuid::Uuid::from_bytes(bytes)))
}

/// A `queue_rates` row's `rate_limit` and `period_ms` (CHECKed positive).
pub(crate) fn rate_limit_from_sql(limit: i64, period_ms: i64) -> sealq::broker::RateLimit {
    sealq::broker::RateLimit {
        limit: limit.max(1) as u64,
        period_ms: period_ms.max(1) as u64,
    }
}

/// Read a stored state name.
pub(crate) fn state_from_str(s: &str, col: usize) -> rusqlite::Result<TaskState> {
    s.parse()
        .map_err(|_| conversion(col, Type::Text, format!("unknown task state `{s}`")))
}

/// Read one task row selected with [`RECORD_SELECT`] or [`RECORD_RETURNING`].
pub(crate) fn record_from_row(row: &Row<'_>) -> rusqlite::Result<TaskRecord> {
    let meta_bytes: Vec<u8> = row.get(4)?;
    let meta: TaskMeta = rmp_serde::from_slice(&meta_bytes)
        .map_err(|e| conversion(4, Type::Blob, format!("task meta does not decode: {e}")))?;
    let state: String = row.get(5)?;
    let attempts: i64 = row.get(6)?;
    let reason: Option<String> = row.get(10)?;
    Ok(TaskRecord {
        id: id_from_row(row, 0)?,
        queue: row.get(1)?,
        kind: row.get(2)?,
        envelope: row.get(3)?,
        meta,
        state: state_from_str(&state, 5)?,
        attempts: u32::try_from(attempts.max(0)).unwrap_or(u32::MAX),
        run_at_ms: row.get(7)?,
        last_error: row.get(8)?,
        result: row.get(9)?,
        archive_reason: reason.as_deref().map(ArchiveReason::parse),
        lease_expires_at_ms: row.get(11)?,
        finished_at_ms: row.get(12)?,
        updated_at_ms: row.get(13)?,
    })
}
