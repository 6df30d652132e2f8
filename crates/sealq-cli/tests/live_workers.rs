//! Issue 21, Observability, "Live workers": `sealq workers` lists the
//! workers running against a broker (id, host, pid, queues, concurrency,
//! started, last heartbeat, tasks in flight), on SQLite and on a real
//! redis-server this test starts; a worker that stopped is gone.

#[path = "../../sealq-redis/tests/support/mod.rs"]
mod support;

mod background;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use background::Background;
use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_sealq");

struct Env {
    dir: tempfile::TempDir,
    keyring: PathBuf,
    broker: String,
}

impl Env {
    fn new(broker: Option<String>) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let keyring = dir.path().join("keyring.toml");
        let out = Command::new(BIN)
            .args(["keys", "generate"])
            .output()
            .unwrap();
        assert!(out.status.success());
        std::fs::write(&keyring, &out.stdout).unwrap();
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(&keyring, std::fs::Permissions::from_mode(0o600)).unwrap();
        let broker =
            broker.unwrap_or_else(|| format!("sqlite://{}", dir.path().join("q.db").display()));
        Env {
            dir,
            keyring,
            broker,
        }
    }

    fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(BIN);
        c.args(args)
            .current_dir(self.dir.path())
            .env_remove("SEALQ_KEYRING_TOML")
            .env_remove("SEALQ_LOG_FORMAT")
            .env_remove("RUST_LOG")
            .env("SEALQ_BROKER", &self.broker)
            .env("SEALQ_KEYRING", &self.keyring)
            .env("SEALQ_AUDIT", "off")
            .stdin(Stdio::null());
        c
    }

    fn run(&self, args: &[&str]) -> Output {
        self.cmd(args).output().unwrap()
    }

    /// `sealq workers --json`, parsed.
    fn workers(&self) -> Vec<Value> {
        let out = self.run(&["workers", "--json"]);
        assert!(out.status.success(), "{}", text(&out));
        let v: Value = serde_json::from_slice(&out.stdout).expect("workers --json is JSON");
        v.as_array().expect("an array").clone()
    }

    /// Poll `sealq workers --json` (bounded) until `pred` holds.
    fn workers_until(&self, what: &str, pred: impl Fn(&[Value]) -> bool) -> Vec<Value> {
        let give_up = Instant::now() + Duration::from_secs(30);
        loop {
            let w = self.workers();
            if pred(&w) {
                return w;
            }
            assert!(Instant::now() < give_up, "{what}: {w:?}");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn path(&self) -> &Path {
        self.dir.path()
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

/// Start two workers, see both listed with what they serve, stop one and
/// see only the other, stop it and see none.
fn lists_live_workers_and_forgets_stopped_ones(env: &Env) {
    // A read-only command on a store that does not exist yet refuses (SQLite).
    let mut a = Background::spawn(env.cmd(&[
        "worker",
        "--queues",
        "critical:3,default",
        "--concurrency",
        "4",
        "--exec",
        "true",
    ]));
    a.wait_for(Duration::from_secs(60), "starting", |l| {
        l.contains("worker started")
    });
    let mut b =
        Background::spawn(env.cmd(&["worker", "--queues", "low", "-c", "1", "--exec", "true"]));
    b.wait_for(Duration::from_secs(60), "starting", |l| {
        l.contains("worker started")
    });
    let (pa, pb) = (u64::from(a.pid()), u64::from(b.pid()));

    let listed = env.workers_until("both workers listed", |w| w.len() == 2);
    let wa = listed
        .iter()
        .find(|w| w["pid"] == pa)
        .expect("worker a listed");
    assert_eq!(
        wa["queues"],
        serde_json::json!(["critical", "default"]),
        "{wa}"
    );
    assert_eq!(wa["concurrency"], 4, "{wa}");
    assert_eq!(wa["in_flight"], 0, "{wa}");
    assert!(
        wa["id"].as_str().unwrap().ends_with(&format!(":{pa}")),
        "{wa}"
    );
    assert!(!wa["host"].as_str().unwrap().is_empty(), "{wa}");
    let (started, beat) = (
        wa["started_at_ms"].as_i64().unwrap(),
        wa["last_heartbeat_ms"].as_i64().unwrap(),
    );
    assert!(beat >= started && started > 1_700_000_000_000, "{wa}");
    let wb = listed
        .iter()
        .find(|w| w["pid"] == pb)
        .expect("worker b listed");
    assert_eq!(wb["queues"], serde_json::json!(["low"]), "{wb}");

    // The table names the same, one worker per line.
    let out = env.run(&["workers"]);
    assert!(out.status.success(), "{}", text(&out));
    let table = String::from_utf8_lossy(&out.stdout).into_owned();
    let header = table.lines().next().unwrap();
    for col in [
        "ID",
        "HOST",
        "PID",
        "QUEUES",
        "CONCURRENCY",
        "STARTED",
        "LAST_HEARTBEAT",
        "IN_FLIGHT",
    ] {
        assert!(header.contains(col), "{table}");
    }
    let line = table
        .lines()
        .find(|l| l.contains(&format!(" {pa} ")))
        .unwrap_or_else(|| panic!("no row for pid {pa}:\n{table}"));
    assert!(
        line.contains("critical,default") && line.contains("s ago"),
        "{table}"
    );
    assert_eq!(table.lines().count(), 3, "{table}");

    let stopped = a.terminate();
    assert_eq!(stopped.code, Some(0), "{}", stopped.stderr.join("\n"));
    let listed = env.workers();
    assert_eq!(
        listed.len(),
        1,
        "a stopped worker is gone at once: {listed:?}"
    );
    assert_eq!(listed[0]["pid"], pb);
    let stopped = b.terminate();
    assert_eq!(stopped.code, Some(0), "{}", stopped.stderr.join("\n"));
    assert!(env.workers().is_empty());
    let out = env.run(&["workers"]);
    assert!(
        String::from_utf8_lossy(&out.stdout).starts_with("no live workers on "),
        "{}",
        text(&out)
    );
}

#[test]
fn live_workers_listed_on_sqlite() {
    let env = Env::new(None);
    let out = env.run(&["workers"]);
    assert_eq!(out.status.code(), Some(2), "no store yet: {}", text(&out));
    assert!(
        !env.path().join("q.db").exists(),
        "a read-only command creates none"
    );
    lists_live_workers_and_forgets_stopped_ones(&env);
}

#[test]
fn live_workers_listed_on_redis() {
    let server = support::RedisServer::start();
    let env = Env::new(Some(format!("{}?prefix=lw", server.url())));
    let out = env.run(&["redis", "install"]);
    assert!(out.status.success(), "{}", text(&out));
    lists_live_workers_and_forgets_stopped_ones(&env);
}
