//! Issue 21, Observability: `sealq worker --metrics-addr` and
//! `--health-addr` on SQLite, through the real binary: counters scraped
//! over HTTP after real work, readiness failing on a keyring that lacks
//! the key of waiting tasks while liveness stays up; and the library's
//! one-call exporter (`sealq::metrics::install_prometheus`) counting what
//! a producer does.

mod endpoints;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;

use endpoints::{ServingWorker, eventually, failing, value};

const BIN: &str = env!("CARGO_BIN_EXE_sealq");

struct Sandbox {
    dir: tempfile::TempDir,
    keyring: PathBuf,
}

impl Sandbox {
    fn new() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let keyring = dir.path().join("keyring.toml");
        let sb = Sandbox { dir, keyring };
        let out = sb.cmd(&["keys", "generate"]).output().unwrap();
        assert!(out.status.success());
        std::fs::write(&sb.keyring, &out.stdout).unwrap();
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(&sb.keyring, std::fs::Permissions::from_mode(0o600)).unwrap();
        sb
    }

    fn db(&self) -> PathBuf {
        self.dir.path().join("q.db")
    }

    fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(BIN);
        c.args(args)
            .current_dir(self.dir.path())
            .env_remove("SEALQ_KEYRING_TOML")
            .env_remove("SEALQ_METRICS_ADDR")
            .env_remove("SEALQ_HEALTH_ADDR")
            .env_remove("RUST_LOG")
            .env("SEALQ_BROKER", format!("sqlite://{}", self.db().display()))
            .env("SEALQ_KEYRING", &self.keyring)
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

    fn enqueue(&self, kind: &str, keyring: Option<&Path>) -> String {
        let mut args = vec![
            "enqueue",
            "--queue",
            "default",
            "--type",
            kind,
            "--payload",
            r#"{"n":1}"#,
        ];
        let k;
        if let Some(path) = keyring {
            k = path.display().to_string();
            args.extend(["--keyring", k.as_str()]);
        }
        self.ok(&args)
    }

    /// A worker serving metrics and health on free ports; commands whose
    /// task type is `fail.task` exit 3.
    fn worker(&self) -> ServingWorker {
        ServingWorker::spawn(self.cmd(&[
            "worker",
            "--exec",
            r#"test "$SEALQ_TASK_TYPE" != fail.task"#,
            "--metrics-addr",
            "127.0.0.1:0",
            "--health-addr",
            "127.0.0.1:0",
            "--metrics-interval",
            "200ms",
        ]))
    }
}

