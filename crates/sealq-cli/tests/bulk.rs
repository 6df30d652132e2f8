//! Issue 21, recovery and inspection, through the real binary on SQLite and
//! on a real redis-server this test starts: `queues list`, `tasks list`
//! pages, and bulk `tasks rerun` / `tasks delete` by queue, state, archive
//! reason and age (`--dry-run` changes nothing, `--yes` is required, a
//! partial run finished by running it again, audited).

#[path = "../../sealq-redis/tests/support/mod.rs"]
mod support;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

/// A directory with a keyring, and the broker URL every command uses.
struct Sandbox {
    dir: tempfile::TempDir,
    keyring: PathBuf,
    broker: String,
}

impl Sandbox {
    fn new(broker: impl FnOnce(&Path) -> String) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let keyring = dir.path().join("keyring.toml");
        let broker = broker(dir.path());
        let sb = Sandbox {
            dir,
            keyring,
            broker,
        };
        let out = sb.run(&["keys", "generate"]);
        assert!(out.status.success(), "{}", text(&out));
        write_private(&sb.keyring, &out.stdout);
        sb
    }

    fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_sealq"));
        c.args(args)
            .current_dir(self.dir.path())
            .env_remove("SEALQ_KEYRING_TOML")
            .env_remove("SEALQ_AUDIT")
            .env_remove("RUST_LOG")
            .env("SEALQ_BROKER", &self.broker)
            .env("SEALQ_KEYRING", &self.keyring)
            .stdin(Stdio::null());
        c
    }

    fn run(&self, args: &[&str]) -> Output {
        self.cmd(args).output().expect("run sealq")
    }

    /// Run, assert exit 0, return stdout.
    fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(out.status.success(), "{args:?}: {}", text(&out));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn json(&self, args: &[&str]) -> Value {
        serde_json::from_str(&self.ok(args)).expect("JSON")
    }

    fn enqueue(&self, queue: &str, n: usize) -> Vec<String> {
        (0..n)
            .map(|i| {
                let payload = format!(r#"{{"n":{i}}}"#);
                self.ok(&[
                    "enqueue",
                    "--queue",
                    queue,
                    "--type",
                    "t.fail",
                    "--payload",
                    &payload,
                    "--max-retries",
                    "0",
                ])
                .trim()
                .to_owned()
            })
            .collect()
    }

    /// `queues list --json`, by queue name.
    fn queue(&self, name: &str) -> Value {
        let v = self.json(&["queues", "list", "--json"]);
        v.as_array()
            .expect("an array")
            .iter()
            .find(|q| q["queue"] == name)
            .cloned()
            .unwrap_or(Value::Null)
    }

    fn count(&self, queue: &str, state: &str) -> u64 {
        self.queue(queue)[state].as_u64().unwrap_or(0)
    }
}

