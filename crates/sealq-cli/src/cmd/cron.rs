//! `sealq cron run|next`: run cron schedules from the command line, or
//! check a pattern.

use sealq::{Client, EnqueueOptions, RawTask, Scheduler};

use super::Global;
use crate::args::{CronNextArgs, CronRunArgs};
use crate::error::{CliError, CliResult, msg};

/// One `--entry NAME;PATTERN;TYPE[;JSON]`, as (name, pattern, task).
fn parse_entry(text: &str, queue: &str) -> CliResult<(String, String, RawTask)> {
    let mut parts = text.splitn(4, ';').map(str::trim);
    let (Some(name), Some(pattern), Some(kind)) = (parts.next(), parts.next(), parts.next()) else {
        return Err(CliError::usage(msg(format!(
            "--entry `{text}`: expected NAME;PATTERN;TYPE[;JSON]"
        ))));
    };
    if name.is_empty() || pattern.is_empty() || kind.is_empty() {
        return Err(CliError::usage(msg(format!(
            "--entry `{text}`: NAME, PATTERN and TYPE must not be empty"
        ))));
    }
    let payload: serde_json::Value = match parts.next() {
        None | Some("") => serde_json::json!({}),
        // The payload is never echoed: its parse error names the position only.
        Some(json) => serde_json::from_str(json).map_err(|e| {
            CliError::usage(msg(format!(
                "--entry `{name}`: invalid JSON payload: {} at column {}",
                super::enqueue::describe_json_error(&e),
                e.column()
            )))
        })?,
    };
    let task = RawTask::from_json(kind, &payload, EnqueueOptions::new().queue(queue))?;
    Ok((name.to_owned(), pattern.to_owned(), task))
}

/// Run the schedules until SIGINT/SIGTERM; print the counters as JSON.
pub(crate) async fn run(global: &Global, args: CronRunArgs) -> CliResult {
    sealq::options::validate_queue_name(&args.queue)?;
    let entries = args
        .entries
        .iter()
        .map(|e| parse_entry(e, &args.queue))
        .collect::<CliResult<Vec<_>>>()?;
    let keyring = global.full_keyring("enqueue scheduled tasks")?;
    let opened = global.open_broker()?;
    let auditor = super::audit::start(opened.audit_home(), args.audit, &keyring)?;
    let mut client = Client::from_stores(opened.conn.stores(), keyring);
    if let Some(a) = &auditor {
        client = client.audit(a.clone());
    }
    let mut builder = Scheduler::builder(client.build());
    if let Some(tz) = &args.time_zone {
        builder = builder
            .time_zone(tz)
            .map_err(|e| CliError::usage(msg(e.to_string())))?;
    }
    for (name, pattern, task) in entries {
        builder = builder
            .add(&name, &pattern, task)
            .map_err(|e| CliError::usage(msg(e.to_string())))?;
    }
    let handle = builder.build()?.spawn();
    sealq::worker::shutdown_signal().await;
    let stats = handle.shutdown().await;
    super::audit::finish(auditor).await?;
    let line = serde_json::to_string(&stats).map_err(|e| CliError::runtime(Box::new(e)))?;
    crate::stdout::outln!("{line}");
    Ok(())
}

/// Print the next ticks of a pattern, one per line (RFC 3339, in the zone).
pub(crate) fn next(args: CronNextArgs) -> CliResult {
    let now = sealq::clock::wall_clock_ms();
    let ticks =
        sealq::scheduler::upcoming(&args.pattern, args.time_zone.as_deref(), now, args.count)
            .map_err(|e| CliError::usage(msg(e.to_string())))?;
    let tz = match &args.time_zone {
        Some(name) => {
            jiff::tz::TimeZone::get(name).map_err(|e| CliError::usage(msg(e.to_string())))?
        }
        None => jiff::tz::TimeZone::UTC,
    };
    for t in ticks {
        match jiff::Timestamp::from_millisecond(t) {
            Ok(ts) => crate::stdout::outln!("{}", ts.to_zoned(tz.clone())),
            Err(_) => crate::stdout::outln!("{t}"),
        }
    }
    Ok(())
}
