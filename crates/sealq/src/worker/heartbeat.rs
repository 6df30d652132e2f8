//! The heartbeat loop: keep the leases of held tasks alive.

use std::sync::Arc;

use tokio_util::sync::CancellationToken;
use tracing::warn;

use super::runtime::WorkerState;
use crate::store::broker::Lease;

/// Every third of the lease, extend every held lease in one broker call. A
/// lease the broker reports lost is dropped and its handler cancelled: the
/// task may already run elsewhere, and its ack would be refused.
pub(crate) async fn heartbeat_loop(state: Arc<WorkerState>, stop: CancellationToken) {
    let every = state.config.lease / 3;
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(every) => {}
        }
        let leases: Vec<Lease> = state.held_leases().values().map(|(l, _)| *l).collect();
        if leases.is_empty() {
            continue;
        }
        match state
            .broker
            .extend_leases(&leases, state.config.lease)
            .await
        {
            Ok(extended) => {
                let mut held = state.held_leases();
                for (lease, ok) in leases.iter().zip(extended) {
                    if !ok && let Some((_, token)) = held.remove(&lease.task_id) {
                        warn!(id = %lease.task_id, "lease lost; cancelling the handler");
                        token.cancel();
                    }
                }
            }
            Err(e) => {
                crate::metrics::record::broker_error("extend_leases", &e);
                warn!(error = %e, "lease extension failed; will retry")
            }
        }
    }
}
