//! `sealq audit`: the CLI writes an audit log by default; `audit verify`
//! exits 0 on it, and 1 naming the record after a one-byte edit; corrupt
//! input never panics; `audit show` lists a task's history in order.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

const BIN: &str = env!("CARGO_BIN_EXE_sealq");

struct Sandbox {
    dir: tempfile::TempDir,
}

struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

impl Sandbox {
    fn new() -> Self {
        let sb = Sandbox {
            dir: tempfile::tempdir().expect("tempdir"),
        };
        let out = sb.run(&["keys", "generate"]);
        assert_eq!(out.code, 0, "{}", out.stderr);
        write_private(&sb.path().join("keyring.toml"), out.stdout.as_bytes());
        sb
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    fn log(&self) -> PathBuf {
        self.path().join("q.db.audit.jsonl")
    }

    fn run(&self, args: &[&str]) -> Run {
        let out = Command::new(BIN)
            .args(args)
            .current_dir(self.path())
            .env_remove("SEALQ_KEYRING_TOML")
            .env_remove("SEALQ_AUDIT")
            .env_remove("RUST_LOG")
            .env("SEALQ_BROKER", "sqlite://q.db?synchronous=normal")
            .env("SEALQ_KEYRING", "keyring.toml")
            .stdin(Stdio::null())
            .output()
            .expect("run sealq");
        Run {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    fn enqueue(&self) -> String {
        let out = self.run(&["enqueue", "-t", "t.echo", "--payload", r#"{"n":1}"#]);
        assert_eq!(out.code, 0, "{}", out.stderr);
        out.stdout.trim().to_owned()
    }

    /// Run a worker until the queue is drained (SIGTERM after a moment).
    fn work(&self) {
        let mut child = Command::new(BIN)
            .args(["worker", "--exec", "cat > /dev/null"])
            .current_dir(self.path())
            .env_remove("SEALQ_AUDIT")
            .env("SEALQ_BROKER", "sqlite://q.db?synchronous=normal")
            .env("SEALQ_KEYRING", "keyring.toml")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        loop {
            let out = self.run(&["tasks", "list", "--state", "completed", "--json"]);
            let page: serde_json::Value = serde_json::from_str(&out.stdout).unwrap_or_default();
            let done = page["tasks"].as_array().cloned().unwrap_or_default();
            if !done.is_empty() || std::time::Instant::now() > deadline {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        let _ = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status();
        let status = child.wait().unwrap();
        assert!(status.success(), "worker exit: {status:?}");
    }
}

#[test]
fn verify_passes_then_names_a_one_byte_edit() {
    let sb = Sandbox::new();
    let id = sb.enqueue();
    sb.work();
    let ok = sb.run(&["audit", "verify"]);
    assert_eq!(ok.code, 0, "{}\n{}", ok.stdout, ok.stderr);
    assert!(
        ok.stdout.contains("records from 2 writers verified"),
        "{}",
        ok.stdout
    );

    let show = sb.run(&["audit", "show", "--task", &id]);
    assert_eq!(show.code, 0, "{}", show.stderr);
    let order: Vec<&str> = show
        .stdout
        .lines()
        .filter_map(|l| l.split_whitespace().nth(1))
        .collect();
    assert_eq!(
        order,
        ["enqueued", "leased", "started", "succeeded"],
        "{}",
        show.stdout
    );

    // The public key alone verifies what the checkpoints cover.
    let pk = sb.run(&["audit", "public-key"]);
    assert_eq!(pk.code, 0, "{}", pk.stderr);
    let out = sb.run(&["audit", "verify", "--public-key", pk.stdout.trim()]);
    assert_eq!(out.code, 0, "{}\n{}", out.stdout, out.stderr);

    // Edit one byte of the fourth record (the worker's lease, after the
    // producer's genesis and record and the worker's genesis).
    let text = std::fs::read_to_string(sb.log()).unwrap();
    let mut lines: Vec<String> = text.lines().map(str::to_owned).collect();
    assert_eq!(lines.len(), 6, "{text}");
    assert!(lines[2].contains("writer_started"), "{text}");
    lines[3] = lines[3].replacen("\"attempt\":1", "\"attempt\":7", 1);
    std::fs::write(sb.log(), lines.join("\n") + "\n").unwrap();
    let bad = sb.run(&["audit", "verify"]);
    assert_eq!(bad.code, 1, "{}\n{}", bad.stdout, bad.stderr);
    assert!(
        bad.stdout.contains("records line 4") && bad.stdout.contains("record edited"),
        "{}",
        bad.stdout
    );
    assert!(
        bad.stderr.contains("audit verification failed"),
        "{}",
        bad.stderr
    );
}

#[test]
fn corrupt_and_missing_input_never_panics() {
    let sb = Sandbox::new();
    sb.enqueue();
    // A truncated last line, binary garbage, and a deleted checkpoint file.
    let mut bytes = std::fs::read(sb.log()).unwrap();
    bytes.extend_from_slice(b"{\"writer\":\"x\",\"seq\":1,\"ti");
    bytes.extend_from_slice(b"\n\xff\xfe\x00garbage\n");
    std::fs::write(sb.log(), &bytes).unwrap();
    let out = sb.run(&["audit", "verify"]);
    assert_eq!(out.code, 1, "{}\n{}", out.stdout, out.stderr);
    // Lines 1 and 2 are the producer's genesis and its record.
    assert!(
        out.stdout.contains("records line 3: corrupt"),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout.contains("records line 4: corrupt"),
        "{}",
        out.stdout
    );
    assert!(!out.stderr.contains("panicked"), "{}", out.stderr);

    std::fs::remove_file(sb.path().join("q.db.audit.checkpoints.jsonl")).unwrap();
    let out = sb.run(&["audit", "verify"]);
    assert_eq!(out.code, 1);
    assert!(
        out.stdout.contains("checkpoint store is missing"),
        "{}",
        out.stdout
    );

    // A file that does not exist, a wrong public key, a bad task id.
    let out = sb.run(&["audit", "verify", "--file", "nope.jsonl"]);
    assert_eq!(out.code, 1, "{}", out.stderr);
    assert!(out.stderr.contains("no audit log at"), "{}", out.stderr);
    let out = sb.run(&["audit", "verify", "--public-key", "not base64"]);
    assert_eq!(out.code, 2, "{}", out.stderr);
    let out = sb.run(&["audit", "show", "--task", "42"]);
    assert_eq!(out.code, 2, "{}", out.stderr);
}

#[test]
fn audit_off_writes_nothing() {
    let sb = Sandbox::new();
    let out = sb.run(&[
        "enqueue",
        "-t",
        "t.echo",
        "--payload",
        "{}",
        "--audit",
        "off",
    ]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(!sb.log().exists());
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
