//! Counting the tasks a read left out because their stored row or fields
//! do not decode (security review finding 4), so `tasks list`, `tasks
//! stats` and `payloads report` can end with one summary line after the
//! per-task warnings.
//!
//! The backends log each such task at WARN (`sealq: skipped a task …`,
//! SQLite's stats `sealq: stats left out tasks …` with a `tasks` count);
//! [`Counter`] is a tracing layer that counts those events whatever the
//! log filter shows, and [`print_summary`] reports the total.

use std::sync::atomic::{AtomicU64, Ordering};

use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::layer::{Context, Layer};

static SKIPPED: AtomicU64 = AtomicU64::new(0);

/// Counts the backends' "skipped a task" warnings.
pub(crate) struct Counter;

impl<S: Subscriber> Layer<S> for Counter {
    fn on_event(&self, event: &Event<'_>, _ctx: Context<'_, S>) {
        let meta = event.metadata();
        if *meta.level() != Level::WARN
            || !(meta.target().starts_with("sealq_sqlite")
                || meta.target().starts_with("sealq_redis"))
        {
            return;
        }
        let mut v = Fields::default();
        event.record(&mut v);
        if v.message.starts_with("sealq: skipped a task") {
            SKIPPED.fetch_add(1, Ordering::Relaxed);
        } else if v.message.starts_with("sealq: stats left out tasks") {
            SKIPPED.fetch_add(v.tasks.unwrap_or(1), Ordering::Relaxed);
        }
    }
}

#[derive(Default)]
struct Fields {
    message: String,
    tasks: Option<u64>,
}

impl Visit for Fields {
    fn record_u64(&mut self, field: &Field, value: u64) {
        if field.name() == "tasks" {
            self.tasks = Some(value);
        }
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        if field.name() == "tasks" {
            self.tasks = u64::try_from(value).ok();
        }
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            value.clone_into(&mut self.message);
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            self.message = format!("{value:?}");
        }
    }
}

/// How many tasks were skipped so far in this process.
pub(crate) fn count() -> u64 {
    SKIPPED.load(Ordering::Relaxed)
}

/// One line on stderr when tasks were skipped:
/// `skipped N undecodable task(s); see warnings above`.
pub(crate) fn print_summary() {
    let n = count();
    if n > 0 {
        eprintln!(
            "skipped {n} undecodable task(s); see warnings above (a worker archives each as \
             `integrity` when it meets it, or delete it with `sealq tasks delete`)"
        );
    }
}
