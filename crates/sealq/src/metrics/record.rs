//! The recording calls the rest of the crate makes: one function per event,
//! so every place that counts an event uses the same name and labels.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use ::metrics::{Counter, Histogram};

use super::labels::{QUEUES, TASK_TYPES};
use super::names;

/// The per-attempt metrics of one queue and task type, registered once:
/// recording through a handle is an atomic add, where the macros would
/// build and hash a key per call (several per task).
struct TaskMetrics {
    started: Counter,
    succeeded: Counter,
    failed: Counter,
    retried: Counter,
    requeued: Counter,
    start_delay: Histogram,
    enqueue_to_start: Histogram,
    duration: Histogram,
}

/// Handles by (queue, task type) label values: bounded like the labels.
type Handles = BTreeMap<(Arc<str>, Arc<str>), Arc<TaskMetrics>>;
static HANDLES: RwLock<Handles> = RwLock::new(BTreeMap::new());

/// Bumped when the handles are forgotten: a thread's cache of them
/// ([`RECENT`]) made before is dropped on its next use.
static GENERATION: AtomicU64 = AtomicU64::new(0);

/// Entries a thread's cache keeps (a worker runs a few queues and types;
/// past this, the oldest entry makes room).
const RECENT_MAX: usize = 8;

/// One thread's most recently used handles, by the queue and task type as
/// given (before the labels' cap).
struct Recent {
    generation: u64,
    next: usize,
    entries: Vec<(Box<str>, Box<str>, Arc<TaskMetrics>)>,
}

thread_local! {
    /// Found here, a task's handles cost no shared write: the shared map's
    /// lock and the label sets' locks, and the handles' reference count,
    /// are written by every read, and worker threads recording several
    /// events per task would pass those cache lines back and forth.
    static RECENT: RefCell<Recent> = const {
        RefCell::new(Recent { generation: 0, next: 0, entries: Vec::new() })
    };
}

/// Run `f` with the handles of `queue` and `kind`, registered with the
/// recorder on first use.
fn with_task(queue: &str, kind: &str, f: impl FnOnce(&TaskMetrics)) {
    let generation = GENERATION.load(Ordering::Acquire);
    RECENT.with(|recent| {
        let mut recent = recent.borrow_mut();
        if recent.generation != generation {
            recent.entries.clear();
            recent.next = 0;
            recent.generation = generation;
        }
        if let Some((_, _, m)) = recent
            .entries
            .iter()
            .find(|(q, t, _)| &**q == queue && &**t == kind)
        {
            return f(m);
        }
        let m = task(queue, kind);
        f(&m);
        let entry = (Box::from(queue), Box::from(kind), m);
        if recent.entries.len() < RECENT_MAX {
            recent.entries.push(entry);
        } else {
            let at = recent.next;
            recent.entries[at] = entry;
            recent.next = (at + 1) % RECENT_MAX;
        }
    });
}

/// The handles of `queue` and `kind` from the shared map, registered with
/// the recorder on first use.
fn task(queue: &str, kind: &str) -> Arc<TaskMetrics> {
    let key = (QUEUES.get(queue), TASK_TYPES.get(kind));
    // The map holds plain values; a poisoned lock is still consistent.
    if let Some(m) = HANDLES.read().unwrap_or_else(|p| p.into_inner()).get(&key) {
        return m.clone();
    }
    let (q, t) = (key.0.clone(), key.1.clone());
    let labels = [("queue", q), ("task_type", t)];
    let m = Arc::new(TaskMetrics {
        started: ::metrics::counter!(names::TASKS_STARTED, &labels),
        succeeded: ::metrics::counter!(names::TASKS_SUCCEEDED, &labels),
        failed: ::metrics::counter!(names::TASKS_FAILED, &labels),
        retried: ::metrics::counter!(names::TASKS_RETRIED, &labels),
        requeued: ::metrics::counter!(names::TASKS_REQUEUED, &labels),
        start_delay: ::metrics::histogram!(names::START_DELAY, &labels),
        enqueue_to_start: ::metrics::histogram!(names::ENQUEUE_TO_START, &labels),
        duration: ::metrics::histogram!(names::TASK_DURATION, &labels),
    });
    HANDLES
        .write()
        .unwrap_or_else(|p| p.into_inner())
        .entry(key)
        .or_insert(m)
        .clone()
}

