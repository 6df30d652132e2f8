//! [`Client::enqueue_bulk`] seals a large batch on several threads: every
//! result stays in its task's place, the policy's and the broker's
//! refusals included, and every stored task opens to its own payload.

use super::{Greet, Scene};
use crate::client::RawTask;
use crate::error::Error;
use crate::model::id::TaskId;
use crate::model::options::EnqueueOptions;
use crate::model::task::decode_payload;
use crate::seal::envelope::{Aad, Purpose};

/// A batch of 1,000 (split over the sealing threads) with a payload the
/// policy refuses every 97th task and an id already stored every 89th:
/// each result is the task's own id or its own refusal, in order, and each
/// stored task opens to its own payload.
pub async fn bulk_enqueue_sealed_on_several_threads_keeps_each_result_in_place(e: Scene) {
    keeps_each_result_in_place(e, 1_000).await;
}

/// The same in batches of 64 (16 batches, the broker's `bulk_in_flight`
/// of them sent and not yet answered at a time, stored in one commit where
/// the broker groups them): each result still in its task's place.
pub async fn bulk_enqueue_batches_in_flight_keep_each_result_in_place(e: Scene) {
    keeps_each_result_in_place(e, 64).await;
}

/// 1,000 tasks enqueued in batches of `batch`; see the scenarios above.
async fn keeps_each_result_in_place(e: Scene, batch: usize) {
    const N: usize = 1_000;
    let refused = |i: usize| i % 97 == 13;
    let taken = |i: usize| i % 89 == 7 && !refused(i);
    let ids: Vec<TaskId> = (0..N).map(|_| TaskId::new()).collect();
    for i in (0..N).filter(|&i| taken(i)) {
        let mut options = EnqueueOptions::new().queue("bulk-seal");
        options.id = Some(ids[i]);
        let name = format!("task {i}");
        e.client.enqueue(&Greet { name }, options).await.unwrap();
    }
    let tasks = (0..N).map(|i| {
        let name = if refused(i) {
            format!("card 4242 4242 4242 4242 #{i}")
        } else {
            format!("task {i}")
        };
        let mut options = EnqueueOptions::new().queue("bulk-seal");
        options.id = Some(ids[i]);
        RawTask::typed(&Greet { name }, options).unwrap()
    });
    let results = e.client.enqueue_bulk(tasks, batch).await;
    assert_eq!(results.len(), N);
    for (i, r) in results.iter().enumerate() {
        match r {
            Ok(id) => {
                assert!(
                    !refused(i) && !taken(i),
                    "task {i} should have been refused"
                );
                assert_eq!(*id, ids[i], "result {i} is another task's id");
            }
            Err(Error::PolicyViolation { .. }) => assert!(refused(i), "task {i}: {r:?}"),
            Err(Error::IdExists(id)) => {
                assert!(taken(i), "task {i}: {r:?}");
                assert_eq!(*id, ids[i]);
            }
            Err(other) => panic!("task {i}: {other}"),
        }
    }
    for (i, id) in ids.iter().enumerate() {
        let record = e.broker.get(*id).await.unwrap();
        let Some(record) = record else {
            assert!(refused(i), "task {i} was not stored");
            continue;
        };
        assert!(!refused(i), "refused task {i} was stored");
        let aad = Aad::new(
            Purpose::Payload,
            record.id,
            &record.queue,
            &record.kind,
            &record.meta,
        );
        let plain = e.keyring.open(&aad, &record.envelope).unwrap();
        let greet: Greet = decode_payload(&plain).unwrap();
        assert_eq!(greet.name, format!("task {i}"));
    }
}
