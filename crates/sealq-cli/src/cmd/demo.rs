//! `sealq demo`: sealq end to end in a few seconds, with nothing to set up.
//!
//! A throw-away keyring and SQLite file; a realistic mix of task types over
//! weighted queues, some delayed, some flaky, a few dead-lettered, one
//! refused by the payload policy; a worker processing them all; and, at the
//! end, proof that the store only ever held ciphertext.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use sealq::broker::{ListQuery, TaskRecord};
use sealq::envelope::{Aad, Purpose};
use sealq::reference::{ResolverStats, async_trait};
use sealq::subject_keys::RecordKey;
use sealq::{
    ArchiveReason, CacheOptions, Client, EnqueueOptions, Keyring, RawTask, Ref, ResolveError,
    Resolver, ResolverOptions, Task, TaskContext, TaskError, TaskState, Worker, WorkerReport,
};
use serde::{Deserialize, Serialize};

use super::Global;
use crate::args::DemoArgs;
use crate::broker_url::{self, Opened};
use crate::error::{CliError, CliResult, context, msg};
use crate::output::{Latencies, LatencySummary, hex_bytes, print_json, progress_bar, rate};

/// The e-mail domain of the demo's customers. It is in every `emails.welcome`
/// payload (and in the in-memory customer table), and must never be found in
/// the store's files.
const MARKER: &str = "customers.sealq-demo.example";

/// Queues and weights: `critical` is asked first about 6 times in 10.
const QUEUES: [(&str, u32); 3] = [("critical", 6), ("default", 3), ("low", 1)];

/// Worker concurrency.
const CONCURRENCY: usize = 64;

/// How long the demo may take before it gives up.
const TIME_LIMIT: Duration = Duration::from_secs(120);

/// Send a welcome e-mail. Carries the address: the kind of personal data a
/// broker must never see in the clear.
#[derive(Debug, Serialize, Deserialize)]
struct WelcomeEmail {
    user_id: u64,
    to: String,
    locale: String,
}

impl Task for WelcomeEmail {
    const KIND: &'static str = "emails.welcome";
    fn options() -> EnqueueOptions {
        EnqueueOptions::new().queue("critical")
    }
}

/// Render an invoice. Carries a typed reference, not customer data: the
/// handler resolves the customer through the worker's [`CustomerDb`]
/// resolver (cached, single-flight, timeout). On the wire `customer` is just
/// the id.
#[derive(Debug, Serialize, Deserialize)]
struct RenderInvoice {
    invoice_id: String,
    customer: Ref<Customer>,
}

impl Task for RenderInvoice {
    const KIND: &'static str = "invoices.render";
    fn options() -> EnqueueOptions {
        EnqueueOptions::new().queue("default")
    }
}

/// Resize an uploaded image.
#[derive(Debug, Serialize, Deserialize)]
struct ResizeImage {
    image_id: u64,
    width: u32,
    height: u32,
}

impl Task for ResizeImage {
    const KIND: &'static str = "images.resize";
    fn options() -> EnqueueOptions {
        EnqueueOptions::new().queue("low")
    }
}

/// Deliver a webhook. Endpoint `ep_gone` always answers 410: those tasks
/// exhaust their single retry and end archived.
#[derive(Debug, Serialize, Deserialize)]
struct DeliverWebhook {
    endpoint_id: String,
    event_id: u64,
}

impl Task for DeliverWebhook {
    const KIND: &'static str = "webhooks.deliver";
    fn options() -> EnqueueOptions {
        EnqueueOptions::new().queue("default")
    }
}

/// A customer row, as the invoice handler would load it.
#[derive(Debug, Clone)]
struct Customer {
    name: String,
    email: String,
}

/// The customer "database": an in-memory table behind a simulated 2 ms
/// round trip. Invoices of a deleted customer resolve to `NotFound` and are
/// archived as `reference_missing`.
struct CustomerDb {
    table: Arc<HashMap<String, Customer>>,
}

#[async_trait]
impl Resolver<Customer> for CustomerDb {
    async fn resolve(&self, id: &str) -> Result<Customer, ResolveError> {
        work(2).await;
        self.table.get(id).cloned().ok_or(ResolveError::NotFound)
    }
}

