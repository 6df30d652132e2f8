//! The sealq broker conformance suite, the live-worker cases, the damage
//! cases and the replay cases, each on a fresh database of a Postgres server this binary starts.

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

// Every case of the kit, the subject key store's and readiness included.
sealq::conformance_tests!(async |clock: SharedClock| broker(clock).await.0);

// The registry of live workers (migration 3).
sealq::live_worker_tests!(async |clock: SharedClock| broker(clock).await.0);

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
