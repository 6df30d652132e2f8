//! Detection of a task that succeeds twice (finding 2 of the security
//! review). The replay memory (`completed_ids`) takes an id when its task
//! completes or is deleted; a `Complete` ack on an id already there means
//! the same task succeeded again: a worker that ran a task flagged
//! `replayed`, or one whose memory entry was removed. The ack still
//! applies (the work is done; refusing it would only make it run again);
//! it is counted and logged for the operator.

use sealq::TaskId;

/// Count and log a second success of task `id`.
pub(crate) fn count_replayed_success(id: TaskId) {
    metrics::counter!("sealq_replayed_successes_total", "backend" => "sqlite").increment(1);
    tracing::warn!(
        task = %id,
        "sealq: a task whose id had already completed (or been deleted) succeeded again; \
         check for replayed or restored tasks (`sealq audit verify` lists repeated successes)"
    );
}
