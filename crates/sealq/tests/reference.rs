//! `Resolvers` on their own, with tokio's paused clock: cache TTL and bound,
//! single-flight, timeouts, panics. (The same behaviour through a real worker
//! and broker is tested in `sealq-sqlite/tests/reference.rs`.)

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use sealq::reference::{
    CacheOptions, ErrorClass, Ref, ResolveError, Resolver, ResolverOptions, Resolvers, async_trait,
};

/// Returns `id` with the fetch number appended, after `delay`; counts calls.
/// Id `panic` panics, `hang` never answers, `missing` is not found.
struct Echo {
    calls: AtomicU32,
    delay: Duration,
}

#[async_trait]
impl Resolver<String> for Echo {
    async fn resolve(&self, id: &str) -> Result<String, ResolveError> {
        let n = self.calls.fetch_add(1, Ordering::SeqCst) + 1;
        match id {
            "panic" => panic!("resolver bug"),
            "hang" => std::future::pending().await,
            "missing" => Err(ResolveError::NotFound),
            _ => {
                tokio::time::sleep(self.delay).await;
                Ok(format!("{id}#{n}"))
            }
        }
    }
}

fn setup(delay: Duration, options: ResolverOptions) -> (Arc<Echo>, Resolvers) {
    let echo = Arc::new(Echo {
        calls: AtomicU32::new(0),
        delay,
    });
    let mut r = Resolvers::new();
    r.register::<String, _>(echo.clone(), options);
    (echo, r)
}

fn r(id: &str) -> Ref<String> {
    Ref::new(id)
}

#[tokio::test(start_paused = true)]
async fn cache_entries_expire_after_their_ttl() {
    let opts = ResolverOptions::default().cache(CacheOptions::new(Duration::from_secs(30), 10));
    let (echo, resolvers) = setup(Duration::ZERO, opts);
    assert_eq!(*resolvers.resolve(&r("a")).await.unwrap(), "a#1");
    tokio::time::advance(Duration::from_secs(29)).await;
    assert_eq!(*resolvers.resolve(&r("a")).await.unwrap(), "a#1", "fresh");
    tokio::time::advance(Duration::from_secs(1)).await;
    assert_eq!(*resolvers.resolve(&r("a")).await.unwrap(), "a#2", "expired");
    assert_eq!(echo.calls.load(Ordering::SeqCst), 2);
    let s = &resolvers.stats()[0];
    assert_eq!((s.cache_hits, s.cache_misses, s.fetches), (1, 2, 2));
}

#[tokio::test(start_paused = true)]
async fn cache_keeps_the_most_recently_used() {
    let opts = ResolverOptions::default().cache(CacheOptions::new(Duration::from_secs(60), 2));
    let (echo, resolvers) = setup(Duration::ZERO, opts);
    for id in ["a", "b", "a", "c"] {
        resolvers.resolve(&r(id)).await.unwrap();
    }
    // `b` was the least recently used when `c` came in.
    assert_eq!(*resolvers.resolve(&r("a")).await.unwrap(), "a#1");
    assert_eq!(*resolvers.resolve(&r("b")).await.unwrap(), "b#4");
    assert_eq!(echo.calls.load(Ordering::SeqCst), 4);
    assert_eq!(resolvers.stats()[0].cached_entries, 2);
}

#[tokio::test(start_paused = true)]
async fn failures_are_not_cached() {
    let opts = ResolverOptions::default().cache(CacheOptions::new(Duration::from_secs(60), 10));
    let (echo, resolvers) = setup(Duration::ZERO, opts);
    for _ in 0..3 {
        let err = resolvers.resolve(&r("missing")).await.unwrap_err();
        assert_eq!(err.class, ErrorClass::NotFound);
    }
    assert_eq!(echo.calls.load(Ordering::SeqCst), 3);
}

