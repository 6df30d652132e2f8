//! `sealq bench`: enqueue and processing throughput, and how late tasks start.
//!
//! A throw-away keyring; by default a fresh temporary SQLite file, deleted
//! afterwards. Phased mode times the enqueue phase and the processing phase
//! separately; pipelined mode runs both at once and times the whole.

use std::sync::Arc;
use std::time::{Duration, Instant};

use sealq::{Client, EnqueueOptions, Keyring, RawTask, TaskState, Worker};
use serde::Serialize;

use super::Global;
use crate::args::{BenchArgs, BenchMode, BenchRole, Synchronous};
use crate::broker_url;
use crate::error::{CliError, CliResult, context, msg};
use crate::output::{Latencies, LatencySummary, peak_rss_kib, print_json, progress_bar, rate};

/// The queue bench uses.
const QUEUE: &str = "bench";
/// The task type bench uses.
const KIND: &str = "bench.noop";
/// Envelope and encoding overhead subtracted from `--payload-bytes` so the
/// stored envelope comes out at about the requested size.
const OVERHEAD: usize = 72;
/// How long a run may take before bench gives up (longer with `--rate`:
/// the time the rate needs, twice over, plus this).
const TIME_LIMIT: Duration = Duration::from_secs(600);

/// The benchmark payload: a sequence number and filler.
#[derive(Serialize)]
struct Payload<'a> {
    seq: u64,
    data: &'a str,
}

/// What bench reports.
#[derive(Debug, Serialize)]
struct Results {
    broker: String,
    mode: &'static str,
    /// `both`, `producer` or `worker`.
    role: &'static str,
    tasks: usize,
    payload_bytes: usize,
    envelope_bytes: usize,
    batch: usize,
    /// Concurrent enqueue loops.
    producers: usize,
    /// Whether the loops used `Client::enqueue_bulk`.
    bulk: bool,
    concurrency: usize,
    /// Producer rate cap, tasks/s (0: none).
    rate: u64,
    /// Retention of completed tasks, seconds (`--retention`; none: the
    /// task default).
    #[serde(skip_serializing_if = "Option::is_none")]
    retention_seconds: Option<f64>,
    /// Processing rate of each `--segment` completed tasks, in order.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    segments: Vec<Segment>,
    enqueue_seconds: f64,
    enqueue_per_second: f64,
    /// Until the worker shut down, after its last completion was written
    /// to the broker (durable on SQLite with `synchronous=FULL`).
    process_seconds: f64,
    process_per_second: f64,
    total_seconds: f64,
    end_to_end_per_second: f64,
    /// Enqueue-to-start latency (`now - run_at` in the handler), ms. In phased
    /// mode it includes the time a task waited while the enqueue phase ran.
    latency: LatencySummary,
    peak_rss_kib: Option<u64>,
    /// Worker threads of this process' async runtime (the producer role
    /// runs one per `--producers` loop; see `docs/redis.md` section 10).
    runtime_workers: usize,
    /// What the run cost Redis (Redis brokers on one server, when the user
    /// may run `INFO`).
    #[serde(skip_serializing_if = "Option::is_none")]
    redis: Option<RedisCost>,
}

/// The processing rate of one run of `--segment` completed tasks.
#[derive(Debug, Clone, Serialize)]
struct Segment {
    /// Completed tasks at the end of the segment.
    through: u64,
    /// Seconds the segment took.
    seconds: f64,
    /// Tasks per second in the segment.
    per_second: f64,
}

/// Redis' own counters over the run (`INFO commandstats`, before and after),
/// per task.
#[derive(Debug, Serialize)]
struct RedisCost {
    /// Commands the client sent, per task.
    client_commands_per_task: f64,
    /// Of those, function calls (`FCALL`), per task.
    function_calls_per_task: f64,
    /// Commands run inside the functions, per task.
    commands_in_functions_per_task: f64,
    /// Redis' own time per task, µs (function time includes the commands it ran).
    usec_per_task: f64,
    /// Per command: `[calls, µs]` over the run.
    by_command: std::collections::BTreeMap<String, [u64; 2]>,
}

