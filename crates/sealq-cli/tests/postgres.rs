//! The `sealq` command against a real PostgreSQL server this test starts
//! (the Postgres broker crate's test support, shared): enqueue, stats, and
//! a worker running a command (`worker --exec`) on a `postgres://` URL.

#[path = "../../sealq-postgres/tests/support/mod.rs"]
mod support;

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

fn sealq(dir: &Path, url: &str, args: &[&str]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_sealq"));
    c.current_dir(dir)
        .env_remove("SEALQ_KEYRING_TOML")
        .env_remove("RUST_LOG")
        .env("SEALQ_BROKER", url)
        .env("SEALQ_KEYRING", dir.join("keyring.toml"))
        .env("SEALQ_AUDIT", "off")
        .args(args)
        .stdin(Stdio::null());
    c
}

fn run(dir: &Path, url: &str, args: &[&str]) -> Output {
    let out = sealq(dir, url, args).output().expect("run sealq");
    assert!(
        out.status.success(),
        "sealq {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Wait until `tasks list --state completed` (as `url`) shows `id`, or `end`.
fn completed_by(d: &Path, url: &str, id: &str, end: Instant) -> bool {
    while Instant::now() < end {
        let list = run(d, url, &["tasks", "list", "--state", "completed", "--json"]);
        let v: Value = serde_json::from_slice(&list.stdout).expect("list --json");
        let page = v["tasks"].as_array().expect("a page of tasks");
        if page.iter().any(|t| t["id"] == id) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    false
}

/// SIGTERM a worker and collect what it printed.
fn stop(worker: std::process::Child) -> (Output, String) {
    Command::new("kill")
        .args(["-TERM", &worker.id().to_string()])
        .status()
        .expect("kill");
    let out = worker.wait_with_output().expect("worker exit");
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    (out, stderr)
}

fn fresh_db() -> String {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(support::fresh_db())
}

fn write_private(path: &Path, bytes: &[u8]) {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .expect("create keyring file");
    f.write_all(bytes).expect("write keyring file");
}

#[test]
fn enqueue_and_worker_exec_on_a_postgres_url() {
    let url = fresh_db();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let keys = run(d, &url, &["keys", "generate"]);
    write_private(&d.join("keyring.toml"), &keys.stdout);

    let payload = r#"{"user_id":42}"#;
    let out = run(
        d,
        &url,
        &[
            "enqueue",
            "--queue",
            "jobs",
            "--type",
            "t.exec",
            "--payload",
            payload,
        ],
    );
    let id = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    assert_eq!(id.len(), 36, "an id: {id}");

    let stats = run(d, &url, &["tasks", "stats", "--json"]);
    let v: Value = serde_json::from_slice(&stats.stdout).expect("stats --json");
    let jobs = v
        .as_array()
        .unwrap()
        .iter()
        .find(|q| q["queue"] == "jobs")
        .expect("the queue is listed");
    assert_eq!(jobs["pending"], 1, "{v}");

    let worker = sealq(
        d,
        &url,
        &[
            "worker",
            "--queues",
            "jobs",
            "--exec",
            r#"{ printf '%s\n' "$SEALQ_TASK_ID"; cat; } > out.tmp && mv out.tmp done.txt"#,
        ],
    )
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .spawn()
    .expect("spawn worker");
    let done = d.join("done.txt");
    let end = Instant::now() + Duration::from_secs(30);
    while !done.exists() && Instant::now() < end {
        std::thread::sleep(Duration::from_millis(50));
    }
    // The task is completed once the worker has acked it.
    let completed = completed_by(d, &url, &id, end);
    let (out, stderr) = stop(worker);
    assert!(
        done.exists(),
        "the command never ran; worker stderr: {stderr}"
    );
    assert!(out.status.success(), "worker exit: {stderr}");
    let got = std::fs::read_to_string(&done).unwrap();
    assert_eq!(
        got.trim_end(),
        format!("{id}\n{payload}"),
        "task id and payload on stdin"
    );
    assert!(
        completed,
        "the task was never completed; worker stderr: {stderr}"
    );
    assert!(!stderr.contains("user_id"), "the payload is never logged");
}

#[test]
fn a_postgres_url_with_a_downgradable_sslmode_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let out = sealq(
        dir.path(),
        "postgres://u:s3cret@127.0.0.1:1/db?sslmode=prefer",
        &["tasks", "stats"],
    )
    .output()
    .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("sslmode=prefer"), "{stderr}");
    assert!(!stderr.contains("s3cret"), "{stderr}");
}

/// Issue 23: `--audit` on a Postgres broker writes the log to its tables
/// (the default `file` means the tables there, as the streams do on
/// Redis): a worker audits the task it runs, and `sealq audit verify
/// --broker postgres://…` verifies the whole log and exits 0.
#[test]
fn audit_of_a_worker_on_postgres_verifies_with_audit_verify_broker_postgres() {
    let url = fresh_db();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let keys = run(d, &url, &["keys", "generate"]);
    write_private(&d.join("keyring.toml"), &keys.stdout);
    let audited = |args: &[&str]| {
        let mut c = sealq(d, &url, args);
        c.env("SEALQ_AUDIT", "postgres");
        c
    };
    let out = audited(&[
        "enqueue",
        "--queue",
        "jobs",
        "--type",
        "t.audit",
        "--payload",
        "{}",
    ])
    .output()
    .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let id = String::from_utf8_lossy(&out.stdout).trim().to_owned();

    let worker = audited(&["worker", "--queues", "jobs", "--exec", "cat > /dev/null"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn worker");
    let end = Instant::now() + Duration::from_secs(30);
    let completed = completed_by(d, &url, &id, end);
    let (out, stderr) = stop(worker);
    assert!(
        completed,
        "the task never completed; worker stderr: {stderr}"
    );
    assert!(out.status.success(), "worker exit: {stderr}");

    let verify = sealq(d, &url, &["audit", "verify", "--broker", &url])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&verify.stdout);
    assert_eq!(
        verify.status.code(),
        Some(0),
        "{stdout}{}",
        String::from_utf8_lossy(&verify.stderr)
    );
    // Two writers (enqueue, worker), several records each.
    assert!(stdout.contains("from 2 writers verified"), "{stdout}");
    let show = run(d, &url, &["audit", "show", "--task", &id]);
    let shown = String::from_utf8_lossy(&show.stdout);
    assert!(shown.contains("enqueued"), "{shown}");
    assert!(shown.contains("succeeded"), "{shown}");
}

/// Issue 23: `--blob-url postgres://…` names the Postgres blob store
/// (`sealq.blobs` in that database) instead of being refused.
#[test]
fn keys_reseal_takes_a_postgres_blob_url() {
    let url = fresh_db();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let keys = run(d, &url, &["keys", "generate"]);
    write_private(&d.join("keyring.toml"), &keys.stdout);
    let out = run(
        d,
        &url,
        &["keys", "reseal", "--dry-run", "--json", "--blob-url", &url],
    );
    let v: Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(v["resealed"], 0, "{v}");
    // An unreachable one stops the command, naming the flag.
    let bad = sealq(
        d,
        &url,
        &[
            "keys",
            "reseal",
            "--dry-run",
            "--blob-url",
            "postgres://u@127.0.0.1:1/none",
        ],
    )
    .output()
    .unwrap();
    assert!(!bad.status.success());
    assert!(
        String::from_utf8_lossy(&bad.stderr).contains("--blob-url"),
        "{}",
        String::from_utf8_lossy(&bad.stderr)
    );
}

/// Run `sql` as the superuser on the database of `url`.
fn superuser_sql(url: &str, sql: &str) {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(async {
            let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls)
                .await
                .expect("connect as the superuser");
            let task = tokio::spawn(conn);
            client.batch_execute(sql).await.expect("superuser SQL");
            drop(client);
            let _ = task.await;
        });
}

/// Issue 23, roles, end to end through the real binary: after `sealq
/// postgres install --apply-roles`, a producer login enqueues (audited to
/// the tables), a worker login runs `sealq worker` to completion (audited),
/// an operator login lists the task and verifies the audit log; none of
/// them has a table privilege, and the producer cannot list tasks.
#[test]
fn roles_producer_worker_and_operator_logins_run_the_cli_with_no_table_privilege() {
    let url = fresh_db();
    let db = url.rsplit('/').next().unwrap().to_owned();
    let port = support::shared().port;
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    run(d, &url, &["postgres", "install", "--apply-roles"]);
    let mut sql = String::new();
    for r in ["producer", "worker", "operator"] {
        sql.push_str(&format!("CREATE ROLE {db}_{r} LOGIN IN ROLE sealq_{r};"));
    }
    superuser_sql(&url, &sql);
    let as_ = |r: &str| format!("postgres://{db}_{r}@127.0.0.1:{port}/{db}");
    let (producer, worker_url, operator) = (as_("producer"), as_("worker"), as_("operator"));
    let keys = run(d, &url, &["keys", "generate"]);
    write_private(&d.join("keyring.toml"), &keys.stdout);
    let audited = |url: &str, args: &[&str]| {
        let mut c = sealq(d, url, args);
        c.env("SEALQ_AUDIT", "postgres");
        c
    };

    let out = audited(
        &producer,
        &[
            "enqueue",
            "--queue",
            "jobs",
            "--type",
            "t.roles",
            "--payload",
            "{}",
        ],
    )
    .output()
    .unwrap();
    assert!(
        out.status.success(),
        "producer enqueue: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let id = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    let denied = sealq(d, &producer, &["tasks", "list", "--json"])
        .output()
        .unwrap();
    assert!(!denied.status.success(), "a producer listed tasks");
    assert!(
        String::from_utf8_lossy(&denied.stderr).contains("permission denied"),
        "{}",
        String::from_utf8_lossy(&denied.stderr)
    );

    let worker = audited(
        &worker_url,
        &["worker", "--queues", "jobs", "--exec", "cat > /dev/null"],
    )
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .spawn()
    .expect("spawn worker");
    let end = Instant::now() + Duration::from_secs(30);
    let completed = completed_by(d, &operator, &id, end);
    let (out, stderr) = stop(worker);
    assert!(
        completed,
        "the worker login never completed the task: {stderr}"
    );
    assert!(out.status.success(), "worker exit: {stderr}");
    assert!(!stderr.contains("permission denied"), "{stderr}");

    let verify = sealq(d, &operator, &["audit", "verify"]).output().unwrap();
    assert_eq!(
        verify.status.code(),
        Some(0),
        "{}{}",
        String::from_utf8_lossy(&verify.stdout),
        String::from_utf8_lossy(&verify.stderr)
    );
}
