//! # sealq-redis: the Redis broker
//!
//! A [`Broker`] on Redis ≥ 7 (standalone, Sentinel or Cluster) whose every
//! state change is a Redis Function of one library (`lua/sealq.lua`, named
//! `sealq`), so runtime users need neither `EVAL` nor `SCRIPT` nor
//! `FUNCTION LOAD`.
//!
//! ```no_run
//! # async fn demo() -> Result<(), sealq::BrokerError> {
//! use sealq_redis::RedisBroker;
//! // Once, as an admin user: load the functions library.
//! RedisBroker::connect_unchecked("redis://admin:pw@127.0.0.1:6379", Default::default())
//!     .await?
//!     .install()
//!     .await?;
//! // Producers and workers: refuses to start if the library is missing or another version.
//! let broker = RedisBroker::connect("redis://worker:pw@127.0.0.1:6379").await?;
//! # let _ = broker; Ok(()) }
//! ```
//!
//! ## How it works
//!
//! - **Keys.** `PREFIX:{queue}:…` (default prefix `sealq`): the braces are a
//!   Cluster hash tag, so every key of a queue lives in one slot and every
//!   function call touches one slot. The global index (id → queue), queue
//!   registry and paused registry live under `PREFIX:{~}:g:`. On a standalone
//!   or Sentinel-managed server the per-queue functions update them in the
//!   same call; on a Cluster the broker updates them with separate calls.
//!   `docs/redis.md` lists every key.
//! - **Round trips.** Enqueue: one `FCALL` per queue in one pipeline.
//!   Dequeue: one `FCALL` for all requested queues (one per queue on a
//!   Cluster). Ack: one `FCALL` per queue, pipelined. Lease extension: one per
//!   queue. Forwarding, recovery and purging: one `FCALL` per queue with a
//!   batch limit, pipelined, atomic per queue, so workers sharing them never
//!   do the same work twice.
//! - **Wake-ups, not polling.** Enqueue, retry-due, requeue, forward and
//!   resume push a token onto `PREFIX:{queue}:wake` (capped at one element);
//!   idle workers block on it with `BLPOP` on a dedicated connection. A
//!   worker that leaves ready work behind passes the token on.
//! - **Time** comes from the broker's [`sealq::Clock`]: every call passes
//!   `now` in milliseconds, Redis' own clock is never used.
//! - **Connections.** One multiplexed connection (`ConnectionManager`,
//!   reconnecting by itself), cloned per call; blocking pops use their own
//!   connections. Sentinel: after a connection failure or `READONLY` the
//!   broker asks the Sentinels for the master again.
//!
//! ## Semantics worth knowing
//!
//! - Unique keys are per queue (`PREFIX:{queue}:u:KEY`).
//! - Lease tokens are random per dequeue call; an ack or extension with the
//!   current token is accepted even past the lease's expiry until recovery
//!   takes the task back (as the embedded broker does).
//! - Completed ids are remembered for [`RedisOptions::replay_horizon`].
//! - A task hash that does not decode (edited or injected by someone with
//!   write access) is archived with reason `integrity` at dequeue and never
//!   handed out.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod audit_sink;
mod blob_store;
mod codec;
mod conn;
mod erasure;
mod error;
mod functions;
mod stats;
mod subject_keys;
mod url;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use redis::{Cmd, Value};
use sealq::broker::{
    Ack, AckResult, Broker, BrokerResult, DequeueRequest, EnqueueResult, Forwarded, Lease,
    LeasedTask, ListQuery, NewTask, Outcome, QueueStats, Recovered, SealedPart, SealedSwap,
    TaskRecord,
};
use sealq::clock::{SharedClock, system_clock};
use sealq::{ArchiveReason, BrokerError, BrokerErrorKind, TaskId};

pub use crate::audit_sink::{DEFAULT_AUDIT_MAXLEN, RedisAuditSink};
pub use crate::blob_store::RedisBlobStore;
pub use crate::conn::TlsFiles;
pub use crate::functions::{LIBRARY_NAME, LIBRARY_VERSION, library_source};
pub use crate::stats::CommandStats;
pub use crate::subject_keys::RedisSubjectKeyStore;
pub use crate::url::redact;

use crate::codec::{array, bytes, id_str, int, opt_bytes, parse_id, token_str};
use crate::conn::{Blocking, Conn};

/// Default of [`RedisOptions::spin_wait`]: above a loopback round trip on
/// a VM (60-130 µs measured), below any real network's.
pub const DEFAULT_SPIN_WAIT: Duration = Duration::from_micros(200);

/// Default of [`RedisOptions::bulk_batch_limit`].
pub const DEFAULT_BULK_BATCH_LIMIT: usize = 256;

/// Options of a [`RedisBroker`].
#[derive(Clone)]
pub struct RedisOptions {
    /// Key prefix (default `sealq`). Several independent sealq deployments
    /// may share one Redis with different prefixes. No `{`, `}` or `:`.
    pub prefix: String,
    /// The broker's clock (default: the system clock).
    pub clock: SharedClock,
    /// Custom CA and client certificate for `rediss://` (the URL's `ca`,
    /// `cert` and `key` parameters fill these from files).
    pub tls: TlsFiles,
    /// How long one call may take before it fails as unavailable (default 30 s).
    pub response_timeout: Duration,
    /// How long a call that runs alone keeps its thread awake waiting for
    /// the reply before parking it (default [`DEFAULT_SPIN_WAIT`]; zero
    /// turns it off; the URL parameter `spin_us` sets it). On virtual
    /// machines, waking a parked thread's vCPU costs more than a loopback
    /// round trip: awaiting calls one after another runs about 1.3-1.6
    /// times faster with it (docs/benchmarks.md, "Spin-then-park"). It
    /// spends CPU only while the process has nothing else to run, and
    /// turns itself off where round trips are longer than this (a network
    /// between client and Redis). Calls that overlap never spin.
    pub spin_wait: Duration,
    /// How long completed ids are remembered to refuse replays (default 7 days).
    pub replay_horizon: Duration,
    /// Tasks moved per queue per function call by forwarding, recovery and purging (default 1000).
    pub maintenance_batch: usize,
    /// The most tasks one call of a bulk enqueue (`Client::enqueue_bulk`)
    /// sends, whatever its caller's batch size (default 256,
    /// [`DEFAULT_BULK_BATCH_LIMIT`]; see [`Broker::bulk_batch_limit`]).
    /// Redis runs one call at a time at about 8 µs per enqueued task, so a
    /// 1,000-task call holds it for ~8 ms while workers wait; calls of 256
    /// enqueue as fast on their own and leave workers sharing the server
    /// about 8 % more throughput (docs/benchmarks.md). `Client::enqueue_batch`
    /// stays one atomic call at any size.
    pub bulk_batch_limit: usize,
    /// Key prefix of the wrapped per-subject data keys (default
    /// `PREFIX-keys`). Same rules as `prefix`.
    pub subject_keys_prefix: Option<String>,
    /// A separate Redis for the subject keys (default: the broker's Redis).
    /// For erasure to shred backups, the keys must not be in the task
    /// store's backups: a Redis without persistence, outside the backup
    /// plan (see `docs/compliance.md`). TLS files of these options apply.
    pub subject_keys_url: Option<String>,
    /// Keep at most this many archived tasks per queue (default: no cap).
    /// Purging deletes the oldest beyond it, counting them (metric
    /// `sealq_archive_trimmed_total{queue}`, the queue's `trimmed` count in
    /// Redis, a log line): never silently.
    pub archive_max_count: Option<u64>,
    /// Delete archived tasks older than this (by archive time) when purging
    /// (default: no cap). Counted like `archive_max_count`.
    pub archive_max_age: Option<Duration>,
}

impl Default for RedisOptions {
    fn default() -> Self {
        Self {
            prefix: "sealq".into(),
            clock: system_clock(),
            tls: TlsFiles::default(),
            response_timeout: Duration::from_secs(30),
            spin_wait: DEFAULT_SPIN_WAIT,
            replay_horizon: Duration::from_secs(7 * 24 * 3600),
            maintenance_batch: 1000,
            bulk_batch_limit: DEFAULT_BULK_BATCH_LIMIT,
            subject_keys_prefix: None,
            subject_keys_url: None,
            archive_max_count: None,
            archive_max_age: None,
        }
    }
}

