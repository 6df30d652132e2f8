//! The presence loop: keep this worker listed in the broker's registry of
//! live workers (`Broker::register_worker`), so `sealq workers` shows it.
//!
//! It registers at start, again every third of the lease (with the leases
//! it holds as its tasks in flight), and deregisters at shutdown. Each
//! registration lives [`TTL_HEARTBEATS`] heartbeats: a worker that died
//! without deregistering drops out of the listing after that, and the
//! broker deletes its entry at the next listing.
//!
//! The registry is for operators: a failure to register never stops or
//! slows the worker (logged, retried at the next heartbeat), and a broker
//! without a registry (`BrokerErrorKind::Unsupported`) is simply not told.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use super::runtime::WorkerState;
use crate::error::BrokerErrorKind;
use crate::model::live_worker::{LiveWorker, host_name};

/// How many heartbeats a registration outlives: a worker is listed for up
/// to this many heartbeat intervals after its last one.
pub(crate) const TTL_HEARTBEATS: u32 = 3;

/// How long shutdown waits for the deregistration.
const DEREGISTER_WITHIN: Duration = Duration::from_secs(2);

/// What this run registers (its `last_heartbeat_ms` is the broker's to set).
fn describe_self(state: &WorkerState, run_id: &str, started_at_ms: i64) -> LiveWorker {
    LiveWorker {
        run_id: run_id.to_owned(),
        id: state.config.id.clone(),
        host: host_name(),
        pid: std::process::id(),
        queues: state.queue_names.clone(),
        concurrency: u32::try_from(state.config.concurrency).unwrap_or(u32::MAX),
        started_at_ms,
        last_heartbeat_ms: started_at_ms,
        in_flight: 0,
    }
}

/// Register now and every `lease / 3` until `stop`, then deregister.
pub(crate) async fn presence_loop(state: Arc<WorkerState>, stop: CancellationToken) {
    let every = (state.config.lease / 3).max(Duration::from_millis(100));
    let ttl = every * TTL_HEARTBEATS;
    let run_id = uuid::Uuid::now_v7().to_string();
    let mut me = describe_self(&state, &run_id, state.clock.now_ms());
    let mut registered = false;
    loop {
        me.in_flight = state.held_leases().len() as u64;
        // Bounded, and given up at shutdown: a broker that does not answer
        // must not hold the worker's shutdown.
        let call = tokio::time::timeout(every, state.broker.register_worker(&me, ttl));
        let outcome = tokio::select! {
            _ = stop.cancelled() => break,
            r = call => r,
        };
        match outcome {
            Ok(Ok(())) => registered = true,
            Ok(Err(e)) if e.kind == BrokerErrorKind::Unsupported => {
                debug!(broker = %state.broker.describe(), "the broker keeps no registry of live workers");
                return;
            }
            Ok(Err(e)) => {
                warn!(error = %e, worker = %me.id, "registering this worker as live failed; will retry");
            }
            Err(_) => {
                warn!(worker = %me.id, "registering this worker as live timed out; will retry")
            }
        }
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = tokio::time::sleep(every) => {}
        }
    }
    if !registered {
        return;
    }
    match tokio::time::timeout(DEREGISTER_WITHIN, state.broker.deregister_worker(&run_id)).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => {
            warn!(error = %e, worker = %me.id, "deregistering this worker failed; it drops out of the listing by itself");
        }
        Err(_) => {
            warn!(worker = %me.id, "deregistering this worker timed out; it drops out of the listing by itself");
        }
    }
}
