//! Security review finding 9 (panic part): a handler panic's message, which
//! may hold payload data, is sealed as the task's error and never printed,
//! while panics outside handlers still reach the previous panic hook.
//!
//! The panic hook writes to this process's stderr, so each test re-runs its
//! own test binary as a child (selected by [`CHILD`]) and reads the child's
//! stderr.

use std::process::{Command, Output};
use std::sync::Arc;
use std::time::Duration;

use sealq::broker::{Broker, TaskRecord};
use sealq::envelope::{Aad, Purpose};
use sealq::{
    ArchiveReason, Client, EnqueueOptions, Keyring, Task, TaskContext, TaskId, TaskState, Worker,
};
use sealq_sqlite::SqliteBroker;
use serde::{Deserialize, Serialize};

/// Set in the child: run the test's body instead of spawning a child.
const CHILD: &str = "SEALQ_PANIC_HOOK_CHILD";
/// Payload data a handler panics with.
const SECRET: &str = "zebra-orchid-7731-secret";
/// What the child prints to stdout once its checks passed.
const CHILD_OK: &str = "panic-hook-child-ok";

/// Run `test` of this binary in a child process, its body selected by [`CHILD`].
fn run_child(test: &str) -> Output {
    let out = Command::new(std::env::current_exe().expect("test binary"))
        .args(["--exact", test, "--nocapture", "--test-threads=1"])
        .env(CHILD, "1")
        .output()
        .expect("run the child");
    assert!(
        out.status.success() && String::from_utf8_lossy(&out.stdout).contains(CHILD_OK),
        "the child failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        // The child's own failure, not the secret: a failing child's
        // stderr is what the test is about, so show it only redacted.
        String::from_utf8_lossy(&out.stderr).replace(SECRET, "<SECRET>")
    );
    out
}

fn in_child() -> bool {
    std::env::var_os(CHILD).is_some()
}

#[derive(Serialize, Deserialize)]
struct Charge {
    account: String,
}
impl Task for Charge {
    const KIND: &'static str = "test.charge";
}

/// Wait (bounded) until the task is archived.
async fn wait_archived(broker: &Arc<dyn Broker>, id: TaskId) -> TaskRecord {
    let give_up = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let rec = broker.get(id).await.expect("get").expect("task exists");
        if rec.state == TaskState::Archived {
            return rec;
        }
        assert!(tokio::time::Instant::now() < give_up, "task stuck");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// The child's body: a worker that asked for quiet handler panics runs a
/// handler that panics with its payload; the task is archived with the
/// panic's message sealed as its error.
async fn handler_panic_child() {
    let dir = tempfile::tempdir().expect("tempdir");
    let broker: Arc<dyn Broker> =
        Arc::new(SqliteBroker::open(dir.path().join("q.db")).expect("open broker"));
    let keyring = Arc::new(Keyring::generate());
    let client = Client::builder(broker.clone(), keyring.clone())
        .producer("tests")
        .build();
    let id = client
        .enqueue(
            &Charge {
                account: SECRET.to_owned(),
            },
            EnqueueOptions::new().max_retries(0),
        )
        .await
        .expect("enqueue");
    let worker = Worker::builder(broker.clone(), keyring.clone())
        .quiet_handler_panics(true)
        .maintenance_interval(Duration::from_millis(20))
        .handle(|task: Charge, ctx: TaskContext| async move {
            // Always true (attempts count from 1); the `Ok` gives the
            // future its output type.
            if ctx.attempt() >= 1 {
                panic!("declined account {}", task.account);
            }
            Ok(())
        })
        .build()
        .expect("worker");
    // A second worker asking again installs nothing more.
    let _second = Worker::builder(broker.clone(), keyring.clone())
        .quiet_handler_panics(true)
        .handle_any(|_, _| async { Ok(()) })
        .build()
        .expect("second worker");
    let handle = worker.spawn();
    let rec = wait_archived(&broker, id).await;
    handle.shutdown().await.expect("shutdown");
    assert_eq!(rec.archive_reason, Some(ArchiveReason::Exhausted));
    let sealed = rec.last_error.as_ref().expect("an error is stored");
    assert!(
        !sealed.windows(SECRET.len()).any(|w| w == SECRET.as_bytes()),
        "the stored error is sealed"
    );
    let plain = keyring
        .open(&Aad::for_record(&rec, Purpose::Error), sealed)
        .expect("the error opens");
    let plain = String::from_utf8(plain.to_vec()).expect("utf-8");
    // Not `assert_eq!`: a failure must not print the secret either.
    assert!(
        plain == format!("handler panicked: declined account {SECRET}"),
        "the sealed error holds the panic's message"
    );
    println!("{CHILD_OK}");
}

#[test]
fn finding_9_a_handler_panic_message_is_never_printed() {
    if in_child() {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime")
            .block_on(handler_panic_child());
        return;
    }
    let out = run_child("finding_9_a_handler_panic_message_is_never_printed");
    let stderr = String::from_utf8_lossy(&out.stderr);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        !stderr.contains(SECRET),
        "the panic's message reached stderr"
    );
    assert!(
        !stdout.contains(SECRET),
        "the panic's message reached stdout"
    );
    assert!(
        !stderr.contains("declined account"),
        "the panic's message reached stderr"
    );
}

#[test]
fn finding_9_a_panic_outside_a_handler_is_still_printed() {
    if in_child() {
        // Install the quiet hook, then panic outside any handler.
        let dir = tempfile::tempdir().expect("tempdir");
        let _worker = Worker::builder(
            Arc::new(SqliteBroker::open(dir.path().join("q.db")).expect("broker")),
            Arc::new(Keyring::generate()),
        )
        .quiet_handler_panics(true)
        .handle_any(|_, _| async { Ok(()) })
        .build()
        .expect("worker");
        let joined = std::thread::spawn(|| panic!("outside a handler: printed")).join();
        assert!(joined.is_err());
        println!("{CHILD_OK}");
        return;
    }
    let out = run_child("finding_9_a_panic_outside_a_handler_is_still_printed");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("outside a handler: printed"),
        "the previous hook did not print it: {stderr}"
    );
}
