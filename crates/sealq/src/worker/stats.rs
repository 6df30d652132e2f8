//! A worker's counters: [`WorkerStats`] live, [`WorkerReport`] a copy.

use std::sync::atomic::{AtomicU64, Ordering};

/// Counters of one worker, readable while it runs.
#[derive(Debug, Default)]
pub struct WorkerStats {
    /// Tasks leased from the broker.
    pub fetched: AtomicU64,
    /// Handlers that returned success.
    pub succeeded: AtomicU64,
    /// Failed attempts scheduled for retry.
    pub retried: AtomicU64,
    /// Tasks archived (any reason).
    pub archived: AtomicU64,
    /// Tasks archived because their envelope failed to open, expired or replayed.
    pub integrity_failures: AtomicU64,
    /// Tasks given back unstarted or unfinished at shutdown.
    pub requeued: AtomicU64,
    /// Acks the broker refused because the lease was lost.
    pub leases_lost: AtomicU64,
    /// Tasks whose orphaned claim-check blobs the sweep deleted
    /// ([`WorkerBuilder::sweep_blobs`](super::WorkerBuilder::sweep_blobs)).
    pub blobs_swept: AtomicU64,
}

/// A plain copy of [`WorkerStats`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct WorkerReport {
    /// Tasks leased.
    pub fetched: u64,
    /// Successes.
    pub succeeded: u64,
    /// Retries scheduled.
    pub retried: u64,
    /// Archived.
    pub archived: u64,
    /// Integrity, expiry and replay refusals (also counted in `archived`).
    pub integrity_failures: u64,
    /// Given back at shutdown.
    pub requeued: u64,
    /// Lost leases.
    pub leases_lost: u64,
    /// Tasks whose orphaned blobs were swept.
    pub blobs_swept: u64,
}

impl WorkerStats {
    /// A snapshot.
    pub fn report(&self) -> WorkerReport {
        let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
        WorkerReport {
            fetched: g(&self.fetched),
            succeeded: g(&self.succeeded),
            retried: g(&self.retried),
            archived: g(&self.archived),
            integrity_failures: g(&self.integrity_failures),
            requeued: g(&self.requeued),
            leases_lost: g(&self.leases_lost),
            blobs_swept: g(&self.blobs_swept),
        }
    }
}
