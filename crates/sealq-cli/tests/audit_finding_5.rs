//! Finding 5 of the security review through the real `sealq` binary: the
//! audit log cannot lose whole parts silently, on the JSON-lines files of
//! the SQLite broker and on the Redis streams (a real redis-server).
//! Without an anchor a removed earlier writer is caught by a later
//! writer's genesis head; with `audit anchor` / `verify --anchor` a cut
//! tail with its last checkpoint, a replaced log and an emptied log are
//! caught; a writer with another keyring is reported as an unknown key
//! (exit 3).

#[path = "../../sealq-redis/tests/support/mod.rs"]
mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const BIN: &str = env!("CARGO_BIN_EXE_sealq");

fn sealq(dir: &Path, broker: &str, keyring: &str, args: &[&str]) -> Output {
    Command::new(BIN)
        .args(args)
        .current_dir(dir)
        .env_remove("SEALQ_KEYRING_TOML")
        .env_remove("SEALQ_AUDIT")
        .env_remove("RUST_LOG")
        .env("SEALQ_BROKER", broker)
        .env("SEALQ_KEYRING", keyring)
        .output()
        .expect("run sealq")
}

fn text(o: &Output) -> String {
    format!(
        "exit {:?}\nstdout:\n{}\nstderr:\n{}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn keyring(dir: &Path, name: &str) {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let out = Command::new(BIN)
        .args(["keys", "generate"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(dir.join(name))
        .and_then(|mut f| f.write_all(&out.stdout))
        .unwrap();
}

struct Sqlite {
    dir: tempfile::TempDir,
}

const DB: &str = "sqlite://q.db?synchronous=normal";

impl Sqlite {
    fn new() -> Self {
        let s = Sqlite {
            dir: tempfile::tempdir().unwrap(),
        };
        keyring(s.path(), "keyring.toml");
        s
    }
    fn path(&self) -> &Path {
        self.dir.path()
    }
    fn run(&self, args: &[&str]) -> Output {
        sealq(self.path(), DB, "keyring.toml", args)
    }
    fn enqueue(&self) {
        let out = self.run(&["enqueue", "-t", "t.echo", "--payload", "{}"]);
        assert!(out.status.success(), "{}", text(&out));
    }
    fn records(&self) -> PathBuf {
        self.path().join("q.db.audit.jsonl")
    }
    fn checkpoints(&self) -> PathBuf {
        self.path().join("q.db.audit.checkpoints.jsonl")
    }
    /// The writer ids in the records file, in order of appearance.
    fn writers(&self) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        for l in std::fs::read_to_string(self.records()).unwrap().lines() {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            let w = v["writer"].as_str().unwrap().to_owned();
            if !out.contains(&w) {
                out.push(w);
            }
        }
        out
    }
}

/// Keep the lines of `path` for which `keep(writer, seq)` holds.
fn filter_lines(path: &Path, keep: impl Fn(&str, u64) -> bool) {
    let kept: String = std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .filter(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            keep(v["writer"].as_str().unwrap(), v["seq"].as_u64().unwrap())
        })
        .map(|l| format!("{l}\n"))
        .collect();
    std::fs::write(path, kept).unwrap();
}

fn verify(sb: &Sqlite, anchor: Option<&str>) -> Output {
    let mut args = vec!["audit", "verify"];
    if let Some(a) = anchor {
        args.extend(["--anchor", a]);
    }
    sb.run(&args)
}

#[test]
fn finding_5_removed_writer_is_detected_in_files() {
    let sb = Sqlite::new();
    sb.enqueue();
    sb.enqueue();
    let ok = verify(&sb, None);
    assert!(ok.status.success(), "{}", text(&ok));
    // Without an anchor, the output says what it cannot detect.
    assert!(
        String::from_utf8_lossy(&ok.stdout).contains("no --anchor given"),
        "{}",
        text(&ok)
    );
    let w = sb.writers();
    assert_eq!(w.len(), 2);
    filter_lines(&sb.records(), |writer, _| writer != w[0]);
    filter_lines(&sb.checkpoints(), |writer, _| writer != w[0]);
    let bad = verify(&sb, None);
    assert_eq!(bad.status.code(), Some(1), "{}", text(&bad));
    let out = String::from_utf8_lossy(&bad.stdout);
    assert!(
        out.contains(&format!("writer {}", w[1])) && out.contains("removed"),
        "{}",
        text(&bad)
    );
}

#[test]
fn finding_5_cut_tail_with_last_checkpoint_is_caught_with_anchor_in_files() {
    let sb = Sqlite::new();
    sb.enqueue();
    sb.enqueue();
    let anchor = sb.run(&["audit", "anchor", "--out", "anchor.json"]);
    assert!(anchor.status.success(), "{}", text(&anchor));
    let w = sb.writers();
    // The last writer's last record (seq 1) and its checkpoint.
    filter_lines(&sb.records(), |writer, seq| !(writer == w[1] && seq >= 1));
    filter_lines(&sb.checkpoints(), |writer, _| writer != w[1]);
    let plain = verify(&sb, None);
    assert!(
        plain.status.success(),
        "not detectable without the anchor: {}",
        text(&plain)
    );
    let bad = verify(&sb, Some("anchor.json"));
    assert_eq!(bad.status.code(), Some(1), "{}", text(&bad));
    let out = String::from_utf8_lossy(&bad.stdout);
    assert!(
        out.contains(&format!("writer {}", w[1])) && out.contains("tail cut"),
        "{}",
        text(&bad)
    );
}

#[test]
fn finding_5_replaced_and_emptied_logs_are_caught_with_anchor_in_files() {
    let sb = Sqlite::new();
    sb.enqueue();
    let anchor = sb.run(&["audit", "anchor", "--out", "anchor.json"]);
    assert!(anchor.status.success(), "{}", text(&anchor));

    // Another run's log, written with the same keyring.
    let other = tempfile::tempdir().unwrap();
    std::fs::copy(
        sb.path().join("keyring.toml"),
        other.path().join("keyring.toml"),
    )
    .unwrap();
    let out = sealq(
        other.path(),
        DB,
        "keyring.toml",
        &["enqueue", "-t", "t.echo", "--payload", "{}"],
    );
    assert!(out.status.success(), "{}", text(&out));
    for name in ["q.db.audit.jsonl", "q.db.audit.checkpoints.jsonl"] {
        std::fs::copy(other.path().join(name), sb.path().join(name)).unwrap();
    }
    assert!(
        verify(&sb, None).status.success(),
        "a replaced log is self-consistent"
    );
    let bad = verify(&sb, Some("anchor.json"));
    assert_eq!(bad.status.code(), Some(1), "{}", text(&bad));
    let out = String::from_utf8_lossy(&bad.stdout);
    assert!(
        out.contains("anchor: writer") && out.contains("absent from the log"),
        "{}",
        text(&bad)
    );

    // Both files emptied.
    std::fs::write(sb.records(), b"").unwrap();
    std::fs::write(sb.checkpoints(), b"").unwrap();
    assert!(verify(&sb, None).status.success());
    let bad = verify(&sb, Some("anchor.json"));
    assert_eq!(bad.status.code(), Some(1), "{}", text(&bad));
    assert!(
        String::from_utf8_lossy(&bad.stdout).contains("checkpoint entries but 0 are stored"),
        "{}",
        text(&bad)
    );
}

#[test]
fn finding_5_another_keyrings_writer_is_an_unknown_key_in_files() {
    let sb = Sqlite::new();
    sb.enqueue();
    // A writer with another keyring, on its own broker, its lines added.
    let other = tempfile::tempdir().unwrap();
    keyring(other.path(), "keyring.toml");
    let out = sealq(
        other.path(),
        DB,
        "keyring.toml",
        &["enqueue", "-t", "t.echo", "--payload", "{}"],
    );
    assert!(out.status.success(), "{}", text(&out));
    for name in ["q.db.audit.jsonl", "q.db.audit.checkpoints.jsonl"] {
        let mut mine = std::fs::read(sb.path().join(name)).unwrap();
        mine.extend(std::fs::read(other.path().join(name)).unwrap());
        std::fs::write(sb.path().join(name), mine).unwrap();
    }
    let out = verify(&sb, None);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("unknown key "), "{}", text(&out));
    assert!(!stdout.contains("forged"), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("everything else verified"),
        "{}",
        text(&out)
    );
}