fn text(o: &Output) -> String {
    format!(
        "exit {:?}\nstdout:\n{}\nstderr:\n{}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
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

fn terminate(child: Child) -> Output {
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    child.wait_with_output().expect("worker output")
}

/// Six archived tasks in `mail`, two in `other`, two pending in `keep`;
/// returns the ids of `mail`'s.
fn archived_tasks(sb: &Sandbox) -> Vec<String> {
    let mail = sb.enqueue("mail", 6);
    sb.enqueue("other", 2);
    sb.enqueue("keep", 2);
    let worker = sb
        .cmd(&["worker", "--queues", "mail,other", "--exec", "exit 3"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn worker");
    let give_up = Instant::now() + Duration::from_secs(60);
    while (sb.count("mail", "archived"), sb.count("other", "archived")) != (6, 2) {
        if Instant::now() > give_up {
            let out = terminate(worker);
            panic!("tasks never archived: {}", text(&out));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let out = terminate(worker);
    assert!(out.status.success(), "worker: {}", text(&out));
    mail
}

/// The whole story on one broker.
fn bulk_recovery(sb: &Sandbox) {
    let mail = archived_tasks(sb);

    // queues list: one row per queue, counts by state, no settings yet.
    let q = sb.queue("mail");
    assert_eq!(q["archived"], 6, "{q}");
    assert_eq!(q["paused"], false, "{q}");
    assert_eq!(q["max_depth"], Value::Null, "{q}");
    assert_eq!(sb.count("keep", "pending"), 2);

    // A dry run counts and names what would move, and changes nothing.
    let dry = sb.json(&[
        "tasks",
        "rerun",
        "--queue",
        "mail",
        "--reason",
        "exhausted",
        "--dry-run",
        "--json",
    ]);
    assert_eq!(dry["matched"], 6, "{dry}");
    assert_eq!(dry["acted"], 0, "{dry}");
    assert_eq!(dry["dry_run"], true, "{dry}");
    let mut sorted = mail.clone();
    sorted.sort();
    assert_eq!(dry["sample"][0], sorted[0].as_str(), "{dry}");
    assert_eq!(sb.count("mail", "archived"), 6, "a dry run changed tasks");

    // Without --yes a real run is refused (exit 2) and changes nothing.
    let out = sb.run(&["tasks", "rerun", "--queue", "mail"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("--yes"),
        "{}",
        text(&out)
    );
    assert_eq!(sb.count("mail", "archived"), 6);

    // Filters AND together: another reason, or too young, matches none (exit 1).
    for extra in [&["--reason", "integrity"][..], &["--older-than", "1h"]] {
        let mut args = vec!["tasks", "rerun", "--queue", "mail", "--yes"];
        args.extend_from_slice(extra);
        let out = sb.run(&args);
        assert_eq!(out.status.code(), Some(1), "{extra:?}: {}", text(&out));
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("no task matched"),
            "{}",
            text(&out)
        );
    }
    assert_eq!(sb.count("mail", "archived"), 6);

    // An interrupted run (here: stopped at --max 4, in batches of 2) ...
    let part = sb.json(&[
        "tasks",
        "rerun",
        "--queue",
        "mail",
        "--reason",
        "exhausted",
        "--older-than",
        "1ms",
        "--yes",
        "--max",
        "4",
        "--batch",
        "2",
        "--json",
    ]);
    assert_eq!(
        (part["acted"].as_u64(), part["batches"].as_u64()),
        (Some(4), Some(2)),
        "{part}"
    );
    assert_eq!(sb.count("mail", "archived"), 2);
    assert_eq!(sb.count("mail", "pending"), 4);
    // ... run again acts on exactly what is left ...
    let rest = sb.json(&[
        "tasks",
        "rerun",
        "--queue",
        "mail",
        "--reason",
        "exhausted",
        "--yes",
        "--json",
    ]);
    assert_eq!(rest["acted"], 2, "{rest}");
    assert_eq!(sb.count("mail", "archived"), 0);
    assert_eq!(sb.count("mail", "pending"), 6);
    // ... and once more changes nothing.
    let out = sb.run(&["tasks", "rerun", "--queue", "mail", "--yes"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert_eq!(sb.count("mail", "pending"), 6);
    assert_eq!(sb.count("other", "archived"), 2, "another queue moved");

    // Bulk delete by queue and state; the pending tasks of `keep` stay.
    let del = sb.json(&[
        "tasks", "delete", "--queue", "other", "--state", "archived", "--yes", "--json",
    ]);
    assert_eq!(del["acted"], 2, "{del}");
    assert_eq!(sb.queue("other"), Value::Null, "`other` is empty");
    assert_eq!(sb.count("keep", "pending"), 2);
    assert_eq!(sb.count("mail", "pending"), 6);

    // queues list shows each queue's settings beside its counts.
    sb.ok(&["queues", "pause", "--queue", "keep"]);
    sb.ok(&["queues", "limit", "--queue", "keep", "--max-depth", "10"]);
    sb.ok(&[
        "queues", "rate", "--queue", "keep", "--limit", "5", "--per", "1s",
    ]);
    let keep = sb.queue("keep");
    assert_eq!(keep["paused"], true, "{keep}");
    assert_eq!(keep["max_depth"], 10, "{keep}");
    assert_eq!(keep["waiting"], 2, "{keep}");
    assert_eq!(keep["rate_limit"]["limit"], 5, "{keep}");
    assert_eq!(keep["rate_limit"]["period_ms"], 1000, "{keep}");
    assert_eq!(sb.queue("mail")["paused"], false);
    let table = sb.ok(&["queues", "list"]);
    let row = table
        .lines()
        .find(|l| l.starts_with("keep "))
        .unwrap_or_else(|| panic!("no row for keep: {table}"));
    for cell in ["yes", "5/1s", "2/10 waiting"] {
        assert!(row.contains(cell), "{cell} missing: {table}");
    }

    // The by-id form still works beside the filters.
    let out = sb.ok(&["tasks", "delete", "--id", &mail[0]]);
    assert!(out.contains("deleted 1 of 1"), "{out}");

    // The log verifies and holds the bulk records: filter, tasks, count, operator.
    sb.ok(&["audit", "verify"]);
    let shown = sb.json(&["audit", "show", "--task", &mail[5], "--json"]);
    let bulk: Vec<&Value> = shown
        .as_array()
        .expect("records")
        .iter()
        .filter(|r| r["event"]["type"] == "bulk_action")
        .collect();
    assert_eq!(bulk.len(), 1, "{shown}");
    let e = &bulk[0]["event"];
    assert_eq!(e["action"], "rerun", "{e}");
    assert_eq!(
        e["filter"], "queue=mail state=archived reason=exhausted",
        "{e}"
    );
    assert!(e["operator"].as_str().is_some_and(|o| !o.is_empty()), "{e}");
    let history = sb.ok(&["audit", "show", "--task", &mail[5]]);
    assert!(history.contains("rerun"), "{history}");
}

/// `tasks list` pages: a cursor, `next_cursor`, and the next command on stderr.
fn list_pages(sb: &Sandbox) {
    let mut ids = sb.enqueue("pages", 5);
    ids.sort();
    let first = sb.run(&["tasks", "list", "--queue", "pages", "--limit", "2"]);
    assert!(first.status.success(), "{}", text(&first));
    let stderr = String::from_utf8_lossy(&first.stderr);
    let want = format!(
        "sealq tasks list --queue pages --limit 2 --after {}",
        ids[1]
    );
    assert!(stderr.contains(&want), "{}", text(&first));
    assert!(!String::from_utf8_lossy(&first.stdout).contains("more tasks"));

    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    for _ in 0..5 {
        let mut args = vec![
            "tasks", "list", "--queue", "pages", "--limit", "2", "--json",
        ];
        if let Some(c) = &cursor {
            args.extend(["--after", c.as_str()]);
        }
        let page = sb.json(&args);
        for t in page["tasks"].as_array().expect("tasks") {
            seen.push(t["id"].as_str().unwrap().to_owned());
        }
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => break,
        }
    }
    assert_eq!(seen, ids, "the pages list every task once, in order");
    let last = sb.run(&[
        "tasks", "list", "--queue", "pages", "--limit", "2", "--after", &ids[3],
    ]);
    assert!(
        !String::from_utf8_lossy(&last.stderr).contains("more tasks"),
        "{}",
        text(&last)
    );
}

#[test]
fn recovery_bulk_rerun_and_delete_on_sqlite() {
    let sb =
        Sandbox::new(|dir| format!("sqlite://{}?synchronous=normal", dir.join("q.db").display()));
    bulk_recovery(&sb);
}

#[test]
fn recovery_tasks_list_pages_on_sqlite() {
    let sb =
        Sandbox::new(|dir| format!("sqlite://{}?synchronous=normal", dir.join("q.db").display()));
    list_pages(&sb);
}

#[test]
fn recovery_bulk_rerun_and_delete_and_list_pages_on_redis() {
    let server = support::RedisServer::start();
    let sb = Sandbox::new(|_| server.url());
    sb.ok(&["redis", "install"]);
    bulk_recovery(&sb);
    list_pages(&sb);
}

/// The progress bar is drawn on stderr when it is a terminal (here a
/// pseudo-terminal from util-linux `script`), and never into a pipe.
#[test]
fn recovery_bulk_progress_bar_only_on_a_terminal() {
    let sb =
        Sandbox::new(|dir| format!("sqlite://{}?synchronous=normal", dir.join("q.db").display()));
    sb.enqueue("bar", 4);
    let piped = sb.run(&["tasks", "delete", "--queue", "bar", "--yes", "--max", "2"]);
    assert!(piped.status.success(), "{}", text(&piped));
    let stderr = String::from_utf8_lossy(&piped.stderr);
    assert!(
        !stderr.contains("scanned,") && !stderr.contains('\r'),
        "{}",
        text(&piped)
    );

    let command = format!(
        "{} tasks delete --queue bar --yes --batch 1",
        env!("CARGO_BIN_EXE_sealq")
    );
    let tty = sb
        .cmd(&[])
        .get_envs()
        .fold(Command::new("script"), |mut c, (k, v)| {
            match v {
                Some(v) => c.env(k, v),
                None => c.env_remove(k),
            };
            c
        })
        .args(["-qec", &command, "/dev/null"])
        .current_dir(sb.dir.path())
        .stdin(Stdio::null())
        .output()
        .expect("`script` (util-linux: apt-get install bsdutils) runs the command on a terminal");
    assert!(tty.status.success(), "{}", text(&tty));
    let shown = String::from_utf8_lossy(&tty.stdout);
    assert!(
        shown.contains("scanned,"),
        "no progress bar on a terminal: {shown}"
    );
    assert!(shown.contains("deleted 2 of 2"), "{shown}");
    assert_eq!(sb.queue("bar"), Value::Null, "every task deleted");
}

/// A bulk run stopped by SIGTERM stops between batches: every batch it did
/// is audited, the log verifies, and the same command run again acts on
/// exactly what is left.
#[test]
fn recovery_bulk_interrupted_by_a_signal_is_finished_by_running_it_again() {
    let sb =
        Sandbox::new(|dir| format!("sqlite://{}?synchronous=normal", dir.join("q.db").display()));
    let out = sb.run(&[
        "bench", "--role", "producer", "--tasks", "3000", "--audit", "off", "--broker", &sb.broker,
    ]);
    assert!(out.status.success(), "{}", text(&out));
    let total = sb.count("bench", "pending");
    assert_eq!(total, 3000);
    let args = [
        "tasks", "delete", "--queue", "bench", "--yes", "--batch", "1",
    ];
    let run = sb
        .cmd(&args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn sealq");
    let give_up = Instant::now() + Duration::from_secs(60);
    while sb.count("bench", "pending") == total {
        assert!(Instant::now() < give_up, "the bulk delete never started");
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = terminate(run);
    let left = sb.count("bench", "pending");
    assert!(
        left > 0,
        "the run finished before the signal; make it longer"
    );
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("run the same command again"),
        "{}",
        text(&out)
    );
    sb.ok(&["audit", "verify"]);

    let rest = sb.json(&["tasks", "delete", "--queue", "bench", "--yes", "--json"]);
    assert_eq!(rest["acted"], left, "{rest}");
    assert_eq!(sb.queue("bench"), Value::Null);
    sb.ok(&["audit", "verify"]);
}

/// Bulk actions run with an operator keyring (audit keys only, opens
/// nothing), as the per-id ones do, and its records verify.
#[test]
fn recovery_bulk_runs_with_an_operator_keyring() {
    let sb =
        Sandbox::new(|dir| format!("sqlite://{}?synchronous=normal", dir.join("q.db").display()));
    sb.enqueue("ops", 3);
    let full = sb.keyring.to_str().unwrap().to_owned();
    let operator = sb.ok(&["keys", "generate", "--role", "operator", "--from", &full]);
    let op_path = sb.dir.path().join("operator.toml");
    write_private(&op_path, operator.as_bytes());
    let run = |args: &[&str]| {
        sb.cmd(args)
            .env("SEALQ_KEYRING", &op_path)
            .output()
            .expect("run sealq")
    };
    let dry = run(&["tasks", "delete", "--queue", "ops", "--dry-run"]);
    assert!(dry.status.success(), "{}", text(&dry));
    let real = run(&["tasks", "delete", "--queue", "ops", "--yes"]);
    assert!(real.status.success(), "{}", text(&real));
    assert!(
        String::from_utf8_lossy(&real.stdout).contains("deleted 3 of 3"),
        "{}",
        text(&real)
    );
    sb.ok(&["audit", "verify"]);
}
