//! Counts: a queue's tasks by state ([`QueueStats`]) and what an erasure
//! removed ([`ErasureCounts`], [`ErasureReceipt`]).

use std::time::Duration;

use crate::model::state::TaskState;

/// Counts of one queue's tasks by state.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct QueueStats {
    /// Queue name.
    pub queue: String,
    /// Whether dequeue skips it.
    pub paused: bool,
    /// Tasks scheduled.
    pub scheduled: u64,
    /// Tasks pending.
    pub pending: u64,
    /// Tasks active.
    pub active: u64,
    /// Tasks waiting to retry.
    pub retry: u64,
    /// Completed tasks still retained.
    pub completed: u64,
    /// Archived tasks.
    pub archived: u64,
    /// Its cap on waiting (scheduled, pending and retry) tasks, if one is
    /// set ([`Broker::set_max_depth`](crate::store::broker::Broker::set_max_depth)).
    pub max_depth: Option<u64>,
    /// Its rate limit, if one is set ([`Broker::set_rate_limit`](crate::store::broker::Broker::set_rate_limit)).
    pub rate_limit: Option<RateLimit>,
}

impl QueueStats {
    /// Count for one state.
    pub fn get(&self, state: TaskState) -> u64 {
        match state {
            TaskState::Scheduled => self.scheduled,
            TaskState::Pending => self.pending,
            TaskState::Active => self.active,
            TaskState::Retry => self.retry,
            TaskState::Completed => self.completed,
            TaskState::Archived => self.archived,
        }
    }
}

/// Counts of one subject's tasks removed by an erasure, by state.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ErasureCounts {
    /// Scheduled tasks deleted.
    pub scheduled: u64,
    /// Pending tasks deleted.
    pub pending: u64,
    /// Active tasks: archived with reason `erased`, their envelope wiped, lease revoked.
    pub active: u64,
    /// Tasks waiting to retry, deleted.
    pub retry: u64,
    /// Completed tasks (with their results) deleted.
    pub completed: u64,
    /// Archived tasks deleted.
    pub archived: u64,
}

impl ErasureCounts {
    /// All tasks touched.
    pub fn total(&self) -> u64 {
        self.scheduled + self.pending + self.active + self.retry + self.completed + self.archived
    }

    /// Add `other`'s counts to these.
    pub fn add(&mut self, other: &ErasureCounts) {
        self.scheduled += other.scheduled;
        self.pending += other.pending;
        self.active += other.active;
        self.retry += other.retry;
        self.completed += other.completed;
        self.archived += other.archived;
    }
}

/// What an erasure did; names no personal data (the subject appears only
/// as its keyed tag).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ErasureReceipt {
    /// Keyed hash of the subject id (hex).
    pub subject_tag: String,
    /// Tasks removed, by state.
    pub counts: ErasureCounts,
    /// Whether a data key existed and was destroyed.
    pub key_destroyed: bool,
    /// When, Unix ms.
    pub time_ms: i64,
    /// Who asked for it.
    pub operator: String,
    /// Ids of tasks carrying the subject's clear tag whose envelope does not
    /// authenticate as the subject's (sealed for another subject, or with
    /// the tag left out of its associated data: the clear tag was put on
    /// them, or their bytes edited). Not deleted, not counted in `counts`.
    #[serde(default)]
    pub tag_mismatch: Vec<String>,
    /// Ids of tasks carrying the subject's clear tag that could not be
    /// checked: sealed with the subject's key when none is stored any more
    /// (an earlier erasure destroyed it), or with a keyring key this
    /// keyring lacks. Not deleted, not counted in `counts`.
    #[serde(default)]
    pub unverified: Vec<String>,
    /// Tasks of the subject found by a full scan although their clear tag
    /// was missing or another (they authenticate with the subject's key
    /// and tag); erased and counted in `counts` too. 0 without a full scan.
    #[serde(default)]
    pub untagged_found: u64,
    /// Whether every stored task was scanned for the subject's tasks whose
    /// clear tag was removed (asked for with `EraseOptions::full_scan`, and
    /// done only when the subject has a data key to recognise them by).
    #[serde(default)]
    pub full_scan: bool,
}

/// A per-queue rate limit: at most `limit` tasks leased per `period_ms`,
/// across every worker (a token bucket holding at most `limit` tokens,
/// refilled evenly over the period; each lease takes one).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct RateLimit {
    /// Tasks per period (also the largest burst).
    pub limit: u64,
    /// The period, milliseconds.
    pub period_ms: u64,
}

impl RateLimit {
    /// `limit` tasks per `period`; `None` when either is zero.
    pub fn per(limit: u64, period: Duration) -> Option<Self> {
        let period_ms = u64::try_from(period.as_millis()).unwrap_or(u64::MAX);
        (limit > 0 && period_ms > 0).then_some(RateLimit { limit, period_ms })
    }

    /// Tokens in a bucket that held `tokens` at `at_ms`, at `now_ms`
    /// (refilled evenly, at most `limit`; a clock behind `at_ms` adds none).
    pub fn refill(&self, tokens: f64, at_ms: i64, now_ms: i64) -> f64 {
        let elapsed = now_ms.saturating_sub(at_ms).max(0) as f64;
        (tokens + elapsed * self.limit as f64 / self.period_ms as f64).min(self.limit as f64)
    }
}
