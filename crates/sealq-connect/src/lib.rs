//! # sealq-connect: from a broker URL to the stores behind it
//!
//! The one place that knows which backend a URL names, how to open it, and
//! where its audit log lives. The `sealq` command uses it today; the HTTP
//! gateway and the dashboard will too, so none of them wires stores by
//! hand. Backends still depend only on `sealq`, and `sealq` on no backend:
//! this crate sits above both.
//!
//! ```no_run
//! # async fn demo() -> Result<(), sealq_connect::ConnectError> {
//! let conn = sealq_connect::connect("sqlite://./sealq.db", &Default::default()).await?;
//! let stores = conn.stores();
//! println!("{}", stores.describe());
//! # Ok(()) }
//! ```
//!
//! A worker over whatever the URL names (the README's example):
//!
//! ```no_run
//! # async fn f(keyring: std::sync::Arc<sealq::Keyring>) -> Result<(), Box<dyn std::error::Error>> {
//! let conn = sealq_connect::connect("redis://worker:pw@127.0.0.1:6379", &Default::default()).await?;
//! let worker = sealq::Worker::from_stores(conn.stores(), keyring)   // broker + subject keys
//!     .handle_raw("invoice.send", |_payload, _ctx| async { Ok(()) })
//!     .build()?;
//! # let _ = worker; Ok(()) }
//! ```
//!
//! | URL | backend |
//! | --- | --- |
//! | `sqlite://PATH`, `sqlite:PATH` (`?synchronous=normal\|full`) | embedded SQLite (`sealq_sqlite`) |
//! | `redis://`, `rediss://`, `redis+cluster://`, `redis+sentinel://` | Redis (`sealq_redis`) |
//! | `postgres://`, `postgresql://` (`?sslmode=disable\|require\|verify-full`) | Postgres (`sealq_postgres`) |
//!
//! URLs are shown only through [`redact`] (`sealq::store::redact_url`).
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod audit;
mod error;
mod scheme;

use std::path::Path;
use std::sync::Arc;

use sealq::Stores;
use sealq_postgres::PostgresBroker;
use sealq_redis::RedisBroker;
use sealq_sqlite::SqliteBroker;

pub use audit::{AuditPlace, jsonl_path_for};
pub use error::ConnectError;
pub use scheme::{SUPPORTED, Scheme};

/// `url` with its password masked, for messages ([`sealq::store::redact_url`]).
pub fn redact(url: &str) -> String {
    sealq::store::redact_url(url)
}

/// How to connect.
#[derive(Debug, Clone)]
pub struct ConnectOptions {
    /// Redis: refuse to connect unless the server's `sealq` functions
    /// library is this build's version (default `true`). Off only for the
    /// command that installs the library.
    pub check_redis_library: bool,
    /// SQLite: open only a database file that already exists (default
    /// `false`): a missing file is [`ConnectError::Missing`] and nothing is
    /// created. For read-only callers, so a mistyped path or the wrong
    /// working directory is reported rather than answered by a new, empty
    /// store. Redis is unaffected.
    pub existing_only: bool,
}

impl Default for ConnectOptions {
    fn default() -> Self {
        ConnectOptions {
            check_redis_library: true,
            existing_only: false,
        }
    }
}

/// An opened backend.
#[derive(Debug, Clone)]
enum Backend {
    Sqlite(SqliteBroker),
    Redis(RedisBroker),
    Postgres(PostgresBroker),
}

/// A connection to the backend a URL names: its [`Stores`], and where its
/// audit log lives ([`Connection::audit_sink`]).
#[derive(Debug, Clone)]
pub struct Connection {
    backend: Backend,
    stores: Stores,
}

/// Open the backend `url` names. A URL that names no backend of this build
/// is a [`ConnectError::Usage`]; a backend that refuses to open or cannot
/// be reached is a [`ConnectError::Open`] ([`ConnectError::is_usage`] tells
/// whether the configuration or credentials were refused). Messages show
/// the URL redacted.
pub async fn connect(url: &str, options: &ConnectOptions) -> Result<Connection, ConnectError> {
    let backend = match Scheme::parse(url)? {
        Scheme::Sqlite { path } => {
            if options.existing_only && !path.exists() {
                return Err(ConnectError::Missing { path });
            }
            Backend::Sqlite(SqliteBroker::open_url(url).map_err(|e| ConnectError::opening(url, e))?)
        }
        Scheme::Redis => Backend::Redis(connect_redis(url, options).await?),
        Scheme::Postgres => Backend::Postgres(
            PostgresBroker::connect(url)
                .await
                .map_err(|e| ConnectError::opening(url, e))?,
        ),
    };
    let stores = match &backend {
        Backend::Sqlite(b) => b.stores(),
        Backend::Redis(b) => b.stores(),
        Backend::Postgres(b) => b.stores(),
    };
    Ok(Connection { backend, stores })
}

/// Connect to the Redis deployment `url` names (for Redis-only commands
/// such as installing the functions library).
pub async fn connect_redis(
    url: &str,
    options: &ConnectOptions,
) -> Result<RedisBroker, ConnectError> {
    let opts = sealq_redis::RedisOptions::default();
    let result = if options.check_redis_library {
        RedisBroker::connect_with(url, opts).await
    } else {
        RedisBroker::connect_unchecked(url, opts).await
    };
    result.map_err(|e| ConnectError::opening(url, e))
}

impl Connection {
    /// The stores: broker and subject keys (the audit sink is chosen with
    /// [`Connection::audit_sink`]).
    pub fn stores(&self) -> &Stores {
        &self.stores
    }

    /// The broker.
    pub fn broker(&self) -> Arc<dyn sealq::Broker> {
        self.stores.broker.clone()
    }

    /// The SQLite database file, when the backend is SQLite.
    pub fn sqlite_path(&self) -> Option<&Path> {
        match &self.backend {
            Backend::Sqlite(b) => Some(b.path()),
            Backend::Redis(_) | Backend::Postgres(_) => None,
        }
    }

    /// The Redis broker, when the backend is Redis (for its command counts
    /// and other Redis-only facts).
    pub fn redis(&self) -> Option<&RedisBroker> {
        match &self.backend {
            Backend::Redis(r) => Some(r),
            Backend::Sqlite(_) | Backend::Postgres(_) => None,
        }
    }

    /// The Postgres broker, when the backend is Postgres.
    pub fn postgres(&self) -> Option<&PostgresBroker> {
        match &self.backend {
            Backend::Postgres(p) => Some(p),
            Backend::Sqlite(_) | Backend::Redis(_) => None,
        }
    }
}
