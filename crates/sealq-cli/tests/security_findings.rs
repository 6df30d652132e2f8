//! Regression tests for findings 1 and 9 of the security review (issue
//! 20's numbering), one test per item, named after its finding. Each runs the real `sealq` binary, always
//! under `umask 022` (a common default) through `sh -c`, so the file modes
//! it checks do not depend on the umask of whoever runs the tests.

#[path = "../../sealq-redis/tests/support/mod.rs"]
mod support;

use std::ffi::OsStr;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_sealq");

/// A temporary directory with a 0600 keyring and an SQLite broker in it.
struct Sandbox {
    dir: tempfile::TempDir,
    keyring: PathBuf,
}

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
        // `keys generate > keyring.toml` under umask 022: the command makes
        // the file 0600 itself (finding 2).
        let status = Command::new("sh")
            .arg("-c")
            .arg("umask 022 && exec \"$0\" keys generate > keyring.toml")
            .arg(BIN)
            .current_dir(sb.path())
            .status()
            .expect("run sealq keys generate");
        assert!(status.success());
        sb
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    fn broker_url(&self) -> String {
        format!(
            "sqlite://{}?synchronous=normal",
            self.path().join("q.db").display()
        )
    }

    /// `sealq ARGS` under `umask 022`, with this sandbox's broker and keyring.
    fn cmd<S: AsRef<OsStr>>(&self, args: &[S]) -> Command {
        let mut c = Command::new("sh");
        c.arg("-c")
            .arg("umask 022 && exec \"$0\" \"$@\"")
            .arg(BIN)
            .args(args)
            .current_dir(self.path())
            .env_remove("SEALQ_KEYRING_TOML")
            .env_remove("SEALQ_AUDIT")
            .env_remove("RUST_LOG")
            .env("SEALQ_BROKER", self.broker_url())
            .env("SEALQ_KEYRING", &self.keyring)
            .stdin(Stdio::null());
        c
    }

    fn run<S: AsRef<OsStr>>(&self, args: &[S]) -> Run {
        finished(self.cmd(args).output().expect("run sealq"))
    }

    fn ok<S: AsRef<OsStr>>(&self, args: &[S]) -> Run {
        let out = self.run(args);
        assert_eq!(out.code, 0, "{}\n{}", out.stdout, out.stderr);
        out
    }
}

fn finished(o: std::process::Output) -> Run {
    Run {
        code: o.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
    }
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .permissions()
        .mode()
        & 0o777
}

