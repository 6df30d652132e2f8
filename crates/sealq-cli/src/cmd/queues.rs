//! `sealq queues list`: one row per queue with its tasks by state, whether
//! it is paused, its rate limit and its cap on waiting tasks. Read-only: it
//! changes nothing and writes no audit record (the changes are `queues
//! pause|resume|limit|rate`, in `operator.rs`).

use sealq::TaskState;
use sealq::broker::QueueStats;
use serde::Serialize;

use super::Global;
use crate::args::QueuesListArgs;
use crate::error::CliResult;
use crate::output::{print_json, table};

/// One queue as `--json` prints it.
#[derive(Debug, Serialize)]
struct QueueRow {
    queue: String,
    paused: bool,
    scheduled: u64,
    pending: u64,
    active: u64,
    retry: u64,
    completed: u64,
    archived: u64,
    /// Scheduled, pending and retry together: what the depth cap counts.
    waiting: u64,
    /// Every task the queue holds.
    total: u64,
    /// The cap on waiting tasks (`queues limit`), if any.
    max_depth: Option<u64>,
    /// The rate limit (`queues rate`), if any.
    rate_limit: Option<RateRow>,
}

/// A rate limit: `limit` tasks started per `period_ms`.
#[derive(Debug, Serialize)]
struct RateRow {
    limit: u64,
    period_ms: u64,
}

impl From<&QueueStats> for QueueRow {
    fn from(q: &QueueStats) -> Self {
        QueueRow {
            queue: q.queue.clone(),
            paused: q.paused,
            scheduled: q.scheduled,
            pending: q.pending,
            active: q.active,
            retry: q.retry,
            completed: q.completed,
            archived: q.archived,
            waiting: q.scheduled + q.pending + q.retry,
            total: TaskState::ALL.iter().map(|s| q.get(*s)).sum(),
            max_depth: q.max_depth,
            rate_limit: q.rate_limit.map(|r| RateRow {
                limit: r.limit,
                period_ms: r.period_ms,
            }),
        }
    }
}

/// `sealq queues list [--json]`: queues sorted by name.
pub(crate) async fn list(global: &Global, args: QueuesListArgs) -> CliResult {
    let broker = global.open_existing_broker()?.broker;
    let mut stats = broker.stats().await?;
    stats.sort_by(|a, b| a.queue.cmp(&b.queue));
    let rows: Vec<QueueRow> = stats.iter().map(QueueRow::from).collect();
    if args.json {
        print_json(&rows)?;
        crate::skipped::print_summary();
        return Ok(());
    }
    if rows.is_empty() {
        crate::stdout::outln!("no queues");
        crate::skipped::print_summary();
        return Ok(());
    }
    let mut header = vec!["QUEUE".to_owned()];
    header.extend(TaskState::ALL.iter().map(|s| s.as_str().to_uppercase()));
    header.extend(["PAUSED", "RATE_LIMIT", "DEPTH_CAP"].map(str::to_owned));
    let header: Vec<&str> = header.iter().map(String::as_str).collect();
    let cells: Vec<Vec<String>> = rows
        .iter()
        .map(|q| {
            let mut row = vec![q.queue.clone()];
            row.extend(
                [
                    q.scheduled,
                    q.pending,
                    q.active,
                    q.retry,
                    q.completed,
                    q.archived,
                ]
                .map(|n| n.to_string()),
            );
            row.push(if q.paused { "yes" } else { "no" }.to_owned());
            row.push(q.rate_limit.as_ref().map_or_else(
                || "-".to_owned(),
                |r| format!("{}/{}", r.limit, period(r.period_ms)),
            ));
            row.push(q.max_depth.map_or_else(
                || "-".to_owned(),
                |cap| format!("{}/{cap} waiting", q.waiting),
            ));
            row
        })
        .collect();
    crate::stdout::out!("{}", table(&header, &cells));
    crate::skipped::print_summary();
    Ok(())
}

/// A period for people: `1s`, `500ms`, `2m`, `1h`.
fn period(ms: u64) -> String {
    match ms {
        ms if ms % 3_600_000 == 0 => format!("{}h", ms / 3_600_000),
        ms if ms % 60_000 == 0 => format!("{}m", ms / 60_000),
        ms if ms % 1_000 == 0 => format!("{}s", ms / 1_000),
        ms => format!("{ms}ms"),
    }
}

#[cfg(test)]
mod tests {
    use super::period;

    #[test]
    fn periods_read_as_typed() {
        assert_eq!(period(1_000), "1s");
        assert_eq!(period(500), "500ms");
        assert_eq!(period(120_000), "2m");
        assert_eq!(period(3_600_000), "1h");
        assert_eq!(period(1_500), "1500ms");
    }
}
