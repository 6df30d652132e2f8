//! Issue 21: read-only commands never create a store, a worker says which
//! store it serves, and `sealq bench` refuses a store already in use. Each
//! through the real binary, with a temporary directory as working directory
//! and the default broker (`sqlite://./sealq.db`) unless a test names one.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

const BIN: &str = env!("CARGO_BIN_EXE_sealq");

/// What a finished run printed.
struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

/// Run `sealq` in `dir` with the default broker and the keyring `keyring`.
fn run(dir: &Path, keyring: Option<&Path>, args: &[&str]) -> Run {
    let mut c = Command::new(BIN);
    c.args(args)
        .current_dir(dir)
        .env_remove("SEALQ_BROKER")
        .env_remove("SEALQ_KEYRING")
        .env_remove("SEALQ_KEYRING_TOML")
        .env_remove("RUST_LOG")
        .stdin(Stdio::null());
    if let Some(k) = keyring {
        c.env("SEALQ_KEYRING", k);
    }
    let o = c.output().expect("run sealq");
    Run {
        code: o.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
    }
}

/// A keyring file in `dir` (mode 0600).
fn keyring(dir: &Path) -> PathBuf {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let out = run(dir, None, &["keys", "generate"]);
    assert_eq!(out.code, 0, "keys generate: {}", out.stderr);
    let path = dir.join("keyring.toml");
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&path)
        .and_then(|mut f| f.write_all(out.stdout.as_bytes()))
        .expect("write keyring");
    path
}

#[test]
fn read_only_commands_refuse_a_missing_store_and_create_none() {
    let dir = tempfile::tempdir().expect("tempdir");
    let keyring = keyring(dir.path());
    for args in [
        &["tasks", "list"][..],
        &["tasks", "stats"],
        &["payloads", "report"],
        &[
            "tasks",
            "reveal",
            "--id",
            "0190f7a2-1c3b-7def-8a12-3456789abcde",
        ],
    ] {
        let out = run(dir.path(), Some(&keyring), args);
        assert_eq!(out.code, 2, "{args:?}: {}{}", out.stdout, out.stderr);
        assert!(out.stderr.contains("sealq.db"), "{args:?}: {}", out.stderr);
        assert!(out.stderr.contains("--broker"), "{args:?}: {}", out.stderr);
        assert!(
            out.stderr.contains("SEALQ_BROKER"),
            "{args:?}: {}",
            out.stderr
        );
        assert!(
            !dir.path().join("sealq.db").exists(),
            "{args:?} created ./sealq.db"
        );
    }
    // A mistyped --broker file is named too, and not created either.
    let out = run(
        dir.path(),
        None,
        &["--broker", "sqlite://./typo.db", "tasks", "stats"],
    );
    assert_eq!(out.code, 2, "{}", out.stderr);
    assert!(out.stderr.contains("typo.db"), "{}", out.stderr);
    assert!(!dir.path().join("typo.db").exists());
}

#[test]
fn enqueue_still_creates_the_store_and_read_only_commands_then_read_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let keyring = keyring(dir.path());
    let out = run(
        dir.path(),
        Some(&keyring),
        &["enqueue", "-t", "t.echo", "--payload", "{}"],
    );
    assert_eq!(out.code, 0, "enqueue: {}", out.stderr);
    assert!(dir.path().join("sealq.db").exists());
    let out = run(dir.path(), None, &["tasks", "list"]);
    assert_eq!(out.code, 0, "tasks list: {}", out.stderr);
    assert!(out.stdout.contains("t.echo"), "{}", out.stdout);
}

#[test]
fn bench_refuses_a_store_already_in_use_and_leaves_its_tasks() {
    let dir = tempfile::tempdir().expect("tempdir");
    let keyring = keyring(dir.path());
    let out = run(
        dir.path(),
        Some(&keyring),
        &["enqueue", "-t", "t.echo", "--payload", "{}"],
    );
    assert_eq!(out.code, 0, "enqueue: {}", out.stderr);
    let id = out.stdout.trim().to_owned();
    let out = run(
        dir.path(),
        None,
        &["--broker", "sqlite://./sealq.db", "bench", "--tasks", "3"],
    );
    assert_ne!(out.code, 0, "bench ran on a store in use: {}", out.stdout);
    assert!(out.stderr.contains("empty store"), "{}", out.stderr);
    assert!(out.stderr.contains("throw-away keyring"), "{}", out.stderr);
    let out = run(dir.path(), None, &["tasks", "list", "--json"]);
    assert_eq!(out.code, 0, "tasks list: {}", out.stderr);
    assert!(out.stdout.contains(&id), "{id} gone: {}", out.stdout);
    assert_eq!(out.stdout.matches("t.echo").count(), 1, "{}", out.stdout);
    // An empty store named on the command line is still accepted.
    let out = run(
        dir.path(),
        None,
        &["--broker", "sqlite://./empty.db", "bench", "--tasks", "3"],
    );
    assert_eq!(out.code, 0, "bench on an empty store: {}", out.stderr);
}
