//! How stored rows become [`TaskRecord`]s, and what a row that does not
//! decode looks like ([`Malformed`]).
//!
//! Postgres enforces column types, so the damage a row can carry is in what
//! the types allow: metadata bytes that are not a [`TaskMeta`], a missing
//! body row, a negative attempt count.

use sealq::broker::TaskRecord;
use sealq::{ArchiveReason, BrokerError, BrokerErrorKind, TaskId, TaskMeta, TaskState};
use tokio_postgres::Row;

/// A task row that does not decode, and why (column names, never bytes).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Malformed {
    /// The task.
    pub(crate) id: TaskId,
    /// What is wrong.
    pub(crate) problem: String,
}

impl Malformed {
    /// An error for a caller that asked for this very task.
    pub(crate) fn into_error(self, target: &str) -> BrokerError {
        BrokerError::new(
            BrokerErrorKind::Corrupt,
            format!(
                "task {} in {target} does not decode ({}); the row was edited or is damaged. \
                 Workers archive such a task as `integrity` when they meet it; delete it with \
                 `sealq tasks delete` once inspected",
                self.id, self.problem
            ),
        )
    }
}

/// Encode task metadata for the `meta` column (named MessagePack).
pub(crate) fn encode_meta(meta: &TaskMeta) -> Result<Vec<u8>, rmp_serde::encode::Error> {
    rmp_serde::to_vec_named(meta)
}

/// Read one task row (of `sealq.dequeue`, `sealq.get_task` or
/// `sealq.list_tasks`: the same columns in the same order).
pub(crate) fn record_from_row(row: &Row) -> Result<TaskRecord, Malformed> {
    let id = TaskId(row.get::<_, uuid::Uuid>(0));
    let bad = |problem: &str| Malformed {
        id,
        problem: problem.to_owned(),
    };
    let envelope: Option<Vec<u8>> = row.get(3);
    let meta: Option<Vec<u8>> = row.get(4);
    let (Some(envelope), Some(meta)) = (envelope, meta) else {
        return Err(bad("its body row (envelope and metadata) is missing"));
    };
    let meta: TaskMeta =
        rmp_serde::from_slice(&meta).map_err(|_| bad("meta does not decode as task metadata"))?;
    let state: String = row.get(5);
    let state: TaskState = state
        .parse()
        .map_err(|_| bad("state is not a task state"))?;
    let attempts: i32 = row.get(6);
    let attempts = u32::try_from(attempts).map_err(|_| bad("attempts is negative"))?;
    let reason: Option<String> = row.get(10);
    Ok(TaskRecord {
        id,
        queue: row.get(1),
        kind: row.get(2),
        envelope,
        meta,
        state,
        attempts,
        run_at_ms: row.get(7),
        last_error: row.get(8),
        result: row.get(9),
        archive_reason: reason.as_deref().map(ArchiveReason::parse),
        lease_expires_at_ms: row.get(11),
        finished_at_ms: row.get(12),
        updated_at_ms: row.get(13),
    })
}

/// A `queue_rates` row's limit and period (CHECKed positive).
pub(crate) fn rate_limit_from_sql(limit: i64, period_ms: i64) -> sealq::broker::RateLimit {
    sealq::broker::RateLimit {
        limit: limit.max(1) as u64,
        period_ms: period_ms.max(1) as u64,
    }
}

/// A duration in ms as stored (saturating).
pub(crate) fn ms_to_sql(ms: u64) -> i64 {
    i64::try_from(ms).unwrap_or(i64::MAX)
}

/// Count and log one quarantined task.
pub(crate) fn report_quarantined(m: &Malformed, op: &'static str) {
    metrics::counter!("sealq_quarantined_total", "backend" => "postgres", "op" => op).increment(1);
    tracing::warn!(
        task = %m.id,
        op,
        problem = %m.problem,
        "sealq: quarantined a task whose stored row does not decode (archived, reason integrity)"
    );
}

/// Log a row a reader skipped.
pub(crate) fn report_skipped(m: &Malformed, op: &'static str) {
    metrics::counter!("sealq_malformed_tasks_skipped_total", "backend" => "postgres", "op" => op)
        .increment(1);
    tracing::warn!(
        task = %m.id,
        op,
        problem = %m.problem,
        "sealq: skipped a task whose stored row does not decode; a worker archives it as \
         `integrity` when it meets it, or delete it with `sealq tasks delete`"
    );
}
