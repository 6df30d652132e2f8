//! The sandbox the `sealq` binary tests run in (`cli.rs`, `cli_keys.rs`):
//! a temporary directory with its own keyring and SQLite file.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

pub(crate) const BIN: &str = env!("CARGO_BIN_EXE_sealq");

/// A temporary directory with a keyring and a broker URL.
pub(crate) struct Sandbox {
    pub(crate) dir: tempfile::TempDir,
    pub(crate) keyring: PathBuf,
}

/// What a finished run printed.
pub(crate) struct Run {
    pub(crate) code: i32,
    pub(crate) stdout: String,
    pub(crate) stderr: String,
}

impl Sandbox {
    /// A fresh directory and keyring (`sealq keys generate > keyring.toml`).
    pub(crate) fn new() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let keyring = dir.path().join("keyring.toml");
        let sb = Sandbox { dir, keyring };
        let out = sb.run(&["keys", "generate"]);
        assert_eq!(out.code, 0, "keys generate: {}", out.stderr);
        write_private(&sb.keyring, out.stdout.as_bytes());
        sb
    }

    pub(crate) fn path(&self) -> &Path {
        self.dir.path()
    }

    /// The sandbox's broker URL (what `SEALQ_BROKER` is set to).
    pub(crate) fn url(&self) -> String {
        format!(
            "sqlite://{}?synchronous=normal",
            self.path().join("q.db").display()
        )
    }

    /// The binary with a clean, sandboxed environment.
    pub(crate) fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(BIN);
        c.args(args)
            .current_dir(self.path())
            .env_remove("SEALQ_KEYRING_TOML")
            .env_remove("RUST_LOG")
            .env(
                "SEALQ_BROKER",
                format!(
                    "sqlite://{}?synchronous=normal",
                    self.path().join("q.db").display()
                ),
            )
            .env("SEALQ_KEYRING", &self.keyring)
            .stdin(Stdio::null());
        c
    }

    pub(crate) fn run(&self, args: &[&str]) -> Run {
        finished(self.cmd(args).output().expect("run sealq"))
    }

    /// Enqueue and return the printed id.
    pub(crate) fn enqueue(&self, args: &[&str]) -> String {
        let mut all = vec!["enqueue"];
        all.extend_from_slice(args);
        let out = self.run(&all);
        assert_eq!(out.code, 0, "enqueue failed: {}", out.stderr);
        out.stdout.trim().to_owned()
    }

    /// `tasks list --json` as values.
    pub(crate) fn list(&self, extra: &[&str]) -> (Vec<Value>, String) {
        let mut args = vec!["tasks", "list", "--json"];
        args.extend_from_slice(extra);
        let out = self.run(&args);
        assert_eq!(out.code, 0, "tasks list: {}", out.stderr);
        let v: Value = serde_json::from_str(&out.stdout).expect("list --json is JSON");
        (
            v["tasks"].as_array().expect("an array of tasks").clone(),
            out.stdout,
        )
    }

    /// One queue's entry of `tasks stats --json`, and the whole output.
    pub(crate) fn queue_stats(&self, queue: &str) -> (Value, Run) {
        let stats = self.run(&["tasks", "stats", "--json"]);
        let v: Value = serde_json::from_str(&stats.stdout).expect("stats --json");
        let entry = v
            .as_array()
            .expect("an array")
            .iter()
            .find(|q| q["queue"] == queue)
            .unwrap_or_else(|| panic!("{queue} in stats: {}", stats.stdout))
            .clone();
        (entry, stats)
    }

    /// Start a worker in the background.
    pub(crate) fn spawn_worker(&self, args: &[&str]) -> Child {
        let mut all = vec!["worker"];
        all.extend_from_slice(args);
        self.cmd(&all)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn worker")
    }
}

pub(crate) fn finished(o: Output) -> Run {
    Run {
        code: o.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
    }
}

/// SIGTERM via `kill`, then collect the output.
pub(crate) fn terminate(child: Child) -> Run {
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("run kill");
    assert!(status.success());
    finished(child.wait_with_output().expect("wait for worker"))
}

/// Poll `check` every 50 ms for up to `secs` seconds.
pub(crate) fn eventually(secs: u64, mut check: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + Duration::from_secs(secs);
    while Instant::now() < end {
        if check() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    false
}

pub(crate) fn is_uuid(s: &str) -> bool {
    s.len() == 36
        && s.char_indices().all(|(i, c)| {
            if [8, 13, 18, 23].contains(&i) {
                c == '-'
            } else {
                c.is_ascii_hexdigit()
            }
        })
}

/// Write a keyring file as `Keyring::from_file` requires: mode 0600.
pub(crate) fn write_private(path: &std::path::Path, bytes: &[u8]) {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .and_then(|mut f| f.write_all(bytes))
        .expect("write keyring file");
}
