//! Finding 7 of the security review, with the real binary, on SQLite and
//! Redis: the broker records check values of the keyring in use, so a
//! worker with another keyring (or another key under the same id) refuses
//! to start even when no task is waiting; and an operator keyring (audit
//! keys only, `keys generate --role operator`) runs the operator actions
//! and opens nothing.

#[path = "../../sealq-redis/tests/support/mod.rs"]
mod support;

use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_sealq");

/// A broker (SQLite file or a redis-server this test started) and keyrings
/// in a temp dir: `a.toml` is the deployment's.
struct Sandbox {
    dir: tempfile::TempDir,
    broker: String,
    _redis: Option<support::RedisServer>,
}

impl Sandbox {
    fn sqlite() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let broker = format!("sqlite://{}", dir.path().join("q.db").display());
        Self::with(dir, broker, None)
    }

    fn redis() -> Self {
        let server = support::RedisServer::start();
        let dir = tempfile::tempdir().expect("tempdir");
        let broker = server.url();
        let sb = Self::with(dir, broker, Some(server));
        let out = sb.run("a.toml", &["redis", "install"]);
        assert!(out.status.success(), "redis install: {}", text(&out));
        sb
    }

    fn with(dir: tempfile::TempDir, broker: String, redis: Option<support::RedisServer>) -> Self {
        let sb = Sandbox {
            dir,
            broker,
            _redis: redis,
        };
        sb.generate("a.toml", &[]);
        sb
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    /// `sealq keys generate ARGS > NAME` (mode 0600).
    fn generate(&self, name: &str, args: &[&str]) {
        let mut all = vec!["keys", "generate"];
        all.extend_from_slice(args);
        let out = self.run("a.toml", &all);
        assert!(out.status.success(), "keys generate: {}", text(&out));
        self.write(name, &out.stdout);
    }

    fn write(&self, name: &str, bytes: &[u8]) {
        let mut f = std::fs::OpenOptions::new()
            .create_new(true)
            .write(true)
            .mode(0o600)
            .open(self.path().join(name))
            .expect("create keyring");
        std::io::Write::write_all(&mut f, bytes).expect("write keyring");
    }

    fn read(&self, name: &str) -> String {
        std::fs::read_to_string(self.path().join(name)).expect("read keyring")
    }

    fn cmd(&self, keyring: &str, args: &[&str]) -> Command {
        let mut c = Command::new(BIN);
        c.args(args)
            .current_dir(self.path())
            .env_remove("SEALQ_KEYRING_TOML")
            .env_remove("SEALQ_AUDIT")
            .env_remove("RUST_LOG")
            .env("SEALQ_BROKER", &self.broker)
            .env("SEALQ_KEYRING", self.path().join(keyring))
            .stdin(Stdio::null());
        c
    }

    fn run(&self, keyring: &str, args: &[&str]) -> Output {
        self.cmd(keyring, args).output().expect("run sealq")
    }

    fn ok(&self, keyring: &str, args: &[&str]) -> String {
        let out = self.run(keyring, args);
        assert!(
            out.status.success(),
            "{args:?} with {keyring}: {}",
            text(&out)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn enqueue(&self, keyring: &str) -> String {
        self.ok(
            keyring,
            &["enqueue", "--type", "t", "--payload", r#"{"n":1}"#],
        )
        .trim()
        .to_owned()
    }

    /// The primary key id of keyring `name`.
    fn primary(&self, name: &str) -> String {
        let text = self.read(name);
        let line = text
            .lines()
            .find(|l| l.trim_start().starts_with("primary"))
            .expect("a primary line");
        line.split('"').nth(1).expect("quoted id").to_owned()
    }

    /// The raw audit log: the JSON-lines file beside the database, or the
    /// Redis audit stream.
    fn audit_log(&self) -> String {
        match &self._redis {
            Some(r) => r.cli(&["XRANGE", "sealq:audit:records", "-", "+"]),
            None => {
                std::fs::read_to_string(self.path().join("q.db.audit.jsonl")).unwrap_or_default()
            }
        }
    }

    /// The state of task `id`.
    fn state(&self, id: &str) -> String {
        let out = self.ok("a.toml", &["tasks", "list", "--json"]);
        let list: serde_json::Value = serde_json::from_str(&out).expect("JSON");
        list["tasks"]
            .as_array()
            .expect("array")
            .iter()
            .find(|t| t["id"] == id)
            .map(|t| t["state"].as_str().unwrap_or_default().to_owned())
            .unwrap_or_else(|| "gone".into())
    }

    /// Run a worker with `keyring` and `extra` arguments; it must exit by
    /// itself within 30 s.
    fn worker_exits(&self, keyring: &str, extra: &[&str]) -> Output {
        let mut args = vec!["worker", "--exec", "true"];
        args.extend_from_slice(extra);
        let mut child = self
            .cmd(keyring, &args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn worker");
        let end = Instant::now() + Duration::from_secs(30);
        while child.try_wait().expect("try_wait").is_none() {
            if Instant::now() > end {
                let _ = child.kill();
                panic!("a worker with {keyring} kept running");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        child.wait_with_output().expect("worker output")
    }

    /// Run a worker with `keyring` until task `id` completes (it must).
    fn worker_completes(&self, keyring: &str, extra: &[&str], id: &str) {
        let mut args = vec!["worker", "--exec", "true"];
        args.extend_from_slice(extra);
        let mut child = self
            .cmd(keyring, &args)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn worker");
        let end = Instant::now() + Duration::from_secs(30);
        loop {
            if self.state(id) == "completed" {
                break;
            }
            if let Ok(Some(st)) = child.try_wait() {
                let out = child.wait_with_output().expect("output");
                panic!(
                    "the worker with {keyring} exited ({st}): {}",
                    String::from_utf8_lossy(&out.stderr)
                );
            }
            if Instant::now() > end {
                let _ = child.kill();
                panic!("the worker with {keyring} did not complete {id}");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = child.kill();
        let _ = child.wait();
    }
}

fn text(o: &Output) -> String {
    format!(
        "exit {:?}\n{}{}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// A copy of keyring `from` whose keys keep their ids but get other secrets.
fn same_ids_other_secrets(sb: &Sandbox, from: &str, to: &str) {
    let other = {
        sb.generate("scratch.toml", &[]);
        let t = sb.read("scratch.toml");
        std::fs::remove_file(sb.path().join("scratch.toml")).expect("rm");
        t
    };
    let secret = other
        .lines()
        .find(|l| l.starts_with("secret"))
        .expect("secret line")
        .to_owned();
    let twin: String = sb
        .read(from)
        .lines()
        .map(|l| {
            if l.starts_with("secret") {
                format!("{secret}\n")
            } else {
                format!("{l}\n")
            }
        })
        .collect();
    sb.write(to, twin.as_bytes());
}

fn wrong_keyring_with_no_waiting_task(sb: &Sandbox) {
    sb.generate("b.toml", &[]);
    same_ids_other_secrets(sb, "a.toml", "twin.toml");
    // The deployment enqueued once (its check values are recorded), and the
    // task is gone: nothing waits.
    let id = sb.enqueue("a.toml");
    sb.ok("a.toml", &["tasks", "delete", "--id", &id]);
    assert_eq!(sb.state(&id), "gone");

    let out = sb.worker_exits("b.toml", &[]);
    let said = text(&out);
    assert_eq!(out.status.code(), Some(2), "{said}");
    assert!(said.contains("holds none of the keys"), "{said}");
    assert!(
        said.contains(&sb.primary("a.toml")),
        "names the broker's key: {said}"
    );
    assert!(
        said.contains(&sb.primary("b.toml")),
        "names the keyring's key: {said}"
    );
    assert!(
        said.contains("--accept-new-keyring"),
        "says what to do: {said}"
    );

    let out = sb.worker_exits("twin.toml", &["--accept-new-keyring"]);
    let said = text(&out);
    assert_eq!(out.status.code(), Some(2), "{said}");
    assert!(said.contains("same id"), "{said}");
    assert!(said.contains(&sb.primary("a.toml")), "{said}");

    // A producer with the wrong keyring is refused too, and stores nothing.
    let out = sb.run(
        "b.toml",
        &["enqueue", "--type", "t", "--payload", r#"{"n":2}"#],
    );
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    let list = sb.ok("a.toml", &["tasks", "list", "--json"]);
    let list: serde_json::Value = serde_json::from_str(&list).expect("JSON");
    assert_eq!(
        list["tasks"],
        serde_json::json!([]),
        "a refused enqueue stored a task"
    );

    // The right keyring starts and works.
    let id = sb.enqueue("a.toml");
    sb.worker_completes("a.toml", &[], &id);

    // A deliberate new deployment is accepted when asked for.
    let out = sb.run(
        "b.toml",
        &[
            "enqueue",
            "--type",
            "t",
            "--payload",
            r#"{"n":3}"#,
            "--accept-new-keyring",
        ],
    );
    assert!(out.status.success(), "{}", text(&out));
    let id = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    sb.worker_completes("b.toml", &[], &id);
}

#[test]
fn finding_7_a_wrong_keyring_is_refused_with_no_waiting_task_sqlite() {
    wrong_keyring_with_no_waiting_task(&Sandbox::sqlite());
}

#[test]
fn finding_7_a_wrong_keyring_is_refused_with_no_waiting_task_redis() {
    wrong_keyring_with_no_waiting_task(&Sandbox::redis());
}

fn operator_keyring(sb: &Sandbox) {
    sb.generate("op.toml", &["--role", "operator", "--from", "a.toml"]);
    let op = sb.read("op.toml");
    assert!(op.contains("role = \"operator\""), "{op}");
    for absent in ["primary", "subject_tag_key", "[keys", "secret ="] {
        assert!(!op.contains(absent), "the operator keyring holds {absent}");
    }
    let a = sb.enqueue("a.toml");
    let b = sb.enqueue("a.toml");

    // Every operator action runs with it (and writes its audit record).
    for args in [
        &["queues", "pause", "--queue", "default"][..],
        &["queues", "resume", "--queue", "default"],
        &[
            "queues",
            "limit",
            "--queue",
            "default",
            "--max-depth",
            "100",
        ],
        &[
            "queues", "rate", "--queue", "default", "--limit", "10", "--per", "1s",
        ],
        &["tasks", "list"],
        &["tasks", "stats"],
        &["tasks", "delete", "--id", &a],
        &["audit", "verify"],
    ] {
        sb.ok("op.toml", args);
    }
    // Rerun runs with it too: `b` is pending, so nothing moves (exit 1).
    let out = sb.run("op.toml", &["tasks", "rerun", "--id", &b]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("not archived"), "{}", text(&out));
    assert_eq!(sb.state(&a), "gone");
    // The full keyring verifies what the operator wrote.
    sb.ok("a.toml", &["audit", "verify"]);
    let log = sb.audit_log();
    for event in [
        "queue_paused",
        "queue_resumed",
        "queue_limited",
        "queue_rate_limited",
        "\"deleted\"",
    ] {
        assert!(
            log.contains(event),
            "the operator's {event} is audited: {log}"
        );
    }

    // Nothing that opens or seals runs with it.
    for (args, what) in [
        (&["tasks", "reveal", "--id", &b][..], "tasks reveal"),
        (&["worker", "--exec", "true"], "worker"),
        (&["enqueue", "--type", "t", "--payload", "{}"], "enqueue"),
        (&["erase", "--subject", "u"], "erase"),
    ] {
        let out = sb.run("op.toml", args);
        let said = text(&out);
        assert_eq!(out.status.code(), Some(2), "{what}: {said}");
        assert!(
            said.contains("this is an operator keyring: it holds no sealing keys"),
            "{what}: {said}"
        );
    }
    let log = sb.audit_log();
    assert!(!log.contains("payload_revealed"), "{log}");
    assert_eq!(sb.state(&b), "pending");
    sb.ok("a.toml", &["audit", "verify"]);
}

#[test]
fn finding_7_operator_keyring_runs_operations_and_opens_nothing_sqlite() {
    operator_keyring(&Sandbox::sqlite());
}

#[test]
fn finding_7_operator_keyring_runs_operations_and_opens_nothing_redis() {
    operator_keyring(&Sandbox::redis());
}

/// `sealq bench` and `sealq demo` run with throw-away keyrings: they leave
/// no check values in the broker, so the deployment that uses it next is
/// not refused, and its own key is the one recorded.
#[test]
fn finding_7_bench_leaves_no_check_values_behind() {
    let sb = Sandbox::sqlite();
    let out = sb.run(
        "a.toml",
        &["bench", "--broker", &sb.broker, "--tasks", "20"],
    );
    assert!(out.status.success(), "bench: {}", text(&out));
    let db = sb.path().join("q.db");
    let recorded = || -> Vec<String> {
        let conn = rusqlite::Connection::open(&db).unwrap();
        let mut stmt = conn.prepare("SELECT key_id FROM key_checks").unwrap();
        stmt.query_map([], |r| r.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap()
    };
    assert!(recorded().is_empty(), "bench recorded {:?}", recorded());
    let id = sb.enqueue("a.toml");
    sb.worker_completes("a.toml", &[], &id);
    assert_eq!(recorded(), vec![sb.primary("a.toml")]);
}