impl RedisOptions {
    /// Defaults with the given clock.
    pub fn with_clock(clock: SharedClock) -> Self {
        Self {
            clock,
            ..Self::default()
        }
    }

    /// Set the key prefix.
    pub fn prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self
    }
}

impl std::fmt::Debug for RedisOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisOptions")
            .field("prefix", &self.prefix)
            .field("tls", &self.tls)
            .field("response_timeout", &self.response_timeout)
            .field("spin_wait", &self.spin_wait)
            .finish_non_exhaustive()
    }
}

/// What one purge did (see [`RedisBroker::purge`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Purged {
    /// Completed tasks deleted after their retention.
    pub completed: u64,
    /// Archived tasks deleted by the archive caps.
    pub archive_trimmed: u64,
}

/// The Redis broker. Cheap to clone (an `Arc`).
#[derive(Clone)]
pub struct RedisBroker {
    inner: Arc<Inner>,
}

struct Inner {
    conn: Conn,
    target: String,
    prefix: String,
    gbase: String,
    clock: SharedClock,
    opts: RedisOptions,
    /// Queue of each lease this process holds (ack and extend route by it).
    leases: Mutex<HashMap<TaskId, Arc<str>>>,
    /// Idle connections for blocking pops.
    blocking: Mutex<Vec<Blocking>>,
    /// Wrapped subject keys (connects on first use).
    subject_keys: Arc<RedisSubjectKeyStore>,
}

impl std::fmt::Debug for RedisBroker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisBroker")
            .field("target", &self.inner.target)
            .field("prefix", &self.inner.prefix)
            .finish_non_exhaustive()
    }
}

/// One queue's share of a batch: queue name and indexes into the batch.
type Groups = Vec<(Arc<str>, Vec<usize>)>;

fn group_by<'a>(queues: impl Iterator<Item = Option<&'a str>>) -> (Groups, Vec<usize>) {
    let mut groups: Groups = Vec::new();
    let mut index: HashMap<&'a str, usize> = HashMap::new();
    let mut orphans = Vec::new();
    for (i, q) in queues.enumerate() {
        match q {
            Some(q) => {
                let g = *index.entry(q).or_insert_with(|| {
                    groups.push((Arc::from(q), Vec::new()));
                    groups.len() - 1
                });
                groups[g].1.push(i);
            }
            None => orphans.push(i),
        }
    }
    (groups, orphans)
}

/// What `sealq_enqueue` said of one task.
enum Stored {
    Ok,
    Exists,
    /// Its bytes were not there as just written.
    NoBytes,
    /// Another task holds its unique key.
    Held(TaskId),
    /// The queue holds its maximum of waiting tasks (the cap).
    Full(u64),
}

/// How long a task's stored bytes live before the enqueue function makes
/// them permanent. They are written in the same pipeline just before it, so
/// this only bounds how long the bytes of a refused task, or of a producer
/// cut off between the two, stay behind.
const STORED_BYTES_TTL_MS: u64 = 10 * 60 * 1000;

/// Calls of at most this many tasks pass their bytes inside the function
/// call (`sealq_enqueue_inline`); larger ones write them with `MSETNX`,
/// which costs Redis less per task than passing them through Lua.
const ENQUEUE_INLINE: usize = 8;

/// `[rl, rp]` from a queue's flags (`HMGET`): its rate limit, if both are
/// positive numbers.
fn rate_limit_of(pair: &[Value]) -> Option<sealq::broker::RateLimit> {
    let num = |v: &Value| -> Option<u64> {
        bytes(v.clone())
            .ok()
            .and_then(|b| std::str::from_utf8(&b).ok()?.parse().ok())
    };
    match pair {
        [l, p] => match (num(l), num(p)) {
            (Some(limit), Some(period_ms)) if limit > 0 && period_ms > 0 => {
                Some(sealq::broker::RateLimit { limit, period_ms })
            }
            _ => None,
        },
        _ => None,
    }
}

fn ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

fn fcall(name: &str) -> Cmd {
    let mut c = redis::cmd("FCALL");
    c.arg(name);
    c
}

fn validate_prefix(prefix: &str) -> Result<(), BrokerError> {
    if prefix.is_empty() || prefix.contains(['{', '}', ':']) {
        return Err(BrokerError::new(
            BrokerErrorKind::Config,
            format!(
                "invalid Redis key prefix `{prefix}`: it must be non-empty and contain no `{{`, `}}` or `:`"
            ),
        ));
    }
    Ok(())
}

fn validate_queue(queue: &str) -> Result<(), BrokerError> {
    if queue.is_empty() || queue.contains(['{', '}']) {
        return Err(BrokerError::new(
            BrokerErrorKind::Config,
            format!(
                "queue name `{queue}` cannot be used with Redis: it must be non-empty and contain \
                 no `{{` or `}}` (they delimit the Cluster hash tag)"
            ),
        ));
    }
    Ok(())
}

fn read_pem(path: &str, what: &str) -> Result<Vec<u8>, BrokerError> {
    std::fs::read(path).map_err(|e| {
        BrokerError::new(
            BrokerErrorKind::Config,
            format!("cannot read the TLS {what} `{path}` named in the broker URL: {e}"),
        )
    })
}

impl RedisBroker {
    /// Connect with default options and check the functions library version.
    pub async fn connect(url: &str) -> Result<Self, BrokerError> {
        Self::connect_with(url, RedisOptions::default()).await
    }

    /// Connect with `options` (URL parameters override them) and check that
    /// the loaded functions library is [`LIBRARY_VERSION`]; a missing or
    /// different library is a [`BrokerErrorKind::Config`] error telling to
    /// run `sealq redis install`.
    pub async fn connect_with(url: &str, options: RedisOptions) -> Result<Self, BrokerError> {
        let b = Self::connect_unchecked(url, options).await?;
        b.check_library().await?;
        Ok(b)
    }

    /// Connect without checking the functions library (for [`Self::install`]).
    pub async fn connect_unchecked(
        url: &str,
        mut options: RedisOptions,
    ) -> Result<Self, BrokerError> {
        let parsed = url::parse(url)?;
        if let Some(p) = &parsed.prefix {
            options.prefix = p.clone();
        }
        options.spin_wait = parsed.spin_wait(options.spin_wait);
        validate_prefix(&options.prefix)?;
        if let Some(ca) = &parsed.ca {
            options.tls.ca_pem = Some(read_pem(ca, "CA certificate")?);
        }
        if let (Some(c), Some(k)) = (&parsed.cert, &parsed.key) {
            options.tls.client_cert_key_pem = Some((
                read_pem(c, "client certificate")?,
                read_pem(k, "client key")?,
            ));
        }
        let conn = Conn::open(
            &parsed,
            &options.tls,
            options.response_timeout,
            options.spin_wait,
        )
        .await?;
        let target = parsed.redacted.clone();
        // Prove the connection works (and the credentials) before returning.
        let pong: Result<String, _> = conn.query(&redis::cmd("PING")).await;
        if let Err(e) = pong {
            // A user without PING may still be fine; only connection and auth failures stop us.
            let mapped = error::map(&target, "connecting", e);
            if mapped.kind != BrokerErrorKind::PermissionDenied
                || mapped.message.contains("credentials")
            {
                return Err(mapped);
            }
        }
        tracing::debug!(target = %target, prefix = %options.prefix, "connected to Redis");
        let subject_keys = Arc::new(subject_keys::for_broker(&parsed, &options)?);
        Ok(Self {
            inner: Arc::new(Inner {
                conn,
                gbase: format!("{}:{{~}}:g:", options.prefix),
                prefix: options.prefix.clone(),
                target,
                clock: options.clock.clone(),
                opts: options,
                leases: Mutex::new(HashMap::new()),
                blocking: Mutex::new(Vec::new()),
                subject_keys,
            }),
        })
    }

    /// Load (or upgrade) the functions library: `FUNCTION LOAD REPLACE`, on
    /// every master of a Cluster, then move tasks stored by an older layout
    /// to the current one ([`Self::migrate`]). Needs an admin user. Returns
    /// the version.
    pub async fn install(&self) -> Result<String, BrokerError> {
        let mut cmd = redis::cmd("FUNCTION");
        cmd.arg("LOAD").arg("REPLACE").arg(library_source());
        let _: Value = self
            .inner
            .conn
            .query(&cmd)
            .await
            .map_err(|e| self.err("loading the functions library", e))?;
        self.check_library().await?;
        self.migrate().await?;
        Ok(LIBRARY_VERSION.to_owned())
    }