/// Change one byte inside the newest stored envelope (a broker writer
/// tampering).
fn tamper_newest(db: &Path) {
    let conn = rusqlite::Connection::open(db).unwrap();
    let (seq, mut envelope): (i64, Vec<u8>) = conn
        .query_row(
            "SELECT seq, envelope FROM task_bodies WHERE seq = (SELECT max(seq) FROM tasks)",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    let last = envelope.len() - 3;
    envelope[last] ^= 0x01;
    let n = conn
        .execute(
            "UPDATE task_bodies SET envelope = ?1 WHERE seq = ?2",
            rusqlite::params![envelope, seq],
        )
        .unwrap();
    assert_eq!(n, 1, "one envelope changed");
}

#[test]
fn prometheus_worker_metrics_addr_counts_real_work_on_sqlite() {
    let sb = Sandbox::new();
    for _ in 0..5 {
        sb.enqueue("ok.task", None);
    }
    sb.enqueue("fail.task", None);
    let tampered = sb.enqueue("ok.task", None);
    tamper_newest(&sb.db());

    let w = sb.worker();
    let labels = |t: &'static str| [("queue", "default"), ("task_type", t)];
    let mut scrape = String::new();
    let done = eventually(60, || {
        scrape = w.scrape();
        value(&scrape, "sealq_tasks_succeeded_total", &labels("ok.task")) == Some(5.0)
            && value(
                &scrape,
                "sealq_tasks_archived_total",
                &[("reason", "integrity")],
            )
            .is_some()
            && value(&scrape, "sealq_tasks_retried_total", &labels("fail.task")).is_some()
            && value(
                &scrape,
                "sealq_queue_depth",
                &[("queue", "default"), ("state", "completed")],
            ) == Some(5.0)
    });
    assert!(done, "{scrape}\nworker stderr:\n{}", w.stderr_text());

    assert_eq!(
        value(&scrape, "sealq_tasks_started_total", &labels("ok.task")),
        Some(5.0),
        "{scrape}"
    );
    // The failing task keeps failing and is retried with backoff: every
    // failure so far was retried (its retries are far from used up).
    let failed = value(&scrape, "sealq_tasks_failed_total", &labels("fail.task")).unwrap_or(0.0);
    let retried = value(&scrape, "sealq_tasks_retried_total", &labels("fail.task")).unwrap_or(0.0);
    assert!(failed >= 1.0 && retried >= 1.0, "{scrape}");
    assert!(
        value(&scrape, "sealq_tasks_succeeded_total", &labels("fail.task")).unwrap_or(0.0) == 0.0
    );
    assert_eq!(
        value(
            &scrape,
            "sealq_tasks_archived_total",
            &[
                ("queue", "default"),
                ("task_type", "ok.task"),
                ("reason", "integrity")
            ]
        ),
        Some(1.0),
        "the tampered task, archived integrity and never run: {scrape}"
    );
    // Histograms: one sample per started attempt, with Prometheus buckets.
    assert_eq!(
        value(
            &scrape,
            "sealq_task_duration_seconds_count",
            &labels("ok.task")
        ),
        Some(5.0)
    );
    assert_eq!(
        value(
            &scrape,
            "sealq_task_start_delay_seconds_count",
            &labels("ok.task")
        ),
        Some(5.0)
    );
    assert_eq!(
        value(
            &scrape,
            "sealq_task_enqueue_to_start_seconds_count",
            &labels("ok.task")
        ),
        Some(5.0),
        "first attempts only"
    );
    assert!(
        value(
            &scrape,
            "sealq_task_duration_seconds_bucket",
            &[("task_type", "ok.task"), ("le", "+Inf")]
        ) == Some(5.0),
        "{scrape}"
    );
    // Sampled depths (the tampered task sits in the archive).
    assert_eq!(
        value(
            &scrape,
            "sealq_queue_depth",
            &[("queue", "default"), ("state", "archived")]
        ),
        Some(1.0)
    );
    assert!(
        scrape.contains("# HELP sealq_tasks_succeeded_total"),
        "described: {scrape}"
    );
    assert!(
        scrape.contains("# TYPE sealq_task_duration_seconds histogram"),
        "{scrape}"
    );
    assert!(value(&scrape, "sealq_build_info", &[]).is_some());
    // Bounded cardinality: no task id in any label.
    assert!(!scrape.contains(&tampered), "a task id leaked into a label");

    // Health with a working broker and the right keyring.
    let (status, live) = w.probe("/livez");
    assert_eq!(status, 200, "{live}");
    let (status, ready) = w.probe("/readyz");
    assert_eq!(status, 200, "{ready}");
    assert_eq!(ready["status"], "ok");
    let names: Vec<&str> = ready["checks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["broker", "schema", "keyring"]);
    let (status, _) = w.probe("/healthz");
    assert_eq!(status, 200);
    assert_eq!(w.stop(), Some(0));
}

#[test]
fn health_readyz_fails_naming_the_keyring_when_waiting_tasks_need_a_key_it_lacks() {
    let sb = Sandbox::new();
    sb.enqueue("ok.task", None);
    let w = sb.worker();
    assert!(
        eventually(30, || w.probe("/readyz").0 == 200),
        "{}",
        w.stderr_text()
    );

    // A producer deployed a rotated keyring the worker does not have.
    let rotated = sb.dir.path().join("rotated.toml");
    std::fs::copy(&sb.keyring, &rotated).unwrap();
    let rotated_s = rotated.display().to_string();
    sb.ok(&[
        "--keyring",
        &rotated_s,
        "keys",
        "rotate",
        "--operator",
        "ops",
    ]);
    let new_key = sealq::Keyring::from_toml(&std::fs::read_to_string(&rotated).unwrap())
        .unwrap()
        .primary_key_id()
        .to_owned();
    sb.enqueue("ok.task", Some(&rotated));

    let mut last = serde_json::Value::Null;
    let failed = eventually(30, || {
        let (status, v) = w.probe("/readyz");
        last = v;
        status == 503
    });
    assert!(failed, "readiness never failed: {last}");
    assert_eq!(last["status"], "fail");
    assert_eq!(failing(&last), ["keyring"], "{last}");
    let detail = last["checks"][2]["detail"].as_str().unwrap();
    assert!(
        detail.contains(&new_key),
        "names the missing key id: {detail}"
    );
    let secret = std::fs::read_to_string(&rotated).unwrap();
    for line in secret
        .lines()
        .filter(|l| l.contains("secret") || l.contains("key ="))
    {
        if let Some((_, v)) = line.split_once('=') {
            let v = v.trim().trim_matches('"');
            if v.len() > 16 {
                assert!(!detail.contains(v), "a secret in the probe answer");
            }
        }
    }
    let (status, live) = w.probe("/livez");
    assert_eq!(status, 200, "liveness stays up: {live}");
    let scrape = w.scrape();
    assert_eq!(
        value(
            &scrape,
            "sealq_tasks_held_total",
            &[("reason", "unknown_key")]
        ),
        Some(1.0),
        "{scrape}"
    );
    assert_eq!(w.stop(), Some(0));
}

/// The library's one call: a producer's enqueues and policy rejections,
/// scraped from `install_prometheus`' own endpoint.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_install_prometheus_serves_a_producers_counters() {
    let server = sealq::metrics::install_prometheus("127.0.0.1:0".parse().unwrap())
        .await
        .expect("install");
    let dir = tempfile::tempdir().unwrap();
    let broker = Arc::new(sealq_sqlite::SqliteBroker::open(dir.path().join("q.db")).unwrap());
    let keyring = sealq::Keyring::generate();
    let client = sealq::Client::builder(broker, keyring).build();
    #[derive(serde::Serialize, serde::Deserialize)]
    struct Note {
        text: String,
    }
    impl sealq::Task for Note {
        const KIND: &'static str = "note";
    }
    for i in 0..3 {
        let note = Note {
            text: format!("hello {i}"),
        };
        client
            .enqueue(&note, sealq::EnqueueOptions::default().queue("mail"))
            .await
            .unwrap();
    }
    let card = Note {
        text: "4242 4242 4242 4242".into(),
    };
    let refused = client
        .enqueue(&card, sealq::EnqueueOptions::default().queue("mail"))
        .await;
    assert!(
        matches!(refused, Err(sealq::Error::PolicyViolation { .. })),
        "{refused:?}"
    );

    let addr = server.local_addr().to_string();
    let scrape = tokio::task::spawn_blocking(move || endpoints::get(&addr, "/metrics"))
        .await
        .unwrap();
    assert_eq!(scrape.0, 200);
    let scrape = scrape.1;
    assert_eq!(
        value(
            &scrape,
            "sealq_tasks_enqueued_total",
            &[("queue", "mail"), ("task_type", "note")]
        ),
        Some(3.0),
        "{scrape}"
    );
    assert_eq!(
        value(
            &scrape,
            "sealq_policy_rejections_total",
            &[("queue", "mail"), ("rule", "card_number")]
        ),
        Some(1.0),
        "{scrape}"
    );
    assert!(!scrape.contains("4242"), "no payload in metrics");
    server.shutdown().await;
}
