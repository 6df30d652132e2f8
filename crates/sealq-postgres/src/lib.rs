//! # sealq-postgres: the Postgres broker
//!
//! A [`sealq::Broker`] on PostgreSQL (13 or newer). Everything lives in the
//! schema `sealq`, created and upgraded by versioned forward-only
//! migrations at connect (see `docs/postgres.md`).
//!
//! ```no_run
//! # async fn demo() -> Result<(), sealq::BrokerError> {
//! use sealq_postgres::PostgresBroker;
//! let broker = PostgresBroker::connect("postgres://sealq@db.internal/app?sslmode=verify-full&sslrootcert=/etc/ssl/pg-ca.pem").await?;
//! # let _ = broker; Ok(()) }
//! ```
//!
//! ## How it works (details in `docs/postgres.md`)
//!
//! - **Round trips.** Enqueue, dequeue and ack are one call each of a
//!   `sealq.*` SQL function (migration 1) taking the batch as arrays;
//!   claims are `FOR UPDATE SKIP LOCKED`; lease extensions one `UPDATE …
//!   FROM unnest(…)` (`sealq.extend_leases`, migration 3). Every statement
//!   the broker sends is a call of a `SECURITY DEFINER` function
//!   (migrations 1, 3 and 4), so the roles of [`roles`] need no table
//!   privilege. Payload bytes live in `sealq.task_bodies`, apart
//!   from the state rows every claim and ack rewrites.
//! - **Time** comes from [`PostgresOptions::clock`], passed as a parameter;
//!   SQL never calls `now()`.
//! - **Leases** carry a random token per dequeue call; acks and extensions
//!   with another token change nothing ([`sealq::broker::AckResult::LeaseLost`]).
//! - **Replay memory**, **quarantine** of rows that do not decode, **unique
//!   keys**, **depth caps**, **rate limits** and **pause** behave as on the
//!   embedded broker.
//! - **Wake-ups**: `pg_notify('sealq_wake', queue)` in the writing
//!   transaction, one LISTEN connection per process, polling every
//!   [`PostgresOptions::poll_interval`] as the fallback; `poll_only` for
//!   PgBouncer (no LISTEN, unnamed statements).
//! - **Transactional enqueue**: [`PostgresTxClient`] seals, stores and
//!   audits tasks inside the application's own transaction;
//!   [`PostgresBroker::enqueue_in`] stores already sealed tasks (no audit
//!   record).
//! - **Live workers**: `sealq.live_workers` (migration 3) behind
//!   `sealq.worker_register` / `worker_list` / `worker_deregister`.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod audit_sink;
mod blob_store;
mod broker;
mod codec;
mod db;
mod error;
mod live_workers;
mod maintenance;
mod ops;
mod read;
pub mod roles;
mod schema;
mod store_conn;
mod subject_keys;
mod tx_client;
mod url;
mod wake;

use std::sync::Arc;
use std::time::Duration;

use sealq::clock::{SharedClock, system_clock};
use sealq::{BrokerError, BrokerErrorKind};

pub use crate::audit_sink::PostgresAuditSink;
pub use crate::blob_store::PostgresBlobStore;
pub use crate::schema::SCHEMA_VERSION;
pub use crate::subject_keys::PostgresSubjectKeyStore;
pub use crate::tx_client::PostgresTxClient;
pub use crate::url::{SslMode, is_postgres_url};

/// Default of [`PostgresOptions::poll_interval`].
pub const DEFAULT_POLL_INTERVAL: Duration = Duration::from_secs(1);

/// Default of [`PostgresOptions::replay_horizon`]: 7 days.
pub const DEFAULT_REPLAY_HORIZON: Duration = Duration::from_secs(7 * 24 * 3600);

/// Options of a [`PostgresBroker`]; URL parameters override them.
#[derive(Clone)]
pub struct PostgresOptions {
    /// Where times come from (tests drive a manual clock).
    pub clock: SharedClock,
    /// Most pooled connections (`pool_size=N`; default 8).
    pub pool_size: usize,
    /// How often an idle worker looks for work when no notification
    /// arrives (`poll_interval_ms=N`; default 1 s).
    pub poll_interval: Duration,
    /// Poll only, no LISTEN (`poll_only=true`): for PgBouncer in
    /// transaction mode, which cannot carry notifications.
    pub poll_only: bool,
    /// How long the ids of completed, deleted and erased tasks are
    /// remembered against replay (default 7 days).
    pub replay_horizon: Duration,
    /// Apply missing schema migrations at connect (default `true`); when
    /// `false`, an older schema is refused.
    pub migrate: bool,
}

impl Default for PostgresOptions {
    fn default() -> Self {
        Self {
            clock: system_clock(),
            pool_size: 8,
            poll_interval: DEFAULT_POLL_INTERVAL,
            poll_only: false,
            replay_horizon: DEFAULT_REPLAY_HORIZON,
            migrate: true,
        }
    }
}

