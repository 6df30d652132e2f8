//! End-to-end tests of the `sealq` binary: each test runs the real binary in
//! its own temporary directory with its own keyring and SQLite file.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_sealq");

/// A temporary directory with a keyring and a broker URL.
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
    /// A fresh directory and keyring (`sealq keys generate > keyring.toml`).
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

    /// The sandbox's broker URL (what `SEALQ_BROKER` is set to).
    fn url(&self) -> String {
        format!(
            "sqlite://{}?synchronous=normal",
            self.path().join("q.db").display()
        )
    }

    /// The binary with a clean, sandboxed environment.
    fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(BIN);
        c.args(args)
            .current_dir(self.path())
            .env_remove("SEALQ_KEYRING_TOML")
            .env_remove("RUST_LOG")
            .env(
                "SEALQ_BROKER",
                format!(
                    "sqlite://{}?synchronous=normal",
                    self.path().join("q.db").display()
                ),
            )
            .env("SEALQ_KEYRING", &self.keyring)
            .stdin(Stdio::null());
        c
    }

    fn run(&self, args: &[&str]) -> Run {
        finished(self.cmd(args).output().expect("run sealq"))
    }

    /// Enqueue and return the printed id.
    fn enqueue(&self, args: &[&str]) -> String {
        let mut all = vec!["enqueue"];
        all.extend_from_slice(args);
        let out = self.run(&all);
        assert_eq!(out.code, 0, "enqueue failed: {}", out.stderr);
        out.stdout.trim().to_owned()
    }

    /// `tasks list --json` as values.
    fn list(&self, extra: &[&str]) -> (Vec<Value>, String) {
        let mut args = vec!["tasks", "list", "--json"];
        args.extend_from_slice(extra);
        let out = self.run(&args);
        assert_eq!(out.code, 0, "tasks list: {}", out.stderr);
        let v: Value = serde_json::from_str(&out.stdout).expect("list --json is JSON");
        (
            v["tasks"].as_array().expect("an array of tasks").clone(),
            out.stdout,
        )
    }

    /// One queue's entry of `tasks stats --json`, and the whole output.
    fn queue_stats(&self, queue: &str) -> (Value, Run) {
        let stats = self.run(&["tasks", "stats", "--json"]);
        let v: Value = serde_json::from_str(&stats.stdout).expect("stats --json");
        let entry = v
            .as_array()
            .expect("an array")
            .iter()
            .find(|q| q["queue"] == queue)
            .unwrap_or_else(|| panic!("{queue} in stats: {}", stats.stdout))
            .clone();
        (entry, stats)
    }

    /// Start a worker in the background.
    fn spawn_worker(&self, args: &[&str]) -> Child {
        let mut all = vec!["worker"];
        all.extend_from_slice(args);
        self.cmd(&all)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn worker")
    }
}

fn finished(o: Output) -> Run {
    Run {
        code: o.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
    }
}

