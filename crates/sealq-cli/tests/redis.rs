//! The `sealq` command against a real redis-server this test starts (the
//! Redis broker crate's test support, shared): start-up without the
//! functions library, `redis install`, `bench` with Redis' own counters, and
//! a key rotation (`keys rotate`, `keys reseal`, `keys remove`) on Redis.

#[path = "../../sealq-redis/tests/support/mod.rs"]
mod support;

use std::path::Path;
use std::process::{Command, Output};

use serde_json::Value;

fn sealq(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_sealq"))
        .current_dir(dir)
        .env_remove("SEALQ_BROKER")
        .env_remove("SEALQ_KEYRING")
        .env_remove("SEALQ_KEYRING_TOML")
        .env_remove("SEALQ_AUDIT")
        .args(args)
        .output()
        .expect("run sealq")
}

fn text(o: &Output) -> String {
    format!(
        "exit {:?}\nstdout:\n{}\nstderr:\n{}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

#[test]
fn install_bench_and_key_rotation_on_redis() {
    let server = support::RedisServer::start();
    let dir = tempfile::tempdir().unwrap();
    let url = server.url();

    // Without the library nothing starts, and the message says what to do.
    let out = sealq(dir.path(), &["bench", "--broker", &url, "--tasks", "10"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("sealq redis install"),
        "{}",
        text(&out)
    );
    let out = sealq(dir.path(), &["redis", "install", "--broker", &url]);
    assert!(out.status.success(), "{}", text(&out));

    // bench reports what the run cost Redis, from INFO commandstats.
    let out = sealq(
        dir.path(),
        &[
            "bench",
            "--broker",
            &url,
            "--tasks",
            "2000",
            "--payload-bytes",
            "1024",
            "--audit",
            "off",
            "--json",
        ],
    );
    assert!(out.status.success(), "{}", text(&out));
    let v: Value = serde_json::from_slice(&out.stdout).expect("bench --json is JSON");
    assert!(v["process_per_second"].as_f64().unwrap() > 0.0);
    let r = &v["redis"];
    assert_eq!(
        r["by_command"]["msetnx"][0], 2,
        "one MSETNX of every task's bytes per batch of 1,000: {r}"
    );
    assert!(
        r["by_command"]["set"][0].as_u64().unwrap() <= 2,
        "no SET per task (one marker per batch): {r}"
    );
    let fcalls = r["function_calls_per_task"].as_f64().unwrap();
    assert!(fcalls > 0.0 && fcalls < 0.5, "batched calls: {r}");
    let client = r["client_commands_per_task"].as_f64().unwrap();
    assert!(client > 0.0 && client < 0.5, "batched commands: {r}");
    let inside = r["commands_in_functions_per_task"].as_f64().unwrap();
    assert!(inside >= 4.0, "state changes run inside functions: {r}");
    assert!(r["usec_per_task"].as_f64().unwrap() > 0.0, "{r}");
    assert!(r["by_command"].get("info").is_none(), "{r}");

    // A key rotation on Redis, in its own prefix, audited to its streams.
    let url = format!("{url}?prefix=rot");
    let keyring = dir.path().join("k.toml");
    let out = sealq(dir.path(), &["keys", "generate"]);
    write_private(&keyring, &out.stdout);
    let k = keyring.to_str().unwrap();
    let mut ids = Vec::new();
    for n in 0..3 {
        let payload = format!(r#"{{"n":{n}}}"#);
        let out = sealq(
            dir.path(),
            &[
                "--broker",
                &url,
                "--keyring",
                k,
                "enqueue",
                "--queue",
                "q",
                "--type",
                "t",
                "--payload",
                &payload,
            ],
        );
        assert!(out.status.success(), "{}", text(&out));
        ids.push(String::from_utf8_lossy(&out.stdout).trim().to_owned());
    }
    let old = sealq::Keyring::from_file(&keyring)
        .unwrap()
        .primary_key_id()
        .to_owned();
    let out = sealq(
        dir.path(),
        &["--broker", &url, "--keyring", k, "keys", "rotate"],
    );
    assert!(out.status.success(), "{}", text(&out));
    let out = sealq(
        dir.path(),
        &["--broker", &url, "--keyring", k, "keys", "reseal", "--json"],
    );
    assert!(out.status.success(), "{}", text(&out));
    let rep: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(rep["resealed"], 3, "{rep}");
    assert_eq!(rep["remaining"], serde_json::json!({}), "{rep}");
    let out = sealq(
        dir.path(),
        &[
            "--broker",
            &url,
            "--keyring",
            k,
            "keys",
            "remove",
            "--store",
            &url,
            "--key",
            &old,
        ],
    );
    assert!(out.status.success(), "{}", text(&out));
    for id in &ids {
        let out = sealq(
            dir.path(),
            &[
                "--broker",
                &url,
                "--keyring",
                k,
                "tasks",
                "reveal",
                "--id",
                id,
            ],
        );
        assert!(out.status.success(), "reveal {id}: {}", text(&out));
    }
    let out = sealq(
        dir.path(),
        &["--broker", &url, "--keyring", k, "audit", "verify"],
    );
    assert!(out.status.success(), "{}", text(&out));
}

/// The big payload's text length, as a worker sees it.
async fn run_big_task(url: &str, keyring: &Path, blobs: &str) -> usize {
    let broker: std::sync::Arc<dyn sealq::Broker> =
        std::sync::Arc::new(sealq_redis::RedisBroker::connect(url).await.unwrap());
    let keyring = std::sync::Arc::new(sealq::Keyring::from_file(keyring).unwrap());
    let store = std::sync::Arc::new(
        sealq_redis::RedisBlobStore::new(
            url,
            blobs,
            std::time::Duration::from_secs(3600),
            Default::default(),
        )
        .unwrap(),
    );
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
    let report = worker.shutdown().await.unwrap();
    assert_eq!(report.integrity_failures, 0);
    len
}

#[test]
fn keys_reseal_and_remove_reach_a_redis_blob_store() {
    let server = support::RedisServer::start();
    let dir = tempfile::tempdir().unwrap();
    let out = sealq(dir.path(), &["redis", "install", "--broker", &server.url()]);
    assert!(out.status.success(), "{}", text(&out));
    let url = format!("{}?prefix=app", server.url());
    let keyring = dir.path().join("k.toml");
    let out = sealq(dir.path(), &["keys", "generate"]);
    write_private(&keyring, &out.stdout);
    let k = keyring.to_str().unwrap();
    // The application uses the CLI's default prefix; `remove` names it.
    let blobs = "sealq-blob";

    // The application offloads a large payload to a Redis blob store.
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let broker: std::sync::Arc<dyn sealq::Broker> =
            std::sync::Arc::new(sealq_redis::RedisBroker::connect(&url).await.unwrap());
        let kr = std::sync::Arc::new(sealq::Keyring::from_file(&keyring).unwrap());
        let store = std::sync::Arc::new(
            sealq_redis::RedisBlobStore::new(
                &url,
                blobs,
                std::time::Duration::from_secs(3600),
                Default::default(),
            )
            .unwrap(),
        );
        let client = sealq::Client::builder(broker, kr)
            .blob_store(store, 256)
            .build();
        let task = sealq::RawTask::from_json(
            "big",
            &serde_json::json!({ "text": "x".repeat(4000) }),
            sealq::EnqueueOptions::new(),
        )
        .unwrap();
        client.enqueue_raw(task).await.unwrap();
    });
    let old = sealq::Keyring::from_file(&keyring)
        .unwrap()
        .primary_key_id()
        .to_owned();
    let base = ["--broker", url.as_str(), "--keyring", k, "keys"];
    let run = |args: &[&str]| sealq(dir.path(), &[&base[..], args].concat());
    assert!(run(&["rotate"]).status.success());

    // Without the store the blob cannot be re-sealed.
    let out = run(&["reseal", "--dry-run", "--json"]);
    let v: Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(v["failed"][0]["part"], "blob", "{}", text(&out));
    // Writing to Redis needs the TTL to write with; the message says so.
    let out = run(&["reseal", "--blob-url", &url, "--blob-prefix", blobs]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("--blob-ttl"),
        "{}",
        text(&out)
    );
    // A URL of no store is a usage error naming the flag.
    let out = run(&["reseal", "--blob-url", "s3://bucket", "--blob-ttl", "1h"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("--blob-url s3://bucket"),
        "{}",
        text(&out)
    );
    // An unreachable store stops the command before it reads a task, and
    // the message keeps the password out.
    let down = format!("redis://app:hunter2@127.0.0.1:{}", support::free_port());
    let out = run(&["reseal", "--blob-url", &down, "--blob-ttl", "1h"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("cannot reach the blob store"),
        "{}",
        text(&out)
    );
    assert!(!err.contains("hunter2"), "{}", text(&out));
    // At most one store.
    let out = run(&["reseal", "--blob-url", &url, "--blob-dir", "."]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));

    let out = run(&["reseal", "--blob-url", &url, "--blob-ttl", "1h", "--json"]);
    assert!(out.status.success(), "{}", text(&out));
    let v: Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(
        (v["resealed"].clone(), v["blobs"].clone()),
        (1.into(), 1.into()),
        "{v}"
    );
    assert_eq!(v["failed"], serde_json::json!([]), "{v}");

    // Removal looks inside the blobs when it can see them (no TTL needed).
    let out = run(&["remove", "--store", &url, "--key", &old]);
    assert!(
        !out.status.success(),
        "the blob was not checked: {}",
        text(&out)
    );
    let out = run(&[
        "remove",
        "--store",
        &url,
        "--key",
        &old,
        "--blob-url",
        &url,
        "--blob-prefix",
        blobs,
    ]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        !sealq::Keyring::from_file(&keyring)
            .unwrap()
            .contains_key(&old)
    );

    // A worker without the old key runs the task from its re-sealed blob.
    assert_eq!(rt.block_on(run_big_task(&url, &keyring, blobs)), 4000);
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
