//! One `sealq worker --exec` command run: what it gets, how it is ended, and
//! what becomes of its output.
//!
//! - **Input.** `sh -c CMD` gets the opened payload as one line of JSON on
//!   stdin and a nearly empty environment ([`super::exec_env`]: never the
//!   keyring or the broker URL) plus the task's identity.
//! - **Process group.** The command runs in a process group of its own, so
//!   everything it starts can be ended together, and a Ctrl-C meant for the
//!   worker's terminal does not reach it (the worker decides when it ends).
//!   When the command exits, when the task times out, and when a shutdown
//!   stops waiting for it, the whole group is sent SIGTERM, given
//!   [`KILL_GRACE`] to exit, then sent SIGKILL: no process it started
//!   outlives its task (a process that made itself a new session with
//!   `setsid` has left the group and is the command's own business).
//! - **stdout** is the task's result, sealed: at most [`STDOUT_LIMIT`]
//!   bytes. One JSON document is stored as that value; any other text as a
//!   string; bytes that are not UTF-8 as binary. Empty output stores no
//!   result. More than the limit fails the task without a retry (archived
//!   `skip_retry`, the error says so): a truncated result would be wrong
//!   data that looks right, and running the command again would print as
//!   much again.
//! - **stderr** is kept as a tail: its last [`STDERR_TAIL`] bytes, sealed as
//!   the task's error when the command fails (exit status not 0, or killed
//!   by a signal), after a line saying how it ended. A task that times out
//!   gets the worker's "timed out" error instead.
//!
//! Neither stream reaches the worker's own stdout, stderr or logs: they may
//! quote the payload. The worker logs ids, types and exit statuses only.

use std::collections::HashSet;
use std::os::unix::process::ExitStatusExt;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rustix::process::{Pid, Signal, kill_process_group, test_kill_process_group};
use sealq::{RawPayload, TaskContext, TaskError};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::process::Command;
use tracing::{debug, warn};

use super::exec_env::ExecEnv;

/// The most stdout a command may print: it becomes the sealed result, and a
/// result is stored with the task like a payload (the same 64 KiB as the
/// default payload budget).
pub(crate) const STDOUT_LIMIT: usize = 64 * 1024;

/// How much of the end of stderr is kept as the sealed error.
pub(crate) const STDERR_TAIL: usize = 4 * 1024;

/// How long the process group has between SIGTERM and SIGKILL.
pub(crate) const KILL_GRACE: Duration = Duration::from_secs(2);

/// Runs the `--exec` command for each task, and ends what is still running
/// when the worker stops ([`Runner::finish`]).
#[derive(Debug, Clone)]
pub(crate) struct Runner {
    exec: Arc<str>,
    env: Arc<ExecEnv>,
    ending: Ending,
}

impl Runner {
    /// A runner of `sh -c exec` in the environment `env` describes.
    pub(crate) fn new(exec: &str, env: ExecEnv) -> Self {
        Runner {
            exec: Arc::from(exec),
            env: Arc::new(env),
            ending: Ending::default(),
        }
    }