/// Forget the registered handles: a recorder installed now gets new ones
/// (handles registered before it went to the no-op recorder).
#[cfg(feature = "prometheus")]
pub(crate) fn forget_handles() {
    let mut handles = HANDLES.write().unwrap_or_else(|p| p.into_inner());
    handles.clear();
    GENERATION.fetch_add(1, Ordering::Release);
}

/// `queue` and `task_type` label values, bounded.
fn qt(queue: &str, kind: &str) -> [(&'static str, std::sync::Arc<str>); 2] {
    [
        ("queue", QUEUES.get(queue)),
        ("task_type", TASK_TYPES.get(kind)),
    ]
}

/// `n` tasks of `kind` stored in `queue`.
pub(crate) fn enqueued(queue: &str, kind: &str, n: u64) {
    let [q, t] = qt(queue, kind);
    ::metrics::counter!(names::TASKS_ENQUEUED, q.0 => q.1, t.0 => t.1).increment(n);
}

/// A handler call started: counts it, and records how long after its due
/// time (`late`) and, for a first attempt, after its enqueue (`waited`).
pub(crate) fn started(queue: &str, kind: &str, late: Duration, waited: Option<Duration>) {
    with_task(queue, kind, |m| {
        m.started.increment(1);
        m.start_delay.record(late.as_secs_f64());
        if let Some(waited) = waited {
            m.enqueue_to_start.record(waited.as_secs_f64());
        }
    });
}

/// A handler call ended after `took`.
pub(crate) fn handler_duration(queue: &str, kind: &str, took: Duration) {
    with_task(queue, kind, |m| m.duration.record(took.as_secs_f64()));
}

/// An attempt succeeded.
pub(crate) fn succeeded(queue: &str, kind: &str) {
    with_task(queue, kind, |m| m.succeeded.increment(1));
}

/// An attempt failed (error, panic, timeout), whatever follows.
pub(crate) fn failed(queue: &str, kind: &str) {
    with_task(queue, kind, |m| m.failed.increment(1));
}

/// A failed attempt was scheduled to run again.
pub(crate) fn retried(queue: &str, kind: &str) {
    with_task(queue, kind, |m| m.retried.increment(1));
}

/// A worker archived a task for `reason` (an `ArchiveReason`'s name; a
/// handler can make up its own, so they are bounded too).
pub(crate) fn archived(queue: &str, kind: &str, reason: &str) {
    static REASONS: super::labels::Bounded = super::labels::Bounded::new("reason", 64);
    let [q, t] = qt(queue, kind);
    ::metrics::counter!(names::TASKS_ARCHIVED, q.0 => q.1, t.0 => t.1, "reason" => REASONS.get(reason))
        .increment(1);
}

/// A task was held, not run, for `reason` (`unknown_key`, `before_start`).
pub(crate) fn held(queue: &str, kind: &str, reason: &'static str) {
    let [q, t] = qt(queue, kind);
    ::metrics::counter!(names::TASKS_HELD, q.0 => q.1, t.0 => t.1, "reason" => reason).increment(1);
}

/// A task of a type no handler takes was leased (and will be retried or
/// archived `unknown_type`).
pub(crate) fn unhandled_type(queue: &str, kind: &str) {
    let [q, t] = qt(queue, kind);
    ::metrics::counter!(names::UNHANDLED_TYPE, q.0 => q.1, t.0 => t.1).increment(1);
}

/// A leased task was given back at shutdown.
pub(crate) fn requeued(queue: &str, kind: &str) {
    with_task(queue, kind, |m| m.requeued.increment(1));
}

/// A task for `queue` was refused by policy `rule` (a scanner rule,
/// `size_budget`, `decode` or `max_depth`).
pub(crate) fn policy_rejected(queue: &str, rule: &str) {
    // Rule names come from a fixed set in the crate; bound them anyway.
    static RULES: super::labels::Bounded = super::labels::Bounded::new("rule", 64);
    ::metrics::counter!(names::POLICY_REJECTIONS, "queue" => QUEUES.get(queue), "rule" => RULES.get(rule))
        .increment(1);
}

/// A payload over its queue's budget was let through (warn mode).
pub(crate) fn over_budget(queue: &str) {
    ::metrics::counter!(names::PAYLOAD_OVER_BUDGET, "queue" => QUEUES.get(queue)).increment(1);
}

/// Expired leases recovered: `requeued` back for another attempt,
/// `archived` with their retries used up.
pub(crate) fn lease_expirations(requeued: u64, archived: u64) {
    if requeued > 0 {
        ::metrics::counter!(names::LEASE_EXPIRATIONS, "outcome" => "retry").increment(requeued);
    }
    if archived > 0 {
        ::metrics::counter!(names::LEASE_EXPIRATIONS, "outcome" => "archived").increment(archived);
    }
}

/// A broker call `op` failed with `error`.
pub(crate) fn broker_error(op: &'static str, error: &crate::error::BrokerError) {
    ::metrics::counter!(names::BROKER_ERRORS, "op" => op, "kind" => kind_label(error.kind))
        .increment(1);
}

fn kind_label(kind: crate::error::BrokerErrorKind) -> &'static str {
    use crate::error::BrokerErrorKind as K;
    match kind {
        K::Unavailable => "unavailable",
        K::Corrupt => "corrupt",
        K::PermissionDenied => "permission_denied",
        K::Config => "config",
        _ => "other",
    }
}

