//! Issue 21, Observability, on Redis: `sealq worker --metrics-addr` and
//! `--health-addr` against a redis-server this test starts. Counters after
//! real work; readiness failing (naming the check) while the broker is
//! stopped and while its functions library is missing, liveness staying
//! up; the reconnect counted.

#[path = "../../sealq-redis/tests/support/mod.rs"]
mod support;

mod endpoints;

use std::path::PathBuf;
use std::process::{Command, Stdio};

use endpoints::{ServingWorker, eventually, failing, value};

const BIN: &str = env!("CARGO_BIN_EXE_sealq");

struct Sandbox {
    dir: tempfile::TempDir,
    keyring: PathBuf,
    url: String,
}

impl Sandbox {
    fn new(url: String) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let keyring = dir.path().join("keyring.toml");
        let sb = Sandbox { dir, keyring, url };
        let out = sb.cmd(&["keys", "generate"]).output().unwrap();
        assert!(out.status.success());
        std::fs::write(&sb.keyring, &out.stdout).unwrap();
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(&sb.keyring, std::fs::Permissions::from_mode(0o600)).unwrap();
        sb
    }

    fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(BIN);
        c.args(args)
            .current_dir(self.dir.path())
            .env_remove("SEALQ_KEYRING_TOML")
            .env_remove("SEALQ_METRICS_ADDR")
            .env_remove("SEALQ_HEALTH_ADDR")
            .env_remove("RUST_LOG")
            .env("SEALQ_BROKER", &self.url)
            .env("SEALQ_KEYRING", &self.keyring)
            .env("SEALQ_AUDIT", "off")
            .stdin(Stdio::null());
        c
    }

    fn ok(&self, args: &[&str]) -> String {
        let out = self.cmd(args).output().unwrap();
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }
}

#[test]
fn prometheus_and_health_on_redis_through_a_broker_outage() {
    let mut server = support::RedisServer::start();
    let sb = Sandbox::new(server.url());
    sb.ok(&["redis", "install"]);
    for _ in 0..4 {
        sb.ok(&[
            "enqueue",
            "--queue",
            "default",
            "--type",
            "ok.task",
            "--payload",
            r#"{"n":1}"#,
        ]);
    }
    // One listener for both (the same address).
    let port = support::free_port().to_string();
    let addr = format!("127.0.0.1:{port}");
    let w = ServingWorker::spawn(sb.cmd(&[
        "worker",
        "--exec",
        "true",
        "--metrics-addr",
        &addr,
        "--health-addr",
        &addr,
        "--metrics-interval",
        "200ms",
    ]));
    assert_eq!(w.metrics, w.health, "one listener for the same address");

    let labels = [("queue", "default"), ("task_type", "ok.task")];
    let mut scrape = String::new();
    let done = eventually(60, || {
        scrape = w.scrape();
        value(&scrape, "sealq_tasks_succeeded_total", &labels) == Some(4.0)
            && value(
                &scrape,
                "sealq_queue_depth",
                &[("queue", "default"), ("state", "completed")],
            ) == Some(4.0)
    });
    assert!(done, "{scrape}\nworker stderr:\n{}", w.stderr_text());
    assert_eq!(
        value(&scrape, "sealq_tasks_started_total", &labels),
        Some(4.0)
    );
    assert_eq!(
        value(&scrape, "sealq_task_duration_seconds_count", &labels),
        Some(4.0)
    );
    assert_eq!(
        value(&scrape, "sealq_tasks_failed_total", &labels).unwrap_or(0.0),
        0.0
    );
    let (status, ready) = w.probe("/readyz");
    assert_eq!(status, 200, "{ready}");

    // The broker goes away: not ready, naming the broker; still alive.
    server.stop();
    let mut last = serde_json::Value::Null;
    assert!(
        eventually(30, || {
            let (s, v) = w.probe("/readyz");
            last = v;
            s == 503
        }),
        "readiness never failed: {last}"
    );
    assert_eq!(last["checks"][0]["name"], "broker", "{last}");
    assert_eq!(last["checks"][0]["ok"], false, "{last}");
    assert!(!last.to_string().contains("password"), "{last}");
    let (status, live) = w.probe("/livez");
    assert_eq!(status, 200, "liveness stays up without a broker: {live}");

    // It comes back empty (no persistence): reachable, but without the
    // functions library the schema check fails and says what to run.
    server.restart();
    assert!(
        eventually(30, || {
            let (_, v) = w.probe("/readyz");
            last = v;
            last["checks"][0]["ok"] == true
                && failing(&last).first().map(String::as_str) == Some("schema")
        }),
        "{last}"
    );
    let detail = last["checks"][1]["detail"].as_str().unwrap_or_default();
    assert!(detail.contains("sealq redis install"), "{detail}");
    server.load_library();
    assert!(
        eventually(30, || w.probe("/readyz").0 == 200),
        "ready again once the library is back; stderr:\n{}",
        w.stderr_text()
    );

    let scrape = w.scrape();
    assert!(
        value(
            &scrape,
            "sealq_broker_errors_total",
            &[("kind", "unavailable")]
        )
        .is_some_and(|n| n >= 1.0),
        "{scrape}"
    );
    assert!(
        value(
            &scrape,
            "sealq_broker_reconnects_total",
            &[("backend", "redis")]
        )
        .is_some_and(|n| n >= 1.0),
        "{scrape}"
    );
    assert_eq!(w.stop(), Some(0));
}
