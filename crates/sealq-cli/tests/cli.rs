//! End-to-end tests of the `sealq` binary: each test runs the real binary in
//! its own temporary directory with its own keyring and SQLite file.

mod sandbox;

use std::process::Stdio;

use sandbox::*;
use serde_json::Value;

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
