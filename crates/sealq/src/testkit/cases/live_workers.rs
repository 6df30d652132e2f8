//! The registry of live workers (`Broker::register_worker`,
//! `Broker::list_workers`, `Broker::deregister_worker`): what `sealq
//! workers` lists. Run by [`crate::live_worker_tests!`], apart from
//! [`crate::conformance_tests!`] so that a backend without a registry yet
//! (the trait's default refuses with `BrokerErrorKind::Unsupported`) still
//! passes the rest.

use std::time::Duration;

use crate::model::live_worker::LiveWorker;
use crate::testkit::fixtures::Ctx;

fn worker(run: &str, id: &str, started_at_ms: i64) -> LiveWorker {
    LiveWorker {
        run_id: run.to_owned(),
        id: id.to_owned(),
        host: "host-a".to_owned(),
        pid: 4242,
        queues: vec!["critical".to_owned(), "default".to_owned()],
        concurrency: 8,
        started_at_ms,
        // The broker sets it; a value sent is ignored.
        last_heartbeat_ms: 1,
        in_flight: 0,
    }
}

const TTL: Duration = Duration::from_secs(30);

/// Registered workers are listed with what they sent and the broker's time
/// of their last heartbeat, oldest first; a heartbeat updates one entry
/// (two runs with one worker id are two entries); deregistering removes
/// exactly one, and an unknown run is harmless.
pub async fn live_workers_register_heartbeat_list_deregister(ctx: Ctx) {
    let b = &ctx.broker;
    assert!(b.list_workers().await.unwrap().is_empty(), "a new broker");
    let t0 = ctx.now();
    let a = worker("run-a", "host-a:1", t0 - 5_000);
    let mut twin = worker("run-b", "host-a:1", t0 - 1_000);
    twin.queues = vec!["low".to_owned()];
    b.register_worker(&twin, TTL).await.unwrap();
    b.register_worker(&a, TTL).await.unwrap();

    let listed = b.list_workers().await.unwrap();
    assert_eq!(listed.len(), 2, "{listed:?}");
    assert_eq!(listed[0].run_id, "run-a", "oldest first: {listed:?}");
    let expected = LiveWorker {
        last_heartbeat_ms: t0,
        ..a.clone()
    };
    assert_eq!(listed[0], expected);
    assert_eq!(listed[1].queues, ["low"]);
    assert_eq!(listed[1].last_heartbeat_ms, t0);

    ctx.advance(10_000);
    let busy = LiveWorker {
        in_flight: 5,
        ..a.clone()
    };
    b.register_worker(&busy, TTL).await.unwrap();
    let listed = b.list_workers().await.unwrap();
    assert_eq!(listed.len(), 2, "a heartbeat adds no entry: {listed:?}");
    assert_eq!(listed[0].in_flight, 5);
    assert_eq!(listed[0].last_heartbeat_ms, t0 + 10_000);
    assert_eq!(listed[0].started_at_ms, t0 - 5_000, "start kept");
    assert_eq!(listed[1].last_heartbeat_ms, t0, "the other untouched");

    b.deregister_worker("run-a").await.unwrap();
    b.deregister_worker("run-a").await.unwrap();
    b.deregister_worker("no-such-run").await.unwrap();
    let listed = b.list_workers().await.unwrap();
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(listed[0].run_id, "run-b");
}

/// A worker whose last heartbeat is older than the time to live it
/// registered with is dead: no longer listed (and its entry gone, so the
/// registry does not grow with every crash); one that registers again
/// after a pause is listed again.
pub async fn live_workers_dead_ones_drop_out_after_their_ttl(ctx: Ctx) {
    let b = &ctx.broker;
    let t0 = ctx.now();
    b.register_worker(&worker("old", "w:1", t0), TTL)
        .await
        .unwrap();
    b.register_worker(&worker("short", "w:2", t0), Duration::from_secs(2))
        .await
        .unwrap();
    ctx.advance(1_999);
    assert_eq!(
        b.list_workers().await.unwrap().len(),
        2,
        "both within their ttl"
    );
    ctx.advance(1);
    let listed = b.list_workers().await.unwrap();
    assert_eq!(
        listed.iter().map(|w| w.run_id.as_str()).collect::<Vec<_>>(),
        ["old"],
        "a ttl ends at its last heartbeat + ttl"
    );
    ctx.advance(29_000);
    b.register_worker(&worker("new", "w:3", ctx.now()), TTL)
        .await
        .unwrap();
    let listed = b.list_workers().await.unwrap();
    assert_eq!(
        listed.iter().map(|w| w.run_id.as_str()).collect::<Vec<_>>(),
        ["new"],
        "the old one is dead: {listed:?}"
    );
    // Back from a long pause (its entry was deleted): listed again.
    b.register_worker(&worker("old", "w:1", t0), TTL)
        .await
        .unwrap();
    let listed = b.list_workers().await.unwrap();
    assert_eq!(listed.len(), 2, "{listed:?}");
    assert_eq!(listed[0].run_id, "old");
    assert_eq!(listed[0].last_heartbeat_ms, ctx.now());
}

/// Expand to one `#[tokio::test]` per live-worker registry case, each
/// building its broker with the given factory (like
/// [`crate::conformance_tests!`]).
#[macro_export]
macro_rules! live_worker_tests {
    ($factory:expr $(,)?) => {
        $crate::live_worker_tests!(@cases $factory;
            live_workers_register_heartbeat_list_deregister,
            live_workers_dead_ones_drop_out_after_their_ttl,
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
