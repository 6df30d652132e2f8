//! Issue 21, Observability, "Logs": `--log-format json` through the real
//! binary. A worker says at start what it serves; failures, retries and
//! archives are WARN lines with the task's id, type, queue, attempt and
//! reason; no line holds a payload byte.

mod background;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use background::Background;
use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_sealq");
/// Payload data that must never be logged.
const MARKER: &str = "walrus-cobalt-5521-payload";

fn sealq(dir: &Path, keyring: &Path, args: &[&str]) -> Command {
    let mut c = Command::new(BIN);
    c.args(args)
        .current_dir(dir)
        .env_remove("SEALQ_KEYRING_TOML")
        .env_remove("SEALQ_LOG_FORMAT")
        .env_remove("RUST_LOG")
        .env("SEALQ_BROKER", "sqlite://q.db")
        .env("SEALQ_KEYRING", keyring)
        .env("SEALQ_AUDIT", "off")
        .stdin(Stdio::null());
    c
}

fn keyring(dir: &Path) -> PathBuf {
    let path = dir.join("keyring.toml");
    let out = Command::new(BIN)
        .args(["keys", "generate"])
        .output()
        .unwrap();
    assert!(out.status.success());
    std::fs::write(&path, &out.stdout).unwrap();
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    path
}

fn json_lines(lines: &[String]) -> Vec<Value> {
    lines
        .iter()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not a JSON line ({e}): {l}")))
        .collect()
}

#[test]
fn logs_json_worker_start_line_and_warn_per_failure_without_payload() {
    let dir = tempfile::tempdir().unwrap();
    let k = keyring(dir.path());
    let payload = format!(r#"{{"note":"{MARKER}"}}"#);
    let out = sealq(
        dir.path(),
        &k,
        &[
            "enqueue",
            "--queue",
            "mail",
            "--type",
            "mail.send",
            "--max-retries",
            "1",
            "--payload",
            &payload,
        ],
    )
    .output()
    .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let id = String::from_utf8_lossy(&out.stdout).trim().to_owned();

    // The command reads its input and fails: a retry, then archived.
    let mut worker = Background::spawn(sealq(
        dir.path(),
        &k,
        &[
            "--log-format",
            "json",
            "worker",
            "--queues",
            "mail,other:2",
            "--concurrency",
            "3",
            "--exec",
            "cat > /dev/null; exit 3",
        ],
    ));
    let pid = worker.pid();
    worker.wait_for(Duration::from_secs(60), "archiving the task", |l| {
        l.contains("task archived")
    });
    let stopped = worker.terminate();
    assert_eq!(stopped.code, Some(0), "{}", stopped.stderr.join("\n"));
    let all = format!("{}\n{}", stopped.stdout, stopped.stderr.join("\n"));
    assert!(!all.contains(MARKER), "a payload byte was printed:\n{all}");

    let lines = json_lines(&stopped.stderr);
    let start = lines
        .iter()
        .find(|v| v["message"] == "worker started")
        .unwrap_or_else(|| panic!("no start line: {lines:?}"));
    assert_eq!(start["level"], "INFO", "{start}");
    assert!(
        start["broker"].as_str().unwrap().starts_with("sqlite://"),
        "{start}"
    );
    let store = dir.path().canonicalize().unwrap().join("q.db");
    assert_eq!(start["store"], store.display().to_string(), "{start}");
    assert_eq!(start["queues"], "mail,other", "{start}");
    assert_eq!(start["concurrency"], 3, "{start}");
    let worker_id = start["worker"].as_str().unwrap();
    assert!(worker_id.ends_with(&format!(":{pid}")), "HOST:PID: {start}");

    let warns: Vec<&Value> = lines
        .iter()
        .filter(|v| v["level"] == "WARN" && v["task_id"] == id.as_str())
        .collect();
    let retry = warns
        .iter()
        .find(|v| v["message"] == "task failed; will retry")
        .unwrap_or_else(|| panic!("no WARN for the failed attempt: {lines:?}"));
    assert_eq!(retry["task_type"], "mail.send", "{retry}");
    assert_eq!(retry["queue"], "mail", "{retry}");
    assert_eq!(retry["attempt"], 1, "{retry}");
    assert_eq!(retry["reason"], "failed", "{retry}");
    assert_eq!(retry["detail"], "handler_error", "{retry}");
    let archived = warns
        .iter()
        .find(|v| v["message"] == "task archived")
        .unwrap_or_else(|| panic!("no WARN for the archive: {lines:?}"));
    assert_eq!(archived["attempt"], 2, "{archived}");
    assert_eq!(archived["reason"], "exhausted", "{archived}");
    assert_eq!(archived["queue"], "mail", "{archived}");
    assert_eq!(archived["task_type"], "mail.send", "{archived}");
    // The handler's error text (the command's status here) is sealed, not logged.
    assert!(!all.contains("exited with status"), "{all}");
}

#[test]
fn logs_text_is_the_default_and_env_selects_json() {
    let dir = tempfile::tempdir().unwrap();
    let k = keyring(dir.path());
    for (env, json) in [(None, false), (Some("json"), true), (Some("text"), false)] {
        let mut cmd = sealq(dir.path(), &k, &["worker", "--exec", "true"]);
        if let Some(v) = env {
            cmd.env("SEALQ_LOG_FORMAT", v);
        }
        let mut w = Background::spawn(cmd);
        let line = w.wait_for(Duration::from_secs(60), "starting", |l| {
            l.contains("worker started")
        });
        assert_eq!(
            serde_json::from_str::<Value>(&line).is_ok(),
            json,
            "SEALQ_LOG_FORMAT={env:?}: {line}"
        );
        assert!(line.contains("INFO"), "shown without -v: {line}");
        let stopped = w.terminate();
        assert_eq!(stopped.code, Some(0), "{}", stopped.stderr.join("\n"));
    }
    let out = sealq(dir.path(), &k, &["--log-format", "yaml", "tasks", "stats"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("yaml"));
}