    /// Move tasks stored by library version 4 (bytes inside the task hash)
    /// to this version's layout, every queue, in batches of
    /// [`RedisOptions::maintenance_batch`] (each atomic). Harmless to run
    /// again; [`Self::install`] runs it. Returns how many tasks it moved.
    pub async fn migrate(&self) -> BrokerResult<u64> {
        let what = "migrating stored tasks to the current layout";
        let limit = self.inner.opts.maintenance_batch.max(1);
        let (queues, _) = self.queues().await?;
        let mut todo: Vec<(String, String)> =
            queues.into_iter().map(|q| (q, String::new())).collect();
        let mut moved = 0u64;
        while !todo.is_empty() {
            let cmds = todo
                .iter()
                .map(|(q, after)| {
                    let mut c = self.qcall("sealq_migrate", q, false);
                    c.arg(after).arg(limit);
                    c
                })
                .collect();
            let replies = self.run_all(what, cmds).await?;
            let mut again = Vec::new();
            for ((q, _), reply) in todo.into_iter().zip(replies) {
                let mut parts = array(reply).map_err(|e| self.bad(what, e))?.into_iter();
                let mut n = || -> BrokerResult<u64> {
                    let v = parts.next().unwrap_or(Value::Int(0));
                    Ok(u64::try_from(int(&v).map_err(|e| self.bad(what, e))?.max(0)).unwrap_or(0))
                };
                let (scanned, migrated) = (n()?, n()?);
                moved += migrated;
                let last = opt_bytes(parts.next().unwrap_or(Value::Nil))
                    .map_err(|e| self.bad(what, e))?
                    .unwrap_or_default();
                if scanned as usize >= limit && !last.is_empty() {
                    again.push((q, String::from_utf8_lossy(&last).into_owned()));
                }
            }
            todo = again;
        }
        if moved > 0 {
            tracing::info!(
                moved,
                "sealq: moved tasks stored by library version 4 to the current layout"
            );
        }
        Ok(moved)
    }

    /// Check that the loaded functions library is the version this build needs.
    pub async fn check_library(&self) -> Result<(), BrokerError> {
        let mut cmd = fcall("sealq_version");
        cmd.arg(1).arg(&self.inner.gbase);
        let v: String = self
            .inner
            .conn
            .query(&cmd)
            .await
            .map_err(|e| self.err("checking the sealq functions library version", e))?;
        if v != LIBRARY_VERSION {
            return Err(BrokerError::new(
                BrokerErrorKind::Config,
                format!(
                    "Redis at {} has sealq functions library version {v}, this sealq needs version \
                     {LIBRARY_VERSION}: run `sealq redis install --broker URL` (as an admin user) \
                     with this sealq's version",
                    self.inner.target
                ),
            ));
        }
        Ok(())
    }

    /// Delete completed tasks past their retention and trim archived tasks
    /// beyond [`RedisOptions::archive_max_count`] and
    /// [`RedisOptions::archive_max_age`] (oldest first), in batches of
    /// [`RedisOptions::maintenance_batch`] per queue, each atomic. Trimmed
    /// tasks are counted: the returned figure, the metric
    /// `sealq_archive_trimmed_total{queue}`, the queue's `trimmed` count in
    /// its Redis `n` hash, and a log line. The worker's maintenance calls this
    /// through [`Broker::purge_completed`].
    pub async fn purge(&self) -> BrokerResult<Purged> {
        let what = "purging completed tasks";
        let now = self.now();
        let limit = self.inner.opts.maintenance_batch.max(1);
        let horizon = ms(self.inner.opts.replay_horizon);
        let max_count = self
            .inner
            .opts
            .archive_max_count
            .map_or(-1, |n| i64::try_from(n).unwrap_or(i64::MAX));
        let max_age = self.inner.opts.archive_max_age.map_or(-1, ms);
        let (mut todo, _) = self.queues().await?;
        let mut total = Purged::default();
        while !todo.is_empty() {
            let cmds = todo
                .iter()
                .map(|q| {
                    let mut c = self.qcall("sealq_purge", q, true);
                    c.arg(now)
                        .arg(limit)
                        .arg(horizon)
                        .arg(max_count)
                        .arg(max_age);
                    c
                })
                .collect();
            let replies = self.run_all(what, cmds).await?;
            let mut again = Vec::new();
            let mut forget = Vec::new();
            for (q, reply) in todo.into_iter().zip(replies) {
                let parts = array(reply).map_err(|e| self.bad(what, e))?;
                let n = |i: usize| -> BrokerResult<u64> {
                    let v = parts
                        .get(i)
                        .map(int)
                        .transpose()
                        .map_err(|e| self.bad(what, e))?;
                    Ok(u64::try_from(v.unwrap_or(0)).unwrap_or(0))
                };
                let (purged, scanned, trimmed, more) = (n(0)?, n(1)?, n(2)?, n(3)?);
                total.completed += purged;
                total.archive_trimmed += trimmed;
                if trimmed > 0 {
                    metrics::counter!("sealq_archive_trimmed_total", "queue" => q.clone())
                        .increment(trimmed);
                    tracing::info!(queue = %q, trimmed, "sealq: archived tasks deleted by the archive caps");
                }
                for v in parts.into_iter().skip(4) {
                    forget.push(
                        String::from_utf8_lossy(&bytes(v).map_err(|e| self.bad(what, e))?)
                            .into_owned(),
                    );
                }
                if scanned as usize >= limit || more == 1 {
                    again.push(q);
                }
            }
            self.unindex(forget).await?;
            todo = again;
        }
        Ok(total)
    }

    /// The key prefix in use.
    pub fn prefix(&self) -> &str {
        &self.inner.prefix
    }

    fn err(&self, what: &str, e: redis::RedisError) -> BrokerError {
        error::map(&self.inner.target, what, e)
    }

    fn bad(&self, what: &str, detail: impl std::fmt::Display) -> BrokerError {
        error::corrupt(&self.inner.target, what, detail)
    }

    fn qbase(&self, queue: &str) -> String {
        format!("{}:{{{queue}}}:", self.inner.prefix)
    }

    fn now(&self) -> i64 {
        self.inner.clock.now_ms()
    }

    fn single(&self) -> bool {
        self.inner.conn.single_node()
    }

    /// `FCALL name` on one queue, with the global base as a second key on single nodes.
    fn qcall(&self, name: &str, queue: &str, global: bool) -> Cmd {
        let mut c = fcall(name);
        if global && self.single() {
            c.arg(2).arg(self.qbase(queue)).arg(&self.inner.gbase);
        } else {
            c.arg(1).arg(self.qbase(queue));
        }
        c
    }

    /// Run one command per queue: a pipeline on a single node, concurrent calls on a Cluster.
    async fn run_all(&self, what: &str, cmds: Vec<Cmd>) -> BrokerResult<Vec<Value>> {
        if cmds.is_empty() {
            return Ok(Vec::new());
        }
        if self.single() {
            let mut p = redis::pipe();
            for c in cmds {
                p.add_command(c);
            }
            self.inner
                .conn
                .pipe::<Vec<Value>>(&p)
                .await
                .map_err(|e| self.err(what, e))
        } else {
            let futs = cmds.iter().map(|c| self.inner.conn.query::<Value>(c));
            futures::future::try_join_all(futs)
                .await
                .map_err(|e| self.err(what, e))
        }
    }

    async fn registry(&self, args: &[&[u8]]) -> BrokerResult<Value> {
        let mut c = fcall("sealq_registry");
        c.arg(1).arg(&self.inner.gbase);
        for a in args {
            c.arg(*a);
        }
        self.inner
            .conn
            .query(&c)
            .await
            .map_err(|e| self.err("updating the queue registry", e))
    }

    /// Every known queue and the paused ones.
    async fn queues(&self) -> BrokerResult<(Vec<String>, Vec<String>)> {
        let mut c = fcall("sealq_queues");
        c.arg(1).arg(&self.inner.gbase);
        let v: Value = self
            .inner
            .conn
            .query(&c)
            .await
            .map_err(|e| self.err("listing queues", e))?;
        let what = "listing queues";
        let mut parts = array(v).map_err(|e| self.bad(what, e))?.into_iter();
        let names = |v: Option<Value>| -> BrokerResult<Vec<String>> {
            let mut out = Vec::new();
            for x in array(v.unwrap_or(Value::Nil)).map_err(|e| self.bad(what, e))? {
                out.push(
                    String::from_utf8_lossy(&bytes(x).map_err(|e| self.bad(what, e))?).into_owned(),
                );
            }
            out.sort();
            Ok(out)
        };
        let all = names(parts.next())?;
        let paused = names(parts.next())?;
        Ok((all, paused))
    }

