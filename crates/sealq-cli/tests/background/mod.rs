//! A `sealq` process running in the background (a worker), whose stderr
//! lines a test waits for, then stops with SIGTERM by its pid.

// Each test binary that includes this module uses part of it.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{Receiver, RecvTimeoutError, channel};
use std::time::{Duration, Instant};

/// A running process and the stderr lines it wrote so far.
pub(crate) struct Background {
    child: Option<Child>,
    lines: Receiver<String>,
    /// Every stderr line seen so far.
    pub(crate) stderr: Vec<String>,
}

/// What a stopped process left.
pub(crate) struct Stopped {
    pub(crate) code: Option<i32>,
    pub(crate) stdout: String,
    pub(crate) stderr: Vec<String>,
}

impl Background {
    /// Start `cmd` with stdout and stderr piped.
    pub(crate) fn spawn(mut cmd: Command) -> Self {
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start sealq");
        let err = child.stderr.take().expect("stderr");
        let (tx, lines) = channel();
        std::thread::spawn(move || {
            for line in BufReader::new(err).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        Background {
            child: Some(child),
            lines,
            stderr: Vec::new(),
        }
    }

    /// The process id.
    pub(crate) fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    /// Wait (at most `within`) for a stderr line `pred` accepts; returns it.
    pub(crate) fn wait_for(
        &mut self,
        within: Duration,
        what: &str,
        pred: impl Fn(&str) -> bool,
    ) -> String {
        if let Some(l) = self.stderr.iter().find(|l| pred(l)) {
            return l.clone();
        }
        let give_up = Instant::now() + within;
        loop {
            let left = give_up.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    self.stderr.push(line.clone());
                    if pred(&line) {
                        return line;
                    }
                }
                Err(RecvTimeoutError::Timeout) | Err(RecvTimeoutError::Disconnected) => panic!(
                    "no stderr line {what} within {within:?}; stderr so far:\n{}",
                    self.stderr.join("\n")
                ),
            }
        }
    }

    /// SIGTERM by pid, then wait (bounded) for the exit; SIGKILL if it hangs.
    pub(crate) fn terminate(mut self) -> Stopped {
        let mut child = self.child.take().expect("running");
        signal(child.id(), "-TERM");
        let give_up = Instant::now() + Duration::from_secs(30);
        let status = loop {
            if let Some(s) = child.try_wait().expect("wait") {
                break s;
            }
            if Instant::now() > give_up {
                let _ = child.kill();
                panic!("sealq did not stop within 30 s of SIGTERM");
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        let mut stdout = String::new();
        if let Some(mut out) = child.stdout.take() {
            let _ = out.read_to_string(&mut stdout);
        }
        // The reader thread ends at EOF.
        while let Ok(line) = self.lines.recv_timeout(Duration::from_secs(5)) {
            self.stderr.push(line);
        }
        Stopped {
            code: status.code(),
            stdout,
            stderr: std::mem::take(&mut self.stderr),
        }
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn signal(pid: u32, sig: &str) {
    let ok = Command::new("kill")
        .args([sig, &pid.to_string()])
        .status()
        .expect("run kill")
        .success();
    assert!(ok, "kill {sig} {pid} failed");
}
