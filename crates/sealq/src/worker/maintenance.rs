//! The maintenance loop: forward due tasks, recover expired leases, purge
//! old completed tasks, follow erasures and rate limits, sweep orphaned
//! blobs.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::runtime::WorkerState;
use crate::metrics::record as metric;
use crate::store::broker::RateLimit;

/// The orphaned-blob sweep of [`WorkerBuilder::sweep_blobs`](super::WorkerBuilder::sweep_blobs).
#[derive(Debug, Clone, Copy)]
pub(crate) struct BlobSweep {
    /// How often a sweep starts.
    pub(crate) every: Duration,
    /// Blobs of tasks younger than this are left alone.
    pub(crate) min_age: Duration,
}

/// Once per maintenance interval, until `stop`. Every failure here is only
/// logged: each step runs again next interval.
pub(crate) async fn maintenance_loop(state: Arc<WorkerState>, stop: CancellationToken) {
    let mut tick = 0u64;
    let sweep_running = Arc::new(AtomicBool::new(false));
    let mut last_sweep: Option<Instant> = None;
    loop {
        if let Some(BlobSweep { every, min_age }) = state.config.sweep
            && last_sweep.is_none_or(|t| t.elapsed() >= every)
        {
            last_sweep = Some(Instant::now());
            start_sweep(&state, &stop, &sweep_running, min_age);
        }
        // An erasure elsewhere bumps the epoch: drop cached subject keys.
        if let Some(keys) = &state.subject_keys
            && let Err(e) = keys.refresh().await
        {
            warn!(error = %e, "checking the erasure epoch failed");
        }
        match state.broker.forward_due().await {
            Ok(f) if f.moved > 0 => debug!(moved = f.moved, "forwarded due tasks"),
            Ok(_) => {}
            Err(e) => {
                metric::broker_error("forward_due", &e);
                warn!(error = %e, "forwarding due tasks failed")
            }
        }
        match state.broker.recover_expired().await {
            Ok(r) if r.retried + r.archived > 0 => {
                metric::lease_expirations(r.retried, r.archived);
                info!(
                    retried = r.retried,
                    archived = r.archived,
                    "recovered expired leases"
                )
            }
            Ok(_) => {}
            Err(e) => {
                metric::broker_error("recover_expired", &e);
                warn!(error = %e, "recovering expired leases failed")
            }
        }
        if tick.is_multiple_of(60)
            && let Err(e) = state.broker.purge_completed().await
        {
            metric::broker_error("purge_completed", &e);
            warn!(error = %e, "purging completed tasks failed");
        }
        // Rate limits change rarely: look every 10 intervals.
        if tick.is_multiple_of(10) {
            match state.broker.rate_limits(&state.queue_names).await {
                Ok(limits) => state
                    .token_wait_ms
                    .store(token_wait_ms(&limits), Ordering::Relaxed),
                Err(e) => warn!(error = %e, "reading the queues' rate limits failed"),
            }
        }
        tick += 1;
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(state.config.maintenance_interval) => {}
        }
    }
}

/// Start a sweep of orphaned blobs unless one still runs; it stops at shutdown.
fn start_sweep(
    state: &Arc<WorkerState>,
    stop: &CancellationToken,
    sweep_running: &Arc<AtomicBool>,
    min_age: Duration,
) {
    let Some(store) = state.config.blobs.clone() else {
        return;
    };
    if sweep_running.swap(true, Ordering::AcqRel) {
        return;
    }
    let (state, stop, sweep_running) = (state.clone(), stop.clone(), sweep_running.clone());
    tokio::spawn(async move {
        tokio::select! {
            _ = stop.cancelled() => {}
            r = crate::blob::sweep_orphans(&*state.broker, &*store, min_age) => match r {
                Ok(0) => {}
                Ok(n) => {
                    state.stats.blobs_swept.fetch_add(n, Ordering::Relaxed);
                    info!(tasks = n, "swept orphaned claim-check blobs");
                }
                Err(e) => warn!(error = %e, "sweeping orphaned blobs failed; will retry"),
            },
        }
        sweep_running.store(false, Ordering::Release);
    });
}

/// How long one token of the fastest-refilling limit among `limits` takes
/// to come back, ms (at least 10, at most a minute); 0 without any limit.
fn token_wait_ms(limits: &[Option<RateLimit>]) -> u64 {
    limits
        .iter()
        .flatten()
        .map(|l| (l.period_ms / l.limit.max(1)).clamp(10, 60_000))
        .min()
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_rate_limit_shortens_the_idle_wait_to_one_token() {
        let per = |n, ms| RateLimit::per(n, Duration::from_millis(ms));
        assert_eq!(token_wait_ms(&[None, None]), 0);
        // 5 per second: a token every 200 ms; the fastest limit wins.
        assert_eq!(token_wait_ms(&[per(5, 1_000), None, per(1, 1_000)]), 200);
        // Bounded: never a busy loop, never longer than a minute.
        assert_eq!(token_wait_ms(&[per(1_000_000, 1_000)]), 10);
        assert_eq!(token_wait_ms(&[per(1, 86_400_000)]), 60_000);
    }
}
