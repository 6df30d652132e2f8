//! Cron schedules: a [`Scheduler`] enqueues a task at every tick of each of
//! its schedules.
//!
//! Run one in as many processes as you like: each tick is enqueued once,
//! because the task of a tick has an id derived from the schedule's name
//! and the tick's time ([`tick_id`]), and the broker refuses an id it holds
//! or remembers (`Error::IdExists`; completed ids are remembered for the
//! broker's replay horizon, 7 days by default). The other processes count
//! the tick as `already`.
//!
//! Ticks are computed in the scheduler's time zone (UTC unless
//! [`SchedulerBuilder::time_zone`]), DST included, by `croner` ([`CRON_FIELDS`]:
//! five fields, six with seconds first, or seven with a year last; `@hourly`
//! and the like). Ticks missed while no
//! scheduler ran are not made up: a scheduler that finds several ticks due
//! (it started late, or was paused) enqueues the latest and counts the
//! others as `missed`.
//!
//! ```no_run
//! # async fn f(client: sealq::Client) -> sealq::Result<()> {
//! use sealq::{EnqueueOptions, RawTask, Scheduler};
//! let nightly = RawTask::from_json("reports.nightly", &serde_json::json!({}), EnqueueOptions::new())?;
//! let scheduler = Scheduler::builder(client)
//!     .time_zone("Europe/Paris")?
//!     .add("nightly-report", "0 2 * * *", nightly)?
//!     .build()?;
//! let handle = scheduler.spawn();
//! // … at shutdown:
//! handle.shutdown().await;
//! # Ok(()) }
//! ```

use std::str::FromStr as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use sha2::{Digest as _, Sha256};
use tokio_util::sync::CancellationToken;
use tracing::warn;

use crate::client::{Client, RawTask};
use crate::error::{Error, Result};
use crate::model::id::TaskId;

/// The id of the task schedule `name` enqueues for the tick at `tick_ms`
/// (Unix ms): a UUID v7 whose time is the tick and whose other 74 bits come
/// from `SHA-256("sealq-cron-tick-v1" ‖ len(name) as u32 BE ‖ name ‖ tick_ms
/// as i64 BE)`. Every scheduler computes the same id for the same tick, so
/// the broker stores it once; the id still sorts by time like any other.
pub fn tick_id(name: &str, tick_ms: i64) -> TaskId {
    let mut h = Sha256::new();
    h.update(b"sealq-cron-tick-v1");
    h.update((name.len() as u32).to_be_bytes());
    h.update(name.as_bytes());
    h.update(tick_ms.to_be_bytes());
    let h = h.finalize();
    let ms = (tick_ms.max(0) as u64).to_be_bytes();
    let mut b = [0u8; 16];
    b[..6].copy_from_slice(&ms[2..8]);
    b[6] = 0x70 | (h[0] & 0x0f);
    b[7] = h[1];
    b[8] = 0x80 | (h[2] & 0x3f);
    b[9..16].copy_from_slice(&h[3..10]);
    TaskId(uuid::Uuid::from_bytes(b))
}

/// What a cron pattern may be, as every cron error and help text says it.
pub const CRON_FIELDS: &str = "five fields (minute hour day-of-month month day-of-week), \
     six with seconds first, or seven with seconds first and a year last; or @hourly, @daily, …";

/// `pattern` parsed, or croner's reason followed by [`CRON_FIELDS`].
fn parse_cron(pattern: &str) -> std::result::Result<croner::Cron, String> {
    croner::Cron::from_str(pattern).map_err(|e| {
        let reason = e.to_string();
        format!(
            "{}; a pattern has {CRON_FIELDS}",
            reason.trim_end_matches('.')
        )
    })
}