    /// The queue of each id (from the lease cache, else the global index).
    async fn locate(&self, ids: &[TaskId], take: bool) -> BrokerResult<Vec<Option<Arc<str>>>> {
        let mut out: Vec<Option<Arc<str>>> = Vec::with_capacity(ids.len());
        let mut missing = Vec::new();
        {
            let mut cache = self.inner.leases.lock().expect("lease cache");
            for (i, id) in ids.iter().enumerate() {
                let q = if take {
                    cache.remove(id)
                } else {
                    cache.get(id).cloned()
                };
                if q.is_none() {
                    missing.push(i);
                }
                out.push(q);
            }
        }
        if !missing.is_empty() {
            let mut c = fcall("sealq_locate");
            c.arg(1).arg(&self.inner.gbase);
            for &i in &missing {
                c.arg(id_str(&ids[i]));
            }
            let v: Value = self
                .inner
                .conn
                .query(&c)
                .await
                .map_err(|e| self.err("locating tasks", e))?;
            let what = "locating tasks";
            for (&i, q) in missing.iter().zip(array(v).map_err(|e| self.bad(what, e))?) {
                out[i] = opt_bytes(q)
                    .map_err(|e| self.bad(what, e))?
                    .map(|b| Arc::from(String::from_utf8_lossy(&b).as_ref()));
            }
        }
        Ok(out)
    }

    /// One enqueue round for `plan` (queue, task indices): per queue each
    /// task's stored bytes (`SET NX PX`: an existing task's bytes are never
    /// overwritten, and bytes of a refused task expire by themselves), then
    /// one function call that accepts or refuses each task and makes
    /// accepted bytes permanent. Only the function replies are kept. One
    /// pipeline on a single node; one per queue (one slot each),
    /// concurrently, on a Cluster. Returns each queue's outcomes in `plan`
    /// order.
    async fn enqueue_round(
        &self,
        tasks: &[NewTask],
        ids: &[String],
        plan: &[(Arc<str>, Vec<usize>)],
        now: i64,
        first: bool,
    ) -> BrokerResult<Vec<(Arc<str>, Vec<(usize, Stored)>)>> {
        let what = "enqueueing tasks";
        if plan.is_empty() {
            return Ok(Vec::new());
        }
        let single = self.single();
        // A call of a few tasks (first round) passes their bytes inside one
        // `sealq_enqueue_inline` call per queue, which writes them with
        // `SET NX`: one command instead of four, and no bytes are ever
        // written for a refused task.
        let inline =
            first && plan.iter().map(|(_, idx)| idx.len()).sum::<usize>() <= ENQUEUE_INLINE;
        // The fast path (single node, first round, larger calls): one `MSETNX` per queue
        // writes every task's bytes and a marker, or nothing if any of the
        // keys exists; the function learns which from the marker. MULTI/EXEC
        // makes the two one step, so bytes are never left without a task.
        // (Not when one call names an id twice: MSETNX would keep the last
        // bytes, `SET NX` keeps those of the task that is accepted.)
        let fast = first
            && !inline
            && single
            && plan.iter().all(|(_, idx)| {
                let mut seen = std::collections::HashSet::with_capacity(idx.len());
                idx.iter().all(|&i| seen.insert(&ids[i]))
            });
        let stored = |t: &NewTask| {
            codec::encode_stored(&t.kind, &t.meta, &t.envelope).map_err(|e| {
                BrokerError::new(BrokerErrorKind::Other, format!("task {}: {e}", t.id))
            })
        };
        let mut pipes = vec![redis::pipe()];
        if fast {
            pipes[0].atomic();
        }
        for (q, idx) in plan {
            if !single && pipes[pipes.len() - 1].cmd_iter().next().is_some() {
                pipes.push(redis::pipe());
            }
            let p = pipes.last_mut().expect("at least one pipeline");
            let base = self.qbase(q);
            let marker = fast.then(|| format!("{base}m:{:016x}", rand::random::<u64>()));
            if let Some(m) = &marker {
                p.cmd("MSETNX").arg(m).arg("1");
            }
            // Inline calls carry the bytes as function arguments (below).
            for &i in idx.iter().filter(|_| !inline) {
                let stored = stored(&tasks[i])?;
                let key = format!("{base}b:{}", ids[i]);
                if fast {
                    p.arg(key).arg(stored);
                } else {
                    p.cmd("SET")
                        .arg(key)
                        .arg(stored)
                        .arg("NX")
                        .arg("PX")
                        .arg(STORED_BYTES_TTL_MS)
                        .ignore();
                }
            }
            if fast {
                p.ignore();
            }
            let mut c = match &marker {
                Some(m) => {
                    let mut c = fcall("sealq_enqueue");
                    c.arg(3).arg(&base).arg(&self.inner.gbase).arg(m);
                    c
                }
                None if inline => self.qcall("sealq_enqueue_inline", q, true),
                None => self.qcall("sealq_enqueue", q, true),
            };
            c.arg(now).arg(q.as_ref());
            for &i in idx {
                let t = &tasks[i];
                let (uk, uttl) = match &t.unique {
                    Some((k, ttl)) => (k.as_str(), i64::try_from(*ttl).unwrap_or(i64::MAX / 4)),
                    None => ("", 0),
                };
                c.arg(&ids[i])
                    .arg(t.run_at_ms)
                    .arg(t.meta.max_retries)
                    .arg(t.meta.retention_ms)
                    .arg(
                        t.meta
                            .subject_tag
                            .as_ref()
                            .map(codec::subject_str)
                            .unwrap_or_default(),
                    )
                    .arg(uk)
                    .arg(uttl);
                if inline {
                    c.arg(stored(t)?);
                }
            }
            p.add_command(c);
        }
        let futs = pipes.iter().map(|p| self.inner.conn.pipe::<Vec<Value>>(p));
        let replies: Vec<Value> = futures::future::try_join_all(futs)
            .await
            .map_err(|e| self.err(what, e))?
            .into_iter()
            .flatten()
            .collect();
        if replies.len() != plan.len() {
            return Err(self.bad(what, "one reply per queue expected"));
        }
        let mut out = Vec::with_capacity(plan.len());
        for ((q, idx), reply) in plan.iter().zip(replies) {
            let items = array(reply).map_err(|e| self.bad(what, e))?;
            if items.len() != idx.len() {
                return Err(self.bad(what, "one result per task expected"));
            }
            let mut outcomes = Vec::with_capacity(idx.len());
            for (&i, item) in idx.iter().zip(items) {
                let b = bytes(item).map_err(|e| self.bad(what, e))?;
                outcomes.push((
                    i,
                    match b.as_slice() {
                        b"ok" => Stored::Ok,
                        b"exists" => Stored::Exists,
                        b"nobytes" => Stored::NoBytes,
                        full if full.starts_with(b"full:") => Stored::Full(
                            std::str::from_utf8(&full[5..])
                                .ok()
                                .and_then(|n| n.parse().ok())
                                .ok_or_else(|| self.bad(what, "a queue's cap is not a number"))?,
                        ),
                        holder => Stored::Held(
                            parse_id(holder)
                                .ok_or_else(|| self.bad(what, "unique key holder is not an id"))?,
                        ),
                    },
                ));
            }
            out.push((q.clone(), outcomes));
        }
        Ok(out)
    }

    async fn enqueue_cluster_claim(&self, queue: &str, ids: &[String]) -> BrokerResult<Vec<bool>> {
        let mut args: Vec<&[u8]> = vec![b"index", queue.as_bytes()];
        args.extend(ids.iter().map(|s| s.as_bytes()));
        let v = self.registry(&args).await?;
        let what = "claiming task ids";
        array(v)
            .map_err(|e| self.bad(what, e))?
            .iter()
            .map(|x| int(x).map(|n| n == 1).map_err(|e| self.bad(what, e)))
            .collect()
    }