    /// Run the command for one task: exit 0 succeeds (stdout is the result);
    /// anything else retries with the stderr tail as the error.
    pub(crate) async fn run(&self, payload: RawPayload, ctx: TaskContext) -> Result<(), TaskError> {
        let mut stdin_bytes = input(payload)?;
        let mut child = Command::new("sh")
            .arg("-c")
            .arg(&*self.exec)
            // Not the worker's environment: that holds the keyring (every
            // key) and the broker's password. The command gets one payload.
            .env_clear()
            .envs(self.env.vars())
            .env("SEALQ_TASK_ID", ctx.id().to_string())
            .env("SEALQ_TASK_TYPE", ctx.kind())
            .env("SEALQ_QUEUE", ctx.queue())
            .env("SEALQ_ATTEMPT", ctx.attempt().to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            // Its own group, led by `sh`: the group id is its pid.
            .process_group(0)
            // The group guard ends it (SIGTERM, grace, SIGKILL); tokio
            // reaps a dropped child in the background.
            .kill_on_drop(false)
            .spawn()
            .map_err(|e| {
                wipe(&mut stdin_bytes);
                warn!(id = %ctx.id(), error = %e, "cannot start the command");
                TaskError::retry(format!("cannot start `sh`: {e}"))
            })?;
        // Ended however this future ends: returned, or dropped on a timeout
        // or a shutdown.
        let mut group = child
            .id()
            .and_then(|id| i32::try_from(id).ok())
            .and_then(Pid::from_raw)
            .map(|pid| Group::new(pid, self.ending.clone()));

        // Readers of the pipes, aborted if this run is dropped (a process
        // that left the group could otherwise keep them waiting forever).
        let stdout = child
            .stdout
            .take()
            .map(|s| Reader(tokio::spawn(read_bounded(s))));
        let stderr = child
            .stderr
            .take()
            .map(|s| Reader(tokio::spawn(read_tail(s))));
        let stdin = child.stdin.take();
        let feed = async move {
            if let Some(mut stdin) = stdin {
                // A command that does not read its input closes the pipe
                // early: that is its business, not an error.
                let _ = stdin.write_all(&stdin_bytes).await;
                let _ = stdin.shutdown().await;
            }
            wipe(&mut stdin_bytes);
        };
        let finished = tokio::select! {
            (_, status) = async { tokio::join!(feed, child.wait()) } => Some(status),
            _ = ctx.cancellation().cancelled() => None,
        };
        // Whatever it left running goes too; the pipes then reach their end.
        if let Some(g) = group.as_mut() {
            g.end().await;
        }
        let Some(status) = finished else {
            debug!(id = %ctx.id(), "task cancelled; command ended");
            return Err(TaskError::retry("cancelled: the command was ended"));
        };
        let status =
            status.map_err(|e| TaskError::retry(format!("waiting for the command failed: {e}")))?;
        let how = match (status.code(), status.signal()) {
            (Some(0), _) => None,
            (Some(code), _) => Some(format!("command exited with status {code}")),
            (None, Some(sig)) => Some(format!("command killed by signal {sig}")),
            (None, None) => Some("command ended without a status".to_owned()),
        };
        if let Some(how) = how {
            debug!(id = %ctx.id(), status = %how, "command failed");
            let tail = collect(stderr).await.unwrap_or_default();
            return Err(TaskError::retry(with_stderr(how, &tail)));
        }
        let out = collect(stdout).await.unwrap_or_default();
        if out.total > STDOUT_LIMIT {
            return Err(TaskError::skip_retry(format!(
                "the command printed {} bytes on stdout; a result holds at most {STDOUT_LIMIT} \
                 bytes: write large output elsewhere and print a reference to it",
                out.total
            )));
        }
        if !out.kept.is_empty() {
            store_result(&ctx, out.kept)?;
        }
        debug!(id = %ctx.id(), "command succeeded");
        Ok(())
    }

    /// Wait out the grace of every group still being ended, then SIGKILL
    /// what is left: called once the worker stopped, before the process
    /// exits (a timer of a dropped run would otherwise die with it).
    pub(crate) async fn finish(&self) {
        let due: Vec<Pid> = {
            let map = self.ending.0.lock().unwrap_or_else(|p| p.into_inner());
            map.iter().copied().collect()
        };
        if due.is_empty() {
            return;
        }
        tokio::time::sleep(KILL_GRACE).await;
        for pid in due {
            self.ending.kill_if_pending(pid);
        }
    }
}

/// The payload as one line of JSON, the command's stdin.
fn input(payload: RawPayload) -> Result<Vec<u8>, TaskError> {
    let json = payload
        .to_json()
        .map_err(|e| TaskError::skip_retry(format!("payload is not representable as JSON: {e}")))?;
    drop(payload);
    let mut bytes = serde_json::to_vec(&json)
        .map_err(|e| TaskError::skip_retry(format!("cannot encode payload as JSON: {e}")))?;
    drop(json);
    bytes.push(b'\n');
    Ok(bytes)
}

/// Store stdout as the result: one JSON document as its value, other text
/// as a string, other bytes as binary.
fn store_result(ctx: &TaskContext, bytes: Vec<u8>) -> Result<(), TaskError> {
    let stored = if let Ok(value) = serde_json::from_slice::<serde_json::Value>(&bytes) {
        ctx.set_result(&value)
    } else {
        match String::from_utf8(bytes) {
            Ok(text) => ctx.set_result(&text),
            Err(e) => ctx.set_result(&Binary(e.as_bytes())),
        }
    };
    stored.map_err(|e| TaskError::skip_retry(format!("cannot store the command's stdout: {e}")))
}

/// Bytes serialised as MessagePack binary, not as a list of numbers.
struct Binary<'a>(&'a [u8]);

impl serde::Serialize for Binary<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(self.0)
    }
}

/// `how` the command ended, then the tail of its stderr.
fn with_stderr(how: String, tail: &Output) -> String {
    if tail.kept.is_empty() {
        return format!("{how}; it printed nothing on stderr");
    }
    let text = String::from_utf8_lossy(&tail.kept);
    if tail.total > tail.kept.len() {
        format!(
            "{how}; the last {} of {} bytes of its stderr:\n{text}",
            tail.kept.len(),
            tail.total
        )
    } else {
        format!("{how}; its stderr:\n{text}")
    }
}

/// What was read from one of the command's streams.
#[derive(Debug, Default)]
struct Output {
    /// The bytes kept.
    kept: Vec<u8>,
    /// How many bytes the stream carried in all.
    total: usize,
}

