//! Sampled gauges: queue depth by state, paused queues and the audit
//! backlog, read every `queue_metrics_interval` from
//! [`Broker::queue_depths`] (one broker call, not one per task; a broker
//! may estimate the `completed` depth rather than read every retained
//! task).
//!
//! A queue the broker stops reporting (drained and forgotten) is set to
//! zero rather than left at its last value.

use std::collections::BTreeSet;
use std::sync::Arc;

use tokio_util::sync::CancellationToken;
use tracing::debug;

use super::runtime::WorkerState;
use crate::metrics::record as metric;
use crate::model::state::TaskState;
use crate::store::broker::Broker;

/// The states a depth is reported for.
const STATES: [TaskState; 6] = [
    TaskState::Scheduled,
    TaskState::Pending,
    TaskState::Active,
    TaskState::Retry,
    TaskState::Completed,
    TaskState::Archived,
];

/// Sample now, then every interval, until `stop`.
pub(crate) async fn queue_metrics_loop(state: Arc<WorkerState>, stop: CancellationToken) {
    let every = state.config.queue_metrics_interval;
    if every.is_zero() {
        return;
    }
    let mut reported = BTreeSet::new();
    loop {
        sample(&*state.broker, &mut reported).await;
        if let Some(a) = &state.config.audit {
            metric::audit_backlog(a.queued());
        }
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(every) => {}
        }
    }
}

/// Set the gauges of every queue the broker reports, and zero those of
/// queues reported before and not now.
async fn sample(broker: &dyn Broker, reported: &mut BTreeSet<String>) {
    let stats = match broker.queue_depths().await {
        Ok(stats) => stats,
        Err(e) => {
            metric::broker_error("stats", &e);
            debug!(error = %e, "sampling queue depths failed; will retry");
            return;
        }
    };
    let mut now = BTreeSet::new();
    for q in &stats {
        for s in STATES {
            metric::queue_depth(&q.queue, s.as_str(), q.get(s));
        }
        metric::queue_paused(&q.queue, q.paused);
        now.insert(q.queue.clone());
    }
    for gone in reported.difference(&now) {
        for s in STATES {
            metric::queue_depth(gone, s.as_str(), 0);
        }
        metric::queue_paused(gone, false);
    }
    *reported = now;
}