/// The next `count` ticks of cron `pattern` after `from_ms` (Unix ms), in
/// the IANA time zone `time_zone` (UTC when `None`), as Unix ms: to check a
/// pattern before scheduling with it (`sealq cron next`).
pub fn upcoming(
    pattern: &str,
    time_zone: Option<&str>,
    from_ms: i64,
    count: usize,
) -> Result<Vec<i64>> {
    let cron = parse_cron(pattern).map_err(|e| Error::InvalidArgument {
        what: "cron pattern",
        reason: format!("`{pattern}`: {e}"),
    })?;
    let tz = match time_zone {
        Some(name) => jiff::tz::TimeZone::get(name).map_err(|e| Error::InvalidArgument {
            what: "time zone",
            reason: format!("`{name}`: {e}"),
        })?,
        None => jiff::tz::TimeZone::UTC,
    };
    let mut out = Vec::with_capacity(count);
    let mut at = from_ms;
    while out.len() < count {
        match next_tick(&cron, &tz, at, false) {
            Some(t) => {
                out.push(t);
                at = t;
            }
            None => break,
        }
    }
    Ok(out)
}

/// One schedule: a name, a cron pattern and the task to enqueue.
struct Schedule {
    name: String,
    cron: croner::Cron,
    task: RawTask,
    /// The next tick to enqueue, Unix ms (`None` until the first run).
    next_ms: Option<i64>,
}

/// Counters of a scheduler.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct SchedulerStats {
    /// Ticks this scheduler enqueued.
    pub enqueued: u64,
    /// Ticks another scheduler had enqueued already.
    pub already: u64,
    /// Ticks not enqueued because a later one was due too.
    pub missed: u64,
    /// Enqueue attempts that failed: retried while the broker is unavailable
    /// or the queue full, the tick skipped when refused for good (the
    /// payload policy, a bad option).
    pub failures: u64,
}

#[derive(Default)]
struct Counters {
    enqueued: AtomicU64,
    already: AtomicU64,
    missed: AtomicU64,
    failures: AtomicU64,
}

impl Counters {
    fn snapshot(&self) -> SchedulerStats {
        SchedulerStats {
            enqueued: self.enqueued.load(Ordering::Relaxed),
            already: self.already.load(Ordering::Relaxed),
            missed: self.missed.load(Ordering::Relaxed),
            failures: self.failures.load(Ordering::Relaxed),
        }
    }
}

/// Builds a [`Scheduler`].
pub struct SchedulerBuilder {
    client: Client,
    tz: jiff::tz::TimeZone,
    schedules: Vec<Schedule>,
}

impl std::fmt::Debug for SchedulerBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SchedulerBuilder")
            .field("schedules", &self.schedules.len())
            .finish_non_exhaustive()
    }
}

impl SchedulerBuilder {
    /// Compute ticks in this IANA time zone (e.g. `Europe/Paris`; default UTC).
    pub fn time_zone(mut self, name: &str) -> Result<Self> {
        self.tz = jiff::tz::TimeZone::get(name).map_err(|e| Error::InvalidArgument {
            what: "time zone",
            reason: format!("`{name}`: {e}"),
        })?;
        Ok(self)
    }

    /// Enqueue `task` at every tick of `cron` ([`CRON_FIELDS`]), under the schedule `name`, which must be unique in
    /// this scheduler and the same in every process running it (it names
    /// the ticks' task ids). The task's own options apply (queue, retries,
    /// not-after …); its id is the tick's.
    pub fn add(mut self, name: &str, cron: &str, task: RawTask) -> Result<Self> {
        if name.is_empty() || self.schedules.iter().any(|s| s.name == name) {
            return Err(Error::InvalidArgument {
                what: "schedule name",
                reason: format!("`{name}` is empty or already used in this scheduler"),
            });
        }
        let cron = parse_cron(cron).map_err(|e| Error::InvalidArgument {
            what: "cron pattern",
            reason: format!("`{cron}` of schedule `{name}`: {e}"),
        })?;
        self.schedules.push(Schedule {
            name: name.to_owned(),
            cron,
            task,
            next_ms: None,
        });
        Ok(self)
    }

    /// The scheduler; fails without any schedule.
    pub fn build(self) -> Result<Scheduler> {
        if self.schedules.is_empty() {
            return Err(Error::InvalidArgument {
                what: "scheduler",
                reason: "no schedule added".into(),
            });
        }
        Ok(Scheduler {
            client: self.client,
            tz: self.tz,
            schedules: self.schedules,
            counters: Arc::default(),
        })
    }
}

/// Enqueues the ticks of cron schedules (see the [module docs](self)).
pub struct Scheduler {
    client: Client,
    tz: jiff::tz::TimeZone,
    schedules: Vec<Schedule>,
    counters: Arc<Counters>,
}

