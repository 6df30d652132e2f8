//! Broker conformance suite (feature `testkit`).
//!
//! Every backend proves it implements [`crate::Broker`] faithfully by running
//! this suite from its own tests with one macro call:
//!
//! ```ignore
//! // crates/sealq-mybackend/tests/conformance.rs
//! use sealq::clock::SharedClock;
//! use sealq::testkit::Harness;
//!
//! sealq::conformance_tests!(async |clock: SharedClock| {
//!     let dir = tempfile::tempdir().unwrap();
//!     let broker = MyBroker::open(dir.path().join("q.db"), clock).unwrap();
//!     // The guard (here the temp dir) lives until the case ends.
//!     Harness::new(broker).with_guard(dir)
//! });
//! ```
//!
//! The macro expands to one `#[tokio::test(flavor = "multi_thread",
//! worker_threads = 2)]` per case, named after the case (see [`cases`]), so a
//! failure is reported by name. The calling crate needs `tokio` with the
//! `macros` and `rt-multi-thread` features among its dev-dependencies.
//!
//! The factory is anything callable as `async (SharedClock) -> R` where
//! `R: Into<Harness>`: a broker value, an `Arc<dyn Broker>`, or a [`Harness`]
//! carrying a guard (temp dir, child server process) that must outlive the
//! case. It must return a fresh, isolated store each time. The clock it is
//! given is a [`ManualClock`] the cases drive, so no case sleeps to make time
//! pass; the only real waiting is in the wake-up cases, bounded by generous
//! timeouts rather than asserted speeds.

use std::any::Any;
use std::future::Future;
use std::sync::Arc;

use crate::model::clock::SharedClock;
use crate::store::audit::AuditSink;
use crate::store::blob::BlobStore;
use crate::store::broker::Broker;

pub use crate::model::clock::ManualClock;

pub mod blob_cases;
pub mod cases;
pub mod damage;
pub mod fixtures;
pub mod scenarios;

pub use damage::run as run_damage;
pub use fixtures::Ctx;

/// The start time of every case's [`ManualClock`]: 2023-11-14T22:13:20Z.
pub const START_MS: i64 = 1_700_000_000_000;

/// A broker under test plus whatever must stay alive while it is used
/// (a temp dir, a server process). Dropped, broker first, when the case ends.
///
/// Scenarios ([`scenarios`]) and the blob store cases ([`blob_cases`]) use
/// the optional parts: a second broker over the same store, an audit sink
/// in the same store, a blob store.
pub struct Harness {
    broker: Arc<dyn Broker>,
    peer: Option<Arc<dyn Broker>>,
    audit_sink: Option<Arc<dyn AuditSink>>,
    blob_store: Option<Arc<dyn BlobStore>>,
    damage: Option<damage::Damage>,
    tamper: Option<cases::replay::TamperHook>,
    guard: Option<Box<dyn Any + Send>>,
}

impl Harness {
    /// A harness around a broker value.
    pub fn new(broker: impl Broker) -> Self {
        Self::from_arc(Arc::new(broker))
    }

    /// A harness around a shared broker.
    pub fn from_arc(broker: Arc<dyn Broker>) -> Self {
        Self {
            broker,
            peer: None,
            audit_sink: None,
            blob_store: None,
            damage: None,
            tamper: None,
            guard: None,
        }
    }

    /// A second broker over the same store, as another process would open
    /// it (a crashed worker's, an operator's).
    pub fn with_peer(mut self, peer: impl Broker) -> Self {
        self.peer = Some(Arc::new(peer));
        self
    }

    /// The backend's audit sink, for the audit scenarios.
    pub fn with_audit_sink(mut self, sink: Arc<dyn AuditSink>) -> Self {
        self.audit_sink = Some(sink);
        self
    }

    /// The backend's blob store, for the blob store cases.
    pub fn with_blob_store(mut self, store: Arc<dyn BlobStore>) -> Self {
        self.blob_store = Some(store);
        self
    }

    /// How to damage one stored task so that it no longer decodes, for the
    /// damage cases ([`damage`], [`crate::damage_tests!`]).
    pub fn with_damage<F>(mut self, f: F) -> Self
    where
        F: Fn(
                crate::model::id::TaskId,
                String,
            ) -> std::pin::Pin<Box<dyn Future<Output = ()> + Send>>
            + Send
            + Sync
            + 'static,
    {
        self.damage = Some(Arc::new(f));
        self
    }

    /// How to edit one stored task behind the broker's back, for the
    /// replay cases ([`cases::replay`], [`crate::replay_tests!`]).
    pub fn with_tamper<F>(mut self, f: F) -> Self
    where
        F: Fn(
                cases::replay::Tamper,
                crate::model::id::TaskId,
                String,
            ) -> std::pin::Pin<Box<dyn Future<Output = ()> + Send>>
            + Send
            + Sync
            + 'static,
    {
        self.tamper = Some(Arc::new(f));
        self
    }

