//! Typed references resolved by a real worker over a temporary SQLite broker:
//! each resolver outcome ends the task in the right state, with the right
//! reason, and the worker keeps going.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use sealq::backoff::Backoff;
use sealq::broker::{Broker, TaskRecord};
use sealq::envelope::{Aad, Purpose};
use sealq::reference::{
    CacheOptions, ErrorClass, REFERENCE_FORBIDDEN, REFERENCE_MALFORMED, async_trait,
};
use sealq::{
    ArchiveReason, Client, EnqueueOptions, Keyring, Ref, ResolveError, Resolver, ResolverOptions,
    Task, TaskContext, TaskId, TaskState, Worker,
};
use sealq_sqlite::SqliteBroker;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq)]
struct Customer {
    name: String,
}

#[derive(Debug, Serialize, Deserialize)]
struct Invoice {
    customer: Ref<Customer>,
}
impl Task for Invoice {
    const KIND: &'static str = "test.invoice";
    fn options() -> EnqueueOptions {
        EnqueueOptions::new().backoff(Backoff::Fixed { delay_ms: 10 })
    }
}

/// Knows `cus_ok`, `cus_other`; `cus_gone` is not found, `cus_secret` is
/// forbidden, `cus_flaky` fails transiently on its first fetch, `cus_slow`
/// hangs on its first fetch, `cus_boom` panics on its first fetch. Ids must
/// start with `cus_`.
#[derive(Default)]
struct Directory {
    calls: AtomicU32,
    flaky: AtomicU32,
    slow: AtomicU32,
    boom: AtomicU32,
}

#[async_trait]
impl Resolver<Customer> for Directory {
    async fn resolve(&self, id: &str) -> Result<Customer, ResolveError> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        match id {
            "cus_gone" => Err(ResolveError::NotFound),
            "cus_secret" => Err(ResolveError::forbidden("tenant mismatch")),
            "cus_flaky" if self.flaky.fetch_add(1, Ordering::SeqCst) == 0 => {
                Err(ResolveError::transient("connection reset"))
            }
            "cus_slow" if self.slow.fetch_add(1, Ordering::SeqCst) == 0 => {
                tokio::time::sleep(Duration::from_secs(3600)).await;
                unreachable!("the timeout drops this future")
            }
            "cus_boom" if self.boom.fetch_add(1, Ordering::SeqCst) == 0 => {
                panic!("resolver bug")
            }
            _ => Ok(Customer {
                name: format!("name of {id}"),
            }),
        }
    }

    fn validate_id(&self, id: &str) -> Result<(), String> {
        if id.starts_with("cus_") {
            Ok(())
        } else {
            Err("customer ids start with `cus_`".into())
        }
    }
}

struct Env {
    _dir: tempfile::TempDir,
    broker: Arc<dyn Broker>,
    keyring: Arc<Keyring>,
    client: Client,
}

fn env() -> Env {
    let dir = tempfile::tempdir().expect("tempdir");
    let broker: Arc<dyn Broker> =
        Arc::new(SqliteBroker::open(dir.path().join("q.db")).expect("open broker"));
    let keyring = Arc::new(Keyring::generate());
    let client = Client::builder(broker.clone(), keyring.clone())
        .producer("tests")
        .build();
    Env {
        _dir: dir,
        broker,
        keyring,
        client,
    }
}

/// A worker whose handler resolves the invoice's customer and records it.
fn worker(
    e: &Env,
    dir: Arc<Directory>,
    options: ResolverOptions,
    seen: Arc<std::sync::Mutex<HashMap<TaskId, String>>>,
) -> Worker {
    Worker::builder(e.broker.clone(), e.keyring.clone())
        .maintenance_interval(Duration::from_millis(20))
        .shutdown_timeout(Duration::from_secs(5))
        .concurrency(32)
        .resolver::<Customer, _>(dir, options)
        .handle(move |task: Invoice, ctx: TaskContext| {
            let seen = seen.clone();
            async move {
                let customer = ctx.resolve(&task.customer).await?;
                seen.lock().unwrap().insert(ctx.id(), customer.name.clone());
                Ok(())
            }
        })
        .build()
        .expect("worker")
}

async fn enqueue(e: &Env, id: &str) -> TaskId {
    e.client
        .enqueue(
            &Invoice {
                customer: Ref::new(id),
            },
            EnqueueOptions::new(),
        )
        .await
        .expect("enqueue")
}

