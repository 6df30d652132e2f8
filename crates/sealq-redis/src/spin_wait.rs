//! Spin-then-park: how a call that runs alone waits for its reply
//! ([`crate::RedisOptions::spin_wait`], the URL's `spin_us`).

use std::future::{Future, poll_fn};
use std::pin::pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::task::Poll;
use std::time::{Duration, Instant};

/// Spin-then-park waiting for replies.
///
/// On a virtual machine, a thread that parks while its call is in flight
/// puts its vCPU to sleep, and waking it when the reply lands costs more
/// than Redis takes to answer: on the 2-vCPU KVM guest of
/// docs/benchmarks.md, one connection's `PING` round trip runs at 13,000/s
/// when the client blocks in `recv` and at 38,000/s when it polls. So a
/// call that runs alone (no other call of this connection in flight)
/// keeps its runtime thread awake for up to `budget`: it yields to the
/// runtime's other tasks and lets the runtime poll its I/O driver without
/// blocking, then parks as usual once the budget is spent.
///
/// It costs CPU only while the process has nothing else to do, at most
/// `budget` per call, and only where it pays. Whether it pays changes with
/// the host: on an idle guest a parked thread wakes slowly and spinning
/// wins, but while other processes keep the vCPUs busy a wake-up is cheap
/// and a spinning client takes CPU that Redis needs (one-call enqueues ran
/// at 9,300/s spinning and 14,800/s parked on the same loaded guest; see
/// docs/benchmarks.md). So the lone calls keep two moving averages, of
/// the round trips that spun and of those that parked, and wait the way
/// that has been faster lately; every [`PROBE`]th lone call waits the
/// other way so both stay current. Spinning is skipped too while its
/// round trips exceed the budget, as over a real network. Calls that
/// overlap (a loaded worker) never spin; they keep the runtime busy anyway.
pub(crate) struct Spin {
    budget_ns: u64,
    /// Calls in flight on the connection.
    in_flight: AtomicUsize,
    /// Moving average of the round trips of lone calls that spun, ns (0:
    /// none yet).
    spun_ns: AtomicU64,
    /// Moving average of the round trips of lone calls that parked, ns (0:
    /// none yet).
    parked_ns: AtomicU64,
    /// Lone calls so far: every [`PROBE`]th waits the way the averages do
    /// not prefer.
    lone: AtomicU64,
}

/// See [`Spin::lone`].
const PROBE: u64 = 32;

impl Spin {
    pub(crate) fn new(budget: Duration) -> Spin {
        Spin {
            budget_ns: u64::try_from(budget.as_nanos()).unwrap_or(u64::MAX),
            in_flight: AtomicUsize::new(0),
            spun_ns: AtomicU64::new(0),
            parked_ns: AtomicU64::new(0),
            lone: AtomicU64::new(0),
        }
    }

    /// Whether a lone call should spin, given the recent round trips.
    fn worth_it(&self) -> bool {
        let probe = self.lone.fetch_add(1, Ordering::Relaxed) % PROBE == PROBE - 1;
        let spun = self.spun_ns.load(Ordering::Relaxed);
        let parked = self.parked_ns.load(Ordering::Relaxed);
        // A way not tried yet counts as worth trying; spinning first.
        let spin_faster = spun <= self.budget_ns && (parked == 0 || spun <= parked);
        spin_faster != probe
    }

    /// Fold one lone call's round trip into the moving average of the way
    /// it waited (1/8 weight).
    fn observe(&self, spun: bool, took_ns: u64) {
        let avg = if spun { &self.spun_ns } else { &self.parked_ns };
        let old = avg.load(Ordering::Relaxed);
        let new = if old == 0 {
            took_ns.max(1)
        } else {
            old - old / 8 + took_ns / 8
        };
        avg.store(new, Ordering::Relaxed);
    }

    /// Run `call`, spinning as described above.
    pub(crate) async fn wait<F: Future>(&self, call: F) -> F::Output {
        let alone = self.in_flight.fetch_add(1, Ordering::AcqRel) == 0;
        let _done = InFlight(&self.in_flight);
        if !alone || self.budget_ns == 0 {
            return call.await;
        }
        let start = Instant::now();
        let mut call = pin!(call);
        let spin = self.worth_it();
        let out = if spin {
            let deadline = start + Duration::from_nanos(self.budget_ns);
            loop {
                if let Poll::Ready(v) = poll_fn(|cx| Poll::Ready(call.as_mut().poll(cx))).await {
                    break v;
                }
                if Instant::now() >= deadline {
                    break call.await;
                }
                // Deferred until the runtime has polled its I/O driver
                // (without blocking): the reply is seen as soon as it lands.
                tokio::task::yield_now().await;
            }
        } else {
            call.await
        };
        self.observe(
            spin,
            u64::try_from(start.elapsed().as_nanos()).unwrap_or(u64::MAX),
        );
        out
    }
}