    async fn unindex(&self, ids: Vec<String>) -> BrokerResult<()> {
        if ids.is_empty() || self.single() {
            return Ok(());
        }
        let mut args: Vec<&[u8]> = vec![b"unindex"];
        args.extend(ids.iter().map(|s| s.as_bytes()));
        self.registry(&args).await.map(|_| ())
    }

    /// Read the stored bytes of freshly leased tasks (`MGET`, one per queue
    /// on a Cluster) and build their records. Tasks whose bytes are missing
    /// or do not decode, or whose state fields were edited, are returned as
    /// broken: `(id, queue index, why)`.
    async fn leased_records(
        &self,
        queues: &[String],
        reply: Value,
        token: u64,
        lease_expires: i64,
        now: i64,
    ) -> BrokerResult<(Vec<(LeasedTask, usize)>, Vec<(String, usize, String)>)> {
        let what = "reading leased tasks";
        let short = || self.bad("dequeueing tasks", "malformed reply from sealq_dequeue");
        let mut parts = array(reply).map_err(|e| self.bad(what, e))?.into_iter();
        let (per, triples, extras) = match (parts.next(), parts.next(), parts.next()) {
            (Some(p), Some(t), Some(e)) => (
                array(p).map_err(|e| self.bad(what, e))?,
                array(t).map_err(|e| self.bad(what, e))?,
                array(e).map_err(|e| self.bad(what, e))?,
            ),
            _ => return Err(short()),
        };
        if !triples.len().is_multiple_of(3) || !extras.len().is_multiple_of(3) {
            return Err(short());
        }
        struct Raw {
            id: Vec<u8>,
            attempts: Value,
            run_at: Value,
            replayed: bool,
            qi: usize,
            last_error: Option<Vec<u8>>,
            /// The stored bytes when the reply carried them (small batches).
            stored: Option<Vec<u8>>,
        }
        // Which queue each task came from: the reply counts tasks per key.
        let mut qis = Vec::with_capacity(triples.len() / 3);
        for (qi, n) in per.iter().enumerate().take(queues.len()) {
            let n = usize::try_from(int(n).map_err(|e| self.bad(what, e))?).unwrap_or(0);
            qis.extend(std::iter::repeat_n(qi, n));
        }
        if qis.len() != triples.len() / 3 {
            return Err(short());
        }
        let mut raws: Vec<Raw> = Vec::with_capacity(qis.len());
        let mut it = triples.into_iter();
        for &qi in &qis {
            let (Some(id), Some(attempts), Some(run_at)) = (it.next(), it.next(), it.next()) else {
                return Err(short());
            };
            raws.push(Raw {
                id: opt_bytes(id).ok().flatten().unwrap_or_default(),
                attempts,
                run_at,
                replayed: false,
                qi,
                last_error: None,
                stored: None,
            });
        }
        let mut it = extras.into_iter();
        while let (Some(t), Some(code), Some(v)) = (it.next(), it.next(), it.next()) {
            let t = usize::try_from(int(&t).map_err(|e| self.bad(what, e))?)
                .ok()
                .and_then(|t| t.checked_sub(1))
                .filter(|&t| t < raws.len())
                .ok_or_else(short)?;
            let r = &mut raws[t];
            match bytes(code).map_err(|e| self.bad(what, e))?.as_slice() {
                b"p" => r.replayed = true,
                b"e" => r.last_error = opt_bytes(v).ok().flatten(),
                b"b" => r.stored = opt_bytes(v).ok().flatten(),
                _ => return Err(short()),
            }
        }
        // The stored bytes not in the reply: one MGET per queue (one slot
        // each on a Cluster).
        let mut stored: Vec<Option<Vec<u8>>> = raws.iter_mut().map(|r| r.stored.take()).collect();
        let mut by_queue: Vec<Vec<usize>> = vec![Vec::new(); queues.len()];
        for (i, r) in raws.iter().enumerate() {
            if stored[i].is_none() {
                by_queue[r.qi].push(i);
            }
        }
        let mut p = redis::pipe();
        let mut asked = Vec::new();
        for (qi, idx) in by_queue.iter().enumerate() {
            if idx.is_empty() {
                continue;
            }
            let base = self.qbase(&queues[qi]);
            let mut c = redis::cmd("MGET");
            for &i in idx {
                c.arg(format!("{base}b:{}", String::from_utf8_lossy(&raws[i].id)));
            }
            p.add_command(c);
            asked.push(idx);
        }
        if !asked.is_empty() {
            let replies: Vec<Value> = self
                .inner
                .conn
                .pipe(&p)
                .await
                .map_err(|e| self.err(what, e))?;
            for (idx, reply) in asked.into_iter().zip(replies) {
                for (&i, v) in idx.iter().zip(array(reply).map_err(|e| self.bad(what, e))?) {
                    stored[i] = opt_bytes(v).map_err(|e| self.bad(what, e))?;
                }
            }
        }
        let mut ok = Vec::with_capacity(raws.len());
        let mut broken = Vec::new();
        for (r, stored) in raws.into_iter().zip(stored) {
            let id_s = String::from_utf8_lossy(&r.id).into_owned();
            let built = (|| -> Result<LeasedTask, String> {
                let id = parse_id(&r.id).ok_or("bad id")?;
                let attempts = int(&r.attempts).map_err(|_| "attempts is not a number")?;
                let run_at = int(&r.run_at).map_err(|_| "run_at is missing or not a number")?;
                let s = codec::decode_stored(stored.ok_or("its stored bytes are missing")?)?;
                Ok(LeasedTask {
                    lease: Lease {
                        task_id: id,
                        token,
                        expires_at_ms: lease_expires,
                    },
                    record: TaskRecord {
                        id,
                        queue: queues[r.qi].clone(),
                        kind: s.kind,
                        envelope: s.envelope,
                        meta: s.meta,
                        state: sealq::TaskState::Active,
                        attempts: u32::try_from(attempts.max(0)).unwrap_or(u32::MAX),
                        run_at_ms: run_at,
                        last_error: r.last_error,
                        result: None,
                        archive_reason: None,
                        lease_expires_at_ms: Some(lease_expires),
                        finished_at_ms: None,
                        updated_at_ms: now,
                    },
                    replayed: r.replayed,
                })
            })();
            match built {
                Ok(t) => ok.push((t, r.qi)),
                Err(why) => broken.push((id_s, r.qi, why)),
            }
        }
        Ok((ok, broken))
    }

    async fn dequeue_from(
        &self,
        queues: &[String],
        max: usize,
        req: &DequeueRequest,
        now: i64,
    ) -> BrokerResult<Vec<LeasedTask>> {
        let what = "dequeueing tasks";
        // One token for the whole call: a lease is the task id plus the
        // token of the call that leased it (see sealq_dequeue).
        let token: u64 = rand::random();
        let mut c = fcall("sealq_dequeue");
        c.arg(queues.len());
        for q in queues {
            c.arg(self.qbase(q));
        }
        c.arg(now)
            .arg(max)
            .arg(ms(req.lease))
            .arg(&req.worker)
            .arg(token_str(token));
        let v: Value = self
            .inner
            .conn
            .query(&c)
            .await
            .map_err(|e| self.err(what, e))?;
        let expires = now.saturating_add(ms(req.lease));
        let (leased, broken) = self.leased_records(queues, v, token, expires, now).await?;
        let mut out = Vec::with_capacity(leased.len());
        {
            let names: Vec<Arc<str>> = queues.iter().map(|q| Arc::from(q.as_str())).collect();
            let mut cache = self.inner.leases.lock().expect("lease cache");
            for (t, qi) in leased {
                cache.insert(t.record.id, names[qi].clone());
                out.push(t);
            }
        }
        // Edited, injected or bytes-less tasks never reach a handler: archive them.
        let tok = token_str(token);
        for (id, qi, why) in broken {
            tracing::warn!(task = %id, queue = %queues[qi], reason = %why, "sealq: archiving a task whose stored fields do not decode (integrity)");
            metrics::counter!("sealq_redis_integrity_archived_total").increment(1);
            let mut c = fcall("sealq_ack");
            c.arg(1)
                .arg(self.qbase(&queues[qi]))
                .arg(now)
                .arg(id)
                .arg(&tok)
                .arg("A")
                .arg(ArchiveReason::Integrity.as_str())
                .arg(format!("stored task fields do not decode: {why}"));
            let _: Value = self
                .inner
                .conn
                .query(&c)
                .await
                .map_err(|e| self.err("archiving a corrupt task", e))?;
        }
        Ok(out)
    }

