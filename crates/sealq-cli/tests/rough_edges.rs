//! Issue 21's "rough edges seen as a new user", each through the real
//! binary on the default SQLite broker.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

const BIN: &str = env!("CARGO_BIN_EXE_sealq");

/// A temporary directory with a keyring and an SQLite broker.
struct Sandbox {
    dir: tempfile::TempDir,
    keyring: PathBuf,
}

/// What a finished run printed.
struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

impl Sandbox {
    fn new() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let keyring = dir.path().join("keyring.toml");
        let sb = Sandbox { dir, keyring };
        let out = sb.run(&["keys", "generate"]);
        assert_eq!(out.code, 0, "keys generate: {}", out.stderr);
        write_private(&sb.keyring, out.stdout.as_bytes());
        sb
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(BIN);
        c.args(args)
            .current_dir(self.path())
            .env_remove("SEALQ_KEYRING_TOML")
            .env_remove("RUST_LOG")
            .env(
                "SEALQ_BROKER",
                format!("sqlite://{}", self.path().join("q.db").display()),
            )
            .env("SEALQ_KEYRING", &self.keyring)
            .stdin(Stdio::null());
        c
    }

    fn run(&self, args: &[&str]) -> Run {
        finished(self.cmd(args).output().expect("run sealq"))
    }

    /// Run with stdout a pipe whose reader is already closed.
    fn run_into_closed_pipe(&self, args: &[&str]) -> Run {
        let (reader, writer) = std::io::pipe().expect("pipe");
        drop(reader);
        let o = self
            .cmd(args)
            .stdout(writer)
            .stderr(Stdio::piped())
            .output()
            .expect("run sealq");
        finished(o)
    }

    fn enqueue(&self, args: &[&str]) -> String {
        let mut all = vec!["enqueue"];
        all.extend_from_slice(args);
        let out = self.run(&all);
        assert_eq!(out.code, 0, "enqueue failed: {}", out.stderr);
        out.stdout.trim().to_owned()
    }
}

fn finished(o: Output) -> Run {
    Run {
        code: o.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
    }
}

