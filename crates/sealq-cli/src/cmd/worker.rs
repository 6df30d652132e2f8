//! `sealq worker --exec CMD`: run a shell command for each task.
//!
//! The command gets the opened payload as JSON on stdin and the task's
//! identity in its environment, which is otherwise nearly empty (see
//! [`super::exec_env`]: never the keyring or the broker URL). Its stdout and
//! stderr are the worker's own:
//! the user's program decides what it prints. The worker itself logs ids,
//! types and exit statuses only, never payloads or the command's output.

use std::os::unix::process::ExitStatusExt;
use std::process::Stdio;
use std::sync::Arc;

use sealq::{Priority, RawPayload, TaskContext, TaskError, Worker};
use tokio::io::AsyncWriteExt;
use tokio::process::Command;
use tracing::{debug, warn};

use super::Global;
use super::exec_env::ExecEnv;
use crate::args::WorkerArgs;
use crate::error::{CliError, CliResult, msg};

/// Build the worker, run it until SIGINT/SIGTERM, print its report as one line.
pub(crate) async fn run(global: &Global, args: WorkerArgs) -> CliResult {
    let queues = parse_queues(&args.queues)?;
    let env = Arc::new(ExecEnv::resolve(&args.exec_env, |n| std::env::var_os(n))?);
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
    let exec: Arc<str> = Arc::from(args.exec.as_str());
    let mut builder = Worker::from_stores(opened.conn.stores(), keyring).check_keyring(false);
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
        .handle_any(move |payload, ctx| run_command(exec.clone(), env.clone(), payload, ctx))
        .build()?;
    let report = worker.run().await;
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

/// Run `sh -c CMD` for one task in the environment `env` describes plus the
/// task's identity. Exit 0 succeeds; anything else retries.
async fn run_command(
    exec: Arc<str>,
    env: Arc<ExecEnv>,
    payload: RawPayload,
    ctx: TaskContext,
) -> Result<(), TaskError> {
    let json = payload
        .to_json()
        .map_err(|e| TaskError::skip_retry(format!("payload is not representable as JSON: {e}")))?;
    drop(payload);
    let mut stdin_bytes = serde_json::to_vec(&json)
        .map_err(|e| TaskError::skip_retry(format!("cannot encode payload as JSON: {e}")))?;
    drop(json);
    stdin_bytes.push(b'\n');

    let mut child = Command::new("sh")
        .arg("-c")
        .arg(&*exec)
        // Not the worker's environment: that holds the keyring (every key)
        // and the broker's password. The command gets one opened payload.
        .env_clear()
        .envs(env.vars())
        .env("SEALQ_TASK_ID", ctx.id().to_string())
        .env("SEALQ_TASK_TYPE", ctx.kind())
        .env("SEALQ_QUEUE", ctx.queue())
        .env("SEALQ_ATTEMPT", ctx.attempt().to_string())
        .stdin(Stdio::piped())
        .stdout(Stdio::inherit())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| {
            warn!(id = %ctx.id(), error = %e, "cannot start the command");
            TaskError::retry(format!("cannot start `sh`: {e}"))
        })?;

    let stdin = child.stdin.take();
    let feed = async move {
        if let Some(mut stdin) = stdin {
            // A command that does not read its input closes the pipe early:
            // that is its business, not an error.
            let _ = stdin.write_all(&stdin_bytes).await;
            let _ = stdin.shutdown().await;
        }
        wipe(&mut stdin_bytes);
    };
    let finished = tokio::select! {
        (_, status) = async { tokio::join!(feed, child.wait()) } => Some(status),
        _ = ctx.cancellation().cancelled() => None,
    };
    let Some(status) = finished else {
        // kill_on_drop would also kill it; do it explicitly so the process is
        // gone before the task is given back.
        let _ = child.kill().await;
        debug!(id = %ctx.id(), "task cancelled; command killed");
        return Err(TaskError::retry("cancelled: the command was killed"));
    };
    let status =
        status.map_err(|e| TaskError::retry(format!("waiting for the command failed: {e}")))?;
    match (status.code(), status.signal()) {
        (Some(0), _) => {
            debug!(id = %ctx.id(), "command succeeded");
            Ok(())
        }
        (Some(code), _) => {
            debug!(id = %ctx.id(), code, "command failed");
            Err(TaskError::retry(format!(
                "command exited with status {code}"
            )))
        }
        (None, Some(sig)) => Err(TaskError::retry(format!("command killed by signal {sig}"))),
        (None, None) => Err(TaskError::retry("command ended without a status")),
    }
}

/// Overwrite a buffer that held plaintext.
fn wipe(buf: &mut [u8]) {
    for b in buf.iter_mut() {
        // Volatile-free best effort; the allocation is freed right after.
        *b = 0;
    }
    std::hint::black_box(&*buf);
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
