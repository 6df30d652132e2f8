//! The [`Auditor`]: records events off the hot path, chains, batches,
//! appends and checkpoints them in a background task.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, oneshot};
use tracing::warn;

use crate::error::Error;
use crate::model::audit_event::{AuditEvent, StartedEntry};
use crate::model::clock::wall_clock_ms;
use crate::model::id::default_process_id;
use crate::seal::audit_chain::{
    AuditKeys, AuditRecord, Checkpoint, GENESIS, RecordMac, canonical_into, chain_hash,
};
use crate::seal::keyring::Keyring;
use crate::store::audit::{AuditError, AuditSink};

/// Default: a checkpoint after this many records of one writer.
pub const DEFAULT_CHECKPOINT_EVERY: u64 = 1000;

/// Default: a checkpoint at least this often while records are written.
pub const DEFAULT_CHECKPOINT_INTERVAL: Duration = Duration::from_secs(5);

/// Most messages taken from the queue per batch.
const MAX_BATCH: usize = 8192;

enum Msg {
    Record { time_ms: i64, event: AuditEvent },
    Flush(oneshot::Sender<Result<(), String>>),
    Close(oneshot::Sender<Result<(), String>>),
}

/// Counters of one auditor.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct AuditStats {
    /// Records appended to the sink.
    pub records: u64,
    /// Checkpoints appended.
    pub checkpoints: u64,
    /// Events recorded after `close` (not written).
    pub dropped: u64,
    /// Appends that failed (and were retried).
    pub failed_appends: u64,
}

#[derive(Default)]
struct Counters {
    records: AtomicU64,
    checkpoints: AtomicU64,
    dropped: AtomicU64,
    failed: AtomicU64,
    /// Records accepted and not yet appended (or skipped): what the
    /// auditor holds in memory.
    queued: AtomicU64,
    /// Signalled whenever `queued` falls.
    room: tokio::sync::Notify,
}

/// How many records an auditor holds before [`Auditor::wait_for_room`]
/// makes callers wait: about 8 MiB of records, a tenth of a second of a
/// busy worker's events. Beyond it the work that produces events waits for
/// the log instead of the log falling behind in memory without bound.
pub(crate) const MAX_QUEUED: u64 = 16_384;

struct Shared {
    tx: mpsc::UnboundedSender<Msg>,
    writer: String,
    sink: Arc<dyn AuditSink>,
    keys: Arc<AuditKeys>,
    closed: AtomicBool,
    counters: Arc<Counters>,
    task: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

/// Writes the audit log of one process (one writer, one chain).
///
/// A cheap handle: clone it into the [`crate::Client`]
/// ([`crate::ClientBuilder::audit`]) and the [`crate::Worker`]
/// ([`crate::WorkerBuilder::audit`]). [`Auditor::record`] only queues the
/// event; a background task numbers, chains and MACs the queued records,
/// appends everything queued as one batch, and writes a signed checkpoint
/// every [`AuditorBuilder::checkpoint_every`] records, every
/// [`AuditorBuilder::checkpoint_interval`] and at [`Auditor::close`].
///
/// Call [`Auditor::close`] before the process exits: records still queued
/// when the runtime stops are lost (verification then reports an
/// uncheckpointed tail, not a fault, unless it is longer than the window).
#[derive(Clone)]
pub struct Auditor {
    inner: Arc<Shared>,
}

impl std::fmt::Debug for Auditor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Auditor")
            .field("writer", &self.inner.writer)
            .finish_non_exhaustive()
    }
}

/// Builds an [`Auditor`].
#[derive(Debug)]
pub struct AuditorBuilder {
    sink: Arc<dyn AuditSink>,
    keys: Result<AuditKeys, Error>,
    writer: Option<String>,
    every: u64,
    interval: Duration,
    batch_interval: Duration,
}

