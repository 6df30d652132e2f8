//! End-to-end tests of the `sealq keys` commands (rotate, remove, reseal)
//! through the real binary, each in its own temporary directory.

mod sandbox;

use sandbox::*;
use serde_json::Value;

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
