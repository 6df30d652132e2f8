//! The producer reads its own task's outcome ([`Client::result`],
//! [`Client::wait_result`]): a result opened with its keyring, an archived
//! task's error, an unknown id, a wait that times out, and a keyring that
//! did not seal the task.

use std::time::Duration;

use super::{Greet, Scene, fast};
use crate::client::Client;
use crate::error::Error;
use crate::model::id::TaskId;
use crate::model::options::EnqueueOptions;
use crate::model::state::{ArchiveReason, TaskState};
use crate::seal::keyring::Keyring;
use crate::worker::{TaskContext, TaskError, Worker};

/// A worker that greets `ok`, and refuses any other name for good.
fn greeter(e: &Scene) -> crate::worker::WorkerHandle {
    fast(Worker::builder(e.broker.clone(), e.keyring.clone()))
        .handle(|t: Greet, ctx: TaskContext| async move {
            if t.name != "ok" {
                return Err(TaskError::skip_retry(format!("will not greet {}", t.name)));
            }
            ctx.set_result(&format!("hello {}", t.name))?;
            Ok(())
        })
        .build()
        .unwrap()
        .spawn()
}

fn greet(name: &str) -> Greet {
    Greet { name: name.into() }
}

/// Issue 21: the producer waits for and reads a completed task's result,
/// opened with its own keyring; a failed one's error and archive reason.
pub async fn recovery_the_producer_reads_its_tasks_result_and_error(e: Scene) {
    let worker = greeter(&e);
    let ok = e
        .client
        .enqueue(&greet("ok"), EnqueueOptions::new())
        .await
        .unwrap();
    let bad = e
        .client
        .enqueue(&greet("mallory"), EnqueueOptions::new())
        .await
        .unwrap();
    let done = e
        .client
        .wait_result(ok, Duration::from_secs(30))
        .await
        .unwrap();
    assert!(done.succeeded() && done.is_finished(), "{done:?}");
    assert_eq!(done.state, TaskState::Completed);
    assert_eq!(
        done.result::<String>().unwrap().as_deref(),
        Some("hello ok")
    );
    assert_eq!(done.error_message(), None);
    assert!(
        !format!("{done:?}").contains("hello"),
        "Debug shows sizes only"
    );

    let failed = e
        .client
        .wait_result(bad, Duration::from_secs(30))
        .await
        .unwrap();
    assert_eq!(failed.state, TaskState::Archived, "{failed:?}");
    assert_eq!(failed.archive_reason, Some(ArchiveReason::SkipRetry));
    assert!(!failed.succeeded() && failed.is_finished());
    assert_eq!(failed.result::<String>().unwrap(), None);
    assert!(
        failed
            .error_message()
            .is_some_and(|m| m.contains("will not greet mallory")),
        "{failed:?}"
    );
    // Reading again without waiting gives the same.
    let again = e.client.result(ok).await.unwrap();
    assert_eq!(
        again.result::<String>().unwrap().as_deref(),
        Some("hello ok")
    );
    worker.shutdown().await.unwrap();

    // Another keyring did not seal it and cannot open it.
    let stranger =
        Client::builder(e.broker.clone(), std::sync::Arc::new(Keyring::generate())).build();
    assert!(
        matches!(stranger.result(ok).await, Err(Error::Integrity(_))),
        "a foreign keyring opened the result"
    );
}

/// Issue 21: an unknown id is `NotFound`, now and when waited for; a wait
/// on a task nobody runs times out naming its state, and `result` shows it
/// unfinished.
pub async fn recovery_an_unknown_id_is_not_found_and_a_wait_times_out(e: Scene) {
    let nobody = TaskId::new();
    assert!(matches!(
        e.client.result(nobody).await,
        Err(Error::NotFound(id)) if id == nobody
    ));
    assert!(matches!(
        e.client
            .wait_result(nobody, Duration::from_millis(50))
            .await,
        Err(Error::NotFound(_))
    ));

    let id = e
        .client
        .enqueue(&greet("ok"), EnqueueOptions::new())
        .await
        .unwrap();
    let started = std::time::Instant::now();
    match e.client.wait_result(id, Duration::from_millis(100)).await {
        Err(Error::WaitTimedOut { task, state, .. }) => {
            assert_eq!(task, id);
            assert_eq!(state, "pending");
        }
        other => panic!("expected a timeout, got {other:?}"),
    }
    assert!(started.elapsed() >= Duration::from_millis(100));
    let now = e.client.result(id).await.unwrap();
    assert_eq!(now.state, TaskState::Pending);
    assert!(!now.is_finished());
    assert_eq!(now.result::<String>().unwrap(), None);

    // An operator keyring opens nothing, so it reads no outcome.
    let operator = Client::builder(e.broker.clone(), e.keyring.operator_keyring().unwrap()).build();
    assert!(
        matches!(operator.result(id).await, Err(Error::Keyring(_))),
        "an operator keyring read an outcome"
    );
}
