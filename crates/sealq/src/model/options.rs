//! Per-task enqueue options.

use std::time::Duration;

use crate::model::backoff::Backoff;
use crate::model::unix_ms::UnixMs;

/// The default queue name.
pub const DEFAULT_QUEUE: &str = "default";

/// Options for one enqueue. Unset fields fall back to the task type's
/// [`crate::Task::options`] and then to the defaults documented per field.
///
/// ```
/// use std::time::Duration;
/// let opts = sealq::EnqueueOptions::new()
///     .queue("emails")
///     .delay(Duration::from_secs(30))
///     .max_retries(5)
///     .unique("welcome:user-42", Duration::from_secs(3600))
///     .subject("user-42");
/// ```
#[derive(Debug, Clone, Default, PartialEq)]
pub struct EnqueueOptions {
    /// Queue name (default `default`).
    pub queue: Option<String>,
    /// Run no earlier than this, Unix ms ([`EnqueueOptions::run_at`] takes a
    /// `SystemTime` or `jiff::Timestamp` too). Overrides `delay`.
    pub run_at_ms: Option<i64>,
    /// Run no earlier than now + delay.
    pub delay: Option<Duration>,
    /// The handler must finish by this time (Unix ms); past it the task is archived.
    pub deadline_ms: Option<i64>,
    /// Per-attempt timeout (default 30 min).
    pub timeout: Option<Duration>,
    /// Retries after the first attempt (default 25).
    pub max_retries: Option<u32>,
    /// Delay policy between attempts (default exponential 1 s .. 1 h, jittered).
    pub backoff: Option<Backoff>,
    /// At most one task with this key exists until it completes or the TTL passes.
    pub unique: Option<(String, Duration)>,
    /// How long the completed task and its result are kept (default 24 h).
    pub retention: Option<Duration>,
    /// Data subject (e.g. a user id) the task concerns; only a keyed hash is stored.
    pub subject: Option<String>,
    /// The task must not start after this time (Unix ms); it is archived as `expired`.
    pub not_after_ms: Option<i64>,
    /// A caller-chosen id (default: a fresh UUID v7).
    pub id: Option<crate::model::id::TaskId>,
    /// The producer's W3C trace context, sealed with the payload (a
    /// version-3 envelope) so the handler's work joins the producer's
    /// trace (`TaskContext::trace_parent`). Default: none.
    pub trace_parent: Option<crate::model::trace_parent::TraceParent>,
}

