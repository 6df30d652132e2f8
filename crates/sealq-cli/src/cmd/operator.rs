//! Audited operator actions: `tasks reveal`, `tasks delete`, `tasks rerun`,
//! `queues pause`, `queues resume` (and
//! hands `queues list` to `queues.rs`).

use sealq::{Client, TaskId};

use super::Global;
use super::erase::default_operator;
use crate::args::{OperatorArgs, QueuesCommand, RevealArgs, TaskIdsArgs};
use crate::error::{CliError, CliResult, msg};

/// A client with the configured auditor; the caller closes the auditor.
///
/// Every operator action but `reveal` runs with an operator keyring (audit
/// keys only); `reveal` passes `Some(what)` and needs a full keyring.
fn client(
    global: &Global,
    op: &OperatorArgs,
    opens: Option<&str>,
) -> CliResult<(Client, Option<sealq::audit::Auditor>)> {
    let keyring = match opens {
        Some(to) => global.full_keyring(to)?,
        None => global.keyring()?,
    };
    // Opening a payload only reads: a missing SQLite file is refused, not created.
    let opened = if opens.is_some() {
        global.open_existing_broker()?
    } else {
        global.open_broker()?
    };
    let auditor = super::audit::start(opened.audit_home(), op.audit, &keyring)?;
    let mut builder = Client::from_stores(opened.conn.stores(), keyring);
    if let Some(a) = &auditor {
        builder = builder.audit(a.clone());
    }
    Ok((builder.build(), auditor))
}

/// Who is acting: `--operator`, else `$USER@host`.
pub(crate) fn operator(op: &OperatorArgs) -> String {
    op.operator.clone().unwrap_or_else(default_operator)
}

/// The ids named, parsed, each once.
fn ids(args: &TaskIdsArgs) -> CliResult<Vec<TaskId>> {
    let mut ids: Vec<TaskId> = args
        .ids
        .iter()
        .map(|s| {
            s.parse::<TaskId>()
                .map_err(|e| CliError::usage(msg(e.to_string())))
        })
        .collect::<CliResult<_>>()?;
    let mut seen = std::collections::HashSet::new();
    ids.retain(|id| seen.insert(*id));
    Ok(ids)
}

/// `sealq tasks reveal --id ID`: the one command that prints plaintext.
pub(crate) async fn reveal(global: &Global, args: RevealArgs) -> CliResult {
    let id: TaskId = args
        .id
        .parse()
        .map_err(|e: sealq::Error| CliError::usage(msg(e.to_string())))?;
    let (client, auditor) = client(global, &args.op, Some("open a payload (tasks reveal)"))?;
    let result = client.reveal(id, &operator(&args.op)).await;
    super::audit::finish(auditor).await?;
    let revealed = result?;
    let json = |bytes: &[u8]| -> serde_json::Value {
        sealq::task::decode_payload::<serde_json::Value>(bytes).unwrap_or_else(|_| {
            serde_json::Value::String(String::from_utf8_lossy(bytes).into_owned())
        })
    };
    let out = serde_json::json!({
        "id": id.to_string(),
        "type": revealed.record.kind,
        "queue": revealed.record.queue,
        "state": revealed.record.state.as_str(),
        "payload": json(&revealed.payload),
        "result": revealed.result.as_ref().map(|r| json(r)),
        "error": revealed.error.as_ref().map(|e| String::from_utf8_lossy(e).into_owned()),
    });
    crate::stdout::outln!("{}", serde_json::to_string_pretty(&out).unwrap_or_default());
    Ok(())
}

/// `sealq tasks delete --id ID...` (or by filter: `bulk.rs`).
pub(crate) async fn delete(global: &Global, args: TaskIdsArgs) -> CliResult {
    if args.ids.is_empty() {
        return super::bulk::run(global, sealq::BulkAction::Delete, &args.bulk, &args.op).await;
    }
    let ids = ids(&args)?;
    let (client, auditor) = client(global, &args.op, None)?;
    let result = client.delete_tasks(&ids, &operator(&args.op)).await;
    super::audit::finish(auditor).await?;
    let done = result?;
    crate::stdout::outln!("deleted {} of {} task(s)", done, ids.len());
    all_matched(done, ids.len(), "did not exist")
}

/// `sealq tasks rerun --id ID...`: archived tasks back to pending (or by
/// filter: `bulk.rs`).
pub(crate) async fn rerun(global: &Global, args: TaskIdsArgs) -> CliResult {
    if args.ids.is_empty() {
        return super::bulk::run(global, sealq::BulkAction::Rerun, &args.bulk, &args.op).await;
    }
    let ids = ids(&args)?;
    let (client, auditor) = client(global, &args.op, None)?;
    let result = client.rerun_tasks(&ids, &operator(&args.op)).await;
    super::audit::finish(auditor).await?;
    let done = result?;
    crate::stdout::outln!(
        "re-queued {} of {} task(s) (only archived tasks move)",
        done,
        ids.len()
    );
    all_matched(done, ids.len(), "did not exist or were not archived")
}