/// Wait (bounded) until the task is completed or archived.
async fn wait_final(broker: &Arc<dyn Broker>, id: TaskId) -> TaskRecord {
    let give_up = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let rec = broker.get(id).await.expect("get").expect("task exists");
        if matches!(rec.state, TaskState::Completed | TaskState::Archived) {
            return rec;
        }
        assert!(
            tokio::time::Instant::now() < give_up,
            "task {id} stuck in {}",
            rec.state
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn sealed_error(e: &Env, rec: &TaskRecord) -> String {
    let sealed = rec.last_error.as_ref().expect("an error is stored");
    let plain = e
        .keyring
        .open(&Aad::for_record(rec, Purpose::Error), sealed)
        .expect("error opens");
    String::from_utf8(plain.to_vec()).expect("utf-8")
}

fn archived_with(rec: &TaskRecord, reason: ArchiveReason) {
    assert_eq!(rec.state, TaskState::Archived, "{rec:?}");
    assert_eq!(rec.archive_reason.as_ref(), Some(&reason), "{rec:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_resolver_outcome_ends_in_the_right_state() {
    let e = env();
    let dir = Arc::new(Directory::default());
    let seen = Arc::default();
    let opts = ResolverOptions::default().timeout(Duration::from_millis(200));
    let w = worker(&e, dir.clone(), opts, Arc::clone(&seen)).spawn();

    let ok = enqueue(&e, "cus_ok").await;
    let gone = enqueue(&e, "cus_gone").await;
    let secret = enqueue(&e, "cus_secret").await;
    let flaky = enqueue(&e, "cus_flaky").await;
    let slow = enqueue(&e, "cus_slow").await;
    let boom = enqueue(&e, "cus_boom").await;
    let empty = enqueue(&e, "").await;
    let foreign = enqueue(&e, "usr_1").await;
    let control = enqueue(&e, "cus_\u{7}").await;

    let rec = wait_final(&e.broker, ok).await;
    assert_eq!(rec.state, TaskState::Completed);
    assert_eq!(rec.attempts, 1);

    // Not found: archived at once, no retry storm.
    let rec = wait_final(&e.broker, gone).await;
    archived_with(&rec, ArchiveReason::ReferenceMissing);
    assert_eq!(rec.attempts, 1);
    assert!(sealed_error(&e, &rec).contains("not found"));

    // Forbidden: archived, its own reason, the resolver's text sealed.
    let rec = wait_final(&e.broker, secret).await;
    archived_with(&rec, ArchiveReason::Other(REFERENCE_FORBIDDEN.into()));
    assert_eq!(rec.attempts, 1);
    assert!(sealed_error(&e, &rec).contains("tenant mismatch"));

    // Transient, timeout (the resolver hangs) and panic: retried, then fine.
    for id in [flaky, slow, boom] {
        let rec = wait_final(&e.broker, id).await;
        assert_eq!(rec.state, TaskState::Completed, "{rec:?}");
        assert_eq!(rec.attempts, 2, "{rec:?}");
    }

    // Malformed: the built-in check (empty, control characters) and the
    // resolver's validate_id, without calling the resolver.
    for id in [empty, foreign, control] {
        let rec = wait_final(&e.broker, id).await;
        archived_with(&rec, ArchiveReason::Other(REFERENCE_MALFORMED.into()));
        assert_eq!(rec.attempts, 1);
    }
    let rec = e.broker.get(foreign).await.unwrap().unwrap();
    assert!(sealed_error(&e, &rec).contains("customer ids start with `cus_`"));

    let report = w.shutdown().await.unwrap();
    assert_eq!(report.succeeded, 4);
    assert_eq!(report.archived, 5);
    assert_eq!(report.retried, 3);
    // ok, gone, secret, 2 × flaky, 2 × slow, 2 × boom; never the malformed ones.
    assert_eq!(dir.calls.load(Ordering::SeqCst), 9);
    assert_eq!(
        seen.lock().unwrap().get(&ok).map(String::as_str),
        Some("name of cus_ok")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resolver_stats_count_each_class() {
    let e = env();
    let dir = Arc::new(Directory::default());
    let opts = ResolverOptions::default().timeout(Duration::from_millis(100));
    let w = worker(&e, dir, opts, Arc::default());
    let handle = w.spawn();
    let mut ids = Vec::new();
    for id in [
        "cus_gone",
        "cus_secret",
        "cus_flaky",
        "cus_slow",
        "cus_boom",
        "x",
    ] {
        ids.push(enqueue(&e, id).await);
    }
    for id in ids {
        wait_final(&e.broker, id).await;
    }
    handle.shutdown().await.unwrap();
    let stats = w.resolvers().stats();
    assert_eq!(stats.len(), 1);
    let s = &stats[0];
    assert_eq!(s.type_name, "Customer");
    assert_eq!(s.resolves, 9);
    assert_eq!(s.fetches, 8);
    for class in [
        ErrorClass::NotFound,
        ErrorClass::Forbidden,
        ErrorClass::Transient,
        ErrorClass::Timeout,
        ErrorClass::Panic,
        ErrorClass::Malformed,
    ] {
        assert_eq!(s.errors.get(&class), Some(&1), "{class}: {s:?}");
    }
    assert_eq!(s.error_total(), 6);
    assert!(
        s.fetch_max_ms >= 100.0,
        "the timed-out fetch is measured: {s:?}"
    );
    assert_eq!(s.hit_ratio(), None, "no cache");
}

/// N tasks referencing one id start together: the resolver runs once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_resolves_of_one_id_share_one_fetch() {
    const N: u32 = 20;
    let e = env();
    let entered = Arc::new(AtomicU32::new(0));

    struct Gate {
        calls: AtomicU32,
        entered: Arc<AtomicU32>,
    }
    #[async_trait]
    impl Resolver<Customer> for Gate {
        async fn resolve(&self, id: &str) -> Result<Customer, ResolveError> {
            self.calls.fetch_add(1, Ordering::SeqCst);
            // Hold the fetch open until every handler asked for the id.
            let give_up = tokio::time::Instant::now() + Duration::from_secs(10);
            while self.entered.load(Ordering::SeqCst) < N && tokio::time::Instant::now() < give_up {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
            Ok(Customer {
                name: id.to_owned(),
            })
        }
    }
    let gate = Arc::new(Gate {
        calls: AtomicU32::new(0),
        entered: entered.clone(),
    });
    let mut ids = Vec::new();
    for _ in 0..N {
        ids.push(enqueue(&e, "cus_shared").await);
    }
    let en = entered.clone();
    let w = Worker::builder(e.broker.clone(), e.keyring.clone())
        .maintenance_interval(Duration::from_millis(20))
        .concurrency(N as usize)
        .resolver::<Customer, _>(gate.clone(), ResolverOptions::default())
        .handle(move |task: Invoice, ctx: TaskContext| {
            let en = en.clone();
            async move {
                en.fetch_add(1, Ordering::SeqCst);
                let c = ctx.resolve(&task.customer).await?;
                assert_eq!(c.name, "cus_shared");
                Ok(())
            }
        })
        .build()
        .unwrap();
    let handle = w.spawn();
    for id in ids {
        assert_eq!(wait_final(&e.broker, id).await.state, TaskState::Completed);
    }
    handle.shutdown().await.unwrap();
    assert_eq!(gate.calls.load(Ordering::SeqCst), 1);
    let s = &w.resolvers().stats()[0];
    assert_eq!(
        (s.resolves, s.fetches, s.coalesced),
        (u64::from(N), 1, u64::from(N - 1))
    );
}

/// With a cache, tasks one after another fetch an id once; without, every time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cache_serves_later_tasks() {
    for cached in [true, false] {
        let e = env();
        let dir = Arc::new(Directory::default());
        let mut opts = ResolverOptions::default();
        if cached {
            opts = opts.cache(CacheOptions::new(Duration::from_secs(60), 100));
        }
        let w = Worker::builder(e.broker.clone(), e.keyring.clone())
            .maintenance_interval(Duration::from_millis(20))
            .concurrency(1)
            .prefetch(0)
            .resolver::<Customer, _>(dir.clone(), opts)
            .handle(|task: Invoice, ctx: TaskContext| async move {
                ctx.resolve(&task.customer).await?;
                Ok(())
            })
            .build()
            .unwrap();
        let handle = w.spawn();
        for _ in 0..5 {
            let id = enqueue(&e, "cus_ok").await;
            assert_eq!(wait_final(&e.broker, id).await.state, TaskState::Completed);
        }
        handle.shutdown().await.unwrap();
        let s = &w.resolvers().stats()[0];
        if cached {
            assert_eq!(dir.calls.load(Ordering::SeqCst), 1);
            assert_eq!((s.cache_hits, s.cache_misses, s.cached_entries), (4, 1, 1));
            assert_eq!(s.hit_ratio(), Some(0.8));
        } else {
            assert_eq!(dir.calls.load(Ordering::SeqCst), 5);
            assert_eq!((s.cache_hits, s.cache_misses), (0, 0));
        }
    }
}

/// A type referenced without a registered resolver: retried (a deployment
/// with the resolver picks it up), the worker keeps running other tasks.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unregistered_type_retries() {
    let e = env();
    let w = Worker::builder(e.broker.clone(), e.keyring.clone())
        .maintenance_interval(Duration::from_millis(20))
        .handle(|task: Invoice, ctx: TaskContext| async move {
            ctx.resolve(&task.customer).await?;
            Ok(())
        })
        .build()
        .unwrap()
        .spawn();
    let id = e
        .client
        .enqueue(
            &Invoice {
                customer: Ref::new("cus_ok"),
            },
            EnqueueOptions::new().max_retries(1),
        )
        .await
        .unwrap();
    let rec = wait_final(&e.broker, id).await;
    archived_with(&rec, ArchiveReason::Exhausted);
    assert_eq!(rec.attempts, 2);
    assert!(sealed_error(&e, &rec).contains("no resolver is registered for Customer"));
    w.shutdown().await.unwrap();
}
