//! The fetch loop: lease tasks in batches as slots free up, and start one
//! [`process`] task per leased task.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tracing::{Instrument as _, warn};

use super::execute::process;
use super::prefetch::PrefetchReserve;
use super::priority::fetch_order;
use super::runtime::{RunState, WorkerState, error_backoff};
use crate::store::broker::{Ack, DequeueRequest, Outcome};

/// How long fetching waits for a lagging audit log before it says so.
const AUDIT_STALL_WARNING: Duration = Duration::from_secs(5);

/// Lease tasks until the run stops fetching. Each task takes one of
/// `lease_slots` (`concurrency + prefetch_max`), kept until its ack is
/// queued; the [`PrefetchReserve`] holds back the slots the current fetch
/// rate does not call for.
pub(crate) async fn fetch_loop(
    state: Arc<WorkerState>,
    run: Arc<RunState>,
    lease_slots: Arc<Semaphore>,
) {
    let cfg = &state.config;
    let mut failures = 0u32;
    let fetched = || state.stats.fetched.load(Ordering::Relaxed);
    let mut reserve = PrefetchReserve::new(&lease_slots, state.prefetch, fetched());
    loop {
        reserve.adjust(fetched());
        // An audit log that cannot keep up slows fetching down rather than
        // holding ever more records in memory.
        if let Some(a) = &cfg.audit {
            let waited = tokio::select! {
                biased;
                _ = run.stop_fetching.cancelled() => return,
                r = tokio::time::timeout(AUDIT_STALL_WARNING, a.wait_for_room()) => r,
            };
            if waited.is_err() {
                warn!(
                    queued = a.queued(),
                    "the audit log has not caught up for 5 s (its sink is slow or failing); \
                     fetching waits for it"
                );
                tokio::select! {
                    biased;
                    _ = run.stop_fetching.cancelled() => return,
                    _ = a.wait_for_room() => {}
                }
            }
        }
        let mut permit: OwnedSemaphorePermit = tokio::select! {
            biased;
            _ = run.stop_fetching.cancelled() => return,
            p = lease_slots.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => return },
        };
        let more = lease_slots.available_permits();
        if more > 0
            && let Ok(extra) = lease_slots.clone().try_acquire_many_owned(more as u32)
        {
            permit.merge(extra);
        }
        let order = fetch_order(&cfg.queues, cfg.priority, rand::random::<f64>);
        let request = DequeueRequest {
            queues: order,
            max: permit.num_permits(),
            lease: cfg.lease,
            worker: cfg.id.clone(),
        };
        let span = crate::store::spans::lease(&request);
        let leased = state
            .broker
            .dequeue(&request)
            .instrument(span.clone())
            .await;
        if let Ok(tasks) = &leased {
            crate::store::spans::leased(&span, tasks.len());
        }
        match leased {
            Ok(tasks) if tasks.is_empty() => {
                failures = 0;
                drop(permit);
                // Nothing ready: sleep until the broker signals work (or the
                // maintenance interval passes, for scheduled tasks). Not a poll,
                // except under a rate limit: then no longer than a token takes.
                let wait = match state.token_wait_ms.load(Ordering::Relaxed) {
                    0 => cfg.maintenance_interval,
                    ms => Duration::from_millis(ms).min(cfg.maintenance_interval),
                };
                tokio::select! {
                    _ = run.stop_fetching.cancelled() => return,
                    r = state.broker.wait_for_work(&state.queue_names, wait) => {
                        if let Err(e) = r {
                            crate::metrics::record::broker_error("wait_for_work", &e);
                            warn!(error = %e, "waiting for work failed; retrying");
                            tokio::time::sleep(error_backoff(3)).await;
                        }
                    }
                }
            }
            Ok(tasks) => {
                failures = 0;
                state
                    .stats
                    .fetched
                    .fetch_add(tasks.len() as u64, Ordering::Relaxed);
                if let Some(a) = &cfg.audit {
                    a.on_leased_batch(&cfg.id, &tasks);
                }
                for task in tasks {
                    // Invariant: the broker returns at most `max` tasks, and
                    // the permit holds `max`, so a split of 1 always succeeds.
                    let slot = match permit.split(1) {
                        Some(s) => s,
                        None => {
                            warn!(
                                "broker returned more tasks than requested; returning the excess"
                            );
                            let _ = run.ack_queue.send((
                                Ack {
                                    lease: task.lease,
                                    outcome: Outcome::Requeue,
                                },
                                task.record.attempts,
                            ));
                            continue;
                        }
                    };
                    let cancel = run.hard_shutdown.child_token();
                    state
                        .held_leases()
                        .insert(task.record.id, (task.lease, cancel.clone()));
                    tokio::spawn(process(state.clone(), run.clone(), task, slot, cancel));
                }
            }
            Err(e) => {
                drop(permit);
                crate::metrics::record::broker_error("dequeue", &e);
                warn!(error = %e, "dequeue failed; retrying");
                failures += 1;
                tokio::select! {
                    _ = run.stop_fetching.cancelled() => return,
                    _ = tokio::time::sleep(error_backoff(failures)) => {}
                }
            }
        }
    }
}