#[test]
fn finding_5_removed_writer_and_emptied_streams_on_redis() {
    let server = support::RedisServer::start();
    let dir = tempfile::tempdir().unwrap();
    keyring(dir.path(), "keyring.toml");
    let url = server.url();
    let run = |args: &[&str]| sealq(dir.path(), &url, "keyring.toml", args);
    let out = run(&["redis", "install"]);
    assert!(out.status.success(), "{}", text(&out));
    for _ in 0..2 {
        let out = run(&["enqueue", "-t", "t.echo", "--payload", "{}"]);
        assert!(out.status.success(), "{}", text(&out));
    }
    let ok = run(&["audit", "verify"]);
    assert!(ok.status.success(), "{}", text(&ok));
    let anchor = run(&["audit", "anchor", "--out", "anchor.json"]);
    assert!(anchor.status.success(), "{}", text(&anchor));

    // The first writer's entries: the oldest of each stream (one batch of
    // records, one checkpoint: each enqueue closes its auditor).
    for key in ["sealq:audit:records", "sealq:audit:checkpoints"] {
        let first = server.cli(&["XRANGE", key, "-", "+", "COUNT", "1"]);
        let id = first.lines().next().unwrap().trim().to_owned();
        assert_eq!(server.cli(&["XDEL", key, &id]).trim(), "1", "{key} {id}");
    }
    let bad = run(&["audit", "verify"]);
    assert_eq!(bad.status.code(), Some(1), "{}", text(&bad));
    assert!(
        String::from_utf8_lossy(&bad.stdout).contains("when it started"),
        "{}",
        text(&bad)
    );

    // Both streams deleted: only the anchor tells.
    server.cli(&["DEL", "sealq:audit:records", "sealq:audit:checkpoints"]);
    let plain = run(&["audit", "verify"]);
    assert!(plain.status.success(), "{}", text(&plain));
    let bad = run(&["audit", "verify", "--anchor", "anchor.json"]);
    assert_eq!(bad.status.code(), Some(1), "{}", text(&bad));
    assert!(
        String::from_utf8_lossy(&bad.stdout).contains("absent from the log"),
        "{}",
        text(&bad)
    );
}