    async fn take_blocking(&self) -> BrokerResult<Blocking> {
        if let Some(c) = self.inner.blocking.lock().expect("blocking pool").pop() {
            return Ok(c);
        }
        self.inner
            .conn
            .blocking()
            .await
            .map_err(|e| self.err("opening a connection for wake-ups", e))
    }
}

fn ack_args(c: &mut Cmd, a: &Ack) {
    c.arg(id_str(&a.lease.task_id))
        .arg(token_str(a.lease.token));
    match &a.outcome {
        Outcome::Complete { result: None } => c.arg("c"),
        Outcome::Complete { result: Some(r) } => c.arg("C").arg(r.as_slice()),
        Outcome::Retry { at_ms, error: None } => c.arg("r").arg(*at_ms),
        Outcome::Retry {
            at_ms,
            error: Some(e),
        } => c.arg("R").arg(*at_ms).arg(e.as_slice()),
        Outcome::Archive {
            reason,
            error: None,
        } => c.arg("a").arg(reason.as_str()),
        Outcome::Archive {
            reason,
            error: Some(e),
        } => c.arg("A").arg(reason.as_str()).arg(e.as_slice()),
        Outcome::Requeue => c.arg("q"),
    };
}

#[async_trait]
impl Broker for RedisBroker {
    async fn enqueue(&self, tasks: Vec<NewTask>) -> BrokerResult<Vec<EnqueueResult>> {
        if tasks.is_empty() {
            return Ok(Vec::new());
        }
        for t in &tasks {
            validate_queue(&t.queue)?;
        }
        let now = self.now();
        let (groups, _) = group_by(tasks.iter().map(|t| Some(t.queue.as_str())));
        let mut results = vec![EnqueueResult::IdExists; tasks.len()];
        let ids: Vec<String> = tasks.iter().map(|t| id_str(&t.id)).collect();
        let mut plan: Vec<(Arc<str>, Vec<usize>)> = Vec::with_capacity(groups.len());
        if self.single() {
            plan = groups;
        } else {
            // Cluster: claim the ids in the global index first (cross-queue IdExists).
            for (q, idx) in groups {
                let gids: Vec<String> = idx.iter().map(|&i| ids[i].clone()).collect();
                let claimed = self.enqueue_cluster_claim(&q, &gids).await?;
                let keep: Vec<usize> = idx
                    .iter()
                    .zip(claimed)
                    .filter_map(|(&i, ok)| ok.then_some(i))
                    .collect();
                if !keep.is_empty() {
                    plan.push((q, keep));
                }
            }
        }
        // A task whose bytes were gone when its function call ran (evicted
        // between the two, under maxmemory) gets one more round of its own;
        // the rest of the call stands either way.
        let mut round = self.enqueue_round(&tasks, &ids, &plan, now, true).await?;
        let mut release = Vec::new();
        let mut retry: Vec<(Arc<str>, Vec<usize>)> = Vec::new();
        for attempt in 1..=2 {
            retry.clear();
            for (q, outcomes) in round {
                let mut again = Vec::new();
                for (i, outcome) in outcomes {
                    results[i] = match outcome {
                        Stored::Ok => EnqueueResult::Enqueued,
                        Stored::Exists => {
                            release.push(ids[i].clone());
                            EnqueueResult::IdExists
                        }
                        Stored::Held(existing) => {
                            release.push(ids[i].clone());
                            EnqueueResult::Duplicate { existing }
                        }
                        Stored::Full(max_depth) => {
                            release.push(ids[i].clone());
                            EnqueueResult::QueueFull { max_depth }
                        }
                        Stored::NoBytes => {
                            again.push(i);
                            continue;
                        }
                    };
                }
                if !again.is_empty() {
                    retry.push((q, again));
                }
            }
            if retry.is_empty() || attempt == 2 {
                break;
            }
            round = self.enqueue_round(&tasks, &ids, &retry, now, false).await?;
        }
        if !retry.is_empty() {
            let lost: Vec<usize> = retry
                .iter()
                .flat_map(|(_, idx)| idx.iter().copied())
                .collect();
            release.extend(lost.iter().map(|&i| ids[i].clone()));
            self.unindex(release).await?;
            let named: Vec<String> = lost
                .iter()
                .take(5)
                .map(|&i| tasks[i].id.to_string())
                .collect();
            return Err(BrokerError::new(
                BrokerErrorKind::Unavailable,
                format!(
                    "Redis at {} did not keep the bytes of {} of the {} tasks of this call as written \
                     just before their enqueue call, twice (evicted under maxmemory, or a stray key \
                     of that id): {}{}. Those were not stored; the other {} were. Set \
                     `maxmemory-policy noeviction` (docs/redis.md, \"Memory\")",
                    self.inner.target,
                    lost.len(),
                    tasks.len(),
                    named.join(", "),
                    if lost.len() > named.len() {
                        ", …"
                    } else {
                        ""
                    },
                    tasks.len() - lost.len(),
                ),
            ));
        }
        self.unindex(release).await?;
        Ok(results)
    }

    async fn dequeue(&self, req: &DequeueRequest) -> BrokerResult<Vec<LeasedTask>> {
        if req.max == 0 || req.queues.is_empty() {
            return Ok(Vec::new());
        }
        for q in &req.queues {
            validate_queue(q)?;
        }
        let now = self.now();
        let max = req.max.min(65_535);
        if self.single() {
            return self.dequeue_from(&req.queues, max, req, now).await;
        }
        let mut out = Vec::new();
        for q in &req.queues {
            if out.len() >= max {
                break;
            }
            let got = self
                .dequeue_from(std::slice::from_ref(q), max - out.len(), req, now)
                .await?;
            out.extend(got);
        }
        Ok(out)
    }

    async fn ack(&self, acks: Vec<Ack>) -> BrokerResult<Vec<AckResult>> {
        if acks.is_empty() {
            return Ok(Vec::new());
        }
        let what = "acknowledging tasks";
        let now = self.now();
        let ids: Vec<TaskId> = acks.iter().map(|a| a.lease.task_id).collect();
        let queues = self.locate(&ids, true).await?;
        let (groups, _) = group_by(queues.iter().map(|q| q.as_deref()));
        let mut results = vec![AckResult::LeaseLost; acks.len()];
        let mut cmds = Vec::with_capacity(groups.len());
        for (q, idx) in &groups {
            let mut c = self.qcall("sealq_ack", q, false);
            c.arg(now);
            for &i in idx {
                ack_args(&mut c, &acks[i]);
            }
            cmds.push(c);
        }
        let replies = self.run_all(what, cmds).await?;
        for ((_, idx), reply) in groups.iter().zip(replies) {
            let items = array(reply).map_err(|e| self.bad(what, e))?;
            for (&i, item) in idx.iter().zip(items.iter()) {
                if int(item).map_err(|e| self.bad(what, e))? == 1 {
                    results[i] = AckResult::Applied;
                }
            }
        }
        Ok(results)
    }

    async fn extend_leases(&self, leases: &[Lease], lease: Duration) -> BrokerResult<Vec<bool>> {
        if leases.is_empty() {
            return Ok(Vec::new());
        }
        let what = "extending leases";
        let now = self.now();
        let ids: Vec<TaskId> = leases.iter().map(|l| l.task_id).collect();
        let queues = self.locate(&ids, false).await?;
        let (groups, _) = group_by(queues.iter().map(|q| q.as_deref()));
        let mut out = vec![false; leases.len()];
        let mut cmds = Vec::with_capacity(groups.len());
        for (q, idx) in &groups {
            let mut c = self.qcall("sealq_extend", q, false);
            c.arg(now).arg(ms(lease));
            for &i in idx {
                c.arg(id_str(&leases[i].task_id))
                    .arg(token_str(leases[i].token));
            }
            cmds.push(c);
        }
        let replies = self.run_all(what, cmds).await?;
        for ((_, idx), reply) in groups.iter().zip(replies) {
            let items = array(reply).map_err(|e| self.bad(what, e))?;
            for (&i, item) in idx.iter().zip(items.iter()) {
                out[i] = int(item).map_err(|e| self.bad(what, e))? == 1;
            }
        }
        Ok(out)
    }