impl std::fmt::Debug for Scheduler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Scheduler")
            .field(
                "schedules",
                &self.schedules.iter().map(|s| &s.name).collect::<Vec<_>>(),
            )
            .finish_non_exhaustive()
    }
}

/// The first tick of `cron` after `after_ms` (strictly after unless
/// `inclusive`), in `tz`; `None` when there is none or the time is out of
/// range.
fn next_tick(
    cron: &croner::Cron,
    tz: &jiff::tz::TimeZone,
    after_ms: i64,
    inclusive: bool,
) -> Option<i64> {
    let at = jiff::Timestamp::from_millisecond(after_ms)
        .ok()?
        .to_zoned(tz.clone());
    let next = cron.find_next_occurrence(&at, inclusive).ok()?;
    Some(next.timestamp().as_millisecond())
}

impl Scheduler {
    /// Start building a scheduler that enqueues through `client` (its
    /// keyring, policy, audit log and broker).
    pub fn builder(client: Client) -> SchedulerBuilder {
        SchedulerBuilder {
            client,
            tz: jiff::tz::TimeZone::UTC,
            schedules: Vec::new(),
        }
    }

    /// Counters so far.
    pub fn stats(&self) -> SchedulerStats {
        self.counters.snapshot()
    }

    /// Enqueue every tick due at `now_ms`: for each schedule, the latest
    /// of its ticks in (last run, `now_ms`] (the first run starts at
    /// `now_ms`, so a tick exactly then is due). Returns the earliest tick
    /// still ahead. A failed enqueue is counted and tried again at the next
    /// run while the broker is unavailable or the queue full; a tick refused
    /// for good is skipped. [`Scheduler::spawn`] calls this at every tick.
    pub async fn run_due(&mut self, now_ms: i64) -> Option<i64> {
        let c = self.counters.clone();
        for s in &mut self.schedules {
            let first = match s.next_ms {
                Some(t) => t,
                None => match next_tick(&s.cron, &self.tz, now_ms, true) {
                    Some(t) => t,
                    None => continue,
                },
            };
            s.next_ms = Some(first);
            if first > now_ms {
                continue;
            }
            // The latest due tick; earlier due ones are missed.
            let mut tick = first;
            while let Some(t) = next_tick(&s.cron, &self.tz, tick, false).filter(|t| *t <= now_ms) {
                c.missed.fetch_add(1, Ordering::Relaxed);
                tick = t;
            }
            let mut task = s.task.clone();
            task.options.id = Some(tick_id(&s.name, tick));
            match self.client.enqueue_raw(task).await {
                Ok(_) => {
                    c.enqueued.fetch_add(1, Ordering::Relaxed);
                }
                Err(Error::IdExists(_)) => {
                    c.already.fetch_add(1, Ordering::Relaxed);
                }
                // The broker unavailable, or the queue full for now: the
                // next run tries this tick again (until a later one is due).
                Err(e @ (Error::Broker(_) | Error::QueueFull { .. })) => {
                    c.failures.fetch_add(1, Ordering::Relaxed);
                    warn!(schedule = %s.name, tick, error = %e, "could not enqueue a scheduled tick; trying again");
                    s.next_ms = Some(tick);
                    continue;
                }
                // Refused for good (the payload policy, a bad option): this
                // tick is skipped, the next one tried.
                Err(e) => {
                    c.failures.fetch_add(1, Ordering::Relaxed);
                    warn!(schedule = %s.name, tick, error = %e, "a scheduled tick was refused; skipping it");
                }
            }
            s.next_ms = next_tick(&s.cron, &self.tz, tick, false);
        }
        self.schedules.iter().filter_map(|s| s.next_ms).min()
    }

    /// Run the schedules on a tokio task until [`SchedulerHandle::shutdown`].
    pub fn spawn(mut self) -> SchedulerHandle {
        let stop = CancellationToken::new();
        let counters = self.counters.clone();
        let token = stop.clone();
        let task = tokio::spawn(async move {
            loop {
                let now = self.client.now_ms();
                let next = self.run_due(now).await;
                let failed = self
                    .schedules
                    .iter()
                    .any(|s| s.next_ms.is_some_and(|t| t <= now));
                let wait = match next {
                    // A tick to retry: soon, not in a tight loop.
                    _ if failed => Duration::from_secs(1),
                    Some(t) => Duration::from_millis((t - now).clamp(1, 3_600_000) as u64),
                    None => Duration::from_secs(3600),
                };
                tokio::select! {
                    _ = token.cancelled() => return,
                    _ = tokio::time::sleep(wait) => {}
                }
            }
        });
        SchedulerHandle {
            stop,
            counters,
            task,
        }
    }
}