impl RedisCost {
    fn of(d: &sealq_redis::CommandStats, tasks: usize) -> Self {
        let per = |n: u64| n as f64 / tasks.max(1) as f64;
        RedisCost {
            client_commands_per_task: per(d.client_calls()),
            function_calls_per_task: per(d.function_calls()),
            commands_in_functions_per_task: per(d.calls_in_functions()),
            usec_per_task: per(d.client_usec()),
            by_command: d
                .commands
                .iter()
                .map(|(k, &(calls, usec))| (k.clone(), [calls, usec]))
                .collect(),
        }
    }
}

/// Run the benchmark.
pub(crate) async fn run(global: &Global, args: BenchArgs) -> CliResult {
    if args.tasks == 0 || args.batch == 0 || args.concurrency == 0 || args.producers == 0 {
        return Err(CliError::usage(msg(
            "--tasks, --batch, --concurrency and --producers must be at least 1",
        )));
    }
    if args.segment == Some(0) {
        return Err(CliError::usage(msg("--segment must be at least 1")));
    }
    if args.bulk && args.rate > 0 {
        return Err(CliError::usage(msg(
            "--bulk sends each loop's tasks in one call: it cannot be combined with --rate",
        )));
    }
    let split = args.role != BenchRole::Both;
    if split && !global.broker_on_command_line {
        return Err(CliError::usage(msg(
            "--role producer|worker needs --broker URL on the command line: the producer and \
             the worker processes must share a broker (a fresh key prefix or file per run)",
        )));
    }
    let tempdir = tempfile::Builder::new()
        .prefix("sealq-bench-")
        .tempdir()
        .map_err(|e| CliError::runtime(context("cannot create a temporary directory", e)))?;
    let url = match (&global.broker, global.broker_on_command_line) {
        (Some(url), true) => url.clone(),
        _ => format!(
            "sqlite://{}?synchronous={}",
            tempdir.path().join("bench.db").display(),
            match args.synchronous {
                Synchronous::Normal => "normal",
                Synchronous::Full => "full",
            }
        ),
    };
    let opened = broker_url::open(&url)?;
    let broker = opened.broker.clone();
    // One process seals with a throw-away keyring and does not clean up:
    // on a store already in use its tasks would stay behind, unreadable by
    // anyone, among real ones (issue 21). Refuse, as `sealq demo` does.
    if !split {
        let existing: u64 = broker
            .stats()
            .await?
            .iter()
            .map(|q| TaskState::ALL.iter().map(|s| q.get(*s)).sum::<u64>())
            .sum();
        if existing > 0 {
            return Err(CliError::usage(msg(format!(
                "the benchmark needs an empty store, and {} holds {existing} tasks: it seals its \
                 tasks with a throw-away keyring and leaves them behind; omit --broker to use a \
                 throw-away file, or pass an empty one (a new SQLite file, or a fresh Redis \
                 ?prefix= or db)",
                broker.describe()
            ))));
        }
    }
    // Two processes must share a keyring; one process uses a throw-away one.
    let keyring = Arc::new(if split {
        global.full_keyring("run a benchmark")?
    } else {
        Keyring::generate()
    });
    // With --audit, producer and worker each keep a chain, as two processes would.
    let db = opened.audit_home();
    let producer_audit = super::audit::start(db, args.audit, &keyring)?;
    let worker_audit = super::audit::start(db, args.audit, &keyring)?;
    // A throw-away keyring leaves no check values in the broker (a
    // deployment that uses it later is not refused); a shared one (two
    // processes) is checked and recorded as usual.
    let mut client = Client::builder(broker.clone(), keyring.clone())
        .producer("sealq-bench")
        .check_keyring(split);
    if let Some(a) = &producer_audit {
        client = client.audit(a.clone());
    }
    let client = client.build();
    let latencies = Arc::new(Latencies::with_capacity(args.tasks));
    let limit = time_limit(&args);
    let mut segments = Segments::new(args.segment);
    let l = latencies.clone();
    let mut worker = Worker::builder(broker.clone(), keyring).check_keyring(split);
    if let Some(a) = &worker_audit {
        worker = worker.audit(a.clone());
    }
    if let Some(n) = args.prefetch {
        worker = worker.prefetch(n);
    }
    let worker = worker
        .id("sealq-bench-worker")
        .queues([(QUEUE, 1)])
        .concurrency(args.concurrency)
        .maintenance_interval(Duration::from_millis(100))
        .handle_raw(KIND, move |_payload, ctx| {
            let l = l.clone();
            async move {
                l.record_since(ctx.run_at_ms());
                Ok(())
            }
        })
        .build()?;
    let filler = filler(args.payload_bytes.saturating_sub(OVERHEAD));
    let pb = progress_bar(args.tasks as u64, args.json);
    // Redis' counters before the run (skipped where INFO is not allowed).
    let redis_before = match opened.redis() {
        Some(r) => r.command_stats().await.ok().flatten(),
        None => None,
    };

    let started = Instant::now();
    let (mut enqueue_time, mut process_time) = (Duration::ZERO, Duration::ZERO);
    match (args.role, args.mode) {
        (BenchRole::Producer, _) => {
            drop(worker);
            enqueue_time = enqueue_all(&client, &args, &filler, &pb).await?;
        }
        (BenchRole::Worker, _) => {
            // As `sealq work` does once started (see `text_pages`).
            crate::text_pages::release();
            let h = worker.spawn();
            wait_done(h, args.tasks, &pb, limit, &mut segments).await?;
            process_time = started.elapsed();
        }
        (BenchRole::Both, BenchMode::Phased) => {
            enqueue_time = enqueue_all(&client, &args, &filler, &pb).await?;
            let t = Instant::now();
            let h = worker.spawn();
            wait_done(h, args.tasks, &pb, limit, &mut segments).await?;
            process_time = t.elapsed();
        }
        (BenchRole::Both, BenchMode::Pipelined) => {
            let h = worker.spawn();
            // Segments are timed while the producer still runs.
            let enqueued = std::sync::atomic::AtomicBool::new(false);
            let watch = async {
                while !enqueued.load(std::sync::atomic::Ordering::Relaxed) {
                    segments.observe(h.stats().report().succeeded);
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            };
            let enqueue = async {
                let r = enqueue_all(&client, &args, &filler, &pb).await;
                enqueued.store(true, std::sync::atomic::Ordering::Relaxed);
                r
            };
            let (r, ()) = tokio::join!(enqueue, watch);
            enqueue_time = r?;
            wait_done(h, args.tasks, &pb, limit, &mut segments).await?;
            process_time = started.elapsed();
        }
    }
    pb.finish_and_clear();
    // The audit log is part of the work: the time includes writing its tail.
    super::audit::finish(producer_audit).await?;
    super::audit::finish(worker_audit).await?;
    let total = started.elapsed();
    let redis_cost = match (opened.redis(), &redis_before) {
        (Some(r), Some(before)) => r
            .command_stats()
            .await
            .ok()
            .flatten()
            .map(|after| RedisCost::of(&after.since(before), args.tasks)),
        _ => None,
    };

    // (A producer-only process may not read tasks: a producer role on Redis.)
    let envelope_bytes = if args.role == BenchRole::Producer {
        0
    } else {
        broker
            .list(&sealq::broker::ListQuery {
                queue: Some(QUEUE.into()),
                state: Some(TaskState::Completed),
                limit: 1,
                ..Default::default()
            })
            .await?
            .first()
            .map_or(0, |r| r.envelope.len())
    };
    let results = Results {
        broker: broker.describe(),
        mode: match args.mode {
            BenchMode::Phased => "phased",
            BenchMode::Pipelined => "pipelined",
        },
        role: match args.role {
            BenchRole::Both => "both",
            BenchRole::Producer => "producer",
            BenchRole::Worker => "worker",
        },
        tasks: args.tasks,
        payload_bytes: args.payload_bytes,
        envelope_bytes,
        batch: args.batch,
        producers: args.producers,
        bulk: args.bulk,
        concurrency: args.concurrency,
        rate: args.rate,
        retention_seconds: args.retention.map(|d| d.as_secs_f64()),
        segments: segments.done,
        enqueue_seconds: enqueue_time.as_secs_f64(),
        enqueue_per_second: rate(args.tasks, enqueue_time),
        process_seconds: process_time.as_secs_f64(),
        process_per_second: rate(args.tasks, process_time),
        total_seconds: total.as_secs_f64(),
        end_to_end_per_second: rate(args.tasks, total),
        latency: latencies.summary(),
        peak_rss_kib: peak_rss_kib(),
        runtime_workers: tokio::runtime::Handle::current().metrics().num_workers(),
        redis: redis_cost,
    };
    drop(broker);
    drop(tempdir);
    if args.json {
        print_json(&results)
    } else {
        print_results(&results);
        Ok(())
    }
}

/// Enqueue `args.tasks` tasks in batches from `args.producers` concurrent
/// loops; returns the time it took.
async fn enqueue_all(
    client: &Client,
    args: &BenchArgs,
    filler: &str,
    pb: &indicatif::ProgressBar,
) -> CliResult<Duration> {
    let t = Instant::now();
    let n = args.producers.min(args.tasks);
    let per = args.tasks / n;
    let mut loops = tokio::task::JoinSet::new();
    for p in 0..n {
        // Sequence numbers: producer p takes [from, to).
        let from = (p * per) as u64;
        let to = if p + 1 == n {
            args.tasks
        } else {
            (p + 1) * per
        } as u64;
        let (client, filler, pb) = (client.clone(), filler.to_owned(), pb.clone());
        let (batch, rate, bulk) = (args.batch, args.rate as f64 / n as f64, args.bulk);
        let retention = args.retention;
        loops.spawn(async move {
            let task = |seq: u64| {
                sealq::task::encode_payload(&Payload { seq, data: &filler }).map(|payload| {
                    let mut options = EnqueueOptions::new().queue(QUEUE);
                    if let Some(r) = retention {
                        options = options.retention(r);
                    }
                    RawTask::new(KIND, payload, options)
                })
            };
            if bulk {
                // Payloads are made as the call takes them, batch by batch.
                let tasks = (from..to).map_while(|seq| task(seq).ok());
                let results = client.enqueue_bulk(tasks, batch).await;
                if results.len() as u64 != to - from {
                    return Err(CliError::runtime(msg("a benchmark payload did not encode")));
                }
                for r in results {
                    r?;
                }
                pb.inc(to - from);
                return Ok(());
            }
            let mut seq = from;
            while seq < to {
                let k = batch.min((to - seq) as usize);
                let mut tasks = Vec::with_capacity(k);
                for _ in 0..k {
                    tasks.push(task(seq)?);
                    seq += 1;
                }
                for r in client.enqueue_batch(tasks).await? {
                    r?;
                }
                if rate > 0.0 {
                    // Sleep until this loop's share is due at the requested rate.
                    let due = Duration::from_secs_f64((seq - from) as f64 / rate);
                    tokio::time::sleep_until((t + due).into()).await;
                }
                pb.inc(k as u64);
            }
            Ok::<(), CliError>(())
        });
    }
    while let Some(r) = loops.join_next().await {
        r.map_err(|e| CliError::runtime(msg(format!("an enqueue loop panicked: {e}"))))??;
    }
    Ok(t.elapsed())
}

/// Wait until the worker has completed `n` tasks, then shut it down: the
/// shutdown returns once every completion was written to the broker (and,
/// on SQLite with `synchronous=FULL`, is durable), so a process time taken
/// after this call counts until the last completion is durable, not until
/// the last handler returned.
async fn wait_done(
    handle: sealq::WorkerHandle,
    n: usize,
    pb: &indicatif::ProgressBar,
    limit: Duration,
    segments: &mut Segments,
) -> CliResult {
    wait_handlers(&handle, n, pb, limit, segments).await?;
    handle.shutdown().await?;
    Ok(())
}

/// Wait until the worker's handlers have completed `n` tasks.
async fn wait_handlers(
    handle: &sealq::WorkerHandle,
    n: usize,
    pb: &indicatif::ProgressBar,
    limit: Duration,
    segments: &mut Segments,
) -> CliResult {
    let deadline = Instant::now() + limit;
    loop {
        let r = handle.stats().report();
        pb.set_position(r.succeeded.min(n as u64));
        segments.observe(r.succeeded);
        if r.succeeded + r.archived >= n as u64 {
            if r.archived > 0 {
                return Err(CliError::runtime(msg(format!(
                    "{} benchmark tasks were archived instead of completing",
                    r.archived
                ))));
            }
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(CliError::runtime(msg(format!(
                "bench did not finish within {} s ({} of {n} tasks done)",
                limit.as_secs(),
                r.succeeded
            ))));
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// How long the run may take: [`TIME_LIMIT`], plus twice what `--rate`
/// needs for `--tasks`.
fn time_limit(args: &BenchArgs) -> Duration {
    match args.rate {
        0 => TIME_LIMIT,
        r => TIME_LIMIT + Duration::from_secs_f64(2.0 * args.tasks as f64 / r as f64),
    }
}

/// The processing rate per `--segment` completed tasks, sampled as the
/// completion count is polled (every 5 ms).
struct Segments {
    every: Option<u64>,
    /// Start of the current segment: completed tasks, time.
    from: (u64, Instant),
    done: Vec<Segment>,
}

impl Segments {
    fn new(every: Option<u64>) -> Self {
        Segments {
            every,
            from: (0, Instant::now()),
            done: Vec::new(),
        }
    }

    /// `completed` tasks are done now: close every segment that passed.
    fn observe(&mut self, completed: u64) {
        let Some(every) = self.every else { return };
        if completed == 0 {
            // Not started yet: segments count from the first completion.
            self.from.1 = Instant::now();
            return;
        }
        let end = self.from.0 + every;
        if completed >= end {
            let seconds = self.from.1.elapsed().as_secs_f64();
            let n = completed - self.from.0;
            self.done.push(Segment {
                through: completed,
                seconds,
                per_second: if seconds > 0.0 {
                    n as f64 / seconds
                } else {
                    0.0
                },
            });
            self.from = (completed, Instant::now());
        }
    }
}

/// `len` pseudo-random letters and digits (incompressible enough that the
/// size is honest, cheap enough not to be measured).
fn filler(len: usize) -> String {
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
    let mut state = 0x9E37_79B9_7F4A_7C15u64;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            ALPHABET[(state % ALPHABET.len() as u64) as usize] as char
        })
        .collect()
}

fn print_results(r: &Results) {
    crate::stdout::outln!("sealq bench ({} mode) on {}", r.mode, r.broker);
    crate::stdout::outln!(
        "  {} tasks, ~{} B payload ({} B sealed envelope), batch {}{}, {} producer loop(s), concurrency {}{}",
        r.tasks,
        r.payload_bytes,
        r.envelope_bytes,
        r.batch,
        if r.bulk { " (bulk)" } else { "" },
        r.producers,
        r.concurrency,
        if r.role == "both" {
            String::new()
        } else {
            format!(" ({} only)", r.role)
        }
    );
    if r.rate > 0 {
        crate::stdout::outln!("  producer capped at {} tasks/s", r.rate);
    }
    if let Some(s) = r.retention_seconds {
        crate::stdout::outln!("  completed tasks kept {s} s");
    }
    for s in &r.segments {
        crate::stdout::outln!(
            "  through {:>10}: {:>10.0} tasks/s  ({:.3} s)",
            s.through,
            s.per_second,
            s.seconds
        );
    }
    crate::stdout::outln!(
        "  enqueue      {:>10.0} tasks/s  ({:.3} s)",
        r.enqueue_per_second,
        r.enqueue_seconds
    );
    crate::stdout::outln!(
        "  process      {:>10.0} tasks/s  ({:.3} s{}, until the last completion was stored{})",
        r.process_per_second,
        r.process_seconds,
        if r.mode == "pipelined" {
            ", from the first enqueue"
        } else {
            ""
        },
        if r.broker.starts_with("sqlite") {
            ": committed, durable with synchronous=full"
        } else {
            ""
        }
    );
    crate::stdout::outln!(
        "  end-to-end   {:>10.0} tasks/s  ({:.3} s)",
        r.end_to_end_per_second,
        r.total_seconds
    );
    crate::stdout::outln!(
        "  enqueue-to-start latency: p50 {} ms, p90 {} ms, p99 {} ms, max {} ms{}",
        r.latency.p50_ms,
        r.latency.p90_ms,
        r.latency.p99_ms,
        r.latency.max_ms,
        if r.mode == "phased" {
            " (includes waiting for the enqueue phase)"
        } else {
            ""
        }
    );
    match r.peak_rss_kib {
        Some(k) => crate::stdout::outln!("  peak RSS     {:.1} MiB", k as f64 / 1024.0),
        None => crate::stdout::outln!("  peak RSS     unknown"),
    }
    if let Some(c) = &r.redis {
        crate::stdout::outln!(
            "  Redis: {:.3} commands/task from the client ({:.3} function calls), {:.2} inside \
             functions; {:.1} µs of Redis time per task",
            c.client_commands_per_task,
            c.function_calls_per_task,
            c.commands_in_functions_per_task,
            c.usec_per_task
        );
    }
}