/// Wait for a reader, once the group is gone. A process that left the group
/// (`setsid`) may still hold the pipe open: then what was read so far is
/// lost rather than the task held forever.
async fn collect(reader: Option<Reader>) -> Option<Output> {
    let mut reader = reader?;
    match tokio::time::timeout(KILL_GRACE, &mut reader.0).await {
        Ok(Ok(out)) => Some(out),
        // Panicked or aborted; a timeout aborts it when `reader` drops.
        Ok(Err(_)) | Err(_) => None,
    }
}

/// A pipe reader task, aborted when dropped.
struct Reader(tokio::task::JoinHandle<Output>);

impl Drop for Reader {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Read a stream to its end, keeping its first [`STDOUT_LIMIT`] + 1 bytes
/// (one more tells "over the limit") and counting the rest, so a command
/// that prints too much is never blocked on a full pipe.
async fn read_bounded(mut stream: impl AsyncRead + Unpin) -> Output {
    let mut out = Output::default();
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                let room = (STDOUT_LIMIT + 1).saturating_sub(out.kept.len());
                out.kept.extend_from_slice(&buf[..n.min(room)]);
                out.total = out.total.saturating_add(n);
            }
        }
    }
    out
}

/// Read a stream to its end, keeping its last [`STDERR_TAIL`] bytes.
async fn read_tail(mut stream: impl AsyncRead + Unpin) -> Output {
    let mut out = Output::default();
    let mut buf = vec![0u8; 8 * 1024];
    loop {
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                out.kept.extend_from_slice(&buf[..n]);
                if out.kept.len() > STDERR_TAIL {
                    let cut = out.kept.len() - STDERR_TAIL;
                    out.kept.drain(..cut);
                }
                out.total = out.total.saturating_add(n);
            }
        }
    }
    out
}

/// The process groups being ended after their run was dropped: SIGTERM
/// sent, SIGKILL due after [`KILL_GRACE`].
#[derive(Debug, Clone, Default)]
struct Ending(Arc<Mutex<HashSet<Pid>>>);

impl Ending {
    /// SIGKILL the group if it is still waiting for one (once).
    fn kill_if_pending(&self, pid: Pid) {
        let pending = self
            .0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&pid);
        if pending {
            let _ = kill_process_group(pid, Signal::KILL);
        }
    }
}

/// A command's process group, ended when the run ends or is dropped.
#[derive(Debug)]
struct Group {
    pid: Pid,
    ended: bool,
    ending: Ending,
}

impl Group {
    fn new(pid: Pid, ending: Ending) -> Self {
        Group {
            pid,
            ended: false,
            ending,
        }
    }

    /// Whether any process of the group is still there.
    fn alive(&self) -> bool {
        test_kill_process_group(self.pid).is_ok()
    }

    /// SIGTERM the group, give it [`KILL_GRACE`], SIGKILL what is left.
    /// Returns at once when the group is already gone.
    async fn end(&mut self) {
        if !self.alive() {
            self.ended = true;
            return;
        }
        let _ = kill_process_group(self.pid, Signal::TERM);
        let until = tokio::time::Instant::now() + KILL_GRACE;
        while self.alive() && tokio::time::Instant::now() < until {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        if self.alive() {
            let _ = kill_process_group(self.pid, Signal::KILL);
        }
        self.ended = true;
    }
}

impl Drop for Group {
    /// Dropped mid-run (the task timed out, or a shutdown stopped waiting):
    /// SIGTERM now, SIGKILL after the grace, from a timer task (or at once
    /// outside a runtime). [`Runner::finish`] sends what a timer could not.
    fn drop(&mut self) {
        if self.ended || !self.alive() {
            return;
        }
        let _ = kill_process_group(self.pid, Signal::TERM);
        let pid = self.pid;
        self.ending
            .0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(pid);
        let ending = self.ending.clone();
        match tokio::runtime::Handle::try_current() {
            Ok(handle) => {
                handle.spawn(async move {
                    tokio::time::sleep(KILL_GRACE).await;
                    ending.kill_if_pending(pid);
                });
            }
            Err(_) => ending.kill_if_pending(pid),
        }
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

    #[tokio::test]
    async fn stdout_is_bounded_and_counted() {
        let big = vec![b'x'; STDOUT_LIMIT * 2];
        let out = read_bounded(&big[..]).await;
        assert_eq!(out.total, STDOUT_LIMIT * 2);
        assert_eq!(out.kept.len(), STDOUT_LIMIT + 1);
    }

    #[tokio::test]
    async fn stderr_keeps_its_tail() {
        let mut text = vec![b'a'; 10_000];
        text.extend_from_slice(b"the end");
        let out = read_tail(&text[..]).await;
        assert_eq!(out.total, 10_007);
        assert_eq!(out.kept.len(), STDERR_TAIL);
        assert!(out.kept.ends_with(b"the end"));
        let msg = with_stderr("command exited with status 3".into(), &out);
        assert!(msg.starts_with("command exited with status 3; the last 4096 of 10007 bytes"));
    }
}