/// Id of a customer that was deleted after its invoices were queued.
const DELETED_CUSTOMER: &str = "cus_deleted";

/// What the demo shows at the end.
#[derive(Debug, Serialize)]
struct Summary {
    broker: String,
    throwaway_store: bool,
    tasks_requested: usize,
    tasks_enqueued: usize,
    delayed: usize,
    rejected_by_policy: usize,
    policy_message: Option<String>,
    enqueue_seconds: f64,
    attempts: u64,
    succeeded: u64,
    retried: u64,
    archived: u64,
    archived_by_reason: HashMap<String, u64>,
    elapsed_seconds: f64,
    throughput_per_second: f64,
    latency: LatencySummary,
    resolvers: Vec<ResolverStats>,
    store: StoreProof,
}

/// Evidence that what the store holds is ciphertext.
#[derive(Debug, Serialize)]
struct StoreProof {
    sample_task: Option<String>,
    sample_type: Option<String>,
    envelope_bytes: usize,
    key_id: Option<String>,
    first_bytes_hex: String,
    opens_with_keyring: bool,
    plaintext_contains_marker: bool,
    marker: &'static str,
    files_scanned: Vec<(String, u64)>,
    rows_scanned: u64,
    tables_scanned: usize,
    plaintext_found_in_store: bool,
}