impl AuditorBuilder {
    /// After each append, wait this long before the next one so more
    /// records share one append (default 0: append as soon as the previous
    /// append is done, which already batches everything queued meanwhile).
    /// `flush` and `close` wait for it too.
    pub fn batch_interval(mut self, t: Duration) -> Self {
        self.batch_interval = t;
        self
    }

    /// The writer id (default `host:pid:xxxxxxxx`, random suffix). Must be
    /// unique per process run: two processes writing one chain id would
    /// break each other's chain.
    pub fn writer(mut self, id: impl Into<String>) -> Self {
        self.writer = Some(id.into());
        self
    }

    /// Checkpoint after this many records (default 1000, at least 1).
    /// Verification treats more uncheckpointed records than this as a fault.
    pub fn checkpoint_every(mut self, n: u64) -> Self {
        self.every = n.max(1);
        self
    }

    /// Checkpoint at least this often while records arrive (default 5 s).
    pub fn checkpoint_interval(mut self, t: Duration) -> Self {
        self.interval = t.max(Duration::from_millis(10));
        self
    }

    /// Start the background task. Needs a tokio runtime. Fails when the
    /// keyring has no `audit_signing_key`.
    pub fn start(self) -> Result<Auditor, Error> {
        let keys = Arc::new(self.keys?);
        let writer = self.writer.unwrap_or_else(default_writer_id);
        if writer.is_empty() {
            return Err(Error::InvalidArgument {
                what: "audit writer id",
                reason: "must not be empty".into(),
            });
        }
        let (tx, rx) = mpsc::unbounded_channel();
        let counters = Arc::new(Counters::default());
        let state = Chain {
            sink: self.sink.clone(),
            mac: keys.mac.as_deref().map(RecordMac::new),
            keys: keys.clone(),
            writer: writer.clone(),
            every: self.every,
            interval: self.interval,
            batch_interval: self.batch_interval,
            counters: counters.clone(),
            next_seq: 0,
            prev_mac: GENESIS,
            prev_hash: GENESIS,
            pending: Vec::new(),
            pending_hashes: Vec::new(),
            pending_events: 0,
            scratch: Vec::with_capacity(256),
            appended: None,
            checkpointed_seq: None,
            since_checkpoint: 0,
            last_checkpoint: Instant::now(),
            failures: 0,
            genesis_done: false,
        };
        let task = tokio::spawn(state.run(rx));
        Ok(Auditor {
            inner: Arc::new(Shared {
                tx,
                writer,
                sink: self.sink,
                keys,
                closed: AtomicBool::new(false),
                counters,
                task: Mutex::new(Some(task)),
            }),
        })
    }
}

/// `host:pid:xxxxxxxx`.
fn default_writer_id() -> String {
    format!("{}:{:08x}", default_process_id(), rand::random::<u32>())
}

impl Auditor {
    /// Start building an auditor writing to `sink` with the keyring's audit
    /// keys (MAC key derived with label `sealq-audit-mac-v1`, checkpoint
    /// signing key `audit_signing_key`).
    pub fn builder(sink: Arc<dyn AuditSink>, keyring: &Keyring) -> AuditorBuilder {
        AuditorBuilder {
            sink,
            keys: AuditKeys::from_keyring(keyring),
            writer: None,
            every: DEFAULT_CHECKPOINT_EVERY,
            interval: DEFAULT_CHECKPOINT_INTERVAL,
            batch_interval: Duration::ZERO,
        }
    }

    /// An auditor with default options.
    pub fn start(sink: Arc<dyn AuditSink>, keyring: &Keyring) -> Result<Self, Error> {
        Self::builder(sink, keyring).start()
    }

    /// This auditor's writer id.
    pub fn writer(&self) -> &str {
        &self.inner.writer
    }

    /// Where this auditor appends.
    pub fn sink(&self) -> &Arc<dyn AuditSink> {
        &self.inner.sink
    }

    /// The keys this auditor chains and signs with (for a backend that
    /// writes a complete chain of its own inside a transaction:
    /// [`crate::audit::standalone_chain`]).
    pub fn keys(&self) -> &Arc<AuditKeys> {
        &self.inner.keys
    }

