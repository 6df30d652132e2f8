//! Finding 4 of the security review, with the real binary: `tasks list`,
//! `tasks stats` and `payloads report` skip a task whose stored row or
//! fields do not decode, warn naming it, and end with one summary line on
//! stderr (`skipped N undecodable task(s); see warnings above`).

#[path = "../../sealq-redis/tests/support/mod.rs"]
mod support;

use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::process::{Command, Output, Stdio};

const BIN: &str = env!("CARGO_BIN_EXE_sealq");

fn sealq(dir: &Path, broker: &str, args: &[&str]) -> Output {
    Command::new(BIN)
        .args(args)
        .current_dir(dir)
        .env_remove("SEALQ_KEYRING_TOML")
        .env_remove("SEALQ_AUDIT")
        .env_remove("RUST_LOG")
        .env("SEALQ_BROKER", broker)
        .env("SEALQ_KEYRING", dir.join("k.toml"))
        .stdin(Stdio::null())
        .output()
        .expect("run sealq")
}

fn text(o: &Output) -> String {
    format!(
        "exit {:?}\n{}{}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// A keyring and three enqueued tasks; returns their ids.
fn setup(dir: &Path, broker: &str) -> Vec<String> {
    let out = sealq(dir, broker, &["keys", "generate"]);
    assert!(out.status.success(), "{}", text(&out));
    let mut f = std::fs::OpenOptions::new()
        .create_new(true)
        .write(true)
        .mode(0o600)
        .open(dir.join("k.toml"))
        .expect("keyring");
    std::io::Write::write_all(&mut f, &out.stdout).expect("write");
    (0..3)
        .map(|n| {
            let out = sealq(
                dir,
                broker,
                &[
                    "enqueue",
                    "--type",
                    "t",
                    "--payload",
                    &format!(r#"{{"n":{n}}}"#),
                ],
            );
            assert!(out.status.success(), "{}", text(&out));
            String::from_utf8_lossy(&out.stdout).trim().to_owned()
        })
        .collect()
}

/// `args` succeeds, warns naming `bad`, and ends with the summary line for `n`.
fn summarises(dir: &Path, broker: &str, args: &[&str], bad: &str, n: u64) {
    let out = sealq(dir, broker, args);
    assert!(out.status.success(), "{args:?}: {}", text(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(bad), "{args:?} names the task: {err}");
    let last = err.lines().last().unwrap_or_default();
    assert!(
        last.starts_with(&format!(
            "skipped {n} undecodable task(s); see warnings above"
        )),
        "{args:?} ends with the summary: {err}"
    );
    assert!(
        !String::from_utf8_lossy(&out.stdout).contains("skipped"),
        "the summary goes to stderr"
    );
}

#[test]
fn finding_4_operator_commands_end_with_a_summary_of_skipped_tasks_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("q.db");
    let broker = format!("sqlite://{}", db.display());
    let ids = setup(dir.path(), &broker);
    // Nothing skipped: no summary.
    let out = sealq(dir.path(), &broker, &["tasks", "list"]);
    assert!(
        !String::from_utf8_lossy(&out.stderr).contains("skipped"),
        "{}",
        text(&out)
    );

    let id: sealq::TaskId = ids[1].parse().unwrap();
    let conn = rusqlite::Connection::open(&db).unwrap();
    conn.busy_timeout(std::time::Duration::from_secs(10))
        .unwrap();
    let n = conn
        .execute(
            "UPDATE tasks SET state = 'bogus' WHERE id = ?1",
            [id.as_bytes()],
        )
        .unwrap();
    assert_eq!(n, 1);
    drop(conn);
    summarises(dir.path(), &broker, &["tasks", "list"], &ids[1], 1);
    summarises(
        dir.path(),
        &broker,
        &["tasks", "list", "--json"],
        &ids[1],
        1,
    );
    summarises(dir.path(), &broker, &["tasks", "stats"], &ids[1], 1);
    summarises(dir.path(), &broker, &["payloads", "report"], &ids[1], 1);
}

#[test]
fn finding_4_operator_commands_end_with_a_summary_of_skipped_tasks_redis() {
    let server = support::RedisServer::start();
    let dir = tempfile::tempdir().unwrap();
    let broker = server.url();
    let out = sealq(dir.path(), &broker, &["redis", "install"]);
    assert!(out.status.success(), "{}", text(&out));
    let ids = setup(dir.path(), &broker);
    let out = sealq(dir.path(), &broker, &["tasks", "list"]);
    assert!(
        !String::from_utf8_lossy(&out.stderr).contains("skipped"),
        "{}",
        text(&out)
    );

    let id: sealq::TaskId = ids[1].parse().unwrap();
    let key = format!("sealq:{{default}}:t:{}", id.0.simple());
    let out = server.cli(&["HSET", &key, "s", "bogus"]);
    assert!(out.trim() == "0" || out.trim() == "1", "HSET: {out}");
    // Redis names the task by the id in its keys (32 hex digits).
    let named = id.0.simple().to_string();
    summarises(dir.path(), &broker, &["tasks", "list"], &named, 1);
    summarises(dir.path(), &broker, &["payloads", "report"], &named, 1);
}