/// Poll `check` every 50 ms for up to `secs` seconds.
fn eventually(secs: u64, mut check: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + Duration::from_secs(secs);
    while Instant::now() < end {
        if check() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    false
}

/// SIGTERM via `kill`, then wait.
fn terminate(child: Child) -> Run {
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("run kill");
    assert!(status.success());
    finished(child.wait_with_output().expect("wait for the worker"))
}

/// The base64 secrets of a keyring TOML (`secret`, `subject_tag_key`,
/// `audit_signing_key` values).
fn secrets_of(toml: &str) -> Vec<String> {
    toml.lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .filter_map(|l| l.split_once('='))
        .filter(|(k, _)| {
            let k = k.trim();
            k == "secret" || k == "subject_tag_key" || k == "audit_signing_key"
        })
        .map(|(_, v)| v.trim().trim_matches('"').to_owned())
        .collect()
}

#[test]
fn finding_1_exec_children_get_no_secrets() {
    const PASSWORD: &str = "hunter2-broker-password";
    let server = support::RedisServer::start_with(&["--requirepass", PASSWORD]);
    let url = format!("redis://:{PASSWORD}@127.0.0.1:{}", server.port);
    let sb = Sandbox::new();
    let keyring_toml = std::fs::read_to_string(&sb.keyring).unwrap();
    let secrets = secrets_of(&keyring_toml);
    assert!(secrets.len() >= 3, "{keyring_toml}");
    let dump = sb.path().join("child-env.txt");

    // The worker's environment as the finding had it: the keyring itself in
    // SEALQ_KEYRING_TOML, the broker URL with its password in SEALQ_BROKER,
    // and other secrets beside them.
    let with_secrets = |c: &mut Command| {
        c.env_remove("SEALQ_KEYRING")
            .env("SEALQ_KEYRING_TOML", &keyring_toml)
            .env("SEALQ_BROKER", &url)
            .env("REDIS_PASSWORD", PASSWORD)
            .env("APP_DB_PASSWORD", PASSWORD)
            .env("APP_MODE", "visible-by-choice")
            .env("TZ", "UTC");
    };
    let run = |args: &[&str]| {
        let mut c = sb.cmd(args);
        with_secrets(&mut c);
        finished(c.output().unwrap())
    };
    let out = run(&["redis", "install"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let out = run(&["enqueue", "-t", "t.env", "--payload", "{}"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let id = out.stdout.trim().to_owned();

    // Passing the keyring or the broker on is refused outright.
    for name in ["SEALQ_KEYRING_TOML", "SEALQ_BROKER"] {
        let out = run(&["worker", "--exec", "true", "--exec-env", name]);
        assert_eq!(out.code, 2, "--exec-env {name}: {}", out.stderr);
        assert!(out.stderr.contains(name), "{}", out.stderr);
    }

    let exec = format!("env > '{}'", dump.display());
    let mut c = sb.cmd(&["worker", "--exec", &exec, "--exec-env", "APP_MODE"]);
    with_secrets(&mut c);
    let worker = c
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let dumped = eventually(30, || {
        std::fs::read_to_string(&dump).is_ok_and(|t| t.contains("SEALQ_ATTEMPT="))
    });
    let out = terminate(worker);
    assert!(dumped, "the command never ran: {}", out.stderr);
    let env = std::fs::read_to_string(&dump).unwrap();

    assert!(
        !env.contains(PASSWORD),
        "the broker password leaked:\n{env}"
    );
    for s in &secrets {
        assert!(!env.contains(s.as_str()), "key material leaked:\n{env}");
    }
    for name in ["SEALQ_KEYRING", "SEALQ_BROKER", "REDIS_", "PASSWORD"] {
        assert!(!env.contains(name), "{name} reached the command:\n{env}");
    }
    for line in [
        format!("SEALQ_TASK_ID={id}"),
        "SEALQ_TASK_TYPE=t.env".to_owned(),
        "SEALQ_QUEUE=default".to_owned(),
        "SEALQ_ATTEMPT=1".to_owned(),
        "APP_MODE=visible-by-choice".to_owned(),
        "TZ=UTC".to_owned(),
    ] {
        assert!(env.lines().any(|l| l == line), "{line} missing:\n{env}");
    }
    assert!(env.lines().any(|l| l.starts_with("PATH=")), "{env}");
}

#[test]
fn finding_9_files_are_created_0600_under_umask_022() {
    let sb = Sandbox::new();
    assert_eq!(mode(&sb.keyring), 0o600, "keys generate > FILE");

    // The SQLite database with its WAL and SHM, the subject key store, the
    // audit log's two JSON-lines files.
    sb.ok(&[
        "enqueue",
        "-t",
        "t.mode",
        "--subject",
        "user-1",
        "--payload",
        r#"{"n":1}"#,
    ]);
    // A reader keeps the WAL and SHM while the files are checked.
    let db = sb.path().join("q.db");
    let held = rusqlite::Connection::open(&db).unwrap();
    held.query_row("SELECT count(*) FROM tasks", [], |_| Ok(()))
        .unwrap();
    for name in [
        "q.db",
        "q.db-wal",
        "q.db-shm",
        "q.db.subject-keys",
        "q.db.audit.jsonl",
        "q.db.audit.checkpoints.jsonl",
    ] {
        assert_eq!(mode(&sb.path().join(name)), 0o600, "{name}");
    }
    drop(held);

    // A task offloaded to a blob directory (through the library), then a
    // rotated keyring, and blobs re-sealed by the CLI (`keys reseal
    // --blob-dir` writes them anew).
    let blobs = sb.path().join("blobs");
    tokio::runtime::Runtime::new().unwrap().block_on(async {
        let keyring = std::sync::Arc::new(sealq::Keyring::from_file(&sb.keyring).unwrap());
        let broker: std::sync::Arc<dyn sealq::Broker> =
            std::sync::Arc::new(sealq_sqlite::SqliteBroker::open(&db).unwrap());
        let store = std::sync::Arc::new(sealq::blob::FsBlobStore::open(&blobs).unwrap());
        let client = sealq::Client::builder(broker, keyring)
            .blob_store(store, 256)
            .build();
        let big = serde_json::json!({ "doc": "x".repeat(4096) });
        let task = sealq::RawTask::from_json("t.big", &big, sealq::EnqueueOptions::new()).unwrap();
        client.enqueue_raw(task).await.unwrap();
    });
    sb.ok(&["keys", "rotate"]);
    assert_eq!(mode(&sb.keyring), 0o600, "keys rotate");
    let out = sb.ok(&["keys", "reseal", "--blob-dir", "blobs", "--json"]);
    let v: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    assert!(v["blobs"].as_u64().unwrap() >= 1, "{}", out.stdout);
    let mut files = 0;
    for task_dir in std::fs::read_dir(&blobs).unwrap() {
        let task_dir = task_dir.unwrap().path();
        assert_eq!(mode(&task_dir), 0o700, "{}", task_dir.display());
        for f in std::fs::read_dir(&task_dir).unwrap() {
            let f = f.unwrap().path();
            assert_eq!(mode(&f), 0o600, "{}", f.display());
            files += 1;
        }
    }
    assert!(files >= 1, "no blob written");
}

#[test]
fn finding_9_a_keyring_others_can_read_is_refused() {
    let sb = Sandbox::new();
    for m in [0o644, 0o640, 0o604, 0o660, 0o666] {
        std::fs::set_permissions(&sb.keyring, std::fs::Permissions::from_mode(m)).unwrap();
        let out = sb.run(&["enqueue", "-t", "t.x", "--payload", "{}"]);
        assert_eq!(out.code, 2, "mode {m:o}: {}", out.stderr);
        assert!(
            out.stderr
                .contains(&format!("chmod 600 {}", sb.keyring.display())),
            "mode {m:o}: {}",
            out.stderr
        );
        assert!(out.stderr.contains(&format!("{m:04o}")), "{}", out.stderr);
    }
    // Nothing was enqueued with the refused keyring.
    assert!(!sb.path().join("q.db").exists());
    std::fs::set_permissions(&sb.keyring, std::fs::Permissions::from_mode(0o400)).unwrap();
    sb.ok(&["enqueue", "-t", "t.x", "--payload", "{}"]);
}

#[test]
fn finding_9_keys_rotate_does_not_write_through_a_tmp_symlink() {
    let sb = Sandbox::new();
    let before = sealq::Keyring::from_file(&sb.keyring).unwrap();
    // What the old code wrote through: `<keyring>.tmp`, here a symlink to a
    // file another user could read.
    let elsewhere = sb.path().join("elsewhere.txt");
    std::fs::write(&elsewhere, "untouched\n").unwrap();
    std::fs::set_permissions(&elsewhere, std::fs::Permissions::from_mode(0o644)).unwrap();
    let tmp = sb.path().join("keyring.toml.tmp");
    std::os::unix::fs::symlink(&elsewhere, &tmp).unwrap();

    sb.ok(&["keys", "rotate", "--audit", "off"]);

    assert_eq!(std::fs::read_to_string(&elsewhere).unwrap(), "untouched\n");
    assert_eq!(mode(&elsewhere), 0o644);
    assert!(
        std::fs::symlink_metadata(&tmp)
            .unwrap()
            .file_type()
            .is_symlink(),
        "the planted link is left alone"
    );
    let meta = std::fs::symlink_metadata(&sb.keyring).unwrap();
    assert!(meta.file_type().is_file());
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);
    let after = sealq::Keyring::from_file(&sb.keyring).unwrap();
    assert_ne!(after.primary_key_id(), before.primary_key_id());
    assert!(after.contains_key(before.primary_key_id()));
    // No temporary file is left behind.
    let left: Vec<String> = std::fs::read_dir(sb.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(".keyring.toml."))
        .collect();
    assert!(left.is_empty(), "{left:?}");
}

#[test]
fn finding_9_control_characters_in_stored_text_are_escaped() {
    let sb = Sandbox::new();
    sb.ok(&["enqueue", "-t", "t.plain", "--payload", "{}"]);
    // Someone with write access to the broker stores a task type with an
    // escape sequence and a right-to-left override.
    let evil = "pay\u{1b}[31mments\u{202e}gnp.exe\u{9b}2J";
    let db = rusqlite::Connection::open(sb.path().join("q.db")).unwrap();
    db.execute("UPDATE tasks SET kind = ?1", [evil]).unwrap();
    drop(db);
    let escaped = "pay\\u{1b}[31mments\\u{202e}gnp.exe\\u{9b}2J";

    for args in [&["tasks", "list"][..], &["payloads", "report"][..]] {
        let out = sb.ok(args);
        assert!(out.stdout.contains(escaped), "{args:?}: {}", out.stdout);
        for raw in ['\u{1b}', '\u{202e}', '\u{9b}'] {
            assert!(!out.stdout.contains(raw), "{args:?}: raw {raw:?} printed");
        }
    }
    // JSON keeps the value, escaped by JSON itself.
    let out = sb.ok(&["tasks", "list", "--json"]);
    assert!(!out.stdout.contains('\u{1b}'), "{}", out.stdout);
    let v: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(v["tasks"][0]["type"], evil);
}

#[test]
fn finding_9_audit_show_marks_records_that_do_not_verify() {
    let sb = Sandbox::new();
    let id = sb
        .ok(&["enqueue", "-t", "t.audited", "--payload", "{}"])
        .stdout
        .trim()
        .to_owned();
    sb.ok(&["tasks", "delete", "--id", &id]);
    let clean = sb.ok(&["audit", "show", "--task", &id]);
    assert!(!clean.stdout.contains("NOT VERIFIED"), "{}", clean.stdout);

    // Rewrite the `enqueued` record (line 2, after the producer's genesis)
    // without its MAC key.
    let log = sb.path().join("q.db.audit.jsonl");
    let text = std::fs::read_to_string(&log).unwrap();
    let mut lines: Vec<String> = text.lines().map(str::to_owned).collect();
    assert!(lines[1].contains("\"enqueued\""), "{text}");
    assert!(lines[1].contains("\"t.audited\""), "{text}");
    lines[1] = lines[1].replacen("\"t.audited\"", "\"t.forged\"", 1);
    std::fs::write(&log, lines.join("\n") + "\n").unwrap();

    let out = sb.run(&["audit", "show", "--task", &id]);
    assert_eq!(out.code, 1, "{}\n{}", out.stdout, out.stderr);
    let shown: Vec<&str> = out.stdout.lines().collect();
    let at = shown
        .iter()
        .position(|l| l.contains("enqueued"))
        .expect("the record is still shown");
    assert!(
        shown[at + 1].contains("!! NOT VERIFIED")
            && shown[at + 1].contains("records line 2")
            && shown[at + 1].contains("record edited"),
        "{}",
        out.stdout
    );
    assert_eq!(
        out.stdout.matches("NOT VERIFIED").count(),
        1,
        "only the edited record is marked: {}",
        out.stdout
    );
    assert!(
        out.stderr.contains("does not verify") && out.stderr.contains("1 of the 2"),
        "{}",
        out.stderr
    );

    // --json keeps stdout the records as stored; the warning goes to stderr.
    let out = sb.run(&["audit", "show", "--task", &id, "--json"]);
    assert_eq!(out.code, 1, "{}", out.stderr);
    let v: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(v.as_array().unwrap().len(), 2);
    assert!(
        out.stderr.contains("!! NOT VERIFIED: records line 2"),
        "{}",
        out.stderr
    );
}
