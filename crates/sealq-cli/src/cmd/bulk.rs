//! `sealq tasks delete|rerun` by filter (`--queue`, `--state`, `--reason`,
//! `--older-than`): `--dry-run` counts and lists what would be acted on;
//! a real run needs `--yes`, works in batches through the audited admin
//! layer (`Client::bulk_tasks`, one `bulk_action` record per batch) and
//! shows a progress bar when stderr is a terminal. An interrupted run has
//! done whole batches; running it again acts on what is left.

use std::io::IsTerminal;
use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use sealq::{ArchiveReason, BulkAction, BulkOptions, BulkReport, Client, TaskFilter, TaskState};
use serde::Serialize;

use super::Global;
use crate::args::{BulkFilterArgs, OperatorArgs};
use crate::error::{CliError, CliResult, msg};

/// The reasons `--reason` accepts: those the worker and brokers write.
const REASONS: [&str; 11] = [
    "exhausted",
    "integrity",
    "expired",
    "replay",
    "erased",
    "unknown_type",
    "decode",
    "skip_retry",
    "cancelled",
    "deadline_exceeded",
    "reference_missing",
];

/// What `--json` prints.
#[derive(Debug, Serialize)]
struct JsonReport<'a> {
    action: &'static str,
    filter: String,
    #[serde(flatten)]
    report: &'a BulkReport,
}

/// `sealq tasks delete|rerun` with a filter and no ids.
pub(crate) async fn run(
    global: &Global,
    action: BulkAction,
    args: &BulkFilterArgs,
    op: &OperatorArgs,
) -> CliResult {
    let filter = filter(args)?;
    let verb = match action {
        BulkAction::Rerun => "re-run",
        BulkAction::Delete => "delete",
    };
    if !args.dry_run && !args.yes {
        return Err(CliError::usage(msg(format!(
            "`tasks {}` by filter changes every task the filter chooses: add --dry-run to \
             see how many and which, then add --yes to {verb} them",
            action.as_str()
        ))));
    }
    let keyring = global.keyring()?;
    // A dry run only reads: a missing SQLite file is refused, not created.
    let opened = if args.dry_run {
        global.open_existing_broker()?
    } else {
        global.open_broker()?
    };
    let auditor = if args.dry_run {
        None
    } else {
        super::audit::start(opened.audit_home(), op.audit, &keyring)?
    };
    let mut builder = Client::from_stores(opened.conn.stores(), keyring);
    if let Some(a) = &auditor {
        builder = builder.audit(a.clone());
    }
    let client = builder.build();
    // SIGINT or SIGTERM stops the run between batches, so every batch
    // done is audited and running it again does the rest.
    let stop = Arc::new(AtomicBool::new(false));
    let on_signal = stop.clone();
    let watcher = tokio::spawn(async move {
        sealq::worker::shutdown_signal().await;
        on_signal.store(true, Ordering::SeqCst);
    });
    let options = BulkOptions {
        batch: args.batch.max(1),
        max: args.max,
        dry_run: args.dry_run,
        stop: Some(stop),
        ..BulkOptions::default()
    };
    let bar = progress_bar(&client, action, &filter, args).await;
    let result = client
        .bulk_tasks(
            action,
            &filter,
            &options,
            &super::operator::operator(op),
            |r| {
                bar.set_position(r.scanned);
                bar.set_message(format!("{} matched, {} changed", r.matched, r.acted));
            },
        )
        .await;
    bar.finish_and_clear();
    watcher.abort();
    super::audit::finish(auditor).await?;
    let report = result?;
    let described = effective(action, &filter).describe();
    if args.json {
        crate::output::print_json(&JsonReport {
            action: action.as_str(),
            filter: described.clone(),
            report: &report,
        })?;
    } else {
        print_text(action, &described, &report, args);
    }
    crate::skipped::print_summary();
    if report.interrupted {
        return Err(CliError::runtime(msg(format!(
            "interrupted after {} batch(es), {} task(s) changed, each batch audited; run the \
             same command again for the rest",
            report.batches, report.acted
        ))));
    }
    if !report.dry_run && report.matched == 0 {
        return Err(CliError::runtime(msg(format!(
            "no task matched the filter ({}); nothing changed",
            crate::output::safe(&described)
        ))));
    }
    Ok(())
}