macro_rules! setter {
    ($(#[$m:meta])* $name:ident: $ty:ty => $field:ident) => {
        $(#[$m])*
        pub fn $name(mut self, v: $ty) -> Self {
            self.$field = Some(v.into());
            self
        }
    };
}

impl EnqueueOptions {
    /// Empty options (all defaults).
    pub fn new() -> Self {
        Self::default()
    }

    setter!(/// Set the queue.
        queue: impl Into<String> => queue);
    setter!(/// Run after `delay`.
        delay: Duration => delay);
    setter!(/// Run at this Unix-ms time.
        run_at_ms: i64 => run_at_ms);
    setter!(/// Finish by this Unix-ms time.
        deadline_ms: i64 => deadline_ms);
    setter!(/// Per-attempt timeout.
        timeout: Duration => timeout);
    setter!(/// Retries after the first attempt.
        max_retries: u32 => max_retries);
    setter!(/// Backoff policy.
        backoff: Backoff => backoff);
    setter!(/// Completed-task retention.
        retention: Duration => retention);
    setter!(/// Data subject for erasure.
        subject: impl Into<String> => subject);
    setter!(/// Must not start after this Unix-ms time.
        not_after_ms: i64 => not_after_ms);
    setter!(/// Use this id.
        id: crate::model::id::TaskId => id);
    setter!(/// Carry this W3C trace context, sealed, to the handler (e.g. the
        /// current span's, as your OpenTelemetry propagator writes it).
        trace_parent: crate::model::trace_parent::TraceParent => trace_parent);

    /// Run no earlier than `at`: a [`std::time::SystemTime`], a
    /// [`jiff::Timestamp`] or Unix ms ([`UnixMs`]). Overrides `delay`.
    pub fn run_at(mut self, at: impl Into<UnixMs>) -> Self {
        self.run_at_ms = Some(at.into().as_millis());
        self
    }

    /// The handler must finish by `at` (a `SystemTime`, a `jiff::Timestamp`
    /// or Unix ms); past it the task is archived `deadline_exceeded`.
    pub fn deadline(mut self, at: impl Into<UnixMs>) -> Self {
        self.deadline_ms = Some(at.into().as_millis());
        self
    }

    /// The task must not start after `at` (a `SystemTime`, a
    /// `jiff::Timestamp` or Unix ms); it is archived `expired` then.
    pub fn not_after(mut self, at: impl Into<UnixMs>) -> Self {
        self.not_after_ms = Some(at.into().as_millis());
        self
    }

    /// At most one task with `key` until it completes or `ttl` passes.
    pub fn unique(mut self, key: impl Into<String>, ttl: Duration) -> Self {
        self.unique = Some((key.into(), ttl));
        self
    }

    /// Field-by-field merge: values set in `self` win over `base`.
    pub fn or(self, base: EnqueueOptions) -> EnqueueOptions {
        EnqueueOptions {
            queue: self.queue.or(base.queue),
            run_at_ms: self.run_at_ms.or(base.run_at_ms),
            delay: self.delay.or(base.delay),
            deadline_ms: self.deadline_ms.or(base.deadline_ms),
            timeout: self.timeout.or(base.timeout),
            max_retries: self.max_retries.or(base.max_retries),
            backoff: self.backoff.or(base.backoff),
            unique: self.unique.or(base.unique),
            retention: self.retention.or(base.retention),
            subject: self.subject.or(base.subject),
            not_after_ms: self.not_after_ms.or(base.not_after_ms),
            id: self.id.or(base.id),
            trace_parent: self.trace_parent.or(base.trace_parent),
        }
    }
}

/// Default per-attempt timeout.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30 * 60);
/// Default retries after the first attempt.
pub const DEFAULT_MAX_RETRIES: u32 = 25;
/// Default retention of completed tasks.
pub const DEFAULT_RETENTION: Duration = Duration::from_secs(24 * 3600);

/// How long after its earliest start a task stays runnable when the producer
/// sets no `not_after_ms`: 7 days. Every version-2 envelope binds an expiry,
/// so a broker cannot keep a task alive (or replay it) forever. Seven days is
/// far beyond the default retry horizon (25 retries with backoff capped at
/// 1 h and a 30 min timeout end within about 26 h) and covers a worker
/// outage over a long weekend; a policy whose own horizon is longer gets
/// that horizon instead ([`default_not_after_ms`]).
pub const DEFAULT_EXPIRY: Duration = Duration::from_secs(7 * 24 * 3600);

/// The expiry of a task with no `not_after_ms`: `start + max(7 days, h)`,
/// where `h` bounds the time all its attempts can take (every retry waiting
/// the longest delay its backoff allows, every attempt running its full
/// timeout). Saturating.
pub(crate) fn default_not_after_ms(
    start_ms: i64,
    max_retries: u32,
    backoff: &Backoff,
    timeout_ms: Option<u64>,
) -> i64 {
    let longest_delay = match *backoff {
        Backoff::Exponential { max_ms, .. } => max_ms,
        Backoff::Fixed { delay_ms } => delay_ms,
    };
    let retries = u64::from(max_retries);
    let horizon = retries
        .saturating_mul(longest_delay)
        .saturating_add((retries + 1).saturating_mul(timeout_ms.unwrap_or(0)));
    let expiry = horizon.max(u64::try_from(DEFAULT_EXPIRY.as_millis()).unwrap_or(u64::MAX));
    start_ms.saturating_add(i64::try_from(expiry).unwrap_or(i64::MAX))
}

/// Check a queue name: 1-128 chars of `[A-Za-z0-9_.:-]`. Braces are refused
/// because Redis uses them for Cluster hash tags.
pub fn validate_queue_name(name: &str) -> crate::error::Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 128
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_.:-".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(crate::error::Error::InvalidArgument {
            what: "queue name",
            reason: format!(
                "`{}` must be 1-128 characters of letters, digits, `_`, `.`, `:` or `-`",
                name.escape_debug()
            ),
        })
    }
}

/// Check a task type name: 1-128 printable ASCII characters without spaces.
pub fn validate_kind(kind: &str) -> crate::error::Result<()> {
    let ok = !kind.is_empty() && kind.len() <= 128 && kind.bytes().all(|b| b.is_ascii_graphic());
    if ok {
        Ok(())
    } else {
        Err(crate::error::Error::InvalidArgument {
            what: "task type",
            reason: format!(
                "`{}` must be 1-128 printable ASCII characters without spaces",
                kind.escape_debug()
            ),
        })
    }
}
