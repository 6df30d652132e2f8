//! How sealq values are stored in columns and read back.
//!
//! Ids are 16-byte BLOBs (UUID bytes, so byte order is id order), states and
//! archive reasons their snake_case names, [`TaskMeta`] positional
//! MessagePack (see [`encode_meta`]), lease tokens the `u64` bits as
//! `INTEGER`.

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

/// Room for a typical encoded [`TaskMeta`] (about 80 bytes with a short
/// producer name): encoding into a buffer that grows from empty reallocated
/// it several times, a tenth of the writer side's cost per task of a bulk
/// enqueue (issue 22).
const META_CAPACITY: usize = 96;

/// Encode task metadata for the `meta` column: positional MessagePack (an
/// array of the fields in [`TaskMeta`]'s order, `rmp_serde::encode::write`).
/// Rows written before schema version 7 hold named MessagePack (a map of
/// field names, `rmp_serde::to_vec_named`); [`decode_meta`] reads both.
/// Positional is 75-80 bytes where named was about 220: a task's rows are
/// a tenth smaller, and every byte is written to the WAL, read back and
/// written again by the checkpoint (issue 22, `docs/benchmarks.md`, "SQLite
/// bulk writer at session 9"). The price is that stored rows depend on the
/// order of [`TaskMeta`]'s fields: a field may be added at the end (with
/// `#[serde(default)]`), never in between; `codec::tests` pins the order.
pub(crate) fn encode_meta(meta: &TaskMeta) -> Result<Vec<u8>, rmp_serde::encode::Error> {
    let mut out = Vec::with_capacity(META_CAPACITY);
    rmp_serde::encode::write(&mut out, meta)?;
    Ok(out)
}

/// Decode a `meta` column, positional ([`encode_meta`]) or named (rows
/// written before schema version 7).
pub(crate) fn decode_meta(bytes: &[u8]) -> Result<TaskMeta, rmp_serde::decode::Error> {
    rmp_serde::from_slice(bytes)
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
    let meta = decode_meta(&meta_bytes)
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

#[cfg(test)]
mod tests {
    use sealq::{Backoff, SubjectTag};

    use super::*;

    fn metas() -> Vec<TaskMeta> {
        let full = TaskMeta {
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
        };
        let bare = TaskMeta {
            producer: String::new(),
            created_at_ms: -1,
            not_after_ms: None,
            deadline_ms: None,
            timeout_ms: None,
            max_retries: 0,
            backoff: Backoff::Fixed { delay_ms: 0 },
            retention_ms: u64::MAX,
            subject_tag: None,
            not_before_ms: None,
        };
        vec![full, bare, sealq::testkit::fixtures::meta(1_000)]
    }

    /// Issue 22, session 9: metadata is stored positional, a third of the
    /// named encoding's bytes, and reads back whole, every field and both
    /// kinds of backoff.
    #[test]
    fn bulk_enqueue_meta_is_stored_positional_and_reads_back() {
        for m in metas() {
            let bytes = encode_meta(&m).unwrap();
            assert!(matches!(bytes[0], 0x90..=0x9f), "an array: {bytes:02x?}");
            assert_eq!(decode_meta(&bytes).unwrap(), m);
            let named = rmp_serde::to_vec_named(&m).unwrap();
            assert!(
                bytes.len() * 2 < named.len(),
                "{} / {}",
                bytes.len(),
                named.len()
            );
        }
        let bench = &metas()[0];
        let mut bench = bench.clone();
        bench.subject_tag = None;
        bench.not_before_ms = None;
        assert!(encode_meta(&bench).unwrap().len() <= 90);
    }

    /// Issue 22, session 9: rows written before schema version 7 hold named
    /// metadata, and read as before.
    #[test]
    fn bulk_enqueue_meta_written_named_still_reads() {
        for m in metas() {
            let named = rmp_serde::to_vec_named(&m).unwrap();
            assert_eq!(decode_meta(&named).unwrap(), m);
        }
        // Named metadata stored before `not_before_ms` existed.
        let mut old = metas().remove(1);
        let mut map = rmp_serde::to_vec_named(&old).unwrap();
        assert_eq!(map[0], 0x8a, "ten fields");
        map[0] = 0x89;
        map.truncate(map.len() - "not_before_ms".len() - 2);
        old.not_before_ms = None;
        assert_eq!(decode_meta(&map).unwrap(), old);
    }

    /// Issue 22, session 9: stored rows depend on the order of `TaskMeta`'s
    /// fields (positional encoding). These bytes were written by schema
    /// version 7; if this fails, a field was moved or inserted: add fields
    /// at the end only (with `#[serde(default)]`), or the stored rows of
    /// every SQLite store stop reading.
    #[test]
    fn bulk_enqueue_meta_field_order_is_pinned() {
        let stored = PINNED;
        let m = decode_meta(stored).unwrap();
        let want = metas().remove(0);
        assert_eq!(m, want);
        assert_eq!(encode_meta(&want).unwrap(), stored);
    }

    /// `encode_meta` of `metas()[0]` by schema version 7.
    const PINNED: &[u8] = &[
        0x9a, 0xab, 0x73, 0x65, 0x61, 0x6c, 0x71, 0x2d, 0x62, 0x65, 0x6e, 0x63, 0x68, 0xcf, 0x00,
        0x00, 0x01, 0xa2, 0x50, 0xf6, 0x0c, 0x56, 0xcf, 0x00, 0x00, 0x01, 0xa2, 0x56, 0x1c, 0x68,
        0x56, 0xcf, 0x00, 0x00, 0x01, 0xa2, 0x51, 0x2c, 0xfa, 0xd6, 0xce, 0x00, 0x1b, 0x77, 0x40,
        0x19, 0x94, 0xab, 0x65, 0x78, 0x70, 0x6f, 0x6e, 0x65, 0x6e, 0x74, 0x69, 0x61, 0x6c, 0xcd,
        0x03, 0xe8, 0xce, 0x00, 0x36, 0xee, 0x80, 0xcb, 0x3f, 0xe0, 0x00, 0x00, 0x00, 0x00, 0x00,
        0x00, 0xce, 0x05, 0x26, 0x5c, 0x00, 0xdc, 0x00, 0x20, 0x07, 0x07, 0x07, 0x07, 0x07, 0x07,
        0x07, 0x07, 0x07, 0x07, 0x07, 0x07, 0x07, 0x07, 0x07, 0x07, 0x07, 0x07, 0x07, 0x07, 0x07,
        0x07, 0x07, 0x07, 0x07, 0x07, 0x07, 0x07, 0x07, 0x07, 0x07, 0x07, 0xcf, 0x00, 0x00, 0x01,
        0xa2, 0x50, 0xf7, 0x15, 0xe0,
    ];
}