fn write_private(path: &Path, bytes: &[u8]) {
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

#[test]
fn a_closed_stdout_ends_commands_quietly() {
    let sb = Sandbox::new();
    for i in 0..3 {
        sb.enqueue(&["--type", "t", "--payload", &format!("{{\"n\":{i}}}")]);
    }
    for args in [
        &["tasks", "list"][..],
        &["tasks", "list", "--json"],
        &["tasks", "stats"],
        &["keys", "generate"],
        &["enqueue", "--type", "t", "--payload", "{}"],
    ] {
        let out = sb.run_into_closed_pipe(args);
        assert!(
            !out.stderr.contains("panicked"),
            "{args:?} panicked: {}",
            out.stderr
        );
        assert_eq!(out.code, 0, "{args:?}: {}", out.stderr);
        assert_eq!(out.stderr, "", "{args:?} said something on stderr");
    }
}

#[test]
fn a_missing_keyring_is_explained_not_debug_printed() {
    let sb = Sandbox::new();
    let out = finished(
        sb.cmd(&["enqueue", "--type", "t", "--payload", "{}"])
            .env_remove("SEALQ_KEYRING")
            .output()
            .expect("run sealq"),
    );
    assert_eq!(out.code, 2, "{}", out.stderr);
    assert!(out.stderr.contains("SEALQ_KEYRING"), "{}", out.stderr);
    assert!(out.stderr.contains("--keyring"), "{}", out.stderr);
    assert!(!out.stderr.contains("NoKeyring"), "{}", out.stderr);
}

#[test]
fn queues_actions_refuse_a_queue_the_broker_has_never_seen() {
    let sb = Sandbox::new();
    sb.enqueue(&["--queue", "mail", "--type", "t", "--payload", "{}"]);
    for args in [
        &["queues", "pause", "--queue", "mial"][..],
        &["queues", "resume", "--queue", "mial"],
        &["queues", "limit", "--queue", "mial", "--max-depth", "5"],
        &[
            "queues", "rate", "--queue", "mial", "--limit", "5", "--per", "1s",
        ],
    ] {
        let out = sb.run(args);
        assert_eq!(out.code, 2, "{args:?}: {}", out.stderr);
        assert!(
            out.stderr.contains("`mial`") && out.stderr.contains("known queues: `mail`"),
            "{args:?}: {}",
            out.stderr
        );
        assert!(out.stderr.contains("--create"), "{}", out.stderr);
    }
    let stats = sb.run(&["tasks", "stats", "--json"]);
    assert!(!stats.stdout.contains("mial"), "created: {}", stats.stdout);

    // A known queue needs no flag; --create sets up a new one.
    assert_eq!(sb.run(&["queues", "pause", "--queue", "mail"]).code, 0);
    let out = sb.run(&["queues", "pause", "--queue", "reports", "--create"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let stats = sb.run(&["tasks", "stats", "--json"]);
    assert!(stats.stdout.contains("\"reports\""), "{}", stats.stdout);
    // Now paused, it is known: resume needs no flag.
    assert_eq!(sb.run(&["queues", "resume", "--queue", "reports"]).code, 0);
    let help = sb.run(&["queues", "pause", "--help"]);
    assert!(help.stdout.contains("--create"), "{}", help.stdout);
}

#[test]
fn rerun_and_delete_exit_1_when_a_named_task_was_not_acted_on() {
    let sb = Sandbox::new();
    let pending = sb.enqueue(&["--type", "t", "--payload", "{}"]);
    let absent = "0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b";

    // Rerun of a pending task: nothing moves.
    let out = sb.run(&["tasks", "rerun", "--id", &pending]);
    assert_eq!(out.code, 1, "{}", out.stderr);
    assert!(out.stderr.contains("no task matched"), "{}", out.stderr);
    assert!(out.stdout.contains("re-queued 0 of 1"), "{}", out.stdout);

    // Delete of an id that never existed.
    let out = sb.run(&["tasks", "delete", "--id", absent]);
    assert_eq!(out.code, 1, "{}", out.stderr);
    assert!(out.stderr.contains("no task matched"), "{}", out.stderr);

    // One of two: the other is deleted, and the exit says one was missed.
    let out = sb.run(&["tasks", "delete", "--id", &format!("{pending},{absent}")]);
    assert_eq!(out.code, 1, "{}", out.stderr);
    assert!(out.stdout.contains("deleted 1 of 2"), "{}", out.stdout);
    assert!(out.stderr.contains("1 of the 2"), "{}", out.stderr);

    // Every id acted on (named twice counts once): exit 0.
    let id = sb.enqueue(&["--type", "t", "--payload", "{}"]);
    let out = sb.run(&["tasks", "delete", "--id", &format!("{id},{id}")]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(out.stdout.contains("deleted 1 of 1"), "{}", out.stdout);
    let help = sb.run(&["tasks", "--help"]);
    assert!(help.stdout.contains("Exits 1"), "{}", help.stdout);
}

#[test]
fn help_and_errors_say_what_unique_cron_and_prefetch_take() {
    let sb = Sandbox::new();
    let help = sb.run(&["enqueue", "--help"]).stdout;
    let unique = help
        .lines()
        .skip_while(|l| !l.contains("--unique <KEY>"))
        .take(3)
        .collect::<Vec<_>>()
        .join(" ");
    assert!(unique.contains("needs --unique-ttl"), "{help}");
    let out = sb.run(&["enqueue", "--type", "t", "--unique", "k"]);
    assert_eq!(out.code, 2, "{}", out.stderr);
    assert!(out.stderr.contains("--unique-ttl"), "{}", out.stderr);

    // The parser takes five, six or seven fields; error and help say so.
    for ok in ["0 2 * * *", "0 0 2 * * *", "0 0 2 * * * 2099"] {
        let out = sb.run(&["cron", "next", "--pattern", ok, "--count", "1"]);
        assert_eq!(out.code, 0, "{ok}: {}", out.stderr);
    }
    let out = sb.run(&["cron", "next", "--pattern", "0 2 * *"]);
    assert_eq!(out.code, 2, "{}", out.stderr);
    for said in [&out.stderr, &sb.run(&["cron", "next", "--help"]).stdout] {
        assert!(
            said.contains("five fields") && said.contains("six with seconds first"),
            "{said}"
        );
        assert!(said.contains("seven with"), "{said}");
    }

    // --prefetch: adaptive by default, as the README says.
    let help = sb.run(&["worker", "--help"]).stdout;
    assert!(help.contains("adapts to the task rate"), "{help}");
    assert!(
        !help.contains("default: as many as --concurrency"),
        "{help}"
    );
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../README.md"))
        .expect("README");
    assert!(
        readme.contains("the prefetch adapts to the task rate"),
        "README and help disagree"
    );
}