    /// Queue an event. Never blocks and never fails: after [`Auditor::close`]
    /// the event is counted as dropped.
    pub fn record(&self, event: AuditEvent) {
        self.record_at(wall_clock_ms(), event);
    }

    /// Queue an event that happened at `time_ms` (Unix ms), e.g. a task's
    /// enqueue, recorded once the broker confirmed it but dated when it was
    /// sealed, so per-task histories sort in lifecycle order across writers.
    pub fn record_at(&self, time_ms: i64, event: AuditEvent) {
        let c = &self.inner.counters;
        if self.inner.closed.load(Ordering::Relaxed) {
            c.dropped.fetch_add(1, Ordering::Relaxed);
            return;
        }
        c.queued.fetch_add(1, Ordering::Relaxed);
        if self.inner.tx.send(Msg::Record { time_ms, event }).is_err() {
            c.queued.fetch_sub(1, Ordering::Relaxed);
            c.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Records accepted and not yet appended.
    pub fn queued(&self) -> u64 {
        self.inner.counters.queued.load(Ordering::Relaxed)
    }

    /// Wait until the auditor holds fewer than `limit` records not yet
    /// appended. Workers and clients call it before taking on more work, so
    /// a log that cannot keep up (a slow or failing sink) slows them down
    /// instead of filling memory. Returns at once on a closed auditor.
    pub(crate) async fn wait_for_room_below(&self, limit: u64) {
        let c = &self.inner.counters;
        loop {
            let room = c.room.notified();
            tokio::pin!(room);
            room.as_mut().enable();
            if c.queued.load(Ordering::Relaxed) < limit || self.inner.closed.load(Ordering::Relaxed)
            {
                return;
            }
            room.await;
        }
    }

    /// [`Auditor::wait_for_room_below`] at [`MAX_QUEUED`].
    pub(crate) async fn wait_for_room(&self) {
        self.wait_for_room_below(MAX_QUEUED).await;
    }

    /// Wait until everything recorded so far is appended and covered by a
    /// checkpoint.
    pub async fn flush(&self) -> Result<(), AuditError> {
        let (tx, rx) = oneshot::channel();
        if self.inner.tx.send(Msg::Flush(tx)).is_err() {
            return Err(AuditError::new("the auditor is closed"));
        }
        rx.await
            .map_err(|_| AuditError::new("the auditor stopped"))?
            .map_err(AuditError::new)
    }

    /// Append what is queued, write a final checkpoint and stop. Later
    /// [`Auditor::record`] calls on any clone are dropped. Idempotent.
    pub async fn close(&self) -> Result<AuditStats, AuditError> {
        self.inner.closed.store(true, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        let result = if self.inner.tx.send(Msg::Close(tx)).is_ok() {
            rx.await.unwrap_or(Ok(())).map_err(AuditError::new)
        } else {
            Ok(())
        };
        let task = self
            .inner
            .task
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        if let Some(task) = task {
            let _ = task.await;
        }
        result.map(|()| self.stats())
    }

    /// Counters so far.
    pub fn stats(&self) -> AuditStats {
        let c = &self.inner.counters;
        AuditStats {
            records: c.records.load(Ordering::Relaxed),
            checkpoints: c.checkpoints.load(Ordering::Relaxed),
            dropped: c.dropped.load(Ordering::Relaxed),
            failed_appends: c.failed.load(Ordering::Relaxed),
        }
    }
}

/// The background task's state: one writer's chain.
struct Chain {
    sink: Arc<dyn AuditSink>,
    /// The record MAC, keyed once (`None` without a MAC key).
    mac: Option<RecordMac>,
    keys: Arc<AuditKeys>,
    writer: String,
    every: u64,
    interval: Duration,
    batch_interval: Duration,
    counters: Arc<Counters>,
    next_seq: u64,
    prev_mac: [u8; 32],
    prev_hash: [u8; 32],
    /// Chained, not yet appended.
    pending: Vec<AuditRecord>,
    /// The public chain hash through each of `pending`.
    pending_hashes: Vec<[u8; 32]>,
    /// Recorded events that `pending` stands for (a batch record stands for
    /// several): what appending it releases from `queued`.
    pending_events: usize,
    /// The canonical bytes of the record being chained (reused).
    scratch: Vec<u8>,
    /// Head of what is appended: seq, mac, hash.
    appended: Option<(u64, [u8; 32], [u8; 32])>,
    checkpointed_seq: Option<u64>,
    since_checkpoint: u64,
    last_checkpoint: Instant,
    failures: u32,
    /// Whether the first record (the `writer_started` genesis) is chained.
    genesis_done: bool,
}

impl Chain {
    async fn run(mut self, mut rx: mpsc::UnboundedReceiver<Msg>) {
        let mut buf = Vec::with_capacity(1024);
        loop {
            let due = self
                .has_uncovered()
                .then(|| self.last_checkpoint + self.interval);
            let n = tokio::select! {
                n = rx.recv_many(&mut buf, MAX_BATCH) => n,
                _ = sleep_until(due) => {
                    let _ = self.checkpoint().await;
                    continue;
                }
            };
            if n == 0 {
                // Every handle is gone: write what is left and stop.
                let _ = self.settle().await;
                return;
            }
            if !self.genesis_done && buf.iter().any(|m| matches!(m, Msg::Record { .. })) {
                self.genesis().await;
            }
            let mut closing = None;
            // Consecutive `started` events of one worker taken in one go
            // become one `started_batch` record (each task with its own
            // time), as leases and successes are recorded per batch.
            let mut started = StartedRun::default();
            for msg in buf.drain(..) {
                match msg {
                    Msg::Record {
                        time_ms,
                        event:
                            AuditEvent::Started {
                                task,
                                worker,
                                attempt,
                            },
                    } => {
                        if !started.takes(&worker) {
                            self.push_run(&mut started).await;
                        }
                        started.add(time_ms, worker, task, attempt);
                    }
                    other => {
                        self.push_run(&mut started).await;
                        match other {
                            Msg::Record { time_ms, event } => {
                                self.push_settled(time_ms, event, 1).await;
                            }
                            Msg::Flush(reply) => {
                                let _ = reply.send(self.settle().await);
                            }
                            Msg::Close(reply) => closing = Some(reply),
                        }
                    }
                }
            }
            self.push_run(&mut started).await;
            if let Some(reply) = closing {
                let _ = reply.send(self.settle().await);
                return;
            }
            if let Err(e) = self.append().await {
                self.failures += 1;
                warn!(error = %e, writer = %self.writer, "audit append failed; will retry");
                tokio::time::sleep(Duration::from_millis(
                    (50u64 << self.failures.min(6)).min(5_000),
                ))
                .await;
            } else {
                self.failures = 0;
                if !self.batch_interval.is_zero() {
                    tokio::time::sleep(self.batch_interval).await;
                }
            }
        }
    }

    /// Chain the writer's first record: the audit keys it uses and the
    /// tree head over the checkpoint store as it reads it now (once per
    /// writer, before its first event; never on the per-record path). A
    /// store it cannot read (a least-privilege Redis user without `XRANGE`)
    /// is named in the record instead of a head.
    async fn genesis(&mut self) {
        self.genesis_done = true;
        let (seen, root, error) = match self.sink.read_checkpoints().await {
            Ok(cps) => {
                let mut cps = cps.unwrap_or_default();
                // A last line another process is still writing reads as
                // unparseable now and whole later: leave it out of the head.
                while cps.last().is_some_and(|l| l.item.is_err()) {
                    cps.pop();
                }
                let root =
                    crate::seal::audit_head::checkpoints_root(cps.iter().map(|l| l.item.as_ref()));
                (Some(cps.len() as u64), Some(root), None)
            }
            Err(e) => (None, None, Some(e.message)),
        };
        let event = AuditEvent::WriterStarted {
            format: crate::seal::audit_head::GENESIS_FORMAT,
            mac_key_id: self.keys.mac_key_id().unwrap_or_default(),
            public_key: self.keys.public_key_base64().unwrap_or_default(),
            checkpoints_seen: seen,
            checkpoints_root: root,
            head_error: error,
        };
        self.push(wall_clock_ms(), event, 0);
    }

    /// `n` records left memory (appended or skipped): wake waiters.
    fn release(&self, n: usize) {
        self.counters.queued.fetch_sub(n as u64, Ordering::Relaxed);
        self.counters.room.notify_waiters();
    }

    fn has_uncovered(&self) -> bool {
        !self.pending.is_empty()
            || self
                .appended
                .is_some_and(|(s, ..)| self.checkpointed_seq.is_none_or(|c| c < s))
    }

    /// [`Chain::push`], then append and checkpoint once a window is full.
    async fn push_settled(&mut self, time_ms: i64, event: AuditEvent, events: usize) {
        self.push(time_ms, event, events);
        if self.since_checkpoint >= self.every {
            let _ = self.settle().await;
        }
    }

    /// Push the gathered `started` events, if any, as one record.
    async fn push_run(&mut self, run: &mut StartedRun) {
        if let Some((time_ms, event, n)) = run.take() {
            self.push_settled(time_ms, event, n).await;
        }
    }

    /// Number, MAC and hash one record standing for `events` recorded events.
    fn push(&mut self, time_ms: i64, event: AuditEvent, events: usize) {
        let seq = self.next_seq;
        self.scratch.clear();
        if let Err(e) = canonical_into(&mut self.scratch, &self.writer, seq, time_ms, &event) {
            warn!(error = %e, event = event.name(), "cannot encode audit record; skipped");
            self.release(events);
            return;
        }
        let Some(keyed) = &self.mac else {
            self.release(events);
            return;
        };
        let mac = keyed.mac(&self.prev_mac, &self.scratch);
        let hash = chain_hash(&self.prev_hash, &mac, &self.scratch);
        self.prev_mac = mac;
        self.prev_hash = hash;
        self.next_seq += 1;
        self.since_checkpoint += 1;
        self.pending_events += events;
        self.pending.push(AuditRecord {
            writer: self.writer.clone(),
            seq,
            time_ms,
            event,
            mac: crate::model::hex::encode(mac),
        });
        self.pending_hashes.push(hash);
    }

    /// Append everything pending.
    async fn append(&mut self) -> Result<(), String> {
        if self.pending.is_empty() {
            return Ok(());
        }
        if let Err(e) = self.sink.append_records(&self.pending).await {
            self.counters.failed.fetch_add(1, Ordering::Relaxed);
            crate::metrics::record::audit_append_failed();
            return Err(format!("{}: {e}", self.sink.describe()));
        }
        self.counters
            .records
            .fetch_add(self.pending.len() as u64, Ordering::Relaxed);
        self.release(self.pending_events);
        self.pending_events = 0;
        if let (Some(last), Some(hash)) = (self.pending.last(), self.pending_hashes.last()) {
            let mac = last.mac_bytes().unwrap_or(GENESIS);
            self.appended = Some((last.seq, mac, *hash));
        }
        self.pending.clear();
        self.pending_hashes.clear();
        Ok(())
    }

    /// Append everything pending and checkpoint it.
    async fn settle(&mut self) -> Result<(), String> {
        self.append().await?;
        self.checkpoint().await
    }

    /// Checkpoint the appended head, if it is not covered yet.
    async fn checkpoint(&mut self) -> Result<(), String> {
        self.last_checkpoint = Instant::now();
        let Some((seq, mac, hash)) = self.appended else {
            return Ok(());
        };
        if self.checkpointed_seq.is_some_and(|c| c >= seq) {
            return Ok(());
        }
        let mut cp = Checkpoint {
            writer: self.writer.clone(),
            seq,
            head_mac: crate::model::hex::encode(mac),
            head_hash: crate::model::hex::encode(hash),
            time_ms: wall_clock_ms(),
            signature: String::new(),
        };
        self.keys.sign(&mut cp);
        if let Err(e) = self.sink.append_checkpoint(&cp).await {
            self.counters.failed.fetch_add(1, Ordering::Relaxed);
            warn!(error = %e, writer = %self.writer, "audit checkpoint failed; will retry");
            return Err(format!("{}: {e}", self.sink.describe()));
        }
        self.counters.checkpoints.fetch_add(1, Ordering::Relaxed);
        self.checkpointed_seq = Some(seq);
        self.since_checkpoint = self.next_seq.saturating_sub(seq + 1);
        Ok(())
    }
}

/// Consecutive `started` events of one worker, being gathered into one record.
#[derive(Default)]
struct StartedRun {
    worker: String,
    first_ms: i64,
    tasks: Vec<StartedEntry>,
}

impl StartedRun {
    /// Whether a `started` event of `worker` joins this run.
    fn takes(&self, worker: &str) -> bool {
        self.tasks.is_empty() || self.worker == worker
    }

    fn add(&mut self, time_ms: i64, worker: String, task: crate::model::id::TaskId, attempt: u32) {
        if self.tasks.is_empty() {
            self.worker = worker;
            self.first_ms = time_ms;
        }
        self.tasks.push(StartedEntry {
            task,
            attempt,
            time_ms,
        });
    }

    /// The run as one record (time, event, events it stands for): a plain
    /// `started` for a run of one, a `started_batch` for more; `None` when
    /// empty.
    fn take(&mut self) -> Option<(i64, AuditEvent, usize)> {
        let n = self.tasks.len();
        let worker = std::mem::take(&mut self.worker);
        match n {
            0 => None,
            1 => {
                let e = self.tasks.pop()?;
                Some((
                    e.time_ms,
                    AuditEvent::Started {
                        task: e.task,
                        worker,
                        attempt: e.attempt,
                    },
                    1,
                ))
            }
            _ => Some((
                self.first_ms,
                AuditEvent::StartedBatch {
                    worker,
                    tasks: std::mem::take(&mut self.tasks),
                },
                n,
            )),
        }
    }
}

async fn sleep_until(due: Option<Instant>) {
    match due {
        Some(t) => tokio::time::sleep_until(t.into()).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::sink::MemorySink;
    use crate::store::audit::Loaded;
    use async_trait::async_trait;

    /// A sink whose appends wait until the test opens the gate.
    #[derive(Debug)]
    struct Gated {
        inner: MemorySink,
        gate: tokio::sync::Semaphore,
    }

    #[async_trait]
    impl AuditSink for Gated {
        async fn append_records(&self, records: &[AuditRecord]) -> Result<(), AuditError> {
            let _pass = self.gate.acquire().await.expect("gate open");
            self.inner.append_records(records).await
        }
        async fn append_checkpoint(&self, checkpoint: &Checkpoint) -> Result<(), AuditError> {
            self.inner.append_checkpoint(checkpoint).await
        }
        async fn read_records(&self) -> Result<Vec<Loaded<AuditRecord>>, AuditError> {
            self.inner.read_records().await
        }
        async fn read_checkpoints(&self) -> Result<Option<Vec<Loaded<Checkpoint>>>, AuditError> {
            self.inner.read_checkpoints().await
        }
        fn describe(&self) -> String {
            "gated".into()
        }
    }

    /// A filler event (not `started`: consecutive ones share a record).
    fn event() -> AuditEvent {
        AuditEvent::Requeued {
            task: crate::model::id::TaskId::new(),
            worker: "w".into(),
            attempt: 1,
        }
    }

    fn started(worker: &str, task: crate::model::id::TaskId) -> AuditEvent {
        AuditEvent::Started {
            task,
            worker: worker.into(),
            attempt: 1,
        }
    }

    #[tokio::test]
    async fn consecutive_started_events_of_one_worker_share_a_record() {
        let sink = Arc::new(Gated {
            inner: MemorySink::new(),
            gate: tokio::sync::Semaphore::new(0),
        });
        let keyring = Keyring::generate();
        let a = Auditor::builder(sink.clone(), &keyring).start().unwrap();
        // Queued while the sink is stuck, so the auditor takes them in one go.
        a.record(event());
        sink.gate.add_permits(1);
        a.flush().await.unwrap();
        let ids: Vec<crate::model::id::TaskId> =
            (0..5).map(|_| crate::model::id::TaskId::new()).collect();
        for id in &ids[..3] {
            a.record(started("w1", *id));
        }
        a.record(started("w2", ids[3]));
        a.record(event());
        a.record(started("w1", ids[4]));
        assert_eq!(a.queued(), 6);
        sink.gate.add_permits(1_000);
        a.flush().await.unwrap();
        assert_eq!(a.queued(), 0, "every event released, batched or not");
        let events: Vec<AuditEvent> = sink
            .inner
            .read_records()
            .await
            .unwrap()
            .into_iter()
            .map(|l| l.item.unwrap().event)
            .collect();
        let names: Vec<_> = events.iter().map(|e| e.name()).collect();
        assert_eq!(
            names,
            [
                "writer_started",
                "requeued",
                "started_batch",
                "started",
                "requeued",
                "started"
            ]
        );
        // After the genesis (`writer_started`).
        assert_eq!(events[2].tasks(), ids[..3].to_vec());
        for id in &ids[..3] {
            assert_eq!(events[2].for_task(*id), Some(started("w1", *id)));
            assert!(events[2].time_for_task(*id).is_some());
        }
        assert_eq!(events[3], started("w2", ids[3]));
        assert_eq!(a.stats().records, 6);
        a.close().await.unwrap();
        let keys = AuditKeys::from_keyring(&keyring).unwrap();
        let report = crate::audit::verify_sink(&*sink, &keys, &Default::default())
            .await
            .unwrap();
        assert!(report.is_ok(), "{:?}", report.faults);
    }

    #[tokio::test]
    async fn a_log_that_cannot_keep_up_makes_callers_wait_instead_of_filling_memory() {
        let sink = Arc::new(Gated {
            inner: MemorySink::new(),
            gate: tokio::sync::Semaphore::new(0),
        });
        let keyring = Keyring::generate();
        let a = Auditor::builder(sink.clone(), &keyring).start().unwrap();
        for _ in 0..100 {
            a.record(event());
        }
        assert_eq!(a.queued(), 100);
        // Room below 200: at once. Below 50: not while the sink is stuck.
        a.wait_for_room_below(200).await;
        let stuck =
            tokio::time::timeout(Duration::from_millis(100), a.wait_for_room_below(50)).await;
        assert!(stuck.is_err(), "returned with {} queued", a.queued());
        assert!(a.queued() >= 50);

        // Once the sink takes them, the waiter goes on and nothing is held.
        sink.gate.add_permits(1_000);
        tokio::time::timeout(Duration::from_secs(10), a.wait_for_room_below(50))
            .await
            .expect("room once the sink appends");
        a.flush().await.unwrap();
        assert_eq!(a.queued(), 0);
        assert_eq!(sink.inner.len(), 101, "the events and the genesis");

        // A closing auditor never makes anyone wait, even while its sink is
        // stuck with records queued.
        let b = Auditor::builder(sink.clone(), &keyring).start().unwrap();
        let stuck_gate = sink.gate.available_permits();
        sink.gate.forget_permits(stuck_gate);
        for _ in 0..100 {
            b.record(event());
        }
        let closing = tokio::spawn({
            let b = b.clone();
            async move { b.close().await }
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(b.queued() >= 1);
        tokio::time::timeout(Duration::from_secs(1), b.wait_for_room_below(1))
            .await
            .expect("a closing auditor does not block");
        sink.gate.add_permits(1_000);
        closing.await.unwrap().unwrap();
        assert_eq!(b.queued(), 0);
    }
}