/// The report for people, on stdout; hints on stderr.
fn print_text(action: BulkAction, filter: &str, r: &BulkReport, args: &BulkFilterArgs) {
    let filter = crate::output::safe(filter);
    let done = match action {
        BulkAction::Rerun => "re-queued",
        BulkAction::Delete => "deleted",
    };
    if !r.dry_run && r.matched == 0 {
        return; // the error says so
    }
    if r.dry_run {
        crate::stdout::outln!(
            "dry run: would {} {} task(s) matching {filter} ({} scanned); nothing changed",
            action.as_str(),
            r.matched,
            r.scanned
        );
    } else {
        crate::stdout::outln!(
            "{done} {} of {} task(s) matching {filter} in {} batch(es), audited as bulk_action",
            r.acted,
            r.matched,
            r.batches
        );
    }
    if !r.sample.is_empty() {
        crate::stdout::outln!("first {} of them:", r.sample.len().min(r.matched as usize));
        for id in &r.sample {
            crate::stdout::outln!("  {id}");
        }
    }
    if r.dry_run && r.matched > 0 {
        eprintln!(
            "run it again with --yes instead of --dry-run to {} them",
            action.as_str()
        );
    }
    if args.max.is_some_and(|m| r.matched >= m) {
        eprintln!("stopped at --max {}; run it again for the rest", r.matched);
    }
}

/// The filter as the admin layer runs it: `rerun` means archived, and so
/// does a reason (for the progress bar's total and the messages).
fn effective(action: BulkAction, f: &TaskFilter) -> TaskFilter {
    let mut f = f.clone();
    if f.state.is_none() && (action == BulkAction::Rerun || f.reason.is_some()) {
        f.state = Some(TaskState::Archived);
    }
    f
}

/// The filter the flags describe.
fn filter(args: &BulkFilterArgs) -> CliResult<TaskFilter> {
    if let Some(q) = &args.queue {
        sealq::options::validate_queue_name(q)?;
    }
    let state = args
        .state
        .as_deref()
        .map(TaskState::from_str)
        .transpose()
        .map_err(CliError::from)?;
    let reason = match args.reason.as_deref() {
        None => None,
        Some(r) if REASONS.contains(&r) => Some(ArchiveReason::parse(r)),
        Some(r) => {
            return Err(CliError::usage(msg(format!(
                "unknown archive reason `{}`; use one of: {}",
                crate::output::safe(r),
                REASONS.join(", ")
            ))));
        }
    };
    Ok(TaskFilter {
        queue: args.queue.clone(),
        state,
        reason,
        older_than: args.older_than,
    })
}

/// A bar on stderr when it is a terminal (hidden otherwise, and for
/// `--json`): tasks scanned out of those in the filter's queues and state.
async fn progress_bar(
    client: &Client,
    action: BulkAction,
    filter: &TaskFilter,
    args: &BulkFilterArgs,
) -> ProgressBar {
    if args.json || !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let f = effective(action, filter);
    let total: u64 = match client.broker().stats().await {
        Ok(stats) => stats
            .iter()
            .filter(|q| f.queue.as_ref().is_none_or(|name| &q.queue == name))
            .map(|q| match f.state {
                Some(s) => q.get(s),
                None => TaskState::ALL.iter().map(|s| q.get(*s)).sum(),
            })
            .sum(),
        Err(_) => 0,
    };
    let bar = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr());
    if let Ok(style) = ProgressStyle::with_template(
        "{spinner} [{elapsed_precise}] {wide_bar} {pos}/{len} scanned, {msg}",
    ) {
        bar.set_style(style);
    }
    bar.enable_steady_tick(Duration::from_millis(100));
    bar
}