/// Counts a call out of [`Spin::in_flight`] when it ends or is dropped.
struct InFlight<'a>(&'a AtomicUsize);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::AtomicBool;
    use std::task::Waker;

    use super::*;

    /// A reply that lands after a while, like a connection's reply channel:
    /// the call's waker is stored, and woken once, when it lands.
    #[derive(Default)]
    struct Reply {
        done: AtomicBool,
        waker: std::sync::Mutex<Option<Waker>>,
        polls: AtomicUsize,
    }

    impl Reply {
        fn polls(&self) -> usize {
            self.polls.load(Ordering::Relaxed)
        }
    }

    /// A call waiting for its [`Reply`], counting its polls.
    struct Call(Arc<Reply>);

    impl Future for Call {
        type Output = u32;
        fn poll(self: std::pin::Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> Poll<u32> {
            let r = &self.0;
            r.polls.fetch_add(1, Ordering::Relaxed);
            *r.waker.lock().unwrap() = Some(cx.waker().clone());
            if r.done.load(Ordering::Acquire) {
                Poll::Ready(7)
            } else {
                Poll::Pending
            }
        }
    }

    /// A call whose reply lands after `ms`.
    fn call(ms: u64) -> (Call, Arc<Reply>) {
        let reply = Arc::new(Reply::default());
        let r = reply.clone();
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(ms));
            r.done.store(true, Ordering::Release);
            if let Some(w) = r.waker.lock().unwrap().take() {
                w.wake();
            }
        });
        (Call(reply.clone()), reply)
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_lone_call_polls_until_its_budget_is_spent_then_parks() {
        let spin = Spin::new(Duration::from_millis(5));
        let (c, reply) = call(30);
        assert_eq!(spin.wait(c).await, 7);
        // Spinning polled it many times in 5 ms; after that it waited
        // parked, polled again only when woken.
        assert!(reply.polls() > 50, "{}", reply.polls());
        assert_eq!(spin.in_flight.load(Ordering::Relaxed), 0);
        // The 30 ms round trip is over the budget: the next lone call parks.
        assert!(spin.spun_ns.load(Ordering::Relaxed) >= 30_000_000);
        let (c, reply) = call(10);
        assert_eq!(spin.wait(c).await, 7);
        assert!(reply.polls() <= 2, "{}", reply.polls());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn calls_do_not_spin_when_turned_off_or_overlapping() {
        let off = Spin::new(Duration::ZERO);
        let (c, reply) = call(10);
        assert_eq!(off.wait(c).await, 7);
        assert!(reply.polls() <= 2, "{}", reply.polls());

        let spin = Arc::new(Spin::new(Duration::from_millis(50)));
        let (first, reply1) = call(30);
        let (second, reply2) = call(20);
        let s = spin.clone();
        let a = tokio::spawn(async move { s.wait(first).await });
        while spin.in_flight.load(Ordering::Acquire) == 0 {
            tokio::task::yield_now().await;
        }
        let s = spin.clone();
        let b = tokio::spawn(async move { s.wait(second).await });
        assert_eq!((a.await.unwrap(), b.await.unwrap()), (7, 7));
        // The first was alone when it started and spun; the second overlapped it.
        assert!(reply1.polls() > 50, "{}", reply1.polls());
        assert!(reply2.polls() <= 2, "{}", reply2.polls());
        assert_eq!(spin.in_flight.load(Ordering::Relaxed), 0);
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_dropped_call_is_no_longer_in_flight() {
        let spin = Spin::new(Duration::from_millis(50));
        let (c, _reply) = call(1000);
        let r = tokio::time::timeout(Duration::from_millis(5), spin.wait(c)).await;
        assert!(r.is_err());
        assert_eq!(spin.in_flight.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn the_average_follows_round_trips_and_probes_keep_trying() {
        let spin = Spin::new(Duration::from_micros(200));
        spin.observe(true, 100_000);
        assert_eq!(spin.spun_ns.load(Ordering::Relaxed), 100_000);
        spin.observe(true, 900_000);
        assert_eq!(
            spin.spun_ns.load(Ordering::Relaxed),
            100_000 - 12_500 + 112_500
        );
        assert_eq!(spin.parked_ns.load(Ordering::Relaxed), 0, "apart");
        for _ in 0..40 {
            spin.observe(true, 1_000_000);
        }
        // Over the budget: only every PROBE-th lone call still spins.
        let spins = (0..PROBE * 4).filter(|_| spin.worth_it()).count();
        assert_eq!(spins, 4);
        for _ in 0..40 {
            spin.observe(true, 80_000);
        }
        assert!((0..10).all(|_| spin.worth_it()));
    }

    #[test]
    fn lone_calls_wait_the_way_that_has_been_faster_lately() {
        let spin = Spin::new(Duration::from_micros(200));
        assert!(spin.worth_it(), "spinning is tried first");
        // Parked calls came back sooner (a loaded host wakes threads
        // fast): park, but every PROBE-th call still spins.
        for _ in 0..40 {
            spin.observe(true, 110_000);
            spin.observe(false, 70_000);
        }
        let spins = (0..PROBE * 4).filter(|_| spin.worth_it()).count();
        assert_eq!(spins, 4, "only the probes spin");
        // Spinning got faster again (an idle host): spin, every PROBE-th
        // call parks.
        for _ in 0..40 {
            spin.observe(true, 40_000);
        }
        let spins = (0..PROBE * 4).filter(|_| spin.worth_it()).count();
        assert_eq!(spins, PROBE as usize * 4 - 4, "only the probes park");
    }
}
