//! The connection pool of the subject key store, the audit sink and the blob
//! store: the broker's own pool, or one of their own opened from a URL (so
//! the subject keys can live in a database of their own, outside the task
//! database's backups).

use std::time::Duration;

use sealq::{BrokerError, BrokerErrorKind};

use crate::PostgresBroker;
use crate::error::{map, pool};

/// Default pool size of a store opened from a URL (`pool_size=N` overrides).
const DEFAULT_STORE_POOL: usize = 4;

/// A pool and the redacted URL it reaches, for messages.
#[derive(Clone)]
pub(crate) struct StoreConn {
    pool: deadpool_postgres::Pool,
    pub(crate) target: String,
}

impl StoreConn {
    /// Share `broker`'s pool.
    pub(crate) fn of_broker(broker: &PostgresBroker) -> Self {
        Self {
            pool: broker.inner.pool.clone(),
            target: broker.inner.target.clone(),
        }
    }

    /// A pool of its own at `url` (TLS and `pool_size` parameters apply);
    /// checks the schema version, migrating when `migrate` is set. Returns
    /// the schema version found before migrating.
    pub(crate) async fn connect(url: &str, migrate: bool) -> Result<(Self, i32), BrokerError> {
        let parsed = crate::url::parse(url)?;
        let target = sealq::store::redact_url(url);
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
            .max_size(parsed.pool_size.unwrap_or(DEFAULT_STORE_POOL).max(1))
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
        let this = Self { pool, target };
        let mut client = this.client("connecting").await?;
        let found = crate::schema::check_and_migrate(&mut client, &this.target, migrate).await?;
        drop(client);
        Ok((this, found))
    }

    /// A pooled connection.
    pub(crate) async fn client(
        &self,
        what: &str,
    ) -> Result<deadpool_postgres::Object, BrokerError> {
        self.pool
            .get()
            .await
            .map_err(|e| pool(&self.target, what, e))
    }

    /// Map a Postgres error met while doing `what`.
    pub(crate) fn err(&self, what: &str, e: tokio_postgres::Error) -> BrokerError {
        map(&self.target, what, e)
    }
}