impl PostgresOptions {
    /// Defaults with `clock`.
    pub fn with_clock(clock: SharedClock) -> Self {
        Self {
            clock,
            ..Self::default()
        }
    }
}

impl std::fmt::Debug for PostgresOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresOptions")
            .field("pool_size", &self.pool_size)
            .field("poll_interval", &self.poll_interval)
            .field("poll_only", &self.poll_only)
            .field("replay_horizon", &self.replay_horizon)
            .field("migrate", &self.migrate)
            .finish_non_exhaustive()
    }
}

/// Whether every host of `config` is this machine (loopback or a Unix socket).
fn all_hosts_local(config: &tokio_postgres::Config) -> bool {
    config.get_hosts().iter().all(|h| match h {
        tokio_postgres::config::Host::Tcp(name) => {
            name == "localhost"
                || name
                    .parse::<std::net::IpAddr>()
                    .is_ok_and(|ip| ip.is_loopback())
        }
        #[cfg(unix)]
        tokio_postgres::config::Host::Unix(_) => true,
    })
}

/// The Postgres broker. Cheap to clone: clones share one pool.
#[derive(Clone)]
pub struct PostgresBroker {
    inner: Arc<Inner>,
}

pub(crate) struct Inner {
    pool: deadpool_postgres::Pool,
    /// The redacted URL, for messages.
    pub(crate) target: String,
    pub(crate) options: PostgresOptions,
    sslmode: SslMode,
    /// What the LISTEN connection connects with.
    config: tokio_postgres::Config,
    tls: Option<tokio_postgres_rustls::MakeRustlsConnect>,
    pub(crate) wake: wake::Wake,
    /// Set when this login was refused `sealq.queue_depths` (roles set up
    /// before migration 11): the gauges then read the exact counts without
    /// asking again every sample (and logging a refusal each time).
    pub(crate) depths_denied: std::sync::atomic::AtomicBool,
}

impl Inner {
    /// Now, from the broker's clock, Unix ms.
    pub(crate) fn now(&self) -> i64 {
        self.options.clock.now_ms()
    }

    /// Whether statements run unnamed (PgBouncer: `poll_only`).
    pub(crate) fn unnamed(&self) -> bool {
        self.options.poll_only
    }

    /// A pooled connection.
    pub(crate) async fn client(
        &self,
        what: &str,
    ) -> Result<deadpool_postgres::Object, BrokerError> {
        self.pool
            .get()
            .await
            .map_err(|e| error::pool(&self.target, what, e))
    }
}

impl std::fmt::Debug for PostgresBroker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresBroker")
            .field("target", &self.inner.target)
            .field("sslmode", &self.inner.sslmode)
            .field("options", &self.inner.options)
            .finish()
    }
}

impl PostgresBroker {
    /// Connect with default options (migrating the schema if needed).
    pub async fn connect(url: &str) -> Result<Self, BrokerError> {
        Self::connect_with(url, PostgresOptions::default()).await
    }

    /// Connect with `options`; parameters in the URL override them.
    pub async fn connect_with(
        url: &str,
        mut options: PostgresOptions,
    ) -> Result<Self, BrokerError> {
        let parsed = url::parse(url)?;
        let target = sealq::store::redact_url(url);
        if let Some(p) = parsed.poll_only {
            options.poll_only = p;
        }
        if let Some(p) = parsed.poll_interval {
            options.poll_interval = p;
        }
        if let Some(n) = parsed.pool_size {
            options.pool_size = n;
        }
        if parsed.sslmode == SslMode::Disable && !all_hosts_local(&parsed.config) {
            tracing::warn!(
                target = %target,
                "sealq: connecting to Postgres without TLS over the network; add \
                 sslmode=verify-full&sslrootcert=CA.pem to the broker URL"
            );
        }
        let manager_config = deadpool_postgres::ManagerConfig {
            recycling_method: deadpool_postgres::RecyclingMethod::Fast,
        };
        let manager = match parsed.tls.clone() {
            Some(tls) => {
                deadpool_postgres::Manager::from_config(parsed.config.clone(), tls, manager_config)
            }
            None => deadpool_postgres::Manager::from_config(
                parsed.config.clone(),
                tokio_postgres::NoTls,
                manager_config,
            ),
        };
        let mut builder = deadpool_postgres::Pool::builder(manager)
            .max_size(options.pool_size.max(1))
            .runtime(deadpool_postgres::Runtime::Tokio1)
            .wait_timeout(Some(Duration::from_secs(30)))
            .create_timeout(Some(Duration::from_secs(15)));
        if !options.poll_only {
            // Every statement is a call of a `sealq.*` function: a plan
            // made for the values bound (a custom plan, which Postgres
            // makes for a prepared statement's first five runs) is the
            // same function scan, only dearer to make, most of all with a
            // batch's arrays as constants (0.5-1.4 ms for 1,000 tasks).
            // Not behind PgBouncer in transaction mode (poll-only), where
            // a session setting would reach other clients.
            builder = builder.post_create(deadpool_postgres::Hook::async_fn(|client, _| {
                Box::pin(async move {
                    client
                        .batch_execute("SET plan_cache_mode = force_generic_plan")
                        .await
                        .map_err(deadpool_postgres::HookError::Backend)
                })
            }));
        }
        let pool = builder.build().map_err(|e| {
            BrokerError::new(
                BrokerErrorKind::Config,
                format!("cannot build the connection pool for {target}: {e}"),
            )
        })?;
        let this = Self {
            inner: Arc::new(Inner {
                pool,
                target,
                sslmode: parsed.sslmode,
                options,
                config: parsed.config,
                tls: parsed.tls,
                wake: wake::Wake::new(),
                depths_denied: std::sync::atomic::AtomicBool::new(false),
            }),
        };
        {
            let mut client = this.client("connecting").await?;
            schema::check_and_migrate(&mut client, &this.inner.target, this.inner.options.migrate)
                .await?;
        }
        Ok(this)
    }

