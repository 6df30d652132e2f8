//! Task rows that do not decode: found per row, quarantined, never fatal.
//!
//! A column holding a value of the wrong type (a REAL where an integer
//! belongs, TEXT where a BLOB belongs) or metadata that does not decode
//! comes from an edited or damaged file, never from sealq. Such a row must
//! not stop the call that meets it: one bad task would otherwise stop every
//! worker of every queue in the call, and the operator commands, for good.
//!
//! - Reading a row goes the fast way ([`record_from_row`]); only when that
//!   fails does [`decode_row`] look at each column with its type
//!   ([`diagnose`]) to name what is wrong (column names and types only,
//!   never the bytes).
//! - The writer **quarantines** such a task ([`quarantine`]): archived with
//!   reason `integrity`, lease released, the columns the state machine owns
//!   (attempts, run-at, result, error) reset when they hold the wrong type
//!   so it never blocks a query again. The envelope and metadata are kept
//!   as they are (still sealed; evidence for the operator). Counted in
//!   `sealq_quarantined_total{backend="sqlite",op}` and logged at WARN with
//!   the task's id (or its row number when the id is what is damaged).
//! - Readers cannot write: `list` skips the row and logs it at WARN; `get`
//!   answers [`BrokerErrorKind::Corrupt`] naming the task; `stats` leaves
//!   tasks of an unknown state out of the counts and logs them.

use std::fmt;

use rusqlite::types::{Type, ValueRef};
use rusqlite::{Connection, Row, params};
use sealq::broker::TaskRecord;
use sealq::{BrokerError, BrokerErrorKind, TaskId, TaskMeta, TaskState};

use crate::codec::{SEQ_COLUMN, record_from_row};

/// A task row that does not decode, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Malformed {
    /// The row's stable key (`tasks.seq`).
    pub(crate) seq: i64,
    /// The task's id, when that column at least decodes.
    pub(crate) id: Option<TaskId>,
    /// What is wrong, one entry per column: `attempts holds real, not integer`.
    pub(crate) problems: Vec<String>,
}

impl Malformed {
    /// How logs and errors name the task: its id, else its row.
    pub(crate) fn task(&self) -> String {
        match self.id {
            Some(id) => id.to_string(),
            None => format!("at row seq={} (its id does not decode)", self.seq),
        }
    }

    /// An error for a caller that asked for this very task.
    pub(crate) fn into_error(self, path: &std::path::Path) -> BrokerError {
        BrokerError::new(
            BrokerErrorKind::Corrupt,
            format!(
                "task {} in `{}` does not decode ({self}); the file was edited or is damaged. \
                 Workers archive such a task as `integrity` when they meet it; delete it with \
                 `sealq tasks delete` once inspected",
                self.task(),
                path.display()
            ),
        )
    }
}

impl fmt::Display for Malformed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.problems.is_empty() {
            // The fast path failed but every column looks right on its own.
            return f.write_str("a column does not decode");
        }
        f.write_str(&self.problems.join("; "))
    }
}

/// Whether `e` says a value read from a row has the wrong type or does not
/// convert (as opposed to SQLite itself failing).
pub(crate) fn is_decode_error(e: &rusqlite::Error) -> bool {
    matches!(
        e,
        rusqlite::Error::FromSqlConversionFailure(..)
            | rusqlite::Error::InvalidColumnType(..)
            | rusqlite::Error::IntegralValueOutOfRange(..)
            | rusqlite::Error::Utf8Error(..)
    )
}

/// Read one row of [`crate::codec::RECORD_SELECT`] or
/// [`crate::codec::RECORD_RETURNING`]: the record, or why it does not
/// decode. The outer error is SQLite's own (I/O, busy), never the row's.
pub(crate) fn decode_row(row: &Row<'_>) -> rusqlite::Result<Result<TaskRecord, Malformed>> {
    match record_from_row(row) {
        Ok(r) => Ok(Ok(r)),
        Err(e) if is_decode_error(&e) => Ok(Err(diagnose(row))),
        Err(e) => Err(e),
    }
}

/// What a column must hold.
#[derive(Clone, Copy)]
enum Want {
    /// A 16-byte BLOB.
    Id,
    /// UTF-8 TEXT.
    Text,
    /// A BLOB.
    Blob,
    /// A BLOB or NULL.
    OptBlob,
    /// An INTEGER.
    Int,
    /// An INTEGER or NULL.
    OptInt,
    /// TEXT or NULL.
    OptText,
    /// Named MessagePack [`TaskMeta`].
    Meta,
    /// A [`TaskState`] name.
    State,
}

/// The record's columns in [`crate::codec::RECORD_SELECT`] order.
const COLUMNS: [(&str, Want); 14] = [
    ("id", Want::Id),
    ("queue", Want::Text),
    ("kind", Want::Text),
    ("envelope", Want::Blob),
    ("meta", Want::Meta),
    ("state", Want::State),
    ("attempts", Want::Int),
    ("run_at", Want::Int),
    ("last_error", Want::OptBlob),
    ("result", Want::OptBlob),
    ("archive_reason", Want::OptText),
    ("lease_expires_at", Want::OptInt),
    ("finished_at", Want::OptInt),
    ("updated_at", Want::Int),
];

