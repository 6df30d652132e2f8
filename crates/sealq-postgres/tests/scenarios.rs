//! The shared client and worker scenarios ([`sealq::testkit::scenarios`])
//! on a fresh database per scenario: the broker and a second broker on
//! the same database (another process). The audit scenarios use sealq's
//! in-memory sink until the Postgres audit sink lands.

mod support;

use std::sync::Arc;

use sealq::audit::MemorySink;
use sealq::clock::SharedClock;
use sealq::testkit::Harness;
use sealq_postgres::{PostgresBroker, PostgresOptions};

// Every scenario but the three erasure ones, which need a subject key
// store (`Broker::subject_key_store` has no Postgres store yet):
// erasure_removes_every_state_of_the_subject_only,
// an_active_task_of_an_erased_subject_ends_archived_erased_and_never_retries,
// a_direct_ack_after_erasure_is_lease_lost.
sealq::scenario_tests!(@cases async |clock: SharedClock| {
    let url = support::fresh_db().await;
    let broker = PostgresBroker::connect_with(&url, PostgresOptions::with_clock(clock.clone()))
        .await
        .expect("connect");
    let peer = PostgresBroker::connect_with(&url, PostgresOptions::with_clock(clock))
        .await
        .expect("connect the peer");
    Harness::new(broker)
        .with_peer(peer)
        .with_audit_sink(Arc::new(MemorySink::new()))
};
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
    a_real_run_verifies_and_shows_each_tasks_history,
    integrity_refusals_are_audited,
    finding_7_a_worker_with_another_keyring_refuses_to_start_and_changes_nothing,
    finding_7_a_task_whose_key_the_keyring_lacks_is_held_not_archived,
    finding_7_reveal_with_a_wrong_keyring_writes_no_payload_revealed_record,
    finding_3_a_policy_edited_in_the_broker_never_runs,
    finding_3_a_task_moved_earlier_waits_for_its_sealed_start,
    finding_3_every_task_carries_a_sealed_expiry,
);