#[tokio::test(start_paused = true)]
async fn concurrent_resolves_share_one_fetch() {
    let (echo, resolvers) = setup(Duration::from_secs(1), ResolverOptions::default());
    let resolvers = Arc::new(resolvers);
    let mut tasks = Vec::new();
    for i in 0..50 {
        let rs = resolvers.clone();
        let id = if i % 10 == 0 { "other" } else { "same" };
        tasks.push(tokio::spawn(async move { rs.resolve(&r(id)).await }));
    }
    let mut values = Vec::new();
    for t in tasks {
        values.push(t.await.unwrap().unwrap());
    }
    assert_eq!(echo.calls.load(Ordering::SeqCst), 2, "one fetch per id");
    assert_eq!(values.iter().filter(|v| v.starts_with("same#")).count(), 45);
    // All the waiters of one id got the same value.
    let same: Vec<_> = values.iter().filter(|v| v.starts_with("same#")).collect();
    assert!(same.iter().all(|v| Arc::ptr_eq(v, same[0])));
    let s = &resolvers.stats()[0];
    assert_eq!((s.resolves, s.fetches, s.coalesced), (50, 2, 48));
    // Without a cache, the next resolve after the flight fetches again.
    resolvers.resolve(&r("same")).await.unwrap();
    assert_eq!(echo.calls.load(Ordering::SeqCst), 3);
}

#[tokio::test(start_paused = true)]
async fn a_hanging_resolver_times_out_and_the_next_fetch_starts_afresh() {
    let opts = ResolverOptions::default().timeout(Duration::from_millis(250));
    let (echo, resolvers) = setup(Duration::ZERO, opts);
    let started = tokio::time::Instant::now();
    let err = resolvers.resolve(&r("hang")).await.unwrap_err();
    assert_eq!(err.class, ErrorClass::Timeout);
    assert_eq!(started.elapsed(), Duration::from_millis(250));
    let err = resolvers.resolve(&r("hang")).await.unwrap_err();
    assert_eq!(err.class, ErrorClass::Timeout);
    assert_eq!(echo.calls.load(Ordering::SeqCst), 2);
    // Display is safe for logs: no id.
    assert!(!err.to_string().contains("hang"));
    assert!(!format!("{err:?}").contains("hang"));
}

#[tokio::test(start_paused = true)]
async fn a_panicking_resolver_is_a_failure_not_a_crash() {
    let (_echo, resolvers) = setup(Duration::ZERO, ResolverOptions::default());
    let err = resolvers.resolve(&r("panic")).await.unwrap_err();
    assert_eq!(err.class, ErrorClass::Panic);
    // Still usable afterwards.
    assert_eq!(*resolvers.resolve(&r("ok")).await.unwrap(), "ok#2");
    assert_eq!(
        resolvers.stats()[0].errors.get(&ErrorClass::Panic),
        Some(&1)
    );
}

#[tokio::test]
async fn malformed_ids_never_reach_the_resolver() {
    let (echo, resolvers) = setup(Duration::ZERO, ResolverOptions::default());
    for id in [String::new(), "a\u{0}b".into(), "x".repeat(513)] {
        let err = resolvers
            .resolve(&Ref::<String>::new(id))
            .await
            .unwrap_err();
        assert_eq!(err.class, ErrorClass::Malformed);
    }
    assert_eq!(echo.calls.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn unregistered_types_and_custom_labels() {
    let mut resolvers = Resolvers::new();
    let err = resolvers.resolve(&Ref::<u8>::new("1")).await.unwrap_err();
    assert_eq!(err.class, ErrorClass::Unregistered);
    let echo = Echo {
        calls: AtomicU32::new(0),
        delay: Duration::ZERO,
    };
    resolvers.register::<String, _>(echo, ResolverOptions::default().name("Profile"));
    assert!(resolvers.contains::<String>());
    assert!(!resolvers.contains::<u8>());
    assert_eq!(resolvers.stats()[0].type_name, "Profile");
    assert_eq!(
        format!("{resolvers:?}"),
        r#"Resolvers { types: ["Profile"] }"#
    );
}