    async fn forward_due(&self) -> BrokerResult<Forwarded> {
        let what = "forwarding due tasks";
        let now = self.now();
        let limit = self.inner.opts.maintenance_batch.max(1);
        let (mut todo, _) = self.queues().await?;
        let mut total = Forwarded::default();
        let mut next: HashMap<String, Option<i64>> = HashMap::new();
        while !todo.is_empty() {
            let cmds = todo
                .iter()
                .map(|q| {
                    let mut c = self.qcall("sealq_forward", q, false);
                    c.arg(now).arg(limit);
                    c
                })
                .collect();
            let replies = self.run_all(what, cmds).await?;
            let mut again = Vec::new();
            for (q, reply) in todo.into_iter().zip(replies) {
                let parts = array(reply).map_err(|e| self.bad(what, e))?;
                let moved = parts
                    .first()
                    .map(int)
                    .transpose()
                    .map_err(|e| self.bad(what, e))?
                    .unwrap_or(0);
                let due = match parts.into_iter().nth(1) {
                    Some(v) => {
                        let b = bytes(v).map_err(|e| self.bad(what, e))?;
                        if b.is_empty() {
                            None
                        } else {
                            let s = String::from_utf8_lossy(&b);
                            Some(s.parse::<f64>().map_err(|e| self.bad(what, e))? as i64)
                        }
                    }
                    None => None,
                };
                total.moved += u64::try_from(moved).unwrap_or(0);
                next.insert(q.clone(), due);
                if usize::try_from(moved).unwrap_or(0) >= limit {
                    again.push(q);
                }
            }
            todo = again;
        }
        total.next_due_ms = next.values().flatten().copied().min();
        Ok(total)
    }

    async fn recover_expired(&self) -> BrokerResult<Recovered> {
        let what = "recovering expired leases";
        let now = self.now();
        let limit = self.inner.opts.maintenance_batch.max(1);
        let (mut todo, _) = self.queues().await?;
        let mut total = Recovered::default();
        while !todo.is_empty() {
            let cmds = todo
                .iter()
                .map(|q| {
                    let mut c = self.qcall("sealq_recover", q, false);
                    c.arg(now).arg(limit);
                    c
                })
                .collect();
            let replies = self.run_all(what, cmds).await?;
            let mut again = Vec::new();
            for (q, reply) in todo.into_iter().zip(replies) {
                let parts = array(reply).map_err(|e| self.bad(what, e))?;
                let n = |i: usize| parts.get(i).map(int).transpose().map(|v| v.unwrap_or(0));
                total.retried += n(0).map_err(|e| self.bad(what, e))? as u64;
                total.archived += n(1).map_err(|e| self.bad(what, e))? as u64;
                if n(2).map_err(|e| self.bad(what, e))? as usize >= limit {
                    again.push(q);
                }
            }
            todo = again;
        }
        if total.archived > 0 {
            metrics::counter!("sealq_redis_lease_exhausted_total").increment(total.archived);
        }
        Ok(total)
    }

    async fn purge_completed(&self) -> BrokerResult<u64> {
        Ok(self.purge().await?.completed)
    }

    async fn stats(&self) -> BrokerResult<Vec<QueueStats>> {
        let what = "reading queue statistics";
        let (queues, _) = self.queues().await?;
        let cmds = queues
            .iter()
            .map(|q| self.qcall("sealq_stats", q, false))
            .collect();
        let replies = self.run_all(what, cmds).await?;
        let mut out = Vec::new();
        for (q, reply) in queues.into_iter().zip(replies) {
            let mut parts = array(reply).map_err(|e| self.bad(what, e))?.into_iter();
            let paused = parts
                .next()
                .map(|v| int(&v))
                .transpose()
                .map_err(|e| self.bad(what, e))?
                .unwrap_or(0)
                == 1;
            let mut s = QueueStats {
                queue: q,
                paused,
                ..Default::default()
            };
            let counts =
                array(parts.next().unwrap_or(Value::Nil)).map_err(|e| self.bad(what, e))?;
            let mut it = counts.into_iter();
            while let (Some(k), Some(v)) = (it.next(), it.next()) {
                let k = bytes(k).map_err(|e| self.bad(what, e))?;
                let n = u64::try_from(int(&v).map_err(|e| self.bad(what, e))?.max(0)).unwrap_or(0);
                match k.as_slice() {
                    b"scheduled" => s.scheduled = n,
                    b"pending" => s.pending = n,
                    b"active" => s.active = n,
                    b"retry" => s.retry = n,
                    b"completed" => s.completed = n,
                    b"archived" => s.archived = n,
                    b"maxdepth" => s.max_depth = Some(n),
                    _ => {}
                }
            }
            if let Some(rate) = parts.next() {
                s.rate_limit = rate_limit_of(&array(rate).map_err(|e| self.bad(what, e))?);
            }
            let total = s.scheduled + s.pending + s.active + s.retry + s.completed + s.archived;
            if total > 0 || s.paused || s.max_depth.is_some() || s.rate_limit.is_some() {
                out.push(s);
            }
        }
        Ok(out)
    }

    async fn list(&self, query: &ListQuery) -> BrokerResult<Vec<TaskRecord>> {
        let what = "listing tasks";
        let limit = if query.limit == 0 { 100 } else { query.limit };
        let queues = match &query.queue {
            Some(q) => {
                validate_queue(q)?;
                vec![q.clone()]
            }
            None => self.queues().await?.0,
        };
        let after = query.after.as_ref().map(id_str).unwrap_or_default();
        let state = query.state.map(|s| s.as_str()).unwrap_or("");
        let sub = query
            .subject
            .as_ref()
            .map(codec::subject_str)
            .unwrap_or_default();
        let cmds = queues
            .iter()
            .map(|q| {
                let mut c = self.qcall("sealq_list", q, false);
                c.arg(&after).arg(limit).arg(state).arg(&sub);
                c
            })
            .collect();
        let replies = self.run_all(what, cmds).await?;
        let mut out = Vec::new();
        for (q, reply) in queues.iter().zip(replies) {
            for item in array(reply).map_err(|e| self.bad(what, e))? {
                let mut it = array(item).map_err(|e| self.bad(what, e))?.into_iter();
                let id = it
                    .next()
                    .map(bytes)
                    .transpose()
                    .map_err(|e| self.bad(what, e))?
                    .unwrap_or_default();
                let id = parse_id(&id).ok_or_else(|| self.bad(what, "bad id"))?;
                let fields =
                    array(it.next().unwrap_or(Value::Nil)).map_err(|e| self.bad(what, e))?;
                let stored =
                    opt_bytes(it.next().unwrap_or(Value::Nil)).map_err(|e| self.bad(what, e))?;
                out.push(codec::record(id, q, fields, stored).map_err(|e| self.bad(what, e))?);
            }
        }
        out.sort_by_key(|r| r.id);
        out.truncate(limit);
        Ok(out)
    }

    async fn get(&self, id: TaskId) -> BrokerResult<Option<TaskRecord>> {
        let what = "reading a task";
        let Some(q) = self.locate(&[id], false).await?.pop().flatten() else {
            return Ok(None);
        };
        let mut c = self.qcall("sealq_get", &q, false);
        c.arg(id_str(&id));
        let v: Value = self
            .inner
            .conn
            .query(&c)
            .await
            .map_err(|e| self.err(what, e))?;
        let item = array(v).map_err(|e| self.bad(what, e))?.into_iter().next();
        let Some(item) = item else { return Ok(None) };
        let mut it = array(item).map_err(|e| self.bad(what, e))?.into_iter();
        let _ = it.next();
        let fields = array(it.next().unwrap_or(Value::Nil)).map_err(|e| self.bad(what, e))?;
        if fields.is_empty() {
            return Ok(None);
        }
        let stored = opt_bytes(it.next().unwrap_or(Value::Nil)).map_err(|e| self.bad(what, e))?;
        Ok(Some(
            codec::record(id, &q, fields, stored).map_err(|e| self.bad(what, e))?,
        ))
    }