/// SIGTERM via `kill`, then collect the output.
fn terminate(child: Child) -> Run {
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("run kill");
    assert!(status.success());
    finished(child.wait_with_output().expect("wait for worker"))
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

fn is_uuid(s: &str) -> bool {
    s.len() == 36
        && s.char_indices().all(|(i, c)| {
            if [8, 13, 18, 23].contains(&i) {
                c == '-'
            } else {
                c.is_ascii_hexdigit()
            }
        })
}

#[test]
fn keys_generate_prints_a_fresh_keyring() {
    let sb = Sandbox::new();
    let a = sb.run(&["keys", "generate"]);
    let b = sb.run(&["keys", "generate"]);
    assert_eq!((a.code, b.code), (0, 0));
    let ka = sealq::Keyring::from_toml(&a.stdout).expect("output parses as a keyring");
    sealq::Keyring::from_toml(&b.stdout).expect("output parses as a keyring");
    assert_ne!(a.stdout, b.stdout, "two runs must give different keys");
    assert!(a.stdout.starts_with('#'), "starts with a usage comment");
    assert!(a.stdout.contains("SEALQ_KEYRING"));
    assert!(a.stdout.contains(ka.primary_key_id()));
    assert!(a.stderr.is_empty(), "nothing logged: {}", a.stderr);
}

#[test]
fn enqueue_without_keyring_is_a_config_error() {
    let sb = Sandbox::new();
    let out = sb
        .cmd(&["enqueue", "--type", "t", "--payload", "{}"])
        .env_remove("SEALQ_KEYRING")
        .output()
        .expect("run");
    let out = finished(out);
    assert_eq!(out.code, 2, "{}", out.stderr);
    assert!(out.stderr.starts_with("error: "), "{}", out.stderr);
    assert!(out.stderr.contains("sealq keys generate"), "{}", out.stderr);
}

#[test]
fn enqueue_prints_the_task_id_only() {
    let sb = Sandbox::new();
    let out = sb.run(&[
        "enqueue",
        "--queue",
        "emails",
        "--type",
        "emails.welcome",
        "--payload",
        r#"{"user_id": 42}"#,
        "--delay",
        "500ms",
        "--max-retries",
        "3",
        "--timeout",
        "30s",
        "--subject",
        "user-42",
    ]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(out.stdout.lines().count(), 1);
    assert!(is_uuid(out.stdout.trim()), "not a UUID: {:?}", out.stdout);
}

#[test]
fn enqueue_with_card_number_is_refused_without_echoing_it() {
    let sb = Sandbox::new();
    let out = sb.run(&[
        "enqueue",
        "--type",
        "payments.charge",
        "--payload",
        r#"{"order": 7, "payment": {"card": "4242 4242 4242 4242"}}"#,
    ]);
    assert_eq!(out.code, 1, "{}", out.stderr);
    assert!(
        out.stderr.contains("card_number"),
        "names the rule: {}",
        out.stderr
    );
    assert!(
        out.stderr.contains("payment.card"),
        "names the path: {}",
        out.stderr
    );
    assert!(!out.stderr.contains("4242 4242"), "{}", out.stderr);
    assert!(!out.stderr.contains("4242424242424242"), "{}", out.stderr);
    assert!(out.stdout.is_empty());
    assert!(sb.list(&[]).0.is_empty(), "nothing was stored");
}

#[test]
fn enqueue_with_invalid_json_is_a_usage_error() {
    let sb = Sandbox::new();
    let out = sb.run(&["enqueue", "--type", "t", "--payload", r#"{"a": 1,"#]);
    assert_eq!(out.code, 2, "{}", out.stderr);
    assert!(out.stderr.contains("invalid JSON"), "{}", out.stderr);
    assert!(out.stderr.contains("line 1 column"), "{}", out.stderr);
}

#[test]
fn duplicate_unique_key_names_the_existing_task() {
    let sb = Sandbox::new();
    let args = [
        "--type",
        "t",
        "--payload",
        "{}",
        "--unique",
        "report:7",
        "--unique-ttl",
        "1h",
    ];
    let first = sb.enqueue(&args);
    let mut all = vec!["enqueue"];
    all.extend_from_slice(&args);
    let out = sb.run(&all);
    assert_eq!(out.code, 1, "{}", out.stderr);
    assert!(out.stderr.contains(&first), "{}", out.stderr);
}

#[test]
fn unsupported_broker_is_a_usage_error() {
    let sb = Sandbox::new();
    let out = sb.run(&[
        "--broker",
        "mongodb://user:secret@localhost:27017/db",
        "tasks",
        "stats",
    ]);
    assert_eq!(out.code, 2, "{}", out.stderr);
    assert!(out.stderr.contains("sqlite://"), "{}", out.stderr);
    assert!(
        out.stderr.contains("unknown broker scheme"),
        "{}",
        out.stderr
    );
    assert!(!out.stderr.contains("secret"), "{}", out.stderr);
}

#[test]
fn tasks_list_shows_metadata_never_the_payload() {
    let sb = Sandbox::new();
    let id = sb.enqueue(&[
        "--queue",
        "mail",
        "--type",
        "emails.welcome",
        "--payload",
        r#"{"to": "secret-recipient@example.org"}"#,
    ]);
    let (rows, raw) = sb.list(&["--queue", "mail", "--state", "pending"]);
    assert_eq!(rows.len(), 1, "{raw}");
    let row = &rows[0];
    assert_eq!(row["id"], id.as_str());
    assert_eq!(row["type"], "emails.welcome");
    assert_eq!(row["queue"], "mail");
    assert_eq!(row["state"], "pending");
    assert!(row["envelope_bytes"].as_u64().unwrap() > 0);
    assert!(!raw.contains("secret-recipient"), "{raw}");

    let table = sb.run(&["tasks", "list"]);
    assert_eq!(table.code, 0);
    assert!(table.stdout.contains(&id));
    assert!(!table.stdout.contains("secret-recipient"));

    let stats = sb.run(&["tasks", "stats", "--json"]);
    let v: Value = serde_json::from_str(&stats.stdout).expect("stats --json");
    assert_eq!(v[0]["queue"], "mail");
    assert_eq!(v[0]["pending"], 1);
}

#[test]
fn worker_exec_gets_the_payload_on_stdin() {
    let sb = Sandbox::new();
    let payload = r#"{"user_id":42,"tags":["a","b"],"nested":{"x":1.5}}"#;
    let id = sb.enqueue(&["--queue", "jobs", "--type", "t.exec", "--payload", payload]);
    let worker = sb.spawn_worker(&[
        "--queues",
        "jobs:3,other",
        "--exec",
        r#"{ printf '%s %s %s %s\n' "$SEALQ_TASK_ID" "$SEALQ_TASK_TYPE" "$SEALQ_QUEUE" "$SEALQ_ATTEMPT"; cat; } > out.tmp && mv out.tmp done.txt"#,
    ]);
    let done = sb.path().join("done.txt");
    let appeared = eventually(20, || done.exists());
    let out = terminate(worker);
    assert!(
        appeared,
        "the command never ran; worker stderr: {}",
        out.stderr
    );
    assert_eq!(out.code, 0, "worker exit: {}", out.stderr);

    let text = std::fs::read_to_string(&done).expect("read output");
    let (first, rest) = text.split_once('\n').expect("two parts");
    assert_eq!(first, format!("{id} t.exec jobs 1"));
    let got: Value = serde_json::from_str(rest).expect("stdin was JSON");
    let want: Value = serde_json::from_str(payload).unwrap();
    assert_eq!(got, want);

    let report: Value =
        serde_json::from_str(out.stdout.trim().lines().last().expect("a report line"))
            .expect("the report is JSON");
    assert_eq!(report["succeeded"], 1);
    assert!(eventually(5, || sb.list(&["--state", "completed"]).0.len() == 1));
}

#[test]
fn failing_exec_leaves_the_task_in_retry() {
    let sb = Sandbox::new();
    let id = sb.enqueue(&[
        "--type",
        "t.fail",
        "--payload",
        r#"{"private":"do-not-log-me"}"#,
        "--max-retries",
        "5",
    ]);
    let worker = sb.spawn_worker(&["--exec", "echo failing >&2; exit 3"]);
    let mut last = Vec::new();
    let retried = eventually(20, || {
        last = sb.list(&["--state", "retry"]).0;
        !last.is_empty()
    });
    let out = terminate(worker);
    assert!(retried, "task never reached retry; stderr: {}", out.stderr);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(last[0]["id"], id.as_str());
    assert!(last[0]["attempts"].as_u64().unwrap() >= 1);
    assert!(last[0]["error_sealed_bytes"].as_u64().unwrap() > 0);
    assert!(!out.stderr.contains("do-not-log-me"));
}

#[test]
fn demo_runs_and_finds_no_plaintext() {
    let sb = Sandbox::new();
    let out = sb
        .cmd(&["demo", "--tasks", "500"])
        .env_remove("SEALQ_KEYRING")
        .output()
        .expect("run demo");
    let out = finished(out);
    assert_eq!(
        out.code, 0,
        "stdout: {}\nstderr: {}",
        out.stdout, out.stderr
    );
    assert!(
        out.stdout.contains("plaintext found in store: no"),
        "{}",
        out.stdout
    );
    assert!(out.stdout.contains("card_number"), "{}", out.stdout);
    assert!(!out.stdout.contains("4242 4242"), "{}", out.stdout);
    // The demo used a throw-away file, not the sandbox's broker.
    assert!(!sb.path().join("q.db").exists());
}

#[test]
fn demo_json_summary() {
    let sb = Sandbox::new();
    let out = sb.run(&["demo", "--tasks", "300", "--json"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let v: Value = serde_json::from_str(&out.stdout).expect("demo --json is JSON");
    assert_eq!(v["tasks_enqueued"], 300);
    assert_eq!(v["rejected_by_policy"], 1);
    assert_eq!(v["store"]["plaintext_found_in_store"], false);
    assert_eq!(v["store"]["plaintext_contains_marker"], true);
    let done = v["succeeded"].as_u64().unwrap() + v["archived"].as_u64().unwrap();
    assert_eq!(done, 300);
    assert!(v["archived"].as_u64().unwrap() >= 1);
}

#[test]
fn bench_reports_positive_rates_as_json() {
    let sb = Sandbox::new();
    let out = sb.run(&[
        "bench",
        "--tasks",
        "2000",
        "--json",
        "--synchronous",
        "normal",
    ]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let v: Value = serde_json::from_str(&out.stdout).expect("bench --json is JSON");
    for key in [
        "enqueue_per_second",
        "process_per_second",
        "end_to_end_per_second",
    ] {
        assert!(v[key].as_f64().unwrap() > 0.0, "{key}: {}", out.stdout);
    }
    assert_eq!(v["tasks"], 2000);
    assert_eq!(v["latency"]["samples"], 2000);
    assert!(v["latency"]["p99_ms"].as_u64().unwrap() >= v["latency"]["p50_ms"].as_u64().unwrap());

    let out = sb.run(&[
        "bench",
        "--tasks",
        "500",
        "--json",
        "--mode",
        "pipelined",
        "--batch",
        "100",
    ]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let v: Value = serde_json::from_str(&out.stdout).expect("bench --json is JSON");
    assert_eq!(v["mode"], "pipelined");
}

/// The process rate is taken after the worker shut down (every completion
/// committed), and the text output says so.
#[test]
fn bench_says_its_process_rate_counts_until_completions_are_stored() {
    let sb = Sandbox::new();
    let out = sb.run(&["bench", "--tasks", "300"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let line = out
        .stdout
        .lines()
        .find(|l| l.trim_start().starts_with("process"))
        .expect("a process line");
    assert!(
        line.contains(
            "until the last completion was stored: committed, durable with synchronous=full"
        ),
        "{line}"
    );
}

#[test]
fn bench_producer_and_worker_processes_share_a_broker() {
    let sb = Sandbox::new();
    let url = format!("sqlite://{}", sb.path().join("b.db").display());
    // Without --broker on the command line the two sides could not meet.
    let out = sb.run(&["bench", "--role", "worker", "--tasks", "10"]);
    assert_eq!(out.code, 2, "{}", out.stderr);
    assert!(out.stderr.contains("--broker"), "{}", out.stderr);

    let out = sb.run(&[
        "bench",
        "--broker",
        &url,
        "--role",
        "producer",
        "--producers",
        "3",
        "--tasks",
        "301",
        "--batch",
        "50",
        "--json",
    ]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let v: Value = serde_json::from_str(&out.stdout).expect("bench --json is JSON");
    assert_eq!(
        (v["role"].as_str(), v["producers"].as_u64()),
        (Some("producer"), Some(3))
    );
    assert!(v["enqueue_per_second"].as_f64().unwrap() > 0.0);
    assert_eq!(v["latency"]["samples"], 0, "the producer runs no handler");
    // One runtime worker per producer loop, at most one per core.
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get()) as u64;
    let workers = |default: u64| match std::env::var("TOKIO_WORKER_THREADS") {
        Ok(n) => n.parse::<u64>().unwrap(),
        Err(_) => default,
    };
    assert_eq!(v["runtime_workers"].as_u64(), Some(workers(cores.min(3))));
    let stats = sb.run(&["--broker", &url, "tasks", "stats", "--json"]);
    assert!(
        stats.stdout.contains("301"),
        "all 301 pending: {}",
        stats.stdout
    );

    let out = sb.run(&[
        "bench", "--broker", &url, "--role", "worker", "--tasks", "301", "--json",
    ]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let v: Value = serde_json::from_str(&out.stdout).expect("bench --json is JSON");
    assert_eq!(v["role"], "worker");
    assert_eq!(v["latency"]["samples"], 301, "the worker ran every task");
    assert_eq!(v["runtime_workers"].as_u64(), Some(workers(cores)));
    assert!(v["process_per_second"].as_f64().unwrap() > 0.0);
}

#[test]
fn erase_removes_the_subjects_tasks_and_prints_a_receipt_without_the_subject() {
    let sb = Sandbox::new();
    let payload = r#"{"to":"ann@example.com"}"#;
    sb.enqueue(&[
        "--queue",
        "mail",
        "--type",
        "mail.send",
        "--payload",
        payload,
        "--subject",
        "user-42",
    ]);
    sb.enqueue(&[
        "--queue",
        "mail",
        "--type",
        "mail.send",
        "--payload",
        payload,
        "--subject",
        "user-42",
        "--delay",
        "1h",
    ]);
    let kept = sb.enqueue(&[
        "--queue",
        "mail",
        "--type",
        "mail.send",
        "--payload",
        payload,
        "--subject",
        "user-7",
    ]);

    let out = sb.run(&[
        "erase",
        "--subject",
        "user-42",
        "--operator",
        "dpo",
        "--json",
    ]);
    assert_eq!(out.code, 0, "erase: {}", out.stderr);
    let receipt: Value = serde_json::from_str(&out.stdout).expect("receipt is JSON");
    assert_eq!(receipt["counts"]["pending"], 1);
    assert_eq!(receipt["counts"]["scheduled"], 1);
    assert_eq!(receipt["key_destroyed"], true);
    assert_eq!(receipt["operator"], "dpo");
    assert!(
        !out.stdout.contains("user-42"),
        "the receipt names the subject"
    );

    let (tasks, _) = sb.list(&[]);
    assert_eq!(tasks.len(), 1);
    assert_eq!(tasks[0]["id"], kept.as_str());

    // The receipt is in the audit log, which still verifies; no subject id in it.
    let verify = sb.run(&[
        "audit",
        "verify",
        "--broker",
        &format!("sqlite://{}", sb.path().join("q.db").display()),
    ]);
    assert_eq!(
        verify.code, 0,
        "audit verify: {}{}",
        verify.stdout, verify.stderr
    );
    let log = std::fs::read_to_string(sb.path().join("q.db.audit.jsonl")).expect("audit file");
    assert!(log.contains("subject_erased"));
    assert!(!log.contains("user-42"));

    // Again: nothing left, and no error.
    let again = sb.run(&["erase", "--subject", "user-42", "--json"]);
    assert_eq!(again.code, 0, "{}", again.stderr);
    let receipt: Value = serde_json::from_str(&again.stdout).unwrap();
    assert_eq!(receipt["key_destroyed"], false);
}

#[test]
fn operator_actions_are_audited_and_reveal_is_the_only_plaintext() {
    let sb = Sandbox::new();
    let id = sb.enqueue(&[
        "--queue",
        "mail",
        "--type",
        "mail.send",
        "--payload",
        r#"{"to":"zed@example.com"}"#,
    ]);

    let out = sb.run(&["tasks", "reveal", "--id", &id, "--operator", "alice"]);
    assert_eq!(out.code, 0, "reveal: {}", out.stderr);
    let v: Value = serde_json::from_str(&out.stdout).expect("reveal prints JSON");
    assert_eq!(v["payload"]["to"], "zed@example.com");

    let out = sb.run(&["queues", "pause", "--queue", "mail", "--operator", "alice"]);
    assert_eq!(out.code, 0, "pause: {}", out.stderr);
    let out = sb.run(&["queues", "resume", "--queue", "mail", "--operator", "alice"]);
    assert_eq!(out.code, 0, "resume: {}", out.stderr);
    let out = sb.run(&["tasks", "delete", "--id", &id, "--operator", "alice"]);
    assert_eq!(out.code, 0, "delete: {}", out.stderr);
    assert!(out.stdout.contains("deleted 1 of 1"), "{}", out.stdout);
    let out = sb.run(&["tasks", "delete", "--id", "not-a-uuid"]);
    assert_eq!(out.code, 2, "{}", out.stderr);

    let log = std::fs::read_to_string(sb.path().join("q.db.audit.jsonl")).expect("audit file");
    for event in [
        "payload_revealed",
        "queue_paused",
        "queue_resumed",
        "deleted",
    ] {
        assert!(log.contains(event), "no {event} record");
    }
    assert!(
        !log.contains("zed@example.com"),
        "plaintext in the audit log"
    );
    let verify = sb.run(&[
        "audit",
        "verify",
        "--broker",
        &format!("sqlite://{}", sb.path().join("q.db").display()),
    ]);
    assert_eq!(verify.code, 0, "{}{}", verify.stdout, verify.stderr);

    // Without an audit log, revealing is refused.
    let id2 = sb.enqueue(&["--queue", "mail", "--type", "mail.send", "--payload", "{}"]);
    let out = sb.run(&["tasks", "reveal", "--id", &id2, "--audit", "off"]);
    assert_ne!(out.code, 0);
    assert!(out.stderr.contains("audit"), "{}", out.stderr);
}

#[test]
fn keys_rotate_keeps_old_tasks_readable_and_is_audited() {
    let sb = Sandbox::new();
    let before = std::fs::read_to_string(&sb.keyring).unwrap();
    let old = sb.enqueue(&["--queue", "q", "--type", "t", "--payload", r#"{"n":1}"#]);
    let out = sb.run(&["keys", "rotate", "--operator", "ops"]);
    assert_eq!(out.code, 0, "rotate: {}", out.stderr);
    let after = std::fs::read_to_string(&sb.keyring).unwrap();
    assert_ne!(before, after);
    let new_kr = sealq::Keyring::from_toml(&after).expect("rotated keyring parses");
    let old_kr = sealq::Keyring::from_toml(&before).unwrap();
    assert_ne!(new_kr.primary_key_id(), old_kr.primary_key_id());
    assert!(
        new_kr.contains_key(old_kr.primary_key_id()),
        "old key dropped"
    );
    use std::os::unix::fs::PermissionsExt as _;
    let mode = std::fs::metadata(&sb.keyring).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    // The task sealed before the rotation still opens.
    let out = sb.run(&["tasks", "reveal", "--id", &old]);
    assert_eq!(out.code, 0, "reveal after rotate: {}", out.stderr);
    let log = std::fs::read_to_string(sb.path().join("q.db.audit.jsonl")).unwrap();
    assert!(log.contains("key_rotated"));
}

#[test]
fn keys_remove_waits_for_subject_keys_to_be_rewrapped() {
    let sb = Sandbox::new();
    let old_key = sealq::Keyring::from_file(&sb.keyring)
        .unwrap()
        .primary_key_id()
        .to_owned();
    let id = sb.enqueue(&[
        "--type",
        "t",
        "--payload",
        r#"{"n":1}"#,
        "--subject",
        "user-42",
    ]);
    assert_eq!(sb.run(&["keys", "rotate", "--operator", "ops"]).code, 0);
    // The task is sealed with the subject's data key, which is wrapped under
    // the old key's key-encryption key: removing the old key would lose it.
    let refused = sb.run(&["keys", "remove", "--store", &sb.url(), "--key", &old_key]);
    assert_ne!(refused.code, 0);
    assert!(
        refused.stderr.contains("1 subject key(s)") && refused.stderr.contains("keys reseal"),
        "{}",
        refused.stderr
    );
    let dry = sb.run(&["keys", "reseal", "--dry-run", "--json"]);
    assert_eq!(dry.code, 0, "{}", dry.stderr);
    let d: Value = serde_json::from_str(&dry.stdout).expect("json report");
    assert_eq!(d["subject_keys"]["rewrapped"], 1, "{}", dry.stdout);
    let out = sb.run(&["keys", "reseal", "--operator", "ops"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(
        out.stdout.contains("re-wrapped 1 subject data key(s)"),
        "{}",
        out.stdout
    );
    assert!(!out.stdout.contains("user-42"), "{}", out.stdout);
    let out = sb.run(&[
        "keys",
        "remove",
        "--store",
        &sb.url(),
        "--key",
        &old_key,
        "--operator",
        "ops",
    ]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let out = sb.run(&["tasks", "reveal", "--id", &id]);
    assert_eq!(out.code, 0, "reveal without the old key: {}", out.stderr);
    assert!(out.stdout.contains(r#""n""#), "{}", out.stdout);
    let log = std::fs::read_to_string(sb.path().join("q.db.audit.jsonl")).unwrap();
    assert!(log.contains("subject_keys_rewrapped"));
}

#[test]
fn keys_reseal_moves_old_tasks_to_the_new_key_so_the_old_one_can_go() {
    let sb = Sandbox::new();
    let before = sealq::Keyring::from_file(&sb.keyring).unwrap();
    let old_key = before.primary_key_id().to_owned();
    let a = sb.enqueue(&["--queue", "q", "--type", "t", "--payload", r#"{"n":1}"#]);
    let b = sb.enqueue(&["--queue", "r", "--type", "t", "--payload", r#"{"n":2}"#]);
    assert_eq!(sb.run(&["keys", "rotate", "--operator", "ops"]).code, 0);
    let new_key = sealq::Keyring::from_file(&sb.keyring)
        .unwrap()
        .primary_key_id()
        .to_owned();

    // `tasks list` shows which key each envelope names.
    let (rows, _) = sb.list(&[]);
    assert_eq!(rows.len(), 2);
    assert!(
        rows.iter().all(|r| r["key_id"] == old_key.as_str()),
        "{rows:?}"
    );

    // The old key cannot be removed while tasks name it.
    let refused = sb.run(&["keys", "remove", "--store", &sb.url(), "--key", &old_key]);
    assert_ne!(refused.code, 0);
    assert!(
        refused.stderr.contains("2 part(s)") && refused.stderr.contains("keys reseal"),
        "{}",
        refused.stderr
    );
    assert!(
        sealq::Keyring::from_file(&sb.keyring)
            .unwrap()
            .contains_key(&old_key)
    );

    // A dry run reports both tasks and changes nothing.
    let dry = sb.run(&["keys", "reseal", "--dry-run", "--json"]);
    assert_eq!(dry.code, 0, "{}", dry.stderr);
    let d: Value = serde_json::from_str(&dry.stdout).expect("json report");
    assert_eq!(d["resealed"], 2, "{}", dry.stdout);
    assert_eq!(d["dry_run"], true);

    let out = sb.run(&["keys", "reseal", "--operator", "ops@example.com"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(
        out.stdout.contains(&format!(
            "re-sealed 2 part(s) of 2 task(s) under `{new_key}`"
        )),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout.contains(&format!(
            "no stored task or subject key names `{old_key}` any more"
        )),
        "{}",
        out.stdout
    );
    assert!(!out.stdout.contains(r#""n""#), "no payload in the output");
    let (rows, _) = sb.list(&[]);
    assert!(
        rows.iter().all(|r| r["key_id"] == new_key.as_str()),
        "{rows:?}"
    );
    let table = sb.run(&["tasks", "list"]);
    assert!(
        table.stdout.contains("KEY") && table.stdout.contains(&new_key),
        "{}",
        table.stdout
    );
    let again = sb.run(&["keys", "reseal", "--json"]);
    let g: Value = serde_json::from_str(&again.stdout).expect("json report");
    assert_eq!(
        (g["resealed"].clone(), g["current"].clone()),
        (0.into(), 2.into())
    );

    // Now the old key goes; both tasks still open.
    let out = sb.run(&[
        "keys",
        "remove",
        "--store",
        &sb.url(),
        "--key",
        &old_key,
        "--operator",
        "ops",
    ]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(
        out.stdout
            .contains("no stored task or subject key names it"),
        "{}",
        out.stdout
    );
    let kr = sealq::Keyring::from_file(&sb.keyring).unwrap();
    assert!(!kr.contains_key(&old_key));
    assert_eq!(kr.primary_key_id(), new_key);
    let primary = sb.run(&["keys", "remove", "--store", &sb.url(), "--key", &new_key]);
    assert_eq!(primary.code, 2, "{}", primary.stderr);
    assert!(primary.stderr.contains("primary"), "{}", primary.stderr);
    for id in [&a, &b] {
        let out = sb.run(&["tasks", "reveal", "--id", id]);
        assert_eq!(out.code, 0, "reveal without the old key: {}", out.stderr);
    }
    let log = std::fs::read_to_string(sb.path().join("q.db.audit.jsonl")).unwrap();
    assert_eq!(log.matches(r#""type":"resealed""#).count(), 2, "{log}");
    assert!(log.contains(r#""operator":"ops@example.com""#));
    assert!(log.contains(r#""type":"key_removed""#), "{log}");

    // Bad options are usage errors naming the flag's value.
    let out = sb.run(&["keys", "reseal", "--from-key", &new_key]);
    assert_ne!(out.code, 0);
    assert!(out.stderr.contains("primary"), "{}", out.stderr);
}

/// As an application would: enqueue one `big` task (`{"text": text}`) into
/// the sandbox's `q.db`, its payload offloaded to `store`. Returns the key
/// id that sealed it (the keyring's primary).
fn enqueue_offloaded(
    sb: &Sandbox,
    store: std::sync::Arc<dyn sealq::blob::BlobStore>,
    text: String,
) -> String {
    tokio::runtime::Runtime::new().unwrap().block_on(async {
        let broker: std::sync::Arc<dyn sealq::Broker> =
            std::sync::Arc::new(sealq_sqlite::SqliteBroker::open(sb.path().join("q.db")).unwrap());
        let keyring = std::sync::Arc::new(sealq::Keyring::from_file(&sb.keyring).unwrap());
        let client = sealq::Client::builder(broker, keyring.clone())
            .blob_store(store, 256)
            .build();
        let task = sealq::RawTask::from_json(
            "big",
            &serde_json::json!({ "text": text }),
            sealq::EnqueueOptions::new(),
        )
        .unwrap();
        client.enqueue_raw(task).await.unwrap();
        keyring.primary_key_id().to_owned()
    })
}

#[test]
fn keys_reseal_with_a_sqlite_blob_url_reseals_blobs_in_the_database() {
    let sb = Sandbox::new();
    let db = sb.path().join("q.db");
    let store = std::sync::Arc::new(sealq_sqlite::SqliteBlobStore::open(&db).unwrap());
    let old = enqueue_offloaded(&sb, store, "y".repeat(3000));
    assert_eq!(sb.run(&["keys", "rotate"]).code, 0);
    let missing = sb.run(&["keys", "reseal", "--blob-url", "sqlite://nope.db"]);
    assert_eq!(missing.code, 2, "{}", missing.stderr);
    assert!(missing.stderr.contains("nope.db"), "{}", missing.stderr);
    let url = format!("sqlite://{}", db.display());
    let out = sb.run(&["keys", "reseal", "--blob-url", &url, "--json"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let v: Value = serde_json::from_str(&out.stdout).expect("json");
    assert_eq!(
        (v["resealed"].clone(), v["blobs"].clone()),
        (1.into(), 1.into()),
        "{v}"
    );
    let out = sb.run(&[
        "keys",
        "remove",
        "--store",
        &sb.url(),
        "--key",
        &old,
        "--blob-url",
        &url,
    ]);
    assert_eq!(out.code, 0, "{}", out.stderr);
}

#[test]
fn keys_reseal_with_blob_dir_reseals_offloaded_payloads_too() {
    let sb = Sandbox::new();
    let blobs = sb.path().join("blobs");
    std::fs::create_dir(&blobs).unwrap();
    // An application offloads a large payload to a filesystem blob store.
    let store = std::sync::Arc::new(sealq::blob::FsBlobStore::open(&blobs).unwrap());
    let old = enqueue_offloaded(&sb, store, "x".repeat(4000));
    assert_eq!(sb.run(&["keys", "rotate"]).code, 0);

    // Without the store the blob cannot be re-sealed, and the old key stays.
    let out = sb.run(&["keys", "reseal", "--dry-run", "--json"]);
    let v: Value = serde_json::from_str(&out.stdout).expect("json");
    assert_eq!(v["failed"][0]["part"], "blob", "{}", out.stdout);
    let missing = sb.run(&["keys", "reseal", "--blob-dir", "no-such-dir"]);
    assert_eq!(missing.code, 2, "{}", missing.stderr);

    let out = sb.run(&[
        "keys",
        "reseal",
        "--blob-dir",
        blobs.to_str().unwrap(),
        "--json",
    ]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let v: Value = serde_json::from_str(&out.stdout).expect("json");
    assert_eq!(
        (v["resealed"].clone(), v["blobs"].clone()),
        (1.into(), 1.into()),
        "{v}"
    );
    assert_eq!(v["failed"], serde_json::json!([]), "{v}");
    // Removal checks inside the blobs too when it can see them.
    let out = sb.run(&["keys", "remove", "--store", &sb.url(), "--key", &old]);
    assert_ne!(out.code, 0, "the blob could not be checked: {}", out.stdout);
    let out = sb.run(&[
        "keys",
        "remove",
        "--store",
        &sb.url(),
        "--key",
        &old,
        "--blob-dir",
        blobs.to_str().unwrap(),
    ]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    // A worker without the old key runs the task from its re-sealed blob.
    tokio::runtime::Runtime::new().unwrap().block_on(async {
        let broker: std::sync::Arc<dyn sealq::Broker> =
            std::sync::Arc::new(sealq_sqlite::SqliteBroker::open(sb.path().join("q.db")).unwrap());
        let keyring = std::sync::Arc::new(sealq::Keyring::from_file(&sb.keyring).unwrap());
        assert!(!keyring.contains_key(&old));
        let store = std::sync::Arc::new(sealq::blob::FsBlobStore::open(&blobs).unwrap());
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let worker = sealq::Worker::builder(broker, keyring)
            .blob_store(store)
            .handle_raw("big", move |payload, _ctx| {
                let tx = tx.clone();
                async move {
                    let v = payload.to_json().unwrap();
                    let _ = tx.send(v["text"].as_str().unwrap().len());
                    Ok(())
                }
            })
            .build()
            .unwrap()
            .spawn();
        let len = tokio::time::timeout(std::time::Duration::from_secs(20), rx.recv())
            .await
            .expect("the task ran")
            .unwrap();
        assert_eq!(len, 4000);
        let report = worker.shutdown().await.unwrap();
        assert_eq!(report.integrity_failures, 0);
    });
}

#[test]
fn queues_limit_caps_waiting_tasks_for_every_producer() {
    let sb = Sandbox::new();
    let out = sb.run(&[
        "queues",
        "limit",
        "--queue",
        "mail",
        "--max-depth",
        "1",
        "--operator",
        "ops",
        "--create",
    ]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let task = ["--queue", "mail", "--type", "t", "--payload", r#"{"n":1}"#];
    sb.enqueue(&task);
    let full = sb.run(&[&["enqueue"][..], &task[..]].concat());
    assert_eq!(full.code, 1, "{}", full.stderr);
    assert!(
        full.stderr.contains("queue `mail` is full") && full.stderr.contains("1 waiting"),
        "{}",
        full.stderr
    );
    let (mail, _) = sb.queue_stats("mail");
    assert_eq!(
        (mail["max_depth"].clone(), mail["pending"].clone()),
        (1.into(), 1.into())
    );
    // Neither flag, or both: a usage error.
    assert_eq!(sb.run(&["queues", "limit", "--queue", "mail"]).code, 2);
    let both = sb.run(&[
        "queues",
        "limit",
        "--queue",
        "mail",
        "--max-depth",
        "2",
        "--clear",
    ]);
    assert_eq!(both.code, 2, "{}", both.stderr);
    let out = sb.run(&["queues", "limit", "--queue", "mail", "--clear"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    sb.enqueue(&task);
    let log = std::fs::read_to_string(sb.path().join("q.db.audit.jsonl")).unwrap();
    assert!(log.contains(r#""type":"queue_limited""#), "{log}");
    assert!(log.contains(r#""rule":"max_depth""#), "{log}");
}

#[test]
fn queues_rate_sets_and_clears_a_rate_limit() {
    let sb = Sandbox::new();
    let out = sb.run(&[
        "queues",
        "rate",
        "--queue",
        "mail",
        "--limit",
        "5",
        "--per",
        "1s",
        "--operator",
        "ops",
        "--create",
    ]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(
        out.stdout.contains("at most 5 task(s) per 1000 ms"),
        "{}",
        out.stdout
    );
    let (mail, stats) = sb.queue_stats("mail");
    assert_eq!(mail["rate_limit"]["limit"], 5, "{}", stats.stdout);
    assert_eq!(mail["rate_limit"]["period_ms"], 1000, "{}", stats.stdout);
    let table = sb.run(&["tasks", "stats"]);
    assert!(table.stdout.contains("5/1000ms"), "{}", table.stdout);
    for bad in [
        vec!["queues", "rate", "--queue", "mail"],
        vec!["queues", "rate", "--queue", "mail", "--limit", "5"],
        vec![
            "queues", "rate", "--queue", "mail", "--limit", "0", "--per", "1s",
        ],
        vec![
            "queues", "rate", "--queue", "mail", "--limit", "5", "--per", "1s", "--clear",
        ],
    ] {
        let out = sb.run(&bad);
        assert_eq!(out.code, 2, "{bad:?}: {}", out.stderr);
    }
    let out = sb.run(&["queues", "rate", "--queue", "mail", "--clear"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let log = std::fs::read_to_string(sb.path().join("q.db.audit.jsonl")).unwrap();
    assert_eq!(
        log.matches(r#""type":"queue_rate_limited""#).count(),
        2,
        "{log}"
    );
}

#[test]
fn cron_run_enqueues_ticks_once_from_two_processes_and_next_lists_ticks() {
    let sb = Sandbox::new();
    let entry = r#"beat;* * * * * *;t;{"n":1}"#;
    let spawn = || {
        sb.cmd(&["cron", "run", "--entry", entry, "--queue", "cron"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn cron run")
    };
    let (a, b) = (spawn(), spawn());
    // `tasks list` only reads: it refuses a store cron has not created yet.
    assert!(eventually(20, || sb.path().join("q.db").exists()));
    // Two ticks at least, whatever the machine's speed.
    assert!(eventually(20, || sb.list(&["--queue", "cron"]).0.len() >= 2));
    let (ra, rb) = (terminate(a), terminate(b));
    assert_eq!(ra.code, 0, "{}", ra.stderr);
    assert_eq!(rb.code, 0, "{}", rb.stderr);
    let stats =
        |r: &Run| -> Value { serde_json::from_str(r.stdout.trim()).expect("counters JSON") };
    let (sa, sb2) = (stats(&ra), stats(&rb));
    let enqueued = sa["enqueued"].as_u64().unwrap() + sb2["enqueued"].as_u64().unwrap();
    let (rows, _) = sb.list(&["--queue", "cron"]);
    assert_eq!(rows.len() as u64, enqueued, "{sa} {sb2}");
    assert!(rows.iter().all(|r| r["type"] == "t"), "{rows:?}");

    let bad = sb.run(&["cron", "run", "--entry", "only;two"]);
    assert_eq!(bad.code, 2, "{}", bad.stderr);
    let bad = sb.run(&["cron", "run", "--entry", r#"x;* * * * *;t;{"card": 4242"#]);
    assert_eq!(bad.code, 2, "{}", bad.stderr);
    assert!(
        !bad.stderr.contains("4242"),
        "the payload was echoed: {}",
        bad.stderr
    );

    let next = sb.run(&[
        "cron",
        "next",
        "--pattern",
        "0 2 * * *",
        "--time-zone",
        "Europe/Paris",
        "--count",
        "3",
    ]);
    assert_eq!(next.code, 0, "{}", next.stderr);
    let lines: Vec<&str> = next.stdout.lines().collect();
    assert_eq!(lines.len(), 3, "{}", next.stdout);
    assert!(
        lines
            .iter()
            .all(|l| l.contains("T02:00:00") && l.ends_with("[Europe/Paris]")),
        "{}",
        next.stdout
    );
    let bad = sb.run(&["cron", "next", "--pattern", "61 * * * *"]);
    assert_eq!(bad.code, 2, "{}", bad.stderr);
    assert!(bad.stderr.contains("61 * * * *"), "{}", bad.stderr);
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
