//! `sealq payloads report` end to end: the real binary over its own SQLite file.

use std::process::{Command, Output, Stdio};

use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_sealq");

struct Sandbox {
    dir: tempfile::TempDir,
}

impl Sandbox {
    fn new() -> Self {
        let sb = Sandbox {
            dir: tempfile::tempdir().expect("tempdir"),
        };
        let out = sb.run(&["keys", "generate"]);
        assert!(out.status.success());
        write_private(&sb.dir.path().join("keyring.toml"), &out.stdout);
        sb
    }

    fn run(&self, args: &[&str]) -> Output {
        Command::new(BIN)
            .args(args)
            .current_dir(self.dir.path())
            .env_remove("SEALQ_KEYRING_TOML")
            .env_remove("RUST_LOG")
            .env(
                "SEALQ_BROKER",
                format!(
                    "sqlite://{}?synchronous=normal",
                    self.dir.path().join("q.db").display()
                ),
            )
            .env("SEALQ_KEYRING", self.dir.path().join("keyring.toml"))
            .stdin(Stdio::null())
            .output()
            .expect("run sealq")
    }

    fn enqueue(&self, kind: &str, queue: &str, payload: &str) {
        let out = self.run(&["enqueue", "-t", kind, "-q", queue, "--payload", payload]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[test]
fn report_ranks_largest_first_and_checks_budgets() {
    let sb = Sandbox::new();
    let big = format!(r#"{{"doc":"{}"}}"#, "x".repeat(3000));
    sb.enqueue("reports.render", "reports", &big);
    sb.enqueue("reports.render", "reports", r#"{"doc":"short"}"#);
    sb.enqueue("emails.welcome", "default", r#"{"user":"u_1"}"#);

    let out = sb.run(&[
        "payloads",
        "report",
        "--json",
        "--queue-budget",
        "reports=2048",
    ]);
    assert!(out.status.success());
    let v: Value = serde_json::from_slice(&out.stdout).expect("JSON");
    let rows = v.as_array().expect("array");
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[0]["type"], "reports.render");
    assert_eq!(rows[0]["count"], 2);
    assert_eq!(rows[0]["budget"], 2048);
    assert_eq!(rows[0]["over_budget"], 1);
    assert_eq!(rows[1]["type"], "emails.welcome");
    assert_eq!(rows[1]["budget"], 65536);
    assert_eq!(rows[1]["over_budget"], 0);

    let text = sb.run(&["payloads", "report", "--queue-budget", "reports=2048"]);
    let stdout = String::from_utf8_lossy(&text.stdout);
    assert!(text.status.success());
    assert!(stdout.contains("OVER BUDGET (1 tasks)"), "{stdout}");
    assert!(stdout.contains("Refactor the largest first"), "{stdout}");
    assert!(!stdout.contains("xxxx"), "no payload content: {stdout}");

    // --check fails (exit 1) when a type is over budget, passes otherwise.
    let check = sb.run(&["payloads", "report", "--check", "--budget", "16"]);
    assert_eq!(check.status.code(), Some(1));
    let check = sb.run(&["payloads", "report", "--check"]);
    assert_eq!(check.status.code(), Some(0));

    let bad = sb.run(&["payloads", "report", "--queue-budget", "reports"]);
    assert_eq!(bad.status.code(), Some(2));
}

/// Write a keyring file as `Keyring::from_file` requires: mode 0600.
fn write_private(path: &std::path::Path, bytes: &[u8]) {
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
