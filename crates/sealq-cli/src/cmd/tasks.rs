//! `sealq tasks list` and `sealq tasks stats`: ids, types, states, sizes.
//! Never payloads, results or error texts: those stay sealed. `tasks list`
//! pages: `--limit N` (default 100) and `--after ID`; when more exist it
//! says so on stderr with the command for the next page (`--json`:
//! `next_cursor`).

use std::str::FromStr;

use sealq::TaskState;
use sealq::broker::{ListQuery, TaskRecord};
use serde::Serialize;

use super::Global;
use crate::args::{ListArgs, StatsArgs};
use crate::error::{CliError, CliResult};
use crate::output::{print_json, rfc3339_ms, table};

/// One listed task: what is safe to show.
#[derive(Debug, Serialize)]
struct TaskRow {
    id: String,
    #[serde(rename = "type")]
    kind: String,
    queue: String,
    state: &'static str,
    attempts: u32,
    envelope_bytes: usize,
    /// The key id the envelope's clear header names (`subject` for a
    /// subject's data key; none when the envelope was wiped by erasure or
    /// does not parse): what `keys reseal` and `keys remove` go by.
    key_id: Option<String>,
    archive_reason: Option<String>,
    /// Size of the sealed error of the last failed attempt; the text stays sealed.
    error_sealed_bytes: Option<usize>,
    created_at: String,
    run_at: String,
}

impl From<&TaskRecord> for TaskRow {
    fn from(r: &TaskRecord) -> Self {
        TaskRow {
            id: r.id.to_string(),
            kind: r.kind.clone(),
            queue: r.queue.clone(),
            state: r.state.as_str(),
            attempts: r.attempts,
            envelope_bytes: r.envelope.len(),
            key_id: sealq::envelope::parse_header(&r.envelope)
                .ok()
                .map(|h| h.key_id.to_owned()),
            archive_reason: r.archive_reason.as_ref().map(|a| a.as_str().to_owned()),
            error_sealed_bytes: r.last_error.as_ref().map(Vec::len),
            created_at: rfc3339_ms(r.meta.created_at_ms),
            run_at: rfc3339_ms(r.run_at_ms),
        }
    }
}

/// `sealq tasks list`.
pub(crate) async fn list(global: &Global, args: ListArgs) -> CliResult {
    let state = args
        .state
        .as_deref()
        .map(TaskState::from_str)
        .transpose()
        .map_err(CliError::from)?;
    if let Some(q) = &args.queue {
        sealq::options::validate_queue_name(q)?;
    }
    let after = args
        .after
        .as_deref()
        .map(sealq::TaskId::from_str)
        .transpose()
        .map_err(CliError::from)?;
    let broker = global.open_existing_broker()?.broker;
    let limit = args.limit.max(1);
    // One more than a page: whether it comes back says whether more exist.
    let query = ListQuery {
        queue: args.queue.clone(),
        state,
        after,
        limit: limit.saturating_add(1),
        ..ListQuery::default()
    };
    let mut records = broker.list(&query).await?;
    let more = records.len() > limit;
    records.truncate(limit);
    let next_cursor = more
        .then(|| records.last().map(|r| r.id.to_string()))
        .flatten();
    let rows: Vec<TaskRow> = records.iter().map(TaskRow::from).collect();
    if args.json {
        print_json(&Page {
            tasks: &rows,
            next_cursor: next_cursor.as_deref(),
        })?;
        crate::skipped::print_summary();
        return Ok(());
    }
    if rows.is_empty() {
        crate::stdout::outln!("no tasks");
        crate::skipped::print_summary();
        return Ok(());
    }
    let cells: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            vec![
                r.id.clone(),
                r.kind.clone(),
                r.queue.clone(),
                r.state.to_owned(),
                r.attempts.to_string(),
                r.envelope_bytes.to_string(),
                r.key_id.clone().unwrap_or_else(|| "-".into()),
                r.archive_reason.clone().unwrap_or_else(|| "-".into()),
                r.error_sealed_bytes
                    .map_or_else(|| "-".into(), |n| format!("<sealed, {n} bytes>")),
                r.created_at.clone(),
            ]
        })
        .collect();
    crate::stdout::out!(
        "{}",
        table(
            &[
                "ID", "TYPE", "QUEUE", "STATE", "ATTEMPTS", "ENVELOPE", "KEY", "ARCHIVED", "ERROR",
                "CREATED",
            ],
            &cells,
        )
    );
    crate::skipped::print_summary();
    if let Some(cursor) = &next_cursor {
        // On stderr: stdout stays one table a script can parse.
        eprintln!(
            "more tasks exist; next page: {}",
            next_page_command(&args, cursor)
        );
    }
    Ok(())
}

/// `tasks list --json`: one page and the cursor of the next.
#[derive(Debug, Serialize)]
struct Page<'a> {
    /// The tasks of this page, in id order.
    tasks: &'a [TaskRow],
    /// Pass as `--after` for the next page; `null` on the last page.
    next_cursor: Option<&'a str>,
}

/// The command that lists the page after `cursor` with the same filters.
fn next_page_command(args: &ListArgs, cursor: &str) -> String {
    let mut cmd = String::from("sealq tasks list");
    if let Some(q) = &args.queue {
        cmd.push_str(&format!(" --queue {}", crate::output::safe(q)));
    }
    if let Some(s) = &args.state {
        cmd.push_str(&format!(" --state {}", crate::output::safe(s)));
    }
    cmd.push_str(&format!(" --limit {} --after {cursor}", args.limit.max(1)));
    cmd
}

/// `sealq tasks stats`.
pub(crate) async fn stats(global: &Global, args: StatsArgs) -> CliResult {
    let broker = global.open_existing_broker()?.broker;
    let stats = broker.stats().await?;
    if args.json {
        print_json(&stats)?;
        crate::skipped::print_summary();
        return Ok(());
    }
    if stats.is_empty() {
        crate::stdout::outln!("no queues");
        crate::skipped::print_summary();
        return Ok(());
    }
    let mut header = vec!["QUEUE".to_owned(), "PAUSED".to_owned()];
    header.extend(TaskState::ALL.iter().map(|s| s.as_str().to_uppercase()));
    header.push("MAX_DEPTH".to_owned());
    header.push("RATE".to_owned());
    let header: Vec<&str> = header.iter().map(String::as_str).collect();
    let cells: Vec<Vec<String>> = stats
        .iter()
        .map(|q| {
            let mut row = vec![
                q.queue.clone(),
                if q.paused { "yes" } else { "no" }.to_owned(),
            ];
            row.extend(TaskState::ALL.iter().map(|s| q.get(*s).to_string()));
            row.push(
                q.max_depth
                    .map_or_else(|| "-".to_owned(), |n| n.to_string()),
            );
            row.push(q.rate_limit.map_or_else(
                || "-".to_owned(),
                |r| format!("{}/{}ms", r.limit, r.period_ms),
            ));
            row
        })
        .collect();
    crate::stdout::out!("{}", table(&header, &cells));
    crate::skipped::print_summary();
    Ok(())
}
