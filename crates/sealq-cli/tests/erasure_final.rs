//! Finding 6 of the security review through the real `sealq` binary, on
//! SQLite and on a real redis-server this test starts ("erasure can be
//! undone"):
//!
//! - copies of the broker and the subject key store taken before
//!   `sealq erase`, put back after it: before `sealq erase --finalize` a
//!   worker hands the erased payload to its command again (the window the
//!   docs state); after it, a worker with the current keyring holds the
//!   task and never runs its command;
//! - `sealq erase` checks each task carrying the subject's clear tag: one
//!   given the tag by an edit of the store is named, not deleted nor
//!   counted; `--full-scan` finds one whose tag was removed.

#[path = "../../sealq-redis/tests/support/mod.rs"]
mod support;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_sealq");

/// The store files of a SQLite deployment (not its audit log).
const SQLITE_FILES: &[&str] = &[
    "q.db",
    "q.db-wal",
    "q.db-shm",
    "q.db.subject-keys",
    "q.db.subject-keys-wal",
    "q.db.subject-keys-shm",
];

/// A directory with a keyring (`sealq keys generate`) and a broker URL.
struct Sandbox {
    dir: tempfile::TempDir,
    broker: String,
}

impl Sandbox {
    fn new(broker: Option<String>) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let broker = broker.unwrap_or_else(|| {
            format!(
                "sqlite://{}?synchronous=normal",
                dir.path().join("q.db").display()
            )
        });
        let sb = Sandbox { dir, broker };
        let out = sb.run(&["keys", "generate"]);
        assert!(out.status.success(), "{}", text(&out));
        write_private(&sb.keyring(), &out.stdout);
        sb
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    fn keyring(&self) -> PathBuf {
        self.path().join("keyring.toml")
    }

    fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(BIN);
        c.args(args)
            .current_dir(self.path())
            .env_remove("SEALQ_KEYRING_TOML")
            .env_remove("SEALQ_AUDIT")
            .env_remove("RUST_LOG")
            .env("SEALQ_BROKER", &self.broker)
            .env("SEALQ_KEYRING", self.keyring())
            .stdin(Stdio::null());
        c
    }

    fn run(&self, args: &[&str]) -> Output {
        self.cmd(args).output().expect("run sealq")
    }

    fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(out.status.success(), "sealq {args:?}: {}", text(&out));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn enqueue(&self, to: &str, subject: &str) -> String {
        let payload = format!(r#"{{"to":"{to}"}}"#);
        self.ok(&[
            "enqueue",
            "--type",
            "mail.send",
            "--payload",
            &payload,
            "--subject",
            subject,
        ])
        .trim()
        .to_owned()
    }

    fn task(&self, id: &str) -> Option<Value> {
        let v: Value = serde_json::from_str(&self.ok(&["tasks", "list", "--json"])).unwrap();
        v["tasks"]
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["id"] == id)
            .cloned()
    }

    /// Run `sealq worker --exec` (appending each payload to `handled.txt`)
    /// until `done` says so; the worker's output.
    fn work_until(&self, mut done: impl FnMut(&Sandbox) -> bool) -> Output {
        let worker: Child = self
            .cmd(&[
                "worker",
                "--exec",
                "cat >> handled.txt; echo >> handled.txt",
            ])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn worker");
        let end = Instant::now() + Duration::from_secs(30);
        let mut reached = false;
        while Instant::now() < end {
            if done(self) {
                reached = true;
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let status = Command::new("kill")
            .args(["-TERM", &worker.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
        let out = worker.wait_with_output().unwrap();
        assert!(reached, "the worker never got there: {}", text(&out));
        out
    }

    fn handled(&self) -> String {
        std::fs::read_to_string(self.path().join("handled.txt")).unwrap_or_default()
    }

    /// Wait until task `id` was leased and held (back in `retry`).
    fn held(&self, id: &str) -> impl FnMut(&Sandbox) -> bool + use<> {
        let id = id.to_owned();
        move |sb: &Sandbox| {
            sb.task(&id)
                .is_some_and(|t| t["state"] == "retry" && t["attempts"].as_u64() >= Some(1))
        }
    }

    /// Copy the SQLite store files into `name/`.
    fn backup(&self, name: &str) {
        let to = self.path().join(name);
        std::fs::create_dir_all(&to).unwrap();
        for f in SQLITE_FILES {
            let from = self.path().join(f);
            if from.exists() {
                std::fs::copy(&from, to.join(f)).unwrap();
            }
        }
    }

    /// Put the SQLite store files of `name/` back in place.
    fn restore(&self, name: &str) {
        for f in SQLITE_FILES {
            let _ = std::fs::remove_file(self.path().join(f));
            let from = self.path().join(name).join(f);
            if from.exists() {
                std::fs::copy(&from, self.path().join(f)).unwrap();
            }
        }
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
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .unwrap();
    f.write_all(bytes).unwrap();
}

/// `sealq erase --finalize` and what it leaves in the keyring file.
fn finalize(sb: &Sandbox) {
    let before = std::fs::read_to_string(sb.keyring()).unwrap();
    assert!(!before.contains("[kek]"));
    let out = sb.ok(&["erase", "--finalize", "--operator", "dpo"]);
    assert!(out.contains("finalised erasures"), "{out}");
    assert!(out.contains("restart"), "says what to do next: {out}");
    let after = std::fs::read_to_string(sb.keyring()).unwrap();
    assert!(
        after.contains("[kek]") && !after.contains("open_legacy"),
        "{after}"
    );
    use std::os::unix::fs::PermissionsExt as _;
    let mode = std::fs::metadata(sb.keyring())
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
}

#[test]
fn finding_6_restored_copies_do_not_reopen_after_erase_finalize_sqlite() {
    let sb = Sandbox::new(None);
    let id42 = sb.enqueue("ann@example.com", "user-42");
    sb.enqueue("bob@example.com", "user-7");
    sb.backup("before");

    let out = sb.ok(&["erase", "--subject", "user-42"]);
    assert!(
        out.contains("erase --finalize"),
        "the receipt names the step: {out}"
    );
    assert!(sb.task(&id42).is_none());
    sb.backup("erased");

    // The window: put the copies back before finalising, and the erased
    // payload reaches the worker's command again.
    sb.restore("before");
    sb.work_until(|sb| sb.handled().contains("ann@example.com"));

    sb.restore("erased");
    std::fs::remove_file(sb.path().join("handled.txt")).unwrap();
    finalize(&sb);
    let log = std::fs::read_to_string(sb.path().join("q.db.audit.jsonl")).unwrap();
    assert!(log.contains("erasure_finalised"), "audited");
    let verify = sb.run(&["audit", "verify", "--broker", &sb.broker]);
    assert!(verify.status.success(), "{}", text(&verify));

    // Put the copies back after it: the task is there, the worker leases
    // it, holds it, and never runs its command on the payload.
    sb.restore("before");
    assert!(sb.task(&id42).is_some(), "the restore must bring it back");
    sb.work_until(sb.held(&id42));
    assert!(
        !sb.handled().contains("ann@example.com"),
        "{}",
        sb.handled()
    );
}

#[test]
fn finding_6_restored_copies_do_not_reopen_after_erase_finalize_redis() {
    let mut server = support::RedisServer::start();
    let sb = Sandbox::new(Some(server.url()));
    sb.ok(&["redis", "install"]);
    let id42 = sb.enqueue("ann@example.com", "user-42");
    sb.enqueue("bob@example.com", "user-7");
    // The backup: an RDB snapshot of the whole server (tasks and keys).
    assert!(server.cli(&["SAVE"]).contains("OK"));
    let rdb = server.dir.join("dump.rdb");
    let copy = sb.path().join("before.rdb");
    std::fs::copy(&rdb, &copy).unwrap();

    sb.ok(&["erase", "--subject", "user-42"]);
    assert!(sb.task(&id42).is_none());
    finalize(&sb);

    server.stop();
    std::fs::copy(&copy, &rdb).unwrap();
    server.restart();
    assert!(sb.task(&id42).is_some(), "the restore must bring it back");
    sb.work_until(sb.held(&id42));
    assert!(
        !sb.handled().contains("ann@example.com"),
        "{}",
        sb.handled()
    );
}

/// Erase `user-42` after another subject's task and a task with no subject
/// were given its clear tag (by `forge`), and after one task of `user-43`
/// lost its tag (by `clear`): the forged ones are named, kept, not counted;
/// `--full-scan` finds the cleared one.
fn forged_and_cleared(sb: &Sandbox, forge: impl Fn(&str, &str), clear: impl Fn(&str)) {
    let own = sb.enqueue("ann@example.com", "user-42");
    let other = sb.enqueue("bob@example.com", "user-7");
    let payload = r#"{"to":"carol@example.com"}"#;
    let plain = sb
        .ok(&["enqueue", "--type", "mail.send", "--payload", payload])
        .trim()
        .to_owned();
    forge(&own, &other);
    forge(&own, &plain);
    let out = sb.ok(&["erase", "--subject", "user-42", "--json"]);
    let r: Value = serde_json::from_str(&out).unwrap();
    let total: u64 = r["counts"]
        .as_object()
        .unwrap()
        .values()
        .map(|v| v.as_u64().unwrap())
        .sum();
    assert_eq!(total, 1, "{out}");
    let mut named: Vec<&str> = r["tag_mismatch"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    named.sort();
    let mut want = vec![other.as_str(), plain.as_str()];
    want.sort();
    assert_eq!(named, want);
    assert!(sb.task(&own).is_none());
    assert!(
        sb.task(&other).is_some(),
        "a forged tag deleted user-7's task"
    );
    assert!(sb.task(&plain).is_some());
    let text = sb.ok(&["erase", "--subject", "user-42"]);
    assert!(
        text.contains("tag mismatch") && text.contains(&other),
        "{text}"
    );

    let cleared = sb.enqueue("dan@example.com", "user-43");
    let tagged = sb.enqueue("dan@example.com", "user-43");
    clear(&cleared);
    let out = sb.ok(&["erase", "--subject", "user-43", "--full-scan", "--json"]);
    let r: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(r["untagged_found"], 1, "{out}");
    assert!(sb.task(&cleared).is_none() && sb.task(&tagged).is_none());
}

#[test]
fn finding_6_erase_checks_the_tag_against_the_envelope_sqlite() {
    let sb = Sandbox::new(None);
    let db = sb.path().join("q.db");
    let sql = |q: &str, a: &str, b: Option<&str>| {
        let conn = rusqlite::Connection::open(&db).unwrap();
        let blob = |s: &str| uuid_bytes(s);
        let n = match b {
            Some(b) => conn.execute(q, rusqlite::params![blob(a), blob(b)]),
            None => conn.execute(q, rusqlite::params![blob(a)]),
        }
        .unwrap();
        assert_eq!(n, 1, "{q}");
    };
    forged_and_cleared(
        &sb,
        |from, to| {
            sql(
                "UPDATE tasks SET subject_tag = (SELECT subject_tag FROM tasks WHERE id = ?1) \
                 WHERE id = ?2",
                from,
                Some(to),
            )
        },
        |id| {
            sql(
                "UPDATE tasks SET subject_tag = NULL WHERE id = ?1",
                id,
                None,
            )
        },
    );
}

#[test]
fn finding_6_erase_checks_the_tag_against_the_envelope_redis() {
    let server = support::RedisServer::start();
    let sb = Sandbox::new(Some(server.url()));
    sb.ok(&["redis", "install"]);
    let key = |id: &str| format!("sealq:{{default}}:t:{}", id.replace('-', ""));
    forged_and_cleared(
        &sb,
        |from, to| {
            let tag = server.cli(&["HGET", &key(from), "sub"]);
            let tag = tag.trim();
            assert_eq!(tag.len(), 64, "{tag}");
            server.cli(&["HSET", &key(to), "sub", tag]);
        },
        |id| {
            assert!(server.cli(&["HDEL", &key(id), "sub"]).contains('1'));
        },
    );
}

/// A printed task id (UUID text) as the 16 bytes SQLite stores.
fn uuid_bytes(s: &str) -> Vec<u8> {
    let hex: String = s.chars().filter(|c| *c != '-').collect();
    (0..16)
        .map(|i| u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).unwrap())
        .collect()
}

/// `erase --finalize` drops no epoch while a subject key is left that it
/// could not re-wrap (here one made under another keyring): it exits with
/// an error saying so, the keyring file keeps the older KEKs (the new
/// epoch current), and `--force` drops them.
#[test]
fn finding_6_finalize_keeps_old_keks_while_a_key_is_left() {
    let sb = Sandbox::new(None);
    sb.enqueue("ann@example.com", "user-42");
    let other = sb.path().join("other.toml");
    let out = sb.run(&["keys", "generate"]);
    write_private(&other, &out.stdout);
    let payload = r#"{"to":"bob@example.com"}"#;
    let out = sb
        .cmd(&[
            "enqueue",
            "--type",
            "mail.send",
            "--payload",
            payload,
            "--subject",
            "user-7",
            // Another keyring on this broker: refused by its recorded
            // check values unless accepted (finding 7).
            "--accept-new-keyring",
        ])
        .env("SEALQ_KEYRING", &other)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));

    let out = sb.run(&["erase", "--finalize"]);
    assert!(!out.status.success(), "{}", text(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("not finalised") && err.contains("--force"),
        "{err}"
    );
    let kept = std::fs::read_to_string(sb.keyring()).unwrap();
    assert!(
        kept.contains("open_legacy = true"),
        "legacy KEKs kept: {kept}"
    );
    // The erasure of user-42 still works with it (its key moved).
    sb.ok(&["erase", "--subject", "user-42"]);

    let out = sb.ok(&["erase", "--finalize", "--force"]);
    assert!(out.contains("lost"), "{out}");
    let after = std::fs::read_to_string(sb.keyring()).unwrap();
    assert!(!after.contains("open_legacy"), "{after}");
    assert_eq!(after.matches("[kek.epochs.").count(), 1, "{after}");
}
