//! The sealq broker conformance suite, the damage cases and the replay
//! cases, each on a fresh database of a Postgres server this binary starts.

mod support;

use sealq::clock::SharedClock;
use sealq::testkit::Harness;
use sealq_postgres::{PostgresBroker, PostgresOptions};

/// A database of its own and a broker on it.
async fn broker(clock: SharedClock) -> (PostgresBroker, String) {
    let url = support::fresh_db().await;
    let broker = PostgresBroker::connect_with(&url, PostgresOptions::with_clock(clock))
        .await
        .expect("connect");
    (broker, url)
}

/// Run `sql` (with the task id as `$1`) on a connection of its own, as
/// someone with write access to the database could.
async fn edit(url: &str, sql: &[&str], id: uuid::Uuid) {
    let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .expect("second connection");
    let task = tokio::spawn(conn);
    for s in sql {
        let n = if s.contains("$1") {
            client.execute(*s, &[&id]).await
        } else {
            client.execute(*s, &[]).await
        }
        .unwrap_or_else(|e| panic!("{s}: {e}"));
        assert!(n == 1 || s.starts_with("CREATE"), "{s}: {n} rows");
    }
    drop(client);
    let _ = task.await;
}

// Every case but the subject key store's (`Broker::subject_key_store`
// has no Postgres store yet; see docs/postgres.md).
sealq::conformance_tests!(@cases async |clock: SharedClock| broker(clock).await.0;
    enqueue_get_roundtrip,
    enqueue_batch_results_in_order,
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
    delete_tasks,
    rerun_archived,
    wait_for_work_wakes_on_enqueue,
    wait_for_work_times_out,
    concurrent_workers_never_share_a_task,
    batch_ack_many,
    swap_sealed_compare_and_swap,
    max_depth_caps_waiting_tasks,
    rate_limit_caps_leases,
    erase_subject_removes_every_state,
    erase_subject_archives_active_and_revokes_its_lease,
    erase_subject_releases_unique_keys,
    erase_unknown_subject_is_harmless,
    erase_tasks_erases_exactly_the_given_ids,
    finding_2_a_completed_id_is_refused_while_retained_and_after_purge,
    finding_2_a_deleted_id_is_refused_at_enqueue,
    key_checks_are_put_if_absent_per_key_id,
    finding_7_recorded_key_checks_refuse_a_wrong_keyring_with_no_task_waiting,
);

// Finding 4: one task whose row does not decode (metadata bytes that are
// not task metadata, written with SQL as an edited row would hold them)
// must not stop a worker.
sealq::damage_tests!(async |clock: SharedClock| {
    let (broker, url) = broker(clock).await;
    Harness::new(broker).with_damage(move |id, _queue| {
        let url = url.clone();
        Box::pin(async move {
            edit(
                &url,
                &["UPDATE sealq.task_bodies SET meta = '\\xc1ff00'::bytea WHERE id = $1"],
                id.0,
            )
            .await;
        })
    })
});

// Finding 2: a task whose id completed or was deleted never runs again,
// even after its row is edited back to pending or put back from a copy.
sealq::replay_tests!(async |clock: SharedClock| {
    use sealq::testkit::cases::replay::Tamper;
    let (broker, url) = broker(clock).await;
    Harness::new(broker).with_tamper(move |op, id, _queue| {
        let url = url.clone();
        Box::pin(async move {
            let sql: &[&str] = match op {
                Tamper::FlipToPending => {
                    &["UPDATE sealq.tasks SET state = 'pending', run_at = 0 WHERE id = $1"]
                }
                Tamper::Save => &[
                    "CREATE TABLE IF NOT EXISTS public.saved_tasks AS \
                     SELECT * FROM sealq.tasks WHERE false",
                    "CREATE TABLE IF NOT EXISTS public.saved_bodies AS \
                     SELECT * FROM sealq.task_bodies WHERE false",
                    "INSERT INTO public.saved_tasks SELECT * FROM sealq.tasks WHERE id = $1",
                    "INSERT INTO public.saved_bodies SELECT * FROM sealq.task_bodies WHERE id = $1",
                ],
                _ => &[
                    "INSERT INTO sealq.tasks SELECT * FROM public.saved_tasks WHERE id = $1",
                    "INSERT INTO sealq.task_bodies SELECT * FROM public.saved_bodies WHERE id = $1",
                ],
            };
            edit(&url, sql, id.0).await;
        })
    })
});