    /// Keep `guard` alive until the case has finished and the broker is dropped.
    pub fn with_guard(mut self, guard: impl Send + 'static) -> Self {
        self.guard = Some(Box::new(guard));
        self
    }

    /// The broker under test.
    pub fn broker(&self) -> &Arc<dyn Broker> {
        &self.broker
    }
}

impl std::fmt::Debug for Harness {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Harness")
            .field("broker", &self.broker)
            .field("peer", &self.peer)
            .field("audit_sink", &self.audit_sink)
            .field("blob_store", &self.blob_store)
            .field("damage", &self.damage.is_some())
            .field("tamper", &self.tamper.is_some())
            .field("guard", &self.guard.is_some())
            .finish()
    }
}

impl<B: Broker> From<B> for Harness {
    fn from(broker: B) -> Self {
        Harness::new(broker)
    }
}

impl From<Arc<dyn Broker>> for Harness {
    fn from(broker: Arc<dyn Broker>) -> Self {
        Harness::from_arc(broker)
    }
}

/// Run one case: build a fresh broker on a new [`ManualClock`] starting at
/// [`START_MS`], run `case`, then drop the broker and its guard.
///
/// Used by [`crate::conformance_tests!`]; callable directly to run a single
/// case or a backend-specific test with the same fixtures.
pub async fn run<F, R, C, Fut>(factory: F, case: C)
where
    F: AsyncFnOnce(SharedClock) -> R,
    R: Into<Harness>,
    C: FnOnce(Ctx) -> Fut,
    Fut: Future<Output = ()>,
{
    let clock = ManualClock::new(START_MS);
    let shared: SharedClock = clock.clone();
    let harness: Harness = factory(shared).await.into();
    let Harness { broker, guard, .. } = harness;
    case(Ctx::new(broker, clock)).await;
    drop(guard);
}

/// Expand to one `#[tokio::test]` per conformance case, each building its
/// broker with the given factory (see the [module docs](crate::testkit)).
///
/// ```ignore
/// sealq::conformance_tests!(async |clock: sealq::clock::SharedClock| {
///     MyBroker::in_memory(clock)
/// });
/// ```
#[macro_export]
macro_rules! conformance_tests {
    ($factory:expr $(,)?) => {
        $crate::conformance_tests!(@cases $factory;
            enqueue_get_roundtrip,
            enqueue_batch_results_in_order,
            enqueue_batch_with_a_stored_id_and_a_repeated_id,
            enqueue_empty_batches,
            pending_vs_scheduled,
            dequeue_leases,
            dequeue_respects_max,
            dequeue_orders_by_run_at_then_id,
            dequeue_drains_first_queue_first,
            dequeue_skips_paused_until_resumed,
            dequeue_takes_due_scheduled_without_forward,
            ack_complete_keeps_result,
            ack_retry_waits_for_run_at,
            ack_archive_with_reason,
            ack_requeue_does_not_count_attempt,
            stale_ack_is_lease_lost,
            ack_of_deleted_task_is_lease_lost,
            extend_leases_held_and_lost,
            recover_expired_retries_then_archives,
            forward_due_moves_due_tasks,
            unique_key_duplicate_until_ttl,
            unique_key_released_when_holder_finishes,
            id_exists_for_live_and_purged_ids,
            purge_completed_respects_retention,
            stats_per_queue,
            list_filters,
            list_pagination,
            list_pages_within_a_queue_and_state,
            delete_tasks,
            rerun_archived,
            wait_for_work_wakes_on_enqueue,
            wait_for_work_times_out,
            concurrent_workers_never_share_a_task,
            batch_ack_many,
            swap_sealed_compare_and_swap,
            max_depth_caps_waiting_tasks,
            rate_limit_caps_leases,
            subject_key_put_if_absent_keeps_the_first,
            subject_key_batches_agree_with_single_calls,
            subject_key_destroy_bumps_the_epoch,
            subject_key_list_and_replace,
            erase_subject_removes_every_state,
            erase_subject_archives_active_and_revokes_its_lease,
            erase_subject_releases_unique_keys,
            erase_unknown_subject_is_harmless,
            erase_tasks_erases_exactly_the_given_ids,
            finding_2_a_completed_id_is_refused_while_retained_and_after_purge,
            finding_2_a_deleted_id_is_refused_at_enqueue,
            key_checks_are_put_if_absent_per_key_id,
            finding_7_recorded_key_checks_refuse_a_wrong_keyring_with_no_task_waiting,
            health_readiness_checks_broker_schema_and_keyring,
        );
    };
    (@cases $factory:expr; $($case:ident),* $(,)?) => {
        $(
            #[::tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $case() {
                $crate::testkit::run($factory, $crate::testkit::cases::$case).await;
            }
        )*
    };
}