    /// Enqueue inside the caller's own transaction (transactional
    /// enqueue): the tasks exist only if `tx` commits; if it rolls back,
    /// so do they, and no worker is woken (the notification is sent at
    /// commit). `tx` is a `tokio_postgres::Transaction` (or a `Client`,
    /// for autocommit) on the database this broker uses; seal the tasks
    /// first with [`sealq::Client::seal_async`]. One round trip, an unnamed
    /// statement (fine behind PgBouncer). One result per task, in order.
    ///
    /// ```no_run
    /// # async fn demo(
    /// #     broker: sealq_postgres::PostgresBroker,
    /// #     client: sealq::Client,
    /// #     pg: &mut tokio_postgres::Client,
    /// # ) -> Result<(), Box<dyn std::error::Error>> {
    /// use sealq::RawTask;
    /// let raw = RawTask::from_json("invoice.send", &serde_json::json!({"order": 42}), Default::default())?;
    /// let task = client.seal_async(raw).await?;
    /// let tx = pg.transaction().await?;
    /// tx.execute("INSERT INTO orders (id) VALUES (42)", &[]).await?;
    /// broker.enqueue_in(&tx, vec![task]).await?;
    /// tx.commit().await?; // the task exists from here on
    /// # Ok(()) }
    /// ```
    pub async fn enqueue_in<C>(
        &self,
        tx: &C,
        tasks: Vec<sealq::broker::NewTask>,
    ) -> Result<Vec<sealq::broker::EnqueueResult>, BrokerError>
    where
        C: tokio_postgres::GenericClient + Sync,
    {
        if tasks.is_empty() {
            return Ok(Vec::new());
        }
        ops::enqueue_in(&self.inner, tx, tasks).await
    }

    /// This broker's stores, bundled: the broker and the subject-key store
    /// in its database, on its pool (as SQLite and Redis bundle theirs; a
    /// claim-check store is the application's choice,
    /// [`PostgresBlobStore::from_broker`]). The audit log is added by
    /// [`Self::stores_with_audit`] (or chosen by `sealq_connect`).
    pub fn stores(&self) -> sealq::Stores {
        sealq::Stores::new(Arc::new(self.clone()))
            .with_subject_keys(Arc::new(PostgresSubjectKeyStore::from_broker(self)))
    }

    /// [`Self::stores`] with the audit log in this database
    /// ([`PostgresAuditSink`]).
    pub fn stores_with_audit(&self) -> sealq::Stores {
        self.stores()
            .with_audit(Arc::new(PostgresAuditSink::from_broker(self)))
    }

    /// Whether this broker's connections are encrypted, as the server sees
    /// them (`pg_stat_ssl` for the session): for diagnostics and tests.
    pub async fn session_uses_tls(&self) -> Result<bool, BrokerError> {
        let what = "reading the session's TLS state";
        let client = self.client(what).await?;
        let row = client
            .query_one(
                "SELECT coalesce((SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()), false)",
                &[],
            )
            .await
            .map_err(|e| error::map(&self.inner.target, what, e))?;
        Ok(row.get(0))
    }

    /// The schema version stored in the database.
    pub async fn schema_version(&self) -> Result<i32, BrokerError> {
        let client = self.client("reading the schema version").await?;
        schema::stored_version(&client, &self.inner.target).await
    }

    /// A pooled connection.
    async fn client(&self, what: &str) -> Result<deadpool_postgres::Object, BrokerError> {
        self.inner.client(what).await
    }
}
