//! Processes that open a new store at the same moment (two `sealq cron
//! run`, a producer and a worker started together) must all get it: a
//! new SQLite file's switch to WAL mode answers one of two concurrent
//! processes "busy" at once, without waiting, so the switch is retried.
//! (Found as a failure of `cron_run_enqueues_ticks_once_from_two_processes`:
//! "configuring the subject key store: … database is locked".) The
//! processes are this test binary run again as children.

use std::process::Command;

use sealq_sqlite::SqliteSubjectKeyStore;

const CHILD: &str = "SEALQ_TEST_OPEN_KEY_STORE";

#[test]
fn concurrent_open_of_a_new_subject_key_store_never_fails_busy() {
    if let Some(path) = std::env::var_os(CHILD) {
        // A child: open the store when the start file appears.
        let start = std::path::PathBuf::from(&path).with_extension("start");
        while !start.exists() {
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        if let Err(e) = SqliteSubjectKeyStore::open(&path) {
            eprintln!("OPEN FAILED: {e}");
            std::process::exit(3);
        }
        return;
    }
    let exe = std::env::current_exe().unwrap();
    for round in 0..15 {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keys.db");
        let children: Vec<_> = (0..6)
            .map(|_| {
                Command::new(&exe)
                    .args([
                        "--exact",
                        "concurrent_open_of_a_new_subject_key_store_never_fails_busy",
                        "--nocapture",
                    ])
                    .env(CHILD, &path)
                    .stdout(std::process::Stdio::piped())
                    .stderr(std::process::Stdio::piped())
                    .spawn()
                    .unwrap()
            })
            .collect();
        std::thread::sleep(std::time::Duration::from_millis(300));
        std::fs::write(path.with_extension("start"), b"go").unwrap();
        for c in children {
            let out = c.wait_with_output().unwrap();
            assert!(
                out.status.success(),
                "round {round}: {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
}
