//! How many tasks the fetcher leases ahead of free handler slots: fixed, or
//! adapting to the recent fetch rate ([`PrefetchReserve`]).

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// The adaptive prefetch keeps about this much work leased ahead.
const PREFETCH_WINDOW: Duration = Duration::from_millis(100);
/// Upper bound of the adaptive prefetch.
const PREFETCH_CAP: usize = 4096;
/// The adaptive prefetch's ceiling per handler slot, unless the broker
/// asks for less ([`Broker::prefetch_per_slot`](crate::store::broker::Broker::prefetch_per_slot)).
const PER_SLOT: usize = 16;
/// How often the fetch rate behind the adaptive prefetch is measured.
const RATE_EVERY: Duration = Duration::from_millis(250);

/// The prefetch asked for with [`WorkerBuilder::prefetch`](super::WorkerBuilder::prefetch).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Prefetch {
    /// The default: follow the fetch rate, about [`PREFETCH_WINDOW`] of
    /// work ahead, between `concurrency` and [`PER_SLOT`] × `concurrency`
    /// (or the broker's own ceiling per slot; at most [`PREFETCH_CAP`]).
    Adaptive,
    /// Always this many tasks ahead.
    Fixed(usize),
}

/// The bounds the prefetch moves between (equal for a fixed prefetch).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct PrefetchBounds {
    pub(crate) min: usize,
    pub(crate) max: usize,
}

impl PrefetchBounds {
    /// The bounds of `prefetch` for a worker running `concurrency`
    /// handlers, on a broker whose ceiling per slot is `per_slot` (`None`:
    /// [`PER_SLOT`]; a broker can lower the ceiling, never raise it).
    pub(crate) fn resolve(prefetch: Prefetch, concurrency: usize, per_slot: Option<usize>) -> Self {
        let per_slot = per_slot.map_or(PER_SLOT, |n| n.clamp(1, PER_SLOT));
        match prefetch {
            Prefetch::Adaptive => PrefetchBounds {
                min: concurrency,
                max: concurrency
                    .saturating_mul(per_slot)
                    .min(PREFETCH_CAP)
                    .max(concurrency),
            },
            Prefetch::Fixed(n) => PrefetchBounds { min: n, max: n },
        }
    }
}

/// Slots held back from fetching so that the prefetch in use is what the
/// recent fetch rate calls for: `(concurrency + prefetch_max)` slots exist,
/// and the fetcher holds `prefetch_max - target` of them itself.
pub(crate) struct PrefetchReserve {
    slots: Arc<Semaphore>,
    held: Option<OwnedSemaphorePermit>,
    min: usize,
    max: usize,
    since: Instant,
    fetched_then: u64,
}

impl PrefetchReserve {
    /// Start at the minimum prefetch, holding back what is free of the
    /// `max - min` slots above it.
    pub(crate) fn new(slots: &Arc<Semaphore>, bounds: PrefetchBounds, fetched: u64) -> Self {
        let PrefetchBounds { min, max } = bounds;
        let held = u32::try_from(max - min)
            .ok()
            .filter(|&n| n > 0)
            .and_then(|n| slots.clone().try_acquire_many_owned(n).ok());
        PrefetchReserve {
            slots: slots.clone(),
            held,
            min,
            max,
            since: Instant::now(),
            fetched_then: fetched,
        }
    }

    fn held(&self) -> usize {
        self.held.as_ref().map_or(0, |p| p.num_permits())
    }

    /// Re-measure the fetch rate (at most every [`RATE_EVERY`]) and move
    /// slots in or out of the reserve towards `prefetch_max - target`.
    /// Never waits: slots in use join the reserve as they come back.
    pub(crate) fn adjust(&mut self, fetched: u64) {
        self.adjust_at(fetched, Instant::now());
    }

