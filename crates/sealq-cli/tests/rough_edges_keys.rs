//! Issue 21: `keys remove` checks every store it is given (SQLite and Redis
//! here, through the real binary) and refuses to guess which stores a
//! keyring is used with.

#[path = "../../sealq-redis/tests/support/mod.rs"]
mod support;

use std::path::Path;
use std::process::{Command, Output};

const BIN: &str = env!("CARGO_BIN_EXE_sealq");

struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

fn finished(o: Output) -> Run {
    Run {
        code: o.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
    }
}

/// The binary in `dir` with `keyring` and `SEALQ_BROKER=broker`.
fn sealq(dir: &Path, broker: &str, args: &[&str]) -> Run {
    finished(
        Command::new(BIN)
            .current_dir(dir)
            .env_remove("SEALQ_KEYRING_TOML")
            .env_remove("SEALQ_AUDIT")
            .env_remove("RUST_LOG")
            .env("SEALQ_KEYRING", dir.join("keyring.toml"))
            .env("SEALQ_BROKER", broker)
            .args(args)
            .output()
            .expect("run sealq"),
    )
}

fn key_ids(dir: &Path) -> Vec<String> {
    sealq::Keyring::from_file(&dir.join("keyring.toml"))
        .unwrap()
        .key_ids()
        .map(str::to_owned)
        .collect()
}

#[test]
fn rough_edge_keys_remove_checks_every_store_named_and_guesses_none() {
    let server = support::RedisServer::start();
    let redis = server.url();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let sqlite = format!("sqlite://{}", d.join("q.db").display());

    let out = sealq(d, &sqlite, &["keys", "generate"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    std::fs::write(d.join("keyring.toml"), &out.stdout).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(
        d.join("keyring.toml"),
        std::fs::Permissions::from_mode(0o600),
    )
    .unwrap();
    let out = sealq(d, &redis, &["redis", "install"]);
    assert_eq!(out.code, 0, "{}", out.stderr);

    // One keyring, two stores, a task sealed with the first key in each.
    for store in [&sqlite, &redis] {
        let out = sealq(d, store, &["enqueue", "-t", "t.x", "--payload", "{}"]);
        assert_eq!(out.code, 0, "enqueue on {store}: {}", out.stderr);
    }
    let old = key_ids(d)[0].clone();
    let out = sealq(d, &sqlite, &["keys", "rotate"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    // Re-sealed on SQLite only: Redis still needs the old key.
    let out = sealq(d, &sqlite, &["keys", "reseal"]);
    assert_eq!(out.code, 0, "{}", out.stderr);

    // What used to remove the key after checking SQLite alone: refused,
    // and the message says how to name every store.
    let out = sealq(d, &sqlite, &["keys", "remove", "--key", &old]);
    assert_eq!(out.code, 2, "{}{}", out.stdout, out.stderr);
    assert!(
        out.stderr.contains("--store URL") && out.stderr.contains("every store"),
        "{}",
        out.stderr
    );
    // --broker typed on the command line is not the whole list either.
    let out = sealq(
        d,
        &redis,
        &["--broker", &sqlite, "keys", "remove", "--key", &old],
    );
    assert_eq!(out.code, 2, "{}", out.stderr);
    assert!(key_ids(d).contains(&old), "nothing removed yet");

    // Both stores named: Redis still needs the key, so it stays.
    let both = ["--store", sqlite.as_str(), "--store", redis.as_str()];
    let remove = |extra: &[&str]| {
        let mut args = vec!["keys", "remove", "--key", old.as_str()];
        args.extend_from_slice(extra);
        sealq(d, &sqlite, &args)
    };
    let out = remove(&both);
    assert_eq!(out.code, 1, "{}{}", out.stdout, out.stderr);
    assert!(
        out.stderr.contains(&redis) && out.stderr.contains("1 part(s)"),
        "names the store that needs it: {}",
        out.stderr
    );
    assert!(
        !out.stderr.contains(&format!("{sqlite}: ")),
        "SQLite is clear: {}",
        out.stderr
    );
    assert!(key_ids(d).contains(&old));

    // A store that does not exist is refused, not checked as empty.
    let missing = format!("sqlite://{}", d.join("typo.db").display());
    let out = remove(&["--store", &missing, "--store", &redis]);
    assert_eq!(out.code, 2, "{}", out.stderr);
    assert!(out.stderr.contains("typo.db"), "{}", out.stderr);
    assert!(!d.join("typo.db").exists(), "a missing store was created");
    assert!(key_ids(d).contains(&old));

    // Re-sealed on Redis too: now it goes.
    let out = sealq(d, &redis, &["keys", "reseal"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let out = remove(&both);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(
        out.stdout.contains("in the 2 store(s) checked"),
        "{}",
        out.stdout
    );
    assert!(!key_ids(d).contains(&old), "removed");
}
