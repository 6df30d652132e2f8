//! Client and worker scenarios every backend runs (feature `testkit`): the
//! runtime end to end on a real broker, with real keyrings and real sealing.
//!
//! Where [`cases`](super::cases) check the [`crate::Broker`] contract call
//! by call on a [`ManualClock`](super::ManualClock), scenarios run a
//! [`crate::Client`] and [`crate::Worker`] against the backend on the
//! system clock, as an application would. Each backend runs them all with
//! one macro call, given a factory of fresh, isolated brokers:
//!
//! ```ignore
//! sealq::scenario_tests!(async |clock: SharedClock| {
//!     let dir = tempfile::tempdir().unwrap();
//!     let path = dir.path().join("q.db");
//!     let broker = MyBroker::open(&path, clock.clone()).unwrap();
//!     Harness::new(broker)
//!         // The same store opened again, as another process would.
//!         .with_peer(MyBroker::open(&path, clock).unwrap())
//!         .with_audit_sink(Arc::new(MyAuditSink::open(&path).unwrap()))
//!         .with_guard(dir)
//! });
//! ```
//!
//! The factory gets the system clock. A scenario that needs the peer or the
//! audit sink says so by name when the harness lacks it. Scenarios wait on
//! the broker's state with bounded polls ([`wait_state`]), never on fixed
//! sleeps.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::client::Client;
use crate::model::id::TaskId;
use crate::model::record::TaskRecord;
use crate::model::state::TaskState;
use crate::model::task::Task;
use crate::seal::keyring::Keyring;
use crate::store::audit::AuditSink;
use crate::store::broker::Broker;
use crate::testkit::Harness;

pub mod audit;
pub mod bulk;
pub mod bulk_enqueue;
pub mod erasure;
pub mod keyring;
pub mod leases;
pub mod outcome;
pub mod policy;
pub mod refusals;
pub mod unhandled;
pub mod worker;

pub use audit::*;
pub use bulk::*;
pub use bulk_enqueue::*;
pub use erasure::*;
pub use keyring::*;
pub use leases::*;
pub use outcome::*;
pub use policy::*;
pub use refusals::*;
pub use unhandled::*;
pub use worker::*;

/// What a scenario works with: a fresh broker, a keyring and a client.
#[derive(Debug, Clone)]
pub struct Scene {
    /// The broker under test.
    pub broker: Arc<dyn Broker>,
    /// A second broker over the same store (another process); the broker
    /// itself when the harness has none.
    pub peer: Arc<dyn Broker>,
    /// The backend's audit sink, if the harness has one.
    pub audit_sink: Option<Arc<dyn AuditSink>>,
    /// A fresh keyring.
    pub keyring: Arc<Keyring>,
    /// A client on `broker` and `keyring`, producer `tests`.
    pub client: Client,
}

impl Scene {
    /// The audit sink, asserting the harness has one.
    pub fn audit_sink(&self) -> Arc<dyn AuditSink> {
        self.audit_sink
            .clone()
            .expect("this scenario needs Harness::with_audit_sink")
    }
}

/// Run one scenario: build a fresh broker on the system clock, run
/// `scenario`, then drop the broker and its guard.
///
/// Used by [`crate::scenario_tests!`]; callable directly to run a scenario
/// (or [`audit::real_run`]) from a backend-specific test.
pub async fn run<F, R, C, Fut>(factory: F, scenario: C)
where
    F: AsyncFnOnce(crate::model::clock::SharedClock) -> R,
    R: Into<Harness>,
    C: FnOnce(Scene) -> Fut,
    Fut: Future<Output = ()>,
{
    let harness: Harness = factory(crate::model::clock::system_clock()).await.into();
    scenario(scene(&harness)).await;
    drop(harness);
}

/// A scene over `harness`'s broker with a fresh keyring.
pub fn scene(harness: &Harness) -> Scene {
    let broker = harness.broker.clone();
    let keyring = Arc::new(Keyring::generate());
    let client = Client::builder(broker.clone(), keyring.clone())
        .producer("tests")
        .build();
    Scene {
        peer: harness.peer.clone().unwrap_or_else(|| broker.clone()),
        audit_sink: harness.audit_sink.clone(),
        broker,
        keyring,
        client,
    }
}

/// A task type the scenarios enqueue.
#[derive(Debug, Serialize, Deserialize, PartialEq)]
pub struct Greet {
    /// Whom to greet (the scenarios' stand-in for personal data).
    pub name: String,
}
impl Task for Greet {
    const KIND: &'static str = "test.greet";
}