/// A running [`Scheduler`].
#[derive(Debug)]
pub struct SchedulerHandle {
    stop: CancellationToken,
    counters: Arc<Counters>,
    task: tokio::task::JoinHandle<()>,
}

impl std::fmt::Debug for Counters {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.snapshot().fmt(f)
    }
}

impl SchedulerHandle {
    /// Counters so far.
    pub fn stats(&self) -> SchedulerStats {
        self.counters.snapshot()
    }

    /// Stop scheduling (a tick being enqueued finishes first) and return the counters.
    pub async fn shutdown(self) -> SchedulerStats {
        self.stop.cancel();
        let _ = self.task.await;
        self.counters.snapshot()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tick_ids_are_deterministic_time_ordered_v7_and_distinct() {
        let a = tick_id("nightly", 1_800_000_000_000);
        assert_eq!(a, tick_id("nightly", 1_800_000_000_000));
        assert_ne!(a, tick_id("nightly", 1_800_000_060_000));
        assert_ne!(a, tick_id("hourly", 1_800_000_000_000));
        assert_eq!(a.0.get_version_num(), 7);
        assert_eq!(a.0.get_variant(), uuid::Variant::RFC4122);
        let (secs, _) = a.0.get_timestamp().expect("a v7 timestamp").to_unix();
        assert_eq!(secs, 1_800_000_000);
        assert!(
            tick_id("z", 1_000) < tick_id("a", 2_000),
            "ids sort by tick"
        );
    }

    #[test]
    fn upcoming_lists_ticks_and_names_bad_input() {
        let t = jiff::Timestamp::from_str("2026-01-10T12:00:00Z")
            .unwrap()
            .as_millisecond();
        let ticks = upcoming("0 2 * * *", Some("Europe/Paris"), t, 3).unwrap();
        assert_eq!(ticks.len(), 3);
        assert_eq!(ticks[1] - ticks[0], 86_400_000);
        assert!(
            upcoming("0 2 * *", None, t, 1)
                .unwrap_err()
                .to_string()
                .contains("0 2 * *")
        );
        assert!(
            upcoming("@daily", Some("Nowhere/None"), t, 1)
                .unwrap_err()
                .to_string()
                .contains("Nowhere/None")
        );
    }

    #[test]
    fn ticks_follow_the_time_zone_and_dst() {
        let cron = croner::Cron::from_str("0 2 * * *").unwrap();
        let paris = jiff::tz::TimeZone::get("Europe/Paris").unwrap();
        // 2026-03-28 12:00 UTC: the next 02:00 in Paris is on the 29th,
        // the night clocks go forward (02:00 does not exist: croner moves on).
        let t = jiff::Timestamp::from_str("2026-03-28T12:00:00Z")
            .unwrap()
            .as_millisecond();
        let next = next_tick(&cron, &paris, t, false).unwrap();
        let z = jiff::Timestamp::from_millisecond(next)
            .unwrap()
            .to_zoned(paris.clone());
        assert!(z.date() >= jiff::civil::date(2026, 3, 29), "{z}");
        // In winter Paris is UTC+1: its 02:00 is 01:00 UTC.
        let jan = jiff::Timestamp::from_str("2026-01-10T12:00:00Z")
            .unwrap()
            .as_millisecond();
        let next = next_tick(&cron, &paris, jan, false).unwrap();
        assert_eq!(
            jiff::Timestamp::from_millisecond(next).unwrap().to_string(),
            "2026-01-11T01:00:00Z"
        );
        let utc = next_tick(&cron, &jiff::tz::TimeZone::UTC, t, false).unwrap();
        assert_eq!(
            jiff::Timestamp::from_millisecond(utc).unwrap().to_string(),
            "2026-03-29T02:00:00Z"
        );
    }
}