/// Run the demo.
pub(crate) async fn run(global: &Global, args: DemoArgs) -> CliResult {
    if args.tasks == 0 {
        return Err(CliError::usage(msg("--tasks must be at least 1")));
    }
    let started = Instant::now();
    // The store: a fresh temp file, unless --broker was typed.
    let tempdir = tempfile::Builder::new()
        .prefix("sealq-demo-")
        .tempdir()
        .map_err(|e| CliError::runtime(context("cannot create a temporary directory", e)))?;
    let url = match (&global.broker, global.broker_on_command_line) {
        (Some(url), true) => url.clone(),
        _ => format!(
            "sqlite://{}?synchronous=normal",
            tempdir.path().join("demo.db").display()
        ),
    };
    let throwaway = !global.broker_on_command_line;
    let opened: Opened = broker_url::open(&url)?;
    let broker = opened.broker.clone();
    let sqlite_path = opened.conn.sqlite_path().map(std::path::Path::to_path_buf);
    let existing: u64 = broker
        .stats()
        .await?
        .iter()
        .map(|q| TaskState::ALL.iter().map(|s| q.get(*s)).sum::<u64>())
        .sum();
    if existing > 0 {
        return Err(CliError::usage(msg(format!(
            "the demo needs an empty store, and {} holds {existing} tasks; omit --broker to use a throw-away file",
            broker.describe()
        ))));
    }

    let keyring = Arc::new(Keyring::generate());
    let customers = Arc::new(customer_table());
    let latencies = Arc::new(Latencies::with_capacity(args.tasks + args.tasks / 10));
    // The audit log: producer and worker each keep a chain, as two processes would.
    let home = opened.audit_home();
    let producer_audit = super::audit::start(home, args.audit, &keyring)?;
    let worker_audit = super::audit::start(home, args.audit, &keyring)?;

    let worker = build_worker(
        broker.clone(),
        keyring.clone(),
        customers,
        latencies.clone(),
        worker_audit.clone(),
    )?;
    let handle = worker.spawn();

    // The task the policy refuses: a card number in a payload.
    // The throw-away keyring leaves no check values in the broker.
    let mut client = Client::builder(broker.clone(), keyring.clone())
        .producer("sealq-demo")
        .check_keyring(false);
    if let Some(a) = &producer_audit {
        client = client.audit(a.clone());
    }
    let client = client.build();
    let card = serde_json::json!({
        "order_id": "ord_1001",
        "card": { "number": "4242 4242 4242 4242", "exp": "12/30" },
    });
    let card_task = RawTask::from_json(
        "payments.charge",
        &card,
        EnqueueOptions::new().queue("default"),
    )?;
    let (policy_message, card_accepted) = match client.enqueue_raw(card_task).await {
        Err(e @ (sealq::Error::PolicyViolation { .. } | sealq::Error::PayloadTooLarge { .. })) => {
            (Some(e.to_string()), false)
        }
        Err(e) => return Err(e.into()),
        Ok(_) => (None, true),
    };

    // The mix.
    let pb = progress_bar(args.tasks as u64, args.json);
    pb.set_message("enqueueing");
    let enqueue_started = Instant::now();
    let gone = (args.tasks / 500).clamp(1, 10);
    let mut delayed = 0usize;
    let mut enqueued = usize::from(card_accepted);
    let mut batch = Vec::with_capacity(500);
    for i in 0..args.tasks {
        let (task, was_delayed) = demo_task(i, gone)?;
        delayed += usize::from(was_delayed);
        batch.push(task);
        if batch.len() == 500 || i + 1 == args.tasks {
            for r in client.enqueue_batch(std::mem::take(&mut batch)).await? {
                r?;
                enqueued += 1;
            }
        }
    }
    let enqueue_time = enqueue_started.elapsed();
    pb.set_length(enqueued as u64);
    pb.set_message("");

    // Wait until every task reached a final state.
    let deadline = started + TIME_LIMIT;
    loop {
        let r = handle.stats().report();
        let done = r.succeeded + r.archived;
        pb.set_position(done.min(enqueued as u64));
        pb.set_message(format!("retries {}, archived {}", r.retried, r.archived));
        if done >= enqueued as u64 && unfinished(&*broker).await? == 0 {
            break;
        }
        if Instant::now() > deadline {
            pb.abandon();
            let _ = handle.shutdown().await;
            return Err(CliError::runtime(msg(format!(
                "the demo did not finish within {} s ({done} of {enqueued} tasks done)",
                TIME_LIMIT.as_secs()
            ))));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let elapsed = enqueue_started.elapsed();
    pb.finish_and_clear();
    let report: WorkerReport = handle.shutdown().await?;
    super::audit::finish(producer_audit).await?;
    super::audit::finish(worker_audit).await?;
    let audit = super::audit::verify_broker_log(home, args.audit, &keyring).await?;

    let archived_by_reason = archive_reasons(&*broker).await?;
    let store = prove_ciphertext(&*broker, &keyring, sqlite_path.as_deref()).await?;
    let summary = Summary {
        broker: broker.describe(),
        throwaway_store: throwaway,
        tasks_requested: args.tasks,
        tasks_enqueued: enqueued,
        delayed,
        rejected_by_policy: usize::from(policy_message.is_some()),
        policy_message,
        enqueue_seconds: enqueue_time.as_secs_f64(),
        attempts: report.fetched,
        succeeded: report.succeeded,
        retried: report.retried,
        archived: report.archived,
        archived_by_reason,
        elapsed_seconds: elapsed.as_secs_f64(),
        throughput_per_second: rate(enqueued, elapsed),
        latency: latencies.summary(),
        resolvers: worker.resolvers().stats(),
        store,
    };
    drop(broker);
    if args.json {
        print_json(&summary)?;
    } else {
        print_summary(&summary);
    }
    if let Some(report) = &audit {
        if !args.json {
            crate::stdout::outln!();
            if report.is_ok() {
                crate::stdout::outln!("{}", super::audit::summary_line(report));
            } else {
                for f in &report.faults {
                    crate::stdout::outln!("audit: FAULT {}", crate::output::safe(&f.to_string()));
                }
            }
        }
        if !report.is_ok() {
            return Err(CliError::runtime(msg(
                "the demo's audit log did not verify: this is a bug, please report it",
            )));
        }
    }
    if summary.store.plaintext_found_in_store {
        return Err(CliError::runtime(msg(
            "plaintext was found in the store: this is a bug, please report it",
        )));
    }
    Ok(())
}

/// Task `i` of the mix: 40 % welcome e-mails, 25 % invoices, 25 % image
/// resizes, 10 % webhooks; every tenth delayed by 1-3 s. The first `gone`
/// webhooks go to an endpoint that always fails (max 1 retry → archived).
fn demo_task(i: usize, gone: usize) -> CliResult<(RawTask, bool)> {
    let n = i as u64;
    let delayed = i % 10 == 3;
    let mut opts = EnqueueOptions::new();
    if delayed {
        opts = opts.delay(Duration::from_millis(1_000 + (n * 337) % 2_000));
    }
    let task = match i % 20 {
        0..8 => {
            let user_id = 10_000 + n;
            RawTask::typed(
                &WelcomeEmail {
                    user_id,
                    to: format!("user{user_id}@{MARKER}"),
                    locale: ["en", "de", "fr", "ja"][i % 4].to_owned(),
                },
                opts.subject(format!("user-{user_id}")),
            )?
        }
        8..13 => RawTask::typed(
            &RenderInvoice {
                invoice_id: format!("inv_{:06}", n),
                // One invoice in 80 belongs to a deleted customer.
                customer: Ref::new(if i % 400 == 8 {
                    DELETED_CUSTOMER.to_owned()
                } else {
                    format!("cus_{:04}", n % 500)
                }),
            },
            opts,
        )?,
        13..18 => RawTask::typed(
            &ResizeImage {
                image_id: 900_000 + n,
                width: [320, 640, 1280][i % 3],
                height: [240, 480, 960][i % 3],
            },
            opts,
        )?,
        _ => {
            // Two webhooks in every 20 tasks: number them 0, 1, 2, ...
            let webhook_no = (i / 20) * 2 + (i % 20 - 18);
            let failing = webhook_no < gone;
            if failing {
                opts = opts.max_retries(1);
            }
            RawTask::typed(
                &DeliverWebhook {
                    endpoint_id: if failing {
                        "ep_gone".to_owned()
                    } else {
                        format!("ep_{:03}", n % 50)
                    },
                    event_id: n,
                },
                opts,
            )?
        }
    };
    Ok((task, delayed))
}

/// The in-memory stand-in for the customer database.
fn customer_table() -> HashMap<String, Customer> {
    (0..500)
        .map(|i| {
            (
                format!("cus_{i:04}"),
                Customer {
                    name: format!("Customer {i}"),
                    email: format!("billing{i}@{MARKER}"),
                },
            )
        })
        .collect()
}

/// About 5 % of tasks fail their first attempt (chosen by a random byte of
/// the task id, so a retry of the same task succeeds).
fn flaky_first_attempt(ctx: &TaskContext) -> bool {
    ctx.attempt() == 1 && ctx.id().as_bytes()[15].is_multiple_of(20)
}

fn flaky_error() -> TaskError {
    TaskError::retry_in(
        Duration::from_millis(200),
        "simulated transient failure (connection reset)",
    )
}

/// Simulated work.
async fn work(ms: u64) {
    tokio::time::sleep(Duration::from_millis(ms)).await;
}

fn build_worker(
    broker: Arc<dyn sealq::Broker>,
    keyring: Arc<Keyring>,
    customers: Arc<HashMap<String, Customer>>,
    latencies: Arc<Latencies>,
    audit: Option<sealq::Auditor>,
) -> CliResult<Worker> {
    let (l1, l2, l3, l4) = (
        latencies.clone(),
        latencies.clone(),
        latencies.clone(),
        latencies,
    );
    let mut builder = Worker::builder(broker, keyring).check_keyring(false);
    if let Some(a) = audit {
        builder = builder.audit(a);
    }
    let worker = builder
        .id("sealq-demo-worker")
        .queues(QUEUES)
        .concurrency(CONCURRENCY)
        .maintenance_interval(Duration::from_millis(100))
        .shutdown_timeout(Duration::from_secs(5))
        .resolver::<Customer, _>(
            CustomerDb { table: customers },
            ResolverOptions::default()
                .timeout(Duration::from_secs(2))
                .cache(CacheOptions::new(Duration::from_secs(60), 1_000)),
        )
        .handle(move |task: WelcomeEmail, ctx: TaskContext| {
            let l = l1.clone();
            async move {
                l.record_since(ctx.run_at_ms());
                if flaky_first_attempt(&ctx) {
                    return Err(flaky_error());
                }
                // "Send" the e-mail.
                std::hint::black_box((&task.to, &task.locale, task.user_id));
                work(2).await;
                Ok(())
            }
        })
        .handle(move |task: RenderInvoice, ctx: TaskContext| {
            let l = l2.clone();
            async move {
                l.record_since(ctx.run_at_ms());
                if flaky_first_attempt(&ctx) {
                    return Err(flaky_error());
                }
                // Resolve the reference inside the handler: the customer's
                // data never travelled through the queue. Not found archives
                // the task as `reference_missing`; a slow database retries it.
                let customer = ctx.resolve(&task.customer).await?;
                std::hint::black_box((&customer.name, &customer.email, &task.invoice_id));
                work(5).await;
                Ok(())
            }
        })
        .handle(move |task: ResizeImage, ctx: TaskContext| {
            let l = l3.clone();
            async move {
                l.record_since(ctx.run_at_ms());
                if flaky_first_attempt(&ctx) {
                    return Err(flaky_error());
                }
                std::hint::black_box((task.image_id, task.width, task.height));
                work(8).await;
                Ok(())
            }
        })
        .handle(move |task: DeliverWebhook, ctx: TaskContext| {
            let l = l4.clone();
            async move {
                l.record_since(ctx.run_at_ms());
                work(3).await;
                if task.endpoint_id == "ep_gone" {
                    return Err(TaskError::retry_in(
                        Duration::from_millis(200),
                        "endpoint answered 410 Gone",
                    ));
                }
                if flaky_first_attempt(&ctx) {
                    return Err(flaky_error());
                }
                std::hint::black_box(task.event_id);
                Ok(())
            }
        })
        .build()?;
    Ok(worker)
}

/// Tasks not yet in a final state, over all queues.
async fn unfinished(broker: &dyn sealq::Broker) -> CliResult<u64> {
    Ok(broker
        .stats()
        .await?
        .iter()
        .map(|q| q.scheduled + q.pending + q.active + q.retry)
        .sum())
}

/// Archived tasks counted by reason.
async fn archive_reasons(broker: &dyn sealq::Broker) -> CliResult<HashMap<String, u64>> {
    let mut out = HashMap::new();
    let mut after = None;
    loop {
        let page = broker
            .list(&ListQuery {
                state: Some(TaskState::Archived),
                after,
                limit: 500,
                ..ListQuery::default()
            })
            .await?;
        for r in &page {
            let reason = r
                .archive_reason
                .as_ref()
                .map_or("unknown", ArchiveReason::as_str)
                .to_owned();
            *out.entry(reason).or_insert(0) += 1;
        }
        match page.last() {
            Some(last) if page.len() == 500 => after = Some(last.id),
            _ => return Ok(out),
        }
    }
}

/// Take one stored envelope of a task whose plaintext holds [`MARKER`],
/// show it, check it opens to a payload that contains the marker, and then
/// search every byte of the database files (and every value of every table)
/// for the marker.
async fn prove_ciphertext(
    broker: &dyn sealq::Broker,
    keyring: &Keyring,
    db: Option<&Path>,
) -> CliResult<StoreProof> {
    let mut sample: Option<TaskRecord> = None;
    for state in [
        TaskState::Completed,
        TaskState::Pending,
        TaskState::Scheduled,
    ] {
        let page = broker
            .list(&ListQuery {
                queue: Some("critical".into()),
                state: Some(state),
                limit: 1,
                ..ListQuery::default()
            })
            .await?;
        if let Some(r) = page.into_iter().next() {
            sample = Some(r);
            break;
        }
    }
    let mut proof = StoreProof {
        sample_task: sample.as_ref().map(|r| r.id.to_string()),
        sample_type: sample.as_ref().map(|r| r.kind.clone()),
        envelope_bytes: sample.as_ref().map_or(0, |r| r.envelope.len()),
        key_id: None,
        first_bytes_hex: String::new(),
        opens_with_keyring: false,
        plaintext_contains_marker: false,
        marker: MARKER,
        files_scanned: Vec::new(),
        rows_scanned: 0,
        tables_scanned: 0,
        plaintext_found_in_store: false,
    };
    if let Some(r) = &sample {
        proof.key_id = sealq::envelope::parse_header(&r.envelope)
            .ok()
            .map(|h| h.key_id.to_owned());
        proof.first_bytes_hex = hex_bytes(&r.envelope[..r.envelope.len().min(24)]);
        let aad = Aad::for_record(r, Purpose::Payload);
        // A task with a data subject is sealed with the subject's data key:
        // the library says which key the record opens with.
        let opened = match broker.subject_key_store() {
            Some(store) => {
                let keys = sealq::subject_keys::SubjectKeys::new(store, keyring);
                match keys.key_for_record(r).await {
                    Ok(RecordKey::Keyring) => keyring.open(&aad, &r.envelope).ok(),
                    Ok(RecordKey::Subject(key)) => key.open(&aad, &r.envelope).ok(),
                    Ok(RecordKey::Erased) | Err(_) => None,
                }
            }
            // No subject key store: nothing here is sealed with a data key.
            None => keyring.open(&aad, &r.envelope).ok(),
        };
        if let Some(plain) = opened {
            proof.opens_with_keyring = true;
            proof.plaintext_contains_marker = contains(&plain, MARKER.as_bytes());
        }
    }
    if let Some(db) = db {
        for path in sqlite_files(db) {
            let bytes = match std::fs::read(&path) {
                Ok(b) => b,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => {
                    return Err(CliError::runtime(context(
                        format!("cannot read {}", path.display()),
                        e,
                    )));
                }
            };
            proof.plaintext_found_in_store |= contains(&bytes, MARKER.as_bytes());
            proof
                .files_scanned
                .push((path.display().to_string(), bytes.len() as u64));
        }
        let (tables, rows, found) = scan_tables(db)?;
        proof.tables_scanned = tables;
        proof.rows_scanned = rows;
        proof.plaintext_found_in_store |= found;
    }
    Ok(proof)
}

/// The database file and its WAL and shared-memory companions.
fn sqlite_files(db: &Path) -> Vec<PathBuf> {
    let mut out = vec![db.to_path_buf()];
    for suffix in ["-wal", "-shm"] {
        let mut s = db.as_os_str().to_owned();
        s.push(suffix);
        out.push(PathBuf::from(s));
    }
    out
}

/// Open the database read-only and look at every text and blob value of
/// every table: `(tables, rows, marker found)`.
fn scan_tables(db: &Path) -> CliResult<(usize, u64, bool)> {
    use rusqlite::{OpenFlags, types::ValueRef};
    let fail = |what: &str, e: rusqlite::Error| CliError::runtime(context(what.to_owned(), e));
    let conn = rusqlite::Connection::open_with_flags(
        db,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(|e| fail("cannot open the demo database read-only", e))?;
    let tables: Vec<String> = conn
        .prepare("SELECT name FROM sqlite_master WHERE type = 'table'")
        .and_then(|mut st| {
            st.query_map([], |row| row.get::<_, String>(0))?
                .collect::<Result<_, _>>()
        })
        .map_err(|e| fail("cannot list the database's tables", e))?;
    let marker = MARKER.as_bytes();
    let (mut rows, mut found) = (0u64, false);
    for table in &tables {
        let sql = format!("SELECT * FROM \"{}\"", table.replace('"', "\"\""));
        let mut st = conn
            .prepare(&sql)
            .map_err(|e| fail("cannot read a table", e))?;
        let columns = st.column_count();
        let mut q = st.query([]).map_err(|e| fail("cannot read a table", e))?;
        while let Some(row) = q.next().map_err(|e| fail("cannot read a row", e))? {
            rows += 1;
            for c in 0..columns {
                if let Ok(ValueRef::Text(b) | ValueRef::Blob(b)) = row.get_ref(c) {
                    found |= contains(b, marker);
                }
            }
        }
    }
    Ok((tables.len(), rows, found))
}

/// Whether `needle` occurs in `haystack`.
fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && haystack.windows(needle.len()).any(|w| w == needle)
}

fn print_summary(s: &Summary) {
    let secs = |x: f64| format!("{x:.2} s");
    crate::stdout::outln!(
        "sealq demo: {} tasks, 4 types, queues critical:6 default:3 low:1, {CONCURRENCY} handlers",
        s.tasks_requested
    );
    crate::stdout::outln!(
        "broker:     {}{}",
        s.broker,
        if s.throwaway_store {
            " (throw-away)"
        } else {
            ""
        }
    );
    crate::stdout::outln!();
    match &s.policy_message {
        Some(m) => crate::stdout::outln!(
            "policy:     refused a `payments.charge` holding a card number:\n            {m}"
        ),
        None => crate::stdout::outln!(
            "policy:     the card-number payload was NOT refused (payload scanner missing?)"
        ),
    }
    crate::stdout::outln!(
        "enqueued:   {} tasks in {} ({:.0}/s), {} of them delayed 1-3 s",
        s.tasks_enqueued,
        secs(s.enqueue_seconds),
        rate(s.tasks_enqueued, Duration::from_secs_f64(s.enqueue_seconds)),
        s.delayed
    );
    crate::stdout::outln!(
        "processed:  {} tasks in {} attempts",
        s.succeeded + s.archived,
        s.attempts
    );
    crate::stdout::outln!("  succeeded  {}", s.succeeded);
    crate::stdout::outln!(
        "  retried    {}  (flaky first attempts, failing webhooks)",
        s.retried
    );
    let mut reasons: Vec<String> = s
        .archived_by_reason
        .iter()
        .map(|(r, n)| format!("{r}: {n}"))
        .collect();
    reasons.sort();
    crate::stdout::outln!("  archived   {}  ({})", s.archived, reasons.join(", "));
    crate::stdout::outln!(
        "  rejected   {}  (by the payload policy, never enqueued)",
        s.rejected_by_policy
    );
    crate::stdout::outln!(
        "elapsed:    {}  ({:.0} tasks/s, including the 1-3 s delays)",
        secs(s.elapsed_seconds),
        s.throughput_per_second
    );
    crate::stdout::outln!(
        "latency:    due-to-start p50 {} ms, p99 {} ms, max {} ms ({} starts;\n            \
         the tasks were enqueued in one burst, so this includes queueing behind it)",
        s.latency.p50_ms,
        s.latency.p99_ms,
        s.latency.max_ms,
        s.latency.samples
    );
    for r in &s.resolvers {
        crate::stdout::outln!(
            "resolver:   Ref<{}>: {} resolves, {} fetches (cache hit ratio {:.0} %, {} joined a \
             running fetch)\n            errors: {}; fetch latency p50 {:.1} ms, p99 {:.1} ms",
            r.type_name,
            r.resolves,
            r.fetches,
            r.hit_ratio().unwrap_or(0.0) * 100.0,
            r.coalesced,
            if r.errors.is_empty() {
                "none".to_owned()
            } else {
                r.errors
                    .iter()
                    .map(|(c, n)| format!("{c} {n}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            },
            r.fetch_p50_ms,
            r.fetch_p99_ms
        );
    }
    crate::stdout::outln!();
    let p = &s.store;
    crate::stdout::outln!("stored bytes are ciphertext:");
    if let (Some(id), Some(kind)) = (&p.sample_task, &p.sample_type) {
        crate::stdout::outln!(
            "  envelope of {} task {id}: {} bytes, key id {}",
            crate::output::safe(kind),
            p.envelope_bytes,
            crate::output::safe(p.key_id.as_deref().unwrap_or("?"))
        );
        crate::stdout::outln!("  first bytes: {} …", p.first_bytes_hex);
        crate::stdout::outln!(
            "  opens with the demo keyring (or the subject's data key): {}; its plaintext contains \"{}\": {}",
            yes_no(p.opens_with_keyring),
            p.marker,
            yes_no(p.plaintext_contains_marker)
        );
    }
    if !p.files_scanned.is_empty() {
        let files: Vec<String> = p
            .files_scanned
            .iter()
            .map(|(f, n)| format!("{} ({n} bytes)", file_name(f)))
            .collect();
        crate::stdout::outln!("  searched for \"{}\" in {}", p.marker, files.join(", "));
        crate::stdout::outln!(
            "  and in every value of {} rows in {} tables (read-only)",
            p.rows_scanned,
            p.tables_scanned
        );
        crate::stdout::outln!(
            "  plaintext found in store: {}",
            yes_no(p.plaintext_found_in_store)
        );
    } else {
        crate::stdout::outln!("  (not an SQLite file: byte search skipped)");
    }
}

fn yes_no(b: bool) -> &'static str {
    if b { "yes" } else { "no" }
}

fn file_name(path: &str) -> String {
    Path::new(path)
        .file_name()
        .map_or_else(|| path.to_owned(), |f| f.to_string_lossy().into_owned())
}
