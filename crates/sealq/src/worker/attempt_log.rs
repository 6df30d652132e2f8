//! The WARN line of an attempt that did not succeed: failed (and retried)
//! or archived. One shape for both, so a log pipeline can index it:
//! `task_id`, `task_type`, `queue`, `attempt`, `reason`, and where there
//! is one a `detail` (why it failed: `handler_error`, `panic`, `timeout`
//! …; or the integrity check that refused it).
//!
//! Never the payload, the result or the handler's error text: the text a
//! handler returns (or panics with) may quote the payload, so it is sealed
//! as the task's error and only an audited reveal shows it.

use tracing::warn;

use crate::model::record::TaskRecord;
use crate::model::state::ArchiveReason;

/// The attempt failed and the task runs again in `retry_in_ms`.
pub(crate) fn retrying(record: &TaskRecord, cause: &str, retry_in_ms: u64) {
    warn!(
        task_id = %record.id,
        task_type = %record.kind,
        queue = %record.queue,
        attempt = record.attempts,
        max_retries = record.meta.max_retries,
        reason = "failed",
        detail = cause,
        retry_in_ms,
        "task failed; will retry"
    );
}

/// The task was archived (dead-lettered) for `reason`; no attempt follows.
pub(crate) fn archived(record: &TaskRecord, reason: &ArchiveReason, detail: Option<&str>) {
    warn!(
        task_id = %record.id,
        task_type = %record.kind,
        queue = %record.queue,
        attempt = record.attempts,
        reason = %reason,
        detail,
        "task archived"
    );
}
