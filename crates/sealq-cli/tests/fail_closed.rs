//! Finding 7 of the security review, with the real binary: a wrong keyring
//! fails closed. A worker started with another keyring exits with the fix
//! and leaves the backlog and the audit log as they were; `tasks reveal`
//! with a keyring that cannot open the task writes no `payload_revealed`.

use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_sealq");

/// A directory with an SQLite broker and two keyrings: `a.toml` sealed the
/// tasks, `b.toml` is another deployment's.
struct Sandbox {
    dir: tempfile::TempDir,
}

impl Sandbox {
    fn new() -> Self {
        let sb = Sandbox {
            dir: tempfile::tempdir().expect("tempdir"),
        };
        for name in ["a.toml", "b.toml"] {
            let out = sb
                .cmd("a.toml", &["keys", "generate"])
                .output()
                .expect("run");
            assert!(out.status.success(), "keys generate");
            let mut f = std::fs::OpenOptions::new()
                .create_new(true)
                .write(true)
                .mode(0o600)
                .open(sb.path().join(name))
                .expect("create keyring");
            std::io::Write::write_all(&mut f, &out.stdout).expect("write keyring");
        }
        sb
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    fn db(&self) -> PathBuf {
        self.path().join("q.db")
    }

    fn cmd(&self, keyring: &str, args: &[&str]) -> Command {
        let mut c = Command::new(BIN);
        c.args(args)
            .current_dir(self.path())
            .env_remove("SEALQ_KEYRING_TOML")
            .env_remove("RUST_LOG")
            .env("SEALQ_BROKER", format!("sqlite://{}", self.db().display()))
            .env("SEALQ_KEYRING", self.path().join(keyring))
            .stdin(Stdio::null());
        c
    }

    fn run(&self, keyring: &str, args: &[&str]) -> Output {
        self.cmd(keyring, args).output().expect("run sealq")
    }

    /// The primary key id of keyring `name`.
    fn primary(&self, name: &str) -> String {
        let text = std::fs::read_to_string(self.path().join(name)).expect("read keyring");
        let line = text
            .lines()
            .find(|l| l.trim_start().starts_with("primary"))
            .expect("a primary line");
        line.split('"').nth(1).expect("quoted id").to_owned()
    }

    fn audit_log(&self) -> String {
        std::fs::read_to_string(self.path().join("q.db.audit.jsonl")).unwrap_or_default()
    }
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

#[test]
fn finding_7_a_cli_worker_with_another_keyring_exits_with_the_fix_and_changes_nothing() {
    let sb = Sandbox::new();
    let out = sb.run(
        "a.toml",
        &["enqueue", "--type", "t", "--payload", r#"{"n":1}"#],
    );
    assert!(out.status.success(), "enqueue: {}", text(&out));
    let id = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    let log_before = sb.audit_log();

    let mut worker = sb
        .cmd("b.toml", &["worker", "--exec", "true"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn worker");
    let end = Instant::now() + Duration::from_secs(30);
    while worker.try_wait().expect("try_wait").is_none() {
        if Instant::now() > end {
            let _ = worker.kill();
            panic!("a worker with another keyring kept running");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = worker.wait_with_output().expect("worker output");
    let said = text(&out);
    assert_eq!(out.status.code(), Some(2), "{said}");
    // Refused by the check values the enqueue recorded in the broker
    // (before the waiting tasks are even sampled).
    assert!(said.contains("holds none of the keys"), "{said}");
    assert!(
        said.contains(&sb.primary("a.toml")),
        "names the key the tasks need: {said}"
    );

    let out = sb.run("a.toml", &["tasks", "list", "--json"]);
    let list: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    let task = &list["tasks"].as_array().expect("array")[0];
    assert_eq!(task["id"], id.as_str());
    assert_eq!(task["state"], "pending", "{task}");
    assert_eq!(task["attempts"], 0, "{task}");
    assert_eq!(
        sb.audit_log(),
        log_before,
        "the refused worker wrote to the audit log"
    );
    let out = sb.run("a.toml", &["audit", "verify"]);
    assert!(
        out.status.success(),
        "audit verify after the refusal: {}",
        text(&out)
    );
}

#[test]
fn finding_7_reveal_with_a_wrong_keyring_is_refused_and_writes_no_record() {
    let sb = Sandbox::new();
    let out = sb.run(
        "a.toml",
        &["enqueue", "--type", "t", "--payload", r#"{"n":1}"#],
    );
    assert!(out.status.success(), "enqueue: {}", text(&out));
    let id = String::from_utf8_lossy(&out.stdout).trim().to_owned();

    let out = sb.run(
        "b.toml",
        &["tasks", "reveal", "--id", &id, "--operator", "mallory"],
    );
    assert!(
        !out.status.success(),
        "revealed with the wrong keyring: {}",
        text(&out)
    );
    assert!(
        !sb.audit_log().contains("payload_revealed"),
        "{}",
        sb.audit_log()
    );
    let out = sb.run("a.toml", &["audit", "verify"]);
    assert!(out.status.success(), "audit verify: {}", text(&out));

    let out = sb.run(
        "a.toml",
        &["tasks", "reveal", "--id", &id, "--operator", "alice"],
    );
    assert!(out.status.success(), "reveal: {}", text(&out));
    assert_eq!(sb.audit_log().matches("payload_revealed").count(), 1);
}