/// A second task type (a worker with only a [`Greet`] handler has none for it).
#[derive(Debug, Serialize, Deserialize)]
pub struct Other {
    /// A number.
    pub n: u32,
}
impl Task for Other {
    const KIND: &'static str = "test.other";
}

/// A task type with an address in it, for the erasure scenarios.
#[derive(Debug, Serialize, Deserialize)]
pub struct Mail {
    /// The address.
    pub to: String,
}
impl Task for Mail {
    const KIND: &'static str = "mail.send";
}

/// A mail to `to`.
pub fn mail(to: &str) -> Mail {
    Mail { to: to.into() }
}

/// A worker builder with short maintenance and shutdown intervals.
pub fn fast(builder: crate::worker::WorkerBuilder) -> crate::worker::WorkerBuilder {
    builder
        .maintenance_interval(Duration::from_millis(20))
        .shutdown_timeout(Duration::from_secs(5))
}

/// Wait (at most 30 s) until `id` reaches `state`; returns the record.
pub async fn wait_state(broker: &Arc<dyn Broker>, id: TaskId, state: TaskState) -> TaskRecord {
    let give_up = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let rec = broker.get(id).await.expect("get").expect("task exists");
        if rec.state == state {
            return rec;
        }
        assert!(
            tokio::time::Instant::now() < give_up,
            "task {id} stuck in {} (wanted {state})",
            rec.state
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Wait (at most 10 s) until `f` holds.
pub async fn wait_for(mut f: impl FnMut() -> bool) {
    for _ in 0..1000 {
        if f() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("condition not reached in 10 s");
}

/// Expand to one `#[tokio::test]` per scenario, each on a fresh harness
/// from the given factory (see the [module docs](crate::testkit::scenarios)).
#[macro_export]
macro_rules! scenario_tests {
    ($factory:expr $(,)?) => {
        $crate::scenario_tests!(@cases $factory;
            typed_tasks_run_and_results_are_sealed,
            failure_retries_then_succeeds,
            exhausted_retries_archive_with_sealed_error,
            panics_and_timeouts_are_failures_and_the_worker_keeps_going,
            skip_retry_and_cancel_archive_immediately,
            strict_priority_drains_the_higher_queue_first,
            delayed_tasks_wait_for_their_time,
            a_rate_limited_queue_drains_no_faster_than_its_limit,
            resealed_tasks_run_without_the_old_key,
            tampered_moved_foreign_expired_and_unknown_tasks_never_reach_a_handler,
            payload_of_the_wrong_shape_is_archived_as_decode,
            unique_keys_and_replayed_ids_are_refused_at_enqueue,
            policy_rejections_store_nothing,
            shutdown_returns_running_and_prefetched_tasks_uncounted,
            a_crashed_workers_task_is_recovered_after_its_lease_expires,
            heartbeats_keep_a_long_task_leased,
            erasure_removes_every_state_of_the_subject_only,
            an_active_task_of_an_erased_subject_ends_archived_erased_and_never_retries,
            a_direct_ack_after_erasure_is_lease_lost,
            a_real_run_verifies_and_shows_each_tasks_history,
            integrity_refusals_are_audited,
            finding_7_a_worker_with_another_keyring_refuses_to_start_and_changes_nothing,
            finding_7_a_task_whose_key_the_keyring_lacks_is_held_not_archived,
            finding_7_reveal_with_a_wrong_keyring_writes_no_payload_revealed_record,
            finding_3_a_policy_edited_in_the_broker_never_runs,
            finding_3_a_task_moved_earlier_waits_for_its_sealed_start,
            finding_3_every_task_carries_a_sealed_expiry,
            rough_edge_a_task_with_no_handler_waits_for_a_worker_that_has_one,
            rough_edge_a_task_with_no_handler_is_archived_unknown_type_at_its_expiry,
            recovery_the_producer_reads_its_tasks_result_and_error,
            recovery_an_unknown_id_is_not_found_and_a_wait_times_out,
            recovery_bulk_rerun_and_delete_act_on_exactly_the_filtered_tasks,
            bulk_enqueue_sealed_on_several_threads_keeps_each_result_in_place,
            bulk_enqueue_batches_in_flight_keep_each_result_in_place,
        );
    };
    (@cases $factory:expr; $($case:ident),* $(,)?) => {
        $(
            #[::tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $case() {
                $crate::testkit::scenarios::run($factory, $crate::testkit::scenarios::$case).await;
            }
        )*
    };
}
