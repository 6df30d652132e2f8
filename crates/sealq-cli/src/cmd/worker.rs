//! `sealq worker --exec CMD`: run a shell command for each task.
//!
//! The command gets the opened payload as JSON on stdin and the task's
//! identity in its environment, which is otherwise nearly empty (see
//! [`super::exec_env`]: never the keyring or the broker URL). It runs in a
//! process group of its own, ended with it; its stdout becomes the task's
//! sealed result and the tail of its stderr the sealed error (see
//! [`super::exec`]). The worker itself logs ids, types and exit statuses
//! only, never payloads or the command's output.

use std::sync::Arc;

use sealq::{Priority, Worker};

use super::Global;
use super::exec::Runner;
use super::exec_env::ExecEnv;
use crate::args::WorkerArgs;
use crate::error::{CliError, CliResult, msg};

/// Build the worker, run it until SIGINT/SIGTERM, print its report as one line.
pub(crate) async fn run(global: &Global, args: WorkerArgs) -> CliResult {
    let queues = parse_queues(&args.queues)?;
    let env = ExecEnv::resolve(&args.exec_env, |n| std::env::var_os(n))?;
    let keyring = global.full_keyring("run a worker (it opens payloads)")?;
    let opened = global.open_broker()?;
    // Fail closed before the audit log is opened: a wrong keyring writes
    // nothing anywhere. (The library worker's own check, which would sample
    // the same tasks again, is turned off below.) First the check values
    // the broker recorded (they catch a wrong keyring with no task
    // waiting; this keyring's are recorded once accepted), then a sample of
    // the waiting tasks.
    let options = sealq::keyring_check::stored::RecordOptions {
        accept_new_keyring: args.accept_new_keyring,
        record: true,
    };
    sealq::keyring_check::stored::check_recorded_keys(&*opened.broker, &keyring, options).await?;
    let names: Vec<String> = queues.iter().map(|(q, _)| q.clone()).collect();
    let check =
        sealq::keyring_check::check_keyring(&*opened.broker, &keyring, Some(&names)).await?;
    if check.is_wrong_keyring() && !args.accept_new_keyring {
        return Err(CliError::usage(msg(
            check.refusal(&opened.broker.describe(), &keyring)
        )));
    }
    // Which store this worker serves (one started in the wrong directory
    // would otherwise wait on a new, empty `./sealq.db` in silence) is in
    // the worker's start line, shown by default (`logging::default_filter`).
    let auditor = super::audit::start(opened.audit_home(), args.audit, &keyring)?;
    let runner = Runner::new(&args.exec, env);
    let handler = runner.clone();
    // Metrics and health (crate::serve): the recorder before the worker
    // exists, so everything it does is counted.
    let keyring: Arc<sealq::Keyring> = Arc::new(keyring);
    let recorder = crate::serve::install_recorder(&args.serve)?;
    let sample_every = match args.serve.metrics_addr {
        Some(_) => args.serve.metrics_interval,
        None => std::time::Duration::ZERO,
    };
    let health = {
        let (broker, keyring) = (opened.broker.clone(), keyring.clone());
        let accept = args.accept_new_keyring;
        let names = names.clone();
        move || {
            sealq::health::Health::new(broker, keyring)
                .queues(names)
                .accept_new_keyring(accept)
        }
    };
    let mut builder = Worker::from_stores(opened.conn.stores(), keyring)
        .check_keyring(false)
        .queue_metrics_interval(sample_every);
    if let Some(a) = &auditor {
        builder = builder.audit(a.clone());
    }
    if let Some(n) = args.prefetch {
        builder = builder.prefetch(n);
    }
    let worker = builder
        .queues(queues)
        .priority(if args.strict {
            Priority::Strict
        } else {
            Priority::Weighted
        })
        .concurrency(args.concurrency)
        .shutdown_timeout(args.shutdown_timeout)
        // A handler panic's message may hold payload data: sealed as the
        // task's error, never printed (security review finding 9).
        .quiet_handler_panics(true)
        .handle_any(move |payload, ctx| {
            let runner = handler.clone();
            async move { runner.run(payload, ctx).await }
        })
        .build()?;
    let serving = crate::serve::start(&args.serve, recorder, health).await?;
    // Start-up is over: its code pages can go (see the module).
    crate::text_pages::release();
    let report = worker.run().await;
    // Commands of tasks the shutdown gave back: SIGKILL after their grace.
    runner.finish().await;
    serving.stop().await;
    super::audit::finish(auditor).await?;
    let report = report?;
    let line = serde_json::to_string(&report).map_err(|e| CliError::runtime(Box::new(e)))?;
    crate::stdout::outln!("{line}");
    Ok(())
}

/// `critical:6,default:3,low` → `[("critical", 6), ("default", 3), ("low", 1)]`.
pub(crate) fn parse_queues(spec: &str) -> CliResult<Vec<(String, u32)>> {
    let mut out: Vec<(String, u32)> = Vec::new();
    for part in spec.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (name, weight) = match part.rsplit_once(':') {
            Some((name, w)) if !w.is_empty() && w.bytes().all(|b| b.is_ascii_digit()) => {
                let w: u32 = w.parse().map_err(|_| {
                    CliError::usage(msg(format!("queue weight `{w}` is too large")))
                })?;
                if w == 0 {
                    return Err(CliError::usage(msg(format!(
                        "queue `{name}`: weight must be at least 1"
                    ))));
                }
                (name, w)
            }
            _ => (part, 1),
        };
        sealq::options::validate_queue_name(name)?;
        if out.iter().any(|(q, _)| q == name) {
            return Err(CliError::usage(msg(format!(
                "queue `{name}` is listed twice in --queues"
            ))));
        }
        out.push((name.to_owned(), weight));
    }
    if out.is_empty() {
        return Err(CliError::usage(msg(
            "--queues names no queue; e.g. --queues critical:6,default:3",
        )));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queue_weights() {
        let q = parse_queues("critical:6, default:3,low").unwrap();
        assert_eq!(
            q,
            vec![
                ("critical".to_owned(), 6),
                ("default".to_owned(), 3),
                ("low".to_owned(), 1)
            ]
        );
        // A colon inside a name without a numeric weight is part of the name.
        assert_eq!(parse_queues("a:b").unwrap(), vec![("a:b".to_owned(), 1)]);
        assert!(parse_queues("").is_err());
        assert!(parse_queues("a:0").is_err());
        assert!(parse_queues("a,a").is_err());
        assert!(parse_queues("bad queue").is_err());
    }
}
