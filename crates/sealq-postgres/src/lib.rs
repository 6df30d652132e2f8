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
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod audit_sink;
mod blob_store;
mod error;
pub mod roles;
mod schema;
mod store_conn;
mod subject_keys;
mod url;

use std::sync::Arc;
use std::time::Duration;

use sealq::clock::{SharedClock, system_clock};
use sealq::{BrokerError, BrokerErrorKind};

pub use crate::audit_sink::PostgresAuditSink;
pub use crate::blob_store::PostgresBlobStore;
pub use crate::schema::SCHEMA_VERSION;
pub use crate::subject_keys::PostgresSubjectKeyStore;
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

/// The Postgres broker. Cheap to clone: clones share one pool.
#[derive(Clone)]
pub struct PostgresBroker {
    inner: Arc<Inner>,
}

struct Inner {
    pool: deadpool_postgres::Pool,
    /// The redacted URL, for messages.
    target: String,
    options: PostgresOptions,
    sslmode: SslMode,
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
        let pool = deadpool_postgres::Pool::builder(manager)
            .max_size(options.pool_size.max(1))
            .runtime(deadpool_postgres::Runtime::Tokio1)
            .wait_timeout(Some(Duration::from_secs(30)))
            .create_timeout(Some(Duration::from_secs(15)))
            .build()
            .map_err(|e| {
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
            }),
        };
        {
            let mut client = this.client("connecting").await?;
            schema::check_and_migrate(&mut client, &this.inner.target, this.inner.options.migrate)
                .await?;
        }
        Ok(this)
    }

    /// The schema version stored in the database.
    pub async fn schema_version(&self) -> Result<i32, BrokerError> {
        let client = self.client("reading the schema version").await?;
        schema::stored_version(&client, &self.inner.target).await
    }

    /// A pooled connection.
    async fn client(&self, what: &str) -> Result<deadpool_postgres::Object, BrokerError> {
        self.inner
            .pool
            .get()
            .await
            .map_err(|e| error::pool(&self.inner.target, what, e))
    }
}
