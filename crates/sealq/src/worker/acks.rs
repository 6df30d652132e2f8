//! The ack loop: every finished attempt's outcome reaches the broker in
//! batches, one `Broker::ack` call each.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use tokio::sync::mpsc;
use tracing::{Instrument as _, warn};

use super::runtime::{WorkerState, error_backoff};
use crate::model::audit_event::SucceededEntry;
use crate::store::broker::{Ack, AckResult, Outcome};

/// Drain the ack queue into batches of at most `ack_batch` until every
/// sender is gone. A batch the broker keeps refusing is dropped after 20
/// tries: its leases expire and the tasks run again (at-least-once).
pub(crate) async fn ack_loop(state: Arc<WorkerState>, mut rx: mpsc::UnboundedReceiver<(Ack, u32)>) {
    let max = state.config.ack_batch;
    let mut finished = Vec::with_capacity(max);
    let mut batch = Vec::with_capacity(max);
    while rx.recv_many(&mut finished, max).await > 0 {
        // One `succeeded_batch` record for the successes of this batch,
        // written whatever the broker then says (the handlers did succeed;
        // a lost lease is counted and warned about below).
        if let Some(a) = &state.config.audit {
            let done = finished
                .iter()
                .filter_map(|(ack, attempt): &(Ack, u32)| match &ack.outcome {
                    Outcome::Complete { result } => Some(SucceededEntry {
                        task: ack.lease.task_id,
                        attempt: *attempt,
                        result_len: result.as_ref().map(|r| r.len() as u64),
                    }),
                    _ => None,
                })
                .collect();
            a.on_succeeded_batch(&state.config.id, done);
        }
        batch.extend(finished.drain(..).map(|(ack, _)| ack));
        let mut failures = 0u32;
        loop {
            let span = crate::store::spans::ack(&batch);
            match state.broker.ack(batch.clone()).instrument(span).await {
                Ok(results) => {
                    if let Some(store) = &state.config.blobs {
                        crate::blob::delete_completed(store, &batch, &results);
                    }
                    let lost = results
                        .iter()
                        .filter(|r| **r == AckResult::LeaseLost)
                        .count();
                    if lost > 0 {
                        state
                            .stats
                            .leases_lost
                            .fetch_add(lost as u64, Ordering::Relaxed);
                        warn!(
                            lost,
                            "acks refused: leases were lost (the tasks may run again elsewhere)"
                        );
                    }
                    break;
                }
                Err(e) if failures < 20 => {
                    crate::metrics::record::broker_error("ack", &e);
                    failures += 1;
                    warn!(error = %e, attempt = failures, "ack failed; retrying");
                    tokio::time::sleep(error_backoff(failures)).await;
                }
                Err(e) => {
                    crate::metrics::record::broker_error("ack", &e);
                    // Giving up is safe: the leases expire and the tasks are
                    // recovered for another attempt (at-least-once delivery).
                    warn!(error = %e, count = batch.len(), "ack failed repeatedly; leases will expire and the tasks run again");
                    break;
                }
            }
        }
        batch.clear();
    }
}