    fn adjust_at(&mut self, fetched: u64, now: Instant) {
        if self.min == self.max {
            return;
        }
        let elapsed = now.saturating_duration_since(self.since);
        if elapsed < RATE_EVERY {
            return;
        }
        let rate = fetched.saturating_sub(self.fetched_then) as f64 / elapsed.as_secs_f64();
        self.since = now;
        self.fetched_then = fetched;
        let target = ((rate * PREFETCH_WINDOW.as_secs_f64()) as usize).clamp(self.min, self.max);
        let want = self.max - target;
        let held = self.held();
        if held > want {
            if let Some(p) = self.held.as_mut() {
                // Splitting fewer permits than held always succeeds.
                drop(p.split(held - want));
            }
        } else if held < want {
            let free = self.slots.available_permits().min(want - held);
            if let Some(extra) = u32::try_from(free)
                .ok()
                .filter(|&n| n > 0)
                .and_then(|n| self.slots.clone().try_acquire_many_owned(n).ok())
            {
                match self.held.as_mut() {
                    Some(p) => p.merge(extra),
                    None => self.held = Some(extra),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bounds(min: usize, max: usize) -> PrefetchBounds {
        PrefetchBounds { min, max }
    }

    #[test]
    fn the_adaptive_prefetch_is_bounded_by_concurrency_and_the_cap() {
        let adaptive = |c| PrefetchBounds::resolve(Prefetch::Adaptive, c, None);
        assert_eq!(adaptive(16), bounds(16, 256));
        assert_eq!(adaptive(1_000), bounds(1_000, 4_096));
        assert_eq!(adaptive(5_000), bounds(5_000, 5_000));
        assert_eq!(
            PrefetchBounds::resolve(Prefetch::Fixed(3), 16, None),
            bounds(3, 3)
        );
    }

    #[test]
    fn worker_memory_a_broker_can_lower_the_adaptive_prefetch_ceiling() {
        let on = |per_slot| PrefetchBounds::resolve(Prefetch::Adaptive, 64, Some(per_slot));
        assert_eq!(on(4), bounds(64, 256));
        assert_eq!(on(64), bounds(64, 1_024), "never above the worker's own");
        assert_eq!(on(0), bounds(64, 64), "at least concurrency");
        assert_eq!(
            PrefetchBounds::resolve(Prefetch::Fixed(500), 64, Some(4)),
            bounds(500, 500),
            "a fixed prefetch is the caller's"
        );
    }

    #[test]
    fn the_adaptive_prefetch_follows_the_fetch_rate_within_its_bounds() {
        // concurrency 4, prefetch 4..=64: 68 slots.
        let slots = Arc::new(Semaphore::new(4 + 64));
        let mut r = PrefetchReserve::new(&slots, bounds(4, 64), 0);
        let t0 = r.since;
        assert_eq!(r.held(), 60, "starts at the minimum prefetch");
        assert_eq!(slots.available_permits(), 8);

        // Too soon to measure: nothing moves.
        r.adjust_at(1_000_000, t0 + Duration::from_millis(100));
        assert_eq!(r.held(), 60);

        // 2,000 tasks in 500 ms = 4,000/s: 100 ms of work is 400, above the
        // maximum: every slot is released.
        r.adjust_at(2_000, t0 + Duration::from_millis(500));
        assert_eq!(r.held(), 0);
        assert_eq!(slots.available_permits(), 68);

        // 200/s: 20 tasks ahead, so 44 of the 64 go back into the reserve.
        r.adjust_at(2_100, t0 + Duration::from_millis(1_000));
        assert_eq!(r.held(), 44);

        // Nothing fetched: back to the minimum prefetch.
        r.adjust_at(2_100, t0 + Duration::from_millis(1_500));
        assert_eq!(r.held(), 60);
        drop(r);
        assert_eq!(slots.available_permits(), 68, "dropping returns every slot");

        // With 50 slots in use, the reserve takes only what is free now, and
        // the rest as it comes back, never waiting.
        let in_use = slots.clone().try_acquire_many_owned(50).unwrap();
        let mut r = PrefetchReserve::new(&slots, bounds(4, 64), 0);
        assert_eq!(r.held(), 0, "not enough free slots to hold back at start");
        let t0 = r.since;
        r.adjust_at(0, t0 + Duration::from_millis(300));
        assert_eq!(r.held(), 18, "the free ones");
        drop(in_use);
        r.adjust_at(0, t0 + Duration::from_millis(600));
        assert_eq!(r.held(), 60);
        assert_eq!(slots.available_permits(), 8);
    }

    #[test]
    fn a_fixed_prefetch_holds_nothing_back() {
        let slots = Arc::new(Semaphore::new(8 + 8));
        let mut r = PrefetchReserve::new(&slots, bounds(8, 8), 0);
        let t0 = Instant::now();
        r.adjust_at(0, t0 + Duration::from_secs(5));
        r.adjust_at(1_000_000, t0 + Duration::from_secs(10));
        assert_eq!(r.held(), 0);
        assert_eq!(slots.available_permits(), 16);
    }
}