fn type_name(v: &ValueRef<'_>) -> &'static str {
    match v.data_type() {
        Type::Null => "null",
        Type::Integer => "integer",
        Type::Real => "real",
        Type::Text => "text",
        Type::Blob => "blob",
    }
}

/// Look at each column of a row [`record_from_row`] refused, with its type,
/// and say which are wrong (names and types, never values).
pub(crate) fn diagnose(row: &Row<'_>) -> Malformed {
    let seq = row.get::<_, i64>(SEQ_COLUMN).unwrap_or(-1);
    let mut id = None;
    let mut problems = Vec::new();
    for (col, (name, want)) in COLUMNS.iter().enumerate() {
        let v = match row.get_ref(col) {
            Ok(v) => v,
            Err(_) => {
                problems.push(format!("{name} cannot be read"));
                continue;
            }
        };
        let found = type_name(&v);
        let problem = match (want, v) {
            (Want::Id, ValueRef::Blob(b)) if b.len() == 16 => {
                let bytes: [u8; 16] = b.try_into().unwrap_or([0; 16]);
                id = Some(TaskId(uuid::Uuid::from_bytes(bytes)));
                None
            }
            (Want::Id, ValueRef::Blob(b)) => Some(format!("{name} is {} bytes, not 16", b.len())),
            (Want::Text | Want::OptText, ValueRef::Text(t)) => std::str::from_utf8(t)
                .err()
                .map(|_| format!("{name} is not UTF-8")),
            (Want::OptText | Want::OptBlob | Want::OptInt, ValueRef::Null) => None,
            (Want::Blob | Want::OptBlob, ValueRef::Blob(_)) => None,
            (Want::Int | Want::OptInt, ValueRef::Integer(_)) => None,
            (Want::Meta, ValueRef::Blob(b)) => rmp_serde::from_slice::<TaskMeta>(b)
                .err()
                .map(|_| format!("{name} does not decode as task metadata")),
            (Want::State, ValueRef::Text(t)) => match std::str::from_utf8(t) {
                Ok(s) if s.parse::<TaskState>().is_ok() => None,
                _ => Some(format!("{name} is not a task state")),
            },
            (want, _) => Some(format!("{name} holds {found}, not {}", expected(*want))),
        };
        problems.extend(problem);
    }
    Malformed { seq, id, problems }
}

fn expected(w: Want) -> &'static str {
    match w {
        Want::Id => "a 16-byte blob",
        Want::Text | Want::State => "text",
        Want::OptText => "text or null",
        Want::Blob | Want::Meta => "blob",
        Want::OptBlob => "blob or null",
        Want::Int => "integer",
        Want::OptInt => "integer or null",
    }
}

/// `UPDATE tasks SET {QUARANTINE_SET} WHERE …` (`?1`: now): archive as
/// `integrity`, release the lease, and reset the columns the state machine
/// owns when they hold the wrong type, so the row blocks no query again.
/// Envelope and metadata are left as they are.
const QUARANTINE_SET: &str = "state = 'archived', archive_reason = 'integrity', \
     lease_token = NULL, lease_expires_at = NULL, worker = NULL, purge_at = NULL, \
     attempts = CASE WHEN typeof(attempts) = 'integer' THEN attempts ELSE 0 END, \
     run_at = CASE WHEN typeof(run_at) = 'integer' THEN run_at ELSE ?1 END, \
     last_error = CASE WHEN typeof(last_error) IN ('blob', 'null') THEN last_error ELSE NULL END, \
     result = CASE WHEN typeof(result) IN ('blob', 'null') THEN result ELSE NULL END, \
     finished_at = ?1, updated_at = ?1";

/// Quarantine the task at row `seq` (see the module docs); `op` names the
/// call that met it, for the metric and the log.
pub(crate) fn quarantine(
    conn: &Connection,
    now: i64,
    m: &Malformed,
    op: &'static str,
) -> rusqlite::Result<()> {
    conn.prepare_cached(&format!("UPDATE tasks SET {QUARANTINE_SET} WHERE seq = ?2"))?
        .execute(params![now, m.seq])?;
    // (An archived task holds no unique key: enqueue looks only at live holders.)
    report(&m.task(), &m.to_string(), op);
    Ok(())
}

/// Quarantine every task `filter` (an SQL condition on `tasks`, `?1` is
/// now) selects, for sweeps that find malformed rows by a column's type
/// rather than by reading them. Returns how many.
pub(crate) fn quarantine_where(
    conn: &Connection,
    now: i64,
    filter: &str,
    why: &str,
    op: &'static str,
) -> rusqlite::Result<u64> {
    let mut stmt = conn.prepare_cached(&format!(
        "UPDATE tasks SET {QUARANTINE_SET} WHERE {filter} RETURNING seq, id"
    ))?;
    let rows = stmt.query_map([now], |r| {
        Ok((
            r.get::<_, i64>(0)?,
            r.get_ref(1)?.as_blob().ok().map(<[u8]>::to_vec),
        ))
    })?;
    let mut n = 0;
    for row in rows {
        let (seq, id) = row?;
        let m = Malformed {
            seq,
            id: id
                .and_then(|b| <[u8; 16]>::try_from(b.as_slice()).ok())
                .map(|b| TaskId(uuid::Uuid::from_bytes(b))),
            problems: vec![why.to_owned()],
        };
        report(&m.task(), why, op);
        n += 1;
    }
    Ok(n)
}

/// Count and log one quarantined task.
fn report(task: &str, why: &str, op: &'static str) {
    metrics::counter!("sealq_quarantined_total", "backend" => "sqlite", "op" => op).increment(1);
    tracing::warn!(
        task = %task,
        op,
        problem = %why,
        "sealq: quarantined a task whose stored row does not decode (archived, reason integrity)"
    );
}

/// Log a row a reader skipped (readers cannot quarantine).
pub(crate) fn skipped(m: &Malformed, op: &'static str) {
    metrics::counter!("sealq_malformed_tasks_skipped_total", "backend" => "sqlite", "op" => op)
        .increment(1);
    tracing::warn!(
        task = %m.task(),
        op,
        problem = %m,
        "sealq: skipped a task whose stored row does not decode; a worker archives it as \
         `integrity` when it meets it, or delete it with `sealq tasks delete`"
    );
}