/// Exit 1 (`no task matched ...`) when an action changed fewer tasks than
/// were named: `tasks delete` and `tasks rerun` succeed only when every id
/// named was acted on, so a script sees a typo or a task already gone.
fn all_matched(done: u64, named: usize, why: &str) -> CliResult {
    if done >= named as u64 {
        return Ok(());
    }
    let missed = named as u64 - done;
    let text = if done == 0 {
        format!("no task matched: the {named} task(s) named {why}; nothing changed")
    } else {
        format!("{missed} of the {named} task(s) named {why}; the other {done} changed")
    };
    Err(CliError::runtime(msg(text)))
}

/// `sealq queues pause|resume --queue Q`.
pub(crate) async fn queues(global: &Global, cmd: QueuesCommand) -> CliResult {
    let (pause, args) = match cmd {
        QueuesCommand::Pause(a) => (true, a),
        QueuesCommand::Resume(a) => (false, a),
        QueuesCommand::Limit(a) => return limit(global, a).await,
        QueuesCommand::Rate(a) => return rate(global, a).await,
        QueuesCommand::List(a) => return super::queues::list(global, a).await,
    };
    sealq::options::validate_queue_name(&args.queue)?;
    let (client, auditor) = client(global, &args.op, None)?;
    if let Err(e) = known_queue(&client, &args.queue, args.create).await {
        super::audit::finish(auditor).await?;
        return Err(e);
    }
    let who = operator(&args.op);
    let result = if pause {
        client.pause_queue(&args.queue, &who).await
    } else {
        client.resume_queue(&args.queue, &who).await
    };
    super::audit::finish(auditor).await?;
    result?;
    crate::stdout::outln!(
        "{} `{}`",
        if pause { "paused" } else { "resumed" },
        args.queue
    );
    Ok(())
}

/// `sealq queues limit --queue Q (--max-depth N | --clear)`.
async fn limit(global: &Global, args: crate::args::QueueLimitArgs) -> CliResult {
    sealq::options::validate_queue_name(&args.queue)?;
    let (client, auditor) = client(global, &args.op, None)?;
    if let Err(e) = known_queue(&client, &args.queue, args.create).await {
        super::audit::finish(auditor).await?;
        return Err(e);
    }
    let max_depth = if args.clear { None } else { args.max_depth };
    let result = client
        .set_queue_max_depth(&args.queue, max_depth, &operator(&args.op))
        .await;
    super::audit::finish(auditor).await?;
    result?;
    match max_depth {
        Some(n) => crate::stdout::outln!("`{}` holds at most {n} waiting task(s)", args.queue),
        None => crate::stdout::outln!("`{}` has no cap on waiting tasks", args.queue),
    }
    Ok(())
}

/// `sealq queues rate --queue Q (--limit N --per DURATION | --clear)`.
async fn rate(global: &Global, args: crate::args::QueueRateArgs) -> CliResult {
    sealq::options::validate_queue_name(&args.queue)?;
    let limit = match (args.clear, args.limit, args.per) {
        (true, _, _) => None,
        (false, Some(n), Some(per)) => {
            Some(sealq::broker::RateLimit::per(n, per).ok_or_else(|| {
                CliError::usage(crate::error::msg(
                    "--limit and --per must both be more than zero",
                ))
            })?)
        }
        _ => {
            return Err(CliError::usage(crate::error::msg(
                "give --limit N and --per DURATION, or --clear",
            )));
        }
    };
    let (client, auditor) = client(global, &args.op, None)?;
    if let Err(e) = known_queue(&client, &args.queue, args.create).await {
        super::audit::finish(auditor).await?;
        return Err(e);
    }
    let result = client
        .set_queue_rate_limit(&args.queue, limit, &operator(&args.op))
        .await;
    super::audit::finish(auditor).await?;
    result?;
    match limit {
        Some(l) => crate::stdout::outln!(
            "`{}` starts at most {} task(s) per {} ms",
            args.queue,
            l.limit,
            l.period_ms
        ),
        None => crate::stdout::outln!("`{}` has no rate limit", args.queue),
    }
    Ok(())
}

/// Refuse a queue the broker has never seen (no tasks, not paused, no cap,
/// no rate limit) unless `--create` was given: a misspelt name would
/// otherwise silently set up a new queue. The error names the queue and
/// the queues the broker knows.
async fn known_queue(client: &Client, queue: &str, create: bool) -> CliResult {
    if create {
        return Ok(());
    }
    let stats = client.broker().stats().await?;
    if stats.iter().any(|s| s.queue == queue) {
        return Ok(());
    }
    let known: Vec<String> = stats
        .iter()
        .map(|s| format!("`{}`", crate::output::safe(&s.queue)))
        .collect();
    let known = if known.is_empty() {
        "none".to_owned()
    } else {
        known.join(", ")
    };
    Err(CliError::usage(msg(format!(
        "queue `{}` is unknown to this broker (no tasks, no settings); known queues: {known}. \
         Check the name, or pass --create to act on a new queue",
        crate::output::safe(queue)
    ))))
}
