//! `sealq tasks list` and `sealq tasks stats`: ids, types, states, sizes.
//! Never payloads, results or error texts: those stay sealed.

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
    let query = ListQuery {
        queue: args.queue,
        state,
        after,
        limit: args.limit.max(1),
        ..ListQuery::default()
    };
    let records = broker.list(&query).await?;
    let rows: Vec<TaskRow> = records.iter().map(TaskRow::from).collect();
    if args.json {
        print_json(&rows)?;
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
    Ok(())
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