/// One queue's sampled counts.
pub(crate) fn queue_depth(queue: &str, state: &'static str, n: u64) {
    ::metrics::gauge!(names::QUEUE_DEPTH, "queue" => QUEUES.get(queue), "state" => state)
        .set(n as f64);
}

/// Whether a queue is paused, sampled.
pub(crate) fn queue_paused(queue: &str, paused: bool) {
    ::metrics::gauge!(names::QUEUE_PAUSED, "queue" => QUEUES.get(queue)).set(if paused {
        1.0
    } else {
        0.0
    });
}

/// The audit records held in memory, sampled.
pub(crate) fn audit_backlog(n: u64) {
    ::metrics::gauge!(names::AUDIT_BACKLOG).set(n as f64);
}

/// An audit append failed.
pub(crate) fn audit_append_failed() {
    ::metrics::counter!(names::AUDIT_APPEND_FAILURES).increment(1);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cached(queue: &str, kind: &str) -> *const TaskMetrics {
        let mut at = std::ptr::null();
        with_task(queue, kind, |m| at = m as *const TaskMetrics);
        at
    }

    #[test]
    fn a_threads_cache_serves_the_shared_handles_until_they_are_forgotten() {
        let (q, t) = ("record-cache-test", "kind");
        let first = cached(q, t);
        let shared = task(q, t);
        assert_eq!(
            first,
            Arc::as_ptr(&shared),
            "the cache holds the shared map's handles"
        );
        assert_eq!(cached(q, t), first, "found again in the cache");
        assert_ne!(
            cached(q, "other-kind"),
            first,
            "another type has its own handles"
        );
        // Forgetting the handles (as installing a recorder does) drops every
        // thread's cache: the next use registers anew.
        HANDLES.write().unwrap().clear();
        GENERATION.fetch_add(1, Ordering::Release);
        assert_ne!(
            cached(q, t),
            Arc::as_ptr(&shared),
            "registered anew after forgetting"
        );
        // More distinct pairs than the cache keeps: each still finds its own.
        let many: Vec<_> = (0..RECENT_MAX + 3)
            .map(|i| (format!("q{i}"), cached(&format!("q{i}"), t)))
            .collect();
        for (queue, at) in &many {
            assert_eq!(cached(queue, t), *at, "{queue}");
        }
    }
}
