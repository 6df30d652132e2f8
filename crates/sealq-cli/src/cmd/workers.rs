//! `sealq workers`: the live workers on the broker (every process running
//! `sealq worker` or a library `Worker` against it), from the broker's
//! registry of live workers: id, host, pid, queues, concurrency, when each
//! started, its last heartbeat and the tasks it holds. A worker that
//! stopped is gone at once; one that died drops out a few heartbeats
//! after its last (a third of its lease each, 10 s by default).

use sealq::LiveWorker;

use super::Global;
use crate::args::WorkersArgs;
use crate::error::CliResult;
use crate::output::{now_ms, print_json, rfc3339_ms, table};

/// List the live workers, as a table or (`--json`) a JSON array.
pub(crate) async fn list(global: &Global, args: WorkersArgs) -> CliResult {
    let broker = global.open_existing_broker()?.broker;
    let workers = broker.list_workers().await?;
    if args.json {
        return print_json(&workers);
    }
    if workers.is_empty() {
        crate::stdout::outln!("no live workers on {}", broker.describe());
        return Ok(());
    }
    let now = now_ms();
    let rows: Vec<Vec<String>> = workers.iter().map(|w| row(w, now)).collect();
    let header = [
        "ID",
        "HOST",
        "PID",
        "QUEUES",
        "CONCURRENCY",
        "STARTED",
        "LAST_HEARTBEAT",
        "IN_FLIGHT",
    ];
    crate::stdout::out!("{}", table(&header, &rows));
    Ok(())
}

/// One worker's table row; the last heartbeat as an age (`3s ago`).
fn row(w: &LiveWorker, now: i64) -> Vec<String> {
    vec![
        w.id.clone(),
        w.host.clone(),
        w.pid.to_string(),
        w.queues.join(","),
        w.concurrency.to_string(),
        rfc3339_ms(w.started_at_ms),
        age(now - w.last_heartbeat_ms),
        w.in_flight.to_string(),
    ]
}

/// `ms` as a short age: `0s ago`, `42s ago`, `3m ago`, `2h ago`.
fn age(ms: i64) -> String {
    let s = ms.max(0) / 1000;
    match s {
        0..60 => format!("{s}s ago"),
        60..3600 => format!("{}m ago", s / 60),
        _ => format!("{}h ago", s / 3600),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_row_shows_every_column() {
        let w = LiveWorker {
            run_id: "r".into(),
            id: "h:1".into(),
            host: "h".into(),
            pid: 1,
            queues: vec!["a".into(), "b".into()],
            concurrency: 4,
            started_at_ms: 0,
            last_heartbeat_ms: 1_000,
            in_flight: 2,
        };
        assert_eq!(
            row(&w, 4_500),
            [
                "h:1",
                "h",
                "1",
                "a,b",
                "4",
                "1970-01-01T00:00:00.000Z",
                "3s ago",
                "2"
            ]
        );
        assert_eq!(age(-5), "0s ago");
        assert_eq!(age(125_000), "2m ago");
        assert_eq!(age(7_300_000), "2h ago");
    }
}