    async fn delete(&self, ids: &[TaskId]) -> BrokerResult<u64> {
        if ids.is_empty() {
            return Ok(0);
        }
        let what = "deleting tasks";
        let queues = self.locate(ids, false).await?;
        {
            let mut cache = self.inner.leases.lock().expect("lease cache");
            for id in ids {
                cache.remove(id);
            }
        }
        let (groups, _) = group_by(queues.iter().map(|q| q.as_deref()));
        let cmds = groups
            .iter()
            .map(|(q, idx)| {
                let mut c = self.qcall("sealq_delete", q, true);
                c.arg(self.now());
                for &i in idx {
                    c.arg(id_str(&ids[i]));
                }
                c
            })
            .collect();
        let replies = self.run_all(what, cmds).await?;
        let mut n = 0u64;
        let mut forget = Vec::new();
        for reply in replies {
            let mut it = array(reply).map_err(|e| self.bad(what, e))?.into_iter();
            n += it
                .next()
                .map(|v| int(&v))
                .transpose()
                .map_err(|e| self.bad(what, e))?
                .unwrap_or(0) as u64;
            for v in it {
                forget.push(
                    String::from_utf8_lossy(&bytes(v).map_err(|e| self.bad(what, e))?).into_owned(),
                );
            }
        }
        self.unindex(forget).await?;
        Ok(n)
    }

    async fn swap_sealed(&self, swaps: &[SealedSwap]) -> BrokerResult<Vec<bool>> {
        let what = "re-sealing tasks";
        for s in swaps {
            validate_queue(&s.queue)?;
        }
        let (groups, _) = group_by(swaps.iter().map(|s| Some(s.queue.as_str())));
        let cmds = groups
            .iter()
            .map(|(q, idx)| {
                let mut c = self.qcall("sealq_swap", q, false);
                for &i in idx {
                    let s = &swaps[i];
                    c.arg(id_str(&s.task_id))
                        .arg(match s.part {
                            SealedPart::Payload => "p",
                            SealedPart::Result => "r",
                            SealedPart::Error => "e",
                        })
                        .arg(s.expected.as_slice())
                        .arg(s.replacement.as_slice());
                }
                c
            })
            .collect();
        let replies = self.run_all(what, cmds).await?;
        let mut out = vec![false; swaps.len()];
        for ((_, idx), reply) in groups.iter().zip(replies) {
            let items = array(reply).map_err(|e| self.bad(what, e))?;
            if items.len() != idx.len() {
                return Err(self.bad(what, "one result per swap expected"));
            }
            for (&i, v) in idx.iter().zip(items) {
                out[i] = int(&v).map_err(|e| self.bad(what, e))? == 1;
            }
        }
        Ok(out)
    }

    async fn rerun(&self, ids: &[TaskId]) -> BrokerResult<u64> {
        if ids.is_empty() {
            return Ok(0);
        }
        let what = "re-running tasks";
        let now = self.now();
        let queues = self.locate(ids, false).await?;
        let (groups, _) = group_by(queues.iter().map(|q| q.as_deref()));
        let cmds = groups
            .iter()
            .map(|(q, idx)| {
                let mut c = self.qcall("sealq_rerun", q, false);
                c.arg(now);
                for &i in idx {
                    c.arg(id_str(&ids[i]));
                }
                c
            })
            .collect();
        let replies = self.run_all(what, cmds).await?;
        let mut n = 0u64;
        for r in replies {
            n += int(&r).map_err(|e| self.bad(what, e))? as u64;
        }
        Ok(n)
    }

    async fn pause(&self, queue: &str) -> BrokerResult<()> {
        self.set_paused(queue, true).await
    }

    async fn resume(&self, queue: &str) -> BrokerResult<()> {
        self.set_paused(queue, false).await
    }

    async fn set_max_depth(&self, queue: &str, max_depth: Option<u64>) -> BrokerResult<()> {
        self.set_limit(queue, max_depth).await
    }

    /// One `HMGET` of the queue flags per queue (pipelined).
    async fn rate_limits(
        &self,
        queues: &[String],
    ) -> BrokerResult<Vec<Option<sealq::broker::RateLimit>>> {
        let what = "reading rate limits";
        let cmds = queues
            .iter()
            .map(|q| {
                validate_queue(q)?;
                let mut c = redis::cmd("HMGET");
                c.arg(format!("{}flags", self.qbase(q))).arg("rl").arg("rp");
                Ok(c)
            })
            .collect::<BrokerResult<Vec<Cmd>>>()?;
        let replies = self.run_all(what, cmds).await?;
        replies
            .into_iter()
            .map(|r| Ok(rate_limit_of(&array(r).map_err(|e| self.bad(what, e))?)))
            .collect()
    }

    async fn set_rate_limit(
        &self,
        queue: &str,
        limit: Option<sealq::broker::RateLimit>,
    ) -> BrokerResult<()> {
        let (n, p) = limit.map_or((String::new(), String::new()), |l| {
            (l.limit.to_string(), l.period_ms.to_string())
        });
        let register = limit.is_some().then_some(&b""[..]);
        self.queue_setting(
            "sealq_rate",
            queue,
            &[&n, &p],
            "setting a queue's rate limit",
            register,
        )
        .await
    }

    async fn wait_for_work(&self, queues: &[String], timeout: Duration) -> BrokerResult<()> {
        if queues.is_empty() || timeout < Duration::from_millis(1) {
            tokio::time::sleep(timeout).await;
            return Ok(());
        }
        for q in queues {
            validate_queue(q)?;
        }
        let mut conn = self.take_blocking().await?;
        let mut c = redis::cmd("BLPOP");
        if self.single() {
            for q in queues {
                c.arg(format!("{}wake", self.qbase(q)));
            }
        } else {
            // One slot per call on a Cluster: wait on the first (highest-priority) queue.
            c.arg(format!("{}wake", self.qbase(&queues[0])));
        }
        c.arg(format!("{:.3}", timeout.as_secs_f64()));
        let guard = timeout + Duration::from_secs(5);
        match tokio::time::timeout(guard, conn.query::<Value>(&c)).await {
            Ok(Ok(_)) => {
                self.inner
                    .blocking
                    .lock()
                    .expect("blocking pool")
                    .push(conn);
                Ok(())
            }
            Ok(Err(e)) => Err(self.err("waiting for work", e)),
            Err(_) => Ok(()), // connection dropped silently: discard it
        }
    }

    fn describe(&self) -> String {
        format!("{} (prefix {})", self.inner.target, self.inner.prefix)
    }

    fn bulk_batch_limit(&self) -> Option<usize> {
        Some(self.inner.opts.bulk_batch_limit.max(1))
    }

    async fn erase_subject(
        &self,
        tag: &sealq::SubjectTag,
    ) -> BrokerResult<sealq::subject_keys::ErasureCounts> {
        self.erase_subject_impl(tag).await
    }

    fn subject_key_store(&self) -> Option<Arc<dyn sealq::subject_keys::SubjectKeyStore>> {
        Some(self.inner.subject_keys.clone())
    }
}

impl RedisBroker {
    async fn set_limit(&self, queue: &str, max_depth: Option<u64>) -> BrokerResult<()> {
        let cap = max_depth.map(|n| n.to_string()).unwrap_or_default();
        let register = max_depth.is_some().then_some(&b""[..]);
        self.queue_setting(
            "sealq_limit",
            queue,
            &[&cap],
            "setting a queue's maximum depth",
            register,
        )
        .await
    }

    async fn set_paused(&self, queue: &str, paused: bool) -> BrokerResult<()> {
        let what = if paused {
            "pausing a queue"
        } else {
            "resuming a queue"
        };
        let flag = if paused { "1" } else { "0" };
        self.queue_setting("sealq_pause", queue, &[flag], what, Some(flag.as_bytes()))
            .await
    }

    /// Call the queue-setting function `function` (`sealq_pause`,
    /// `sealq_limit`, `sealq_rate`: KEYS the queue base and, on a single
    /// node, the global base; ARGV the queue then `args`). On a Cluster,
    /// where the function cannot reach the global registry, `register`
    /// (the registry's paused flag, or empty) registers the queue there.
    async fn queue_setting(
        &self,
        function: &str,
        queue: &str,
        args: &[&str],
        what: &str,
        register: Option<&[u8]>,
    ) -> BrokerResult<()> {
        validate_queue(queue)?;
        let mut c = self.qcall(function, queue, true);
        c.arg(queue);
        for a in args {
            c.arg(*a);
        }
        let _: Value = self
            .inner
            .conn
            .query(&c)
            .await
            .map_err(|e| self.err(what, e))?;
        if !self.single()
            && let Some(flag) = register
        {
            self.registry(&[b"queue", queue.as_bytes(), flag]).await?;
        }
        Ok(())
    }
}
